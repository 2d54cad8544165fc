//! Credentials: long-term key derivation and the TURN REST shared-secret scheme.

/// Long-term credential key: MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let _ = (username, realm, password);
    todo!()
}

/// TURN REST password: base64(HMAC-SHA1(secret, username)), as BigBlueButton and coturn's
/// `use-auth-secret` compute it.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let _ = (secret, username);
    todo!()
}

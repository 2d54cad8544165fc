//! Credentials: long-term key derivation and the TURN REST shared-secret scheme.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

pub(crate) type HmacSha1 = Hmac<Sha1>;

/// Length of a MESSAGE-INTEGRITY value (an HMAC-SHA1 output).
pub const HMAC_SHA1_LEN: usize = 20;

/// HMAC-SHA1 keyed with `key`. HMAC takes keys of any length (long ones are hashed first),
/// so construction cannot fail.
pub(crate) fn hmac_sha1(key: &[u8]) -> HmacSha1 {
    match <HmacSha1 as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// Long-term credential key: MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(username.as_bytes());
    md5.update(b":");
    md5.update(realm.as_bytes());
    md5.update(b":");
    md5.update(password.as_bytes());
    md5.finalize().into()
}

/// TURN REST password: base64(HMAC-SHA1(secret, username)), as BigBlueButton and coturn's
/// `use-auth-secret` compute it.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = hmac_sha1(secret);
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_term_key_is_md5_of_the_joined_triple() {
        // MD5("user:realm:pass"), from `printf %s user:realm:pass | md5sum`.
        assert_eq!(
            long_term_key("user", "realm", "pass"),
            [
                0x84, 0x93, 0xfb, 0xc5, 0x3b, 0xa5, 0x82, 0xfb, 0x4c, 0x04, 0x4c, 0x45, 0x6b, 0xdc,
                0x40, 0xeb
            ]
        );
    }

    #[test]
    fn rest_password_matches_openssl_and_coturn() {
        // printf '%s' '1700000000:alice' \
        //   | openssl dgst -sha1 -hmac 'Zm9vYmFyLXRlc3Qtc2VjcmV0LW9ubHk=' -binary | base64
        // The secret is used as its ASCII bytes, not base64-decoded, as coturn does.
        assert_eq!(
            rest_password(b"Zm9vYmFyLXRlc3Qtc2VjcmV0LW9ubHk=", "1700000000:alice"),
            "USYdtdGgWQqcCSs7gFoTEB8h9vk="
        );
    }

    #[test]
    fn rest_password_depends_on_secret_and_username() {
        let a = rest_password(b"secret-one", "1700000000:alice");
        assert_ne!(a, rest_password(b"secret-two", "1700000000:alice"));
        assert_ne!(a, rest_password(b"secret-one", "1700000001:alice"));
        // 20 bytes of HMAC-SHA1 are 28 base64 characters with one '=' of padding.
        assert_eq!(a.len(), 28);
        assert!(a.ends_with('='));
    }
}

//! Long-term credentials, TURN REST usernames, and stateless nonces.
//!
//! A nonce carries its own expiry and a MAC over (expiry, client IP), so the server keeps
//! no state for sources that have not authenticated.

use super::shared::ServerSettings;
use crate::stun::integrity::{long_term_key, rest_password};
use crate::stun::{IntegrityCheck, Message};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::net::IpAddr;

/// 8 hex digits of expiry (Unix seconds) + 16 hex digits of MAC.
pub(crate) const NONCE_LEN: usize = 24;

fn nonce_tag(key: &[u8; 32], client: IpAddr, expiry: u32) -> [u8; 8] {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&expiry.to_be_bytes());
    match client {
        IpAddr::V4(v4) => mac.update(&v4.octets()),
        IpAddr::V6(v6) => mac.update(&v6.octets()),
    }
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&full[..8]);
    tag
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// A fresh nonce for `client`, valid until `expiry_unix`.
pub(crate) fn mint_nonce(key: &[u8; 32], client: IpAddr, expiry_unix: u64) -> [u8; NONCE_LEN] {
    let expiry = u32::try_from(expiry_unix).unwrap_or(u32::MAX);
    let mut out = [0u8; NONCE_LEN];
    hex_into(&expiry.to_be_bytes(), &mut out[..8]);
    hex_into(&nonce_tag(key, client, expiry), &mut out[8..]);
    out
}

/// Whether `nonce` was minted by this server for `client` and has not expired.
pub(crate) fn nonce_is_valid(key: &[u8; 32], client: IpAddr, nonce: &str, now_unix: u64) -> bool {
    if nonce.len() != NONCE_LEN || !nonce.is_ascii() {
        return false;
    }
    let Ok(expiry) = u32::from_str_radix(&nonce[..8], 16) else {
        return false;
    };
    if u64::from(expiry) <= now_unix {
        return false;
    }
    let mut expected = [0u8; 16];
    hex_into(&nonce_tag(key, client, expiry), &mut expected);
    subtle::ConstantTimeEq::ct_eq(&expected[..], &nonce.as_bytes()[8..]).into()
}

/// An authenticated identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub key: [u8; 16],
    /// What the per-user quota counts: the user id of a REST username, else the name.
    pub quota_user: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// Unknown user, wrong password or secret, or an expired REST username.
    Rejected,
}

/// Finds the key for `username` and checks the message's integrity with it. Static users
/// are tried first, then every REST secret (so a secret can be rotated).
pub(crate) fn authenticate(
    settings: &ServerSettings,
    username: &str,
    msg: &Message<'_>,
    now_unix: u64,
) -> Result<Identity, AuthFailure> {
    if let Some(key) = settings.users.get(username) {
        return match msg.check_integrity(key) {
            IntegrityCheck::Valid => Ok(Identity {
                key: *key,
                quota_user: username.to_owned(),
            }),
            _ => Err(AuthFailure::Rejected),
        };
    }
    if settings.secrets.is_empty() {
        return Err(AuthFailure::Rejected);
    }
    let (expiry, user_id) = match username.split_once(settings.rest_separator) {
        Some((expiry, user)) => (expiry, user),
        None => (username, username),
    };
    let Ok(expiry) = expiry.parse::<u64>() else {
        return Err(AuthFailure::Rejected);
    };
    if expiry <= now_unix {
        return Err(AuthFailure::Rejected);
    }
    for secret in &settings.secrets {
        let password = rest_password(secret.as_bytes(), username);
        let key = long_term_key(username, &settings.realm, &password);
        if msg.check_integrity(&key) == IntegrityCheck::Valid {
            return Ok(Identity {
                key,
                quota_user: user_id.to_owned(),
            });
        }
    }
    Err(AuthFailure::Rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn nonce_round_trip_and_expiry() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let nonce = mint_nonce(&KEY, ip, 1000);
        let text = std::str::from_utf8(&nonce).unwrap();
        assert!(nonce_is_valid(&KEY, ip, text, 999));
        assert!(
            !nonce_is_valid(&KEY, ip, text, 1000),
            "expired at its expiry"
        );
    }

    #[test]
    fn nonce_is_bound_to_client_and_key() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let nonce = mint_nonce(&KEY, ip, 1000);
        let text = std::str::from_utf8(&nonce).unwrap();
        assert!(!nonce_is_valid(&KEY, other, text, 1));
        assert!(!nonce_is_valid(&[8; 32], ip, text, 1));
    }

    #[test]
    fn forged_or_garbled_nonces_are_refused() {
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let nonce = mint_nonce(&KEY, ip, 5000);
        let mut forged = nonce;
        forged[3] = if forged[3] == b'f' { b'e' } else { b'f' };
        for bad in [
            std::str::from_utf8(&forged).unwrap(),
            "",
            "zzzzzzzz0000000000000000",
            "ffffffff",
            "ü0000000000000000000000",
        ] {
            assert!(!nonce_is_valid(&KEY, ip, bad, 1), "{bad:?}");
        }
    }
}

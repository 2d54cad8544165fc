//! Cluster-secret authentication.
//!
//! The TLS certificate proves nothing here (each node makes a throwaway one); what proves
//! membership is an HMAC of the cluster secret over the session's TLS exporter. The exporter
//! binds the tag to this one QUIC session, so a tag seen on the wire is useless on another
//! connection, and the role byte keeps an acceptor from reflecting the connector's tag back.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Domain separation: a tag for this protocol cannot be mistaken for any other HMAC.
const CONTEXT: &[u8] = b"plenary-cascade-v1";

/// TLS keying-material exporter label (RFC 5705 / RFC 8446 §7.5); the context is empty.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-plenary-cascade";

/// Length of the exporter secret and of a tag.
pub const TAG_LEN: usize = 32;

/// Which side of the connection computes the tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Connector,
    Acceptor,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Connector => 0,
            Role::Acceptor => 1,
        }
    }
}

/// The tag `role` sends on a session whose exporter output is `exporter`.
pub fn tag(secret: &[u8], role: Role, exporter: &[u8; TAG_LEN]) -> [u8; TAG_LEN] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(CONTEXT);
    mac.update(&[role.byte()]);
    mac.update(exporter);
    mac.finalize().into_bytes().into()
}

/// Whether `received` is the tag `role` (the sender) must send. Constant time in the contents.
pub fn verify(secret: &[u8], role: Role, exporter: &[u8; TAG_LEN], received: &[u8]) -> bool {
    let want = tag(secret, role, exporter);
    // Length is public (fixed by the protocol); only the contents need constant time.
    received.len() == TAG_LEN && bool::from(want.ct_eq(received))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"correct horse battery staple";
    const EXP: [u8; 32] = [7; 32];

    #[test]
    fn matching_secret_and_role_verifies() {
        let t = tag(SECRET, Role::Connector, &EXP);
        assert!(verify(SECRET, Role::Connector, &EXP, &t));
        let t = tag(SECRET, Role::Acceptor, &EXP);
        assert!(verify(SECRET, Role::Acceptor, &EXP, &t));
    }

    #[test]
    fn wrong_secret_fails() {
        let t = tag(b"another cluster", Role::Connector, &EXP);
        assert!(!verify(SECRET, Role::Connector, &EXP, &t));
    }

    #[test]
    fn reflected_tag_fails() {
        // An acceptor without the secret echoing the connector's tag back.
        let t = tag(SECRET, Role::Connector, &EXP);
        assert!(!verify(SECRET, Role::Acceptor, &EXP, &t));
        let t = tag(SECRET, Role::Acceptor, &EXP);
        assert!(!verify(SECRET, Role::Connector, &EXP, &t));
    }

    #[test]
    fn tag_is_bound_to_the_session() {
        let t = tag(SECRET, Role::Connector, &EXP);
        assert!(!verify(SECRET, Role::Connector, &[8; 32], &t));
    }

    #[test]
    fn truncated_or_long_tags_fail() {
        let t = tag(SECRET, Role::Connector, &EXP);
        assert!(!verify(SECRET, Role::Connector, &EXP, &t[..31]));
        assert!(!verify(
            SECRET,
            Role::Connector,
            &EXP,
            &[&t[..], &[0]].concat()
        ));
        assert!(!verify(SECRET, Role::Connector, &EXP, &[]));
    }

    #[test]
    fn known_answer() {
        // Pins the construction (context, role byte, exporter order) against accidental change.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET).expect("any length");
        mac.update(b"plenary-cascade-v1\x01");
        mac.update(&EXP);
        let want: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(tag(SECRET, Role::Acceptor, &EXP), want);
    }
}

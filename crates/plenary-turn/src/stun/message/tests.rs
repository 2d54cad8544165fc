//! Parser tests: RFC 5769 vectors, malformed input, truncation and mutation.

use super::super::test_vectors::{self as tv, hex, XorShift};
use super::super::{integrity::long_term_key, method, MessageWriter};
use super::*;

#[test]
fn rfc5769_sample_request() {
    let bytes = hex(tv::SAMPLE_REQUEST);
    let m = Message::parse(&bytes).expect("parses");
    assert_eq!((m.method(), m.class()), (method::BINDING, Class::Request));
    assert_eq!(m.transaction_id(), tv::TXID);
    assert_eq!(m.get_text(attr::USERNAME), Ok(Some("evtj:h6vY")));
    assert_eq!(m.get_text(attr::SOFTWARE), Ok(Some("STUN test client")));
    assert!(m.has_fingerprint());
    assert!(m.has_integrity());
    assert_eq!(
        m.check_integrity(tv::SHORT_TERM_PASSWORD),
        IntegrityCheck::Valid
    );
    assert_eq!(m.check_integrity(b"wrong"), IntegrityCheck::Invalid);
    let types: Vec<u16> = m.attrs().map(|a| a.typ).collect();
    assert_eq!(types, [0x8022, 0x0024, 0x8029, 0x0006, 0x0008, 0x8028]);
}

#[test]
fn rfc5769_responses_decode_their_addresses() {
    for (vector, want) in [
        (tv::IPV4_RESPONSE, tv::IPV4_MAPPED),
        (tv::IPV6_RESPONSE, tv::IPV6_MAPPED),
    ] {
        let bytes = hex(vector);
        let m = Message::parse(&bytes).expect("parses");
        assert_eq!((m.method(), m.class()), (method::BINDING, Class::Success));
        assert_eq!(m.get_text(attr::SOFTWARE), Ok(Some("test vector")));
        assert_eq!(
            m.get_xor_address(attr::XOR_MAPPED_ADDRESS),
            Ok(Some(want.parse().unwrap()))
        );
        assert!(m.has_fingerprint());
        assert_eq!(
            m.check_integrity(tv::SHORT_TERM_PASSWORD),
            IntegrityCheck::Valid,
            "{want}"
        );
    }
}

#[test]
fn rfc5769_long_term_request() {
    let bytes = hex(tv::LONG_TERM_REQUEST);
    let m = Message::parse(&bytes).expect("parses");
    assert_eq!(m.transaction_id(), tv::LONG_TERM_TXID);
    assert_eq!(m.get_text(attr::USERNAME), Ok(Some(tv::LONG_TERM_USERNAME)));
    assert_eq!(m.get_text(attr::REALM), Ok(Some(tv::LONG_TERM_REALM)));
    assert_eq!(m.get_text(attr::NONCE), Ok(Some(tv::LONG_TERM_NONCE)));
    assert!(!m.has_fingerprint());
    let key = long_term_key(
        tv::LONG_TERM_USERNAME,
        tv::LONG_TERM_REALM,
        tv::LONG_TERM_PASSWORD,
    );
    assert_eq!(m.check_integrity(&key), IntegrityCheck::Valid);
    let unprepped = long_term_key(tv::LONG_TERM_USERNAME, tv::LONG_TERM_REALM, "TheMatrix");
    assert_eq!(m.check_integrity(&unprepped), IntegrityCheck::Invalid);
}

#[test]
fn header_errors() {
    let good = hex(tv::IPV4_RESPONSE);
    assert_eq!(
        Message::parse(&good[..19]).err(),
        Some(DecodeError::TooShort)
    );
    assert_eq!(Message::parse(&[]).err(), Some(DecodeError::TooShort));

    let mut b = good.clone();
    b[0] |= 0x80;
    assert_eq!(Message::parse(&b).err(), Some(DecodeError::NotStun));
    let mut b = good.clone();
    b[0] |= 0x40;
    assert_eq!(Message::parse(&b).err(), Some(DecodeError::NotStun));

    let mut b = good.clone();
    b[7] ^= 1;
    assert_eq!(Message::parse(&b).err(), Some(DecodeError::BadCookie));

    let mut b = good.clone();
    b[3] += 1; // not a multiple of 4
    assert_eq!(Message::parse(&b).err(), Some(DecodeError::BadLength));
    let mut b = good.clone();
    b.extend_from_slice(&[0; 4]); // trailing bytes on a datagram
    assert_eq!(Message::parse(&b).err(), Some(DecodeError::BadLength));
}

#[test]
fn attribute_running_past_the_end_is_rejected() {
    let mut b = hex(tv::IPV4_RESPONSE);
    b[22..24].copy_from_slice(&0x0100u16.to_be_bytes()); // SOFTWARE length
    assert_eq!(
        Message::parse(&b).err(),
        Some(DecodeError::TruncatedAttribute)
    );
    // A dangling partial attribute header.
    let mut b = vec![0, 1, 0, 4, 0x21, 0x12, 0xa4, 0x42];
    b.extend_from_slice(&[0; 12]);
    b.extend_from_slice(&[0x80, 0x22]);
    b.extend_from_slice(&[0, 0]);
    assert!(Message::parse(&b).is_ok(), "zero-length attribute is fine");
    b[23] = 1;
    assert_eq!(
        Message::parse(&b).err(),
        Some(DecodeError::TruncatedAttribute)
    );
}

#[test]
fn changed_value_bytes_break_the_fingerprint() {
    let good = hex(tv::SAMPLE_REQUEST);
    let m = Message::parse(&good).unwrap();
    for a in m.attrs().filter(|a| a.typ != attr::FINGERPRINT) {
        for i in a.offset + 4..a.offset + 4 + a.value.len() {
            let mut b = good.clone();
            b[i] ^= 0x01;
            assert_eq!(
                Message::parse(&b).err(),
                Some(DecodeError::BadFingerprint),
                "byte {i}"
            );
        }
    }
    let mut b = good.clone();
    let last = b.len() - 1;
    b[last] ^= 0x80;
    assert_eq!(Message::parse(&b).err(), Some(DecodeError::BadFingerprint));
}

#[test]
fn changed_bytes_break_the_integrity() {
    let good = hex(tv::LONG_TERM_REQUEST);
    let key = long_term_key(
        tv::LONG_TERM_USERNAME,
        tv::LONG_TERM_REALM,
        tv::LONG_TERM_PASSWORD,
    );
    for i in [0, 1, 8, 19, 25, 50, 70, 90, good.len() - 1] {
        let mut b = good.clone();
        b[i] ^= 0x04;
        if let Ok(m) = Message::parse(&b) {
            assert_ne!(m.check_integrity(&key), IntegrityCheck::Valid, "byte {i}");
        }
    }
}

#[test]
fn fingerprint_must_be_last_and_four_bytes() {
    let mut buf = [0u8; 128];
    let mut w = MessageWriter::new(&mut buf, method::BINDING, Class::Request, &tv::TXID).unwrap();
    w.fingerprint().unwrap();
    w.attr(attr::SOFTWARE, b"late").unwrap();
    let n = w.finish();
    assert_eq!(
        Message::parse(&buf[..n]).err(),
        Some(DecodeError::BadFingerprint)
    );

    let mut buf = [0u8; 128];
    let mut w = MessageWriter::new(&mut buf, method::BINDING, Class::Request, &tv::TXID).unwrap();
    w.attr(attr::FINGERPRINT, &[0; 8]).unwrap();
    let n = w.finish();
    assert_eq!(
        Message::parse(&buf[..n]).err(),
        Some(DecodeError::BadFingerprint)
    );
}

#[test]
fn attributes_after_integrity_are_ignored_by_get() {
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Request, &tv::TXID).unwrap();
    w.attr(attr::USERNAME, b"alice").unwrap();
    w.message_integrity(b"key").unwrap();
    w.attr(attr::REALM, b"injected").unwrap();
    w.attr(attr::USERNAME, b"mallory").unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    let m = Message::parse(&buf[..n]).unwrap();
    assert_eq!(m.get_text(attr::USERNAME), Ok(Some("alice")));
    assert_eq!(m.get(attr::REALM), None);
    assert!(m.get(attr::MESSAGE_INTEGRITY).is_some());
    assert!(m.get(attr::FINGERPRINT).is_some());
    assert_eq!(m.attrs().count(), 5);
    // Integrity covers only what precedes it, so the appended attributes don't break it.
    assert_eq!(m.check_integrity(b"key"), IntegrityCheck::Valid);
}

#[test]
fn integrity_missing_or_malformed() {
    let mut buf = [0u8; 128];
    let mut w = MessageWriter::new(&mut buf, method::BINDING, Class::Request, &tv::TXID).unwrap();
    w.attr(attr::SOFTWARE, b"x").unwrap();
    let n = w.finish();
    let m = Message::parse(&buf[..n]).unwrap();
    assert_eq!(m.check_integrity(b"k"), IntegrityCheck::Missing);
    assert!(!m.has_integrity());

    let mut buf = [0u8; 128];
    let mut w = MessageWriter::new(&mut buf, method::BINDING, Class::Request, &tv::TXID).unwrap();
    w.attr(attr::MESSAGE_INTEGRITY, &[0; 16]).unwrap();
    let n = w.finish();
    let m = Message::parse(&buf[..n]).unwrap();
    assert_eq!(m.check_integrity(b"k"), IntegrityCheck::Invalid);
}

#[test]
fn unknown_required_lists_each_type_once() {
    let bytes = hex(tv::SAMPLE_REQUEST);
    let m = Message::parse(&bytes).unwrap();
    let known = |t: u16| matches!(t, attr::USERNAME | attr::MESSAGE_INTEGRITY);
    let mut out = [0u16; 4];
    // PRIORITY (0x0024) is comprehension-required; SOFTWARE and ICE-CONTROLLED are not.
    assert_eq!(m.unknown_required(known, &mut out), 1);
    assert_eq!(out[0], 0x0024);

    let mut buf = [0u8; 128];
    let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Request, &tv::TXID).unwrap();
    for t in [0x7001, 0x7002, 0x7001, 0x7003] {
        w.attr(t, b"").unwrap();
    }
    w.message_integrity(b"k").unwrap();
    w.attr(0x7004, b"").unwrap();
    let n = w.finish();
    let m = Message::parse(&buf[..n]).unwrap();
    let mut out = [0u16; 8];
    let count = m.unknown_required(|t| t == attr::MESSAGE_INTEGRITY, &mut out);
    assert_eq!(&out[..count], [0x7001, 0x7002, 0x7003]);
    let mut small = [0u16; 2];
    assert_eq!(m.unknown_required(|_| false, &mut small), 2);
    assert_eq!(m.unknown_required(|_| false, &mut []), 0);
}

/// Runs everything a server would on a parsed message; must never panic.
fn exercise(bytes: &[u8]) {
    if let Ok(m) = Message::parse(bytes) {
        let txid = m.transaction_id();
        for a in m.attrs() {
            let _ = attr::xor_address(a.value, &txid);
            let _ = attr::u32_value(a.value);
            let _ = attr::error_code(a.value);
            let _ = attr::text_for(a.typ, a.value);
            let _ = attr::address_family(a.value);
        }
        let _ = m.check_integrity(b"key");
        let _ = m.unknown_required(|_| false, &mut [0; 4]);
    }
}

#[test]
fn every_prefix_parses_or_fails_cleanly() {
    for (bytes, _) in tv::all() {
        for cut in 0..bytes.len() {
            assert!(Message::parse(&bytes[..cut]).is_err(), "prefix {cut}");
            // Same prefix with the length field made to agree, so the attribute walk
            // itself meets the cut.
            let mut b = bytes[..cut].to_vec();
            if cut >= HEADER_LEN {
                let len = (cut - HEADER_LEN) as u16;
                b[2..4].copy_from_slice(&len.to_be_bytes());
            }
            exercise(&b);
        }
    }
}

#[test]
fn random_mutations_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for (bytes, key) in tv::all() {
        for _ in 0..2000 {
            let mut b = bytes.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            exercise(&b);
            if let Ok(m) = Message::parse(&b) {
                let _ = m.check_integrity(&key);
            }
        }
    }
}

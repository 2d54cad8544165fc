//! STUN message writer into a caller-owned buffer.

use super::attr::{self, encode_xor_address};
use super::integrity::{hmac_sha1, HMAC_SHA1_LEN};
use super::message::{fingerprint_of, padded};
use super::{message_type, Class, TransactionId, HEADER_LEN, MAGIC_COOKIE};
use hmac::Mac;
use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Also returned when the message would outgrow the 16-bit length field.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// Builds one message in `buf`. Attributes are appended with padding; the header length
/// is kept current so integrity/fingerprint can be appended last.
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> MessageWriter<'b> {
    pub fn new(
        buf: &'b mut [u8],
        method: u16,
        class: Class,
        txid: &TransactionId,
    ) -> Result<Self, EncodeError> {
        let header = buf
            .get_mut(..HEADER_LEN)
            .ok_or(EncodeError::BufferTooSmall)?;
        header[0..2].copy_from_slice(&message_type(method, class).to_be_bytes());
        header[2..4].fill(0);
        header[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        header[8..20].copy_from_slice(txid);
        Ok(MessageWriter {
            buf,
            len: HEADER_LEN,
        })
    }

    /// Appends the header of an attribute with a `value_len`-byte value, zeroes its padding,
    /// updates the length field, and returns the value bytes for the caller to fill.
    /// Nothing is changed on error.
    fn reserve(&mut self, typ: u16, value_len: usize) -> Result<&mut [u8], EncodeError> {
        let wire_len = u16::try_from(value_len).map_err(|_| EncodeError::BufferTooSmall)?;
        let start = self.len;
        let end = start + 4 + padded(value_len);
        let body_len = u16::try_from(end - HEADER_LEN).map_err(|_| EncodeError::BufferTooSmall)?;
        let attr = self
            .buf
            .get_mut(start..end)
            .ok_or(EncodeError::BufferTooSmall)?;
        attr[0..2].copy_from_slice(&typ.to_be_bytes());
        attr[2..4].copy_from_slice(&wire_len.to_be_bytes());
        attr[4 + value_len..].fill(0);
        self.buf[2..4].copy_from_slice(&body_len.to_be_bytes());
        self.len = end;
        Ok(&mut self.buf[start + 4..start + 4 + value_len])
    }

    /// Appends a raw attribute (value padded to 4 bytes with zeros).
    pub fn attr(&mut self, typ: u16, value: &[u8]) -> Result<(), EncodeError> {
        self.reserve(typ, value.len())?.copy_from_slice(value);
        Ok(())
    }
    pub fn u32(&mut self, typ: u16, v: u32) -> Result<(), EncodeError> {
        self.attr(typ, &v.to_be_bytes())
    }
    /// XOR-MAPPED-ADDRESS / XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS (uses this message's
    /// transaction id for IPv6). IPv4-mapped IPv6 addresses are written as IPv4.
    pub fn xor_address(&mut self, typ: u16, addr: SocketAddr) -> Result<(), EncodeError> {
        let (value, n) = encode_xor_address(addr, &self.transaction_id());
        self.attr(typ, &value[..n])
    }
    /// ERROR-CODE with class/number split per RFC 8489 §14.8.
    pub fn error_code(&mut self, code: u16, reason: &str) -> Result<(), EncodeError> {
        let value = self.reserve(attr::ERROR_CODE, 4 + reason.len())?;
        // Class is 3 bits on the wire; codes are 300..=699 so nothing is lost.
        value[..4].copy_from_slice(&[0, 0, (code / 100) as u8 & 0x07, (code % 100) as u8]);
        value[4..].copy_from_slice(reason.as_bytes());
        Ok(())
    }
    /// UNKNOWN-ATTRIBUTES (list of 16-bit types).
    pub fn unknown_attributes(&mut self, types: &[u16]) -> Result<(), EncodeError> {
        let value = self.reserve(attr::UNKNOWN_ATTRIBUTES, types.len() * 2)?;
        for (slot, typ) in value.chunks_exact_mut(2).zip(types) {
            slot.copy_from_slice(&typ.to_be_bytes());
        }
        Ok(())
    }
    /// MESSAGE-INTEGRITY (HMAC-SHA1 over everything so far, length adjusted).
    pub fn message_integrity(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        let covered = self.len;
        // `reserve` sets the length field to include MESSAGE-INTEGRITY, which is what the
        // HMAC must see.
        self.reserve(attr::MESSAGE_INTEGRITY, HMAC_SHA1_LEN)?;
        let mut mac = hmac_sha1(key);
        mac.update(&self.buf[..covered]);
        let tag = mac.finalize().into_bytes();
        self.buf[covered + 4..covered + 4 + HMAC_SHA1_LEN].copy_from_slice(&tag);
        Ok(())
    }
    /// FINGERPRINT (CRC-32 xor 0x5354554e). Must be last.
    pub fn fingerprint(&mut self) -> Result<(), EncodeError> {
        let covered = self.len;
        self.reserve(attr::FINGERPRINT, 4)?;
        let crc = fingerprint_of(&self.buf[..covered]);
        self.buf[covered + 4..covered + 8].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }
    /// This message's transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&self.buf[8..HEADER_LEN]);
        txid
    }
    /// The message written so far (valid STUN at every step).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    /// Length of the finished message in `buf`.
    pub fn finish(self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_vectors::{self as tv, hex};
    use super::super::{attr, integrity::long_term_key, method, IntegrityCheck, Message};
    use super::*;

    #[test]
    fn writes_the_rfc5769_sample_request() {
        let want = hex(tv::SAMPLE_REQUEST);
        let mut buf = [0u8; 256];
        let mut w =
            MessageWriter::new(&mut buf, method::BINDING, Class::Request, &tv::TXID).unwrap();
        w.attr(attr::SOFTWARE, b"STUN test client").unwrap();
        w.u32(0x0024, 0x6e00_01ff).unwrap(); // PRIORITY
        w.attr(0x8029, &hex("93 2f f9 b1 51 26 3b 36")).unwrap(); // ICE-CONTROLLED
        w.attr(attr::USERNAME, b"evtj:h6vY").unwrap();
        // The RFC pads with spaces; padding may be any value but is covered by the HMAC.
        let pad_at = w.len - 3;
        w.buf[pad_at..w.len].fill(0x20);
        w.message_integrity(tv::SHORT_TERM_PASSWORD).unwrap();
        w.fingerprint().unwrap();
        let n = w.finish();
        assert_eq!(&buf[..n], &want[..]);
    }

    #[test]
    fn writes_the_rfc5769_responses() {
        for (vector, mapped) in [
            (tv::IPV4_RESPONSE, tv::IPV4_MAPPED),
            (tv::IPV6_RESPONSE, tv::IPV6_MAPPED),
        ] {
            let want = hex(vector);
            let mut buf = [0u8; 256];
            let mut w =
                MessageWriter::new(&mut buf, method::BINDING, Class::Success, &tv::TXID).unwrap();
            w.attr(attr::SOFTWARE, b"test vector").unwrap();
            w.buf[w.len - 1] = 0x20;
            w.xor_address(attr::XOR_MAPPED_ADDRESS, mapped.parse().unwrap())
                .unwrap();
            w.message_integrity(tv::SHORT_TERM_PASSWORD).unwrap();
            w.fingerprint().unwrap();
            let n = w.finish();
            assert_eq!(&buf[..n], &want[..], "{mapped}");
        }
    }

    #[test]
    fn writes_the_rfc5769_long_term_request() {
        let want = hex(tv::LONG_TERM_REQUEST);
        let key = long_term_key(
            tv::LONG_TERM_USERNAME,
            tv::LONG_TERM_REALM,
            tv::LONG_TERM_PASSWORD,
        );
        let mut buf = [0u8; 256];
        let mut w = MessageWriter::new(
            &mut buf,
            method::BINDING,
            Class::Request,
            &tv::LONG_TERM_TXID,
        )
        .unwrap();
        w.attr(attr::USERNAME, tv::LONG_TERM_USERNAME.as_bytes())
            .unwrap();
        w.attr(attr::NONCE, tv::LONG_TERM_NONCE.as_bytes()).unwrap();
        w.attr(attr::REALM, tv::LONG_TERM_REALM.as_bytes()).unwrap();
        w.message_integrity(&key).unwrap();
        let n = w.finish();
        assert_eq!(&buf[..n], &want[..]);
    }

    /// Writes an Allocate success response such as the server sends.
    fn allocate_success(buf: &mut [u8], key: &[u8]) -> Result<usize, EncodeError> {
        let txid = [7u8; 12];
        let mut w = MessageWriter::new(buf, method::ALLOCATE, Class::Success, &txid)?;
        w.xor_address(
            attr::XOR_RELAYED_ADDRESS,
            "203.0.113.9:50000".parse().unwrap(),
        )?;
        w.xor_address(
            attr::XOR_RELAYED_ADDRESS,
            "[2001:db8::9]:50002".parse().unwrap(),
        )?;
        w.xor_address(
            attr::XOR_MAPPED_ADDRESS,
            "198.51.100.2:41000".parse().unwrap(),
        )?;
        w.u32(attr::LIFETIME, 600)?;
        w.attr(attr::SOFTWARE, b"plenary")?;
        w.message_integrity(key)?;
        w.fingerprint()?;
        Ok(w.finish())
    }

    #[test]
    fn round_trips_through_the_parser() {
        let mut buf = [0u8; 512];
        let n = allocate_success(&mut buf, b"key").unwrap();
        assert_eq!(n % 4, 0);
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!((m.method(), m.class()), (method::ALLOCATE, Class::Success));
        assert_eq!(m.transaction_id(), [7u8; 12]);
        let relayed: Vec<_> = m
            .attrs()
            .filter(|a| a.typ == attr::XOR_RELAYED_ADDRESS)
            .map(|a| attr::xor_address(a.value, &m.transaction_id()).unwrap())
            .collect();
        assert_eq!(
            relayed,
            [
                "203.0.113.9:50000".parse().unwrap(),
                "[2001:db8::9]:50002".parse().unwrap()
            ]
        );
        assert_eq!(
            m.get_xor_address(attr::XOR_MAPPED_ADDRESS),
            Ok(Some("198.51.100.2:41000".parse().unwrap()))
        );
        assert_eq!(m.get_u32(attr::LIFETIME), Ok(Some(600)));
        assert_eq!(m.get_text(attr::SOFTWARE), Ok(Some("plenary")));
        assert!(m.has_fingerprint());
        assert_eq!(m.check_integrity(b"key"), IntegrityCheck::Valid);
        assert_eq!(m.check_integrity(b"other"), IntegrityCheck::Invalid);
    }

    #[test]
    fn error_response_round_trips() {
        let mut buf = [0u8; 256];
        let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Error, &[1; 12]).unwrap();
        w.error_code(420, "Unknown Attribute").unwrap();
        w.unknown_attributes(&[0x0024, 0x7001, 0x7002]).unwrap();
        w.fingerprint().unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(m.class(), Class::Error);
        let ec = m.get(attr::ERROR_CODE).unwrap();
        assert_eq!(&ec.value[..4], [0, 0, 4, 20]);
        assert_eq!(attr::error_code(ec.value), Ok((420, "Unknown Attribute")));
        let ua = m.get(attr::UNKNOWN_ATTRIBUTES).unwrap();
        assert_eq!(ua.value, [0x00, 0x24, 0x70, 0x01, 0x70, 0x02]);
        // 6 bytes of value padded to 8.
        assert_eq!(m.get(attr::FINGERPRINT).unwrap().offset, ua.offset + 12);
        for code in [300, 400, 401, 403, 437, 438, 441, 442, 486, 500, 508, 699] {
            let mut buf = [0u8; 64];
            let mut w =
                MessageWriter::new(&mut buf, method::REFRESH, Class::Error, &[0; 12]).unwrap();
            w.error_code(code, "").unwrap();
            let n = w.finish();
            let m = Message::parse(&buf[..n]).unwrap();
            assert_eq!(
                attr::error_code(m.get(attr::ERROR_CODE).unwrap().value),
                Ok((code, ""))
            );
        }
    }

    #[test]
    fn padding_is_zeroed() {
        let mut buf = [0xaau8; 64];
        let mut w =
            MessageWriter::new(&mut buf, method::BINDING, Class::Request, &[0; 12]).unwrap();
        w.attr(attr::USERNAME, b"a").unwrap();
        let n = w.finish();
        assert_eq!(n, 28);
        assert_eq!(&buf[20..28], [0x00, 0x06, 0x00, 0x01, b'a', 0, 0, 0]);
        assert_eq!(&buf[2..4], [0, 8]);
    }

    #[test]
    fn small_buffers_fail_without_panicking() {
        let mut big = [0u8; 512];
        let needed = allocate_success(&mut big, b"key").unwrap();
        for size in 0..needed {
            let mut buf = vec![0u8; size];
            assert_eq!(
                allocate_success(&mut buf, b"key"),
                Err(EncodeError::BufferTooSmall),
                "{size}"
            );
        }
        let mut buf = vec![0u8; needed];
        assert_eq!(allocate_success(&mut buf, b"key"), Ok(needed));
    }

    #[test]
    fn failed_append_leaves_a_valid_message() {
        let mut buf = [0u8; 32];
        let mut w =
            MessageWriter::new(&mut buf, method::BINDING, Class::Success, &[0; 12]).unwrap();
        w.attr(attr::SOFTWARE, b"ok").unwrap(); // 28 bytes so far
        assert_eq!(
            w.attr(attr::SOFTWARE, &[0; 32]),
            Err(EncodeError::BufferTooSmall)
        );
        assert_eq!(w.fingerprint(), Err(EncodeError::BufferTooSmall));
        assert!(Message::parse(w.as_bytes()).is_ok());
    }

    #[test]
    fn oversized_values_are_refused() {
        let mut buf = vec![0u8; 70_000];
        let mut w =
            MessageWriter::new(&mut buf, method::BINDING, Class::Request, &[0; 12]).unwrap();
        let big = vec![0u8; 65_536];
        assert_eq!(w.attr(attr::DATA, &big), Err(EncodeError::BufferTooSmall));
        // Fits the attribute length but not the message length with the header.
        assert_eq!(
            w.attr(attr::DATA, &big[..65_535]),
            Err(EncodeError::BufferTooSmall)
        );
        w.attr(attr::DATA, &big[..65_528]).unwrap();
        assert_eq!(w.fingerprint(), Err(EncodeError::BufferTooSmall));
        let n = w.finish();
        assert!(Message::parse(&buf[..n]).is_ok());
    }
}

//! Zero-copy STUN message reader.

use super::{Class, TransactionId};

/// Why a datagram is not a well-formed STUN message. Callers count these; they never panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than a STUN header")]
    TooShort,
    #[error("first two bits are not zero")]
    NotStun,
    #[error("magic cookie mismatch")]
    BadCookie,
    #[error("length field is not a multiple of 4 or does not match the datagram")]
    BadLength,
    #[error("attribute runs past the end of the message")]
    TruncatedAttribute,
    #[error("FINGERPRINT is present but wrong or not last")]
    BadFingerprint,
}

/// One attribute as it appears on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    pub typ: u16,
    /// The value, without padding.
    pub value: &'a [u8],
    /// Byte offset of this attribute's 4-byte header within the message.
    pub offset: usize,
}

/// Result of checking MESSAGE-INTEGRITY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntegrityCheck {
    Missing,
    Valid,
    Invalid,
}

/// A parsed, borrowed STUN message. `parse` has already walked every attribute header, so
/// iteration cannot fail afterwards.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    method: u16,
    class: Class,
}

impl<'a> Message<'a> {
    /// Parses and validates header, cookie, length and the attribute TLV chain. The
    /// message is `buf[..20 + length]`; trailing bytes beyond that are an error on UDP
    /// (`BadLength`). If FINGERPRINT is present it must be last and correct.
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let _ = buf;
        todo!()
    }

    pub fn method(&self) -> u16 {
        self.method
    }
    pub fn class(&self) -> Class {
        self.class
    }
    pub fn transaction_id(&self) -> TransactionId {
        todo!()
    }
    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    /// Attributes in wire order, including those after MESSAGE-INTEGRITY.
    pub fn attrs(&self) -> AttrIter<'a> {
        todo!()
    }
    /// First occurrence of `typ` that precedes MESSAGE-INTEGRITY (RFC 8489 §14.5: later
    /// ones other than FINGERPRINT must be ignored).
    pub fn get(&self, typ: u16) -> Option<Attr<'a>> {
        let _ = typ;
        todo!()
    }
    /// Whether a FINGERPRINT attribute is present (it was already verified by `parse`).
    pub fn has_fingerprint(&self) -> bool {
        todo!()
    }
    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key`, in constant time, computing the
    /// HMAC over the message with the length field adjusted as RFC 8489 §14.5 requires.
    pub fn check_integrity(&self, key: &[u8]) -> IntegrityCheck {
        let _ = key;
        todo!()
    }
    /// Comprehension-required attributes (type < 0x8000) for which `known` is false, up to
    /// `out.len()`; returns how many were written. Used for 420 Unknown Attribute.
    pub fn unknown_required(&self, known: impl Fn(u16) -> bool, out: &mut [u16]) -> usize {
        let _ = (known, out);
        todo!()
    }
}

/// Iterator over attributes; see [`Message::attrs`].
#[derive(Clone, Debug)]
pub struct AttrIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = Attr<'a>;
    fn next(&mut self) -> Option<Attr<'a>> {
        let _ = (self.buf, self.pos);
        todo!()
    }
}

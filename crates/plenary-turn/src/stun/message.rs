//! Zero-copy STUN message reader.

use super::attr::{self, AttrError};
use super::integrity::{hmac_sha1, HMAC_SHA1_LEN};
use super::{split_message_type, Class, TransactionId, HEADER_LEN, MAGIC_COOKIE};
use hmac::Mac;
use std::net::SocketAddr;
use subtle::ConstantTimeEq;

/// FINGERPRINT is the CRC-32 of the message XORed with this ("STUN"), RFC 8489 §14.7.
pub(crate) const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Size of an attribute's type and length fields.
const ATTR_HEADER_LEN: usize = 4;

/// Attribute values are padded to a multiple of 4 bytes.
pub(crate) const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// The FINGERPRINT value for a message whose bytes before the attribute are `bytes`.
pub(crate) fn fingerprint_of(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes) ^ FINGERPRINT_XOR
}

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
    /// Offset of the first MESSAGE-INTEGRITY attribute's header, if any.
    integrity_offset: Option<usize>,
    has_fingerprint: bool,
}

impl<'a> Message<'a> {
    /// Parses and validates header, cookie, length and the attribute TLV chain. The
    /// message is `buf[..20 + length]`; trailing bytes beyond that are an error on UDP
    /// (`BadLength`). If FINGERPRINT is present it must be last and correct.
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let Some((header, body)) = buf.split_first_chunk::<HEADER_LEN>() else {
            return Err(DecodeError::TooShort);
        };
        let typ = u16::from_be_bytes([header[0], header[1]]);
        if typ & 0xc000 != 0 {
            return Err(DecodeError::NotStun);
        }
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if u32::from_be_bytes([header[4], header[5], header[6], header[7]]) != MAGIC_COOKIE {
            return Err(DecodeError::BadCookie);
        }
        if length % 4 != 0 || length != body.len() {
            return Err(DecodeError::BadLength);
        }

        let mut integrity_offset = None;
        let mut has_fingerprint = false;
        let mut pos = HEADER_LEN;
        while pos < buf.len() {
            let (attr_type, len) = attr_header(buf, pos).ok_or(DecodeError::TruncatedAttribute)?;
            // The message length is a multiple of 4, so the padding fits whenever the value
            // does; checking the padded end keeps `pos` aligned regardless.
            let end = pos + ATTR_HEADER_LEN + padded(len);
            if end > buf.len() {
                return Err(DecodeError::TruncatedAttribute);
            }
            match attr_type {
                attr::MESSAGE_INTEGRITY if integrity_offset.is_none() => {
                    integrity_offset = Some(pos);
                }
                attr::FINGERPRINT => {
                    let value = &buf[pos + ATTR_HEADER_LEN..end];
                    let valid = end == buf.len()
                        && len == 4
                        && value == fingerprint_of(&buf[..pos]).to_be_bytes();
                    if !valid {
                        return Err(DecodeError::BadFingerprint);
                    }
                    has_fingerprint = true;
                }
                _ => {}
            }
            pos = end;
        }

        let (method, class) = split_message_type(typ);
        Ok(Message {
            buf,
            method,
            class,
            integrity_offset,
            has_fingerprint,
        })
    }

    pub fn method(&self) -> u16 {
        self.method
    }
    pub fn class(&self) -> Class {
        self.class
    }
    pub fn transaction_id(&self) -> TransactionId {
        let mut txid = [0u8; 12];
        if let Some(bytes) = self.buf.get(8..HEADER_LEN) {
            txid.copy_from_slice(bytes);
        }
        txid
    }
    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    /// Attributes in wire order, including those after MESSAGE-INTEGRITY.
    pub fn attrs(&self) -> AttrIter<'a> {
        AttrIter {
            buf: self.buf,
            pos: HEADER_LEN,
        }
    }
    /// First occurrence of `typ` that precedes MESSAGE-INTEGRITY (RFC 8489 §14.5: later
    /// ones other than FINGERPRINT must be ignored).
    pub fn get(&self, typ: u16) -> Option<Attr<'a>> {
        for a in self.attrs() {
            if a.typ == typ {
                return Some(a);
            }
            if a.typ == attr::MESSAGE_INTEGRITY && typ != attr::FINGERPRINT {
                return None;
            }
        }
        None
    }
    /// Whether a FINGERPRINT attribute is present (it was already verified by `parse`).
    pub fn has_fingerprint(&self) -> bool {
        self.has_fingerprint
    }
    /// Whether MESSAGE-INTEGRITY is present (its value is not checked).
    pub fn has_integrity(&self) -> bool {
        self.integrity_offset.is_some()
    }
    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key`, in constant time, computing the
    /// HMAC over the message with the length field adjusted as RFC 8489 §14.5 requires.
    pub fn check_integrity(&self, key: &[u8]) -> IntegrityCheck {
        let Some(offset) = self.integrity_offset else {
            return IntegrityCheck::Missing;
        };
        let Some((_, len)) = attr_header(self.buf, offset) else {
            return IntegrityCheck::Invalid;
        };
        let value_start = offset + ATTR_HEADER_LEN;
        let (Some(received), Some(header), Some(covered)) = (
            self.buf.get(value_start..value_start + len),
            self.buf.first_chunk::<HEADER_LEN>(),
            self.buf.get(HEADER_LEN..offset),
        ) else {
            return IntegrityCheck::Invalid;
        };
        if len != HMAC_SHA1_LEN {
            return IntegrityCheck::Invalid;
        }
        // The length field must read as if MESSAGE-INTEGRITY ended the message; patch a
        // copy of the header instead of the message.
        let mut patched = *header;
        let covered_len = offset + ATTR_HEADER_LEN + HMAC_SHA1_LEN - HEADER_LEN;
        let Ok(covered_len) = u16::try_from(covered_len) else {
            return IntegrityCheck::Invalid;
        };
        patched[2..4].copy_from_slice(&covered_len.to_be_bytes());
        let mut mac = hmac_sha1(key);
        mac.update(&patched);
        mac.update(covered);
        let expected = mac.finalize().into_bytes();
        if bool::from(expected.as_slice().ct_eq(received)) {
            IntegrityCheck::Valid
        } else {
            IntegrityCheck::Invalid
        }
    }
    /// Comprehension-required attributes (type < 0x8000) for which `known` is false, up to
    /// `out.len()`; returns how many were written. Used for 420 Unknown Attribute.
    /// Attributes after MESSAGE-INTEGRITY are ignored, as RFC 8489 §14.5 requires, and each
    /// type is listed once.
    pub fn unknown_required(&self, known: impl Fn(u16) -> bool, out: &mut [u16]) -> usize {
        let mut n = 0;
        for a in self.attrs() {
            if n == out.len() {
                break;
            }
            if a.typ < 0x8000 && !known(a.typ) && !out[..n].contains(&a.typ) {
                out[n] = a.typ;
                n += 1;
            }
            if a.typ == attr::MESSAGE_INTEGRITY {
                break;
            }
        }
        n
    }

    /// [`Message::get`], decoded as text with the limit for `typ` (USERNAME, REALM, NONCE,
    /// SOFTWARE). `Ok(None)` if absent.
    pub fn get_text(&self, typ: u16) -> Result<Option<&'a str>, AttrError> {
        self.get(typ)
            .map(|a| attr::text_for(typ, a.value))
            .transpose()
    }
    /// [`Message::get`], decoded as an XOR-*-ADDRESS with this message's transaction id.
    pub fn get_xor_address(&self, typ: u16) -> Result<Option<SocketAddr>, AttrError> {
        let txid = self.transaction_id();
        self.get(typ)
            .map(|a| attr::xor_address(a.value, &txid))
            .transpose()
    }
    /// [`Message::get`], decoded as a 4-byte number (LIFETIME etc).
    pub fn get_u32(&self, typ: u16) -> Result<Option<u32>, AttrError> {
        self.get(typ).map(|a| attr::u32_value(a.value)).transpose()
    }
}

/// (type, value length) of the attribute whose header starts at `pos`.
fn attr_header(buf: &[u8], pos: usize) -> Option<(u16, usize)> {
    let h = buf.get(pos..pos + ATTR_HEADER_LEN)?;
    Some((
        u16::from_be_bytes([h[0], h[1]]),
        usize::from(u16::from_be_bytes([h[2], h[3]])),
    ))
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
        let offset = self.pos;
        let (typ, len) = attr_header(self.buf, offset)?;
        let start = offset + ATTR_HEADER_LEN;
        let Some(value) = self.buf.get(start..start + len) else {
            // Unreachable after `parse`; stop rather than loop.
            self.pos = self.buf.len();
            return None;
        };
        self.pos = start + padded(len);
        Some(Attr { typ, value, offset })
    }
}

#[cfg(test)]
mod tests;

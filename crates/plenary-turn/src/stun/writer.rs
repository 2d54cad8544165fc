//! STUN message writer into a caller-owned buffer.

use super::{Class, TransactionId};
use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
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
        let _ = (buf, method, class, txid);
        todo!()
    }
    /// Appends a raw attribute (value padded to 4 bytes with zeros).
    pub fn attr(&mut self, typ: u16, value: &[u8]) -> Result<(), EncodeError> {
        let _ = (typ, value, &self.buf, self.len);
        todo!()
    }
    pub fn u32(&mut self, typ: u16, v: u32) -> Result<(), EncodeError> {
        self.attr(typ, &v.to_be_bytes())
    }
    /// XOR-MAPPED-ADDRESS / XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS (uses this message's
    /// transaction id for IPv6).
    pub fn xor_address(&mut self, typ: u16, addr: SocketAddr) -> Result<(), EncodeError> {
        let _ = (typ, addr);
        todo!()
    }
    /// ERROR-CODE with class/number split per RFC 8489 §14.8.
    pub fn error_code(&mut self, code: u16, reason: &str) -> Result<(), EncodeError> {
        let _ = (code, reason);
        todo!()
    }
    /// UNKNOWN-ATTRIBUTES (list of 16-bit types).
    pub fn unknown_attributes(&mut self, types: &[u16]) -> Result<(), EncodeError> {
        let _ = types;
        todo!()
    }
    /// MESSAGE-INTEGRITY (HMAC-SHA1 over everything so far, length adjusted).
    pub fn message_integrity(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        let _ = key;
        todo!()
    }
    /// FINGERPRINT (CRC-32 xor 0x5354554e). Must be last.
    pub fn fingerprint(&mut self) -> Result<(), EncodeError> {
        todo!()
    }
    /// Length of the finished message in `buf`.
    pub fn finish(self) -> usize {
        self.len
    }
}

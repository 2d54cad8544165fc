//! STUN/TURN wire format (RFC 8489, RFC 8656, RFC 6156), zero-copy.
//!
//! Reading borrows the datagram ([`Message`]); writing fills a caller-owned buffer
//! ([`MessageWriter`]). Nothing here allocates, so the codec can sit on the relay hot path
//! and be fuzzed without bounds worries.

pub mod attr;
pub mod channel_data;
pub mod integrity;
mod message;
mod writer;

pub use message::{Attr, AttrIter, DecodeError, IntegrityCheck, Message};
pub use writer::{EncodeError, MessageWriter};

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
pub type TransactionId = [u8; 12];

/// STUN message class (the C0/C1 bits of the type field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// Method numbers from the IANA STUN registry that Plenary handles.
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
    // RFC 6062 (TCP allocations), reserved for later.
    pub const CONNECT: u16 = 0x00a;
    pub const CONNECTION_BIND: u16 = 0x00b;
    pub const CONNECTION_ATTEMPT: u16 = 0x00c;
}

/// What the first bytes of a datagram or stream frame are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// First two bits 0b00: a STUN message.
    Stun,
    /// First byte 0x40..=0x4F (channel 0x4000..=0x4FFF): ChannelData.
    ChannelData,
    /// Anything else (including ChannelData numbers outside the valid range).
    Other,
}

/// Classifies a frame by its first byte (RFC 7983 demultiplexing, narrowed to TURN).
pub fn frame_kind(first_byte: u8) -> FrameKind {
    match first_byte {
        0x00..=0x3f => FrameKind::Stun,
        0x40..=0x4f => FrameKind::ChannelData,
        _ => FrameKind::Other,
    }
}

/// On a stream transport (TCP/TLS), how many bytes the next frame occupies, given at least
/// its first 4 bytes. STUN: 20 + length. ChannelData: 4 + length rounded up to a multiple
/// of 4 (RFC 8656 §12.5). Returns `None` if fewer than 4 bytes are given or the first byte
/// is neither STUN nor ChannelData (the stream must then be closed).
pub fn stream_frame_len(head: &[u8]) -> Option<usize> {
    if head.len() < 4 {
        return None;
    }
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    match frame_kind(head[0]) {
        FrameKind::Stun => Some(HEADER_LEN + len),
        FrameKind::ChannelData => Some(4 + ((len + 3) & !3)),
        FrameKind::Other => None,
    }
}

//! STUN/TURN wire format (RFC 8489, RFC 8656, RFC 6156), zero-copy.
//!
//! Reading borrows the datagram ([`Message`]); writing fills a caller-owned buffer
//! ([`MessageWriter`]). Nothing here allocates, so the codec can sit on the relay hot path
//! and be fuzzed without bounds worries.

pub mod attr;
pub mod channel_data;
pub mod integrity;
mod message;
#[cfg(test)]
mod test_vectors;
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

impl Class {
    /// The two class bits (C1 C0) as a number 0..=3.
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Class {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// Builds the 14-bit message type: the 12 method bits are split around the class bits
/// C0 (bit 4) and C1 (bit 8), RFC 8489 §5. Method bits above 12 are dropped.
pub fn message_type(method: u16, class: Class) -> u16 {
    let m = method & 0x0fff;
    let c = class.bits();
    (m & 0x000f) | ((m & 0x0070) << 1) | ((m & 0x0f80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

/// Splits a message type into (method, class); the two top bits are ignored.
pub fn split_message_type(typ: u16) -> (u16, Class) {
    let method = (typ & 0x000f) | ((typ & 0x00e0) >> 1) | ((typ & 0x3e00) >> 2);
    let class = Class::from_bits(((typ >> 4) & 0b01) | ((typ >> 7) & 0b10));
    (method, class)
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
    /// First byte 0x40..=0x7F (channel 0x4000..=0x7FFF, see `channel_data::MAX_CHANNEL`).
    ChannelData,
    /// Anything else (including ChannelData numbers outside the valid range).
    Other,
}

/// Classifies a frame by its first byte (RFC 7983 demultiplexing, narrowed to TURN).
pub fn frame_kind(first_byte: u8) -> FrameKind {
    match first_byte {
        0x00..=0x3f => FrameKind::Stun,
        0x40..=0x7f => FrameKind::ChannelData,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_match_the_rfc_values() {
        for (m, c, t) in [
            (method::BINDING, Class::Request, 0x0001),
            (method::BINDING, Class::Success, 0x0101),
            (method::BINDING, Class::Error, 0x0111),
            (method::ALLOCATE, Class::Request, 0x0003),
            (method::ALLOCATE, Class::Error, 0x0113),
            (method::SEND, Class::Indication, 0x0016),
            (method::DATA, Class::Indication, 0x0017),
            (method::CHANNEL_BIND, Class::Success, 0x0109),
            (0x0fff, Class::Error, 0x3fff),
        ] {
            assert_eq!(message_type(m, c), t, "{m:#x} {c:?}");
            assert_eq!(split_message_type(t), (m, c), "{t:#06x}");
        }
    }

    #[test]
    fn every_method_and_class_round_trips() {
        for m in 0..=0x0fff {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                assert_eq!(split_message_type(message_type(m, c)), (m, c));
            }
        }
    }

    #[test]
    fn frames_are_classified_and_sized() {
        assert_eq!(frame_kind(0x00), FrameKind::Stun);
        assert_eq!(frame_kind(0x40), FrameKind::ChannelData);
        assert_eq!(frame_kind(0x7f), FrameKind::ChannelData);
        assert_eq!(frame_kind(0x80), FrameKind::Other);
        assert_eq!(stream_frame_len(&[0x00, 0x01, 0x00, 0x08]), Some(28));
        assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00, 0x05]), Some(12));
        assert_eq!(
            stream_frame_len(&[0x40, 0x00, 0xff, 0xff]),
            Some(4 + 0x1_0000)
        );
        assert_eq!(stream_frame_len(&[0x80, 0, 0, 0]), None);
        assert_eq!(stream_frame_len(&[0x00, 0x01, 0x00]), None);
    }
}

//! The link format, with no sockets: tests and the fuzzer drive it directly.
//!
//! Datagram = QUIC varint flow id, then one RTP packet (RFC 3550 header, an optional RFC 8285
//! one-byte extension block carrying the RFC 6464 audio level and the video orientation, then
//! the payload). The flow id is `track << 2 | layer`, `track` being the id the owning node
//! gave the track.
//!
//! Control = frames of a 4-byte big-endian length then a JSON `ControlMsg`, at most
//! `MAX_CONTROL_FRAME` bytes.

use serde::{Deserialize, Serialize};

/// Largest control frame accepted; a larger length prefix ends the link.
pub const MAX_CONTROL_FRAME: usize = 256 * 1024;

/// RFC 8285 one-byte extension id used for the RFC 6464 audio level on the link.
pub const AUDIO_LEVEL_EXT_ID: u8 = 1;
/// RFC 8285 one-byte extension id used for the video orientation (3GPP TS 26.114 §7.4.5,
/// "urn:3gpp:video-orientation"). A node that predates it skips the element.
pub const VIDEO_ORIENTATION_EXT_ID: u8 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("datagram too short")]
    Short,
    #[error("flow id is not a valid QUIC varint")]
    BadVarint,
    #[error("not RTP version 2")]
    NotRtp,
    #[error("RTP header extension or padding runs past the end")]
    BadRtp,
    #[error("control frame of {0} bytes is over the limit")]
    FrameTooLarge(usize),
    #[error("control frame is not a valid message: {0}")]
    BadControl(String),
}

/// One forwarded RTP packet as the link carries it. Borrowed from the datagram on decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPacket<'a> {
    pub track: u64,
    pub layer: u8,
    pub ssrc: u32,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    /// RFC 6464: level in -dBov (0..=127), as a negative value like str0m's.
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
    /// The video orientation byte (C, F and the two rotation bits) as the sending node had it.
    pub video_orientation: Option<u8>,
    pub payload: &'a [u8],
}

/// Kind of a track, as the link names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Audio,
    Video,
}

/// What two nodes tell each other on the control stream. Ids are the sending node's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMsg {
    /// First frame of each side, after authentication: who it is.
    Hello {
        node: String,
    },
    /// The sender holds members of `room` and wants it carried on this link.
    Room {
        room: String,
    },
    /// The sender no longer holds `room`.
    RoomGone {
        room: String,
    },
    ParticipantUp {
        room: String,
        id: u64,
        name: String,
        visible: bool,
    },
    TrackUp {
        room: String,
        id: u64,
        owner: u64,
        mid: String,
        kind: Kind,
        /// "microphone", "camera" or "screen".
        source: String,
        /// "vp8", "h264" or "other".
        codec: String,
        rids: Vec<String>,
    },
    ParticipantDown {
        id: u64,
    },
    /// Everything the sender holds of `room` has been sent.
    Synced {
        room: String,
    },
    /// A subscriber on the sender's side needs a keyframe of this layer of the receiver's track.
    Keyframe {
        track: u64,
        layer: u8,
    },
    /// Layers of the receiver's track watched on the sender's side (bit per layer).
    Demand {
        track: u64,
        layers: u8,
    },
    /// The sender is draining: its participants will re-home.
    Draining,
    /// What a layer of one of the sender's tracks carries, sent for layers the receiver does
    /// not demand (they stay off the link), so it can still choose them.
    LayerInfo {
        track: u64,
        layer: u8,
        ssrc: u32,
        bps: u64,
    },
    /// Hop-by-hop loss repair: the sender missed these RTP sequence numbers (low 16 bits) of
    /// a layer of the receiver's track on the link, and asks for them again.
    Nack {
        track: u64,
        layer: u8,
        seqs: Vec<u16>,
    },
}

/// Most sequence numbers one `Nack` asks for: a longer hole is better healed by a keyframe.
pub const MAX_NACK_SEQS: usize = 64;

mod control;
mod datagram;

pub use control::{encode_control, ControlDecoder};
pub use datagram::{datagram_len, decode_datagram, encode_datagram, write_datagram};

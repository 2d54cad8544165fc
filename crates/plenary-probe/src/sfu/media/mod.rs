//! Synthetic media, with no encoder: VP8 and Opus packets whose headers, sizes and timing
//! look like a browser's to a server, each carrying a [`stamp`] the receivers measure with.
//! Pure: generators take the time and return packets.

pub mod opus;
pub mod rng;
pub mod stamp;
pub mod video;
pub mod vp8;

/// Skipped frames remembered between two sends of a generator (a 10 s stall at 50 fps).
const MAX_SKIPPED: usize = 500;

/// One RTP packet to write: the payload and the header fields the stack does not choose.
#[derive(Clone, Debug)]
pub struct OutPacket {
    pub payload: Vec<u8>,
    pub marker: bool,
    pub rtp_ts: u32,
    /// Extended sequence number (the stack takes the low 16 bits and the rollover count).
    pub seq: u64,
    /// RFC 6464 level (−dBov, 0 loudest, −127 silence) and voice activity.
    pub audio_level: Option<(i8, bool)>,
}

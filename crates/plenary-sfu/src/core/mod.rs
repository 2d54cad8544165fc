//! Sans-IO forwarding core of the SFU.
//!
//! Everything here decides *what* to forward; the media driver (str0m, sockets, threads) only
//! carries the decisions out. Keeping the decisions free of IO makes them testable packet by
//! packet and fuzzable: no clock is read (every time-dependent call takes `now`), no thread is
//! spawned, and the packet paths (`Switcher::on_packet`, `SpeakerDetector::on_level`) do not
//! allocate.
//!
//! - [`codec`]: is this RTP payload the start of a keyframe (VP8, H.264)? A video source can
//!   only be switched to at that point.
//! - [`switcher`]: one outgoing stream fed by a changing source; rewrites sequence numbers and
//!   timestamps so the receiver sees one continuous stream.
//! - [`layers`]: per-layer bitrate meters and the simulcast layer choice from a subscriber's
//!   bandwidth estimate, with hysteresis so the picture does not flap.
//! - [`alloc`]: splits a subscriber's estimate across its video slots (fixed low layers
//!   first, upgrades by priority) and the bitrate to ask bandwidth estimation for.
//! - [`speaker`]: active speaker and loudest-K from RFC 6464 audio levels, last-N ranking.
//! - [`demand`]: dynacast bookkeeping; tells when a layer gains its first or loses its last
//!   viewer, so publishers stop encoding what nobody watches.
//! - [`limiter`]: keyframe request rate limit that never loses the last request.

pub mod alloc;
pub mod codec;
pub mod demand;
pub mod layers;
pub mod limiter;
pub mod speaker;
pub mod switcher;

#[cfg(test)]
mod tests;

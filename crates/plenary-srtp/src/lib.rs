//! Fast-path building blocks for the SFU's egress and the probe's receive path (issue 12):
//!
//! - [`capture`]: SRTP keys from str0m's DTLS through a wrapping crypto provider, no fork;
//! - [`OutboundSrtp`] / [`InboundSrtp`]: SRTP and SRTCP contexts (RFC 3711, RFC 7714) that
//!   work in place on the caller's buffer, on aws-lc-rs;
//! - [`rtp`]: the RTP header writing and parsing those need;
//! - [`batch`] (Linux): `sendmmsg` with UDP GSO; [`recv_batch`] (Linux): `recvmmsg`.
//!
//! Everything except the batcher's flush is sans-IO. See README.md for the design and for
//! what the SFU integration still has to take over from str0m.

pub mod capture;
mod context;
mod kdf;
mod keys;
mod replay;
pub mod rtp;
mod transform;

#[cfg(target_os = "linux")]
pub mod batch;
#[cfg(target_os = "linux")]
pub mod recv_batch;

#[cfg(test)]
mod str0m_cross;
#[cfg(test)]
mod test_util;

pub use capture::{build_rtc, capturing_provider, KeySlot};
pub use context::{InboundSrtp, InboundStats, OutboundSrtp, Unprotected, MAX_INBOUND_STREAMS};
pub use keys::{DtlsRole, MasterKey, SrtpKeys, SrtpProfile};

/// Why a packet or key was refused. Per-packet errors on received data are counted in
/// [`InboundStats`]; the caller exports them and logs at debug, rate limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("key or salt length does not match the SRTP profile")]
    KeyLength,
    #[error("buffer has no room for the SRTP overhead")]
    BufferTooSmall,
    #[error("not a well-formed RTP/RTCP packet")]
    Malformed,
    #[error("SRTP authentication failed")]
    AuthFailed,
    #[error("packet index already received (replay)")]
    Replayed,
    #[error("packet index is behind the replay window")]
    TooOld,
    #[error("too many inbound SSRCs in one SRTP context")]
    TooManyStreams,
    #[error("SRTCP index exhausted: the key must change")]
    IndexExhausted,
    #[error("cipher failure")]
    Crypto,
}

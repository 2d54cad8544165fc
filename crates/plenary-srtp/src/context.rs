//! SRTP and SRTCP contexts of one DTLS-SRTP association: what this end sends
//! ([`OutboundSrtp`], the local key) and what it receives ([`InboundSrtp`], the remote key).
//!
//! Both work in place on a caller's buffer and allocate only when a new SSRC first shows up.

use rustc_hash::FxHashMap;

use crate::keys::{MasterKey, SrtpProfile};
use crate::replay::{estimate_index, ReplayWindow};
use crate::rtp::parse_rtp;
use crate::transform::Transform;
use crate::Error;

/// Inbound streams (SSRCs) one context tracks. State is only created for packets that
/// authenticated, so only the peer itself can fill this; the bound caps a misbehaving one.
pub const MAX_INBOUND_STREAMS: usize = 1024;

/// The SRTCP index is 31 bits; the key must change before it wraps (RFC 3711 §9.2).
const SRTCP_INDEX_LIMIT: u32 = 1 << 31;

/// Protects what this end sends.
#[derive(Debug)]
pub struct OutboundSrtp {
    profile: SrtpProfile,
    rtp: Transform,
    rtcp: Transform,
    /// Highest 48-bit index sent per SSRC: its ROC is what goes into the IV.
    sent: FxHashMap<u32, u64>,
    next_srtcp_index: u32,
}

impl OutboundSrtp {
    pub fn new(local: &MasterKey) -> Result<Self, Error> {
        Ok(Self {
            profile: local.profile(),
            rtp: Transform::new(local, false)?,
            rtcp: Transform::new(local, true)?,
            sent: FxHashMap::default(),
            next_srtcp_index: 0,
        })
    }

    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Sets the rollover counter of a stream before its next packet, for a stream that does
    /// not start at ROC 0 (str0m starts every stream at 0; so does the SFU's switcher).
    pub fn set_roc(&mut self, ssrc: u32, roc: u32, last_seq: u16) {
        self.sent
            .insert(ssrc, (u64::from(roc) << 16) | u64::from(last_seq));
    }

    /// Protects the RTP packet `buf[..len]` in place and returns the SRTP length, which is
    /// `len + profile.rtp_overhead()`. `buf` must have that much room.
    ///
    /// The ROC follows the sequence numbers: a packet within half a cycle of the highest
    /// sent one (a resend, or reordering by the caller) keeps that one's ROC.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let view = parse_rtp(buf.get(..len).ok_or(Error::BufferTooSmall)?)?;
        let index = match self.sent.get_mut(&view.ssrc) {
            Some(highest) => {
                let index = estimate_index(*highest, view.seq).ok_or(Error::TooOld)?;
                if index > *highest {
                    *highest = index;
                }
                index
            }
            None => {
                self.sent.insert(view.ssrc, u64::from(view.seq));
                u64::from(view.seq)
            }
        };
        self.rtp
            .seal_rtp(buf, view.header_len, len, view.ssrc, index)
    }

    /// Protects the RTCP (compound) packet `buf[..len]` in place and returns the SRTCP
    /// length, `len + profile.rtcp_overhead()`.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        if len < 8 || buf.len() < len || !crate::rtp::is_rtcp(&buf[..len]) {
            return Err(Error::Malformed);
        }
        let index = self.next_srtcp_index;
        if index >= SRTCP_INDEX_LIMIT {
            return Err(Error::IndexExhausted);
        }
        let n = self.rtcp.seal_rtcp(buf, len, index)?;
        self.next_srtcp_index += 1;
        Ok(n)
    }

    /// Starts the SRTCP index elsewhere than 0 (tests, or a context taking over a stream).
    pub fn set_srtcp_index(&mut self, index: u32) {
        self.next_srtcp_index = index & (SRTCP_INDEX_LIMIT - 1);
    }
}

/// What [`InboundSrtp`] dropped, by reason. The owner exports these as metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InboundStats {
    pub accepted: u64,
    pub auth_failed: u64,
    pub replayed: u64,
    pub too_old: u64,
    pub malformed: u64,
    pub too_many_streams: u64,
}

impl InboundStats {
    fn count(&mut self, r: &Result<usize, Error>) {
        match r {
            Ok(_) => self.accepted += 1,
            Err(Error::AuthFailed) => self.auth_failed += 1,
            Err(Error::Replayed) => self.replayed += 1,
            Err(Error::TooOld) => self.too_old += 1,
            Err(Error::TooManyStreams) => self.too_many_streams += 1,
            Err(_) => self.malformed += 1,
        }
    }
}

/// A packet [`InboundSrtp::unprotect_rtp`] accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unprotected {
    /// Length of the plain RTP packet now at the start of the buffer.
    pub len: usize,
    /// The 48-bit packet index: the extended sequence number.
    pub index: u64,
}

/// Authenticates, replay-checks and decrypts what this end receives.
#[derive(Debug)]
pub struct InboundSrtp {
    profile: SrtpProfile,
    rtp: Transform,
    rtcp: Transform,
    rtp_streams: FxHashMap<u32, ReplayWindow>,
    rtcp_streams: FxHashMap<u32, ReplayWindow>,
    stats: InboundStats,
}

impl InboundSrtp {
    pub fn new(remote: &MasterKey) -> Result<Self, Error> {
        Ok(Self {
            profile: remote.profile(),
            rtp: Transform::new(remote, false)?,
            rtcp: Transform::new(remote, true)?,
            rtp_streams: FxHashMap::default(),
            rtcp_streams: FxHashMap::default(),
            stats: InboundStats::default(),
        })
    }

    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    pub fn stats(&self) -> InboundStats {
        self.stats
    }

    /// Unprotects the SRTP packet `buf[..len]` in place. A stream's first packet sets its
    /// ROC to 0 (RFC 3711 §3.3.1). After an error the buffer's contents are unspecified.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<Unprotected, Error> {
        let mut index = 0;
        let r = self.unprotect_rtp_inner(buf, len, &mut index);
        self.stats.count(&r);
        r.map(|len| Unprotected { len, index })
    }

    fn unprotect_rtp_inner(
        &mut self,
        buf: &mut [u8],
        len: usize,
        index_out: &mut u64,
    ) -> Result<usize, Error> {
        let view = parse_rtp(buf.get(..len).ok_or(Error::Malformed)?)?;
        let known = self.rtp_streams.get(&view.ssrc).copied();
        let index = match &known {
            Some(w) => {
                let index = estimate_index(w.highest(), view.seq).ok_or(Error::TooOld)?;
                w.check(index)?;
                index
            }
            None if self.rtp_streams.len() >= MAX_INBOUND_STREAMS => {
                return Err(Error::TooManyStreams)
            }
            None => u64::from(view.seq),
        };
        let n = self
            .rtp
            .open_rtp(buf, view.header_len, len, view.ssrc, index)?;
        self.rtp_streams
            .entry(view.ssrc)
            .or_insert_with(|| ReplayWindow::new(index))
            .accept(index);
        *index_out = index;
        Ok(n)
    }

    /// Unprotects the SRTCP packet `buf[..len]` in place and returns the plain length.
    /// After an error the buffer's contents are unspecified.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let r = self.unprotect_rtcp_inner(buf, len);
        self.stats.count(&r);
        r
    }

    fn unprotect_rtcp_inner(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        if buf.len() < len || !crate::rtp::is_rtcp(&buf[..len]) {
            return Err(Error::Malformed);
        }
        let (ssrc, index, _) = self.rtcp.rtcp_index(buf, len)?;
        let index = u64::from(index);
        match self.rtcp_streams.get(&ssrc) {
            Some(w) => w.check(index)?,
            None if self.rtcp_streams.len() >= MAX_INBOUND_STREAMS => {
                return Err(Error::TooManyStreams)
            }
            None => {}
        }
        let n = self.rtcp.open_rtcp(buf, len)?;
        self.rtcp_streams
            .entry(ssrc)
            .or_insert_with(|| ReplayWindow::new(index))
            .accept(index);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::{write_rtp_header, RtpFields};

    fn pair(profile: SrtpProfile) -> (OutboundSrtp, InboundSrtp) {
        let key = MasterKey::new(
            profile,
            &vec![0x42; profile.key_len()],
            &vec![0x17; profile.salt_len()],
        )
        .unwrap();
        (
            OutboundSrtp::new(&key).unwrap(),
            InboundSrtp::new(&key).unwrap(),
        )
    }

    fn packet(buf: &mut [u8], seq: u16, payload: &[u8]) -> usize {
        let fields = RtpFields {
            payload_type: 111,
            seq,
            timestamp: u32::from(seq) * 960,
            ssrc: 0x1234,
            ..Default::default()
        };
        let h = write_rtp_header(buf, &fields, &[(1, &[0x90])]).unwrap();
        buf[h..h + payload.len()].copy_from_slice(payload);
        h + payload.len()
    }

    #[test]
    fn every_profile_roundtrips_across_a_sequence_wrap() {
        for profile in [
            SrtpProfile::Aes128CmHmacSha1_80,
            SrtpProfile::AeadAes128Gcm,
            SrtpProfile::AeadAes256Gcm,
        ] {
            let (mut tx, mut rx) = pair(profile);
            let mut buf = [0u8; 256];
            for (i, seq) in (0xfff0u16..=0xffff).chain(0..0x10).enumerate() {
                let payload = [i as u8; 40];
                let len = packet(&mut buf, seq, &payload);
                let n = tx.protect_rtp(&mut buf, len).unwrap();
                assert_eq!(n, len + profile.rtp_overhead());
                let got = rx.unprotect_rtp(&mut buf, n).unwrap();
                assert_eq!(got.len, len, "{profile}");
                assert_eq!(&buf[len - 40..len], &payload);
                let expected = if seq >= 0xfff0 { 0 } else { 1 << 16 };
                assert_eq!(got.index, expected | u64::from(seq), "{profile}");
            }
            assert_eq!(rx.stats().accepted, 32);
        }
    }

    #[test]
    fn replays_and_forgeries_are_dropped_and_counted() {
        let (mut tx, mut rx) = pair(SrtpProfile::AeadAes128Gcm);
        let mut buf = [0u8; 256];
        let len = packet(&mut buf, 7, b"hello");
        let n = tx.protect_rtp(&mut buf, len).unwrap();
        let wire = buf;
        rx.unprotect_rtp(&mut buf, n).unwrap();
        let mut again = wire;
        assert!(matches!(
            rx.unprotect_rtp(&mut again, n),
            Err(Error::Replayed)
        ));
        // A forged packet under a new SSRC creates no state.
        let mut forged = wire;
        forged[11] ^= 0xff;
        forged[3] = 8;
        assert!(matches!(
            rx.unprotect_rtp(&mut forged, n),
            Err(Error::AuthFailed)
        ));
        assert_eq!(rx.rtp_streams.len(), 1);
        let s = rx.stats();
        assert_eq!((s.accepted, s.replayed, s.auth_failed), (1, 1, 1));
    }

    #[test]
    fn srtcp_indexes_count_up_and_replays_are_refused() {
        for profile in [SrtpProfile::Aes128CmHmacSha1_80, SrtpProfile::AeadAes256Gcm] {
            let (mut tx, mut rx) = pair(profile);
            // A PLI: PSFB (206), FMT 1, sender SSRC 1, media SSRC 2.
            let pli = [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
            let mut first = [0u8; 64];
            for round in 0..3u32 {
                let mut buf = [0u8; 64];
                buf[..12].copy_from_slice(&pli);
                let n = tx.protect_rtcp(&mut buf, 12).unwrap();
                assert_eq!(n, 12 + profile.rtcp_overhead());
                if round == 0 {
                    first = buf;
                }
                let m = rx.unprotect_rtcp(&mut buf, n).unwrap();
                assert_eq!(&buf[..m], &pli);
            }
            let n = 12 + profile.rtcp_overhead();
            assert!(matches!(
                rx.unprotect_rtcp(&mut first, n),
                Err(Error::Replayed)
            ));
        }
    }

    #[test]
    fn short_buffers_are_refused_not_overrun() {
        let (mut tx, _) = pair(SrtpProfile::AeadAes128Gcm);
        let mut buf = [0u8; 64];
        let len = packet(&mut buf, 1, &[1; 20]);
        assert!(matches!(
            tx.protect_rtp(&mut buf[..len + 3], len),
            Err(Error::BufferTooSmall)
        ));
    }
}

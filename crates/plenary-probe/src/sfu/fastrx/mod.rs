//! The subscriber's receive fast path (issue 12): once a peer is connected, the SRTP the
//! server sends is opened with the probe's own `InboundSrtp` (keys from the wrapped DTLS
//! provider) and goes straight to the track's measurements, without str0m. Pure: the peer
//! hands in datagrams and time and sends what [`FastRx::poll_feedback`] writes.
//!
//! What str0m did for received RTP, and the server relies on, is done here instead:
//! - transport-wide congestion control feedback every 100 ms, as libwebrtc sends it
//!   (str0m sent it every 50 ms), from the transport-wide sequence numbers received;
//! - generic NACKs for sequence gaps on streams with an RTX SSRC, str0m's policy
//!   ([`nack`]); retransmissions (RFC 4588) count for the packet they repair;
//! - PLIs when a track's decoder is stuck;
//! - the RTT that times NACK retries: str0m measured it with XR RRTR/DLRR, and so does
//!   this path, with its own RRTR once a second and the server's DLRR answer.
//!
//! They go out as SRTCP under an `OutboundSrtp` of the probe's own, from a sender SSRC
//! str0m does not use, with its SRTCP index started at 2^30: no (key, SSRC, index) is ever
//! used twice with str0m's own SRTCP. Receiver reports stay with str0m, which now sees no
//! RTP: its reports carry no report blocks (see the crate README).

pub mod feedback;
pub mod nack;
pub mod routes;
pub mod twcc;

#[cfg(test)]
mod tests;

use plenary_srtp::rtp::{parse_header, RtpHeader};
use plenary_srtp::{InboundSrtp, InboundStats, OutboundSrtp, SrtpKeys};
use routes::{Routes, StreamInfo};
use twcc::TwccRegister;

/// How often transport-wide feedback goes out, µs (libwebrtc's default interval).
pub const TWCC_INTERVAL_US: u64 = 100_000;
/// How often missing packets are looked at for NACKs, µs (str0m's interval).
pub const NACK_INTERVAL_US: u64 = 33_000;
/// Largest feedback datagram, before SRTCP.
const MAX_FEEDBACK: usize = 1200;
/// The probe's SRTCP index starts here, far from str0m's (which starts at 0).
const SRTCP_INDEX_START: u32 = 1 << 30;
/// Least time between two debug logs of refused or unrouted packets, µs.
const LOG_INTERVAL_US: u64 = 1_000_000;
/// PLIs queued at once (one per stuck track is enough).
const MAX_PLIS: usize = 16;
/// How often a receiver reference time report goes out, µs (str0m's RTCP interval for
/// video, at which its own RRTR went out).
pub const RRTR_INTERVAL_US: u64 = 1_000_000;

/// What the fast path counted; the driver sums these over peers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FastCounters {
    /// SRTP packets opened and delivered to a track.
    pub delivered: u64,
    /// Of those, retransmissions (RTX) mapped back to their original packet.
    pub rtx: u64,
    /// Padding-only RTX packets (bandwidth probes): TWCC-recorded, not delivered.
    pub padding: u64,
    /// Authentic packets on an SSRC no m-line claims.
    pub unrouted: u64,
    pub twcc_reports: u64,
    pub nack_packets: u64,
    /// Sequence numbers asked for in those NACKs.
    pub nacked: u64,
    pub plis: u64,
    /// Round-trip times measured from the server's DLRR answers.
    pub rtt_samples: u64,
    /// Feedback datagrams written (each one SRTCP packet).
    pub feedback_datagrams: u64,
    /// SRTP refused: authentication failures, replays, malformed.
    pub srtp_rejected: u64,
}

impl FastCounters {
    /// What was counted since `earlier` (a window between two snapshots).
    pub fn since(&self, earlier: &FastCounters) -> FastCounters {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let e = earlier;
        FastCounters {
            delivered: d(self.delivered, e.delivered),
            rtx: d(self.rtx, e.rtx),
            padding: d(self.padding, e.padding),
            unrouted: d(self.unrouted, e.unrouted),
            twcc_reports: d(self.twcc_reports, e.twcc_reports),
            nack_packets: d(self.nack_packets, e.nack_packets),
            nacked: d(self.nacked, e.nacked),
            plis: d(self.plis, e.plis),
            rtt_samples: d(self.rtt_samples, e.rtt_samples),
            feedback_datagrams: d(self.feedback_datagrams, e.feedback_datagrams),
            srtp_rejected: d(self.srtp_rejected, e.srtp_rejected),
        }
    }

    /// Adds another peer's counts.
    pub fn add(&mut self, o: &FastCounters) {
        self.delivered += o.delivered;
        self.rtx += o.rtx;
        self.padding += o.padding;
        self.unrouted += o.unrouted;
        self.twcc_reports += o.twcc_reports;
        self.nack_packets += o.nack_packets;
        self.nacked += o.nacked;
        self.plis += o.plis;
        self.rtt_samples += o.rtt_samples;
        self.feedback_datagrams += o.feedback_datagrams;
        self.srtp_rejected += o.srtp_rejected;
    }
}

/// One opened SRTP packet: the plain RTP is at the start of the caller's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Opened {
    pub header: RtpHeader,
    /// Plain packet length.
    pub len: usize,
    /// SRTP index: the per-SSRC extended sequence number.
    pub index: u64,
}

/// Where an opened packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routed {
    /// Measure it on route `route`'s track, as extended sequence number `seq`, with the
    /// media payload at `payload` in the buffer.
    Media {
        route: usize,
        seq: u64,
        payload: (usize, usize),
        rtx: bool,
    },
    /// An RTX packet with nothing but padding.
    Padding,
    /// No route for this SSRC: the caller may learn routes and ask again.
    Unknown,
}

pub struct FastRx {
    srtp_in: InboundSrtp,
    srtp_out: OutboundSrtp,
    /// Sender SSRC of the probe's feedback: one str0m does not use.
    sender_ssrc: u32,
    twcc_ext: Option<u8>,
    pub routes: Routes,
    twcc: TwccRegister,
    next_twcc_us: u64,
    /// A report did not fit in one datagram: send the rest at once.
    twcc_flushing: bool,
    next_nack_us: u64,
    /// Time between two NACKs for one packet: the RTT plus str0m's margin, µs.
    nack_retry_us: u64,
    nack_scratch: [u64; 128],
    plis: [u32; MAX_PLIS],
    pli_count: usize,
    next_rrtr_us: u64,
    next_log_us: u64,
    pub counters: FastCounters,
}

impl FastRx {
    /// A fast path keyed with `keys` (captured from this peer's DTLS). `twcc_ext` is the
    /// negotiated id of the transport-wide sequence number extension, if any.
    pub fn new(keys: &SrtpKeys, sender_ssrc: u32, twcc_ext: Option<u8>) -> Option<FastRx> {
        let srtp_in = InboundSrtp::new(&keys.remote).ok()?;
        let mut srtp_out = OutboundSrtp::new(&keys.local).ok()?;
        srtp_out.set_srtcp_index(SRTCP_INDEX_START);
        Some(FastRx {
            srtp_in,
            srtp_out,
            sender_ssrc,
            twcc_ext,
            routes: Routes::default(),
            twcc: TwccRegister::default(),
            next_twcc_us: 0,
            twcc_flushing: false,
            next_nack_us: 0,
            nack_retry_us: nack::DEFAULT_RTT_US + nack::RETRY_MARGIN_US,
            nack_scratch: [0; 128],
            plis: [0; MAX_PLIS],
            pli_count: 0,
            next_rrtr_us: 0,
            next_log_us: 0,
            counters: FastCounters::default(),
        })
    }

    pub fn sender_ssrc(&self) -> u32 {
        self.sender_ssrc
    }

    pub fn set_twcc_ext(&mut self, id: Option<u8>) {
        self.twcc_ext = id;
    }

    /// An SRTCP datagram from the server (a copy: str0m gets the original). A DLRR
    /// answer to our reference time gives the RTT, and NACKs are repeated one RTT (plus a
    /// margin) apart, as str0m did with the RTT it measured the same way.
    pub fn on_rtcp(&mut self, buf: &mut [u8], ntp_now: u64) {
        let len = buf.len();
        let Ok(n) = self.srtp_in.unprotect_rtcp(buf, len) else {
            return;
        };
        let rtt = feedback::find_dlrr(&buf[..n], self.sender_ssrc)
            .and_then(|(lrr, dlrr)| feedback::rtt_us(ntp_now, lrr, dlrr));
        if let Some(rtt) = rtt {
            self.nack_retry_us = rtt + nack::RETRY_MARGIN_US;
            self.counters.rtt_samples += 1;
        }
    }

    /// Only a receiver that NACKs needs the RTT (a publisher's connection sends no RRTR).
    fn wants_rtt(&self) -> bool {
        self.routes.any_nack
    }

    /// Time between two NACKs for one packet, µs.
    pub fn nack_retry_us(&self) -> u64 {
        self.nack_retry_us
    }

    pub fn learn(&mut self, s: StreamInfo) {
        self.routes.learn(s);
    }

    pub fn srtp_stats(&self) -> InboundStats {
        self.srtp_in.stats()
    }

    /// Authenticates and decrypts the SRTP datagram `buf` in place, parses its header and
    /// records its transport-wide sequence number. None if it was refused.
    pub fn open(&mut self, buf: &mut [u8], arrival_us: u64) -> Option<Opened> {
        let len = buf.len();
        let u = match self.srtp_in.unprotect_rtp(buf, len) {
            Ok(u) => u,
            Err(e) => {
                self.counters.srtp_rejected += 1;
                if self.may_log(arrival_us) {
                    tracing::debug!(target: "plenary_probe::fastrx", error = %e,
                        refused = self.counters.srtp_rejected, "SRTP refused");
                }
                return None;
            }
        };
        let plain = &buf[..u.len];
        let header = parse_header(plain).ok()?;
        if let Some(seq) = self
            .twcc_ext
            .and_then(|id| header.extension(plain, id))
            .and_then(|v| Some(u16::from_be_bytes([*v.first()?, *v.get(1)?])))
        {
            self.twcc.record(seq, arrival_us);
        }
        Some(Opened {
            header,
            len: u.len,
            index: u.index,
        })
    }

    /// Which track an opened packet feeds; updates sequence and NACK state.
    pub fn route(&mut self, buf: &[u8], o: &Opened) -> Routed {
        let plain = &buf[..o.len];
        let Some(i) = self.routes.find(o.header.fields.ssrc) else {
            return Routed::Unknown;
        };
        let Ok(payload) = o.header.payload(plain) else {
            return Routed::Padding;
        };
        let rtx = self.routes.list[i].repairs.is_some();
        let Some((route, seq, skip)) = self.routes.resolve(i, o.index, payload) else {
            self.counters.padding += 1;
            return Routed::Padding;
        };
        self.counters.delivered += 1;
        self.counters.rtx += u64::from(rtx);
        let start = o.header.header_len + skip;
        Routed::Media {
            route,
            seq,
            payload: (start, o.header.header_len + payload.len()),
            rtx,
        }
    }

    /// Counts an authentic packet on `ssrc` that no route claimed, even after learning.
    pub fn unrouted(&mut self, ssrc: u32, now_us: u64) {
        self.counters.unrouted += 1;
        if self.may_log(now_us) {
            tracing::debug!(target: "plenary_probe::fastrx", ssrc,
                unrouted = self.counters.unrouted, "SRTP on an SSRC no m-line declares");
        }
    }

    /// Rate limit of the debug logs about refused input: once a second.
    fn may_log(&mut self, now_us: u64) -> bool {
        if now_us < self.next_log_us {
            return false;
        }
        self.next_log_us = now_us + LOG_INTERVAL_US;
        true
    }

    /// Asks for a keyframe on the stream of route `route` (sent with the next feedback).
    pub fn request_pli(&mut self, route: usize) {
        let Some(r) = self.routes.list.get(route) else {
            return;
        };
        let ssrc = r.ssrc;
        if self.plis[..self.pli_count].contains(&ssrc) || self.pli_count == MAX_PLIS {
            return;
        }
        self.plis[self.pli_count] = ssrc;
        self.pli_count += 1;
    }

    /// When feedback is next due, µs.
    pub fn next_due_us(&self) -> Option<u64> {
        let twcc = if self.twcc_flushing {
            Some(0)
        } else {
            self.twcc.has_unreported().then_some(self.next_twcc_us)
        };
        let nack = self.routes.nack_armed.then_some(self.next_nack_us);
        let pli = (self.pli_count > 0).then_some(0);
        let rrtr = self.wants_rtt().then_some(self.next_rrtr_us);
        [twcc, nack, pli, rrtr].into_iter().flatten().min()
    }

    /// Writes the feedback due at `now_us` (`ntp_now`: the wall clock as NTP, for the
    /// reference time report) as one SRTCP datagram into `out` and returns its length;
    /// None when nothing is due. Call until None.
    pub fn poll_feedback(&mut self, now_us: u64, ntp_now: u64, out: &mut [u8]) -> Option<usize> {
        let overhead = self.srtp_out.profile().rtcp_overhead();
        let limit = out
            .len()
            .min(MAX_FEEDBACK + overhead)
            .checked_sub(overhead)?;
        let sender = self.sender_ssrc;
        let media = self.routes.list.first().map_or(0, |r| r.ssrc);
        let mut at = 0;
        if self.twcc_flushing || (now_us >= self.next_twcc_us && self.twcc.has_unreported()) {
            if !self.twcc_flushing {
                self.next_twcc_us = now_us + TWCC_INTERVAL_US;
            }
            while let Some(n) = self.twcc.write_report(&mut out[at..limit], sender, media) {
                at += n;
                self.counters.twcc_reports += 1;
            }
            self.twcc_flushing = self.twcc.has_unreported();
        }
        if self.routes.nack_armed && now_us >= self.next_nack_us {
            let mut any = false;
            for r in &mut self.routes.list {
                let Some(tracker) = r.nack.as_mut().filter(|n| n.has_pending()) else {
                    continue;
                };
                any = true;
                let k = tracker.due(now_us, self.nack_retry_us, &mut self.nack_scratch);
                let (n, covered) = feedback::write_nack(
                    &mut out[at..limit],
                    sender,
                    r.ssrc,
                    &self.nack_scratch[..k],
                );
                if covered > 0 {
                    at += n;
                    self.counters.nack_packets += 1;
                    self.counters.nacked += covered as u64;
                }
            }
            if any {
                self.next_nack_us = now_us + NACK_INTERVAL_US;
            }
            self.routes.nack_armed = self
                .routes
                .list
                .iter()
                .any(|r| r.nack.as_ref().is_some_and(|n| n.has_pending()));
        }
        if now_us >= self.next_rrtr_us && self.wants_rtt() {
            if let Some(n) = feedback::write_rrtr(&mut out[at..limit], sender, ntp_now) {
                at += n;
                self.next_rrtr_us = now_us + RRTR_INTERVAL_US;
            }
        }
        while self.pli_count > 0 {
            let ssrc = self.plis[self.pli_count - 1];
            let Some(n) = feedback::write_pli(&mut out[at..limit], sender, ssrc) else {
                break;
            };
            at += n;
            self.pli_count -= 1;
            self.counters.plis += 1;
        }
        if at == 0 {
            return None;
        }
        let n = self.srtp_out.protect_rtcp(out, at).ok()?;
        self.counters.feedback_datagrams += 1;
        Some(n)
    }
}

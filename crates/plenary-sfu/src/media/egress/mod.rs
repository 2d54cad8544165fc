//! The egress fast path's sans-IO core (issue 12): everything one subscriber transport
//! needs to send forwarded RTP without str0m's `write_rtp`/`poll_output`: headers with
//! the negotiated extensions, one transport-wide sequence counter across its m-lines, an
//! RTX ring answering NACKs (RFC 4588), sender reports as SRTCP (with the XR DLRR answer to
//! the subscriber's reference time, RFC 3611, which gives it its RTT), the subscriber's feedback
//! read from a copy of its RTCP, and an estimate from transport-wide feedback ([`bwe`]).
//!
//! It writes into buffers the caller owns (a `SendBatch` slot) and protects them with the
//! subscriber's own `OutboundSrtp`; the caller sends. No heap allocation per packet once a
//! stream is known. str0m keeps ICE, DTLS, SDP and PLI/FIR; see `docs/decisions/`.

pub(crate) mod bwe;
pub(crate) mod header;
pub(crate) mod pacer;
pub(crate) mod rtcp;
pub(crate) mod rtx;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use plenary_srtp::rtp::RtpFields;
use plenary_srtp::{Error, InboundSrtp, OutboundSrtp, SrtpKeys};

use header::{ExtIds, ExtValues};
use pacer::Pacer;
use rtcp::{Dlrr, Feedback, ReferenceTimes, SenderInfo, MAX_REFERENCE_TIMES};
use rtx::{Pending, RtxRing, Sent};

/// How often each stream gets a sender report (str0m's default for video).
pub(crate) const SR_INTERVAL: Duration = Duration::from_secs(1);
/// Where the fast path's SRTCP index starts: far from str0m's, which starts at 0 with the
/// same keys (plenary-srtp README, "Integration constraints").
pub(crate) const SRTCP_INDEX_START: u32 = 1 << 30;
/// Largest RTCP datagram read (a copy is unprotected here; the original goes to str0m).
const RTCP_SCRATCH: usize = 1500;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// What one outgoing m-line is, from the negotiated session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamSpec {
    pub ssrc: u32,
    /// RTX SSRC (RFC 4588 SSRC multiplexing); `None`: NACKs are not answered.
    pub rtx_ssrc: Option<u32>,
    pub clock_rate: u32,
    /// Keep sent packets for RTX (video).
    pub nackable: bool,
    pub ext: ExtIds,
}

struct Stream {
    spec: StreamSpec,
    mid: [u8; 16],
    mid_len: usize,
    /// The receiver reported on this SSRC: it has bound it, so mid is no longer written.
    acked: bool,
    rtx_seq: u16,
    ring: Option<RtxRing>,
    packets: u32,
    octets: u32,
    /// RTP timestamp and time of the last packet sent, for the SR's NTP↔RTP pair.
    last: Option<(u32, Instant)>,
}

/// One forwarded packet, already rewritten by the slot's switcher: the header fields and
/// the publisher's shared payload, borrowed on the way through ([`Media`]) or owned while
/// the pacer holds it back (`pacer::Queued`).
#[derive(Debug, Clone)]
pub(crate) struct Outgoing<P> {
    pub stream: usize,
    pub pt: u8,
    /// RTX payload type paired with `pt`, if negotiated.
    pub rtx_pt: Option<u8>,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub payload: P,
    /// RFC 6464 level (-dBov, 0..=127) and voice activity.
    pub audio_level: Option<(u8, bool)>,
    /// The publisher's video orientation byte (3GPP TS 26.114 §7.4.5).
    pub video_orientation: Option<u8>,
}

pub(crate) type Media<'a> = Outgoing<&'a Arc<[u8]>>;

impl<P> Outgoing<P> {
    /// The same packet with `payload` (a type-changing struct update is not stable Rust).
    fn with_payload<Q>(&self, payload: Q) -> Outgoing<Q> {
        Outgoing {
            stream: self.stream,
            pt: self.pt,
            rtx_pt: self.rtx_pt,
            seq: self.seq,
            ts: self.ts,
            marker: self.marker,
            payload,
            audio_level: self.audio_level,
            video_orientation: self.video_orientation,
        }
    }
}

/// Counters the worker adds to its metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EgressStats {
    pub packets: u64,
    pub bytes: u64,
    pub nacks: u64,
    pub rtx_packets: u64,
    pub rtx_bytes: u64,
    /// NACKed packets no longer (or never) in the ring.
    pub rtx_misses: u64,
    pub sender_reports: u64,
    /// Subscriber RTCP that did not authenticate or parse.
    pub rtcp_errors: u64,
    pub twcc_feedbacks: u64,
    /// Video packets the pacer's full queue dropped.
    pub paced_drops: u64,
}

/// Instant ↔ wall clock, taken once so per-packet times need no clock call.
#[derive(Clone, Copy)]
struct WallClock {
    at: Instant,
    since_epoch: Duration,
}

impl WallClock {
    fn now(now: Instant) -> Self {
        Self {
            at: now,
            since_epoch: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    fn since_epoch(&self, t: Instant) -> Duration {
        self.since_epoch + t.saturating_duration_since(self.at)
    }

    fn ntp(&self, t: Instant) -> u64 {
        let d = self.since_epoch(t);
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        ((d.as_secs() + NTP_UNIX_OFFSET) << 32) | frac
    }
}

/// One subscriber transport's fast egress.
pub(crate) struct Egress {
    out: OutboundSrtp,
    inbound: InboundSrtp,
    streams: Vec<Stream>,
    next_tw_seq: u16,
    log: bwe::SendLog,
    bwe: bwe::Estimator,
    pending: Pending,
    /// Paces video at 2.5 × the estimate; `pacing` is off when estimation is.
    pacer: Pacer,
    pacing: bool,
    /// The driver lists this subscriber as having paced packets waiting.
    pub listed: bool,
    scratch: Box<[u8]>,
    clock: WallClock,
    next_report: Instant,
    /// Index of the next stream due a sender report in this round.
    report_cursor: usize,
    /// The subscriber's receiver reference times not yet answered.
    reference_times: ReferenceTimes,
    pub stats: EgressStats,
}

impl Egress {
    /// From the keys captured at `Event::Connected`; `start_bps` seeds the estimate, and
    /// `None` (estimation off) turns pacing off.
    pub(crate) fn new(
        keys: &SrtpKeys,
        start_bps: Option<u64>,
        now: Instant,
    ) -> Result<Self, Error> {
        let mut out = OutboundSrtp::new(&keys.local)?;
        out.set_srtcp_index(SRTCP_INDEX_START);
        Ok(Self {
            out,
            inbound: InboundSrtp::new(&keys.remote)?,
            streams: Vec::with_capacity(8),
            next_tw_seq: 1,
            log: bwe::SendLog::default(),
            bwe: bwe::Estimator::new(start_bps.unwrap_or(bwe::MAX_BPS), now),
            pending: Pending::default(),
            pacer: Pacer::new(now),
            pacing: start_bps.is_some(),
            listed: false,
            scratch: vec![0u8; RTCP_SCRATCH].into_boxed_slice(),
            clock: WallClock::now(now),
            next_report: now + SR_INTERVAL,
            report_cursor: 0,
            reference_times: ReferenceTimes::default(),
            stats: EgressStats::default(),
        })
    }

    /// The stream for an m-line, created on first use (rare: once per m-line).
    pub(crate) fn stream(&mut self, mid: &str, spec: StreamSpec) -> usize {
        if let Some(i) = self.streams.iter().position(|s| s.spec.ssrc == spec.ssrc) {
            return i;
        }
        let mut m = [0u8; 16];
        let mid_len = mid.len().min(16);
        m[..mid_len].copy_from_slice(&mid.as_bytes()[..mid_len]);
        self.streams.push(Stream {
            spec: StreamSpec {
                ext: spec.ext.one_byte(),
                ..spec
            },
            mid: m,
            mid_len,
            acked: false,
            rtx_seq: (spec.ssrc as u16) & 0x7fff,
            ring: (spec.nackable && spec.rtx_ssrc.is_some()).then(RtxRing::default),
            packets: 0,
            octets: 0,
            last: None,
        });
        self.streams.len() - 1
    }

    /// The estimate, once after each change of it.
    pub(crate) fn take_estimate(&mut self) -> Option<u64> {
        self.bwe.take_update()
    }

    fn pace_bps(&self) -> Option<u64> {
        self.pacing.then(|| self.bwe.estimate())
    }

    /// Sends `m` now (written into `buf`: `Some(len)`) or, for video over the pacing
    /// budget, queues it for [`Egress::write_paced`] (`None`).
    pub(crate) fn forward(
        &mut self,
        buf: &mut [u8],
        m: &Media<'_>,
        now: Instant,
    ) -> Result<Option<usize>, Error> {
        let video = self.streams.get(m.stream).is_some_and(|s| s.spec.nackable);
        let rate = self.pace_bps();
        if !video {
            self.pacer.spend(rate, m.payload.len(), now);
        } else if !self.pacer.admit(rate, m.payload.len(), now) {
            let queued = self.pacer.push(m.with_payload(m.payload.clone()));
            if !queued {
                self.stats.paced_drops += 1;
            }
            return Ok(None);
        }
        self.write_media(buf, m, now).map(Some)
    }

    /// Whether paced video is waiting.
    pub(crate) fn paced_waiting(&self) -> bool {
        self.pacer.queued() > 0
    }

    /// Writes the next paced video packet whose time has come; `None` if none.
    pub(crate) fn write_paced(
        &mut self,
        buf: &mut [u8],
        now: Instant,
    ) -> Option<Result<usize, Error>> {
        let q = self.pacer.pop(self.pace_bps(), now)?;
        let m = q.with_payload(&q.payload);
        Some(self.write_media(buf, &m, now))
    }

    fn take_tw_seq(&mut self, ids: &ExtIds) -> Option<u16> {
        ids.transport_cc?;
        let s = self.next_tw_seq;
        self.next_tw_seq = s.wrapping_add(1);
        Some(s)
    }

    /// Writes `m` as SRTP into `buf` and returns the datagram's length.
    pub(crate) fn write_media(
        &mut self,
        buf: &mut [u8],
        m: &Media<'_>,
        now: Instant,
    ) -> Result<usize, Error> {
        let Some(st) = self.streams.get(m.stream) else {
            return Err(Error::Malformed);
        };
        let ids = st.spec.ext;
        let overhead = self.out.profile().rtp_overhead();
        if buf.len() < header::MAX_HEADER + m.payload.len() + overhead {
            return Err(Error::BufferTooSmall);
        }
        let tw = self.take_tw_seq(&ids);
        let st = &mut self.streams[m.stream];
        let fields = RtpFields {
            payload_type: m.pt,
            marker: m.marker,
            seq: m.seq,
            timestamp: m.ts,
            ssrc: st.spec.ssrc,
        };
        let vals = ExtValues {
            audio_level: m.audio_level,
            video_orientation: m.video_orientation,
            transport_cc: tw,
            abs_send_time: Some(self.clock.since_epoch(now)),
            mid: (!st.acked).then_some(&st.mid[..st.mid_len]),
        };
        let h = header::write_header(buf, &fields, &ids, &vals)?;
        let len = h + m.payload.len();
        buf[h..len].copy_from_slice(m.payload);
        st.packets = st.packets.wrapping_add(1);
        st.octets = st.octets.wrapping_add(m.payload.len() as u32);
        st.last = Some((m.ts, now));
        if let (Some(ring), Some(rtx_pt)) = (st.ring.as_mut(), m.rtx_pt) {
            ring.record(Sent {
                seq: m.seq,
                ts: m.ts,
                marker: m.marker,
                pt: rtx_pt,
                video_orientation: m.video_orientation,
                payload: m.payload.clone(),
            });
        }
        let n = self.out.protect_rtp(buf, len)?;
        if let Some(tw) = tw {
            self.log.record(tw, now, n);
        }
        self.stats.packets += 1;
        self.stats.bytes += m.payload.len() as u64;
        Ok(n)
    }

    /// Reads a copy of one SRTCP datagram from the subscriber, arrived at `now`: NACKs
    /// queue resends, transport-wide feedback feeds the estimate, report blocks acknowledge
    /// SSRCs, a reference time waits for the next sender report's DLRR. The caller still
    /// hands the original to str0m (PLI/FIR).
    pub(crate) fn handle_rtcp(&mut self, datagram: &[u8], now: Instant) -> Result<(), Error> {
        if datagram.len() + 16 > self.scratch.len() {
            self.stats.rtcp_errors += 1;
            return Err(Error::BufferTooSmall);
        }
        self.scratch[..datagram.len()].copy_from_slice(datagram);
        let plain = match self
            .inbound
            .unprotect_rtcp(&mut self.scratch, datagram.len())
        {
            Ok(n) => n,
            Err(e) => {
                self.stats.rtcp_errors += 1;
                return Err(e);
            }
        };
        let Self {
            scratch,
            streams,
            pending,
            log,
            bwe,
            stats,
            reference_times,
            ..
        } = self;
        let ok = rtcp::parse_compound(&scratch[..plain], |fb| match fb {
            Feedback::Nack {
                media_ssrc,
                pid,
                blp,
            } => {
                stats.nacks += 1;
                let Some(i) = streams.iter().position(|s| s.spec.ssrc == media_ssrc) else {
                    return;
                };
                for seq in rtx::nack_seqs(pid, blp) {
                    pending.push(i, seq);
                }
            }
            Feedback::Twcc(t) => {
                stats.twcc_feedbacks += 1;
                t.for_each(|seq, arrival| bwe.on_packet(log, seq, arrival));
                bwe.on_feedback_end();
            }
            Feedback::Report { ssrc } => {
                for s in streams.iter_mut() {
                    if s.spec.ssrc == ssrc || s.spec.rtx_ssrc == Some(ssrc) {
                        s.acked = true;
                    }
                }
            }
            Feedback::Rrtr { ssrc, lrr } => reference_times.note(ssrc, lrr, now),
        });
        if !ok {
            self.stats.rtcp_errors += 1;
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Whether resends are waiting for [`Egress::write_rtx`].
    pub(crate) fn has_rtx(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes the next asked-for resend as RFC 4588 RTX into `buf`: RTX SSRC and PT, its
    /// own sequence number, the original sequence number before the payload. `None` when
    /// nothing is left; packets no longer in the ring are skipped (counted).
    pub(crate) fn write_rtx(
        &mut self,
        buf: &mut [u8],
        now: Instant,
    ) -> Option<Result<usize, Error>> {
        loop {
            let (i, seq) = self.pending.pop()?;
            let st = &self.streams[i];
            let (Some(rtx_ssrc), Some(sent)) = (
                st.spec.rtx_ssrc,
                st.ring.as_ref().and_then(|r| r.get(seq)).cloned(),
            ) else {
                self.stats.rtx_misses += 1;
                continue;
            };
            let ids = st.spec.ext;
            let overhead = self.out.profile().rtp_overhead();
            if buf.len() < header::MAX_HEADER + 2 + sent.payload.len() + overhead {
                return Some(Err(Error::BufferTooSmall));
            }
            let tw = self.take_tw_seq(&ids);
            let st = &mut self.streams[i];
            let rtx_seq = st.rtx_seq;
            st.rtx_seq = rtx_seq.wrapping_add(1);
            let fields = RtpFields {
                payload_type: sent.pt,
                marker: sent.marker,
                seq: rtx_seq,
                timestamp: sent.ts,
                ssrc: rtx_ssrc,
            };
            let vals = ExtValues {
                audio_level: None,
                video_orientation: sent.video_orientation,
                transport_cc: tw,
                abs_send_time: Some(self.clock.since_epoch(now)),
                mid: (!st.acked).then_some(&st.mid[..st.mid_len]),
            };
            let h = match header::write_header(buf, &fields, &ids, &vals) {
                Ok(h) => h,
                Err(e) => return Some(Err(e)),
            };
            buf[h..h + 2].copy_from_slice(&seq.to_be_bytes());
            let len = h + 2 + sent.payload.len();
            buf[h + 2..len].copy_from_slice(&sent.payload);
            let n = match self.out.protect_rtp(buf, len) {
                Ok(n) => n,
                Err(e) => return Some(Err(e)),
            };
            if let Some(tw) = tw {
                self.log.record(tw, now, n);
            }
            self.stats.rtx_packets += 1;
            self.stats.rtx_bytes += sent.payload.len() as u64;
            let rate = self.pace_bps();
            self.pacer.spend(rate, sent.payload.len(), now);
            return Some(Ok(n));
        }
    }

    /// When the next sender reports are due.
    pub(crate) fn next_report(&self) -> Instant {
        self.next_report
    }

    /// Writes the next due sender report as SRTCP into `buf`, one stream per call, for
    /// the streams that have sent since the `Egress` was made. The first one after a
    /// reference time carries its DLRR answer, one item per receiver SSRC. `None` when none
    /// is due.
    pub(crate) fn write_report(
        &mut self,
        buf: &mut [u8],
        now: Instant,
    ) -> Option<Result<usize, Error>> {
        if now < self.next_report {
            return None;
        }
        while self.report_cursor < self.streams.len() {
            let st = &self.streams[self.report_cursor];
            self.report_cursor += 1;
            let Some((ts, at)) = st.last else {
                continue;
            };
            // The RTP time now: the last timestamp moved on by the time since it was sent.
            let elapsed = now.saturating_duration_since(at);
            let ticks = elapsed.as_micros() as u64 * u64::from(st.spec.clock_rate) / 1_000_000;
            let info = SenderInfo {
                ssrc: st.spec.ssrc,
                ntp: self.clock.ntp(now),
                rtp_ts: ts.wrapping_add(ticks as u32),
                packets: st.packets,
                octets: st.octets,
            };
            let need = rtcp::SR_LEN
                + rtcp::dlrr_len(MAX_REFERENCE_TIMES)
                + self.out.profile().rtcp_overhead();
            if buf.len() < need {
                return Some(Err(Error::BufferTooSmall));
            }
            let mut n = rtcp::write_sr(buf, &info);
            let mut answers = [Dlrr::default(); MAX_REFERENCE_TIMES];
            let count = self.reference_times.answer(now, &mut answers);
            if count > 0 {
                n += rtcp::write_dlrr(&mut buf[n..], info.ssrc, &answers[..count]);
            }
            self.stats.sender_reports += 1;
            return Some(self.out.protect_rtcp(buf, n));
        }
        self.report_cursor = 0;
        self.next_report = now + SR_INTERVAL;
        None
    }
}

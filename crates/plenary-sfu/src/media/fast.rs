//! The egress fast path's thin driver: which subscribers take it, the per-m-line stream
//! set-up from the negotiated session, and the worker's one `SendBatch` (sendmmsg, GSO
//! runs per subscriber) that forwarded RTP, RTX and sender reports go out in. The
//! protocol work is the sans-IO core in `egress`.

use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use str0m::media::{MediaKind, Pt};
use str0m::rtp::Extension;

use super::egress::header::ExtIds;
use super::egress::{Egress, StreamSpec};
use super::peer::Peer;
use super::stats::Stats;
use super::MediaLoop;
use plenary_srtp::batch::SendBatch;

/// Datagrams queued before a flush is forced. A worker pass is flushed at its end anyway;
/// this bounds the memory (BATCH x MAX_DATAGRAM per worker) and the wait of a pass's first packet.
pub(super) const BATCH: usize = 1024;
/// Room per datagram: the largest RTP payload str0m hands over plus our header and tag.
pub(super) const MAX_DATAGRAM: usize = 1600;

/// Debug logs about fast-path errors, at most 10 a second.
static LOG_LIMIT: plenary_ops::ratelimit::LogLimiter<1> =
    plenary_ops::ratelimit::LogLimiter::new(10);

/// The worker's batch. Sent once per pass, it is grouped by destination at each flush, so
/// that one subscriber's packets from the pass's fan-outs go as GSO runs.
pub(super) fn new_batch(per_pass: bool) -> SendBatch {
    let mut batch = SendBatch::new(BATCH, MAX_DATAGRAM);
    batch.set_grouping(per_pass);
    batch
}

/// `PLENARY_SFU_SEND=fan-out` keeps the older per-fan-out flush (for side-by-side
/// measurements); anything else, or nothing, flushes once per worker pass.
pub(super) fn send_per_pass() -> bool {
    std::env::var("PLENARY_SFU_SEND").map_or(true, |v| v.trim() != "fan-out")
}

/// How a packet for one subscriber leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// str0m's `write_rtp` (fast path off, or no keys for this subscriber).
    Str0m,
    /// Fast path, but its connected address is not known yet: nothing may go through
    /// str0m on its streams, so the packet is skipped (for one loop pass at most).
    Wait,
    Fast(SocketAddr),
}

/// Picks the subscriber's route, setting up its fast egress on first use after
/// `Event::Connected`. `start_bps` seeds the estimate (`None`: estimation is off).
pub(super) fn route(sub: &mut Peer, start_bps: Option<u64>, now: Instant) -> Route {
    let Some(remote) = sub.conn.as_ref().map(|c| c.remote) else {
        return if sub.keys.is_some() {
            Route::Wait
        } else {
            Route::Str0m
        };
    };
    if sub.fast.is_some() {
        return Route::Fast(remote);
    }
    let Some(slot) = sub.keys.take() else {
        return Route::Str0m;
    };
    let Some(keys) = slot.get() else {
        tracing::info!(
            participant = sub.participant,
            "srtp keys not captured (profile unknown to plenary-srtp); this subscriber \
             stays on str0m's egress path, without sender reports"
        );
        return Route::Str0m;
    };
    match Egress::new(keys, start_bps, now) {
        Ok(e) => {
            sub.fast = Some(Box::new(e));
            if start_bps.is_some() {
                sub.estimate_bps = start_bps;
            }
            sub.keys = Some(slot);
            Route::Fast(remote)
        }
        Err(e) => {
            tracing::warn!(
                participant = sub.participant,
                "fast egress refused keys: {e}"
            );
            Route::Str0m
        }
    }
}

/// The RTX payload type paired with `pt` in the subscriber's codec config.
pub(super) fn rtx_pt_of(sub: &Peer, pt: Pt) -> Option<Pt> {
    sub.rtc
        .codec_config()
        .find(|c| c.pt() == pt)
        .and_then(|c| c.resend())
}

/// The fast-egress stream of slot `i`, set up from the negotiated m-line on first use.
pub(super) fn stream_of(sub: &mut Peer, i: usize, out_pt: Pt) -> Option<usize> {
    let slot = sub.slots.get(i)?;
    if let Some(s) = slot.egress_stream {
        return Some(s);
    }
    let (mid, kind) = (slot.mid, slot.kind);
    let exts = sub.rtc.media(mid)?.remote_extmap();
    let ext = ExtIds {
        audio_level: exts.id_of(Extension::AudioLevel),
        video_orientation: exts.id_of(Extension::VideoOrientation),
        transport_cc: exts.id_of(Extension::TransportSequenceNumber),
        abs_send_time: exts.id_of(Extension::AbsoluteSendTime),
        mid: exts.id_of(Extension::RtpMid),
    };
    let clock_rate = sub
        .rtc
        .codec_config()
        .find(|c| c.pt() == out_pt)
        .map(|c| c.spec().clock_rate.get())
        .unwrap_or(if kind == MediaKind::Video {
            90_000
        } else {
            48_000
        });
    let mut api = sub.rtc.direct_api();
    let tx = api.stream_tx_by_mid(mid, None)?;
    let spec = StreamSpec {
        ssrc: *tx.ssrc(),
        rtx_ssrc: tx.rtx().map(|s| *s),
        clock_rate,
        nackable: kind == MediaKind::Video,
        ext,
    };
    let stream = sub.fast.as_mut()?.stream(&mid.to_string(), spec);
    if let Some(slot) = sub.slots.get_mut(i) {
        slot.egress_stream = Some(stream);
    }
    Some(stream)
}

/// Sends what `batch` holds in one `sendmmsg` (more if GSO is refused) on the shared
/// socket, with each datagram's destination: one syscall for the whole fan-out.
pub(super) fn flush(batch: &mut SendBatch, sock: &UdpSocket, stats: &mut Stats) {
    if batch.is_empty() {
        return;
    }
    match batch.flush(sock) {
        Ok(f) => {
            stats.egress_sendmmsg += f.syscalls as u64;
            stats.egress_dropped += f.dropped as u64;
        }
        Err(e) => {
            stats.egress_dropped += 1;
            plenary_ops::limited_debug!(LOG_LIMIT, 0, "sfu: fast egress send: {e}");
        }
    }
}

impl MediaLoop {
    /// Sends what the worker's batch holds: one `sendmmsg` on the shared socket.
    pub(super) fn flush_egress(&mut self) {
        flush(&mut self.batch, &self.sock, &mut self.stats);
    }

    /// A subscriber's SRTCP datagram, before str0m gets the original: NACKs, TWCC, RRs,
    /// reference times.
    pub(super) fn fast_rtcp(&mut self, peer: u64, data: &[u8], now: Instant) {
        let Some(eg) = self.peers.get_mut(&peer).and_then(|p| p.fast.as_mut()) else {
            return;
        };
        let nacks = eg.stats.nacks;
        if let Err(e) = eg.handle_rtcp(data, now) {
            self.stats.egress_rtcp_errors += 1;
            plenary_ops::limited_debug!(LOG_LIMIT, 0, "sfu: subscriber rtcp refused: {e}");
        }
        // str0m counts NACKs only on streams it writes; on this path they are ours to count.
        self.stats.nacks_received += eg.stats.nacks - nacks;
    }

    /// After a subscriber's RTCP: sends the resends it asked for and takes a new estimate.
    pub(super) fn fast_after_rtcp(&mut self, peer: u64, now: Instant) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let (Some(eg), Some(dest)) = (p.fast.as_mut(), p.conn.as_ref().map(|c| c.remote)) else {
            return;
        };
        if let Some(bps) = eg.take_estimate() {
            if self.config.bandwidth_estimation {
                metrics::histogram!("plenary_sfu_subscriber_estimate_bps").record(bps as f64);
                p.estimate_bps = Some(bps);
            }
        }
        let mut rtx = 0;
        while eg.has_rtx() {
            if self.batch.is_full() {
                flush(&mut self.batch, &self.sock, &mut self.stats);
            }
            let Some(buf) = self.batch.next_buf() else {
                break;
            };
            match eg.write_rtx(buf, now) {
                Some(Ok(n)) => {
                    self.batch.commit(n, Some(dest));
                    rtx += 1;
                }
                Some(Err(e)) => {
                    self.stats.egress_errors += 1;
                    plenary_ops::limited_debug!(LOG_LIMIT, 0, "sfu: rtx not written: {e}");
                }
                None => break,
            }
        }
        if rtx > 0 {
            self.stats.rtx_packets += rtx;
            self.shared
                .fast_rtx
                .fetch_add(rtx, std::sync::atomic::Ordering::Relaxed);
        }
        // RTCP arrives within a pass: its resends go with the pass's flush.
        if !self.send_per_pass {
            self.flush_egress();
        }
    }

    /// Paced video whose time has come, for the subscribers that have some waiting.
    pub(super) fn fast_paced(&mut self, now: Instant) {
        if self.paced.is_empty() {
            return;
        }
        let mut list = std::mem::take(&mut self.paced);
        list.retain(|id| {
            let Some(p) = self.peers.get_mut(id) else {
                return false;
            };
            let (Some(eg), Some(dest)) = (p.fast.as_mut(), p.conn.as_ref().map(|c| c.remote))
            else {
                return false;
            };
            loop {
                if self.batch.is_full() {
                    flush(&mut self.batch, &self.sock, &mut self.stats);
                }
                let Some(buf) = self.batch.next_buf() else {
                    break;
                };
                match eg.write_paced(buf, now) {
                    Some(Ok(n)) => {
                        self.batch.commit(n, Some(dest));
                    }
                    Some(Err(e)) => {
                        self.stats.egress_errors += 1;
                        plenary_ops::limited_debug!(LOG_LIMIT, 0, "sfu: paced not written: {e}");
                    }
                    None => break,
                }
            }
            eg.listed = eg.paced_waiting();
            eg.listed
        });
        self.paced = list;
        self.flush_egress();
    }

    /// Sender reports that are due, for every fast-path subscriber.
    pub(super) fn fast_reports(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            let (Some(eg), Some(dest)) = (p.fast.as_mut(), p.conn.as_ref().map(|c| c.remote))
            else {
                continue;
            };
            if eg.next_report() > now {
                continue;
            }
            loop {
                if self.batch.is_full() {
                    flush(&mut self.batch, &self.sock, &mut self.stats);
                }
                let Some(buf) = self.batch.next_buf() else {
                    break;
                };
                match eg.write_report(buf, now) {
                    Some(Ok(n)) => {
                        self.batch.commit(n, Some(dest));
                        self.stats.sender_reports += 1;
                    }
                    Some(Err(e)) => {
                        self.stats.egress_errors += 1;
                        plenary_ops::limited_debug!(LOG_LIMIT, 0, "sfu: sr not written: {e}");
                    }
                    None => break,
                }
            }
        }
        self.flush_egress();
    }
}

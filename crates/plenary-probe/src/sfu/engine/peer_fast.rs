//! The peer's side of the receive fast path: starting it at connect, feeding it SRTP,
//! handing what it opens to the track receivers, learning which SSRC is which track, and
//! sending its feedback. The pure part is `sfu::fastrx`.

use super::{Peer, Receiver};
use crate::sfu::fastrx::routes::StreamInfo;
use crate::sfu::fastrx::{FastRx, Routed};
use crate::sfu::recv::track::{RxPacket, TrackKind, TrackRx};
use str0m::media::{MediaKind, Mid};
use str0m::rtp::Extension;

/// Feedback datagrams sent per service at most (a TWCC backlog after a stall).
const MAX_FEEDBACK_PER_SERVICE: usize = 8;
/// Least time between two route look-ups for unknown SSRCs, µs.
const LEARN_INTERVAL_US: u64 = 200_000;

/// RTP, not RTCP (RFC 5761 §4), nor STUN or DTLS (RFC 7983).
pub(super) fn is_srtp(data: &[u8]) -> bool {
    plenary_srtp::rtp::is_rtp_or_rtcp(data) && !plenary_srtp::rtp::is_rtcp(data)
}

/// The wall clock as a 64-bit NTP timestamp (RFC 3550 §4), for reference time reports.
fn ntp_now() -> u64 {
    const SECS_1900: u64 = 2_208_988_800;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let frac = (u64::from(t.subsec_nanos()) << 32) / 1_000_000_000;
    (t.as_secs() + SECS_1900) << 32 | frac
}

impl Peer {
    /// At `Event::Connected`: keys are in the slot (captured before str0m connects, used
    /// only after it checked the fingerprint). A profile the fast path cannot run leaves
    /// the slot empty and the peer on str0m's path.
    pub(super) fn start_fast(&mut self) {
        if !self.fast_wanted || self.fast.is_some() {
            return;
        }
        let Some(keys) = self.keys.get() else {
            tracing::info!(
                peer = self.id,
                "no SRTP keys captured: str0m keeps the receive path"
            );
            return;
        };
        // An SSRC str0m does not use for its own RTCP, so the two SRTCP senders never
        // share a (key, SSRC, index).
        let sender = *self.rtc.direct_api().new_ssrc();
        let Some(fast) = FastRx::new(
            keys,
            sender,
            self.ext_id(Extension::TransportSequenceNumber),
        ) else {
            return;
        };
        self.fast = Some(Box::new(fast));
        self.feedback_buf = vec![0; 1500];
        self.rtcp_copy = vec![0; 2048];
        self.learn_routes();
    }

    /// A renegotiation may add m-lines, SSRCs or extension ids.
    pub fn after_renegotiation(&mut self) {
        self.rtc_dirty = true;
        let twcc = self.ext_id(Extension::TransportSequenceNumber);
        if let Some(f) = self.fast.as_mut() {
            f.set_twcc_ext(twcc);
        }
        self.learn_routes();
    }

    /// Closes the connection (str0m sends its alerts at the next service).
    pub fn disconnect(&mut self) {
        self.rtc.disconnect();
        self.rtc_dirty = true;
    }

    /// The id the remote gave header extension `e` on any of our m-lines (BUNDLE: one id
    /// per extension across the transport).
    fn ext_id(&self, e: Extension) -> Option<u8> {
        self.expect
            .iter()
            .map(|x| x.0)
            .chain(self.receivers.iter().map(|r| r.mid))
            .find_map(|mid| self.rtc.media(mid)?.remote_extmap().id_of(e.clone()))
    }

    /// Routes for every SSRC str0m knows from the remote SDP (`a=ssrc`, `a=ssrc-group:FID`):
    /// str0m reads those whether or not it ever sees the RTP.
    fn learn_routes(&mut self) {
        let Some(fast) = self.fast.as_mut() else {
            return;
        };
        let mids = self
            .expect
            .iter()
            .map(|x| (x.0, x.1))
            .chain(self.receivers.iter().map(|r| (r.mid, r.rx.kind)));
        let mut found = Vec::new();
        let mut api = self.rtc.direct_api();
        for (mid, kind) in mids {
            if let Some(s) = api.stream_rx_by_mid(mid, None) {
                // The fast path NACKs; str0m, which sees no RTP, would only wake every
                // 33 ms to find nothing to ask for.
                s.suppress_nack(true);
                let rtx = s.rtx().map(|r| *r);
                found.push(StreamInfo {
                    ssrc: *s.ssrc(),
                    mid,
                    kind,
                    rtx,
                    nack: rtx.is_some(),
                });
            }
        }
        for s in found {
            fast.learn(s);
        }
    }

    /// An SSRC no route claims: look again at what str0m knows, then at the packet's MID
    /// header extension (a server that declares no SSRCs), at most every 200 ms.
    fn learn_unknown(&mut self, now_us: u64, ssrc: u32, pt: u8, mid: Option<Mid>) {
        if now_us < self.next_learn_us {
            return;
        }
        self.next_learn_us = now_us + LEARN_INTERVAL_US;
        self.learn_routes();
        let (Some(mid), Some(fast)) = (mid, self.fast.as_mut()) else {
            return;
        };
        if fast.routes.find(ssrc).is_some() {
            return;
        }
        let Some(media) = self.rtc.media(mid) else {
            return;
        };
        let kind = match media.kind() {
            MediaKind::Audio => TrackKind::Audio,
            MediaKind::Video => TrackKind::Video,
        };
        let codecs = self.rtc.codec_config();
        if codecs
            .find(|p| p.resend().is_some_and(|r| *r == pt))
            .is_some()
        {
            if let Some(main) = fast.routes.main_of_mid(mid) {
                fast.routes.learn_rtx(ssrc, main);
            }
        } else if let Some(p) = codecs.find(|p| *p.pt() == pt) {
            fast.learn(StreamInfo {
                ssrc,
                mid,
                kind,
                rtx: None,
                nack: p.resend().is_some(),
            });
        }
    }

    /// SRTCP from the remote: str0m handles it; a copy is read for the DLRR that gives the
    /// fast path its RTT.
    pub(super) fn on_fast_rtcp(&mut self, data: &[u8]) {
        let Some(fast) = self.fast.as_mut() else {
            return;
        };
        let Some(copy) = self.rtcp_copy.get_mut(..data.len()) else {
            return;
        };
        copy.copy_from_slice(data);
        fast.on_rtcp(copy, ntp_now());
    }

    /// One SRTP datagram from the remote: open it, find its track, measure it.
    pub(super) fn on_fast_rtp(&mut self, now_us: u64, data: &mut [u8]) {
        let Some(fast) = self.fast.as_mut() else {
            return;
        };
        let Some(o) = fast.open(data, now_us) else {
            return;
        };
        let mut routed = fast.route(data, &o);
        let ssrc = o.header.fields.ssrc;
        if routed == Routed::Unknown && ssrc != 0 {
            // SSRC 0 is a bandwidth probe (padding only): nothing to measure.
            let mid = self
                .ext_id(Extension::RtpMid)
                .and_then(|id| o.header.extension(data, id))
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(Mid::from);
            self.learn_unknown(now_us, ssrc, o.header.fields.payload_type, mid);
            let Some(fast) = self.fast.as_mut() else {
                return;
            };
            routed = fast.route(data, &o);
            if routed == Routed::Unknown {
                fast.unrouted(ssrc, now_us);
            }
        }
        let Routed::Media {
            route,
            seq,
            payload,
            ..
        } = routed
        else {
            return;
        };
        let i = self.receiver_of_route(route, now_us);
        let ask = self.receivers[i].rx.on_packet(RxPacket {
            seq,
            rtp_ts: o.header.fields.timestamp,
            marker: o.header.fields.marker,
            payload: &data[payload.0..payload.1],
            arrival_us: now_us,
        });
        if ask {
            if let Some(f) = self.fast.as_mut() {
                f.request_pli(route);
            }
        }
    }

    /// The receiver measuring route `route`'s m-line, created at its first packet as on
    /// str0m's path.
    fn receiver_of_route(&mut self, route: usize, now_us: u64) -> usize {
        let fast = self.fast.as_mut().expect("fast path running");
        let r = &mut fast.routes.list[route];
        if let Some(i) = r.receiver {
            return i;
        }
        let i = match self.receivers.iter().position(|x| x.mid == r.mid) {
            Some(i) => i,
            None => {
                self.receivers.push(Receiver {
                    mid: r.mid,
                    rx: TrackRx::new(r.kind, self.joined_us, now_us),
                    must_flow: false,
                    paused_in_step: false,
                });
                self.receivers.len() - 1
            }
        };
        r.receiver = Some(i);
        i
    }

    /// A PLI for `mid` through the fast path's feedback; false if it has no route for it.
    pub(super) fn fast_pli(&mut self, mid: Mid) -> bool {
        let Some(f) = self.fast.as_mut() else {
            return false;
        };
        match f.routes.main_of_mid(mid) {
            Some(route) => {
                f.request_pli(route);
                true
            }
            None => false,
        }
    }

    /// Sends the fast path's due feedback; returns when more is due, µs.
    pub(super) fn send_feedback(&mut self, now_us: u64) -> Option<u64> {
        let fast = self.fast.as_mut()?;
        if let Some(to) = self.remote {
            for _ in 0..MAX_FEEDBACK_PER_SERVICE {
                let Some(n) = fast.poll_feedback(now_us, ntp_now(), &mut self.feedback_buf) else {
                    break;
                };
                match self.socket.send_to(&self.feedback_buf[..n], to) {
                    Ok(n) => {
                        self.counters.tx_packets += 1;
                        self.counters.tx_bytes += n as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        self.counters.send_drops += 1
                    }
                    Err(_) => self.counters.send_errors += 1,
                }
            }
        }
        self.counters.fast = fast.counters;
        // What could not go out now (no route to the remote yet) is retried in 1 ms.
        fast.next_due_us().map(|t| t.max(now_us + 1_000))
    }
}

//! One peer connection: a str0m `Rtc` and what the worker keeps beside it.

use std::net::UdpSocket;
use std::time::Instant;

use str0m::bwe::BweKind;
use str0m::change::SdpPendingOffer;
use str0m::media::{MediaKind, Mid, Rid};
use str0m::rtp::RtpPacket;
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use super::slot::{Slot, SlotRole};
use crate::dtls_trace::is_dtls;

/// Due timeouts handled within one drain: more than a pacer burst (63 kB, ~55 packets), and
/// a bound so a misbehaving state machine cannot hold the worker.
const MAX_IMMEDIATE_TIMEOUTS: u32 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerKind {
    /// WHIP: publishes, receives nothing.
    Whip,
    /// WHEP: receives the room's programme feed.
    Whep,
    /// Room API publish connection (client offers).
    Publish,
    /// Room API subscribe connection (server offers).
    Subscribe,
}

impl PeerKind {
    pub(crate) fn publishes(self) -> bool {
        matches!(self, PeerKind::Whip | PeerKind::Publish)
    }
}

pub(crate) struct Peer {
    pub participant: u64,
    pub kind: PeerKind,
    pub rtc: Rtc,
    pub next_timeout: Instant,
    pub created: Instant,
    pub connected: bool,
    /// Last ICE state str0m reported (for the log when a peer never connects).
    pub ice: Option<IceConnectionState>,
    /// DTLS datagrams sent to and received from the peer before it connected (same log).
    pub dtls_tx: u32,
    pub dtls_rx: u32,
    pub send_errors: u32,
    /// Outgoing m-lines (subscribing peers).
    pub slots: Vec<Slot>,
    /// Latest egress estimate (TWCC, else REMB).
    pub estimate_bps: Option<u64>,
    /// Last desired bitrate given to BWE (so it is only re-set on real changes).
    pub desired_bps: u64,
    /// Server offer awaiting the client's answer (subscribe connection).
    pub pending_offer: Option<SdpPendingOffer>,
    /// A renegotiation was wanted while an offer was out.
    pub renegotiate: bool,
    /// Connected socket to the peer's address, once ICE has seen it.
    pub conn: Option<super::io::Conn>,
    /// Slots (kind, role, max layer) whose m-lines go into the next offer. str0m keeps
    /// added media only in the `SdpApi` that added it, so they are added when the offer is
    /// made, with the same `SdpApi` that applies it.
    pub queued: Vec<(MediaKind, SlotRole, u8)>,
    /// What the WHIP/WHEP URL asked for.
    pub opts: crate::SessionOpts,
    /// Its place in its source's count of connecting sessions, given back on connect.
    pub admission: Option<crate::admission::Admission>,
    /// Fast egress path: where the SRTP keys arrive; `None` keeps str0m's path.
    pub keys: Option<plenary_srtp::KeySlot>,
    /// Fast egress path, once connected with keys (see `fast`).
    pub fast: Option<Box<super::egress::Egress>>,
}

/// What a drain saw, copied out so the worker can act on other peers.
// Boxing the RTP packet would allocate per packet; these live in a reused Vec instead.
#[allow(clippy::large_enum_variant)]
pub(crate) enum PeerEvent {
    Connected,
    MediaAdded(Mid, MediaKind),
    Rtp(Mid, Option<Rid>, RtpPacket),
    KeyframeRequest(Mid),
    Estimate(u64),
    /// Cumulative NACKs and PLI/FIRs the remote sent for one of our m-lines.
    EgressStats(Mid, u64, u64),
}

impl Peer {
    pub(crate) fn new(participant: u64, kind: PeerKind, rtc: Rtc, now: Instant) -> Self {
        Self {
            participant,
            kind,
            rtc,
            next_timeout: now,
            created: now,
            connected: false,
            ice: None,
            dtls_tx: 0,
            dtls_rx: 0,
            send_errors: 0,
            slots: Vec::new(),
            estimate_bps: None,
            desired_bps: 0,
            pending_offer: None,
            renegotiate: false,
            conn: None,
            queued: Vec::new(),
            opts: crate::SessionOpts::default(),
            admission: None,
            keys: None,
            fast: None,
        }
    }

    pub(crate) fn slot_by_mid(&mut self, mid: Mid) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.mid == mid)
    }

    /// Sends what the `Rtc` wants sent and collects events into `out`. Returns false when the
    /// connection is dead.
    ///
    /// A timeout that is already due is handled here, not on the next loop pass: str0m's pacer
    /// releases one packet per timeout, so deferring it would cap a subscriber at one packet
    /// per pass of the worker and video would queue for seconds under load.
    pub(crate) fn drain(
        &mut self,
        sock: &UdpSocket,
        out: &mut Vec<PeerEvent>,
        now: Instant,
    ) -> bool {
        let mut immediate = 0;
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    if t <= now && immediate < MAX_IMMEDIATE_TIMEOUTS {
                        immediate += 1;
                        if self.rtc.handle_input(Input::Timeout(now)).is_ok() {
                            continue;
                        }
                    }
                    self.next_timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    if !self.connected && is_dtls(&t.contents) {
                        self.dtls_tx += 1;
                        tracing::debug!(target: "plenary_sfu::dtls", participant = self.participant,
                            kind = ?self.kind, dst = %t.destination,
                            tx = %crate::dtls_trace::DtlsRecords(&t.contents));
                    }
                    // A full socket buffer drops the datagram, as the network would.
                    let sent = match &self.conn {
                        Some(c) if c.remote == t.destination => c.sock.send(&t.contents),
                        _ => sock.send_to(&t.contents, t.destination),
                    };
                    if sent.is_err() && !self.connected {
                        self.send_errors += 1;
                    }
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        self.connected = true;
                        self.admission = None;
                        out.push(PeerEvent::Connected);
                    }
                    Event::MediaAdded(m) => out.push(PeerEvent::MediaAdded(m.mid, m.kind)),
                    Event::RtpPacket(p) => {
                        let mut api = self.rtc.direct_api();
                        let Some(rx) = api.stream_rx(&p.header.ssrc) else {
                            continue;
                        };
                        let (mid, rid) = (rx.mid(), rx.rid());
                        out.push(PeerEvent::Rtp(mid, rid, p));
                    }
                    Event::KeyframeRequest(r) => out.push(PeerEvent::KeyframeRequest(r.mid)),
                    Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. })
                    | Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
                        out.push(PeerEvent::Estimate(estimate.as_u64()));
                    }
                    Event::MediaEgressStats(st) => {
                        out.push(PeerEvent::EgressStats(st.mid, st.nacks, st.plis + st.firs));
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        return false;
                    }
                    Event::IceConnectionStateChange(state) => self.ice = Some(state),
                    _ => {}
                },
                Err(e) => {
                    tracing::debug!("sfu: poll_output: {e}");
                    return false;
                }
            }
        }
        self.rtc.is_alive()
    }
}

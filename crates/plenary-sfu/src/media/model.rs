//! Rooms, participants and published tracks, as the media worker holds them.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use str0m::media::{MediaKind, Mid, Rid};
use tokio::sync::mpsc;

use crate::core::codec::Codec;
use crate::core::demand::{Demand, LayerChange};
use crate::core::layers::RateMeter;
use crate::core::limiter::KeyframeLimiter;
use crate::core::speaker::{SpeakerConfig, SpeakerDetector};
use crate::signal::{ServerMsg, TrackInfo, TrackSource};

/// Keyframe requests to one publisher layer are at most this frequent.
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);
/// Events queued for a slow room client before it is dropped.
pub(crate) const EVENT_QUEUE: usize = 1024;

pub(crate) type EventTx = mpsc::Sender<ServerMsg>;

/// What forwarding needs of a publisher's RTP packet; also what is piped between workers.
/// Copying it never allocates: the payload is the `Arc` str0m received it into.
#[derive(Clone)]
pub(crate) struct Packet {
    pub ssrc: u32,
    pub pt: str0m::media::Pt,
    pub seq: u64,
    pub ts: u32,
    pub marker: bool,
    pub payload: std::sync::Arc<[u8]>,
    pub received: Instant,
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
    /// The video orientation's rotation bits (str0m reads no more of the byte): a phone
    /// publishing upright sends its frames sideways with this set.
    pub video_orientation: Option<u8>,
}

impl From<&str0m::rtp::RtpPacket> for Packet {
    fn from(p: &str0m::rtp::RtpPacket) -> Self {
        Self {
            ssrc: *p.header.ssrc,
            pt: p.header.payload_type,
            seq: *p.seq_no,
            ts: p.header.timestamp,
            marker: p.header.marker,
            payload: p.payload.clone(),
            received: p.timestamp,
            audio_level: p.header.ext_vals.audio_level,
            voice_activity: p.header.ext_vals.voice_activity,
            video_orientation: p.header.ext_vals.video_orientation.map(|v| v as u8),
        }
    }
}

pub(crate) struct Layer {
    pub ssrc: u32,
    pub meter: RateMeter,
    /// Rate last measured while the layer flowed: a layer paused by dynacast stays choosable
    /// at what it cost.
    pub last_bps: u64,
    /// `last_bps` comes from a whole second of the layer flowing, not from its first packets.
    /// Until then dynacast keeps asking for the layer (see `core::demand::wanted_mask`).
    pub measured: bool,
}

pub(crate) struct Track {
    pub owner: u64,
    pub peer: u64,
    pub mid: Mid,
    pub kind: MediaKind,
    pub source: TrackSource,
    pub codec: Codec,
    /// Indexed by simulcast layer, 0 = lowest.
    pub layers: [Option<Layer>; 3],
    /// Rids in layer order, from the offer; empty without simulcast.
    pub rids: Vec<Rid>,
    pub keyframes: [KeyframeLimiter; 3],
    /// The publisher sends RFC 6464 levels; tracks without them cannot be ranked by loudness.
    pub has_levels: bool,
    /// Other workers its packets are piped to (its room's span; 0 for remote tracks). Kept
    /// here so the packet path needs no room lookup.
    pub pipe_to: u64,
}

impl Track {
    pub(crate) fn new(
        owner: u64,
        peer: u64,
        mid: Mid,
        kind: MediaKind,
        source: TrackSource,
    ) -> Self {
        Self {
            owner,
            peer,
            mid,
            kind,
            source,
            codec: Codec::Other,
            layers: [None, None, None],
            rids: Vec::new(),
            keyframes: std::array::from_fn(|_| KeyframeLimiter::new(KEYFRAME_INTERVAL)),
            has_levels: false,
            pipe_to: 0,
        }
    }

    /// Layer index of a packet: by rid when simulcast, else 0.
    pub(crate) fn layer_of(&self, rid: Option<Rid>) -> Option<usize> {
        match rid {
            None if self.rids.is_empty() => Some(0),
            None => None,
            Some(r) => self.rids.iter().position(|x| *x == r).filter(|i| *i < 3),
        }
    }

    /// Rate of each layer for the selector; refreshes `last_bps` while the layer flows
    /// (policy pass only).
    pub(crate) fn layer_bps(&mut self, now: Instant) -> [Option<u64>; 3] {
        std::array::from_fn(|i| {
            let l = self.layers[i].as_mut()?;
            if let Some(r) = l.meter.settled_rate(now) {
                l.last_bps = r;
                l.measured = true;
            } else if let Some(r) = l.meter.flowing_rate(now).filter(|_| !l.measured) {
                l.last_bps = r; // a first guess, until a whole second has been measured
            }
            Some(l.last_bps)
        })
    }

    pub(crate) fn info(&self, id: u64) -> TrackInfo {
        TrackInfo {
            id: track_name(id),
            kind: kind_name(self.kind).into(),
            source: self.source,
            layers: self.rids.len().clamp(1, 3) as u8,
        }
    }
}

pub(crate) fn kind_name(k: MediaKind) -> &'static str {
    match k {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

pub(crate) fn participant_name(id: u64) -> String {
    format!("p{id}")
}

pub(crate) fn track_name(id: u64) -> String {
    format!("t{id}")
}

pub(crate) fn parse_id(s: &str, prefix: char) -> Option<u64> {
    s.strip_prefix(prefix)?.parse().ok()
}

/// Orders simulcast rids lowest first: the names browsers use, else offer order.
pub(crate) fn order_rids(mut rids: Vec<Rid>) -> Vec<Rid> {
    fn rank(r: &Rid) -> Option<u8> {
        match r.to_string().as_str() {
            "q" | "l" | "low" | "0" => Some(0),
            "h" | "m" | "mid" | "1" => Some(1),
            "f" | "hi" | "high" | "2" => Some(2),
            _ => None,
        }
    }
    if rids.iter().all(|r| rank(r).is_some()) {
        rids.sort_by_key(rank);
    }
    rids.truncate(3);
    rids
}

pub(crate) struct Participant {
    pub name: String,
    pub room: String,
    /// Room API clients get events; WHIP/WHEP sessions do not.
    pub events: Option<EventTx>,
    /// WHEP viewers are not announced to the room.
    pub visible: bool,
    pub publish: Option<u64>,
    pub subscribe: Option<u64>,
    pub tracks: Vec<u64>,
    /// Source declared for each mid of the publish connection (room API `publish`).
    pub declared: Vec<(String, TrackSource)>,
}

impl Participant {
    pub(crate) fn send(&self, msg: ServerMsg) -> bool {
        match &self.events {
            Some(tx) => tx.try_send(msg).is_ok(),
            None => true,
        }
    }
}

/// (peer, slot index) of a subscriber m-line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotRef {
    pub peer: u64,
    pub slot: usize,
}

pub(crate) struct Room {
    pub participants: Vec<u64>,
    pub tracks: Vec<u64>,
    pub speaker: SpeakerDetector,
    pub active: Option<u64>,
    pub demand: Demand,
    /// Track → the slots it feeds now. Rebuilt on control changes, read per packet.
    pub feeds: FxHashMap<u64, Vec<SlotRef>>,
    /// Who is heard in each audio slot (participant), stable while they keep talking.
    pub audio_assign: Vec<Option<u64>>,
    /// Participants whose camera is forwarded (last-N).
    pub forwarded: Vec<u64>,
    /// Demand changes made outside the policy pass (leaves, unsubscribes), told next pass.
    pub dirty_layers: Vec<LayerChange>,
    /// Other workers this room spans (bit per worker): local tracks are piped to them.
    pub others: u64,
    /// Workers whose members and tracks have not arrived yet: joins wait, so their `joined`
    /// lists everyone.
    pub awaiting: u64,
    /// Joins and leaves not told to the members yet.
    pub people: super::people::PeopleDelta,
}

impl Room {
    pub(crate) fn new(audio_slots: usize) -> Self {
        Self {
            participants: Vec::new(),
            tracks: Vec::new(),
            speaker: SpeakerDetector::new(SpeakerConfig::default()),
            active: None,
            demand: Demand::default(),
            feeds: FxHashMap::default(),
            audio_assign: vec![None; audio_slots],
            forwarded: Vec::new(),
            dirty_layers: Vec::new(),
            others: 0,
            awaiting: 0,
            people: super::people::PeopleDelta::new(std::time::Instant::now()),
        }
    }

    pub(crate) fn unfeed(&mut self, track: u64, r: SlotRef) {
        if let Some(v) = self.feeds.get_mut(&track) {
            v.retain(|x| *x != r);
            if v.is_empty() {
                self.feeds.remove(&track);
            }
        }
    }

    pub(crate) fn feed(&mut self, track: u64, r: SlotRef) {
        let v = self.feeds.entry(track).or_default();
        if !v.contains(&r) {
            v.push(r);
        }
    }
}

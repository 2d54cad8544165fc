//! A subscriber's outgoing m-line and what feeds it.

use str0m::media::{MediaKind, Mid, Pt};

use crate::core::layers::LayerSelector;
use crate::core::switcher::Switcher;

/// What a slot carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotRole {
    /// One published track the client subscribed to (simulcast layer still chosen here).
    Track(u64),
    /// Programme feed: the video of the participant at this rank (0 = current speaker).
    Speaker(usize),
    /// The k-th loudest microphone of the room.
    Loudest(usize),
    /// WHEP `?screen=1`: the room's latest screen share, empty while nobody shares.
    Screen,
    /// Unsubscribed; the m-line stays but carries nothing.
    Idle,
}

pub(crate) struct Slot {
    pub mid: Mid,
    pub kind: MediaKind,
    pub role: SlotRole,
    /// Track feeding the slot now (the `feeds` index of the room lists this slot under it).
    pub feed: Option<u64>,
    pub switcher: Switcher,
    pub selector: LayerSelector,
    /// Highest simulcast layer the client wants here.
    pub max_layer: u8,
    /// Layer chosen for it at the last policy pass.
    pub layer: Option<u8>,
    /// What this slot counts for in the room's dynacast demand: (track, layer mask).
    pub demand: Option<(u64, u8)>,
    /// Taken out by last-N.
    pub paused: bool,
    /// Cached publisher PT → our PT (both sides negotiate per connection).
    pub pt_map: Option<(Pt, Pt)>,
    /// The RTX PT paired with our PT in `pt_map` (fast egress path).
    pub rtx_pt: Option<Pt>,
    /// This m-line's stream in the peer's fast egress, once known.
    pub egress_stream: Option<usize>,
    /// str0m's cumulative NACK and PLI/FIR counts at the last stats event (for deltas).
    pub nacks_seen: u64,
    pub plis_seen: u64,
}

impl Slot {
    pub(crate) fn new(mid: Mid, kind: MediaKind, role: SlotRole, max_layer: u8) -> Self {
        let video = kind == MediaKind::Video;
        let clock = if video { 90_000 } else { 48_000 };
        Self {
            mid,
            kind,
            role,
            feed: None,
            switcher: Switcher::new(clock, video),
            selector: LayerSelector::default(),
            max_layer,
            layer: None,
            demand: None,
            paused: false,
            pt_map: None,
            rtx_pt: None,
            egress_stream: None,
            nacks_seen: 0,
            plis_seen: 0,
        }
    }
}

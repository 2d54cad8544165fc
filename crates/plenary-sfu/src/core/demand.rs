//! Dynacast: which simulcast layers anyone is watching.
//!
//! A publisher encoding three layers that nobody watches wastes its CPU and uplink. This
//! table counts viewers per (track, layer) and reports only the edges (first viewer arrives,
//! last viewer leaves), which is when the publisher must be told.

use std::collections::HashMap;

use super::layers::LAYERS;

/// A layer gained its first viewer (`wanted`) or lost its last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerChange {
    pub track: u64,
    pub layer: u8,
    pub wanted: bool,
}

/// Viewer counts per (track, layer).
#[derive(Debug, Clone, Default)]
pub struct Demand {
    /// Per subscriber: (track, layer mask) for each track it is forwarded.
    subscribers: HashMap<u64, Vec<(u64, u8)>>,
    /// Per track: how many subscribers want each layer.
    counts: HashMap<u64, [u32; LAYERS]>,
}

const ALL: u8 = (1 << LAYERS) - 1;

/// The layers one subscriber's slot asks the publisher for: the layer it is forwarded
/// (`chosen`), and the layers its selector cannot judge yet because their rate has not been
/// measured over a whole second of them flowing (`measured[l]` false).
///
/// A paused layer sends nothing, so a layer nobody asked for before it was measured would
/// never be measured: that subscriber, and every later one, would stay below it for the
/// whole meeting. So a slot also asks for its preferred layer when the selector fell back
/// above it, and for every layer between its choice and its preference that is not
/// measured. A measured layer that is paused is not asked for: its rate is known, and the
/// selector asks for it once the estimate affords it.
///
/// `declared` is how many layers the publisher declared (its rids; 1 without simulcast).
pub fn wanted_mask(
    chosen: Option<u8>,
    preferred: u8,
    declared: usize,
    measured: [bool; LAYERS],
) -> u8 {
    let Some(chosen) = chosen else {
        return 0;
    };
    let top = (declared.clamp(1, LAYERS) - 1) as u8;
    let preferred = preferred.min(top);
    let mut m = mask(Some(chosen));
    if chosen > preferred {
        m |= mask(Some(preferred));
    }
    for l in chosen.saturating_add(1)..=preferred {
        if !measured[usize::from(l)] {
            m |= mask(Some(l));
        }
    }
    m
}

fn mask(layer: Option<u8>) -> u8 {
    // Out-of-range layers mean "the top one" rather than being lost.
    layer.map_or(0, |l| 1 << l.min(LAYERS as u8 - 1))
}

impl Demand {
    pub fn new() -> Demand {
        Demand::default()
    }

    /// `subscriber` is now forwarded `layer` of `track` (`None`: nothing). Edges go to
    /// `changes`.
    pub fn set(
        &mut self,
        subscriber: u64,
        track: u64,
        layer: Option<u8>,
        changes: &mut Vec<LayerChange>,
    ) {
        self.set_layers(subscriber, track, mask(layer), changes);
    }

    /// Like [`Demand::set`] with a bit mask of layers (bit `l` = layer `l`). During a switch
    /// the caller can hold both the layer it forwards and the one it waits for, so the
    /// publisher keeps sending the old layer until the new one's keyframe arrives.
    /// Newly wanted layers are reported before unwanted ones for the same reason.
    pub fn set_layers(
        &mut self,
        subscriber: u64,
        track: u64,
        layers: u8,
        changes: &mut Vec<LayerChange>,
    ) {
        let layers = layers & ALL;
        let list = self.subscribers.entry(subscriber).or_default();
        let pos = list.iter().position(|&(t, _)| t == track);
        let old = pos.map_or(0, |p| list[p].1);
        if old == layers {
            if layers == 0 && list.is_empty() {
                self.subscribers.remove(&subscriber);
            }
            return;
        }
        match (pos, layers) {
            (Some(p), 0) => {
                list.swap_remove(p);
            }
            (Some(p), m) => list[p].1 = m,
            (None, m) => list.push((track, m)),
        }
        if list.is_empty() {
            self.subscribers.remove(&subscriber);
        }
        self.apply(track, layers & !old, old & !layers, changes);
    }

    fn apply(&mut self, track: u64, add: u8, sub: u8, changes: &mut Vec<LayerChange>) {
        let counts = self.counts.entry(track).or_default();
        for (l, count) in counts.iter_mut().enumerate() {
            if add & (1 << l) != 0 {
                *count += 1;
                if *count == 1 {
                    changes.push(change(track, l, true));
                }
            }
        }
        for (l, count) in counts.iter_mut().enumerate() {
            if sub & (1 << l) != 0 && *count > 0 {
                *count -= 1;
                if *count == 0 {
                    changes.push(change(track, l, false));
                }
            }
        }
        if counts.iter().all(|&c| c == 0) {
            self.counts.remove(&track);
        }
    }

    /// The subscriber left: all its layers are released.
    pub fn remove_subscriber(&mut self, subscriber: u64, changes: &mut Vec<LayerChange>) {
        let Some(list) = self.subscribers.remove(&subscriber) else {
            return;
        };
        for (track, layers) in list {
            self.apply(track, 0, layers, changes);
        }
    }

    /// The track was unpublished: forget it without reporting (nobody is left to tell).
    pub fn remove_track(&mut self, track: u64) {
        self.counts.remove(&track);
        self.subscribers.retain(|_, list| {
            list.retain(|&(t, _)| t != track);
            !list.is_empty()
        });
    }

    /// Which layers of `track` have at least one viewer.
    pub fn wanted_layers(&self, track: u64) -> [bool; LAYERS] {
        let c = self.counts.get(&track).copied().unwrap_or_default();
        std::array::from_fn(|l| c[l] > 0)
    }

    /// Number of subscribers forwarded `layer` of `track`.
    pub fn viewers(&self, track: u64, layer: u8) -> u32 {
        self.counts
            .get(&track)
            .and_then(|c| c.get(usize::from(layer)))
            .copied()
            .unwrap_or(0)
    }
}

fn change(track: u64, layer: usize, wanted: bool) -> LayerChange {
    // layer < LAYERS, so it fits.
    LayerChange {
        track,
        layer: layer as u8,
        wanted,
    }
}

//! Splitting one subscriber's bandwidth estimate across its video slots.
//!
//! Only simulcast tracks can be made cheaper; a single-layer camera or screen share costs what
//! it costs. So every slot's lowest layer (and the audio) is reserved first, and what is left
//! buys upgrades, one whole layer step at a time, in priority order. Each slot then gets a
//! budget its [`LayerSelector`](super::layers::LayerSelector) turns into exactly the granted
//! layer, so the selector's 2 s upgrade hold and immediate downgrade still apply.
//!
//! The same pass tells the bandwidth estimator what to aim for: what the granted layers cost
//! plus one more step, so it probes only when an upgrade could follow, instead of padding
//! forever toward layers the link cannot carry.

use super::layers::{LayerConfig, LAYERS};

/// Headroom on the desired bitrate over what the granted layers and the next step need, %.
const DESIRED_HEADROOM_PCT: u64 = 10;

/// One video slot of a subscriber, as the allocator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoSlot {
    /// Bitrate of each layer; `None`: the layer is not there (single-layer tracks have only
    /// layer 0). Same convention as [`LayerSelector::choose`](super::layers::LayerSelector).
    pub rates: [Option<u64>; LAYERS],
    /// The subscriber's preferred layer.
    pub max_layer: u8,
    /// The layer forwarded now, if any.
    pub current: Option<u8>,
    /// Lower goes first when upgrades are handed out; ties go by position in the list.
    pub priority: u32,
}

/// What [`allocate`] decided, one entry per input slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Budget to pass to `LayerSelector::choose`; `None` without an estimate.
    pub budgets: Vec<Option<u64>>,
    /// Layer each slot was granted (`None`: the slot has no layer at all).
    pub layers: Vec<Option<u8>>,
    /// Bitrate to ask the bandwidth estimator for (0: nothing to send).
    pub desired_bps: u64,
}

/// Highest present layer up to `max_layer`, else the lowest above it (as the selector does).
fn ceiling(s: &VideoSlot) -> Option<usize> {
    let top = usize::from(s.max_layer).min(LAYERS - 1);
    (0..=top)
        .rev()
        .find(|&l| s.rates[l].is_some())
        .or_else(|| (top + 1..LAYERS).find(|&l| s.rates[l].is_some()))
}

/// Budget that makes the selector settle on `layer`: its rate when the slot is there or above
/// (kept until the estimate falls below it), its rate plus the upgrade headroom when below,
/// so the selector is willing to go up.
fn budget_for(s: &VideoSlot, layer: usize, lowest: usize, config: &LayerConfig) -> u64 {
    let rate = s.rates[layer].unwrap_or(0);
    let at_or_above = s.current.is_some_and(|c| {
        let c = usize::from(c);
        c >= layer && c < LAYERS && s.rates[c].is_some()
    });
    if layer == lowest || at_or_above {
        rate
    } else {
        // Rounded up: the selector compares `budget * 100 >= rate * pct`.
        rate.saturating_mul(config.upgrade_headroom_pct)
            .div_ceil(100)
    }
}

/// Splits `estimate_bps` (`None`: no bandwidth estimation) across `slots` after reserving
/// `audio_bps`.
///
/// 1. Every slot's lowest layer and the audio are reserved, even beyond the estimate: they
///    cannot be made cheaper.
/// 2. Slots in priority order take the next layer up while the whole step (including the
///    selector's upgrade headroom when the slot is below that layer) fits in what is left; a
///    slot that does not fit lets later slots try their smaller steps.
/// 3. Desired = the granted budgets plus one step for the first slot (in priority order) still
///    below its preferred layer, plus [`DESIRED_HEADROOM_PCT`].
///
/// Without an estimate every slot is granted its preferred layer and the budgets are `None`,
/// so the selectors keep their current layer as before.
pub fn allocate(
    estimate_bps: Option<u64>,
    audio_bps: u64,
    slots: &[VideoSlot],
    config: &LayerConfig,
) -> Allocation {
    let n = slots.len();
    let mut layers: Vec<Option<usize>> = vec![None; n];
    let mut budgets: Vec<u64> = vec![0; n];
    let mut lowest: Vec<usize> = vec![0; n];
    let mut fixed = audio_bps;
    for (i, s) in slots.iter().enumerate() {
        let Some(top) = ceiling(s) else { continue };
        let low = (0..=top).find(|&l| s.rates[l].is_some()).unwrap_or(top);
        lowest[i] = low;
        layers[i] = Some(low);
        budgets[i] = budget_for(s, low, low, config);
        fixed = fixed.saturating_add(budgets[i]);
    }
    let mut left = estimate_bps.map_or(u64::MAX, |e| e.saturating_sub(fixed));

    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (slots[i].priority, i));
    // First slot left below its preferred layer, and what its next step would cost.
    let mut next_step: Option<u64> = None;
    for &i in &order {
        let s = &slots[i];
        let (Some(top), Some(mut at)) = (ceiling(s), layers[i]) else {
            continue;
        };
        while let Some(up) = (at + 1..=top).find(|&l| s.rates[l].is_some()) {
            let want = budget_for(s, up, lowest[i], config);
            let step = want.saturating_sub(budgets[i]);
            if step > left {
                next_step.get_or_insert(step);
                break;
            }
            left -= step;
            budgets[i] = want;
            at = up;
        }
        layers[i] = Some(at);
    }

    let spent = budgets.iter().fold(audio_bps, |a, b| a.saturating_add(*b));
    let desired = spent.saturating_add(next_step.unwrap_or(0));
    let desired = desired.saturating_add(desired.saturating_mul(DESIRED_HEADROOM_PCT) / 100);
    Allocation {
        budgets: budgets
            .iter()
            .zip(&layers)
            .map(|(b, l)| estimate_bps.and(l.map(|_| *b)))
            .collect(),
        // Layers are < LAYERS, so the cast cannot truncate.
        layers: layers.iter().map(|l| l.map(|l| l as u8)).collect(),
        desired_bps: desired,
    }
}

use std::time::{Duration, Instant};

use super::Rng;
use crate::core::alloc::{allocate, Allocation, VideoSlot};
use crate::core::layers::{LayerConfig, LayerSelector, LAYERS};

const K: u64 = 1_000;
const AUDIO: u64 = 3 * 64 * K;
const SIMULCAST: [Option<u64>; LAYERS] = [Some(150 * K), Some(500 * K), Some(1_500 * K)];

fn single(bps: u64) -> [Option<u64>; LAYERS] {
    [Some(bps), None, None]
}

fn slot(rates: [Option<u64>; LAYERS], max_layer: u8, priority: u32) -> VideoSlot {
    VideoSlot {
        rates,
        max_layer,
        current: None,
        priority,
    }
}

/// The "assembly" mix: simulcast presenter (slot 0), screen share, 9 low cameras.
fn assembly() -> Vec<VideoSlot> {
    let mut v = vec![slot(SIMULCAST, 2, 0), slot(single(800 * K), 2, 1)];
    v.extend((0..9).map(|_| slot(single(150 * K), 0, 2)));
    v
}

fn config() -> LayerConfig {
    LayerConfig::default()
}

/// Policy passes every 200 ms for `secs`, each slot's selector fed its allocated budget, as
/// `bind_slots` does. Returns the layers the selectors settled on and the last allocation.
fn run(estimate: Option<u64>, slots: &mut [VideoSlot], secs: u64) -> (Vec<Option<u8>>, Allocation) {
    let t0 = Instant::now();
    let mut sel: Vec<LayerSelector> = slots.iter().map(|_| LayerSelector::default()).collect();
    let mut got = vec![None; slots.len()];
    let mut last = Allocation::default();
    for pass in 0..=secs * 5 {
        let now = t0 + Duration::from_millis(200 * pass);
        last = allocate(estimate, AUDIO, slots, &config());
        for (i, s) in slots.iter_mut().enumerate() {
            got[i] = sel[i].choose(now, last.budgets[i], s.max_layer, &s.rates);
            s.current = got[i];
        }
    }
    (got, last)
}

#[test]
fn assembly_3m_presenter_gets_medium() {
    let mut slots = assembly();
    let a = allocate(Some(3_000 * K), AUDIO, &slots, &config());
    assert!(a.budgets[0].unwrap() >= 500 * K, "{a:?}");
    assert!(a.budgets[0].unwrap() < 1_500 * K, "{a:?}");
    assert_eq!(a.layers[0], Some(1));
    let (got, _) = run(Some(3_000 * K), &mut slots, 3);
    assert_eq!(got[0], Some(1), "presenter");
    assert!(got[1..].iter().all(|l| *l == Some(0)), "{got:?}");
}

#[test]
fn equal_split_would_starve_the_presenter() {
    // What the allocator replaces: 3 Mbit/s over 11 video slots only buys layer q.
    let t0 = Instant::now();
    let mut sel = LayerSelector::default();
    let share = Some(3_000 * K / 11);
    for pass in 0..20 {
        let now = t0 + Duration::from_millis(200 * pass);
        assert_eq!(sel.choose(now, share, 2, &SIMULCAST), Some(0));
    }
}

#[test]
fn assembly_10m_presenter_gets_high() {
    let mut slots = assembly();
    let a = allocate(Some(10_000 * K), AUDIO, &slots, &config());
    assert_eq!(a.layers[0], Some(2));
    assert!(a.budgets[0].unwrap() >= 1_500 * K, "{a:?}");
    let (got, last) = run(Some(10_000 * K), &mut slots, 5);
    assert_eq!(got[0], Some(2), "presenter");
    assert!(got[1..].iter().all(|l| *l == Some(0)), "{got:?}");
    // Everything at its best: no step left to probe for, only the headroom.
    let cost = AUDIO + 1_500 * K + 800 * K + 9 * 150 * K;
    assert_eq!(last.desired_bps, cost + cost / 10);
}

#[test]
fn assembly_1m_keeps_every_fixed_stream() {
    let mut slots = assembly();
    let a = allocate(Some(1_000 * K), AUDIO, &slots, &config());
    assert!(a.layers.iter().all(|l| *l == Some(0)), "{a:?}");
    // Every budget is at least the slot's lowest layer, so nothing is dropped.
    for (s, b) in slots.iter().zip(&a.budgets) {
        assert!(b.unwrap() >= s.rates[0].unwrap(), "{a:?}");
    }
    let (got, last) = run(Some(1_000 * K), &mut slots, 3);
    assert!(got.iter().all(|l| *l == Some(0)), "{got:?}");
    // Probes for exactly one step: the presenter's q -> h (with the selector's headroom).
    let fixed = AUDIO + 150 * K + 800 * K + 9 * 150 * K;
    let step = 575 * K - 150 * K;
    assert_eq!(last.desired_bps, (fixed + step) * 11 / 10);
}

#[test]
fn presenter_drops_at_once_when_estimate_falls() {
    let mut slots = assembly();
    let (got, _) = run(Some(10_000 * K), &mut slots, 5);
    assert_eq!(got[0], Some(2));
    let a = allocate(Some(3_000 * K), AUDIO, &slots, &config());
    assert_eq!(a.layers[0], Some(1));
    let mut sel = LayerSelector::default();
    let now = Instant::now();
    sel.choose(now, Some(10_000 * K), 2, &SIMULCAST);
    assert_eq!(sel.choose(now, a.budgets[0], 2, &SIMULCAST), Some(1));
}

#[test]
fn kept_layer_needs_less_than_an_upgrade() {
    // 2.842 Mbit/s leaves 350 kbit/s after the fixed streams: exactly the q -> h step, but
    // not the selector's 15% upgrade headroom on h.
    let estimate = Some(2_842 * K);
    let mut slots = assembly();
    assert_eq!(
        allocate(estimate, AUDIO, &slots, &config()).layers[0],
        Some(0)
    );
    slots[0].current = Some(1);
    let a = allocate(estimate, AUDIO, &slots, &config());
    assert_eq!(a.layers[0], Some(1));
    assert_eq!(a.budgets[0], Some(500 * K));
}

#[test]
fn priority_first_then_smaller_steps_further_down() {
    let slots = vec![
        slot(SIMULCAST, 2, 5),
        slot(SIMULCAST, 2, 0),
        slot(SIMULCAST, 2, 9),
    ];
    // 1.6 Mbit/s: 1.15 Mbit/s left after the three q layers.
    let a = allocate(Some(1_600 * K), 0, &slots, &config());
    // Priority 0 (slot 1) takes q -> h (425k) but not h -> f (1150k); slot 0 then fits
    // q -> h (425k); slot 2 finds 300k left, not enough.
    assert_eq!(a.layers, vec![Some(1), Some(1), Some(0)], "{a:?}");
    // Desired adds the step of the first slot below its best (slot 1: h -> f).
    let spent = 575 * K + 575 * K + 150 * K;
    assert_eq!(a.desired_bps, (spent + 1_150 * K) * 11 / 10);
}

#[test]
fn no_estimate_no_budgets() {
    let mut slots = assembly();
    slots[0].current = Some(1);
    let a = allocate(None, AUDIO, &slots, &config());
    assert!(a.budgets.iter().all(Option::is_none), "{a:?}");
    assert_eq!(a.layers[0], Some(2));
    let (got, _) = run(None, &mut slots, 3);
    // The selector without an estimate keeps what it has (here: starts low).
    assert!(got.iter().all(|l| *l == Some(0)), "{got:?}");
}

#[test]
fn missing_layers_and_preferences() {
    let slots = vec![
        // Nothing received yet.
        slot([None; LAYERS], 2, 0),
        // Only h and f published, q wanted: the lowest above is used.
        slot([None, Some(500 * K), Some(1_500 * K)], 0, 0),
        // f paused: h is the top.
        slot([Some(150 * K), Some(500 * K), None], 2, 0),
    ];
    let a = allocate(Some(100 * K), 0, &slots, &config());
    assert_eq!(a.layers, vec![None, Some(1), Some(0)]);
    assert_eq!(a.budgets, vec![None, Some(500 * K), Some(150 * K)]);
    let a = allocate(Some(100_000 * K), 0, &slots, &config());
    assert_eq!(a.layers, vec![None, Some(1), Some(1)]);
}

/// Random mixes: the allocation never spends beyond the estimate (past the fixed streams),
/// the desired bitrate is at most the chosen layers plus one step plus headroom, and a higher
/// estimate never lowers the first slot's layer.
#[test]
fn random_mixes_stay_within_bounds() {
    let mut rng = Rng::new(7);
    let up = config().upgrade_headroom_pct;
    for _ in 0..2_000 {
        let n = 1 + rng.below(12) as usize;
        let slots: Vec<VideoSlot> = (0..n)
            .map(|_| {
                let mut rates = [None; LAYERS];
                let mut r = 50 * K + rng.below(300 * K);
                for rate in &mut rates {
                    if rng.chance(80) {
                        *rate = Some(r);
                    }
                    r = r * 2 + rng.below(800 * K);
                }
                VideoSlot {
                    rates,
                    max_layer: rng.below(3) as u8,
                    current: rng.chance(70).then(|| rng.below(3) as u8),
                    priority: rng.below(4) as u32,
                }
            })
            .collect();
        let audio = rng.below(4) * 64 * K;
        let estimate = rng.below(8_000 * K);
        let a = allocate(Some(estimate), audio, &slots, &config());
        let fixed = audio
            + slots
                .iter()
                .zip(&a.layers)
                .map(|(s, l)| l.map_or(0, |_| *s.rates.iter().flatten().next().unwrap()))
                .sum::<u64>();
        let spent = audio + a.budgets.iter().flatten().sum::<u64>();
        assert!(spent <= estimate.max(fixed), "{spent} {estimate} {fixed}");
        // Chosen layers' cost, each with the selector's upgrade headroom at most.
        let chosen = audio
            + slots
                .iter()
                .zip(&a.layers)
                .map(|(s, l)| l.map_or(0, |l| s.rates[l as usize].unwrap()))
                .sum::<u64>();
        let biggest_step = slots
            .iter()
            .zip(&a.layers)
            .filter_map(|(s, l)| {
                let l = (*l)? as usize;
                let next = s.rates[l + 1..].iter().flatten().next()?;
                Some(next - s.rates[l].unwrap())
            })
            .max()
            .unwrap_or(0);
        // Plus one per slot for rounding the headroom up.
        let bound = (chosen + biggest_step) * up / 100 * 110 / 100 + n as u64;
        assert!(a.desired_bps <= bound, "{} > {bound}: {a:?}", a.desired_bps);
        assert!(a.desired_bps >= chosen);
        let more = allocate(Some(estimate * 2), audio, &slots, &config());
        let first = (0..n).min_by_key(|&i| (slots[i].priority, i)).unwrap();
        assert!(more.layers[first] >= a.layers[first], "{a:?} {more:?}");
    }
}

use std::time::{Duration, Instant};

use crate::core::layers::{LayerConfig, LayerSelector, RateMeter};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn near(got: u64, want: u64, pct: u64) -> bool {
    got.abs_diff(want) * 100 <= want * pct
}

#[test]
fn meter_steady_rate() {
    let t0 = Instant::now();
    let mut m = RateMeter::new();
    assert_eq!(m.bps(t0), 0);
    assert_eq!(m.rate(t0), None);
    // 1000 bytes every 10 ms = 800 kbit/s.
    for i in 0..200 {
        m.add(t0 + ms(10 * i), 1000);
    }
    let now = t0 + ms(1995);
    assert!(near(m.bps(now), 800_000, 3), "{}", m.bps(now));
}

#[test]
fn meter_young_is_not_underreported() {
    let t0 = Instant::now();
    let mut m = RateMeter::new();
    for i in 0..30 {
        m.add(t0 + ms(10 * i), 1000);
    }
    let bps = m.bps(t0 + ms(295));
    assert!(near(bps, 800_000, 5), "{bps}");
    // A single packet right at the start is not extrapolated to infinity.
    let mut one = RateMeter::new();
    one.add(t0, 1000);
    assert_eq!(one.bps(t0), 80_000);
}

#[test]
fn meter_forgets_after_a_second() {
    let t0 = Instant::now();
    let mut m = RateMeter::new();
    for i in 0..50 {
        m.add(t0 + ms(10 * i), 1000);
    }
    assert!(m.rate(t0 + ms(1200)).is_some());
    assert_eq!(m.rate(t0 + ms(1500)), None);
    // Long silence then traffic again: only the new traffic counts.
    let t1 = t0 + Duration::from_secs(60);
    for i in 0..100 {
        m.add(t1 + ms(10 * i), 500);
    }
    assert!(near(m.bps(t1 + ms(999)), 400_000, 3));
    // Caller handing an older `now` is tolerated.
    m.add(t0, 10);
    let bps = m.bps(t0);
    assert!((300_000..500_000).contains(&bps), "{bps}");
}

const RATES: [Option<u64>; 3] = [Some(150_000), Some(500_000), Some(1_500_000)];

#[test]
fn no_estimate_starts_low() {
    let t = Instant::now();
    let mut s = LayerSelector::new(LayerConfig::default());
    assert_eq!(s.choose(t, None, 2, &RATES), Some(0));
    assert_eq!(s.choose(t, None, 2, &[None, Some(1), Some(2)]), Some(1));
    assert_eq!(s.choose(t, None, 2, &[None; 3]), None);
    assert_eq!(s.current(), None);
}

#[test]
fn missing_layers_fall_back() {
    let t = Instant::now();
    let mut s = LayerSelector::new(LayerConfig::default());
    // Preferred layer 1 missing, nothing below: the lowest above.
    assert_eq!(s.choose(t, None, 1, &[None, None, Some(9)]), Some(2));
    // Highest below the missing preferred one, with plenty of bandwidth.
    let rates = [Some(100), Some(200), None];
    assert_eq!(s.choose(t, Some(10_000_000), 2, &rates), Some(1));
    // max_layer beyond the range is the top layer.
    let mut s = LayerSelector::new(LayerConfig::default());
    assert_eq!(s.choose(t, Some(10_000_000), 9, &RATES), Some(2));
}

#[test]
fn upgrade_waits_for_stable_headroom() {
    let t0 = Instant::now();
    let mut s = LayerSelector::new(LayerConfig::default());
    assert_eq!(s.choose(t0, None, 2, &RATES), Some(0));
    assert_eq!(s.choose(t0, Some(3_000_000), 2, &RATES), Some(0));
    assert_eq!(s.choose(t0 + ms(1999), Some(3_000_000), 2, &RATES), Some(0));
    assert_eq!(s.choose(t0 + ms(2000), Some(3_000_000), 2, &RATES), Some(2));
}

#[test]
fn upgrade_needs_headroom_and_dips_restart_the_hold() {
    let t0 = Instant::now();
    let mut s = LayerSelector::new(LayerConfig::default());
    s.choose(t0, None, 2, &RATES);
    // 1.6 Mbit/s carries layer 2 (1.5M) but without 15 % headroom: only layer 1 qualifies.
    assert_eq!(s.choose(t0, Some(1_600_000), 2, &RATES), Some(0));
    assert_eq!(s.choose(t0 + ms(1500), Some(3_000_000), 2, &RATES), Some(0));
    assert_eq!(s.choose(t0 + ms(2000), Some(3_000_000), 2, &RATES), Some(1));
    // Layer 2's hold restarts after the switch.
    assert_eq!(s.choose(t0 + ms(3000), Some(3_000_000), 2, &RATES), Some(1));
    assert_eq!(s.choose(t0 + ms(4999), Some(3_000_000), 2, &RATES), Some(1));
    assert_eq!(s.choose(t0 + ms(5000), Some(3_000_000), 2, &RATES), Some(2));
    // A dip below the headroom (not enough to downgrade) restarts the hold.
    let mut s = LayerSelector::new(LayerConfig::default());
    s.choose(t0, None, 1, &RATES);
    s.choose(t0, Some(1_000_000), 1, &RATES);
    s.choose(t0 + ms(1000), Some(560_000), 1, &RATES); // below 575k: hold restarts
    assert_eq!(s.choose(t0 + ms(2500), Some(1_000_000), 1, &RATES), Some(0));
    assert_eq!(s.choose(t0 + ms(3000), Some(1_000_000), 1, &RATES), Some(0));
    assert_eq!(s.choose(t0 + ms(4499), Some(1_000_000), 1, &RATES), Some(0));
    assert_eq!(s.choose(t0 + ms(4500), Some(1_000_000), 1, &RATES), Some(1));
}

#[test]
fn downgrade_is_immediate() {
    let t0 = Instant::now();
    let mut s = LayerSelector::new(LayerConfig::default());
    assert_eq!(s.choose(t0, Some(10_000_000), 2, &RATES), Some(2));
    // 95 % of 1.5M is 1.425M.
    assert_eq!(s.choose(t0, Some(1_430_000), 2, &RATES), Some(2));
    assert_eq!(s.choose(t0, Some(1_400_000), 2, &RATES), Some(1));
    // Far below everything: the lowest layer, never none.
    assert_eq!(s.choose(t0, Some(10_000), 2, &RATES), Some(0));
}

#[test]
fn preference_and_availability_changes_apply_at_once() {
    let t0 = Instant::now();
    let mut s = LayerSelector::new(LayerConfig::default());
    assert_eq!(s.choose(t0, Some(10_000_000), 2, &RATES), Some(2));
    assert_eq!(s.choose(t0, Some(10_000_000), 0, &RATES), Some(0));
    assert_eq!(s.choose(t0, Some(10_000_000), 2, &RATES), Some(0));
    assert_eq!(
        s.choose(t0 + ms(2000), Some(10_000_000), 2, &RATES),
        Some(2)
    );
    // Publisher stopped sending layer 2.
    let rates = [RATES[0], RATES[1], None];
    assert_eq!(
        s.choose(t0 + ms(2001), Some(10_000_000), 2, &rates),
        Some(1)
    );
    // Estimate too small for anything that remains: lowest.
    let rates = [None, RATES[1], None];
    let mut s = LayerSelector::new(LayerConfig::default());
    assert_eq!(s.choose(t0, Some(1), 2, &rates), Some(1));
}

#[test]
fn a_stopped_layer_keeps_no_emptying_window_as_its_rate() {
    let t0 = Instant::now();
    let mut m = RateMeter::new();
    // 1000 bytes every 10 ms for 2 s (800 kbit/s), then the publisher pauses the layer.
    for i in 0..200 {
        m.add(t0 + ms(10 * i), 1000);
    }
    let last = t0 + ms(1990);
    let flowing = m.flowing_rate(last + ms(50)).expect("still flowing");
    assert!(near(flowing, 800_000, 10), "{flowing}");
    // Half a second later the window is half empty: `rate` reports it, `flowing_rate` not.
    let half = m.rate(last + ms(500)).expect("within the second");
    assert!(half < 500_000, "{half}");
    assert_eq!(m.flowing_rate(last + ms(250)), None);
    assert_eq!(m.flowing_rate(last + ms(500)), None);
    // Flowing again: measured again.
    for i in 0..20 {
        m.add(last + ms(3000 + 10 * i), 1000);
    }
    assert!(m.flowing_rate(last + ms(3195)).is_some());
}

#[test]
fn a_rate_settles_only_after_a_whole_second_of_one_run() {
    let t0 = Instant::now();
    let mut m = RateMeter::new();
    // A layer's first packets: a rate, but not a settled one.
    for i in 0..50 {
        m.add(t0 + ms(10 * i), 1000);
    }
    assert!(m.flowing_rate(t0 + ms(495)).is_some());
    assert_eq!(m.settled_rate(t0 + ms(495)), None);
    for i in 50..150 {
        m.add(t0 + ms(10 * i), 1000);
    }
    let settled = m.settled_rate(t0 + ms(1495)).expect("a second of one run");
    assert!(near(settled, 800_000, 5), "{settled}");
    // Paused for 3 s, then resumed: the new run starts over.
    let t1 = t0 + ms(4500);
    for i in 0..30 {
        m.add(t1 + ms(10 * i), 1000);
    }
    assert_eq!(m.settled_rate(t1 + ms(295)), None);
    for i in 30..110 {
        m.add(t1 + ms(10 * i), 1000);
    }
    assert!(m.settled_rate(t1 + ms(1095)).is_some());
}

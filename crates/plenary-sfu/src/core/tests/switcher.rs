use std::time::{Duration, Instant};

use crate::core::switcher::{Incoming, Switcher, Verdict};

const A: u32 = 0xaaaa;
const B: u32 = 0xbbbb;

fn pkt(source: u32, seq: u64, ts: u32, key: bool) -> Incoming {
    Incoming {
        source,
        seq,
        ts,
        keyframe_start: key,
        marker: false,
    }
}

fn fwd(v: Verdict) -> (u64, u32) {
    match v {
        Verdict::Forward { seq, ts, .. } => (seq, ts),
        Verdict::Drop => panic!("dropped"),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn nothing_before_first_switch() {
    let t = Instant::now();
    let mut s = Switcher::new(90_000, true);
    assert_eq!(s.on_packet(t, &pkt(A, 10, 0, true)), Verdict::Drop);
    s.request(Some(A));
    assert_eq!(s.pending(), Some(A));
    assert_eq!(s.current(), None);
    assert_eq!(s.on_packet(t, &pkt(A, 11, 0, false)), Verdict::Drop);
    assert_eq!(
        s.on_packet(t, &pkt(A, 12, 3000, true)),
        Verdict::Forward {
            seq: 1,
            ts: 3000,
            switched: true
        }
    );
    assert_eq!(s.current(), Some(A));
    assert_eq!(s.pending(), None);
    assert_eq!(
        s.on_packet(t, &pkt(A, 13, 3000, false)),
        Verdict::Forward {
            seq: 2,
            ts: 3000,
            switched: false
        }
    );
}

#[test]
fn gaps_preserved_and_old_packets_dropped() {
    let t = Instant::now();
    let mut s = Switcher::new(90_000, true);
    s.request(Some(A));
    assert_eq!(fwd(s.on_packet(t, &pkt(A, 100, 0, true))).0, 1);
    assert_eq!(fwd(s.on_packet(t, &pkt(A, 103, 0, false))).0, 4);
    // Reordered packet after the switch point keeps its place, so a NACK maps back.
    assert_eq!(fwd(s.on_packet(t, &pkt(A, 101, 0, false))).0, 2);
    // Before the switch point: dropped.
    assert_eq!(s.on_packet(t, &pkt(A, 99, 0, false)), Verdict::Drop);
}

#[test]
fn video_switch_waits_for_keyframe_and_stays_continuous() {
    let t0 = Instant::now();
    let mut s = Switcher::new(90_000, true);
    s.request(Some(A));
    fwd(s.on_packet(t0, &pkt(A, 500, 10_000, true)));
    fwd(s.on_packet(t0, &pkt(A, 501, 10_000, false)));
    s.request(Some(B));
    assert_eq!(s.pending(), Some(B));
    // B's delta frames are dropped while A keeps flowing.
    assert_eq!(s.on_packet(t0, &pkt(B, 7000, 777, false)), Verdict::Drop);
    let t1 = t0 + ms(33);
    assert_eq!(
        fwd(s.on_packet(t1, &pkt(A, 502, 12_970, false))),
        (3, 12_970)
    );
    let t2 = t1 + ms(10);
    let v = s.on_packet(t2, &pkt(B, 7001, 900_000, true));
    assert_eq!(
        v,
        Verdict::Forward {
            seq: 4,
            ts: 12_970 + 900,
            switched: true
        }
    );
    assert_eq!(s.current(), Some(B));
    assert_eq!(s.pending(), None);
    assert_eq!(
        fwd(s.on_packet(t2, &pkt(B, 7002, 903_000, false))),
        (5, 16_870)
    );
    // A is gone now, even its keyframes.
    assert_eq!(s.on_packet(t2, &pkt(A, 503, 15_940, true)), Verdict::Drop);
    // B's packets from before its keyframe are dropped.
    assert_eq!(s.on_packet(t2, &pkt(B, 7000, 777, false)), Verdict::Drop);
}

#[test]
fn request_back_cancels_pending() {
    let t = Instant::now();
    let mut s = Switcher::new(90_000, true);
    s.request(Some(A));
    fwd(s.on_packet(t, &pkt(A, 1, 0, true)));
    s.request(Some(B));
    s.request(Some(A));
    assert_eq!(s.pending(), None);
    assert_eq!(s.on_packet(t, &pkt(B, 9, 0, true)), Verdict::Drop);
    assert_eq!(fwd(s.on_packet(t, &pkt(A, 2, 0, false))).0, 2);
}

#[test]
fn audio_switches_at_once() {
    let t0 = Instant::now();
    let mut s = Switcher::new(48_000, false);
    s.request(Some(A));
    assert_eq!(s.pending(), None);
    assert_eq!(s.current(), Some(A));
    assert_eq!(fwd(s.on_packet(t0, &pkt(A, 40, 1000, false))), (1, 1000));
    s.request(Some(B));
    assert_eq!(s.current(), Some(B));
    assert_eq!(s.pending(), None);
    assert_eq!(
        s.on_packet(t0 + ms(10), &pkt(A, 41, 1960, false)),
        Verdict::Drop
    );
    let v = s.on_packet(t0 + ms(20), &pkt(B, 9000, 5, false));
    assert_eq!(
        v,
        Verdict::Forward {
            seq: 2,
            ts: 1960,
            switched: true
        }
    );
}

#[test]
fn pause_and_resume() {
    let t0 = Instant::now();
    let mut s = Switcher::new(90_000, true);
    s.request(Some(A));
    fwd(s.on_packet(t0, &pkt(A, 10, 0, true)));
    s.request(None);
    assert_eq!(s.current(), None);
    assert_eq!(s.pending(), None);
    assert_eq!(s.on_packet(t0, &pkt(A, 11, 0, true)), Verdict::Drop);
    s.request(Some(A));
    assert_eq!(s.pending(), Some(A));
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(s.on_packet(t1, &pkt(A, 12, 0, false)), Verdict::Drop);
    // Paused time shows in the timestamps; sequence numbers stay continuous.
    assert_eq!(fwd(s.on_packet(t1, &pkt(A, 300, 9, true))), (2, 450_000));
}

#[test]
fn timestamps_wrap() {
    let t0 = Instant::now();
    let mut s = Switcher::new(90_000, true).with_start(65_535, Some(u32::MAX - 10));
    s.request(Some(A));
    assert_eq!(
        fwd(s.on_packet(t0, &pkt(A, 1, 5, true))),
        (65_535, u32::MAX - 10)
    );
    assert_eq!(fwd(s.on_packet(t0, &pkt(A, 2, 25, false))), (65_536, 9));
    s.request(Some(B));
    // No time passed: still a strictly later timestamp.
    assert_eq!(
        fwd(s.on_packet(t0, &pkt(B, u64::from(u16::MAX), u32::MAX, true))),
        (65_537, 10)
    );
    assert_eq!(
        fwd(s.on_packet(t0, &pkt(B, 65_536, 2, false))),
        (65_538, 13)
    );
}

#[test]
fn switch_back_and_forth() {
    let mut t = Instant::now();
    let mut s = Switcher::new(90_000, true);
    let mut expect = 1;
    for round in 0..6u64 {
        let src = if round % 2 == 0 { A } else { B };
        s.request(Some(src));
        let base = 1000 * round;
        let (seq, _) = fwd(s.on_packet(t, &pkt(src, base, 0, true)));
        assert_eq!(seq, expect);
        for k in 1..5 {
            t += ms(10);
            let (seq, _) = fwd(s.on_packet(t, &pkt(src, base + k, 0, false)));
            assert_eq!(seq, expect + k);
        }
        expect += 5;
    }
}

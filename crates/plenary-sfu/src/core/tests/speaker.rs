use std::time::{Duration, Instant};

use crate::core::speaker::{last_n, SpeakerConfig, SpeakerDetector};

/// `who` sends 20 ms audio packets at `level` (RFC 6464) during `[from, to)` ms.
#[derive(Clone, Copy)]
struct Talk {
    who: u64,
    from: u64,
    to: u64,
    level: u8,
}

fn talk(who: u64, from: u64, to: u64, level: u8) -> Talk {
    Talk {
        who,
        from,
        to,
        level,
    }
}

/// Runs the talks until `until` ms, ticking every packet interval; returns (ms, new speaker)
/// for each change and checks the hold between changes.
fn run(det: &mut SpeakerDetector, t0: Instant, talks: &[Talk], until: u64) -> Vec<(u64, u64)> {
    let mut changes: Vec<(u64, u64)> = Vec::new();
    for ms in (0..until).step_by(20) {
        let now = t0 + Duration::from_millis(ms);
        for t in talks.iter().filter(|t| (t.from..t.to).contains(&ms)) {
            det.on_level(now, t.who, t.level, Some(true));
        }
        if let Some(change) = det.tick(now) {
            let who = change.expect("nobody removed, so a change names a speaker");
            if let Some(&(last, _)) = changes.last() {
                assert!(ms - last >= 1000, "switched after {} ms", ms - last);
            }
            changes.push((ms, who));
        }
    }
    changes
}

fn detector() -> SpeakerDetector {
    SpeakerDetector::new(SpeakerConfig::default())
}

#[test]
fn first_speaker_after_sustained_speech() {
    let mut d = detector();
    let changes = run(&mut d, Instant::now(), &[talk(1, 0, 3000, 30)], 3000);
    assert_eq!(changes, vec![(400, 1)]);
    assert_eq!(d.active(), Some(1));
}

#[test]
fn speech_with_short_pauses_still_counts() {
    let mut d = detector();
    let talks = [
        talk(1, 0, 200, 30),
        talk(1, 400, 600, 30),
        talk(1, 800, 1000, 30),
    ];
    let changes = run(&mut d, Instant::now(), &talks, 1500);
    assert_eq!(changes, vec![(400, 1)]);
}

#[test]
fn muted_and_unvoiced_never_speak() {
    let t0 = Instant::now();
    let mut d = detector();
    for ms in (0..5000).step_by(20) {
        let now = t0 + Duration::from_millis(ms);
        d.on_level(now, 1, 127, None); // muted, sending silence
        d.on_level(now, 2, 10, Some(false)); // loud, but the encoder says no voice
        d.on_level(now, 3, 200, Some(true)); // out of range: treated as silence
        assert_eq!(d.tick(now), None);
    }
    // Participant 4 is muted with DTX: it sends nothing at all.
    assert!(d.is_empty());
    let mut out = vec![99];
    d.loudest(t0 + Duration::from_secs(5), 3, &mut out);
    assert!(out.is_empty());
}

#[test]
fn a_cough_does_not_steal() {
    let mut d = detector();
    let talks = [
        talk(1, 0, 3000, 40),
        talk(2, 2000, 2240, 0), // loud cough while 1 talks
        talk(2, 4000, 4260, 0), // and after 1 stopped
    ];
    let changes = run(&mut d, Instant::now(), &talks, 6000);
    assert_eq!(changes, vec![(400, 1)]);
}

#[test]
fn next_speaker_takes_over_within_a_second() {
    let mut d = detector();
    let talks = [talk(1, 0, 3000, 30), talk(2, 3200, 6000, 30)];
    let changes = run(&mut d, Instant::now(), &talks, 6000);
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[1].1, 2);
    assert!(changes[1].0 - 3200 <= 1000, "{changes:?}");
}

#[test]
fn louder_interrupter_wins_equal_one_does_not() {
    let mut d = detector();
    let talks = [talk(1, 0, 6000, 40), talk(2, 3000, 6000, 20)];
    let changes = run(&mut d, Instant::now(), &talks, 6000);
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[1].1, 2);
    assert!(changes[1].0 <= 4000, "{changes:?}");

    let mut d = detector();
    let talks = [talk(1, 0, 6000, 30), talk(2, 2000, 6000, 30)];
    assert_eq!(run(&mut d, Instant::now(), &talks, 6000), vec![(400, 1)]);
}

#[test]
fn hold_limits_ping_pong() {
    let mut d = detector();
    let talks = [
        talk(1, 0, 2000, 30),
        talk(2, 2000, 2600, 30),
        talk(1, 2600, 4000, 30),
    ];
    // `run` asserts at least a second between changes.
    let changes = run(&mut d, Instant::now(), &talks, 4000);
    let who: Vec<u64> = changes.iter().map(|c| c.1).collect();
    assert_eq!(who, vec![1, 2, 1]);
}

#[test]
fn removing_the_speaker() {
    let t0 = Instant::now();
    let mut d = detector();
    run(&mut d, t0, &[talk(1, 0, 1000, 30)], 1000);
    assert_eq!(d.active(), Some(1));
    d.remove(1);
    assert_eq!(d.active(), None);
    assert_eq!(d.tick(t0 + Duration::from_millis(1000)), Some(None));
    assert_eq!(d.tick(t0 + Duration::from_millis(1020)), None);
    assert!(d.is_empty());

    // With someone else talking, the replacement comes at once.
    let mut d = detector();
    let talks = [talk(1, 0, 3000, 20), talk(2, 500, 3000, 40)];
    run(&mut d, t0, &talks, 2000);
    assert_eq!(d.active(), Some(1));
    d.remove(1);
    d.remove(77); // unknown: no effect
    assert_eq!(d.tick(t0 + Duration::from_millis(2000)), Some(Some(2)));
    assert_eq!(d.len(), 1);
}

#[test]
fn loudest_k() {
    let t0 = Instant::now();
    let mut d = detector();
    let talks = [
        talk(1, 0, 1000, 10),
        talk(2, 0, 1000, 30),
        talk(3, 0, 1000, 50),
        talk(4, 0, 1000, 30),
        talk(5, 0, 1000, 127),
    ];
    run(&mut d, t0, &talks, 1000);
    let now = t0 + Duration::from_millis(1000);
    let mut out = Vec::with_capacity(8);
    d.loudest(now, 2, &mut out);
    assert_eq!(out, vec![1, 2]);
    d.loudest(now, 10, &mut out);
    assert_eq!(out, vec![1, 2, 4, 3]);
    d.loudest(now, 0, &mut out);
    assert!(out.is_empty());
    // Everyone went quiet.
    d.loudest(now + Duration::from_millis(500), 3, &mut out);
    assert!(out.is_empty());
}

#[test]
fn ranking_by_recent_speech() {
    let t0 = Instant::now();
    let mut d = detector();
    let talks = [
        talk(1, 0, 1000, 30),
        talk(2, 2000, 3000, 30),
        talk(3, 3500, 3700, 30), // a cough: not ranked
        talk(4, 4000, 4500, 30),
    ];
    run(&mut d, t0, &talks, 5000);
    let mut out = Vec::new();
    d.ranking(&mut out);
    assert_eq!(out, vec![4, 2, 1]);
    d.remove(2);
    d.ranking(&mut out);
    assert_eq!(out, vec![4, 1]);
}

#[test]
fn table_is_bounded() {
    let t0 = Instant::now();
    let mut d = SpeakerDetector::new(SpeakerConfig {
        max_participants: 2,
        ..SpeakerConfig::default()
    });
    for p in 1..=5 {
        d.on_level(t0, p, 20, None);
    }
    assert_eq!(d.len(), 2);
    d.remove(1);
    d.on_level(t0, 5, 20, None);
    assert_eq!(d.len(), 2);
    let mut out = Vec::new();
    d.loudest(t0, 5, &mut out);
    assert_eq!(out, vec![2, 5]);
}

#[test]
fn last_n_order() {
    let mut out = vec![42];
    let ranking = [5, 3, 9, 1];
    let video = [1, 2, 3, 4, 5];
    last_n(&ranking, &video, 3, &[2], &mut out);
    assert_eq!(out, vec![2, 5, 3]);
    // Speaker also ranked first: no duplicate.
    last_n(&ranking, &video, 3, &[5], &mut out);
    assert_eq!(out, vec![5, 3, 1]);
    // Speaker without video, short ranking: filled from the candidates in order.
    last_n(&[3], &video, 4, &[9], &mut out);
    assert_eq!(out, vec![3, 1, 2, 4]);
    last_n(&ranking, &video, 0, &[5], &mut out);
    assert!(out.is_empty());
    last_n(&ranking, &[], 3, &[5], &mut out);
    assert!(out.is_empty());
    last_n(&[], &[7, 7, 8], 5, &[], &mut out);
    assert_eq!(out, vec![7, 8]);
}

#[test]
fn last_n_keeps_a_presenter_who_has_not_spoken() {
    // Ten cameras, last-N of 9: the presenter (1) has not spoken and would be the one cut.
    let cameras: Vec<u64> = (1..=10).collect();
    let ranking = [2, 3, 4, 5, 6, 7, 8, 9, 10];
    let mut out = Vec::new();
    last_n(&ranking, &cameras, 9, &[4], &mut out);
    assert!(!out.contains(&1));
    // Kept after the active speaker (4) because it shares a screen.
    last_n(&ranking, &cameras, 9, &[4, 1], &mut out);
    assert_eq!(out, vec![4, 1, 2, 3, 5, 6, 7, 8, 9]);
}

//! Property tests: random inputs from a seeded generator, so failures replay exactly.

use std::time::{Duration, Instant};

use super::Rng;
use crate::core::codec::{is_keyframe_start, vp8_picture_id, Codec};
use crate::core::switcher::{Incoming, Switcher, Verdict};

const CODECS: [Codec; 4] = [Codec::Vp8, Codec::H264, Codec::Opus, Codec::Other];

fn check_codec(p: &[u8]) {
    for c in CODECS {
        let key = is_keyframe_start(c, p);
        match c {
            Codec::Vp8 if key => assert!(p.len() >= 2 && p[0] & 0x17 == 0x10, "{p:02x?}"),
            Codec::H264 if key => assert!(matches!(p[0] & 0x1f, 5 | 7 | 24 | 28), "{p:02x?}"),
            _ => {}
        }
    }
    if let Some((pid, long, _)) = vp8_picture_id(p) {
        assert!(pid < if long { 1 << 15 } else { 1 << 7 });
    }
}

#[test]
fn codec_short_inputs_exhaustive() {
    check_codec(&[]);
    for a in 0..=255u8 {
        check_codec(&[a]);
        for b in 0..=255u8 {
            check_codec(&[a, b]);
        }
    }
}

#[test]
fn codec_random_inputs_never_panic() {
    // First bytes that reach the deeper parsing paths.
    const LEADS: [u8; 8] = [0x10, 0x90, 0xf0, 0x78, 0x7c, 0x65, 0x67, 0x18];
    let mut rng = Rng::new(0x5eed_c0dec);
    let mut buf = [0u8; 48];
    let mut keys = 0;
    for _ in 0..200_000 {
        let len = rng.below(buf.len() as u64 + 1) as usize;
        for b in buf.iter_mut().take(len) {
            *b = rng.next() as u8;
        }
        if len > 0 && rng.chance(50) {
            buf[0] = LEADS[rng.below(LEADS.len() as u64) as usize];
        }
        check_codec(&buf[..len]);
        keys += usize::from(is_keyframe_start(Codec::H264, &buf[..len]));
    }
    // The generator does reach the accepting paths.
    assert!(keys > 100);
}

/// One source's in-order stream.
struct Source {
    ssrc: u32,
    seq: u64,
    ts: u32,
}

fn run_switcher(seed: u64, video: bool, reorder: bool) {
    let mut rng = Rng::new(seed);
    let mut now = Instant::now();
    let clock = if video { 90_000 } else { 48_000 };
    let start = rng.next() as u16;
    let mut s = Switcher::new(clock, video).with_start(start, None);
    let mut sources: Vec<Source> = (0..3)
        .map(|i| Source {
            ssrc: 100 + i,
            seq: rng.below(1 << 40),
            ts: rng.next() as u32,
        })
        .collect();
    let mut last: Option<(u64, u32, u64, u32)> = None; // out seq, out ts, in seq, source
    let mut requested = false;
    let mut forwarded = 0;
    for _ in 0..20_000 {
        now += Duration::from_millis(rng.below(30));
        if rng.chance(2) {
            let pick = rng.below(4);
            let target = (pick < 3).then(|| sources[pick as usize].ssrc);
            s.request(target);
            requested |= target.is_some();
            if !video {
                assert_eq!(s.pending(), None);
            }
            continue;
        }
        let src = &mut sources[rng.below(3) as usize];
        src.seq += if rng.chance(5) { rng.below(50) + 1 } else { 1 };
        src.ts = src.ts.wrapping_add(rng.below(3000) as u32);
        let mut p = Incoming {
            source: src.ssrc,
            seq: src.seq,
            ts: src.ts,
            keyframe_start: rng.chance(10),
            marker: rng.chance(30),
        };
        if reorder && rng.chance(20) {
            p.seq = p.seq.saturating_sub(rng.below(20));
        }
        let v = s.on_packet(now, &p);
        let Verdict::Forward { seq, ts, switched } = v else {
            continue;
        };
        forwarded += 1;
        assert!(requested, "forwarded before any request");
        assert_eq!(s.current(), Some(p.source));
        assert!(!switched || !video || p.keyframe_start);
        match last {
            None => assert_eq!(seq, u64::from(start)),
            Some((lseq, lts, lin, lsrc)) if !reorder => {
                assert!(seq > lseq, "seq went back: {lseq} -> {seq}");
                if switched {
                    assert_eq!(seq, lseq + 1);
                    let dts = ts.wrapping_sub(lts);
                    assert!((1..1 << 31).contains(&dts), "ts step {dts}");
                } else {
                    assert_eq!(lsrc, p.source);
                    assert_eq!(seq - lseq, p.seq - lin, "gap not preserved");
                }
            }
            Some(_) => {}
        }
        if last.is_none_or(|l| seq > l.0) {
            last = Some((seq, ts, p.seq, p.source));
        }
    }
    assert!(forwarded > 1000, "only {forwarded} forwarded");
}

#[test]
fn switcher_in_order_output_is_monotonic() {
    for seed in 1..=20 {
        run_switcher(seed, true, false);
        run_switcher(seed, false, false);
    }
}

#[test]
fn switcher_reordered_input_never_panics() {
    for seed in 100..120 {
        run_switcher(seed, true, true);
        run_switcher(seed, false, true);
    }
}

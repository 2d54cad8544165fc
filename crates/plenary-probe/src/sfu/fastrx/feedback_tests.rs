//! The feedback writers byte for byte against the layouts of RFC 4585 and the TWCC draft,
//! then read back by str0m's own RTCP parser (what the SFU runs).

use super::*;
use std::time::{Duration, Instant};
use str0m::rtp::rtcp::Rtcp;

fn parse(bytes: &[u8]) -> Rtcp {
    Rtcp::try_from(bytes).expect("str0m parses it")
}

#[test]
fn pli_layout() {
    let mut out = [0u8; 16];
    assert_eq!(write_pli(&mut out, 0x0102_0304, 0xa0b0_c0d0), Some(12));
    assert_eq!(
        out[..12],
        [0x81, 206, 0, 2, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0]
    );
    let Rtcp::Pli(p) = parse(&out[..12]) else {
        panic!("not a PLI")
    };
    assert_eq!((*p.sender_ssrc, *p.ssrc), (0x0102_0304, 0xa0b0_c0d0));
    assert_eq!(write_pli(&mut out[..11], 1, 2), None);
}

#[test]
fn rrtr_layout_and_the_dlrr_answer() {
    let mut out = [0u8; 20];
    let ntp = 0xe5a1_0203_0405_0607u64;
    assert_eq!(write_rrtr(&mut out, 0xfeed, ntp), Some(20));
    #[rustfmt::skip]
    let expected = [
        0x80, 207, 0, 4, 0, 0, 0xfe, 0xed,
        4, 0, 0, 2,                         // BT=4, block length 2 words
        0xe5, 0xa1, 2, 3, 4, 5, 6, 7,
    ];
    assert_eq!(out, expected);
    let Rtcp::ExtendedReport(xr) = parse(&out) else {
        panic!("not XR")
    };
    assert_eq!(*xr.ssrc, 0xfeed);
    // A server's answer: an SR (skipped), then an XR with a DLRR block of two items, the
    // second for us. LRR is the middle 32 bits of our NTP; DLRR is 0.25 s.
    let lrr = (ntp >> 16) as u32;
    let mut rtcp = vec![0x80, 200, 0, 6];
    rtcp.extend_from_slice(&[0; 24]);
    rtcp.extend_from_slice(&[0x80, 207, 0, 8, 0, 0, 0, 9]);
    rtcp.extend_from_slice(&[5, 0, 0, 6]);
    for (ssrc, lrr) in [(0x1234u32, 1u32), (0xfeed, lrr)] {
        rtcp.extend_from_slice(&ssrc.to_be_bytes());
        rtcp.extend_from_slice(&lrr.to_be_bytes());
        rtcp.extend_from_slice(&16_384u32.to_be_bytes());
    }
    assert_eq!(find_dlrr(&rtcp, 0xfeed), Some((lrr, 16_384)));
    assert_eq!(find_dlrr(&rtcp, 0x9999), None);
    // Received 0.3 s after the RRTR went out: 50 ms round trip.
    let now = ntp + (3 << 32) / 10;
    let rtt = rtt_us(now, lrr, 16_384).unwrap();
    assert!((rtt as i64 - 50_000).abs() < 100, "{rtt}");
    assert_eq!(rtt_us(ntp, lrr, 16_384), None, "answer before the question");
}

#[test]
fn nack_packs_pid_and_bitmask() {
    let mut out = [0u8; 64];
    // 101 and 105 ride on 100's mask; 117 is 17 after 100, so it starts a new pair; the
    // sequence number wraps between 65535 and 65536.
    let missing = [100, 101, 105, 117, 118, 65_535, 65_536];
    let (n, covered) = write_nack(&mut out, 7, 9, &missing);
    assert_eq!(covered, missing.len());
    assert_eq!(n, 12 + 3 * 4);
    #[rustfmt::skip]
    let expected = [
        0x81, 205, 0, 5, 0, 0, 0, 7, 0, 0, 0, 9,
        0, 100, 0x00, 0x11,
        0, 117, 0x00, 0x01,
        0xff, 0xff, 0x00, 0x01,
    ];
    assert_eq!(out[..n], expected);
    let Rtcp::Nack(nack) = parse(&out[..n]) else {
        panic!("not a NACK")
    };
    assert_eq!(*nack.ssrc, 9);
    let pairs: Vec<(u16, u16)> = nack.reports.iter().map(|e| (e.pid, e.blp)).collect();
    assert_eq!(pairs, [(100, 0x11), (117, 1), (65_535, 1)]);
}

#[test]
fn nack_that_does_not_fit_covers_what_it_can() {
    let mut out = [0u8; 19];
    let missing = [10, 40, 70];
    let (n, covered) = write_nack(&mut out, 1, 2, &missing);
    assert_eq!((n, covered), (16, 1));
    assert_eq!(out[2..4], [0, 3]);
}

/// Three received 1 ms apart from 128.1 ms, one lost, one 300 ms later, one reordered
/// 2 ms before its predecessor: every chunk and delta kind the writer uses.
#[test]
fn twcc_layout_is_byte_exact() {
    let base = 128_100u64;
    let arrivals = [
        Some(base),
        Some(base + 1_000),
        Some(base + 2_000),
        None,
        Some(base + 302_000),
        Some(base + 300_000),
    ];
    let mut w = TwccWriter::default();
    let mut out = [0u8; 128];
    let r = TwccReport {
        sender: 0x11,
        media: 0x22,
        base_seq: 65_534,
        count: 5,
    };
    let (n, covered) = w.write(&mut out, r, arrivals.len(), |i| arrivals[i]);
    assert_eq!(covered, 6);
    // Reference time: 128.1 ms rounds down to 2 × 64 ms. First delta 0.1 ms = 0 ticks
    // (rounded down on absolute time), then 4, 4, a large +1200 ticks, a negative -8.
    // Statuses 1,1,1,0,2,2: a two-bit vector of 6 (one slot unused).
    #[rustfmt::skip]
    let expected = [
        0x8f, 205, 0, 7,                 // V=2 FMT=15 RTPFB, 8 words
        0, 0, 0, 0x11, 0, 0, 0, 0x22,
        0xff, 0xfe, 0, 6,                // base seq 65534, 6 statuses
        0, 0, 2, 5,                      // reference time 2, feedback count 5
        0b1101_0101, 0b0010_1000,        // vector, 2-bit: 01 01 01 00 10 10 00
        0, 4, 4,                         // small deltas
        0x04, 0xb0, 0xff, 0xf8,          // large +1200, large -8
        0, 0, 0,                         // zero padding to a word
    ];
    assert_eq!(n, expected.len());
    assert_eq!(out[..n], expected);
}

#[test]
fn twcc_runs_and_one_bit_vectors() {
    // 20 received 1 ms apart, 30 lost, then 10 alternating received/lost.
    let arrival = |i: usize| -> Option<u64> {
        match i {
            0..20 => Some(1_000_000 + i as u64 * 1_000),
            20..50 => None,
            _ => i.is_multiple_of(2).then(|| 1_000_000 + i as u64 * 1_000),
        }
    };
    let mut w = TwccWriter::default();
    let mut out = [0u8; 256];
    let r = TwccReport {
        sender: 1,
        media: 2,
        base_seq: 0,
        count: 0,
    };
    let (n, covered) = w.write(&mut out, r, 60, arrival);
    assert_eq!(covered, 60);
    assert_eq!(out[20..22], [0x20, 20], "run of 20 received, small delta");
    assert_eq!(out[22..24], [0x00, 30], "run of 30 not received");
    // One-bit vector of the last 10: 1010101010, then 4 unused slots.
    assert_eq!(
        u16::from_be_bytes([out[24], out[25]]),
        0x8000 | 0b10_1010_1010_0000
    );
    assert_eq!(n % 4, 0);
    check_with_str0m(&out[..n], 0, 60, arrival);
}

/// str0m's parser reads our report back: the same sequence numbers, received or not, and
/// arrival times within the 250 µs resolution.
fn check_with_str0m(bytes: &[u8], base: u16, count: usize, arrival: impl Fn(usize) -> Option<u64>) {
    let Rtcp::Twcc(t) = parse(bytes) else {
        panic!("not TWCC")
    };
    assert_eq!((t.base_seq, usize::from(t.status_count)), (base, count));
    let zero = Instant::now();
    let got: Vec<(u64, Option<Instant>)> = t
        .into_iter(zero, u64::from(base).into())
        .map(|(seq, _, at)| (*seq, at))
        .collect();
    assert_eq!(got.len(), count);
    for (i, (seq, at)) in got.iter().enumerate() {
        assert_eq!(*seq, u64::from(base) + i as u64);
        match (arrival(i), at) {
            (None, None) => {}
            (Some(us), Some(at)) => {
                // Both count from the same zero: str0m's time base is the reference
                // time's 64 ms steps from `zero`.
                let ours = Duration::from_micros(us);
                let theirs = at.duration_since(zero);
                let off = ours.abs_diff(theirs);
                assert!(off < Duration::from_micros(250), "status {i}: {off:?}");
            }
            other => panic!("status {i}: {other:?}"),
        }
    }
}

#[test]
fn str0m_reads_back_reordered_and_lossy_reports() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut w = TwccWriter::default();
    let mut out = [0u8; 1200];
    for round in 0..50 {
        // A 100 ms window of ~60 packets: 5% loss, jitter up to 3 ms, some reordering.
        let mut arrivals = Vec::new();
        for i in 0..60u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let lost = rng % 100 < 5;
            let at = 5_000_000 + round * 100_000 + i * 1_600 + rng % 3_000;
            arrivals.push((!lost).then_some(at));
        }
        if arrivals[0].is_none() {
            arrivals[0] = Some(5_000_000 + round * 100_000);
        }
        let base = (round as u16).wrapping_mul(1_000);
        let r = TwccReport {
            sender: 1,
            media: 2,
            base_seq: base,
            count: round as u8,
        };
        let (n, covered) = w.write(&mut out, r, arrivals.len(), |i| arrivals[i]);
        assert_eq!(covered, arrivals.len());
        check_with_str0m(&out[..n], base, covered, |i| arrivals[i]);
    }
}

#[test]
fn twcc_report_ends_where_the_buffer_or_a_delta_runs_out() {
    let mut w = TwccWriter::default();
    let r = TwccReport {
        sender: 1,
        media: 2,
        base_seq: 10,
        count: 0,
    };
    // 500 packets 100 ms apart need a large delta each: 1000 bytes of deltas.
    let spaced = |i: usize| Some(i as u64 * 100_000);
    let mut small = [0u8; 200];
    let (n, covered) = w.write(&mut small, r, 500, spaced);
    assert!(n <= 200 && covered > 0 && covered < 500, "{n} {covered}");
    check_with_str0m(&small[..n], 10, covered, spaced);
    // A gap longer than 8.19 s cannot be a 16-bit delta: the report stops before it.
    let stall = |i: usize| Some(if i < 3 { i as u64 * 1_000 } else { 10_000_000 });
    let mut out = [0u8; 200];
    let (_, covered) = w.write(&mut out, r, 5, stall);
    assert_eq!(covered, 3);
}

//! The core driven without sockets: a "browser" side holds the mirrored keys, opens what
//! the core sends and protects the RTCP it gets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plenary_srtp::rtp::parse_header;
use plenary_srtp::{DtlsRole, InboundSrtp, OutboundSrtp, SrtpKeys, SrtpProfile};

use super::header::ExtIds;
use super::*;

mod extensions;
mod reports;

const TW: u8 = 3;
const LEVEL: u8 = 1;
const ABS: u8 = 2;
const MID: u8 = 4;
const CVO: u8 = 13;

fn keys(profile: SrtpProfile) -> (SrtpKeys, SrtpKeys) {
    let material: Vec<u8> = (0..profile.keying_material_len())
        .map(|i| (i * 7 + 3) as u8)
        .collect();
    let sfu = SrtpKeys::from_keying_material(profile, DtlsRole::Server, &material).unwrap();
    let browser = SrtpKeys::from_keying_material(profile, DtlsRole::Client, &material).unwrap();
    (sfu, browser)
}

fn ids() -> ExtIds {
    ExtIds {
        audio_level: Some(LEVEL),
        video_orientation: Some(CVO),
        transport_cc: Some(TW),
        abs_send_time: Some(ABS),
        mid: Some(MID),
    }
}

fn video(ssrc: u32) -> StreamSpec {
    StreamSpec {
        ssrc,
        rtx_ssrc: Some(ssrc + 1),
        clock_rate: 90_000,
        nackable: true,
        ext: ids(),
    }
}

fn audio(ssrc: u32) -> StreamSpec {
    StreamSpec {
        ssrc,
        rtx_ssrc: None,
        clock_rate: 48_000,
        nackable: false,
        ext: ids(),
    }
}

struct Browser {
    rx: InboundSrtp,
    tx: OutboundSrtp,
}

impl Browser {
    fn new(k: &SrtpKeys) -> Self {
        Self {
            rx: InboundSrtp::new(&k.remote).unwrap(),
            tx: OutboundSrtp::new(&k.local).unwrap(),
        }
    }

    /// Opens an SRTP datagram; returns the plain packet.
    fn open_rtp(&mut self, d: &[u8]) -> Vec<u8> {
        let mut b = d.to_vec();
        let u = self.rx.unprotect_rtp(&mut b, d.len()).unwrap();
        b.truncate(u.len);
        b
    }

    fn open_rtcp(&mut self, d: &[u8]) -> Vec<u8> {
        let mut b = d.to_vec();
        let n = self.rx.unprotect_rtcp(&mut b, d.len()).unwrap();
        b.truncate(n);
        b
    }

    fn seal_rtcp(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut b = plain.to_vec();
        b.resize(plain.len() + 64, 0);
        let n = self.tx.protect_rtcp(&mut b, plain.len()).unwrap();
        b.truncate(n);
        b
    }
}

fn send(e: &mut Egress, stream: usize, seq: u16, payload: &Arc<[u8]>, now: Instant) -> Vec<u8> {
    let mut buf = [0u8; 1500];
    let m = Media {
        stream,
        pt: 96,
        rtx_pt: Some(97),
        seq,
        ts: 9000 + u32::from(seq) * 3000,
        marker: seq % 5 == 4,
        payload,
        audio_level: None,
        video_orientation: None,
    };
    let n = e.write_media(&mut buf, &m, now).unwrap();
    buf[..n].to_vec()
}

fn tw_seq(p: &[u8]) -> u16 {
    let h = parse_header(p).unwrap();
    let v = h.extension(p, TW).unwrap();
    u16::from_be_bytes([v[0], v[1]])
}

#[test]
fn header_carries_negotiated_extensions_and_opens_with_the_peer_keys() {
    for profile in [
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
        SrtpProfile::Aes128CmHmacSha1_80,
    ] {
        let (k, bk) = keys(profile);
        let now = Instant::now();
        let mut e = Egress::new(&k, None, now).unwrap();
        let mut b = Browser::new(&bk);
        let a = e.stream("1", audio(0x1111));
        let payload: Arc<[u8]> = Arc::from(&[7u8; 80][..]);
        let mut buf = [0u8; 1500];
        let m = Media {
            stream: a,
            pt: 111,
            rtx_pt: None,
            seq: 40,
            ts: 960,
            marker: true,
            payload: &payload,
            audio_level: Some((30, true)),
            video_orientation: None,
        };
        let n = e.write_media(&mut buf, &m, now).unwrap();
        // Level 2, transport-wide seq 3, abs-send-time 4, mid 2: 11 bytes padded to 12.
        assert_eq!(n, 12 + 4 + 12 + 80 + profile.rtp_overhead(), "{profile}");
        let p = b.open_rtp(&buf[..n]);
        let h = parse_header(&p).unwrap();
        assert_eq!(h.fields.payload_type, 111);
        assert!(h.fields.marker);
        assert_eq!(
            (h.fields.seq, h.fields.timestamp, h.fields.ssrc),
            (40, 960, 0x1111)
        );
        assert_eq!(h.extension(&p, LEVEL), Some(&[0x80 | 30][..]));
        assert_eq!(h.extension(&p, TW), Some(&[0, 1][..]));
        assert_eq!(h.extension(&p, MID), Some(&b"1"[..]));
        assert_eq!(h.extension(&p, ABS).map(|v| v.len()), Some(3));
        assert_eq!(h.payload(&p).unwrap(), &payload[..]);
        assert_eq!(e.stats.packets, 1);
    }
}

#[test]
fn transport_wide_seq_is_one_counter_across_m_lines() {
    let (k, bk) = keys(SrtpProfile::AeadAes128Gcm);
    let now = Instant::now();
    let mut e = Egress::new(&k, None, now).unwrap();
    let mut b = Browser::new(&bk);
    let v = e.stream("0", video(0x2000));
    let a = e.stream("1", audio(0x3000));
    assert_eq!(
        e.stream("0", video(0x2000)),
        v,
        "known m-line keeps its stream"
    );
    let payload: Arc<[u8]> = Arc::from(&[1u8; 500][..]);
    let mut seen = Vec::new();
    for i in 0..6u16 {
        let s = if i % 2 == 0 { v } else { a };
        let d = send(&mut e, s, 100 + i, &payload, now);
        seen.push(tw_seq(&b.open_rtp(&d)));
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5, 6]);
}

/// RTCP RTPFB generic NACK from the browser (sender SSRC 1) about `media`.
fn nack(media: u32, pid: u16, blp: u16) -> Vec<u8> {
    let mut p = vec![0x81, 205, 0, 3];
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p.extend_from_slice(&pid.to_be_bytes());
    p.extend_from_slice(&blp.to_be_bytes());
    p
}

#[test]
fn nack_is_answered_with_rfc4588_rtx() {
    let (k, bk) = keys(SrtpProfile::AeadAes128Gcm);
    let now = Instant::now();
    let mut e = Egress::new(&k, None, now).unwrap();
    let mut b = Browser::new(&bk);
    let v = e.stream("0", video(0x2000));
    let payloads: Vec<Arc<[u8]>> = (0..10u8).map(|i| Arc::from(&[i; 300][..])).collect();
    for (i, p) in payloads.iter().enumerate() {
        let d = send(&mut e, v, 500 + i as u16, p, now);
        b.open_rtp(&d);
    }
    // Lost: 502, and via the bitmask 504 (bit 1); 900 was never sent.
    let mut fb = nack(0x2000, 502, 0b10);
    fb.extend_from_slice(&nack(0x2000, 900, 0));
    e.handle_rtcp(&b.seal_rtcp(&fb), now).unwrap();
    assert_eq!(e.stats.nacks, 2);
    assert!(e.has_rtx());
    let mut buf = [0u8; 1500];
    let mut got = Vec::new();
    while let Some(r) = e.write_rtx(&mut buf, now) {
        let n = r.unwrap();
        got.push(b.open_rtp(&buf[..n]));
    }
    assert_eq!(got.len(), 2);
    assert_eq!(e.stats.rtx_misses, 1);
    for (p, orig) in got.iter().zip([502u16, 504]) {
        let h = parse_header(p).unwrap();
        assert_eq!(h.fields.ssrc, 0x2001, "RTX SSRC");
        assert_eq!(h.fields.payload_type, 97, "RTX PT");
        assert_eq!(h.fields.timestamp, 9000 + u32::from(orig) * 3000);
        let body = h.payload(p).unwrap();
        assert_eq!(&body[..2], &orig.to_be_bytes(), "OSN first");
        assert_eq!(&body[2..], &payloads[usize::from(orig - 500)][..]);
    }
    let s0 = parse_header(&got[0]).unwrap().fields.seq;
    let s1 = parse_header(&got[1]).unwrap().fields.seq;
    assert_eq!(s1, s0.wrapping_add(1), "RTX stream has its own sequence");
    // RTX packets take transport-wide numbers too: 10 media, then 11 and 12.
    assert_eq!((tw_seq(&got[0]), tw_seq(&got[1])), (11, 12));
}

/// Builds a TWCC feedback: `arrivals[i]` is the arrival delta (ms, 250 µs units) of
/// base + i, or `None` for lost. One 2-bit status vector chunk per 7 packets.
fn twcc(base: u16, fb: u8, ref_time: u32, arrivals: &[Option<u32>]) -> Vec<u8> {
    let mut chunks = Vec::new();
    let mut deltas = Vec::new();
    for group in arrivals.chunks(7) {
        let mut c: u16 = 0xc000;
        for (i, a) in group.iter().enumerate() {
            let sym = match a {
                None => 0,
                Some(d) if *d * 4 <= 255 => {
                    deltas.push((*d * 4) as u8);
                    1
                }
                Some(d) => {
                    deltas.extend_from_slice(&((*d * 4) as i16).to_be_bytes());
                    2
                }
            };
            c |= sym << (12 - 2 * i);
        }
        chunks.extend_from_slice(&c.to_be_bytes());
    }
    let mut fci = Vec::new();
    fci.extend_from_slice(&base.to_be_bytes());
    fci.extend_from_slice(&(arrivals.len() as u16).to_be_bytes());
    fci.extend_from_slice(&ref_time.to_be_bytes()[1..]);
    fci.push(fb);
    fci.extend_from_slice(&chunks);
    fci.extend_from_slice(&deltas);
    while fci.len() % 4 != 0 {
        fci.push(0);
    }
    let mut p = vec![0x8f, 205];
    p.extend_from_slice(&((2 + fci.len() / 4) as u16).to_be_bytes());
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&fci);
    p
}

/// Sends `n` packets 10 ms apart (1100-byte payloads), then feeds back their arrivals
/// (`arrival_ms(i)`, on the receiver's clock; `None`: lost) in messages of `chunk`
/// packets, and returns the starting estimate and the estimate after it.
fn estimate_after(n: u16, chunk: u16, arrival_ms: impl Fn(u16) -> Option<u32>) -> (u64, u64) {
    let (k, bk) = keys(SrtpProfile::AeadAes128Gcm);
    let t0 = Instant::now();
    let start = 1_000_000;
    let mut e = Egress::new(&k, Some(start), t0).unwrap();
    let mut b = Browser::new(&bk);
    let v = e.stream("0", video(0x2000));
    let payload: Arc<[u8]> = Arc::from(&[0u8; 1100][..]);
    for i in 0..n {
        send(
            &mut e,
            v,
            i,
            &payload,
            t0 + Duration::from_millis(10 * u64::from(i)),
        );
    }
    let mut from = 0;
    while from < n {
        let to = (from + chunk).min(n);
        // Reference time 0: each message's first delta is the arrival itself.
        let mut prev = 0;
        let deltas: Vec<Option<u32>> = (from..to)
            .map(|i| {
                arrival_ms(i).map(|a| {
                    let d = a - prev;
                    prev = a;
                    d
                })
            })
            .collect();
        // Transport-wide numbers start at 1.
        e.handle_rtcp(&b.seal_rtcp(&twcc(from + 1, 0, 0, &deltas)), t0)
            .unwrap();
        from = to;
    }
    assert!(e.stats.twcc_feedbacks >= 1);
    assert!(e.take_estimate().is_some(), "a decision was made");
    (start, e.bwe.estimate())
}

#[test]
fn clean_feedback_raises_the_estimate() {
    let (start, est) = estimate_after(30, 30, |i| Some(5 + 10 * u32::from(i)));
    assert!(est > start, "{est} > {start}");
}

#[test]
fn loss_lowers_the_estimate() {
    // Every 4th lost: 25%.
    let (start, est) = estimate_after(30, 30, |i| (i % 4 != 3).then(|| 5 + 10 * u32::from(i)));
    assert!(est < start, "{est} < {start}");
}

#[test]
fn a_growing_queue_lowers_the_estimate() {
    // Arrivals 14 ms apart for packets sent 10 ms apart: the delay grows by 100 ms per
    // 25-packet window. Window 1 sets the base (and, clean, raises the estimate 8%);
    // windows 2 and 3 are queued: one decrease of 15%; window 4 holds.
    let (start, est) = estimate_after(100, 25, |i| Some(5 + 14 * u32::from(i)));
    assert_eq!(est, start * 108 / 100 * 85 / 100);
}

#[test]
fn receiver_jitter_is_not_a_queue() {
    // A receiver that reads its socket every 50 ms: single packets wait up to 50 ms, more
    // than the queue threshold, but the mean delay has no trend.
    let (start, est) = estimate_after(100, 25, |i| Some((10 * u32::from(i) + 20) / 50 * 50 + 50));
    assert!(est > start, "{est} > {start}");
}

#[test]
fn receiver_report_stops_the_mid_extension() {
    let (k, bk) = keys(SrtpProfile::AeadAes128Gcm);
    let now = Instant::now();
    let mut e = Egress::new(&k, None, now).unwrap();
    let mut b = Browser::new(&bk);
    let v = e.stream("0", video(0x2000));
    let payload: Arc<[u8]> = Arc::from(&[1u8; 10][..]);
    let first = b.open_rtp(&send(&mut e, v, 1, &payload, now));
    assert!(parse_header(&first)
        .unwrap()
        .extension(&first, MID)
        .is_some());
    // RR from SSRC 1 with one report block about 0x2000.
    let mut rr = vec![0x81, 201, 0, 7];
    rr.extend_from_slice(&1u32.to_be_bytes());
    rr.extend_from_slice(&0x2000u32.to_be_bytes());
    rr.extend_from_slice(&[0; 20]);
    e.handle_rtcp(&b.seal_rtcp(&rr), now).unwrap();
    let later = b.open_rtp(&send(&mut e, v, 2, &payload, now));
    assert!(parse_header(&later)
        .unwrap()
        .extension(&later, MID)
        .is_none());
}

#[test]
fn twcc_run_length_and_one_bit_chunks_parse() {
    // Run of 3 received (small), then a 1-bit vector: received, lost, received.
    let mut fci = vec![0, 10, 0, 6, 0, 0, 1, 0];
    fci.extend_from_slice(&(0x2000u16 | 3).to_be_bytes()); // run, symbol 1, length 3
    fci.extend_from_slice(&0xa800u16.to_be_bytes()); // 1-bit: 1,0,1,0...
    fci.extend_from_slice(&[4, 4, 4, 8, 0, 0, 0, 0]);
    let mut p = vec![0x8f, 205];
    p.extend_from_slice(&((2 + fci.len() / 4) as u16).to_be_bytes());
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(&fci);
    let mut got = Vec::new();
    assert!(rtcp::parse_compound(&p, |fb| {
        if let rtcp::Feedback::Twcc(t) = fb {
            assert!(t.for_each(|s, a| got.push((s, a))));
        }
    }));
    let base = 64_000;
    assert_eq!(
        got,
        vec![
            (10, Some(base + 1000)),
            (11, Some(base + 2000)),
            (12, Some(base + 3000)),
            (13, Some(base + 5000)),
            (14, None),
            (15, Some(base + 5000)),
        ]
    );
}

#[test]
fn a_keyframe_burst_is_paced_at_two_and_a_half_times_the_estimate() {
    let (k, bk) = keys(SrtpProfile::AeadAes128Gcm);
    let t0 = Instant::now();
    let mut e = Egress::new(&k, Some(1_000_000), t0).unwrap();
    let mut b = Browser::new(&bk);
    let v = e.stream("0", video(0x2000));
    let a = e.stream("1", audio(0x3000));
    let payload: Arc<[u8]> = Arc::from(&[0u8; 1100][..]);
    let mut buf = [0u8; 1500];
    let mut sent_at = Vec::new();
    // A 66 kB keyframe arrives at once.
    for i in 0..60u16 {
        let m = Media {
            stream: v,
            pt: 96,
            rtx_pt: Some(97),
            seq: i,
            ts: 0,
            marker: i == 59,
            payload: &payload,
            audio_level: None,
            video_orientation: None,
        };
        if let Some(n) = e.forward(&mut buf, &m, t0).unwrap() {
            b.open_rtp(&buf[..n]);
            sent_at.push((i, Duration::ZERO));
        }
    }
    assert_eq!(sent_at.len(), 1, "only the first goes at once");
    assert!(e.paced_waiting());
    // Audio is not held behind it.
    let small: Arc<[u8]> = Arc::from(&[0u8; 80][..]);
    let m = Media {
        stream: a,
        pt: 111,
        rtx_pt: None,
        seq: 1,
        ts: 0,
        marker: false,
        payload: &small,
        audio_level: Some((20, false)),
        video_orientation: None,
    };
    assert!(e.forward(&mut buf, &m, t0).unwrap().is_some());
    // Drain in 1 ms steps.
    for ms in 1..400u64 {
        let now = t0 + Duration::from_millis(ms);
        while let Some(r) = e.write_paced(&mut buf, now) {
            let n = r.unwrap();
            let p = b.open_rtp(&buf[..n]);
            let seq = parse_header(&p).unwrap().fields.seq;
            sent_at.push((seq, Duration::from_millis(ms)));
        }
    }
    assert!(!e.paced_waiting());
    let seqs: Vec<u16> = sent_at.iter().map(|s| s.0).collect();
    assert_eq!(seqs, (0..60).collect::<Vec<_>>(), "in order, none lost");
    // 66 kB at 2.5 × 1 Mbit/s (312.5 kB/s) takes about 211 ms; the audio packet spent
    // some budget too.
    let last = sent_at.last().unwrap().1;
    assert!(
        (Duration::from_millis(195)..Duration::from_millis(240)).contains(&last),
        "{last:?}"
    );
}

fn media(stream: usize, payload: &Arc<[u8]>, seq: u16) -> Media<'_> {
    Media {
        stream,
        pt: 96,
        rtx_pt: Some(97),
        seq,
        ts: u32::from(seq) * 3000,
        marker: seq % 3 == 2,
        payload,
        audio_level: None,
        video_orientation: None,
    }
}

/// Plays `rounds` 10 ms rounds: a video and an audio packet forwarded (pacing
/// on), paced video drained, and every 50 rounds a NACK answered with RTX and transport-wide
/// feedback for the round's packets, plus the sender reports when due. The RTCP from the
/// browser side is sealed before each 50-round chunk, outside `allocations_in`. Returns the
/// allocations counted after the first 200 rounds.
fn allocations_after_warm_up(rounds: u16) -> u64 {
    let t0 = Instant::now();
    let (k, bk) = keys(SrtpProfile::AeadAes128Gcm);
    let mut e = Egress::new(&k, Some(2_000_000), t0).unwrap();
    let mut b = Browser::new(&bk);
    let v = e.stream("0", video(0x2000));
    let a = e.stream("1", audio(0x3000));
    let picture: Arc<[u8]> = Arc::from(&[7u8; 1100][..]);
    let voice: Arc<[u8]> = Arc::from(&[1u8; 80][..]);
    let mut buf = [0u8; 1500];
    let mut counted = 0;
    let mut round = 0;
    while round < rounds {
        let chunk_end = round + 50;
        // What the browser says about the chunk before it: one packet lost, the rest seen.
        let tw_next = e.next_tw_seq;
        let mut rtcp = nack(0x2000, round.wrapping_sub(7), 0b101);
        rtcp.extend_from_slice(&twcc(tw_next.wrapping_sub(60), 0, 0, &[Some(1); 60]));
        let sealed = b.seal_rtcp(&rtcp);
        let chunk = |e: &mut Egress, buf: &mut [u8; 1500]| {
            for i in round..chunk_end {
                let now = t0 + Duration::from_millis(10 * u64::from(i));
                e.forward(buf, &media(v, &picture, i), now).unwrap();
                e.forward(buf, &media(a, &voice, i), now).unwrap();
                while let Some(r) = e.write_paced(buf, now) {
                    r.unwrap();
                }
                if i == round {
                    e.handle_rtcp(&sealed, now).unwrap();
                    while let Some(r) = e.write_rtx(buf, now) {
                        r.unwrap();
                    }
                }
                while let Some(r) = e.write_report(buf, now) {
                    r.unwrap();
                }
                let _ = e.take_estimate();
            }
        };
        if round >= 200 {
            counted += plenary_testalloc::allocations_in(|| chunk(&mut e, &mut buf));
        } else {
            // Warm-up: the RTX ring, send log, pacer queue and estimator reach their sizes.
            chunk(&mut e, &mut buf);
        }
        round = chunk_end;
    }
    assert!(e.stats.rtx_packets > 0 && e.stats.twcc_feedbacks > 0 && e.stats.sender_reports > 0);
    counted
}

#[test]
fn the_counter_sees_allocations_in_this_binary() {
    let n = plenary_testalloc::allocations_in(|| drop(std::hint::black_box(vec![1u8; 64])));
    assert_eq!(n, 1);
}

#[test]
fn forwarding_rtx_feedback_and_reports_allocate_nothing_per_packet() {
    let allocations = allocations_after_warm_up(1000);
    assert_eq!(
        allocations, 0,
        "allocations in 800 steady rounds of the egress fast path"
    );
}

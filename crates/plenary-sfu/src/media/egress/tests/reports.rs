//! Sender reports, their DLRR answers, and RTCP that is forged or malformed.

use std::time::{Duration, Instant};

use super::*;
use crate::media::egress::rtcp;

#[test]
fn sender_report_pairs_ntp_and_rtp_time_and_counts() {
    let (k, bk) = keys(SrtpProfile::AeadAes256Gcm);
    let t0 = Instant::now();
    let mut e = Egress::new(&k, None, t0).unwrap();
    let mut b = Browser::new(&bk);
    let v = e.stream("0", video(0x2000));
    let _idle = e.stream("1", audio(0x3000));
    let payload: Arc<[u8]> = Arc::from(&[1u8; 400][..]);
    for i in 0..3 {
        send(&mut e, v, i, &payload, t0); // last ts 9000 + 2 * 3000
    }
    let mut buf = [0u8; 200];
    assert!(e.write_report(&mut buf, t0).is_none(), "not due yet");
    let t1 = t0 + SR_INTERVAL + Duration::from_millis(100);
    let n = e.write_report(&mut buf, t1).unwrap().unwrap();
    assert!(
        e.write_report(&mut buf, t1).is_none(),
        "idle stream has no SR"
    );
    assert!(e.next_report() > t1);
    let sr = b.open_rtcp(&buf[..n]);
    assert_eq!(sr.len(), rtcp::SR_LEN);
    assert_eq!(&sr[..4], &[0x80, 200, 0, 6]);
    assert_eq!(u32::from_be_bytes(sr[4..8].try_into().unwrap()), 0x2000);
    let ntp = u64::from_be_bytes(sr[8..16].try_into().unwrap());
    let unix = (ntp >> 32) - 2_208_988_800;
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(unix.abs_diff(wall) <= 3, "NTP time is wall-clock time");
    let rtp = u32::from_be_bytes(sr[16..20].try_into().unwrap());
    // 1.1 s after the last packet at 90 kHz.
    assert_eq!(rtp, 15_000 + 99_000);
    assert_eq!(u32::from_be_bytes(sr[20..24].try_into().unwrap()), 3);
    assert_eq!(u32::from_be_bytes(sr[24..28].try_into().unwrap()), 1200);
    // SRTCP index starts far from str0m's; with AEAD it is the last word (RFC 7714 §9).
    let index = u32::from_be_bytes(buf[n - 4..n].try_into().unwrap()) & 0x7fff_ffff;
    assert_eq!(index, SRTCP_INDEX_START);
}

#[test]
fn a_reference_time_is_answered_by_the_next_sender_report_with_its_dlrr() {
    let (k, bk) = keys(SrtpProfile::AeadAes128Gcm);
    let t0 = Instant::now();
    let mut e = Egress::new(&k, None, t0).unwrap();
    let mut b = Browser::new(&bk);
    let v = e.stream("0", video(0x2000));
    let payload: Arc<[u8]> = Arc::from(&[1u8; 200][..]);
    send(&mut e, v, 1, &payload, t0);
    // An RR without blocks, then an XR from SSRC 7 with a junk block and an RRTR whose
    // NTP time is 0x0001_2345_6789_0000: LRR is the middle 32 bits, 0x2345_6789.
    let mut rtcp = vec![0x80, 201, 0, 1, 0, 0, 0, 7];
    rtcp.extend_from_slice(&[0x80, 207, 0, 5, 0, 0, 0, 7]);
    rtcp.extend_from_slice(&[9, 0, 0, 0]);
    rtcp.extend_from_slice(&[4, 0, 0, 2, 0, 1, 0x23, 0x45, 0x67, 0x89, 0, 0]);
    // Answered 0.25 s after it came: DLRR 16384 / 65536 s.
    let t1 = t0 + SR_INTERVAL + Duration::from_millis(50);
    let came = t1 - Duration::from_millis(250);
    e.handle_rtcp(&b.seal_rtcp(&rtcp), came).unwrap();
    let mut buf = [0u8; 200];
    let n = e.write_report(&mut buf, t1).unwrap().unwrap();
    let plain = b.open_rtcp(&buf[..n]);
    assert_eq!(plain.len(), rtcp::SR_LEN + rtcp::dlrr_len(1));
    let xr = &plain[rtcp::SR_LEN..];
    assert_eq!(&xr[..4], &[0x80, 207, 0, 5]);
    assert_eq!(&xr[4..8], &0x2000u32.to_be_bytes());
    assert_eq!(&xr[8..12], &[5, 0, 0, 3]);
    let word = |at: usize| u32::from_be_bytes(xr[at..at + 4].try_into().unwrap());
    assert_eq!((word(12), word(16), word(20)), (7, 0x2345_6789, 16_384));
    // Answered once: the next round's report is a plain SR.
    let t2 = t1 + SR_INTERVAL;
    assert!(e.write_report(&mut buf, t1).is_none());
    let n = e.write_report(&mut buf, t2).unwrap().unwrap();
    assert_eq!(b.open_rtcp(&buf[..n]).len(), rtcp::SR_LEN);
}

/// An XR from receiver `ssrc` with one RRTR whose NTP time has `lrr` as middle 32 bits.
fn rrtr(ssrc: u32, lrr: u32) -> Vec<u8> {
    let mut x = vec![0x80, 207, 0, 4];
    x.extend_from_slice(&ssrc.to_be_bytes());
    x.extend_from_slice(&[4, 0, 0, 2, 0, 0]);
    x.extend_from_slice(&lrr.to_be_bytes());
    x.extend_from_slice(&[0, 0]);
    x
}

#[test]
fn every_receiver_ssrc_gets_its_own_dlrr_item_and_the_oldest_gives_way_when_full() {
    let (k, bk) = keys(SrtpProfile::AeadAes128Gcm);
    let t0 = Instant::now();
    let mut e = Egress::new(&k, None, t0).unwrap();
    let mut b = Browser::new(&bk);
    let v = e.stream("0", video(0x2000));
    send(&mut e, v, 1, &Arc::from(&[1u8; 200][..]), t0);
    let ms = |m: u64| t0 + Duration::from_millis(m);
    // Two receivers on one transport, interleaved: each keeps its own latest time.
    e.handle_rtcp(&b.seal_rtcp(&rrtr(7, 0x70)), ms(100))
        .unwrap();
    e.handle_rtcp(&b.seal_rtcp(&rrtr(8, 0x80)), ms(200))
        .unwrap();
    e.handle_rtcp(&b.seal_rtcp(&rrtr(7, 0x71)), ms(300))
        .unwrap();
    let t1 = t0 + SR_INTERVAL + Duration::from_millis(50);
    let mut buf = [0u8; 300];
    let n = e.write_report(&mut buf, t1).unwrap().unwrap();
    let plain = b.open_rtcp(&buf[..n]);
    assert_eq!(plain.len(), rtcp::SR_LEN + rtcp::dlrr_len(2));
    let xr = &plain[rtcp::SR_LEN..];
    assert_eq!(&xr[..4], &[0x80, 207, 0, 8]);
    assert_eq!(&xr[8..12], &[5, 0, 0, 6], "one block of two items");
    let items: Vec<(u32, u32)> = xr[12..]
        .chunks_exact(12)
        .map(|c| {
            let w = |at: usize| u32::from_be_bytes(c[at..at + 4].try_into().unwrap());
            (w(0), w(4))
        })
        .collect();
    assert_eq!(items, [(7, 0x71), (8, 0x80)]);
    assert!(e.write_report(&mut buf, t1).is_none(), "the round ends");

    // More receivers than slots: the oldest waiting time is the one dropped.
    for (i, ssrc) in (10..10 + rtcp::MAX_REFERENCE_TIMES as u32 + 1).enumerate() {
        let at = t1 + Duration::from_millis(10 * i as u64);
        e.handle_rtcp(&b.seal_rtcp(&rrtr(ssrc, ssrc)), at).unwrap();
    }
    let t2 = t1 + SR_INTERVAL + Duration::from_millis(100);
    let n = e.write_report(&mut buf, t2).unwrap().unwrap();
    let plain = b.open_rtcp(&buf[..n]);
    let xr = &plain[rtcp::SR_LEN..];
    assert_eq!(xr.len(), rtcp::dlrr_len(rtcp::MAX_REFERENCE_TIMES));
    let answered: Vec<u32> = xr[12..]
        .chunks_exact(12)
        .map(|c| u32::from_be_bytes(c[..4].try_into().unwrap()))
        .collect();
    assert!(!answered.contains(&10), "the oldest went: {answered:?}");
    assert!(answered.contains(&(10 + rtcp::MAX_REFERENCE_TIMES as u32)));
}

#[test]
fn a_reference_time_block_running_past_its_packet_is_malformed() {
    let (k, bk) = keys(SrtpProfile::AeadAes128Gcm);
    let now = Instant::now();
    let mut e = Egress::new(&k, None, now).unwrap();
    let mut b = Browser::new(&bk);
    // XR of 3 words whose one block claims 3 words more.
    let xr = [0x80, 207, 0, 2, 0, 0, 0, 7, 4, 0, 0, 2];
    assert!(e.handle_rtcp(&b.seal_rtcp(&xr), now).is_err());
    assert_eq!(e.stats.rtcp_errors, 1);
}

#[test]
fn forged_or_malformed_rtcp_is_counted_not_parsed() {
    let (k, bk) = keys(SrtpProfile::AeadAes128Gcm);
    let now = Instant::now();
    let mut e = Egress::new(&k, None, now).unwrap();
    let mut b = Browser::new(&bk);
    e.stream("0", video(0x2000));
    let mut sealed = b.seal_rtcp(&nack(0x2000, 1, 0));
    sealed[9] ^= 1;
    assert!(e.handle_rtcp(&sealed, now).is_err());
    // Length field pointing past the end.
    let bad = b.seal_rtcp(&[0x81, 205, 0, 9, 0, 0, 0, 1, 0, 0, 0x20, 0]);
    assert!(e.handle_rtcp(&bad, now).is_err());
    assert_eq!(e.stats.rtcp_errors, 2);
    assert_eq!(e.stats.nacks, 0);
}

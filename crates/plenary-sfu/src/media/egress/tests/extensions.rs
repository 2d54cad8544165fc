//! Header extensions a forwarded packet carries from its publisher.

use std::time::{Duration, Instant};

use super::*;

/// The one-byte element `id` of an opened RTP packet.
fn element(p: &[u8], id: u8) -> Option<Vec<u8>> {
    let h = parse_header(p).unwrap();
    h.extension(p, id).map(|v| v.to_vec())
}

fn rotated(stream: usize, payload: &Arc<[u8]>, seq: u16, cvo: Option<u8>) -> Media<'_> {
    Media {
        video_orientation: cvo,
        marker: true,
        ..media(stream, payload, seq)
    }
}

#[test]
fn the_video_orientation_goes_out_as_sent_directly_after_pacing_and_in_rtx() {
    let (k, bk) = keys(SrtpProfile::AeadAes128Gcm);
    let t0 = Instant::now();
    // Paced at 2.5 × 1 Mbit/s, so a burst waits in the pacer's queue.
    let mut e = Egress::new(&k, Some(1_000_000), t0).unwrap();
    let mut b = Browser::new(&bk);
    let v = e.stream("0", video(0x2000));
    let payload: Arc<[u8]> = Arc::from(&[3u8; 1100][..]);
    let mut buf = [0u8; 1500];
    let mut opened = Vec::new();
    // 90 degrees clockwise with the flip bit; then a packet that carries none.
    for (seq, cvo) in (0..40u16).map(|s| (s, s.is_multiple_of(2).then_some(0b0111))) {
        if let Some(n) = e
            .forward(&mut buf, &rotated(v, &payload, seq, cvo), t0)
            .unwrap()
        {
            opened.push(b.open_rtp(&buf[..n]));
        }
    }
    assert!(e.paced_waiting(), "most of the burst waits for budget");
    for ms in 1..400u64 {
        while let Some(r) = e.write_paced(&mut buf, t0 + Duration::from_millis(ms)) {
            opened.push(b.open_rtp(&buf[..r.unwrap()]));
        }
    }
    assert_eq!(opened.len(), 40);
    for p in &opened {
        let seq = parse_header(p).unwrap().fields.seq;
        let want = seq.is_multiple_of(2).then(|| vec![0b0111]);
        assert_eq!(element(p, CVO), want, "packet {seq}");
    }
    // A retransmission keeps the orientation of the packet it repeats.
    let fb = nack(0x2000, 38, 0b1); // 38 and 39
    e.handle_rtcp(&b.seal_rtcp(&fb), t0 + Duration::from_millis(400))
        .unwrap();
    let mut rtx = Vec::new();
    while let Some(r) = e.write_rtx(&mut buf, t0 + Duration::from_millis(400)) {
        rtx.push(b.open_rtp(&buf[..r.unwrap()]));
    }
    assert_eq!(rtx.len(), 2);
    assert_eq!(element(&rtx[0], CVO), Some(vec![0b0111]));
    assert_eq!(element(&rtx[1], CVO), None);
}

#[test]
fn no_orientation_element_where_the_subscriber_did_not_negotiate_it() {
    let (k, bk) = keys(SrtpProfile::AeadAes128Gcm);
    let now = Instant::now();
    let mut e = Egress::new(&k, None, now).unwrap();
    let mut b = Browser::new(&bk);
    let mut spec = video(0x2000);
    spec.ext.video_orientation = None;
    let v = e.stream("0", spec);
    let payload: Arc<[u8]> = Arc::from(&[3u8; 100][..]);
    let mut buf = [0u8; 1500];
    let n = e
        .write_media(&mut buf, &rotated(v, &payload, 1, Some(3)), now)
        .unwrap();
    let p = b.open_rtp(&buf[..n]);
    assert_eq!(element(&p, CVO), None);
    assert!(element(&p, TW).is_some(), "the others are still there");
}

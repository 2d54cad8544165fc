//! Links over real UDP sockets on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plenary_cascade::link::{
    Endpoint, Link, LinkError, CLOSE_AUTH_TIMEOUT, CLOSE_PROTOCOL, CLOSE_WRONG_SECRET,
};
use plenary_cascade::wire::{self, ControlMsg, Kind, MediaPacket};
use tokio::time::timeout;

const SECRET: &[u8] = b"cluster secret for tests";
const WAIT: Duration = Duration::from_secs(5);

/// A connected pair: (a's link to b, b's link to a), plus the endpoints.
async fn pair() -> (Endpoint, Endpoint, Link, Link) {
    let (a, _a_rx) = bind("node-a", SECRET);
    let (b, mut b_rx) = bind("node-b", SECRET);
    let a_link = a.connect(b.local_addr()).await.expect("connect");
    let b_link = timeout(WAIT, b_rx.recv())
        .await
        .expect("b accepts in time")
        .expect("b's receiver open");
    (a, b, a_link, b_link)
}

async fn next_control(link: &mut Link) -> ControlMsg {
    timeout(WAIT, link.control.recv())
        .await
        .expect("control in time")
        .expect("control open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_control_and_media_both_ways() {
    let (_a, _b, mut a_link, mut b_link) = pair().await;
    assert_eq!(a_link.peer, "node-b");
    assert_eq!(b_link.peer, "node-a");
    assert_eq!(a_link.handle.peer(), "node-b");

    let track_up = ControlMsg::TrackUp {
        room: "r".into(),
        id: 9,
        owner: 2,
        mid: "1".into(),
        kind: Kind::Audio,
        source: "microphone".into(),
        codec: "other".into(),
        rids: vec![],
    };
    assert!(a_link
        .handle
        .send_control(ControlMsg::Room { room: "r".into() }));
    assert!(a_link.handle.send_control(track_up.clone()));
    assert!(b_link
        .handle
        .send_control(ControlMsg::Synced { room: "r".into() }));
    assert_eq!(
        next_control(&mut b_link).await,
        ControlMsg::Room { room: "r".into() }
    );
    assert_eq!(next_control(&mut b_link).await, track_up);
    assert_eq!(
        next_control(&mut a_link).await,
        ControlMsg::Synced { room: "r".into() }
    );

    let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let packet = |seq: u16| MediaPacket {
        track: 77,
        layer: (seq % 3) as u8,
        ssrc: 0x1234_5678,
        pt: 111,
        seq,
        ts: u32::from(seq) * 960,
        marker: seq.is_multiple_of(10),
        audio_level: seq.is_multiple_of(2).then_some(-((seq % 100) as i8)),
        voice_activity: seq.is_multiple_of(2).then_some(seq.is_multiple_of(4)),
        video_orientation: seq.is_multiple_of(3).then_some((seq % 16) as u8),
        payload: &payload[..usize::from(seq) % 1000],
    };
    let receiver = b_link.handle.clone();
    let recv = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 1000 {
            match timeout(WAIT, receiver.recv_datagram()).await {
                Ok(Ok(d)) => got.push(d),
                _ => break,
            }
        }
        got
    });
    for seq in 0..1000u16 {
        assert!(
            a_link.handle.send_media(&packet(seq)),
            "packet {seq} dropped"
        );
        // Light pacing: a burst far beyond a kernel's default UDP buffer is not the point.
        if seq % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let got = recv.await.expect("receiver task");
    assert_eq!(
        got.len(),
        1000,
        "loopback with 4 MiB buffers should lose nothing"
    );
    let mut seen = vec![false; 1000];
    for d in &got {
        let p = wire::decode_datagram(d).expect("decodes");
        assert_eq!(p, packet(p.seq));
        seen[usize::from(p.seq)] = true;
    }
    assert!(seen.iter().all(|s| *s));

    // And back.
    assert!(b_link.handle.send_media(&packet(3)));
    let d = timeout(WAIT, a_link.handle.recv_datagram())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(wire::decode_datagram(&d), Ok(packet(3)));
    assert!(a_link.handle.rtt() < Duration::from_secs(1));
}

#[tokio::test]
async fn oversized_media_is_dropped_not_sent() {
    let (_a, _b, a_link, _b_link) = pair().await;
    let big = vec![0u8; 2000];
    let p = MediaPacket {
        track: 1,
        layer: 0,
        ssrc: 1,
        pt: 96,
        seq: 1,
        ts: 1,
        marker: false,
        audio_level: None,
        voice_activity: None,
        video_orientation: None,
        payload: &big,
    };
    assert!(!a_link.handle.send_media(&p));
}

#[tokio::test]
async fn wrong_secret_is_refused_and_yields_no_link() {
    let (b, mut b_rx) = bind("node-b", SECRET);
    let (c, _c_rx) = bind("node-c", b"some other cluster");
    let err = c.connect(b.local_addr()).await.err();
    assert_eq!(err, Some(LinkError::Refused));
    assert!(
        timeout(Duration::from_millis(500), b_rx.recv())
            .await
            .is_err(),
        "the acceptor must not hand out a link"
    );
    // The refusal is per connection: a node with the right secret still gets in.
    let (a, _a_rx) = bind("node-a", SECRET);
    assert!(a.connect(b.local_addr()).await.is_ok());
}

#[tokio::test]
async fn a_node_cannot_link_to_itself() {
    let (a, mut a_rx) = bind("node-a", SECRET);
    let err = a.connect(a.local_addr()).await.err();
    assert!(
        matches!(&err, Some(LinkError::Protocol(why)) if why.contains("own name")),
        "{err:?}"
    );
    assert!(timeout(Duration::from_millis(300), a_rx.recv())
        .await
        .is_err());
}

#[tokio::test]
async fn nobody_listening_is_unreachable() {
    let (a, _a_rx) = bind("node-a", SECRET);
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let started = Instant::now();
    let err = a.connect(silent.local_addr().expect("addr")).await.err();
    assert!(
        matches!(err, Some(LinkError::Unreachable(_) | LinkError::Timeout(_))),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn closing_an_endpoint_closes_the_peer_link_promptly() {
    let (a, _b, a_link, b_link) = pair().await;
    let started = Instant::now();
    a.close();
    let reason = timeout(Duration::from_secs(4), b_link.handle.closed())
        .await
        .expect("b sees the close within 4 s");
    assert!(reason.contains("endpoint closed"), "{reason}");
    assert!(b_link.handle.is_closed());
    assert!(a_link.handle.is_closed());
    assert!(!b_link.handle.send_control(ControlMsg::Draining));
    assert!(matches!(
        b_link.handle.recv_datagram().await,
        Err(LinkError::Closed(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a close frame, not a timeout"
    );
}

#[tokio::test]
async fn closing_a_link_reports_the_reason_to_both_sides() {
    let (_a, _b, mut a_link, b_link) = pair().await;
    b_link.handle.close("room moved");
    let reason = timeout(WAIT, a_link.handle.closed())
        .await
        .expect("in time");
    assert!(reason.contains("room moved"), "{reason}");
    assert_eq!(b_link.handle.closed().await, "room moved");
    assert!(timeout(WAIT, a_link.control.recv())
        .await
        .expect("ends")
        .is_none());
}

/// Forwards UDP between a client and `to` until told to drop everything.
async fn relay(to: SocketAddr, blackhole: Arc<AtomicBool>) -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = sock.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut client = None;
        let mut buf = vec![0; 65_536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            if blackhole.load(Ordering::Relaxed) {
                continue;
            }
            let dest = if from == to {
                client
            } else {
                client = Some(from);
                Some(to)
            };
            if let Some(dest) = dest {
                let _ = sock.send_to(&buf[..n], dest).await;
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_declared_dead_within_four_seconds() {
    let (a, _a_rx) = bind("node-a", SECRET);
    let (b, mut b_rx) = bind("node-b", SECRET);
    let blackhole = Arc::new(AtomicBool::new(false));
    let via = relay(b.local_addr(), blackhole.clone()).await;
    let a_link = a.connect(via).await.expect("connect through relay");
    let b_link = timeout(WAIT, b_rx.recv())
        .await
        .expect("in time")
        .expect("open");
    // Healthy and idle for longer than the idle timeout: keep-alives hold it up.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(!a_link.handle.is_closed() && !b_link.handle.is_closed());

    blackhole.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let (ra, rb) = tokio::join!(
        timeout(Duration::from_secs(4), a_link.handle.closed()),
        timeout(Duration::from_secs(4), b_link.handle.closed()),
    );
    let (ra, rb) = (ra.expect("a sees it in 4 s"), rb.expect("b sees it in 4 s"));
    assert!(
        ra.contains("idle timeout") && rb.contains("idle timeout"),
        "{ra} / {rb}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not before the idle timeout"
    );
}

mod raw;
use raw::bind;

#[tokio::test]
async fn bad_control_frames_are_skipped_and_oversized_ones_close_the_link() {
    let (b, mut b_rx) = bind("node-b", SECRET);
    let mut peer = raw::RawPeer::connect(b.local_addr(), SECRET, "raw").await;
    let mut link = timeout(WAIT, b_rx.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(link.peer, "raw");

    peer.send_frame(b"{\"type\":\"room\"").await; // truncated JSON
    peer.send_frame(b"\xff\xfe").await;
    let mut good = Vec::new();
    wire::encode_control(&ControlMsg::Room { room: "x".into() }, &mut good);
    peer.send_raw(&good).await;
    assert_eq!(
        next_control(&mut link).await,
        ControlMsg::Room { room: "x".into() }
    );
    assert!(!link.handle.is_closed());

    peer.send_raw(&(wire::MAX_CONTROL_FRAME as u32 + 1).to_be_bytes())
        .await;
    let reason = timeout(WAIT, link.handle.closed())
        .await
        .expect("closed in time");
    assert!(reason.contains("over the limit"), "{reason}");
    assert_eq!(peer.close_code().await, Some(CLOSE_PROTOCOL));
}

#[tokio::test]
async fn a_connection_that_never_authenticates_is_closed() {
    let (b, mut b_rx) = bind("node-b", SECRET);
    let started = Instant::now();
    let peer = raw::RawPeer::handshake_only(b.local_addr()).await;
    assert_eq!(
        timeout(Duration::from_secs(8), peer.close_code())
            .await
            .expect("closed in time"),
        Some(CLOSE_AUTH_TIMEOUT)
    );
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert!(b_rx.try_recv().is_err());
}

#[tokio::test]
async fn a_forged_tag_is_refused() {
    let (b, mut b_rx) = bind("node-b", SECRET);
    let peer = raw::RawPeer::connect_with_tag(b.local_addr(), [0xAB; 32]).await;
    assert_eq!(
        timeout(WAIT, peer.close_code()).await.expect("in time"),
        Some(CLOSE_WRONG_SECRET)
    );
    assert!(timeout(Duration::from_millis(300), b_rx.recv())
        .await
        .is_err());
}

#[tokio::test]
async fn an_acceptor_reflecting_our_tag_is_refused() {
    let (a, _a_rx) = bind("node-a", SECRET);
    let err = a.connect(raw::reflecting_server()).await.err();
    assert_eq!(err, Some(LinkError::Refused));
}

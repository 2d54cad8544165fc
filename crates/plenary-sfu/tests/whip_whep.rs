//! End-to-end on 127.0.0.1: a str0m WHIP publisher and a str0m WHEP viewer through the SFU
//! over real HTTP, ICE, DTLS-SRTP; plus HTTP error and CORS checks.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plenary_sfu::{serve, EgressPath, RunningSfu, SfuConfig};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, VideoOrientation};
use str0m::{Candidate, Event, Input, Output, RtcConfig};

struct HttpResp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Minimal HTTP/1.1 client: one request per connection, read until close.
fn http(addr: SocketAddr, method: &str, path: &str, ctype: Option<&str>, body: &str) -> HttpResp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ct = ctype
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResp {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn start() -> RunningSfu {
    start_with(|_| {}).await
}

async fn start_with(f: impl FnOnce(&mut SfuConfig)) -> RunningSfu {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = SfuConfig {
        http: any,
        media: any,
        ..SfuConfig::default()
    };
    f(&mut config);
    serve(config).await.expect("sfu starts")
}

#[derive(Default)]
struct Shared {
    connected: AtomicBool,
    go: AtomicBool,
    stop: AtomicBool,
    sent: AtomicU64,
    got_video: AtomicU64,
    got_audio: AtomicU64,
    /// Viewer: frame-ending video packets that came with the publisher's rotation.
    got_rotated: AtomicU64,
    keyframe_requests: AtomicU64,
    /// Viewer: drop every n-th video RTP datagram on arrival (0: none), before str0m sees
    /// it, so only a retransmission can make it up.
    drop_every: AtomicU64,
    video_in: AtomicU64,
    dropped: AtomicU64,
}

/// A str0m client: offers sendonly (publisher) or recvonly (viewer) audio+video to
/// `path`, then runs its ICE/DTLS/RTP loop until `stop` or its own deadline.
/// Returns the resource Location. The publisher sends `count` video packets (and one audio
/// packet per four) once `go` is set.
fn client(
    http_addr: SocketAddr,
    path: &str,
    publisher: bool,
    count: u64,
    sh: Arc<Shared>,
) -> (String, std::thread::JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    let mut rtc = RtcConfig::new().set_rtp_mode(true).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let dir = if publisher {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    };
    let mut api = rtc.sdp_api();
    let amid = api.add_media(MediaKind::Audio, dir, None, None, None);
    let vmid = api.add_media(MediaKind::Video, dir, None, None, None);
    let (offer, pending) = api.apply().expect("offer");
    let r = http(
        http_addr,
        "POST",
        path,
        Some("application/sdp"),
        &offer.to_sdp_string(),
    );
    assert_eq!(r.status, 201, "POST {path}: {}", r.body);
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    let location = r.header("location").expect("Location").to_owned();
    let answer = SdpAnswer::from_sdp_string(&r.body).expect("answer parses");
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .expect("answer accepted");

    let handle = std::thread::spawn(move || {
        let pt_of =
            |rtc: &str0m::Rtc, mid| rtc.media(mid).and_then(|m| m.remote_pts().first().copied());
        let (apt, vpt) = (pt_of(&rtc, amid).unwrap(), pt_of(&rtc, vmid).unwrap());
        let video: Arc<[u8]> = vec![0x90u8; 1000].into();
        let audio: Arc<[u8]> = vec![0xf8u8; 120].into();
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut buf = vec![0u8; 2048];
        let mut seq = 0u64;
        let mut next_send = Instant::now();
        while Instant::now() < deadline && !sh.stop.load(Ordering::Relaxed) {
            let timeout = loop {
                match rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => {
                        let _ = sock.send_to(&t.contents, t.destination);
                    }
                    Ok(Output::Event(Event::Connected)) => {
                        sh.connected.store(true, Ordering::SeqCst)
                    }
                    Ok(Output::Event(Event::KeyframeRequest(_))) => {
                        sh.keyframe_requests.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Output::Event(Event::RtpPacket(p))) => {
                        let mid = rtc.direct_api().stream_rx(&p.header.ssrc).map(|s| s.mid());
                        if mid == Some(vmid) {
                            sh.got_video.fetch_add(1, Ordering::SeqCst);
                            if p.header.marker
                                && p.header.ext_vals.video_orientation
                                    == Some(VideoOrientation::Deg90)
                            {
                                sh.got_rotated.fetch_add(1, Ordering::SeqCst);
                            }
                        } else if mid == Some(amid) {
                            sh.got_audio.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("client rtc: {e}"),
                }
            };
            let now = Instant::now();
            let mut wake = timeout.min(now + Duration::from_millis(20));
            if publisher && sh.go.load(Ordering::Relaxed) && seq < count {
                if now >= next_send {
                    seq += 1;
                    let mut api = rtc.direct_api();
                    let tx = api.stream_tx_by_mid(vmid, None).expect("video tx");
                    // 90 kHz clock, 5 packets per frame at 100 fps-ish pacing. A phone held
                    // upright: each frame's last packet says it is turned 90 degrees.
                    let ts = (seq / 5 * 900) as u32;
                    let last = seq.is_multiple_of(5);
                    let ext = ExtensionValues {
                        video_orientation: last.then_some(VideoOrientation::Deg90),
                        ..ExtensionValues::default()
                    };
                    tx.write_rtp(
                        RtpWrite::new(vpt, seq.into(), ts, now, video.clone())
                            .marker(last)
                            .ext_vals(ext)
                            .nackable(true),
                    );
                    if seq.is_multiple_of(4) {
                        let tx = api.stream_tx_by_mid(amid, None).expect("audio tx");
                        tx.write_rtp(RtpWrite::new(
                            apt,
                            (seq / 4).into(),
                            (seq / 4 * 960) as u32,
                            now,
                            audio.clone(),
                        ));
                    }
                    sh.sent.store(seq, Ordering::SeqCst);
                    next_send = now + Duration::from_millis(2);
                    continue; // flush the write
                }
                wake = wake.min(next_send);
            }
            let wait = wake
                .saturating_duration_since(now)
                .max(Duration::from_micros(100));
            sock.set_read_timeout(Some(wait)).unwrap();
            match sock.recv_from(&mut buf) {
                Ok((n, src)) => {
                    let k = sh.drop_every.load(Ordering::Relaxed);
                    // The RTP header is in the clear under SRTP: original video by its PT
                    // (RTX has its own PT), RTCP excluded by RFC 5761's PT range.
                    let video_rtp = n > 12
                        && (128..=191).contains(&buf[0])
                        && !(192..=223).contains(&buf[1])
                        && buf[1] & 0x7f == *vpt;
                    if !publisher && k > 0 && video_rtp {
                        let c = sh.video_in.fetch_add(1, Ordering::Relaxed);
                        if c % k == k - 1 {
                            sh.dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    if let Ok(r) = Receive::new(Protocol::Udp, src, local, &buf[..n]) {
                        let _ = rtc.handle_input(Input::Receive(Instant::now(), r));
                    }
                }
                Err(_) => {
                    let _ = rtc.handle_input(Input::Timeout(Instant::now()));
                }
            }
        }
    });
    (location, handle)
}

fn wait_until(limit: Duration, f: impl Fn() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// What one WHIP→WHEP run saw: packets sent, video and audio received, keyframe requests
/// at the publisher, and the three DELETE statuses (viewer, viewer again, publisher).
struct Run {
    sent: u64,
    video: u64,
    audio: u64,
    /// Frames that reached the viewer still saying how they are rotated.
    rotated: u64,
    keyframes: u64,
    deletes: (u16, u16, u16),
    /// Media workers of the publisher and the viewer (low byte of their resource ids).
    workers: (u64, u64),
}

fn worker_of_location(loc: &str) -> u64 {
    let id: u64 = loc
        .trim_start_matches("/resource/")
        .parse()
        .expect("numeric resource id");
    id & 0xff
}

/// A WHIP publisher sends `n` video packets (and n/4 audio) to `room`; a WHEP viewer counts
/// what arrives. Blocking; run on a blocking thread.
fn publish_and_view(addr: SocketAddr, room: &str, n: u64) -> Run {
    publish_and_view_lossy(addr, room, n, 0)
}

/// As `publish_and_view`, with the viewer dropping every `drop_every`-th video datagram.
fn publish_and_view_lossy(addr: SocketAddr, room: &str, n: u64, drop_every: u64) -> Run {
    let publ = Arc::new(Shared::default());
    let view = Arc::new(Shared::default());
    view.drop_every.store(drop_every, Ordering::SeqCst);
    let (pub_loc, pub_thread) = client(addr, &format!("/whip/{room}"), true, n, publ.clone());
    assert!(pub_loc.starts_with("/resource/"), "{pub_loc}");
    assert!(
        wait_until(Duration::from_secs(10), || publ
            .connected
            .load(Ordering::SeqCst)),
        "publisher connects"
    );
    let (view_loc, view_thread) = client(addr, &format!("/whep/{room}"), false, 0, view.clone());
    assert!(
        wait_until(Duration::from_secs(10), || view
            .connected
            .load(Ordering::SeqCst)),
        "viewer connects"
    );
    // Let the SFU see the viewer's DTLS finish too before media starts.
    std::thread::sleep(Duration::from_millis(300));
    publ.go.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    wait_until(Duration::from_secs(20), || {
        view.got_video.load(Ordering::SeqCst) >= n
    });
    let elapsed = t0.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let run = Run {
        sent: publ.sent.load(Ordering::SeqCst),
        video: view.got_video.load(Ordering::SeqCst),
        audio: view.got_audio.load(Ordering::SeqCst),
        rotated: view.got_rotated.load(Ordering::SeqCst),
        keyframes: publ.keyframe_requests.load(Ordering::SeqCst),
        workers: (worker_of_location(&pub_loc), worker_of_location(&view_loc)),
        deletes: (
            http(addr, "DELETE", &view_loc, None, "").status,
            http(addr, "DELETE", &view_loc, None, "").status,
            http(addr, "DELETE", &pub_loc, None, "").status,
        ),
    };
    eprintln!(
        "{room}: sent={} got_video={} got_audio={} in {elapsed:?}; keyframe requests={}; \
         viewer dropped {}",
        run.sent,
        run.video,
        run.audio,
        run.keyframes,
        view.dropped.load(Ordering::SeqCst)
    );
    publ.stop.store(true, Ordering::SeqCst);
    view.stop.store(true, Ordering::SeqCst);
    pub_thread.join().unwrap();
    view_thread.join().unwrap();
    run
}

fn assert_complete(run: &Run, n: u64) {
    assert_eq!(run.sent, n);
    assert!(
        run.video * 10 >= n * 9,
        "viewer got {} of {n} video packets",
        run.video
    );
    assert!(
        run.audio * 10 >= (n / 4) * 9,
        "viewer got {} of {} audio packets",
        run.audio,
        n / 4
    );
    // Without the orientation a phone's upright picture shows on its side.
    assert!(
        run.rotated * 10 >= (n / 5) * 9,
        "{} of {} frames kept their rotation",
        run.rotated,
        n / 5
    );
    assert!(
        run.keyframes >= 1,
        "SFU asked the publisher for a keyframe when the viewer joined"
    );
    let (d1, d2, d3) = run.deletes;
    assert!(d1 == 200 || d1 == 204, "first DELETE: {d1}");
    assert_eq!(d2, 404, "second DELETE");
    assert!(d3 == 200 || d3 == 204, "publisher DELETE: {d3}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publisher_reaches_whep_viewer() {
    let sfu = start().await;
    let addr = sfu.http_addr();
    const N: u64 = 500;
    let run = tokio::task::spawn_blocking(move || publish_and_view(addr, "room1", N))
        .await
        .unwrap();
    sfu.shutdown().await;
    assert_complete(&run, N);
}

/// 500 packets from a WHIP publisher to a WHEP viewer through `path` (or the path
/// `PLENARY_SFU_EGRESS` forces), and the viewer's transport on that path.
async fn viewer_on_path(path: EgressPath, room: &'static str) {
    let sfu = start_with(|c| c.egress_path = path).await;
    let addr = sfu.http_addr();
    const N: u64 = 500;
    let run = tokio::task::spawn_blocking(move || publish_and_view(addr, room, N))
        .await
        .unwrap();
    let fast = sfu.fast_egress_subscribers();
    sfu.shutdown().await;
    assert_complete(&run, N);
    let expected = u64::from(path.with_env_override() == EgressPath::Fast);
    assert_eq!(
        fast, expected,
        "viewers on the fast path, asked for {path:?}"
    );
}

/// The same through the fast egress path (`[media] egress = "fast"`, the default): our own
/// headers, SRTP with the keys captured from str0m's DTLS, batched sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_egress_reaches_whep_viewer() {
    viewer_on_path(EgressPath::Fast, "fast1").await;
}

/// And through str0m's egress (`[media] egress = "str0m"`), kept as the fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn str0m_egress_reaches_whep_viewer() {
    viewer_on_path(EgressPath::Str0m, "str0m1").await;
}

/// A viewer that loses every 5th video packet still gets (nearly) all of them: its NACKs
/// are answered with RTX by the fast path, from the ring of shared payloads. Without the
/// resends it would get at most 80%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_egress_answers_nacks_with_rtx() {
    let sfu = start_with(|c| c.egress_path = EgressPath::Fast).await;
    let addr = sfu.http_addr();
    const N: u64 = 500;
    let run = tokio::task::spawn_blocking(move || publish_and_view_lossy(addr, "fast2", N, 5))
        .await
        .unwrap();
    let rtx = sfu.fast_egress_rtx();
    sfu.shutdown().await;
    assert!(rtx >= N / 10, "only {rtx} retransmissions");
    assert_complete(&run, N);
}

/// Two rooms on two media workers at once, sharing the one UDP port: each room is complete,
/// and after ICE the traffic reaches the owning worker through its connected sockets, not by
/// hand-offs between workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_on_two_workers_share_one_port() {
    let sfu = start_with(|c| c.workers = 2).await;
    assert_eq!(sfu.workers(), 2);
    let addr = sfu.http_addr();
    const N: u64 = 400;
    let a = tokio::task::spawn_blocking(move || publish_and_view(addr, "room-a", N));
    let b = tokio::task::spawn_blocking(move || publish_and_view(addr, "room-b", N));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let handoffs = sfu.handoffs();
    sfu.shutdown().await;
    assert_complete(&a, N);
    assert_complete(&b, N);
    // Only ICE checks before a connected socket exists may cross; media never does.
    assert!(
        handoffs < 40,
        "{handoffs} datagrams were handed between workers"
    );
}

/// One room across two workers: with `room_spill` 1 the viewer joins on the other worker, and
/// the publisher's packets are piped to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_room_spans_two_workers() {
    let sfu = start_with(|c| {
        c.workers = 2;
        c.room_spill = 1;
    })
    .await;
    let addr = sfu.http_addr();
    const N: u64 = 400;
    let run = tokio::task::spawn_blocking(move || publish_and_view(addr, "big", N))
        .await
        .unwrap();
    // After both left, the room is placed afresh: a new publisher and viewer span it again.
    let again = tokio::task::spawn_blocking(move || publish_and_view(addr, "big", N))
        .await
        .unwrap();
    sfu.shutdown().await;
    assert_ne!(
        run.workers.0, run.workers.1,
        "viewer joined on the other worker"
    );
    assert_complete(&run, N);
    assert_ne!(again.workers.0, again.workers.1);
    assert_complete(&again, N);
}

#[tokio::test]
async fn http_errors_and_cors() {
    let sfu = start().await;
    let addr = sfu.http_addr();
    tokio::task::spawn_blocking(move || {
        let r = http(addr, "POST", "/whip/room1", Some("text/plain"), "v=0");
        assert_eq!(r.status, 415, "{}", r.body);
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));

        let r = http(
            addr,
            "POST",
            "/whep/room1",
            Some("application/sdp"),
            "not sdp at all",
        );
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(
            !r.body.trim().is_empty() && r.body.trim().lines().count() == 1,
            "{}",
            r.body
        );

        let r = http(
            addr,
            "POST",
            "/whip/bad%20room",
            Some("application/sdp"),
            "v=0",
        );
        assert_eq!(r.status, 400, "{}", r.body);

        for p in ["/resource/999999", "/resource/abc"] {
            let r = http(addr, "DELETE", p, None, "");
            assert_eq!(r.status, 404, "{p}: {}", r.body);
        }
        assert_eq!(http(addr, "GET", "/nope", None, "").status, 404);

        let r = http(addr, "OPTIONS", "/whip/room1", None, "");
        assert!(r.status == 200 || r.status == 204, "preflight {}", r.status);
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        let methods = r.header("access-control-allow-methods").unwrap_or("");
        for m in ["POST", "DELETE", "OPTIONS"] {
            assert!(methods.contains(m), "{methods}");
        }
        let allow = r
            .header("access-control-allow-headers")
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(allow.contains("content-type"), "{allow}");
        let expose = r
            .header("access-control-expose-headers")
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(expose.contains("location"), "{expose}");
    })
    .await
    .unwrap();
    sfu.shutdown().await;
}

/// A recvonly str0m offer, enough for the SFU to answer.
fn viewer_offer() -> String {
    let mut rtc = RtcConfig::new().set_rtp_mode(true).build(Instant::now());
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtc.add_local_candidate(Candidate::host(sock.local_addr().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _) = api.apply().expect("offer");
    offer.to_sdp_string()
}

#[tokio::test]
async fn tokens_guard_rooms_and_answers_carry_ice_servers() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let secret = "a-room-secret-of-some-length".to_string();
    let sfu = serve(SfuConfig {
        http: any,
        media: any,
        room_token_secrets: vec![secret.clone()],
        ice_servers: Some(plenary_sfu::IceServers {
            urls: vec![
                "stun:127.0.0.1:3478".into(),
                "turn:127.0.0.1:3478?transport=udp".into(),
            ],
            secret: "turn-secret".into(),
            ttl: Duration::from_secs(3600),
        }),
        ..SfuConfig::default()
    })
    .await
    .expect("sfu starts");
    let addr = sfu.http_addr();
    tokio::task::spawn_blocking(move || {
        let offer = viewer_offer();
        let r = http(addr, "POST", "/whep/ga", Some("application/sdp"), &offer);
        assert_eq!(r.status, 401, "no token: {}", r.body);
        assert!(r.body.contains("token"), "{}", r.body);

        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let claims = |room: &str| plenary_sfu::token::Claims {
            room: room.into(),
            exp,
            name: None,
        };
        let other = plenary_sfu::token::issue(&secret, &claims("other"));
        let r = http(
            addr,
            "POST",
            &format!("/whep/ga?token={other}"),
            Some("application/sdp"),
            &offer,
        );
        assert_eq!(r.status, 401, "token for another room: {}", r.body);

        let good = plenary_sfu::token::issue(&secret, &claims("ga"));
        let r = http(
            addr,
            "POST",
            &format!("/whep/ga?token={good}"),
            Some("application/sdp"),
            &offer,
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let links: Vec<&str> = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("link"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(links.len(), 2, "{links:?}");
        assert!(
            links[0].starts_with("<stun:127.0.0.1:3478>; rel=\"ice-server\""),
            "{links:?}"
        );
        let turn = links[1];
        assert!(
            turn.contains("username=\"") && turn.contains("credential=\""),
            "{turn}"
        );
        // The credential is TURN REST, so `plenary turn` with the same secret accepts it.
        let user = turn
            .split("username=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let cred = turn
            .split("credential=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(
            cred,
            plenary_turn::stun::integrity::rest_password(b"turn-secret", user)
        );
    })
    .await
    .unwrap();
    sfu.shutdown().await;
}

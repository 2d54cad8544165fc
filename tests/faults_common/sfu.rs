//! The `plenary sfu` the fault tests run, the session they hold through each fault, and the
//! misbehaving clients (`tests/faults_sfu.rs`).

use crate::common::*;
use crate::faults_common::*;
use crate::sfu_common::{
    self, eventually, missing_seqs, whep_viewer, Client, MediaPeer, PublishPlan,
};
use crate::turn_proc::{http_get, http_until, Proc};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Output, RtcConfig};
use tokio::task::block_in_place;

pub const ROOM: &str = "faults";

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// `plenary sfu` with one media worker, metrics on a free port and debug logs for the SFU.
pub struct Sfu {
    pub proc: Proc,
    pub http: SocketAddr,
    pub media: SocketAddr,
    pub metrics: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Sfu {
    pub fn start(nofile: Option<u64>) -> Sfu {
        let dir = tempfile::tempdir().expect("tempdir");
        let lo = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let http = loopback(free_port());
        let metrics = loopback(free_port_except(&lo, &[http.port()]));
        let media = loopback(free_udp_pair(lo[0]));
        let conf = dir.path().join("sfu.toml");
        std::fs::write(&conf, "[media]\nworkers = 1\n").expect("write config");
        let mut cmd = Command::new(plenary_bin());
        cmd.arg("sfu")
            .arg("--config")
            .arg(&conf)
            .args(["--http", &http.to_string(), "--media", &media.to_string()])
            .args(["--metrics", &metrics.to_string()])
            .args([
                "--log-level",
                "info,plenary_sfu=debug,plenary_sfu::dtls=info",
            ]);
        if let Some(n) = nofile {
            limit_nofile(&mut cmd, n);
        }
        let proc = Proc::spawn(cmd, dir.path(), "sfu");
        let sfu = Sfu {
            proc,
            http,
            media,
            metrics,
            _dir: dir,
        };
        assert_eq!(
            http_until(http, "/healthz", 200).0,
            200,
            "sfu never answered:\n{}",
            sfu.proc.log()
        );
        sfu
    }

    pub fn scrape(&self) -> String {
        let (status, body) = http_get(self.metrics, "/metrics", None);
        assert_eq!(status, 200, "metrics endpoint: {body}");
        body
    }

    pub fn metric(&self, series: &str) -> f64 {
        block_in_place(|| metric(&self.scrape(), series))
    }

    /// Polls until `series` reaches `at_least` (the media worker publishes every 200 ms).
    pub fn wait_metric(&self, series: &str, at_least: f64) -> f64 {
        block_in_place(|| wait_at_least(at_least, || metric(&self.scrape(), series)))
    }

    pub fn log_lines(&self, needle: &str) -> usize {
        count_lines(&self.proc.log(), needle)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// A running session: `ada` publishes camera and microphone (talking) through the room
/// API, and a WHEP viewer receives the programme feed.
pub struct Session {
    pub ada: Client,
    pub viewer: MediaPeer,
    pub vmid: String,
}

impl Session {
    pub async fn start(http: SocketAddr) -> Session {
        let mut ada = Client::join(http, ROOM, "ada").await;
        ada.publish(PublishPlan::av(1, 250_000)).await;
        ada.set_talking(true);
        ada.wait_connected().await;
        let (viewer, _amid, vmid) = block_in_place(|| whep_viewer(http, ROOM));
        let s = Session { ada, viewer, vmid };
        assert!(
            s.receives(Duration::from_secs(10)).await,
            "the viewer never received the publisher's video"
        );
        s
    }

    pub fn video_packets(&self) -> usize {
        self.viewer.shared.count_on(&self.vmid)
    }

    /// Whether 30 more video packets (about a second) arrive within `limit`.
    pub async fn receives(&self, limit: Duration) -> bool {
        let from = self.video_packets();
        eventually(limit, || self.video_packets() >= from + 30).await
    }

    /// Video sequence numbers the viewer never received, over the whole session.
    pub fn missing(&self) -> usize {
        missing_seqs(&self.viewer.shared.records_on(&self.vmid)).len()
    }

    pub async fn end(mut self) {
        self.viewer.stop();
        self.ada.leave().await;
    }
}

/// A fresh WHEP viewer receives video, and a fresh room API participant joins.
pub async fn fresh_sessions_work(http: SocketAddr, tag: &str) {
    let (mut viewer, _amid, vmid) = block_in_place(|| whep_viewer(http, ROOM));
    let got = eventually(Duration::from_secs(10), || {
        viewer.shared.count_on(&vmid) >= 30
    })
    .await;
    viewer.stop();
    assert!(got, "{tag}: a fresh WHEP viewer received no video");
    let mut bob = Client::join_raw(http, ROOM, &format!("bob-{tag}")).await;
    assert!(
        bob.wait_joined(Duration::from_secs(5)).await,
        "{tag}: a fresh room API join failed: {:?}",
        bob.log()
    );
    bob.leave().await;
}

/// A WHEP client that completes ICE, sends its first DTLS flight, and vanishes.
pub fn vanish_mid_dtls(http: SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let local = sock.local_addr().expect("addr");
    let mut rtc = RtcConfig::new().set_rtp_mode(true).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().expect("offer");
    let (status, body) =
        sfu_common::http_post_sdp(http, &format!("/whep/{ROOM}"), &offer.to_sdp_string());
    assert_eq!(status, 201, "WHEP POST: {body}");
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&body).expect("answer"))
        .expect("answer accepted");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    loop {
        assert!(Instant::now() < deadline, "no DTLS datagram was ever sent");
        let wake = match rtc.poll_output().expect("poll") {
            Output::Transmit(t) => {
                let _ = sock.send_to(&t.contents, t.destination);
                // DTLS records start with a content type of 20..=63 (RFC 7983).
                if (20..=63).contains(&t.contents[0]) {
                    // Vanish: the socket stays open, nothing is read or sent again.
                    std::mem::forget(sock);
                    return;
                }
                continue;
            }
            Output::Timeout(t) => t,
            Output::Event(_) => continue,
        };
        let wait = wake.saturating_duration_since(Instant::now());
        sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .expect("timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => {
                if let Ok(r) = Receive::new(Protocol::Udp, src, local, &buf[..n]) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), r));
                }
            }
            Err(_) => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }
}

/// `n` connections that complete a WebSocket upgrade on `GET /rooms/ROOM` and then send
/// nothing (never `join`). Upgrades go out in batches, each answered before the next.
pub fn half_open_websockets(http: SocketAddr, n: usize) -> Vec<TcpStream> {
    let req = format!(
        "GET /rooms/{ROOM} HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let batch = (n - out.len()).min(200);
        let mut socks = open_half_open(http, batch, req.as_bytes());
        for s in &mut socks {
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut head = Vec::new();
            let mut buf = [0u8; 512];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let got = s.read(&mut buf).expect("upgrade response");
                assert!(got > 0, "closed during the upgrade");
                head.extend_from_slice(&buf[..got]);
            }
            assert!(
                head.starts_with(b"HTTP/1.1 101"),
                "{}",
                String::from_utf8_lossy(&head)
            );
        }
        out.extend(socks);
    }
    out
}

/// Malformed WHIP/WHEP bodies of every kind the handler refuses.
pub fn bad_offer(i: usize) -> (&'static str, Vec<u8>) {
    match i % 5 {
        0 => ("application/sdp", b"this is not SDP at all".to_vec()),
        1 => (
            "application/sdp",
            b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=broken"
                .to_vec(),
        ),
        2 => ("application/sdp", vec![0xff, 0xfe, 0x00, 0x80, 0x81]),
        3 => ("application/sdp", vec![b'v'; 70 * 1024]),
        _ => ("text/plain", b"v=0\r\n".to_vec()),
    }
}

/// Garbage for the media port from an unknown source: RTP-, RTCP-, DTLS- and STUN-looking
/// datagrams and plain noise.
pub fn garbage_datagram(i: usize) -> Vec<u8> {
    let mut d: Vec<u8> = (0..(20 + i % 300)).map(|k| (k * 31 + i) as u8).collect();
    match i % 5 {
        0 => d[..2].copy_from_slice(&[0x80, 96]),
        1 => d[..2].copy_from_slice(&[0x81, 200 + (i % 5) as u8]),
        2 => d[..3].copy_from_slice(&[22, 0xfe, 0xfd]),
        3 => d[..4].copy_from_slice(&[0x00, 0x01, 0x00, 0x00]),
        _ => {}
    }
    d
}

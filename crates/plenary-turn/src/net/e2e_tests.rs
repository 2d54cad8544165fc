//! Whole-service smoke tests on loopback: real sockets, real threads, the real core.

use super::*;
use crate::config::{StaticUser, TlsConfig, TurnConfig, UserSecret};
use crate::stun::integrity::long_term_key;
use crate::stun::{attr, method, stream_frame_len, Class, Message, MessageWriter, TransactionId};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const REALM: &str = "e2e.example.coop";
const USER: &str = "alice";
const PASS: &str = "correct horse";
const WAIT: Duration = Duration::from_secs(5);
const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn config() -> TurnConfig {
    let mut c = TurnConfig {
        listening_ips: vec![LO],
        listening_port: 0,
        realm: REALM.into(),
        workers: 2,
        min_port: 40000,
        max_port: 60000,
        drain_timeout: Duration::from_secs(30),
        ..TurnConfig::default()
    };
    c.auth.users = vec![StaticUser {
        name: USER.into(),
        secret: UserSecret::Password(PASS.into()),
    }];
    c.peers.allowed = vec!["127.0.0.1".parse().expect("range")];
    c.peers.allow_loopback = true;
    c
}

/// One client transport: datagrams, or frames over a byte stream.
enum Conn {
    Udp(UdpSocket),
    Stream(Box<dyn Duplex>),
}

trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

impl Conn {
    async fn send(&mut self, frame: &[u8]) {
        match self {
            Conn::Udp(s) => {
                s.send(frame).await.expect("udp send");
            }
            Conn::Stream(s) => s.write_all(frame).await.expect("stream send"),
        }
    }

    async fn recv(&mut self) -> Vec<u8> {
        let fut = async {
            match self {
                Conn::Udp(s) => {
                    let mut b = vec![0u8; 2048];
                    let n = s.recv(&mut b).await.expect("udp recv");
                    b.truncate(n);
                    b
                }
                Conn::Stream(s) => {
                    let mut head = [0u8; 4];
                    s.read_exact(&mut head).await.expect("frame head");
                    let len = stream_frame_len(&head).expect("valid frame");
                    let mut frame = head.to_vec();
                    frame.resize(len, 0);
                    s.read_exact(&mut frame[4..]).await.expect("frame body");
                    frame
                }
            }
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .expect("reply in time")
    }
}

struct Client {
    conn: Conn,
    nonce: Vec<u8>,
    key: [u8; 16],
    next_tx: u8,
}

struct Reply(Vec<u8>);

impl Reply {
    fn msg(&self) -> Message<'_> {
        Message::parse(&self.0).expect("reply parses")
    }
    fn code(&self) -> Option<u16> {
        let m = self.msg();
        Some(
            attr::error_code(m.get(attr::ERROR_CODE)?.value)
                .expect("error code")
                .0,
        )
    }
    fn addr(&self, typ: u16) -> Option<SocketAddr> {
        self.msg().get_xor_address(typ).expect("address attr")
    }
}

impl Client {
    fn new(conn: Conn) -> Self {
        Client {
            conn,
            nonce: Vec::new(),
            key: long_term_key(USER, REALM, PASS),
            next_tx: 1,
        }
    }

    fn build(&mut self, m: u16, class: Class, attrs: &[(u16, Vec<u8>)], auth: bool) -> Vec<u8> {
        self.next_tx += 1;
        let txid: TransactionId = [self.next_tx; 12];
        let mut buf = vec![0u8; 1500];
        let mut w = MessageWriter::new(&mut buf, m, class, &txid).expect("writer");
        for (t, v) in attrs {
            w.attr(*t, v).expect("attr");
        }
        if auth {
            w.attr(attr::USERNAME, USER.as_bytes()).expect("user");
            w.attr(attr::REALM, REALM.as_bytes()).expect("realm");
            w.attr(attr::NONCE, &self.nonce).expect("nonce");
            w.message_integrity(&self.key).expect("integrity");
        }
        w.fingerprint().expect("fingerprint");
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    /// Sends an authenticated request, getting a nonce first if needed.
    async fn request(&mut self, m: u16, attrs: &[(u16, Vec<u8>)]) -> Reply {
        for _ in 0..2 {
            let req = self.build(m, Class::Request, attrs, !self.nonce.is_empty());
            self.conn.send(&req).await;
            let r = Reply(self.conn.recv().await);
            if matches!(r.code(), Some(401 | 438)) {
                let msg = r.msg();
                self.nonce = msg.get(attr::NONCE).expect("nonce in 401").value.to_vec();
                continue;
            }
            return r;
        }
        panic!("still unauthorized after a fresh nonce");
    }

    async fn binding(&mut self) -> Reply {
        let req = self.build(method::BINDING, Class::Request, &[], false);
        self.conn.send(&req).await;
        Reply(self.conn.recv().await)
    }
}

/// XOR-PEER-ADDRESS for an IPv4 peer (XORed with the magic cookie only, so the
/// transaction id does not matter).
fn xor_peer(peer: SocketAddr) -> Vec<u8> {
    assert!(peer.is_ipv4());
    let (v, n) = attr::encode_xor_address(peer, &[0; 12]);
    v[..n].to_vec()
}

/// Allocate, permission, Send/Data indications, ChannelBind/ChannelData, Refresh 0.
async fn relay_round_trip(client: &mut Client, running: &RunningTurn) {
    let udp_transport = vec![attr::TRANSPORT_UDP, 0, 0, 0];
    let r = client
        .request(
            method::ALLOCATE,
            &[(attr::REQUESTED_TRANSPORT, udp_transport)],
        )
        .await;
    assert_eq!(r.msg().class(), Class::Success, "allocate: {:?}", r.code());
    let relayed = r.addr(attr::XOR_RELAYED_ADDRESS).expect("relayed address");
    assert_eq!(relayed.ip(), LO);
    assert!((40000..=60000).contains(&relayed.port()), "{relayed}");
    assert!(running.control().total_allocations() >= 1);

    let peer = UdpSocket::bind((LO, 0)).await.expect("peer");
    let peer_addr = peer.local_addr().expect("peer addr");
    let r = client
        .request(
            method::CREATE_PERMISSION,
            &[(attr::XOR_PEER_ADDRESS, xor_peer(peer_addr))],
        )
        .await;
    assert_eq!(
        r.msg().class(),
        Class::Success,
        "permission: {:?}",
        r.code()
    );

    // Send indication → peer.
    let send = client.build(
        method::SEND,
        Class::Indication,
        &[
            (attr::XOR_PEER_ADDRESS, xor_peer(peer_addr)),
            (attr::DATA, b"hello".to_vec()),
        ],
        false,
    );
    client.conn.send(&send).await;
    let mut b = [0u8; 64];
    let (n, from) = tokio::time::timeout(WAIT, peer.recv_from(&mut b))
        .await
        .expect("peer got data")
        .expect("recv");
    assert_eq!(&b[..n], b"hello");
    assert_eq!(from, relayed);

    // Peer → Data indication.
    peer.send_to(b"world", relayed).await.expect("peer send");
    let data = Reply(client.conn.recv().await);
    assert_eq!(data.msg().method(), method::DATA);
    assert_eq!(data.msg().get(attr::DATA).expect("DATA").value, b"world");

    // ChannelBind, then ChannelData both ways.
    let r = client
        .request(
            method::CHANNEL_BIND,
            &[
                (attr::CHANNEL_NUMBER, vec![0x40, 0x01, 0, 0]),
                (attr::XOR_PEER_ADDRESS, xor_peer(peer_addr)),
            ],
        )
        .await;
    assert_eq!(
        r.msg().class(),
        Class::Success,
        "channel bind: {:?}",
        r.code()
    );
    client
        .conn
        .send(&[0x40, 0x01, 0, 3, b'a', b'b', b'c', 0])
        .await;
    let (n, _) = tokio::time::timeout(WAIT, peer.recv_from(&mut b))
        .await
        .expect("peer got cd")
        .expect("recv");
    assert_eq!(&b[..n], b"abc");
    peer.send_to(b"xyz", relayed).await.expect("peer send");
    let cd = client.conn.recv().await;
    assert_eq!(&cd[..7], &[0x40, 0x01, 0, 3, b'x', b'y', b'z']);

    let r = client
        .request(method::REFRESH, &[(attr::LIFETIME, vec![0, 0, 0, 0])])
        .await;
    assert_eq!(r.msg().class(), Class::Success, "refresh 0: {:?}", r.code());
}

#[tokio::test]
async fn udp_binding_and_relay() {
    let running = start(&config()).expect("start");
    let server = running.addrs().udp[0];
    assert_ne!(server.port(), 0);
    let sock = UdpSocket::bind((LO, 0)).await.expect("client");
    sock.connect(server).await.expect("connect");
    let me = sock.local_addr().expect("addr");
    let mut client = Client::new(Conn::Udp(sock));
    let r = client.binding().await;
    assert_eq!(r.msg().class(), Class::Success);
    assert_eq!(r.addr(attr::XOR_MAPPED_ADDRESS), Some(me));
    relay_round_trip(&mut client, &running).await;
    assert_eq!(running.control().total_allocations(), 0);
    running.shutdown();
    running.stopped().await;
    running.join().expect("clean stop");
}

#[tokio::test]
async fn tcp_relay_and_close_frees_allocation() {
    let running = start(&config()).expect("start");
    let tcp = TcpStream::connect(running.addrs().tcp[0])
        .await
        .expect("connect");
    let mut client = Client::new(Conn::Stream(Box::new(tcp)));
    assert_eq!(client.binding().await.msg().class(), Class::Success);
    relay_round_trip(&mut client, &running).await;

    // An allocation on a connection goes away when the connection closes.
    let udp_transport = vec![attr::TRANSPORT_UDP, 0, 0, 0];
    let r = client
        .request(
            method::ALLOCATE,
            &[(attr::REQUESTED_TRANSPORT, udp_transport)],
        )
        .await;
    assert_eq!(r.msg().class(), Class::Success, "{:?}", r.code());
    assert_eq!(running.control().total_allocations(), 1);
    drop(client);
    let gone = async {
        while running.control().total_allocations() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, gone)
        .await
        .expect("allocation freed on close");
    running.shutdown();
    running.join().expect("clean stop");
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tls_files() -> (TempDir, TlsConfig, CertificateDer<'static>) {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "plenary-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    std::fs::write(dir.join("c.pem"), ck.cert.pem()).expect("cert");
    std::fs::write(dir.join("k.pem"), ck.key_pair.serialize_pem()).expect("key");
    let cfg = TlsConfig {
        cert: dir.join("c.pem"),
        key: dir.join("k.pem"),
        cipher_list: vec![],
    };
    (TempDir(dir), cfg, ck.cert.der().clone())
}

async fn tls_connect(addr: SocketAddr, root: &CertificateDer<'static>) -> Conn {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).expect("root");
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("handshake");
    Conn::Stream(Box::new(tls))
}

#[tokio::test]
async fn tls_and_plain_on_both_tcp_ports() {
    let (_dir, tls, root) = tls_files();
    let cfg = TurnConfig {
        tls_listening_port: Some(0),
        tls: Some(tls),
        ..config()
    };
    let running = start(&cfg).expect("start");
    let addrs = running.addrs().clone();
    assert_eq!(addrs.tls.len(), 1);
    // TLS on the TLS port, with a full relay round trip.
    let mut client = Client::new(tls_connect(addrs.tls[0], &root).await);
    relay_round_trip(&mut client, &running).await;
    // Plain TCP on the TLS port, TLS on the main port.
    for conn in [
        Conn::Stream(Box::new(
            TcpStream::connect(addrs.tls[0]).await.expect("plain"),
        )),
        tls_connect(addrs.tcp[0], &root).await,
    ] {
        let mut c = Client::new(conn);
        assert_eq!(c.binding().await.msg().class(), Class::Success);
    }
    running.reload_tls().expect("reload");
    running.shutdown();
    running.join().expect("clean stop");
}

#[tokio::test]
async fn drain_refuses_new_allocations_and_stops_when_empty() {
    let running = start(&config()).expect("start");
    let server = running.addrs().udp[0];
    let mut clients = Vec::new();
    for _ in 0..2 {
        let sock = UdpSocket::bind((LO, 0)).await.expect("client");
        sock.connect(server).await.expect("connect");
        clients.push(Client::new(Conn::Udp(sock)));
    }
    let udp_transport = vec![attr::TRANSPORT_UDP, 0, 0, 0];
    let r = clients[0]
        .request(
            method::ALLOCATE,
            &[(attr::REQUESTED_TRANSPORT, udp_transport.clone())],
        )
        .await;
    assert_eq!(r.msg().class(), Class::Success, "{:?}", r.code());

    running.drain();
    assert_eq!(running.control().phase(), Phase::Draining);
    // New TCP connections are no longer accepted (give the acceptor a moment to stop).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = TcpStream::connect(running.addrs().tcp[0]).await;
    assert!(refused.is_err(), "TCP still accepting while draining");
    let r = clients[1]
        .request(
            method::ALLOCATE,
            &[(attr::REQUESTED_TRANSPORT, udp_transport)],
        )
        .await;
    assert_eq!(
        r.msg().class(),
        Class::Error,
        "allocation granted while draining"
    );

    // The last allocation going away completes the drain.
    let r = clients[0]
        .request(method::REFRESH, &[(attr::LIFETIME, vec![0, 0, 0, 0])])
        .await;
    assert_eq!(r.msg().class(), Class::Success);
    tokio::time::timeout(WAIT, running.stopped())
        .await
        .expect("drain completed");
    running.join().expect("clean stop");
}

#[tokio::test]
async fn garbage_is_survived() {
    let running = start(&config()).expect("start");
    let sock = UdpSocket::bind((LO, 0)).await.expect("client");
    sock.connect(running.addrs().udp[0]).await.expect("connect");
    for junk in [
        &[][..],
        &[0xff; 3][..],
        &[0x00, 0x01, 0xff, 0xff][..],
        &[0x40, 0x00, 0x10, 0x00][..],
        &[0u8; 1400][..],
    ] {
        let _ = sock.send(junk).await;
    }
    let mut tcp = TcpStream::connect(running.addrs().tcp[0])
        .await
        .expect("connect");
    tcp.write_all(b"\xff\xff\xff\xff").await.expect("write");
    let mut b = [0u8; 1];
    let closed = tokio::time::timeout(WAIT, tcp.read(&mut b))
        .await
        .expect("closed in time");
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "server kept a garbage stream open"
    );
    let mut client = Client::new(Conn::Udp(sock));
    assert_eq!(client.binding().await.msg().class(), Class::Success);
    running.shutdown();
    running.join().expect("clean stop");
}

#[tokio::test]
async fn ipv6_loopback_listener_and_relay() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        return; // no IPv6 on this host
    }
    let v6 = IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
    let mut cfg = TurnConfig {
        listening_ips: vec![LO, v6],
        ..config()
    };
    cfg.peers.allowed.push("::1".parse().expect("range"));
    let running = start(&cfg).expect("start");
    let addrs = running.addrs().clone();
    assert_eq!(addrs.udp.len(), 2);
    assert_eq!(addrs.udp[0].port(), addrs.udp[1].port());
    let server = addrs
        .udp
        .iter()
        .copied()
        .find(|a| a.is_ipv6())
        .expect("v6 listener");
    let sock = UdpSocket::bind((v6, 0)).await.expect("client");
    sock.connect(server).await.expect("connect");
    let mut client = Client::new(Conn::Udp(sock));
    assert_eq!(client.binding().await.msg().class(), Class::Success);
    let udp_transport = vec![attr::TRANSPORT_UDP, 0, 0, 0];
    let r = client
        .request(
            method::ALLOCATE,
            &[(attr::REQUESTED_TRANSPORT, udp_transport)],
        )
        .await;
    assert_eq!(r.msg().class(), Class::Success, "{:?}", r.code());
    // RFC 6156: an IPv6 client gets an IPv4 relay by default; either way it is ours.
    let relayed = r.addr(attr::XOR_RELAYED_ADDRESS).expect("relayed");
    assert!(relayed.ip() == LO || relayed.ip() == v6, "{relayed}");
    running.shutdown();
    running.join().expect("clean stop");
}

#[tokio::test]
async fn prometheus_names_are_exported() {
    let probe = std::net::TcpListener::bind((LO, 0)).expect("probe");
    let metrics_addr = probe.local_addr().expect("addr");
    drop(probe);
    // The only test in this binary that installs the global recorder.
    plenary_ops::metrics::start_exporter(metrics_addr).expect("exporter");
    let running = start(&config()).expect("start");
    let sock = UdpSocket::bind((LO, 0)).await.expect("client");
    sock.connect(running.addrs().udp[0]).await.expect("connect");
    let mut client = Client::new(Conn::Udp(sock));
    client.binding().await;
    let udp_transport = vec![attr::TRANSPORT_UDP, 0, 0, 0];
    let r = client
        .request(
            method::ALLOCATE,
            &[(attr::REQUESTED_TRANSPORT, udp_transport)],
        )
        .await;
    assert_eq!(r.msg().class(), Class::Success);
    let mut body = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut s = TcpStream::connect(metrics_addr).await.expect("metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("get");
        body.clear();
        let _ = tokio::time::timeout(WAIT, s.read_to_string(&mut body)).await;
        if body.contains("turn_total_allocations 1")
            && body.contains("plenary_turn_unauthorized_total")
        {
            break;
        }
    }
    for name in [
        "turn_total_allocations 1",
        "turn_total_traffic_rcvp",
        "turn_traffic_rcvp{realm=\"e2e.example.coop\"}",
        "stun_binding_request",
        "plenary_turn_unauthorized_total",
        "plenary_turn_allocations_created_total",
        "# HELP plenary_turn_udp_send_dropped_total",
    ] {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
    running.shutdown();
    running.join().expect("clean stop");
}

#[tokio::test]
async fn signals_reload_then_drain_to_stop() {
    let (_dir, tls, _root) = tls_files();
    let cfg = TurnConfig {
        tls: Some(tls),
        ..config()
    };
    let running = start(&cfg).expect("start");
    let control = running.control();
    // Registering here first means a signal can never hit the default action (death of
    // the test process), whatever the scheduling.
    let _handlers = plenary_ops::signals::Signals::new().expect("handlers");
    let task = tokio::spawn(run_until_stopped(running));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let kill = |sig: &str| {
        let pid = std::process::id().to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    };
    kill("-USR2");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(control.phase(), Phase::Running);
    // No allocations: the drain completes at once.
    kill("-TERM");
    let result = tokio::time::timeout(WAIT, task)
        .await
        .expect("stopped in time");
    result.expect("task").expect("clean stop");
    assert_eq!(control.phase(), Phase::Stopping);
}

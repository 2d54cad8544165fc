//! The `plenary turn` the fault tests run, the allocation they keep relaying through each
//! fault, and the TLS clients that vanish (`tests/faults_turn.rs`).

use crate::common::stun_client::*;
use crate::common::*;
use crate::faults_common::*;
use crate::turn_proc::{http_get, Proc};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// How a test's server is set up.
pub struct Opts {
    pub k: u16,
    pub relay_ports: u16,
    pub tls: bool,
    /// RLIMIT_NOFILE (soft and hard) the server starts with.
    pub nofile: Option<u64>,
    /// `stream_idle_timeout`, seconds.
    pub idle_timeout_s: u64,
}

impl Opts {
    pub fn new(k: u16) -> Opts {
        Opts {
            k,
            relay_ports: 200,
            tls: false,
            nofile: None,
            idle_timeout_s: IDLE_TIMEOUT_S,
        }
    }
}

/// `plenary turn` on a TOML config with short stream timeouts (3 s idle unless the test
/// says otherwise, 2 s TLS handshake), one worker, debug logs for plenary_turn, and metrics
/// on a free port.
pub struct Turn {
    pub proc: Proc,
    pub port: u16,
    pub tls_port: Option<u16>,
    pub metrics: SocketAddr,
    pub cert_der: Vec<u8>,
    _dir: tempfile::TempDir,
}

pub const IDLE_TIMEOUT_S: u64 = 3;
pub const HANDSHAKE_TIMEOUT_S: u64 = 2;

impl Turn {
    pub fn start(o: Opts) -> Turn {
        if server_kind() == ServerKind::Coturn {
            note_difference("fault tests run plenary's own TOML config and metrics");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let lo = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let port = free_port();
        let tls_port = o.tls.then(|| free_port_except(&lo, &[port]));
        let metrics = loopback(free_port_except(&lo, &[port, tls_port.unwrap_or(port)]));
        let (min, range_max) = relay_range(o.k);
        let max = (min + o.relay_ports - 1).min(range_max);
        let cert = make_cert(dir.path(), "turn");
        let mut toml = format!(
            "[listen]\nips = [\"127.0.0.1\"]\nport = {port}\n{tls_line}\
             [relay]\nips = [\"127.0.0.1\"]\nmin_port = {min}\nmax_port = {max}\n\
             [auth]\nrealm = \"{BARE_REALM}\"\nsecrets = [\"{BARE_SECRET}\"]\n\
             [peers]\nallow_loopback = true\n\
             [limits]\nstream_idle_timeout = {idle}\n\
             tls_handshake_timeout = {HANDSHAKE_TIMEOUT_S}\n\
             [ops]\nmetrics_addr = \"{metrics}\"\nlog_level = \"info,plenary_turn=debug\"\n\
             [server]\nworkers = 1\n",
            idle = o.idle_timeout_s,
            tls_line = tls_port
                .map(|t| format!("tls_port = {t}\n"))
                .unwrap_or_default(),
        );
        if o.tls {
            toml.push_str(&format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                cert.cert_path.display(),
                cert.key_path.display()
            ));
        }
        let conf = dir.path().join("turn.toml");
        std::fs::write(&conf, toml).expect("write config");
        let mut cmd = Command::new(plenary_bin());
        cmd.arg("turn").arg("--config").arg(&conf);
        if let Some(n) = o.nofile {
            limit_nofile(&mut cmd, n);
        }
        let mut proc = Proc::spawn(cmd, dir.path(), "turn");
        proc.wait_stun(loopback(port));
        let turn = Turn {
            proc,
            port,
            tls_port,
            metrics,
            cert_der: cert.der,
            _dir: dir,
        };
        // The metrics listener starts before the service; wait until it answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_get(metrics, "/healthz", None).0 != 200 {
            assert!(
                Instant::now() < deadline,
                "no metrics listener on {metrics}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        turn
    }

    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    pub fn tls_addr(&self) -> SocketAddr {
        loopback(self.tls_port.expect("started with TLS"))
    }

    pub fn client(&self, user: &str, t: Transport) -> TurnClient {
        let username = format!("{}:{user}", unix_now() + 3600);
        let password = rest_password(BARE_SECRET, &username);
        TurnClient::new(t, &username, &password)
    }

    pub fn scrape(&self) -> String {
        let (status, body) = http_get(self.metrics, "/metrics", None);
        assert_eq!(status, 200, "metrics endpoint: {body}");
        body
    }

    /// Polls the metrics until `series` reaches `at_least` (workers push counters once a
    /// second); returns the last value.
    pub fn wait_metric(&self, series: &str, at_least: f64) -> f64 {
        wait_at_least(at_least, || metric(&self.scrape(), series))
    }

    pub fn log_lines(&self, needle: &str) -> usize {
        count_lines(&self.proc.log(), needle)
    }

    pub fn open_fds(&self) -> usize {
        open_fds(self.proc.pid())
    }

    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.proc.pid())
    }
}

/// An allocation with a permission for `echo`, checked to relay.
pub fn relaying_allocation(turn: &Turn, user: &str, echo: &UdpSocket) -> TurnClient {
    let mut c = turn.client(user, Transport::udp(turn.addr()));
    c.allocate(None).expect("allocate");
    c.create_permission(echo.local_addr().expect("echo addr"))
        .expect("permission for the echo peer");
    assert!(round_trip(&mut c, echo, "before"), "relay does not work");
    c
}

/// One datagram through the allocation to `echo` and back; false if it did not return.
/// Stale data (sent before a fault) is skipped.
pub fn round_trip(c: &mut TurnClient, echo: &UdpSocket, tag: &str) -> bool {
    let echo_addr = echo.local_addr().expect("echo addr");
    let tag = format!("{tag}-{}", rand::random::<u32>());
    c.send_indication(echo_addr, tag.as_bytes());
    echo.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 1500];
    let mut echoed = false;
    while !echoed && Instant::now() < deadline {
        if let Ok((n, from)) = echo.recv_from(&mut buf) {
            if &buf[..n] == tag.as_bytes() {
                let _ = echo.send_to(&buf[..n], from);
                echoed = true;
            }
        }
    }
    while echoed && Instant::now() < deadline {
        match c.recv_data(Duration::from_millis(500)) {
            Some((_, data)) if data == tag.as_bytes() => return true,
            _ => {}
        }
    }
    false
}

pub fn echo_peer() -> UdpSocket {
    // 127.0.0.2: loopback (allow_loopback) but not the server's own address.
    UdpSocket::bind("127.0.0.2:0").expect("bind echo peer")
}

/// A fresh client can allocate over UDP and over TCP.
pub fn fresh_allocations_work(turn: &Turn, tag: &str) {
    let mut udp = turn.client(&format!("{tag}-udp"), Transport::udp(turn.addr()));
    assert!(
        udp.allocate(None).is_ok(),
        "{tag}: fresh UDP Allocate failed: {:?}",
        udp.last.as_ref().map(error_code)
    );
    let mut tcp = turn.client(&format!("{tag}-tcp"), Transport::tcp(turn.addr()));
    assert!(
        tcp.allocate(None).is_ok(),
        "{tag}: fresh TCP Allocate failed: {:?}",
        tcp.last.as_ref().map(error_code)
    );
    let _ = udp.refresh(0);
    let _ = tcp.refresh(0);
}

/// A rustls client config trusting exactly `der`.
pub fn tls_client_config(der: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
        .expect("root");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A TLS connection with its handshake done (the stream has a short read timeout).
pub fn tls_connect(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(config.clone(), name).expect("client");
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls.conn.is_handshaking() {
        assert!(
            Instant::now() < deadline,
            "TLS handshake with {addr} timed out"
        );
        match tls.conn.complete_io(&mut tls.sock) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("TLS handshake with {addr}: {e}"),
        }
    }
    tls
}

/// Starts a TLS handshake (ClientHello out, the server's first flight in), then goes
/// silent, as a client whose network vanished would.
pub fn vanish_mid_handshake(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> TcpStream {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(config.clone(), name).expect("client");
    let mut tcp = TcpStream::connect(addr).expect("connect");
    conn.write_tls(&mut tcp).expect("ClientHello");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut first = [0u8; 5];
    tcp.read_exact(&mut first).expect("server's first flight");
    assert_eq!(first[0], 0x16, "a TLS handshake record");
    tcp
}

//! Harness shared by the end-to-end tests: starts either plenary or coturn's `turnserver`
//! (env `PLENARY_TEST_SERVER=coturn`) on loopback, with free ports, and kills it by PID on
//! Drop. Each test binary uses a subset of this, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod cascade_node;
pub mod media;
pub mod sfu;
pub mod stun_client;
pub mod webdriver;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Which TURN server the harness runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Plenary,
    Coturn,
}

/// `PLENARY_TEST_SERVER=coturn` runs the suite against Debian's coturn, so that the tests
/// themselves are validated against the reference implementation.
pub fn server_kind() -> ServerKind {
    match std::env::var("PLENARY_TEST_SERVER").as_deref() {
        Err(_) | Ok("") | Ok("plenary") => ServerKind::Plenary,
        Ok("coturn") => ServerKind::Coturn,
        Ok(other) => panic!("PLENARY_TEST_SERVER={other:?}: expected `plenary` or `coturn`"),
    }
}

pub fn is_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

pub fn plenary_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_plenary"))
}

/// Finds an external program on PATH. A missing peer fails the run in CI; elsewhere the test
/// says SKIP loudly and returns early.
pub fn require_peer(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    if is_ci() {
        panic!("required peer program `{name}` is not installed (CI=true: a missing peer is a failure)");
    }
    eprintln!();
    eprintln!("!!!!!!!! SKIP: `{name}` is not on PATH; this test did NOT run !!!!!!!!");
    eprintln!();
    None
}

/// The coturn fixtures (BBB's two turnserver.conf files, unchanged) are in `tests/fixtures`
/// (`PLENARY_FIXTURES` overrides).
pub fn fixture(name: &str) -> PathBuf {
    let dir = match std::env::var_os("PLENARY_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "fixture {} not found (set PLENARY_FIXTURES to the fixtures folder)",
        path.display()
    );
    path
}

pub const INSTALL_FIXTURE: &str = "bbb-install-turnserver.conf";
pub const EXTERNAL_FIXTURE: &str = "bbb-external-turnserver.conf";

/// Reads `key=value` from a coturn-format file (first occurrence; quotes stripped).
pub fn conf_value(path: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).expect("read config");
    for line in text.lines() {
        let line = line.trim();
        if let Some((k, v)) = line.split_once('=') {
            if k.trim() == key {
                return v.trim().trim_matches('"').to_owned();
            }
        }
    }
    panic!("{key} not found in {}", path.display());
}

/// A port that is free for both UDP and TCP on every given address right now (the usual
/// bind-0-and-release race is acceptable on a test machine).
pub fn free_port_on(ips: &[IpAddr]) -> u16 {
    free_port_except(ips, &[])
}

/// As [`free_port_on`], never returning one of `taken` (ports picked but not yet bound).
pub fn free_port_except(ips: &[IpAddr], taken: &[u16]) -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind((ips[0], 0)).expect("bind probe");
        let port = probe.local_addr().expect("local addr").port();
        drop(probe);
        if taken.contains(&port) {
            continue;
        }
        let all_free = ips.iter().all(|ip| {
            TcpListener::bind((*ip, port)).is_ok() && UdpSocket::bind((*ip, port)).is_ok()
        });
        if all_free {
            return port;
        }
    }
    panic!("no free port found");
}

pub fn free_port() -> u16 {
    free_port_on(&[IpAddr::V4(Ipv4Addr::LOCALHOST)])
}

/// A UDP port `p` with `p + 1` free too (turnutils_peer and uclient use the RTCP port next
/// to the RTP one).
pub fn free_udp_pair(ip: IpAddr) -> u16 {
    for _ in 0..200 {
        let a = UdpSocket::bind((ip, 0)).expect("bind probe");
        let port = a.local_addr().expect("local addr").port();
        if port == u16::MAX {
            continue;
        }
        if UdpSocket::bind((ip, port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free UDP port pair found");
}

/// Disjoint relay port ranges, one per test (`k` is unique across the suite: see the list in
/// each test file). Below Linux's ephemeral range, so picked listening ports never collide.
pub fn relay_range(k: u16) -> (u16, u16) {
    assert!(k < 60, "relay range index out of bounds");
    let low = 20000 + 200 * k;
    (low, low + 199)
}

pub const BARE_SECRET: &str = "bare-test-secret";
pub const BARE_REALM: &str = "bare.example.test";

/// A coturn-format config with only what a TURN server needs (no allowed/denied peers, no
/// loopback or multicast options), plus `extra` lines; both servers read it.
pub fn bare_conf(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("bare-turnserver.conf");
    let text = format!(
        "listening-port=3478\n\
         listening-ip=127.0.0.1\n\
         relay-ip=127.0.0.1\n\
         min-port=49152\n\
         max-port=65535\n\
         fingerprint\n\
         lt-cred-mech\n\
         use-auth-secret\n\
         static-auth-secret={BARE_SECRET}\n\
         realm={BARE_REALM}\n\
         no-cli\n\
         {extra}"
    );
    std::fs::write(&path, text).expect("write bare config");
    path
}

/// How to start a server. Configs are coturn-format files, which both servers read, unless
/// `toml` is set (plenary's own format; plenary-only tests).
#[derive(Clone, Debug)]
pub struct ServerSpec {
    pub conf: PathBuf,
    pub toml: bool,
    pub relay_k: u16,
    /// Ask for a TLS listening port (also serves plain TCP).
    pub tls: bool,
    pub cert: Option<(PathBuf, PathBuf)>,
    pub allow_loopback: bool,
    pub allowed_peer_ips: Vec<String>,
    /// Extra listening+relay addresses besides the config's 127.0.0.1 (e.g. `::1`).
    pub extra_ips: Vec<IpAddr>,
    /// How many relay ports of the test's range to use (at most 200).
    pub relay_ports: u16,
}

impl ServerSpec {
    pub fn new(conf: PathBuf, relay_k: u16) -> Self {
        ServerSpec {
            conf,
            toml: false,
            relay_k,
            tls: false,
            cert: None,
            allow_loopback: false,
            allowed_peer_ips: Vec::new(),
            extra_ips: Vec::new(),
            relay_ports: 200,
        }
    }
}

/// A running TURN server; killed (by PID) when dropped, including on panic.
pub struct Server {
    child: Child,
    pub kind: ServerKind,
    pub port: u16,
    pub tls_port: Option<u16>,
    pub relay_range: (u16, u16),
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(spec: &ServerSpec) -> Server {
        let kind = server_kind();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        ips.extend(spec.extra_ips.iter().copied());
        let port = free_port_on(&ips);
        let tls_port = spec.tls.then(|| free_port_except(&ips, &[port]));
        let (min_port, range_max) = relay_range(spec.relay_k);
        assert!(
            (1..=200).contains(&spec.relay_ports),
            "relay_ports out of range"
        );
        let max_port = (min_port + spec.relay_ports - 1).min(range_max);
        let log_path = dir.path().join("server.log");

        let mut cmd = match kind {
            ServerKind::Plenary => {
                let mut c = Command::new(plenary_bin());
                let flag = if spec.toml {
                    "--config"
                } else {
                    "--coturn-conf"
                };
                c.arg("turn").arg(flag).arg(&spec.conf);
                c.arg("--no-metrics");
                // PLENARY_TEST_LOG=debug for verbose server logs (shown on failure).
                if let Ok(level) = std::env::var("PLENARY_TEST_LOG") {
                    c.arg("--log-level").arg(level);
                }
                if !spec.extra_ips.is_empty() {
                    // plenary's --listening-ip replaces the file's list: name them all.
                    for ip in &ips {
                        c.arg("--listening-ip").arg(ip.to_string());
                        c.arg("--relay-ip").arg(ip.to_string());
                    }
                }
                if let Some(t) = tls_port {
                    c.arg("--tls-listening-port").arg(t.to_string());
                }
                c
            }
            ServerKind::Coturn => {
                assert!(
                    !spec.toml,
                    "a TOML config is plenary-only; check server_kind() first"
                );
                let mut c = Command::new("turnserver");
                c.arg("-c").arg(&spec.conf);
                // coturn adds CLI listening/relay IPs to the file's.
                for ip in &spec.extra_ips {
                    c.arg("--listening-ip").arg(ip.to_string());
                    c.arg("--relay-ip").arg(ip.to_string());
                }
                // Always pin the TLS port: coturn would otherwise take 5349 in every test.
                let t = tls_port.unwrap_or_else(|| free_port_except(&ips, &[port]));
                c.arg("--tls-listening-port").arg(t.to_string());
                c.arg("--no-dtls").arg("--no-cli");
                c.arg("--pidfile").arg(dir.path().join("turnserver.pid"));
                c.arg("--db").arg(dir.path().join("turndb"));
                c.arg("--log-file").arg("stdout");
                c
            }
        };
        cmd.arg("--listening-port").arg(port.to_string());
        cmd.arg("--min-port").arg(min_port.to_string());
        cmd.arg("--max-port").arg(max_port.to_string());
        if let Some((cert, key)) = &spec.cert {
            cmd.arg("--cert").arg(cert).arg("--pkey").arg(key);
        }
        if spec.allow_loopback {
            cmd.arg("--allow-loopback-peers");
        }
        for ip in &spec.allowed_peer_ips {
            cmd.arg(format!("--allowed-peer-ip={ip}"));
        }
        let log = std::fs::File::create(&log_path).expect("create log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .current_dir(dir.path());
        eprintln!("starting {kind:?}: {cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {kind:?}: {e}"));
        let mut server = Server {
            child,
            kind,
            port,
            tls_port,
            relay_range: (min_port, max_port),
            log_path,
            _dir: dir,
        };
        server.wait_ready();
        server
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }

    pub fn addr_v6(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), self.port)
    }

    pub fn tls_addr(&self) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            self.tls_port.expect("server started without a TLS port"),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to this server's PID only.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) on the PID of a child we spawned and have not yet reaped.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Whether the process is still running (it has not exited).
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{:?} server did not become ready: {why}\n--- server log (tail) ---\n{}",
            self.kind,
            tail.join("\n")
        );
    }

    /// Polls with STUN Binding over UDP (and TCP connects) with bounded retries.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut udp_ok = false;
        for _ in 0..200 {
            if Instant::now() > deadline {
                break;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.fail(&format!("process exited early with {status}"));
            }
            if stun_client::udp_binding(self.addr(), Duration::from_millis(100)).is_some() {
                udp_ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !udp_ok {
            self.fail("no STUN Binding answer over UDP");
        }
        let mut stream_ports = vec![self.port];
        stream_ports.extend(self.tls_port);
        for port in stream_ports {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            let ok = (0..100).any(|_| {
                let ok = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
                if !ok {
                    std::thread::sleep(Duration::from_millis(50));
                }
                ok
            });
            if !ok {
                self.fail(&format!("no TCP listener on {addr}"));
            }
        }
    }

    /// Waits (bounded) for the process to exit; returns its status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- {:?} server log (tail) ---\n{}",
                self.kind,
                tail.join("\n")
            );
        }
    }
}

/// A helper process (turnutils_peer, chromedriver) killed by PID on Drop.
pub struct Guard {
    pub child: Child,
    pub name: String,
}

impl Guard {
    pub fn spawn(mut cmd: Command, name: &str) -> Guard {
        cmd.stdin(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name}: {e}"));
        Guard {
            child,
            name: name.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command with a hard timeout, killing it by PID if it overruns.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> (Output, bool) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    (
        Output {
            status,
            stdout,
            stderr,
        },
        timed_out,
    )
}

/// `plenary cred`: the username (line 1) and password (line 2) BBB would compute.
pub fn plenary_cred(secret: &str, user: Option<&str>, ttl: i64) -> (String, String) {
    let mut cmd = Command::new(plenary_bin());
    cmd.arg("cred").arg("--secret").arg(secret);
    if let Some(user) = user {
        cmd.arg("--user").arg(user);
    }
    cmd.arg("--ttl").arg(ttl.to_string());
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(10));
    assert!(!timed_out, "plenary cred hung");
    assert!(
        out.status.success(),
        "plenary cred failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut lines = text.lines();
    let username = lines.next().expect("username line").to_owned();
    let password = lines.next().expect("password line").to_owned();
    (username, password)
}

/// The TURN REST password: base64(HMAC-SHA1(secret, username)), computed independently.
pub fn rest_password(secret: &str, username: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub fn unix_now() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    i64::try_from(secs).expect("time fits")
}

/// A self-signed certificate for localhost/127.0.0.1, written as PEM files.
pub struct TestCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub der: Vec<u8>,
}

pub fn make_cert(dir: &Path, name: &str) -> TestCert {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("rcgen");
    let cert_path = dir.join(format!("{name}-cert.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert_path, ck.cert.pem()).expect("write cert");
    std::fs::write(&key_path, ck.key_pair.serialize_pem()).expect("write key");
    TestCert {
        cert_path,
        key_path,
        der: ck.cert.der().to_vec(),
    }
}

/// Prints a loud line for behaviour that differs between plenary and coturn, so a coturn run
/// shows what it did not assert.
pub fn note_difference(what: &str) {
    eprintln!("NOTE [{:?}]: {what}", server_kind());
}

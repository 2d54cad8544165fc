//! `plenary probe turn` against Debian's coturn on loopback: the probe must work against
//! a TURN server that is not ours. Skipped (with a message) when `turnserver` is not
//! installed, except on CI (CI=true), where that is a failure.
//!
//! A functional test, not a benchmark: timing limits are relaxed so a busy machine does
//! not fail it; loss must still be zero.

use clap::Parser;
use plenary_turn::stun::{method, Class, Message, MessageWriter};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SECRET: &str = "probe-test-secret";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: plenary_probe::turn::TurnProbeArgs,
}

/// The turnserver this test started; killed by its PID on drop.
struct Coturn {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_turnserver() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("turnserver"))
        .find(|p| p.is_file())
}

/// A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both).
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port");
}

/// Sends Binding requests until the server answers (bounded: 50 tries, 100 ms apart).
fn wait_until_listening(port: u16) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut req = [0u8; 64];
    let txid = [7u8; 12];
    let n = MessageWriter::new(&mut req, method::BINDING, Class::Request, &txid)
        .expect("writer")
        .finish();
    let mut buf = [0u8; 512];
    for _ in 0..50 {
        let _ = sock.send_to(&req[..n], ("127.0.0.1", port));
        if let Ok(len) = sock.recv(&mut buf) {
            if Message::parse(&buf[..len]).is_ok_and(|m| m.class() == Class::Success) {
                return true;
            }
        }
    }
    false
}

fn start_coturn(bin: &Path, dir: &Path) -> Coturn {
    let port = free_port();
    // Relay ports: a range derived from the listening port, inside the ephemeral range;
    // coturn skips ports that happen to be taken.
    let min = 49_152 + (u32::from(port) * 7) % 15_000;
    let log = dir.join("turnserver.log");
    let child = Command::new(bin)
        .args([
            "-n",
            "--listening-ip",
            "127.0.0.1",
            "--relay-ip",
            "127.0.0.1",
        ])
        .args(["--listening-port", &port.to_string()])
        .args([
            "--min-port",
            &min.to_string(),
            "--max-port",
            &(min + 300).to_string(),
        ])
        .args([
            "--use-auth-secret",
            "--static-auth-secret",
            SECRET,
            "--realm",
            "probe",
        ])
        .args([
            "--allow-loopback-peers",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
        ])
        .args(["--simple-log", "--log-file"])
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start turnserver");
    let server = Coturn { child, port, log };
    assert!(
        wait_until_listening(port),
        "turnserver did not answer on 127.0.0.1:{port}; log in {}",
        server.log.display()
    );
    server
}

fn probe(server: &Coturn, report: &Path, extra: &[&str]) -> i32 {
    let port = server.port.to_string();
    let pid = server.child.id().to_string();
    let mut argv = vec![
        "probe",
        "--server",
        "",
        "--secret",
        SECRET,
        "--allocations",
        "5",
        "--flow",
        "audio",
        "--duration",
        "3",
        "--warmup",
        "1",
        "--server-pid",
        &pid,
        "--report",
        report.to_str().expect("utf-8 path"),
        "--quiet",
        // Functional test on a shared machine: do not judge timing.
        "--max-lag-ms",
        "5000",
        "--max-rtt-ms",
        "5000",
        "--max-jitter-ms",
        "5000",
        "--max-probe-cpu-pct",
        "10000",
    ];
    let addr = format!("127.0.0.1:{port}");
    argv[2] = &addr;
    argv.extend_from_slice(extra);
    let cli = Cli::try_parse_from(argv).expect("arguments parse");
    plenary_probe::turn::run(cli.args).expect("probe runs")
}

fn check_report(dir: &Path, transport: &str) {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    let r: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    for field in [
        "tool",
        "version",
        "started_unix",
        "command",
        "config",
        "thresholds",
        "limits",
        "result",
        "allocations",
        "server",
        "steps",
        "timeline",
    ] {
        assert!(r.get(field).is_some(), "report.json lacks {field}");
    }
    assert_eq!(r["tool"], "plenary probe turn");
    assert_eq!(r["config"]["transport"], transport);
    assert_eq!(r["result"]["verdict"], "ok", "{:#}", r["result"]);
    assert_eq!(r["result"]["exit_code"], 0);
    assert_eq!(r["result"]["capacity"], 5);
    assert_eq!(r["allocations"]["succeeded"], 5);
    assert_eq!(r["allocations"]["failed"], 0);
    assert!(
        !text.contains(SECRET),
        "the secret must not be in the report"
    );
    let step = &r["steps"][0];
    let sent = step["sent"].as_u64().expect("sent");
    // 5 flows x 50 pps x 3 s, give or take scheduling at the window edges.
    assert!((600..=900).contains(&sent), "sent {sent}");
    assert_eq!(step["lost"], 0, "{step:#}");
    assert_eq!(step["loss_pct"], 0.0);
    assert_eq!(step["back"], sent, "every packet echoed back");
    assert_eq!(step["at_peer"], sent);
    assert!(step["delay_ms"]["count"].as_u64() == Some(sent));
    assert!(r["server"]["cpu_seconds"].as_f64().expect("server cpu") >= 0.0);
    assert!(r["server"]["peak_rss_kb"].as_u64().expect("server rss") > 0);
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
    assert!(html.contains("<svg") && !html.contains("<script"));
}

#[test]
fn probe_against_coturn() {
    let Some(bin) = find_turnserver() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("turnserver (Debian package coturn) is required on CI");
        }
        println!("SKIP: turnserver not installed (apt-get install coturn)");
        return;
    };
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("probe-coturn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let server = start_coturn(&bin, &dir);

    let udp = dir.join("udp");
    assert_eq!(
        probe(&server, &udp, &[]),
        0,
        "log: {}",
        server.log.display()
    );
    check_report(&udp, "udp");

    // The stream path (framing, padding) and Send/Data indications.
    let tcp = dir.join("tcp");
    let code = probe(&server, &tcp, &["--transport", "tcp", "--send-indications"]);
    assert_eq!(code, 0, "log: {}", server.log.display());
    check_report(&tcp, "tcp");
}

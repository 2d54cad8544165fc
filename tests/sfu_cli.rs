//! `plenary sfu` and `plenary cred --room` as an operator runs them: help, config errors,
//! start on loopback, the demo page and WHEP errors over real HTTP, drain on SIGTERM.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn plenary(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(plenary_bin());
    cmd.args(args);
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(20));
    assert!(!timed_out, "plenary {args:?} hung");
    out
}

fn all_text(out: &std::process::Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

/// One HTTP/1.1 request; returns (status, body).
fn http(addr: SocketAddr, req: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    (status, body)
}

#[test]
fn sfu_help_explains_the_contract_flags() {
    let out = plenary(&["sfu", "--help"]);
    assert!(out.status.success(), "{}", all_text(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--http",
        "--media",
        "--public-ip",
        "--metrics",
        "--no-metrics",
    ] {
        assert!(help.contains(flag), "sfu --help lacks {flag}:\n{help}");
    }
}

#[test]
fn sfu_config_errors_name_file_line_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sfu.toml");
    std::fs::write(&path, "[rooms]\naudio-slots = 3\nlast-n = \"nine\"\n").unwrap();
    let out = plenary(&["sfu", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = all_text(&out);
    assert!(text.contains(&format!("{}:3:", path.display())), "{text}");
    assert!(text.contains("fix:"), "{text}");
}

#[test]
fn sfu_starts_serves_the_demo_page_metrics_and_drains_on_sigterm() {
    // A free loopback port for the exporter (it does not report a port-0 bind).
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics_arg = metrics_addr.to_string();
    let mut child = Command::new(plenary_bin())
        .args([
            "sfu",
            "--http",
            "127.0.0.1:0",
            "--media",
            "127.0.0.1:0",
            "--metrics",
            &metrics_arg,
            "--log-level",
            "info",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plenary sfu");
    let pid = child.id() as i32;
    // Lines arrive on a channel so every wait below is bounded.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut http_addr = None;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(rest) = line.split(" http=").nth(1) {
            http_addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            break;
        }
    }
    let Some(addr): Option<SocketAddr> = http_addr else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("plenary sfu did not log its http address");
    };
    let (status, body) = http(
        addr,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(
        body.contains("<html") || body.contains("<!doctype"),
        "{body}"
    );
    let (status, body) = http(
        addr,
        "POST /whep/ga HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nv=0",
    );
    assert_eq!(status, 415, "{body}");
    // The worker publishes its gauges every 200 ms.
    std::thread::sleep(Duration::from_millis(500));
    let (status, body) = http(
        metrics_addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(body.contains("plenary_sfu_peers{worker=\"0\"} 0"), "{body}");
    assert!(body.contains("# HELP plenary_sfu_peers"), "{body}");
    // SAFETY: kill(2) on the child this test spawned.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let t0 = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if t0.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The reader ends when the pipe closes; the timeout only bounds a stuck pipe.
    let rest: Vec<String> =
        std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(2)).ok()).collect();
    let status = status.expect("plenary sfu did not stop within 15 s of SIGTERM");
    assert!(status.success(), "exit {status:?}:\n{}", rest.join("\n"));
    assert!(
        rest.iter().any(|l| l.contains("draining")),
        "{}",
        rest.join("\n")
    );
}

#[test]
fn cred_room_prints_a_token_the_sfu_accepts() {
    let secret = "0123456789abcdef-room-secret";
    let out = plenary(&[
        "cred", "--secret", secret, "--room", "ga", "--user", "ada", "--ttl", "60",
    ]);
    assert!(out.status.success(), "{}", all_text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = plenary_sfu::token::verify(&[secret.to_owned()], Some(&token), "ga", now)
        .expect("token verifies")
        .expect("claims");
    assert_eq!(claims.name.as_deref(), Some("ada"));
    assert!(plenary_sfu::token::verify(&[secret.to_owned()], Some(&token), "other", now).is_err());
}

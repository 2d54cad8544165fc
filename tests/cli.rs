//! The command line an operator and BBB's scripts touch: `check-config`, `cred`, `--help`.
//! These run the plenary binary only (PLENARY_TEST_SERVER does not apply).

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn plenary(args: &[&str]) -> Output {
    let mut cmd = Command::new(plenary_bin());
    cmd.args(args);
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(20));
    assert!(!timed_out, "plenary {args:?} hung");
    out
}

fn text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

fn check_config(path: &Path) -> Output {
    plenary(&[
        "check-config",
        "--coturn-conf",
        path.to_str().expect("utf-8 path"),
    ])
}

#[test]
fn check_config_accepts_install_fixture() {
    let path = fixture(INSTALL_FIXTURE);
    let out = check_config(&path);
    let all = text(&out);
    assert!(out.status.success(), "check-config failed:\n{all}");
    let ok_line = format!("{}: OK", path.display());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == ok_line),
        "no `{ok_line}` line:\n{all}"
    );
}

#[test]
fn check_config_accepts_external_fixture_and_names_dh_file() {
    let path = fixture(EXTERNAL_FIXTURE);
    let out = check_config(&path);
    let all = text(&out);
    assert!(out.status.success(), "check-config failed:\n{all}");
    assert!(
        all.contains(&format!("{}: OK", path.display())),
        "no OK line:\n{all}"
    );
    // dh-file has no meaning for rustls; it must be named, never silently dropped.
    let named: Vec<&str> = all.lines().filter(|l| l.contains("dh-file")).collect();
    assert_eq!(named.len(), 1, "expected one line naming dh-file:\n{all}");
}

#[test]
fn check_config_names_the_broken_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken-turnserver.conf");
    // Line 4 is wrong; the others are fine.
    std::fs::write(
        &path,
        "# a BBB-like config with one typo\n\
         listening-ip=127.0.0.1\n\
         realm=bbb.example.coop\n\
         listening-port=34x78\n\
         use-auth-secret\n\
         static-auth-secret=abc\n",
    )
    .expect("write");
    let out = check_config(&path);
    let all = text(&out);
    assert!(!out.status.success(), "a broken config passed:\n{all}");
    assert!(
        all.contains(&format!("{}:4", path.display())),
        "error does not name file:line 4:\n{all}"
    );
    assert!(
        all.contains("listening-port"),
        "error does not name the option:\n{all}"
    );
    assert!(!all.contains(": OK"), "says OK on error:\n{all}");
}

#[test]
fn check_config_rejects_a_missing_file() {
    let out = plenary(&[
        "check-config",
        "--coturn-conf",
        "/nonexistent/turnserver.conf",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("/nonexistent/turnserver.conf"));
}

#[test]
fn cred_prints_bbb_rest_pair() {
    let secret = "Zm9vYmFyLXRlc3Qtc2VjcmV0LW9ubHk=";
    let before = unix_now();
    let out = plenary(&[
        "cred", "--secret", secret, "--user", "alice", "--ttl", "3600",
    ]);
    let after = unix_now();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "expected exactly two lines:\n{stdout}");
    let (username, password) = (lines[0], lines[1]);
    let (expiry, user) = username.split_once(':').expect("EXPIRY:USER");
    assert_eq!(user, "alice");
    let expiry: i64 = expiry.parse().expect("numeric expiry");
    assert!(
        (before + 3600..=after + 3600).contains(&expiry),
        "expiry {expiry} is not now + ttl"
    );
    assert_eq!(
        password,
        rest_password(secret, username),
        "password != base64(HMAC-SHA1)"
    );
}

#[test]
fn cred_without_user_is_bare_expiry() {
    let out = plenary(&["cred", "--secret", "s3cret", "--ttl", "60"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let mut lines = stdout.lines();
    let username = lines.next().expect("username");
    let password = lines.next().expect("password");
    assert!(
        username.parse::<i64>().is_ok(),
        "bare expiry expected: {username}"
    );
    assert_eq!(password, rest_password("s3cret", username));
}

#[test]
fn cred_json_matches_the_two_line_form() {
    let out = plenary(&["cred", "--secret", "s3cret", "--user", "bob", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let username = v["username"].as_str().expect("username");
    let password = v["password"].as_str().expect("password");
    assert!(username.ends_with(":bob"));
    assert_eq!(password, rest_password("s3cret", username));
}

#[test]
fn turn_help_mentions_every_flag() {
    let out = plenary(&["turn", "--help"]);
    assert!(out.status.success(), "{}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    let flags = [
        "--config",
        "--coturn-conf",
        "--listening-port",
        "--tls-listening-port",
        "--listening-ip",
        "--relay-ip",
        "--min-port",
        "--max-port",
        "--cert",
        "--pkey",
        "--static-auth-secret",
        "--allow-loopback-peers",
        "--allowed-peer-ip",
        "--no-metrics",
        "--metrics",
        "--log-level",
        "--workers",
    ];
    let missing: Vec<&str> = flags
        .iter()
        .copied()
        .filter(|f| {
            !help
                .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
                .any(|w| w == *f)
        })
        .collect();
    assert!(missing.is_empty(), "turn --help lacks {missing:?}:\n{help}");
}

#[test]
fn top_level_help_lists_subcommands() {
    let out = plenary(&["--help"]);
    assert!(out.status.success(), "{}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["turn", "cred", "check-config"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "--help does not list `{sub}`:\n{help}"
        );
    }
}

/// `plenary egress` runs with no arguments (the binary's contract): it pulls room `demo` from
/// the local SFU's embedded address and writes HLS into ./plenary-egress-hls/. Nothing serves
/// WHEP at that address here, so it keeps trying until --duration ends it, cleanly.
#[test]
fn egress_runs_on_its_embedded_defaults() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(plenary_bin());
    cmd.args(["egress", "--duration", "2"])
        .current_dir(dir.path());
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(30));
    let all = text(&out);
    assert!(!timed_out, "egress did not stop after --duration:\n{all}");
    assert!(
        all.contains("writing HLS to plenary-egress-hls/"),
        "no default output announced:\n{all}"
    );
    assert_ne!(
        out.status.code(),
        Some(2),
        "usage error without arguments:\n{all}"
    );
}

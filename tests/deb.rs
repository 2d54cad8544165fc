//! The Debian package, as an operator uses it: `scripts/build-deb` packages the test
//! profile's binary (stripped, gzip -1: about a second, where a release build would take
//! minutes on two cores; the package's layout and scripts are the same), `dpkg -i` installs
//! it beside the coturn already on the machine, the plenary-turn unit's ExecStart runs as the
//! unit's user on BBB's installer config, `turnutils_uclient` relays through it, and
//! `dpkg --purge` leaves no plenary process and coturn still installed.
//!
//! It needs root (dpkg) and coturn's tools. Relay port ranges used here: k = 47.

mod common;
mod turn_proc;

use common::*;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use turn_proc::Proc;

fn run(cmd: Command, limit: u64) -> (bool, String) {
    let shown = format!("{cmd:?}");
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(limit));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(!timed_out, "{shown} overran {limit} s:\n{text}");
    (out.status.success(), text)
}

fn sh(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// dpkg with its lock: another dpkg run (another test process) waits its turn, bounded.
fn dpkg(args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (ok, text) = run(sh("dpkg", args), 180);
        if ok {
            return text;
        }
        let locked = text.contains("lock");
        assert!(
            locked && Instant::now() < deadline,
            "dpkg {args:?} failed:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn package_status(name: &str) -> String {
    let (_, text) = run(sh("dpkg-query", &["-W", "-f=${Status}", name]), 30);
    text
}

/// Processes whose executable is the packaged binary (also once deleted from disk).
fn packaged_processes() -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(exe) = std::fs::read_link(entry.path().join("exe")) {
            if exe.to_string_lossy().starts_with("/usr/bin/plenary") {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Purges the package on the way out, also when an assertion failed half-way.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = run(sh("dpkg", &["--purge", "plenary"]), 180);
        }
    }
}

/// One package test at a time on this machine (several `cargo test` runs may share it).
fn machine_lock() -> File {
    let f = File::create(std::env::temp_dir().join("plenary-deb-test.lock")).expect("lock file");
    // SAFETY: flock(2) on a descriptor we own; released when the File closes.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock");
    f
}

fn echo_peer(bin: &Path) -> (common::Guard, u16) {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = free_udp_pair(ip);
    let mut cmd = Command::new(bin);
    cmd.args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let guard = common::Guard::spawn(cmd, "turnutils_peer");
    let probe = UdpSocket::bind((ip, 0)).expect("bind probe");
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let ready = (0..100).any(|_| {
        let _ = probe.send_to(b"ready?", (ip, port));
        matches!(probe.recv_from(&mut buf), Ok((6, _)))
    });
    assert!(ready, "turnutils_peer did not echo");
    (guard, port)
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.rfind(key)? + key.len();
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

#[test]
fn the_deb_installs_beside_coturn_relays_and_leaves_nothing_running() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(!is_ci(), "the package test needs root (dpkg -i) in CI");
        eprintln!("\n!!!!!!!! SKIP: not root, the .deb was NOT installed or tested !!!!!!!!\n");
        return;
    }
    let (Some(uclient), Some(peer_bin), Some(_), Some(_), Some(_)) = (
        require_peer("turnutils_uclient"),
        require_peer("turnutils_peer"),
        require_peer("dpkg-deb"),
        require_peer("setpriv"),
        require_peer("start-stop-daemon"),
    ) else {
        return;
    };
    let _lock = machine_lock();
    let coturn_before = package_status("coturn");

    // Build.
    let out = tempfile::tempdir().expect("tempdir");
    let mut build = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-deb"));
    build
        .arg("--binary")
        .arg(plenary_bin())
        .args(["--strip", "--fast", "--out"])
        .arg(out.path());
    let (ok, text) = run(build, 300);
    assert!(ok, "scripts/build-deb failed:\n{text}");
    let deb = PathBuf::from(text.lines().last().expect("the .deb path").trim());
    assert!(deb.is_file(), "no .deb at {}", deb.display());
    let (_, fields) = run(sh("dpkg-deb", &["-f", &deb.to_string_lossy()]), 30);
    assert!(fields.contains("Package: plenary"), "{fields}");
    assert!(
        fields.contains("Provides: turn-server, stun-server"),
        "the relation to coturn (the same virtual package): {fields}"
    );
    assert!(
        !fields.contains("Conflicts:") && !fields.contains("Breaks:"),
        "installing must not remove coturn: {fields}"
    );

    // Install beside coturn.
    let installed = Installed;
    dpkg(&["-i", &deb.to_string_lossy()]);
    assert_eq!(package_status("plenary"), "install ok installed");
    assert_eq!(package_status("coturn"), coturn_before, "coturn untouched");
    let (user_ok, _) = run(sh("getent", &["passwd", "plenary"]), 10);
    assert!(user_ok, "the package created the plenary user");
    for f in [
        "/usr/bin/plenary",
        "/etc/plenary/turn.toml",
        "/etc/plenary/sfu.toml",
        "/lib/systemd/system/plenary-sfu.service",
        "/usr/share/plenary/grafana/plenary.json",
    ] {
        assert!(Path::new(f).is_file(), "{f} not installed");
    }

    // The unit's command line, run as the unit's user, on BBB's installer config (copied
    // unchanged to stand in for /etc/turnserver.conf), with the test's ports and its
    // loopback peer allowed.
    let unit = std::fs::read_to_string("/lib/systemd/system/plenary-turn.service").expect("unit");
    let line = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the unit:\n{unit}"))
            .trim()
            .to_owned()
    };
    let exec = line("ExecStart=");
    let user = line("User=");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(
        words,
        [
            "/usr/bin/plenary",
            "turn",
            "--coturn-conf",
            "/etc/turnserver.conf"
        ],
        "the unit takes over coturn's config"
    );
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let conf = conf_dir.path().join("turnserver.conf");
    std::fs::copy(fixture(INSTALL_FIXTURE), &conf).expect("copy config");
    let secret = conf_value(&conf, "static-auth-secret");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(conf_dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let port = free_port();
    let (min, max) = relay_range(47);
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", &user, "--regid", &user, "--init-groups", "--"]);
    for w in &words {
        if *w == "/etc/turnserver.conf" {
            cmd.arg(&conf);
        } else {
            cmd.arg(w);
        }
    }
    cmd.args(["--listening-port", &port.to_string()])
        .args([
            "--min-port",
            &min.to_string(),
            "--max-port",
            &max.to_string(),
        ])
        .arg("--allow-loopback-peers");
    let mut turn = Proc::spawn(cmd, conf_dir.path(), "packaged-turn");
    turn.wait_stun(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));

    let (_peer, peer_port) = echo_peer(&peer_bin);
    let mut uc = Command::new(&uclient);
    uc.args(["-n", "20", "-m", "2", "-l", "120"])
        .args(["-e", "127.0.0.1", "-r", &peer_port.to_string()])
        .args(["-p", &port.to_string(), "-u", "bbb-user", "-W", &secret])
        .arg("127.0.0.1");
    let (ok, text) = run(uc, 60);
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    assert!(ok, "uclient failed:\n{}\n{}", tail.join("\n"), turn.log());
    let sent = number_after(&text, "tot_send_msgs=");
    assert!(sent.is_some_and(|n| n > 0), "nothing sent:\n{text}");
    assert_eq!(
        number_after(&text, "tot_recv_msgs="),
        sent,
        "all relayed back:\n{text}"
    );
    assert!(turn.is_alive());

    // Purge: the maintainer scripts stop what runs from the package.
    dpkg(&["--purge", "plenary"]);
    drop(installed);
    let status = turn.wait_exit(Duration::from_secs(40));
    assert!(
        status.is_some(),
        "the packaged plenary still runs after purge"
    );
    assert_eq!(
        packaged_processes(),
        Vec::<u32>::new(),
        "plenary processes left"
    );
    assert!(!Path::new("/usr/bin/plenary").exists());
    assert!(
        !Path::new("/etc/plenary").exists(),
        "/etc/plenary left after purge"
    );
    assert_eq!(package_status("coturn"), coturn_before, "coturn untouched");
    assert!(
        require_peer("turnutils_uclient").is_some(),
        "coturn's tools still there"
    );
}

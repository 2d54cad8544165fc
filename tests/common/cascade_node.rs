//! One `plenary sfu` cascade node as a real process (the tests that kill, freeze or restart
//! a node need it outside the test process).

use std::fs::OpenOptions;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

/// One `plenary sfu` process with fixed ports; killed by its PID on Drop. Its stderr goes to
/// a log file (appended across restarts) that is printed when the test fails.
pub struct Node {
    pub name: String,
    pub http: SocketAddr,
    pub media: SocketAddr,
    pub cascade: SocketAddr,
    child: Option<Child>,
    pub log: PathBuf,
    config: PathBuf,
    directory: String,
    secret: String,
}

impl Node {
    pub fn new(name: &str, ports: [u16; 3], dir: &Path, directory: &str, secret: &str) -> Node {
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let config = dir.join("sfu.toml");
        std::fs::write(&config, "[media]\nworkers = 1\n").expect("write config");
        Node {
            name: name.to_owned(),
            http: at(ports[0]),
            media: at(ports[1]),
            cascade: at(ports[2]),
            child: None,
            log: dir.join(format!("node-{name}.log")),
            config,
            directory: directory.to_owned(),
            secret: secret.to_owned(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn log_len(&self) -> usize {
        std::fs::read_to_string(&self.log).map_or(0, |s| s.len())
    }

    /// Starts the process and waits (at most 15 s) for its "ready" line.
    pub async fn start(&mut self) {
        let (from, t0) = (self.spawn(), Instant::now());
        while !self.ready_since(from, t0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.say_up(t0);
    }

    /// `start` for tests without an async runtime.
    pub fn start_blocking(&mut self) {
        let (from, t0) = (self.spawn(), Instant::now());
        while !self.ready_since(from, t0) {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.say_up(t0);
    }

    /// Spawns the process; returns where its log stood before (the log is appended to
    /// across restarts).
    fn spawn(&mut self) -> usize {
        assert!(self.child.is_none(), "{} already running", self.name);
        let from = self.log_len();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("node log");
        let child = Command::new(env!("CARGO_BIN_EXE_plenary"))
            .arg("sfu")
            .arg("--config")
            .arg(&self.config)
            .args(["--http", &self.http.to_string()])
            .args(["--media", &self.media.to_string()])
            .args(["--cascade", &self.cascade.to_string()])
            .args(["--directory", &self.directory])
            .args(["--cluster-secret", &self.secret])
            .args(["--node", &self.name])
            .args(["--no-metrics", "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn plenary sfu");
        self.child = Some(child);
        from
    }

    /// Whether the "ready" line is in the log after `from`; panics if the process exited
    /// or 15 s passed since `t0`.
    fn ready_since(&mut self, from: usize, t0: Instant) -> bool {
        let text = self.log_text();
        let since = text.get(from..).unwrap_or_default();
        if since.contains("plenary sfu ready") {
            return true;
        }
        if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
            self.child = None;
            panic!(
                "node {} exited ({status}) while starting:\n{since}",
                self.name
            );
        }
        assert!(
            t0.elapsed() < 15 * SEC,
            "node {} not ready within 15 s:\n{since}",
            self.name
        );
        false
    }

    fn say_up(&self, t0: Instant) {
        eprintln!(
            "node {} up in {:.2} s: http {} media {} cascade {}",
            self.name,
            t0.elapsed().as_secs_f64(),
            self.http,
            self.media,
            self.cascade
        );
    }

    /// The whole log so far (every start of this node).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, by PID: the node drains.
    pub fn drain(&mut self) {
        if let Some(child) = &self.child {
            let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
            // SAFETY: kill(2) on the PID of a child this test spawned and has not reaped.
            let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
            assert_eq!(rc, 0, "kill -TERM {pid}");
        }
    }

    /// SIGSTOP, by PID, and left stopped: a machine gone off the network (nothing is
    /// closed, nothing answers). Drop still kills it.
    pub fn freeze(&mut self) {
        if let Some(child) = &self.child {
            let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
            // SAFETY: kill(2) on the PID of a child this test spawned and has not reaped.
            let rc = unsafe { libc::kill(pid, libc::SIGSTOP) };
            assert_eq!(rc, 0, "kill -STOP {pid}");
        }
    }

    /// SIGKILL, by PID; waits for the process to be reaped.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
            // SAFETY: kill(2) on the PID of a child this test spawned and has not reaped.
            let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
            assert_eq!(rc, 0, "kill -9 {pid}");
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "---- node {} log (last {} lines) ----\n{}",
                self.name,
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// `n` distinct free TCP ports on 127.0.0.1 (for a node's HTTP, media and cascade).
pub fn free_ports(n: usize) -> Vec<u16> {
    let lo = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let mut taken = Vec::new();
    for _ in 0..n {
        let p = super::free_port_except(&lo, &taken);
        taken.push(p);
    }
    taken
}

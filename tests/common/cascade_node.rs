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
        let t0 = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text
                .get(from..)
                .is_some_and(|t| t.contains("plenary sfu ready"))
            {
                break;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                panic!(
                    "node {} exited ({status}) while starting:\n{}",
                    self.name,
                    text.get(from..).unwrap_or_default()
                );
            }
            assert!(
                t0.elapsed() < 15 * SEC,
                "node {} not ready within 15 s:\n{}",
                self.name,
                text.get(from..).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "node {} up in {:.2} s: http {} media {} cascade {}",
            self.name,
            t0.elapsed().as_secs_f64(),
            self.http,
            self.media,
            self.cascade
        );
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

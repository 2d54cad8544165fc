//! `--local-nodes N`: a cascade on this machine for one probe run: a `redis-server` and N
//! `plenary sfu` processes (this binary) on loopback, each pinned to one of the SFU CPUs.
//! Every process is ours and is killed by its PID when the run ends.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Longest a node or Redis may take to answer after its start.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct LocalCascade {
    redis: Option<Child>,
    nodes: Vec<Node>,
    dir: PathBuf,
}

struct Node {
    child: Child,
    /// `--node`: how its peers label their links to it.
    name: String,
    url: String,
    /// Its Prometheus listener, for the bytes per link.
    metrics: SocketAddr,
}

impl LocalCascade {
    /// Starts Redis, then the nodes; returns once every node answers HTTP.
    pub fn start(n: usize, ip: IpAddr, sfu_cpus: Option<&[usize]>) -> anyhow::Result<Self> {
        if !(2..=16).contains(&n) {
            bail!("--local-nodes {n}: a local cascade has 2 to 16 nodes");
        }
        let exe = std::env::current_exe().context("finding the plenary binary")?;
        let dir =
            std::env::temp_dir().join(format!("plenary-probe-cascade-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut me = LocalCascade {
            redis: None,
            nodes: Vec::new(),
            dir,
        };
        let redis_port = free_tcp(ip)?;
        let redis = Command::new("redis-server")
            .args(["--bind", &ip.to_string(), "--port", &redis_port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&me.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (scripts/install-peers installs it)")?;
        me.redis = Some(redis);
        wait_until(
            || redis_pings(SocketAddr::new(ip, redis_port)),
            "redis-server",
        )?;
        // One secret per run: nothing outside this run can join its links.
        let secret = format!("probe-local-{}-{:x}", std::process::id(), rand_u64());
        for i in 0..n {
            let (http, media, link) = (free_tcp(ip)?, free_udp(ip)?, free_udp(ip)?);
            let metrics = SocketAddr::new(ip, free_tcp(ip)?);
            let name = format!("n{i}");
            let config = me.dir.join(format!("node-{i}.toml"));
            let pin = sfu_cpus
                .filter(|c| !c.is_empty())
                .map(|c| format!("pin-cpus = [{}]\n", c[i % c.len()]))
                .unwrap_or_default();
            std::fs::write(&config, format!("[media]\nworkers = 1\n{pin}"))?;
            let log = std::fs::File::create(me.dir.join(format!("node-{i}.log")))?;
            let child = Command::new(&exe)
                .arg("sfu")
                .arg("--config")
                .arg(&config)
                .args(["--metrics", &metrics.to_string(), "--log-level", "warn"])
                .args(["--http", &SocketAddr::new(ip, http).to_string()])
                .args(["--media", &SocketAddr::new(ip, media).to_string()])
                .args(["--cascade", &SocketAddr::new(ip, link).to_string()])
                .args(["--directory", &format!("redis://{ip}:{redis_port}")])
                .args(["--cluster-secret", &secret])
                .args(["--node", &name])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting a plenary sfu node")?;
            let url = format!("http://{}", SocketAddr::new(ip, http));
            me.nodes.push(Node {
                child,
                name,
                url,
                metrics,
            });
        }
        for n in &me.nodes {
            let addr: SocketAddr = n.url.trim_start_matches("http://").parse()?;
            wait_until(|| http_answers(addr), &n.url)?;
            // The first step's first read would otherwise find it missing.
            wait_until(|| http_answers(n.metrics), &format!("{} metrics", n.url))?;
        }
        Ok(me)
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.child.id()).collect()
    }

    /// Each node's name and metrics URL, in node order.
    pub fn metrics(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .map(|n| (n.name.clone(), format!("http://{}/metrics", n.metrics)))
            .collect()
    }

    /// Where the nodes' logs are, for the operator.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for LocalCascade {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
        if let Some(mut r) = self.redis.take() {
            let _ = r.kill();
            let _ = r.wait();
        }
    }
}

fn free_tcp(ip: IpAddr) -> anyhow::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

fn free_udp(ip: IpAddr) -> anyhow::Result<u16> {
    Ok(UdpSocket::bind((ip, 0))?.local_addr()?.port())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn wait_until(mut ready: impl FnMut() -> bool, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while !ready() {
        if Instant::now() >= deadline {
            bail!("{what} did not answer within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn redis_pings(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

fn http_answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
        && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"HTTP/1."))
}

//! Shared harness for the stack comparison: process layout, signaling over pipes,
//! /proc readings and the synthetic media schedule. Stack-specific code lives in the
//! two binaries so each one only links its own WebRTC stack.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Run parameters, the same for both stacks.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub subscribers: usize,
    pub secs: u64,
}

impl Params {
    pub fn from_args(args: &[String]) -> Params {
        let mut p = Params {
            subscribers: 100,
            secs: 20,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--subscribers" => {
                    p.subscribers = it.next().and_then(|v| v.parse().ok()).unwrap_or(100)
                }
                "--secs" => p.secs = it.next().and_then(|v| v.parse().ok()).unwrap_or(20),
                _ => {}
            }
        }
        p
    }
}

// ---------- signaling: one line per message, SDP hex-encoded so it stays on one line ----------

pub fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// What the peers process tells the SFU process.
#[derive(Debug)]
pub enum FromPeers {
    Offer(usize, String),
    /// All peers connected; the publisher starts now.
    Start,
    /// Publisher stopped and the drain time is over.
    Stop,
    /// A free-form result line to print.
    Line(String),
    Gone,
}

fn parse_from_peers(line: &str) -> FromPeers {
    let mut parts = line.splitn(3, ' ');
    match parts.next() {
        Some("OFFER") => {
            let idx = parts.next().and_then(|v| v.parse().ok());
            let sdp = parts.next().and_then(unhex);
            match (idx, sdp) {
                (Some(i), Some(s)) => FromPeers::Offer(i, s),
                _ => FromPeers::Line(format!("bad offer line ({} bytes)", line.len())),
            }
        }
        Some("START") => FromPeers::Start,
        Some("STOP") => FromPeers::Stop,
        _ => FromPeers::Line(line.to_string()),
    }
}

/// The SFU side of the harness: starts the peers process pinned to core 1 and relays its
/// lines into a channel the SFU loop polls without blocking.
pub struct PeersProcess {
    pub child: Child,
    pub stdin: ChildStdin,
    pub rx: mpsc::Receiver<FromPeers>,
}

impl PeersProcess {
    pub fn spawn(params: Params, peer_core: &str) -> std::io::Result<PeersProcess> {
        // PEERS_EXE lets an SFU-only binary (webrtc-sfu) borrow another binary's peers.
        let exe = match std::env::var_os("PEERS_EXE") {
            Some(p) => std::path::PathBuf::from(p),
            None => std::env::current_exe()?,
        };
        let mut cmd = if peer_core.is_empty() {
            Command::new(&exe)
        } else {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(peer_core).arg(&exe);
            c
        };
        cmd.arg("peers")
            .arg("--subscribers")
            .arg(params.subscribers.to_string())
            .arg("--secs")
            .arg(params.secs.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(parse_from_peers(&line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(FromPeers::Gone);
        });
        Ok(PeersProcess { child, stdin, rx })
    }

    pub fn send_answer(&mut self, idx: usize, sdp: &str) {
        let _ = writeln!(self.stdin, "ANSWER {idx} {}", hex(sdp));
        let _ = self.stdin.flush();
    }
}

/// The peers side of the harness: offers go out on stdout, answers come back on stdin.
pub fn peers_send_offer(idx: usize, sdp: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "OFFER {idx} {}", hex(sdp));
    let _ = out.flush();
}

pub fn peers_send_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Reads `ANSWER idx hex` lines from stdin and hands each to the peer's channel.
pub fn peers_route_answers(routes: Vec<mpsc::Sender<String>>) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let mut parts = line.splitn(3, ' ');
            if parts.next() != Some("ANSWER") {
                continue;
            }
            let idx: Option<usize> = parts.next().and_then(|v| v.parse().ok());
            let sdp = parts.next().and_then(unhex);
            if let (Some(i), Some(s)) = (idx, sdp) {
                if let Some(tx) = routes.get(i) {
                    let _ = tx.send(s);
                }
            }
        }
    });
}

// ---------- /proc readings ----------

const CLK_TCK: f64 = 100.0; // Linux USER_HZ on x86_64.

fn cpu_from_stat(text: &str) -> Option<f64> {
    // Fields after the ")" that closes comm: state is field 3, utime 14, stime 15.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / CLK_TCK)
}

/// CPU seconds of the calling thread.
pub fn thread_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|t| cpu_from_stat(&t))
        .unwrap_or(0.0)
}

/// CPU seconds of the whole process.
pub fn process_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| cpu_from_stat(&t))
        .unwrap_or(0.0)
}

pub fn vm_rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---------- synthetic media ----------

pub const VIDEO_PAYLOAD: usize = 1100;
pub const AUDIO_PAYLOAD: usize = 160;
/// 30 fps, 3 packets per frame = 90 pps of ~1100 B, like a mid-layer camera.
pub const VIDEO_FPS: u32 = 30;
pub const VIDEO_PKTS_PER_FRAME: u32 = 3;
/// Opus 20 ms frames = 50 pps.
pub const AUDIO_PPS: u32 = 50;

/// One packet the publisher must send now.
#[derive(Debug, Clone, Copy)]
pub struct Due {
    pub video: bool,
    pub seq: u64,
    pub rtp_time: u32,
    pub marker: bool,
}

/// Fixed-rate schedule for one audio and one video stream; no encoder, only sizes and times.
pub struct Schedule {
    start: Instant,
    end: Instant,
    audio_sent: u64,
    video_frames: u64,
    pub audio_total: u64,
    pub video_total: u64,
}

impl Schedule {
    pub fn new(start: Instant, secs: u64) -> Schedule {
        Schedule {
            start,
            end: start + Duration::from_secs(secs),
            audio_sent: 0,
            video_frames: 0,
            audio_total: 0,
            video_total: 0,
        }
    }

    fn next_audio(&self) -> Instant {
        self.start + Duration::from_micros(self.audio_sent * 1_000_000 / AUDIO_PPS as u64)
    }

    fn next_video(&self) -> Instant {
        self.start + Duration::from_micros(self.video_frames * 1_000_000 / VIDEO_FPS as u64)
    }

    pub fn finished(&self, now: Instant) -> bool {
        now >= self.end
    }

    /// When the next packet is due (or the end).
    pub fn next_deadline(&self) -> Instant {
        self.next_audio().min(self.next_video()).min(self.end)
    }

    /// Everything due at `now`, in send order.
    pub fn due(&mut self, now: Instant, out: &mut Vec<Due>) {
        out.clear();
        while now < self.end && self.next_audio() <= now {
            out.push(Due {
                video: false,
                seq: self.audio_sent + 1,
                rtp_time: (self.audio_sent * 960) as u32,
                marker: false,
            });
            self.audio_sent += 1;
            self.audio_total += 1;
        }
        while now < self.end && self.next_video() <= now {
            for k in 0..VIDEO_PKTS_PER_FRAME {
                out.push(Due {
                    video: true,
                    seq: self.video_frames * VIDEO_PKTS_PER_FRAME as u64 + k as u64 + 1,
                    rtp_time: (self.video_frames * 3000) as u32,
                    marker: k + 1 == VIDEO_PKTS_PER_FRAME,
                });
                self.video_total += 1;
            }
            self.video_frames += 1;
        }
    }
}

/// A VP8-looking payload: a valid 1-byte payload descriptor (S bit on frame start) and
/// filler, so depacketizers that peek at it do not choke.
pub fn video_payload(first_of_frame: bool) -> Vec<u8> {
    let mut v = vec![0x5au8; VIDEO_PAYLOAD];
    v[0] = if first_of_frame { 0x10 } else { 0x00 };
    v
}

pub fn audio_payload() -> Vec<u8> {
    vec![0xa5u8; AUDIO_PAYLOAD]
}

// ---------- result summary ----------

/// Per-subscriber receive counts, reduced to the numbers the decision doc needs.
pub fn loss_summary(sent_audio: u64, sent_video: u64, got: &[(u64, u64)]) -> String {
    let n = got.len().max(1) as f64;
    let full = got
        .iter()
        .filter(|(a, v)| *a >= sent_audio && *v >= sent_video)
        .count();
    let min_a = got.iter().map(|g| g.0).min().unwrap_or(0);
    let min_v = got.iter().map(|g| g.1).min().unwrap_or(0);
    let sum_a: u64 = got.iter().map(|g| g.0).sum();
    let sum_v: u64 = got.iter().map(|g| g.1).sum();
    let exp = (sent_audio + sent_video) as f64 * n;
    let loss = if exp > 0.0 {
        100.0 * (1.0 - (sum_a + sum_v) as f64 / exp)
    } else {
        0.0
    };
    format!(
        "publisher sent audio={sent_audio} video={sent_video}; subscribers={} complete={full} \
         min_audio={min_a} min_video={min_v} mean_loss={loss:.3}%",
        got.len()
    )
}

/// What the SFU process prints at the end; one line of key=value so run.sh can grep it.
#[allow(clippy::too_many_arguments)]
pub fn sfu_report(
    stack: &str,
    peers_joined: usize,
    forwarded: u64,
    sfu_thread_cpu: f64,
    sfu_proc_cpu: f64,
    wall: f64,
    rss_base_kb: u64,
    rss_joined_kb: u64,
    rss_end_kb: u64,
) -> String {
    let per_cpu = if sfu_thread_cpu > 0.0 {
        forwarded as f64 / sfu_thread_cpu
    } else {
        0.0
    };
    let per_peer = (rss_joined_kb.saturating_sub(rss_base_kb)) as f64 / peers_joined.max(1) as f64;
    format!(
        "RESULT stack={stack} peers={peers_joined} forwarded={forwarded} wall_s={wall:.2} \
         sfu_thread_cpu_s={sfu_thread_cpu:.2} sfu_process_cpu_s={sfu_proc_cpu:.2} \
         fwd_pkts_per_cpu_s={per_cpu:.0} rss_base_kb={rss_base_kb} rss_joined_kb={rss_joined_kb} \
         rss_end_kb={rss_end_kb} rss_per_peer_kb={per_peer:.1}"
    )
}

// ---------- sockets ----------

/// A loopback UDP socket with a receive buffer of `rcvbuf` bytes. The Linux default
/// (208 KiB) overflows when a thread is descheduled on a shared core; SFUs in production
/// raise it too, so both stacks get the same size.
pub fn bind_udp(rcvbuf: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    if rcvbuf > 0 {
        s.set_recv_buffer_size(rcvbuf)?;
    }
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("literal");
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Receive-buffer size from `UDP_RCVBUF` (bytes; 0 keeps the OS default).
pub fn rcvbuf_from_env(default: usize) -> usize {
    std::env::var("UDP_RCVBUF")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Machine-wide UDP receive-buffer drops (/proc/net/snmp RcvbufErrors). Shared machine:
/// other users' traffic counts here too, so it is a hint, not a figure.
pub fn udp_rcvbuf_errors() -> u64 {
    let s = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let udp: Vec<&str> = s.lines().filter(|l| l.starts_with("Udp:")).collect();
    if udp.len() < 2 {
        return 0;
    }
    let names: Vec<&str> = udp[0].split_whitespace().collect();
    let vals: Vec<&str> = udp[1].split_whitespace().collect();
    names
        .iter()
        .position(|n| *n == "RcvbufErrors")
        .and_then(|i| vals.get(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// (user, system) CPU seconds of the calling thread: system time is mostly the loopback
/// send path, the same kernel work for both stacks; user time is the stack itself.
pub fn thread_cpu_user_sys() -> (f64, f64) {
    let t = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let Some(close) = t.rfind(')') else {
        return (0.0, 0.0);
    };
    let f: Vec<&str> = t[close + 2..].split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / CLK_TCK;
    (get(11), get(12))
}

/// Timestamped diagnostic line on stderr (seconds since the process started).
pub fn diag(msg: &str) {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t0 = *T0.get_or_init(Instant::now);
    eprintln!("[{:8.3}] {msg}", t0.elapsed().as_secs_f64());
}

/// The receive buffer the kernel granted (Linux reports twice the requested size).
pub fn rcvbuf_of(sock: &std::net::UdpSocket) -> usize {
    socket2::SockRef::from(sock).recv_buffer_size().unwrap_or(0)
}

/// Seconds the calling thread spent runnable but waiting for a CPU (schedstat field 2):
/// shows when other tenants of the shared core starved the SFU.
pub fn thread_runqueue_wait_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|ns| ns / 1e9)
        .unwrap_or(0.0)
}

/// After the publisher stops, wait until the subscribers' counters stop moving (a starved
/// SFU may still be working through its socket backlog), at most `max`.
pub fn wait_quiet(total: impl Fn() -> u64, max: Duration) {
    let until = Instant::now() + max;
    let (mut last, mut still) = (total(), 0);
    while Instant::now() < until && still < 4 {
        std::thread::sleep(Duration::from_millis(250));
        let now = total();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
}

/// SFU-loop counters, to explain where system CPU goes (syscalls per forwarded packet).
pub mod counters {
    use std::sync::atomic::{AtomicU64, Ordering};
    pub static TX_DGRAMS: AtomicU64 = AtomicU64::new(0);
    pub static TX_BYTES: AtomicU64 = AtomicU64::new(0);
    pub static TIMER_FIRES: AtomicU64 = AtomicU64::new(0);
    pub static WAKEUPS: AtomicU64 = AtomicU64::new(0);

    pub fn tx(bytes: usize) {
        TX_DGRAMS.fetch_add(1, Ordering::Relaxed);
        TX_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn snapshot() -> [u64; 4] {
        [&TX_DGRAMS, &TX_BYTES, &TIMER_FIRES, &WAKEUPS].map(|c| c.load(Ordering::Relaxed))
    }

    pub fn since(s0: [u64; 4]) -> String {
        let s = snapshot();
        format!(
            "sfu_tx_datagrams={} sfu_tx_bytes={} sfu_timer_fires={} sfu_wakeups={}",
            s[0] - s0[0],
            s[1] - s0[1],
            s[2] - s0[2],
            s[3] - s0[3]
        )
    }
}

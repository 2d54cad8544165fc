//! The SFU's forwarding path, SRTP included: one str0m WHIP publisher and N str0m WHEP
//! viewers (RTP mode, one VP8 m-line each) on loopback, through the in-process SFU, for
//! 1 → N fan-out with N = 1, 10, 50, 100.
//!
//! Criterion's "time" is the CPU time of the SFU's media thread (`plenary-sfu-media-0`, read
//! from `/proc/self/task/<tid>/schedstat`, ns on CPU) per publisher packet, not wall time, and
//! the throughput (`Elements(N)`) is therefore forwarded packets per SFU CPU-second. Every
//! measurement waits until every viewer has received every packet, so decrypting, forwarding,
//! encrypting and sending, and the RTCP, bandwidth estimation and timers meanwhile, are all
//! in it. After each N the bench prints delivery (and fails below 99%), the wall rate, the
//! SFU's idle CPU with the same peers and no media, and the figure less that idle CPU.
//!
//! The SFU runs one media worker pinned to CPU 0; the clients (and this thread) run on
//! CPU 1 when there are two CPUs. The publisher sends 1000-byte VP8 packets (5 per frame, a
//! key frame first and after each PLI) in bursts of `BURST`, at most `WINDOW` in flight, so no
//! socket buffer overflows; the viewers' sockets have large receive buffers. Subscriber
//! connections pace to their bandwidth estimate, which starts low and climbs while the bench
//! runs, so with estimation on the SFU is not saturated at small N.
//!
//! Criterion's budgets count SFU CPU time; they are sized from wall-time budgets
//! (`CALIBRATE`, `WARM_UP`, `MEASURE`) after a calibration run for each N.
//!
//! Environment: `SFU_FORWARD_N=1,100` runs a subset; `SFU_FORWARD_BWE=off` runs with
//! `bandwidth_estimation: false` (no TWCC estimate, no pacer; group `sfu_forward_nobwe`);
//! `SFU_FORWARD_EGRESS=fast` runs the subscribers on the fast egress path (`[media] egress =
//! "fast"`: own SRTP, RTX, sender reports and estimate, `sendmmsg`; group suffix `_fast`);
//! `SFU_FORWARD_IDLE_SECS` lengthens the idle measurement (e.g. to profile it).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use plenary_sfu::{serve, EgressPath, RunningSfu, SfuConfig};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

const FANOUT: [u64; 4] = [1, 10, 50, 100];
/// Publisher packets in flight at most (sent but not yet received by the average viewer), so
/// neither the SFU's socket nor the viewers' ones overflow whoever is the slower side.
const WINDOW: u64 = 48;
/// Publisher packets written back to back before looking at the window again.
const BURST: u64 = 16;
/// Video payload size (RTP payload, before SRTP).
const PAYLOAD: usize = 1000;
/// Packets per video frame (marker on the last one).
const PER_FRAME: u64 = 5;
/// Viewer driver threads.
const VIEWER_THREADS: usize = 2;
/// Receive buffer asked for on every client socket (the kernel caps it at `rmem_max`).
const RCVBUF: usize = 8 << 20;
/// Wall time spent on each N: traffic before measuring, criterion's warm-up, its samples.
const CALIBRATE: Duration = Duration::from_secs(3);
const WARM_UP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(20);
/// Upper bound for any wait in the harness.
const PATIENCE: Duration = Duration::from_secs(30);
/// A measurement gives up when nothing arrives for this long (losses show in the totals).
const STALL: Duration = Duration::from_secs(3);
/// With the bench idle, the publisher still sends a packet this often, so the SFU keeps the
/// layer bound (its rate meter forgets a layer after 1 s of silence).
const TRICKLE: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------
// Threads, CPU time, sockets.

fn pin_current_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid and `cpu` is far below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Thread ids of this process's threads whose name starts with `prefix` (comm holds the
/// first 15 bytes of the name).
fn tids_named(prefix: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            comm.starts_with(prefix)
                .then(|| e.file_name().to_str()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// The SFU's media thread(s): `plenary-sfu-media-<worker>`.
fn media_tids() -> Vec<u32> {
    tids_named("plenary-sfu-med")
}

/// Nanoseconds the threads have been on a CPU.
fn cpu_ns(tids: &[u32]) -> u64 {
    tids.iter().map(|t| thread_cpu_ns(*t)).sum()
}

/// Nanoseconds the thread has been on a CPU: schedstat when the kernel has it, else
/// utime+stime in clock ticks.
fn thread_cpu_ns(tid: u32) -> u64 {
    let base = format!("/proc/self/task/{tid}");
    if let Ok(s) = std::fs::read_to_string(format!("{base}/schedstat")) {
        if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok()) {
            return ns;
        }
    }
    let stat = std::fs::read_to_string(format!("{base}/stat")).unwrap_or_default();
    // Fields after the parenthesised comm; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    f.iter().sum::<u64>() * 1_000_000_000 / tck
}

/// `RcvbufErrors` from the UDP line of /proc/net/snmp (the whole network namespace).
fn udp_rcvbuf_errors() -> u64 {
    let s = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = s.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
        return 0;
    };
    h.split_whitespace()
        .zip(v.split_whitespace())
        .find(|(k, _)| *k == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn client_socket() -> UdpSocket {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(socket2::Protocol::UDP)).unwrap();
    s.set_recv_buffer_size(RCVBUF).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.set_nonblocking(true).unwrap();
    s.into()
}

/// Waits for any of `fds` to be readable, at most `timeout` (microsecond resolution).
fn wait_readable(fds: &mut [libc::pollfd], timeout: Duration) {
    let timeout = timeout.min(Duration::from_millis(50));
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd; `ts` outlives the call.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        );
    }
}

fn wait_until(limit: Duration, f: impl Fn() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

// ---------------------------------------------------------------------------------------
// WHIP/WHEP signalling over a minimal HTTP/1.1 client.

/// POSTs an SDP offer; returns the answer.
fn post_offer(addr: SocketAddr, path: &str, offer: &SdpOffer) -> SdpAnswer {
    let body = offer.to_sdp_string();
    let mut s = TcpStream::connect(addr).expect("connect to SFU HTTP");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split(' ').nth(1).unwrap_or("");
    assert_eq!(status, "201", "POST {path}: {head}\n{body}");
    SdpAnswer::from_sdp_string(body).expect("SDP answer")
}

// ---------------------------------------------------------------------------------------
// A str0m client: one Rtc, one socket.

struct Client {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    mid: Mid,
    next_timeout: Instant,
}

impl Client {
    /// Offers one VP8 video m-line (sendonly or recvonly) to `path` and applies the answer.
    fn connect(http: SocketAddr, path: &str, dir: Direction) -> Client {
        let sock = client_socket();
        let local = sock.local_addr().unwrap();
        let mut rtc = RtcConfig::new()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_vp8(true)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, dir, None, None, None);
        let (offer, pending): (SdpOffer, SdpPendingOffer) = api.apply().expect("offer");
        let answer = post_offer(http, path, &offer);
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        Client {
            rtc,
            sock,
            local,
            mid,
            next_timeout: Instant::now(),
        }
    }

    /// Sends what the Rtc wants sent; hands events to `ev`.
    fn drain(&mut self, ev: &mut impl FnMut(Event)) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => ev(e),
                Err(e) => panic!("client rtc: {e}"),
            }
        }
    }

    /// Reads what is queued on the socket (bounded) and runs due timers. Returns the
    /// datagrams and bytes read.
    fn pump(&mut self, buf: &mut [u8], ev: &mut impl FnMut(Event)) -> (u64, u64) {
        let mut read = (0, 0);
        for _ in 0..256 {
            match self.sock.recv_from(buf) {
                Ok((len, src)) => {
                    read = (read.0 + 1, read.1 + len as u64);
                    if let Ok(r) = Receive::new(Protocol::Udp, src, self.local, &buf[..len]) {
                        let _ = self.rtc.handle_input(Input::Receive(Instant::now(), r));
                        self.drain(ev);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        let now = Instant::now();
        if now >= self.next_timeout {
            let _ = self.rtc.handle_input(Input::Timeout(now));
            self.drain(ev);
        }
        read
    }
}

// ---------------------------------------------------------------------------------------
// Publisher.

#[derive(Default)]
struct PubState {
    connected: AtomicBool,
    stop: AtomicBool,
    /// Packets the bench asked for (the trickle adds its own).
    target: AtomicU64,
    sent: AtomicU64,
    keyframe_requests: AtomicU64,
    trickle: AtomicBool,
    /// Flow control: the window applies once `base_set`; see `Harness::in_flight`.
    base_set: AtomicBool,
    window: AtomicU64,
}

/// RFC 7741 descriptor with a 15-bit picture ID, then the start of a VP8 frame.
fn vp8_payload(picture_id: u16, start: bool, key: bool) -> Arc<[u8]> {
    let mut p = vec![0u8; PAYLOAD];
    p[0] = 0x80 | if start { 0x10 } else { 0 }; // X, S, partition 0
    p[1] = 0x80; // I: picture ID present
    p[2] = 0x80 | ((picture_id >> 8) as u8 & 0x7f);
    p[3] = picture_id as u8;
    if start {
        // RFC 6386 frame tag: P bit (0 = key frame), version 0, show_frame, partition size.
        let size: u32 = 600;
        let tag = u32::from(!key) | (1 << 4) | (size << 5);
        p[4..7].copy_from_slice(&tag.to_le_bytes()[..3]);
        if key {
            // Start code, then 640×480 with no scaling.
            p[7..10].copy_from_slice(&[0x9d, 0x01, 0x2a]);
            p[10..12].copy_from_slice(&640u16.to_le_bytes());
            p[12..14].copy_from_slice(&480u16.to_le_bytes());
        }
    }
    p.into()
}

fn publisher(
    mut c: Client,
    st: Arc<PubState>,
    in_flight: impl Fn(u64) -> u64 + Send + 'static,
    cpu: Option<usize>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("bench-publisher".into())
        .spawn(move || {
            if let Some(cpu) = cpu {
                pin_current_thread(cpu);
            }
            let pt: Pt = c
                .rtc
                .media(c.mid)
                .and_then(|m| m.remote_pts().first().copied())
                .expect("VP8 negotiated");
            let mid = c.mid;
            let cont = vp8_payload(0, false, false);
            let mut buf = vec![0u8; 2048];
            let mut seq = 0u64;
            // The first frame is a key frame, and so is the next one after each request.
            let want_key = std::cell::Cell::new(true);
            let mut last_send = Instant::now();
            let deadline = Instant::now() + Duration::from_secs(3600);
            let fd = c.sock.as_raw_fd();
            let mut ev = |e: Event| match e {
                Event::Connected => st.connected.store(true, Ordering::SeqCst),
                Event::KeyframeRequest(_) => {
                    st.keyframe_requests.fetch_add(1, Ordering::SeqCst);
                    want_key.set(true);
                }
                _ => {}
            };
            while !st.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                c.pump(&mut buf, &mut ev);
                let now = Instant::now();
                let sent = st.sent.load(Ordering::Relaxed);
                let mut target = st.target.load(Ordering::Relaxed);
                if target <= sent
                    && st.trickle.load(Ordering::Relaxed)
                    && now.duration_since(last_send) >= TRICKLE
                {
                    target = st.target.fetch_add(1, Ordering::SeqCst) + 1;
                }
                let mut blocked = false;
                if sent < target && st.connected.load(Ordering::Relaxed) {
                    let fly = if st.base_set.load(Ordering::Relaxed) {
                        in_flight(sent)
                    } else {
                        0
                    };
                    let room = st
                        .window
                        .load(Ordering::Relaxed)
                        .saturating_sub(fly)
                        .min(BURST)
                        .min(target - sent);
                    if room == 0 {
                        blocked = true;
                    }
                    for _ in 0..room {
                        seq += 1;
                        let pos = (seq - 1) % PER_FRAME;
                        let frame = (seq - 1) / PER_FRAME;
                        let payload = if pos == 0 {
                            // A new allocation per frame, on the publisher side only.
                            vp8_payload((frame & 0x7fff) as u16, true, want_key.replace(false))
                        } else {
                            cont.clone()
                        };
                        let mut api = c.rtc.direct_api();
                        let tx = api.stream_tx_by_mid(mid, None).expect("video tx");
                        tx.write_rtp(
                            RtpWrite::new(pt, seq.into(), (frame * 3000) as u32, now, payload)
                                .marker(pos == PER_FRAME - 1)
                                .nackable(true),
                        );
                        c.drain(&mut ev);
                        st.sent.store(seq, Ordering::Release);
                    }
                    if room > 0 {
                        last_send = now;
                    }
                }
                if st.sent.load(Ordering::Relaxed) < st.target.load(Ordering::Relaxed) && !blocked {
                    continue;
                }
                let now = Instant::now();
                let mut wake = c.next_timeout.saturating_duration_since(now);
                wake = wake.min(if blocked {
                    Duration::from_micros(200)
                } else {
                    Duration::from_millis(2)
                });
                let mut pfd = [libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                }];
                if blocked {
                    // Viewer progress is not on our socket: a short sleep, not poll.
                    std::thread::sleep(wake);
                } else {
                    wait_readable(&mut pfd, wake);
                }
            }
        })
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Viewers.

struct ViewerState {
    stop: AtomicBool,
    connected: AtomicUsize,
    /// Video packets received, per viewer.
    received: Vec<AtomicU64>,
    /// Datagrams and bytes the viewers read, of any kind (media, padding, RTX, RTCP, STUN).
    datagrams: AtomicU64,
    bytes: AtomicU64,
}

impl ViewerState {
    fn total(&self) -> u64 {
        self.received
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .sum()
    }
}

struct Viewer {
    c: Client,
    index: usize,
    connected: bool,
    seen: Seen,
}

/// Which sequence numbers arrived, so a retransmission is not counted twice.
#[derive(Default)]
struct Seen {
    highest: Option<u64>,
    /// Bit k: `highest - k` arrived.
    bits: [u64; 16],
}

impl Seen {
    /// True the first time `seq` (extended) is seen.
    fn first(&mut self, seq: u64) -> bool {
        const SPAN: u64 = 16 * 64;
        let Some(h) = self.highest else {
            self.highest = Some(seq);
            self.bits[0] = 1;
            return true;
        };
        if seq > h {
            let shift = seq - h;
            if shift >= SPAN {
                self.bits = [0; 16];
            } else {
                // Shift the whole bitmap left by `shift` bits (towards older).
                let (words, rem) = ((shift / 64) as usize, (shift % 64) as u32);
                for i in (0..16usize).rev() {
                    let src = i.checked_sub(words);
                    let lo = src.map_or(0, |s| self.bits[s]);
                    let carry = src
                        .and_then(|s| s.checked_sub(1))
                        .map_or(0, |s| self.bits[s]);
                    self.bits[i] = if rem == 0 {
                        lo
                    } else {
                        (lo << rem) | (carry >> (64 - rem))
                    };
                }
            }
            self.highest = Some(seq);
            self.bits[0] |= 1;
            return true;
        }
        let age = h - seq;
        if age >= SPAN {
            return false;
        }
        let (w, b) = ((age / 64) as usize, age % 64);
        let new = self.bits[w] & (1 << b) == 0;
        self.bits[w] |= 1 << b;
        new
    }
}

fn viewer_driver(
    rx: mpsc::Receiver<Viewer>,
    st: Arc<ViewerState>,
    cpu: Option<usize>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("bench-viewers".into())
        .spawn(move || {
            if let Some(cpu) = cpu {
                pin_current_thread(cpu);
            }
            let mut viewers: Vec<Viewer> = Vec::new();
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let mut buf = vec![0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(3600);
            while !st.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                while let Ok(v) = rx.try_recv() {
                    fds.push(libc::pollfd {
                        fd: v.c.sock.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    viewers.push(v);
                }
                // Sleep until a socket is readable or the next client timer, then serve only
                // the viewers that have something to do.
                let now = Instant::now();
                let next = viewers
                    .iter()
                    .map(|v| v.c.next_timeout)
                    .min()
                    .unwrap_or(now + Duration::from_millis(2));
                for f in fds.iter_mut() {
                    f.revents = 0;
                }
                wait_readable(&mut fds, next.saturating_duration_since(now));
                let now = Instant::now();
                for (v, f) in viewers.iter_mut().zip(&fds) {
                    if f.revents == 0 && v.c.next_timeout > now {
                        continue;
                    }
                    let (idx, mut conn) = (v.index, false);
                    let counter = &st.received[idx];
                    let seen = &mut v.seen;
                    let (d, b) = v.c.pump(&mut buf, &mut |e| match e {
                        Event::Connected => conn = true,
                        // Retransmissions are not counted twice.
                        Event::RtpPacket(p)
                            if p.payload.len() >= PAYLOAD && seen.first(*p.seq_no) =>
                        {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    });
                    st.datagrams.fetch_add(d, Ordering::Relaxed);
                    st.bytes.fetch_add(b, Ordering::Relaxed);
                    if conn && !v.connected {
                        v.connected = true;
                        st.connected.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// One SFU with one publisher and N viewers.

struct Harness {
    n: u64,
    sfu: Option<RunningSfu>,
    /// The SFU's media thread(s).
    tids: Vec<u32>,
    publ: Arc<PubState>,
    view: Arc<ViewerState>,
    /// (publisher packets, per-viewer received) when measuring started.
    base: Arc<(AtomicU64, Vec<AtomicU64>)>,
    threads: Vec<JoinHandle<()>>,
    rcvbuf_errors: u64,
    /// Viewer datagrams and bytes when counting started.
    wire_base: (u64, u64),
    // Totals over every measurement (warm-up included).
    cpu_ns: u64,
    /// CPU time of the bench's client threads (publisher, viewers) meanwhile.
    client_ns: u64,
    client_tids: Vec<u32>,
    wall: Duration,
    packets: u64,
    idle_cpu_per_s: f64,
}

impl Harness {
    fn start(
        rt: &tokio::runtime::Runtime,
        n: u64,
        two_cpus: bool,
        bwe: bool,
        egress_path: EgressPath,
    ) -> Harness {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let sfu = rt
            .block_on(serve(SfuConfig {
                http: any,
                media: any,
                // One media worker, on CPU 0.
                pin_cpus: two_cpus.then(|| vec![0]),
                workers: 1,
                bandwidth_estimation: bwe,
                egress_path,
                ..SfuConfig::default()
            }))
            .expect("sfu starts");
        let http = sfu.http_addr();
        wait_until(Duration::from_secs(5), || !media_tids().is_empty());
        let tids = media_tids();
        assert!(!tids.is_empty(), "SFU media thread in /proc/self/task");
        let cpu = two_cpus.then_some(1);

        let publ = Arc::new(PubState::default());
        publ.window.store(WINDOW, Ordering::SeqCst);
        let view = Arc::new(ViewerState {
            stop: AtomicBool::new(false),
            connected: AtomicUsize::new(0),
            received: (0..n).map(|_| AtomicU64::new(0)).collect(),
            datagrams: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        let base = Arc::new((
            AtomicU64::new(0),
            (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>(),
        ));
        let mut threads = Vec::new();

        let pc = Client::connect(http, "/whip/bench", Direction::SendOnly);
        let (v2, b2) = (view.clone(), base.clone());
        // Publisher packets not yet received by the average viewer.
        let in_flight = move |sent: u64| {
            let got: u64 = v2.total() - b2.1.iter().map(|r| r.load(Ordering::Relaxed)).sum::<u64>();
            (sent - b2.0.load(Ordering::Relaxed)).saturating_sub(got / n)
        };
        threads.push(publisher(pc, publ.clone(), in_flight, cpu));
        assert!(
            wait_until(PATIENCE, || publ.connected.load(Ordering::SeqCst)),
            "publisher connects"
        );
        // The track exists once media flows; keep a trickle going while viewers join.
        publ.trickle.store(true, Ordering::SeqCst);

        let mut txs = Vec::new();
        for _ in 0..VIEWER_THREADS.min(n as usize) {
            let (tx, rx) = mpsc::channel();
            threads.push(viewer_driver(rx, view.clone(), cpu));
            txs.push(tx);
        }
        for i in 0..n as usize {
            let c = Client::connect(http, "/whep/bench", Direction::RecvOnly);
            txs[i % txs.len()]
                .send(Viewer {
                    c,
                    index: i,
                    connected: false,
                    seen: Seen::default(),
                })
                .unwrap();
        }
        assert!(
            wait_until(PATIENCE, || view.connected.load(Ordering::SeqCst)
                == n as usize),
            "viewers connect: {} of {n}",
            view.connected.load(Ordering::SeqCst)
        );
        // Every viewer must be bound to the publisher (a key frame after its PLI) before
        // anything is counted.
        let all_receive = wait_until(PATIENCE, || {
            view.received.iter().all(|r| r.load(Ordering::Relaxed) > 0)
        });
        assert!(all_receive, "every viewer receives the publisher");
        // Counting starts from a quiet moment.
        publ.trickle.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        base.0
            .store(publ.sent.load(Ordering::SeqCst), Ordering::SeqCst);
        for (b, r) in base.1.iter().zip(&view.received) {
            b.store(r.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        let wire_base = (
            view.datagrams.load(Ordering::SeqCst),
            view.bytes.load(Ordering::SeqCst),
        );
        publ.base_set.store(true, Ordering::SeqCst);
        publ.trickle.store(true, Ordering::SeqCst);

        // What the SFU burns with these peers and no media but the trickle.
        // SFU_FORWARD_IDLE_SECS makes this longer, e.g. to profile the idle SFU.
        let idle_secs = std::env::var("SFU_FORWARD_IDLE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1.0f64)
            .clamp(0.1, 60.0);
        eprintln!("N={n}: {n} viewers receive; SFU idle for {idle_secs} s");
        let t0 = cpu_ns(&tids);
        let w0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(idle_secs));
        let idle_cpu_per_s = (cpu_ns(&tids) - t0) as f64 / 1e9 / w0.elapsed().as_secs_f64();

        Harness {
            n,
            sfu: Some(sfu),
            tids,
            client_tids: [tids_named("bench-publisher"), tids_named("bench-viewers")].concat(),
            client_ns: 0,
            publ,
            view,
            base,
            threads,
            rcvbuf_errors: udp_rcvbuf_errors(),
            wire_base,
            cpu_ns: 0,
            wall: Duration::ZERO,
            packets: 0,
            idle_cpu_per_s,
        }
    }

    /// Forwarded packets still owed to the viewers.
    fn owed(&self) -> u64 {
        let sent = self.publ.sent.load(Ordering::Acquire) - self.base.0.load(Ordering::Relaxed);
        let base: u64 = self.base.1.iter().map(|r| r.load(Ordering::Relaxed)).sum();
        (sent * self.n).saturating_sub(self.view.total() - base)
    }

    /// Sends `iters` packets through; returns the SFU media thread's CPU time meanwhile.
    fn run(&mut self, iters: u64) -> Duration {
        let w0 = Instant::now();
        let t0 = cpu_ns(&self.tids);
        let c0 = cpu_ns(&self.client_tids);
        let target = self.publ.target.fetch_add(iters, Ordering::SeqCst) + iters;
        let mut last = (0, Instant::now());
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            let sent = self.publ.sent.load(Ordering::Acquire);
            let owed = self.owed();
            if sent >= target && owed == 0 {
                break;
            }
            let progress = self.view.total() + sent;
            if progress != last.0 {
                last = (progress, Instant::now());
            } else if last.1.elapsed() > STALL {
                eprintln!("N={}: stalled with {owed} forwarded packets owed", self.n);
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let cpu = cpu_ns(&self.tids) - t0;
        self.cpu_ns += cpu;
        self.client_ns += cpu_ns(&self.client_tids) - c0;
        self.wall += w0.elapsed();
        self.packets += iters;
        Duration::from_nanos(cpu)
    }

    /// Runs traffic for about `wall` and returns the SFU's CPU time per wall second meanwhile,
    /// so criterion's budgets (which count SFU CPU time) can be sized from a wall-time budget.
    /// Also lets the subscribers' bandwidth estimates settle before anything is measured.
    fn calibrate(&mut self, wall: Duration) -> f64 {
        // The rate can still be climbing (bandwidth estimates ramp up), so the budget comes
        // from the last second.
        let w0 = Instant::now();
        let mut cpu = Duration::ZERO;
        let mut tail = (Duration::ZERO, None::<Instant>);
        for _ in 0..1_000_000 {
            let el = w0.elapsed();
            if el >= wall {
                break;
            }
            if el + Duration::from_secs(1) >= wall && tail.1.is_none() {
                tail.1 = Some(Instant::now());
            }
            let c = self.run(32);
            cpu += c;
            if tail.1.is_some() {
                tail.0 += c;
            }
        }
        let tail_wall = tail.1.map_or(w0.elapsed(), |t| t.elapsed());
        let busy = tail.0.as_secs_f64() / tail_wall.as_secs_f64().max(1e-3);
        eprintln!(
            "N={}: calibration: {} packets in {:.2} s, SFU CPU {:.0} ms ({:.0}% busy at the end)",
            self.n,
            self.packets,
            w0.elapsed().as_secs_f64(),
            cpu.as_secs_f64() * 1e3,
            busy * 100.0
        );
        (self.cpu_ns, self.client_ns, self.wall, self.packets) = (0, 0, Duration::ZERO, 0);
        busy
    }

    /// Checks delivery, prints the totals and stops everything.
    fn finish(mut self, rt: &tokio::runtime::Runtime) {
        self.publ.trickle.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(500));
        let sent = self.publ.sent.load(Ordering::SeqCst) - self.base.0.load(Ordering::SeqCst);
        let got: Vec<u64> = self
            .view
            .received
            .iter()
            .zip(&self.base.1)
            .map(|(r, b)| r.load(Ordering::SeqCst) - b.load(Ordering::SeqCst))
            .collect();
        let total: u64 = got.iter().sum();
        let expected = sent * self.n;
        let (min, max) = (
            got.iter().min().copied().unwrap_or(0),
            got.iter().max().copied().unwrap_or(0),
        );
        let drops = udp_rcvbuf_errors() - self.rcvbuf_errors;
        let dgrams = self.view.datagrams.load(Ordering::SeqCst) - self.wire_base.0;
        let bytes = self.view.bytes.load(Ordering::SeqCst) - self.wire_base.1;
        let fwd = self.packets * self.n;
        let cpu_s = self.cpu_ns as f64 / 1e9;
        let wall_s = self.wall.as_secs_f64();
        eprintln!(
            "N={n}: publisher sent {sent}, viewers received {total} of {expected} \
             ({pct:.3}%; per viewer min {min}, max {max}); UDP RcvbufErrors +{drops}; \
             keyframe requests to the publisher: {kf}; the viewers read {dgrams} datagrams \
             ({dpp:.2} per media packet), {mb:.1} MB ({bpp:.0} B per media packet)",
            n = self.n,
            pct = 100.0 * total as f64 / expected.max(1) as f64,
            kf = self.publ.keyframe_requests.load(Ordering::SeqCst),
            dpp = dgrams as f64 / total.max(1) as f64,
            mb = bytes as f64 / 1e6,
            bpp = bytes as f64 / total.max(1) as f64,
        );
        // The same CPU less what the SFU spends with these peers and no media (timers,
        // keepalives, policy), i.e. the cost that scales with packets.
        let marginal = (cpu_s - self.idle_cpu_per_s * wall_s).max(1e-9);
        eprintln!(
            "N={n}: criterion runs: {fwd} forwarded in {cpu_s:.3} s SFU CPU over {wall_s:.2} s \
             wall = {rate:.0} forwarded/CPU-s ({wrate:.0} forwarded/s wall, SFU busy {busy:.0}%); \
             SFU idle with these peers: {idle:.1} ms CPU/s; less idle: {mrate:.0} forwarded/CPU-s \
             ({mus:.2} µs per forwarded packet); clients busy {cbusy:.0}% (of one CPU)",
            n = self.n,
            cbusy = 100.0 * self.client_ns as f64 / 1e9 / wall_s.max(1e-9),
            rate = fwd as f64 / cpu_s.max(1e-9),
            wrate = fwd as f64 / wall_s.max(1e-9),
            busy = 100.0 * cpu_s / wall_s.max(1e-9),
            idle = self.idle_cpu_per_s * 1e3,
            mrate = fwd as f64 / marginal,
            mus = marginal * 1e6 / fwd.max(1) as f64,
        );
        if let Some(sfu) = self.sfu.as_ref() {
            eprintln!(
                "N={n}: viewers on the fast egress path: {fast}; its RTX packets: {rtx}",
                n = self.n,
                fast = sfu.fast_egress_subscribers(),
                rtx = sfu.fast_egress_rtx(),
            );
        }
        self.publ.stop.store(true, Ordering::SeqCst);
        if let Some(sfu) = self.sfu.take() {
            rt.block_on(sfu.shutdown());
        }
        self.view.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        assert!(
            total * 100 >= expected * 99,
            "N={}: viewers got {total} of {expected} forwarded packets",
            self.n
        );
    }
}

fn sfu_forward(c: &mut Criterion) {
    let two_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if two_cpus {
        pin_current_thread(1);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // SFU_FORWARD_BWE=off: subscriber connections without bandwidth estimation and pacer.
    let bwe = std::env::var("SFU_FORWARD_BWE").map_or(true, |v| v != "off");
    // SFU_FORWARD_EGRESS=fast: forwarded RTP through the fast egress path.
    let fast = std::env::var("SFU_FORWARD_EGRESS").is_ok_and(|v| v == "fast");
    let egress_path = if fast {
        EgressPath::Fast
    } else {
        EgressPath::Str0m
    };
    let mut group = c.benchmark_group(format!(
        "sfu_forward{}{}",
        if bwe { "" } else { "_nobwe" },
        if fast { "_fast" } else { "" }
    ));
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    // SFU_FORWARD_N=1,100 runs a subset (a criterion filter would still set every N up).
    let only: Option<Vec<u64>> = std::env::var("SFU_FORWARD_N")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect());
    for n in FANOUT {
        if only.as_ref().is_some_and(|o| !o.contains(&n)) {
            continue;
        }
        let mut h = Harness::start(&rt, n, two_cpus, bwe, egress_path);
        // Criterion's budgets are in SFU CPU time; size them from wall-time budgets.
        let busy = h.calibrate(CALIBRATE);
        let cpu = |wall: Duration| wall.mul_f64(busy).max(Duration::from_millis(10));
        group
            .warm_up_time(cpu(WARM_UP))
            .measurement_time(cpu(MEASURE))
            .throughput(Throughput::Elements(n));
        group.bench_function(BenchmarkId::new("fanout", n), |b| {
            b.iter_custom(|iters| h.run(iters))
        });
        h.finish(&rt);
    }
    group.finish();
}

criterion_group!(benches, sfu_forward);
criterion_main!(benches);

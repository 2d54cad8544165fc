//! A UDP relay on loopback that loses some datagrams in one direction, standing in for a
//! lossy network between two cascade nodes (this machine has no netem).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Nothing outlives this, whatever a failing test does.
const LIFETIME: Duration = Duration::from_secs(120);

pub struct LossyUdp {
    addr: SocketAddr,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LossyUdp {
    /// Relays between the first client that sends to it and the upstream set later; of the
    /// upstream's datagrams to the client, once `spare` have passed, every `every`th one over
    /// `min_len` bytes is lost (QUIC's own small packets, ACKs, mostly pass).
    pub fn start(every: u64, min_len: usize, spare: u64) -> LossyUdp {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the relay");
        sock.set_read_timeout(Some(Duration::from_millis(50))).ok();
        let addr = sock.local_addr().expect("relay address");
        let upstream = Arc::new(Mutex::new(None::<SocketAddr>));
        let dropped = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (upstream, dropped, stop) = (upstream.clone(), dropped.clone(), stop.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut client: Option<SocketAddr> = None;
                let (mut passed, mut big) = (0u64, 0u64);
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) && started.elapsed() < LIFETIME {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let Some(up) = *upstream.lock().unwrap() else {
                        continue;
                    };
                    if from != up {
                        client.get_or_insert(from);
                        if Some(from) == client {
                            let _ = sock.send_to(&buf[..n], up);
                        }
                        continue;
                    }
                    let Some(to) = client else { continue };
                    passed += 1;
                    if passed > spare && n >= min_len {
                        big += 1;
                        if big % every == 0 {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    let _ = sock.send_to(&buf[..n], to);
                }
            })
        };
        LossyUdp {
            addr,
            upstream,
            dropped,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_upstream(&self, up: SocketAddr) {
        *self.upstream.lock().unwrap() = Some(up);
    }

    /// Datagrams lost so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for LossyUdp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

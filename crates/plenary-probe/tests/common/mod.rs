//! Shared by the SFU probe tests: the embedded-in-test SFU's runtime and a userspace
//! impairment relay. Each test binary uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the relay does to the SFU's packets towards the viewers.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    pub loss_pct: f64,
    pub delay_ms: f64,
}

pub fn sfu_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A one-way impairment: viewer→SFU passes at once, SFU→viewer is delayed and thinned.
/// Event-driven (mio), so its own scheduling adds well under a millisecond.
pub fn relay(front: UdpSocket, sfu: SocketAddr, stop: Arc<AtomicBool>, imp: Impairment) {
    use mio::net::UdpSocket as MioUdp;
    use mio::{Events, Interest, Poll, Token};
    const FRONT: Token = Token(0);
    front.set_nonblocking(true).unwrap();
    let mut front = MioUdp::from_std(front);
    let mut poll = Poll::new().unwrap();
    poll.registry()
        .register(&mut front, FRONT, Interest::READABLE)
        .unwrap();
    let mut ups: Vec<(SocketAddr, MioUdp)> = Vec::new();
    let mut by_client: HashMap<SocketAddr, usize> = HashMap::new();
    let mut queue: VecDeque<(Instant, SocketAddr, Vec<u8>)> = VecDeque::new();
    let mut events = Events::with_capacity(256);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut buf = [0u8; 2048];
    let delay = Duration::from_secs_f64(imp.delay_ms / 1000.0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let wait = queue
            .front()
            .map_or(Duration::from_millis(20), |q| {
                q.0.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(20));
        let _ = poll.poll(&mut events, Some(wait));
        for ev in events.iter() {
            if ev.token() == FRONT {
                while let Ok((n, from)) = front.recv_from(&mut buf) {
                    let i = *by_client.entry(from).or_insert_with(|| {
                        let s = UdpSocket::bind("127.0.0.3:0").unwrap();
                        s.connect(sfu).unwrap();
                        s.set_nonblocking(true).unwrap();
                        let mut s = MioUdp::from_std(s);
                        poll.registry()
                            .register(&mut s, Token(ups.len() + 1), Interest::READABLE)
                            .unwrap();
                        ups.push((from, s));
                        ups.len() - 1
                    });
                    let _ = ups[i].1.send(&buf[..n]);
                }
            } else if let Some((client, up)) = ups.get(ev.token().0 - 1) {
                while let Ok(n) = up.recv(&mut buf) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if (rng % 10_000) as f64 >= imp.loss_pct * 100.0 {
                        queue.push_back((Instant::now() + delay, *client, buf[..n].to_vec()));
                    }
                }
            }
        }
        while queue.front().is_some_and(|q| q.0 <= Instant::now()) {
            if let Some((_, to, data)) = queue.pop_front() {
                let _ = front.send_to(&data, to);
            }
        }
    }
}

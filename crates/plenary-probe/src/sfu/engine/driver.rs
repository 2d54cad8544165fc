//! A driver thread: one mio poll loop owning many peers, their sockets and a deadline heap.
//! Nothing else touches a peer, so the packet path has no locks; the controller talks to it
//! with commands (and a waker) and gets cumulative counters and step windows back.

use super::clock::Clock;
use super::load;
use super::peer::{Peer, PeerCounters};
use crate::sfu::recv::track::{TrackKind, TrackWindow};
use crate::stats::histogram::LogHistogram;
use mio::{Events, Interest, Poll, Token, Waker};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::media::Mid;

const WAKE: Token = Token(usize::MAX);
/// Messages read from one socket per turn, so one busy peer cannot starve the rest. A
/// socket left readable goes on the backlog and is read again next turn: readiness is
/// edge-triggered, so waiting for the next event could strand packets until more arrive.
const READ_BURST: usize = 64;
/// Largest datagram read; a longer one is cut and dropped. With `UDP_GRO` a message holds
/// a whole GSO run, up to `GRO_SLOT`.
const MAX_DATAGRAM: usize = 2048;
/// On the fast path, while datagrams keep coming, sockets are read once per tick rather
/// than at every datagram's wake-up: the kernel stamps each datagram's arrival, so reading
/// later changes no measurement, and a wake-up and a `recvmmsg` carry more datagrams.
/// Media is still sent at its deadlines; commands wait at most a tick.
const READ_TICK: Duration = Duration::from_millis(5);
/// Longest the loop sleeps without a deadline.
const MAX_SLEEP: Duration = Duration::from_millis(50);

pub enum Cmd {
    Add(Box<Peer>),
    /// The server paused a received track (last-N): not a freeze.
    Paused {
        peer: u64,
        mid: Mid,
        paused: bool,
    },
    /// Dynacast: the server wants a simulcast layer on or off.
    LayerActive {
        peer: u64,
        mid: Mid,
        layer: u8,
        active: bool,
    },
    /// An offer for a peer's renegotiation (room API subscribe connection).
    RemoteOffer {
        peer: u64,
        sdp: String,
        expect: Vec<(Mid, TrackKind, bool)>,
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
    RemoveParticipant(u32),
    /// Earliest first audio packet and first video frame (probe clock, µs) over a
    /// participant's receivers: re-homing times the return of media from its new peers.
    FirstMedia {
        participant: u32,
        reply: tokio::sync::oneshot::Sender<(Option<u64>, Option<u64>)>,
    },
    Snapshot(mpsc::Sender<Snapshot>),
    BeginStep,
    EndStep(mpsc::Sender<Harvest>),
    Stop,
}

/// Cumulative counters of one driver since it started (the controller subtracts).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub peers: u32,
    pub connected: u32,
    pub dead: u32,
    pub counters: PeerCounters,
    pub socket_drops: u64,
    pub audio_rx_packets: u64,
    pub video_rx_packets: u64,
    pub audio_expected: u64,
    pub audio_lost: u64,
    pub video_expected: u64,
    pub video_lost: u64,
    pub delay_sum_us: u64,
    pub delay_n: u64,
    pub delay_max_us: u64,
    pub frames: u64,
    /// Lateness of media sends since the last snapshot.
    pub lag: LogHistogram,
}

/// One step's measured window.
pub struct Harvest {
    pub tracks: Vec<(u32, bool, TrackWindow)>,
    pub lag: LogHistogram,
}

pub struct DriverHandle {
    tx: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DriverHandle {
    pub fn send(&self, cmd: Cmd) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    pub fn stop(mut self) {
        self.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a driver thread; `fast_receive` is the receive fast path's way of reading
/// (batched, in ticks, kernel arrival times), false str0m's (`--str0m-receive`).
pub fn spawn(
    name: String,
    clock: Clock,
    pin: Option<Vec<usize>>,
    fast_receive: bool,
) -> std::io::Result<DriverHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        if let Some(cpus) = pin {
            let _ = load::pin(0, &cpus);
        }
        Driver::new(poll, clock, fast_receive).run(rx);
    })?;
    Ok(DriverHandle {
        tx,
        waker,
        thread: Some(thread),
    })
}

struct Driver {
    poll: Poll,
    clock: Clock,
    slots: Vec<Option<Peer>>,
    free: Vec<usize>,
    gens: Vec<u64>,
    /// Per slot, the deadline of its live heap entry (u64::MAX: none).
    scheduled: Vec<u64>,
    heap: BinaryHeap<Reverse<(u64, usize, u64)>>,
    /// Counters of peers already removed, so totals stay cumulative.
    gone: PeerCounters,
    drops_seen: HashMap<u64, u64>,
    socket_drops: u64,
    lag_snap: LogHistogram,
    lag_step: LogHistogram,
    buf: Vec<u8>,
    /// The fast path's reads: one `recvmmsg` of up to READ_BURST messages per socket turn.
    #[cfg(target_os = "linux")]
    batch: plenary_srtp::recv_batch::RecvBatch,
    /// Sockets that still had datagrams when their turn ended.
    backlog: Vec<usize>,
    ready: Vec<usize>,
    /// Read sockets in ticks (the fast path); `busy` while the last poll found datagrams.
    coalesce: bool,
    busy: bool,
    last_read: Instant,
}

impl Driver {
    fn new(poll: Poll, clock: Clock, coalesce: bool) -> Driver {
        Driver {
            poll,
            clock,
            slots: Vec::new(),
            free: Vec::new(),
            gens: Vec::new(),
            scheduled: Vec::new(),
            heap: BinaryHeap::new(),
            gone: PeerCounters::default(),
            drops_seen: HashMap::new(),
            socket_drops: 0,
            lag_snap: LogHistogram::new(),
            lag_step: LogHistogram::new(),
            buf: vec![0u8; MAX_DATAGRAM],
            #[cfg(target_os = "linux")]
            batch: plenary_srtp::recv_batch::RecvBatch::new(
                READ_BURST,
                if coalesce && super::gro_wanted() {
                    plenary_srtp::recv_batch::GRO_SLOT
                } else {
                    MAX_DATAGRAM
                },
            ),
            backlog: Vec::new(),
            ready: Vec::new(),
            coalesce,
            busy: false,
            last_read: Instant::now(),
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            let now_us = self.clock.us(now);
            while let Some(&Reverse((due, slot, gen))) = self.heap.peek() {
                if due > now_us {
                    break;
                }
                self.heap.pop();
                if self.gens.get(slot) == Some(&gen) {
                    self.scheduled[slot] = u64::MAX;
                    self.service(slot, Instant::now());
                }
            }
            let sleep = self
                .heap
                .peek()
                .map(|r| Duration::from_micros(r.0 .0.saturating_sub(self.clock.now_us())))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            let mut sleep = if self.backlog.is_empty() {
                sleep
            } else {
                Duration::ZERO
            };
            if self.coalesce && self.busy && !sleep.is_zero() {
                // Readiness queues up in epoll meanwhile; collect it at the tick.
                let tick = (self.last_read + READ_TICK).saturating_duration_since(Instant::now());
                std::thread::sleep(tick.min(sleep));
                sleep = Duration::ZERO;
            }
            if self.poll.poll(&mut events, Some(sleep)).is_err() {
                continue;
            }
            let mut ready = std::mem::take(&mut self.ready);
            ready.clear();
            ready.append(&mut self.backlog);
            ready.extend(
                events
                    .iter()
                    .map(|ev| ev.token())
                    .filter(|t| *t != WAKE)
                    .map(|t| t.0),
            );
            self.busy = !ready.is_empty();
            if self.busy {
                self.last_read = Instant::now();
            }
            ready.sort_unstable();
            ready.dedup();
            for &slot in &ready {
                self.read(slot);
            }
            self.ready = ready;
            while let Ok(cmd) = rx.try_recv() {
                if !self.command(cmd) {
                    self.shutdown();
                    return;
                }
            }
        }
    }

    fn read(&mut self, slot: usize) {
        let Some(Some(peer)) = self.slots.get_mut(slot) else {
            return;
        };
        #[cfg(target_os = "linux")]
        let drained = if peer.fast_receive() {
            read_batch(&mut self.batch, peer, &self.clock)
        } else {
            read_each(&mut self.buf, peer, &self.clock)
        };
        #[cfg(not(target_os = "linux"))]
        let drained = read_each(&mut self.buf, peer, &self.clock);
        if !drained {
            self.backlog.push(slot);
        }
        // On the fast path a read rarely brings anything forward (a NACK, a PLI, the first
        // TWCC of a window): the service already planned is enough otherwise.
        if self.coalesce && peer.wake_at_us() >= self.scheduled[slot] {
            return;
        }
        self.service(slot, Instant::now());
    }

    fn service(&mut self, slot: usize, now: Instant) {
        let Some(Some(peer)) = self.slots.get_mut(slot) else {
            return;
        };
        let s = peer.service(&self.clock, now);
        for lag in s.lags {
            self.lag_snap.record(lag);
            self.lag_step.record(lag);
        }
        if peer.dead && !peer.rtc.is_alive() {
            self.remove(slot);
            return;
        }
        self.gens[slot] += 1;
        self.scheduled[slot] = s.next_us;
        self.heap.push(Reverse((s.next_us, slot, self.gens[slot])));
    }

    fn remove(&mut self, slot: usize) {
        if let Some(mut peer) = self.slots[slot].take() {
            let _ = self.poll.registry().deregister(&mut peer.socket);
            add(&mut self.gone, &peer.counters);
            self.drops_seen.remove(&peer.inode);
            self.gens[slot] += 1;
            self.scheduled[slot] = u64::MAX;
            self.free.push(slot);
        }
    }

    fn peer(&mut self, id: u64) -> Option<&mut Peer> {
        self.slots.iter_mut().flatten().find(|p| p.id == id)
    }

    fn command(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Add(mut peer) => {
                let slot = self.free.pop().unwrap_or_else(|| {
                    self.slots.push(None);
                    self.gens.push(0);
                    self.scheduled.push(u64::MAX);
                    self.slots.len() - 1
                });
                if self
                    .poll
                    .registry()
                    .register(&mut peer.socket, Token(slot), Interest::READABLE)
                    .is_err()
                {
                    self.free.push(slot);
                    return true;
                }
                self.slots[slot] = Some(*peer);
                self.service(slot, Instant::now());
            }
            Cmd::Paused { peer, mid, paused } => {
                if let Some(p) = self.peer(peer) {
                    p.set_paused(mid, paused);
                }
            }
            Cmd::LayerActive {
                peer,
                mid,
                layer,
                active,
            } => {
                if let Some(p) = self.peer(peer) {
                    p.set_layer_active(mid, layer, active);
                }
            }
            Cmd::RemoteOffer {
                peer,
                sdp,
                expect,
                reply,
            } => {
                let answer = match self.peer(peer) {
                    Some(p) => super::build::renegotiate(p, &sdp, expect),
                    None => Err("no such peer".into()),
                };
                let _ = reply.send(answer);
                if let Some(slot) = self
                    .slots
                    .iter()
                    .position(|s| s.as_ref().is_some_and(|p| p.id == peer))
                {
                    self.service(slot, Instant::now());
                }
            }
            Cmd::RemoveParticipant(n) => {
                let slots: Vec<usize> = (0..self.slots.len())
                    .filter(|&i| self.slots[i].as_ref().is_some_and(|p| p.participant == n))
                    .collect();
                for slot in slots {
                    if let Some(Some(p)) = self.slots.get_mut(slot) {
                        p.disconnect();
                    }
                    self.remove(slot);
                }
            }
            Cmd::FirstMedia { participant, reply } => {
                let (mut audio, mut video) = (None::<u64>, None::<u64>);
                for p in self.slots.iter().flatten() {
                    if p.participant != participant {
                        continue;
                    }
                    for r in &p.receivers {
                        let (slot, at) = match r.rx.kind {
                            TrackKind::Audio => (&mut audio, r.rx.first_packet_us),
                            TrackKind::Video => (&mut video, r.rx.first_frame_us),
                        };
                        if let Some(t) = at {
                            *slot = Some(slot.map_or(t, |s| s.min(t)));
                        }
                    }
                }
                let _ = reply.send((audio, video));
            }
            Cmd::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Cmd::BeginStep => {
                let now_us = self.clock.now_us();
                self.lag_step.clear();
                for p in self.slots.iter_mut().flatten() {
                    p.begin_step(now_us);
                }
            }
            Cmd::EndStep(reply) => {
                let now_us = self.clock.now_us();
                let mut tracks = Vec::new();
                for p in self.slots.iter_mut().flatten() {
                    let part = p.participant;
                    tracks.extend(
                        p.end_step(now_us)
                            .into_iter()
                            .map(|(must, w)| (part, must, w)),
                    );
                }
                let lag = std::mem::take(&mut self.lag_step);
                let _ = reply.send(Harvest { tracks, lag });
            }
            Cmd::Stop => return false,
        }
        true
    }

    fn snapshot(&mut self) -> Snapshot {
        let drops = load::udp_drops();
        let mut s = Snapshot {
            counters: self.gone,
            ..Snapshot::default()
        };
        let now_us = self.clock.now_us();
        for p in self.slots.iter_mut().flatten() {
            s.peers += 1;
            s.connected += u32::from(p.connected_us.is_some());
            s.dead += u32::from(p.dead);
            add(&mut s.counters, &p.counters);
            if let Some(&d) = drops.get(&p.inode) {
                let seen = self.drops_seen.entry(p.inode).or_insert(d);
                self.socket_drops += d.saturating_sub(*seen);
                *seen = d;
            }
            for r in &mut p.receivers {
                let sec = r.rx.take_second(now_us);
                let (pk, exp, lost) = match r.rx.kind {
                    TrackKind::Audio => (
                        &mut s.audio_rx_packets,
                        &mut s.audio_expected,
                        &mut s.audio_lost,
                    ),
                    TrackKind::Video => (
                        &mut s.video_rx_packets,
                        &mut s.video_expected,
                        &mut s.video_lost,
                    ),
                };
                *pk += sec.packets;
                *exp += sec.expected;
                *lost += sec.lost;
                s.delay_sum_us += sec.delay_sum_us;
                s.delay_n += sec.delay_n;
                s.delay_max_us = s.delay_max_us.max(sec.delay_max_us);
                s.frames += sec.frames;
            }
        }
        s.socket_drops = self.socket_drops;
        s.lag = std::mem::take(&mut self.lag_snap);
        s
    }

    fn shutdown(&mut self) {
        for p in self.slots.iter_mut().flatten() {
            p.disconnect();
            let _ = p.service(&self.clock, Instant::now());
        }
    }
}

/// Reads up to READ_BURST datagrams one `recv_from` at a time (str0m's receive path, and
/// the fallback where `recvmmsg` is not available). True when the socket is empty.
fn read_each(buf: &mut [u8], peer: &mut Peer, clock: &Clock) -> bool {
    for _ in 0..READ_BURST {
        match peer.socket.recv_from(buf) {
            Ok((n, src)) => {
                let now = Instant::now();
                peer.on_datagram(clock, now, clock.us(now), src, &mut buf[..n]);
            }
            Err(_) => return true,
        }
    }
    false
}

/// Reads up to READ_BURST messages with one `recvmmsg`; a GSO run kept whole (`UDP_GRO`)
/// is split back into its datagrams. Each one's arrival time is the kernel's stamp (the
/// socket asked for them; a run's datagrams share it, as they were sent together), moved
/// onto the probe's clock; without one, the time the call returned. True when the socket
/// is empty.
#[cfg(target_os = "linux")]
fn read_batch(
    batch: &mut plenary_srtp::recv_batch::RecvBatch,
    peer: &mut Peer,
    clock: &Clock,
) -> bool {
    let Ok(n) = batch.recv(&peer.socket) else {
        return true;
    };
    let now = Instant::now();
    let now_us = clock.us(now);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    for i in 0..n {
        // How long ago the kernel got it; a stamp from the future (a clock step) is now.
        let ago_us = batch
            .timestamp(i)
            .map_or(0, |t| wall.saturating_sub(t).as_micros() as u64);
        let segment = batch.segment_size(i);
        let Some((data, Some(src), false)) = batch.get_mut(i) else {
            continue; // cut to the slot, or no source: nothing a peer sends
        };
        let arrival_us = now_us.saturating_sub(ago_us);
        match segment {
            Some(size) => {
                for one in data.chunks_mut(size) {
                    peer.on_datagram(clock, now, arrival_us, src, one);
                }
            }
            None => peer.on_datagram(clock, now, arrival_us, src, data),
        }
    }
    n < batch.capacity()
}

/// Adds counters (peers that left keep counting in the totals).
pub fn add(a: &mut PeerCounters, b: &PeerCounters) {
    a.tx_packets += b.tx_packets;
    a.tx_bytes += b.tx_bytes;
    a.send_drops += b.send_drops;
    a.send_errors += b.send_errors;
    a.rx_datagrams += b.rx_datagrams;
    a.rx_bytes += b.rx_bytes;
    a.keyframe_requests_in += b.keyframe_requests_in;
    a.keyframes_out += b.keyframes_out;
    a.rtc_errors += b.rtc_errors;
    a.fast.add(&b.fast);
}

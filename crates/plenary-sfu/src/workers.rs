//! Media workers: which worker holds which room, and how commands reach it.
//!
//! Each worker is an OS thread with its own SO_REUSEPORT socket on the one media port, its own
//! rooms and `Rtc`s. Ids carry their worker in the low byte, so a resource or participant id
//! alone finds its worker. Placement is consulted on joins only, never per packet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};

use crate::Cmd;

/// Ids are `(counter << 8) | worker`.
pub(crate) const WORKER_BITS: u32 = 8;
/// A room's span is a 64-bit mask of workers.
pub(crate) const MAX_WORKERS: usize = 64;
/// With cascading, span bits from here up stand for links to other nodes (one pseudo worker
/// per link), so local workers are capped below it.
pub(crate) const LINK_BASE: usize = 32;
pub(crate) const MAX_LINKS: usize = MAX_WORKERS - LINK_BASE;

pub(crate) fn worker_of(id: u64) -> usize {
    (id & ((1 << WORKER_BITS) - 1)) as usize
}

/// ICE ufrags start with the worker index, so a STUN check landing on another worker's
/// socket finds its owner from the USERNAME attribute.
pub(crate) fn ufrag_prefix(worker: usize) -> String {
    format!("w{worker}x")
}

pub(crate) fn worker_of_ufrag(ufrag: &str) -> Option<usize> {
    let rest = ufrag.strip_prefix('w')?;
    let (n, _) = rest.split_once('x')?;
    n.parse().ok()
}

/// Where a room lives: its members per worker. The first worker is its home; joins spill to
/// other workers once the home holds `spill` members, and the room's tracks are piped between
/// the workers it spans (see `media::pipe`).
struct RoomPlace {
    members: Vec<usize>,
}

impl RoomPlace {
    fn mask(&self) -> u64 {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| **m > 0)
            .fold(0, |acc, (w, _)| acc | (1 << w))
    }
}

/// The worker's channel is closed: it has stopped.
#[derive(Debug)]
pub(crate) struct Stopped;

/// One worker's command channel, and the waker that gets it out of epoll at once.
pub(crate) struct WorkerTx<'a> {
    index: usize,
    tx: &'a mpsc::Sender<Cmd>,
    waker: Option<&'a mio::Waker>,
    /// Set once a wake-up is on its way, until the worker drains its channel: piped media
    /// sends many messages per pass, and one eventfd write per pass is enough.
    woken: &'a AtomicBool,
}

impl WorkerTx<'_> {
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Err: the worker has stopped.
    pub(crate) fn send(&self, cmd: Cmd) -> Result<(), Stopped> {
        self.tx.send(cmd).map_err(|_| Stopped)?;
        if let Some(w) = self.waker {
            if !self.woken.swap(true, Ordering::AcqRel) {
                let _ = w.wake();
            }
        }
        Ok(())
    }
}

/// What the cascade hears of rooms from the router.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RoomEvent {
    /// The last member of a room on this node left.
    Emptied(String),
    /// A track published here appeared or went (for the directory's track → node).
    Track {
        room: String,
        track: String,
        up: bool,
    },
}

#[derive(Default)]
struct Places {
    rooms: HashMap<String, RoomPlace>,
    /// Cascade links (bits from `LINK_BASE`) each room is carried on.
    links: HashMap<String, u64>,
}

impl Places {
    fn mask(&self, room: &str) -> u64 {
        let local = self.rooms.get(room).map_or(0, RoomPlace::mask);
        local | self.links.get(room).copied().unwrap_or(0)
    }

    /// The rooms and members gauges (dashboards); set on joins and leaves, never per packet.
    fn publish(&self) {
        let members: usize = self.rooms.values().flat_map(|p| p.members.iter()).sum();
        metrics::gauge!(ROOMS_GAUGE).set(self.rooms.len() as f64);
        metrics::gauge!(MEMBERS_GAUGE).set(members as f64);
    }
}

/// Rooms with a member on this node.
pub(crate) const ROOMS_GAUGE: &str = "plenary_sfu_rooms";
/// Members of those rooms on this node: room participants, WHIP publishers, WHEP viewers.
pub(crate) const MEMBERS_GAUGE: &str = "plenary_sfu_room_members";

pub(crate) struct Router {
    senders: Vec<mpsc::Sender<Cmd>>,
    wakers: Vec<OnceLock<mio::Waker>>,
    woken: Vec<AtomicBool>,
    /// Members a room gets on one worker before it spans another (0: never).
    spill: usize,
    rooms: Mutex<Places>,
    events: OnceLock<tokio::sync::mpsc::Sender<RoomEvent>>,
}

impl Router {
    pub(crate) fn new(senders: Vec<mpsc::Sender<Cmd>>, spill: usize) -> Self {
        Self {
            wakers: senders.iter().map(|_| OnceLock::new()).collect(),
            woken: senders.iter().map(|_| AtomicBool::new(false)).collect(),
            senders,
            spill,
            rooms: Mutex::new(Places::default()),
            events: OnceLock::new(),
        }
    }

    /// Tells the cascade (a no-op on a single node); never waits.
    pub(crate) fn notify(&self, ev: RoomEvent) {
        if let Some(tx) = self.events.get() {
            let _ = tx.try_send(ev);
        }
    }

    /// The cascade listens for rooms emptied on this node.
    pub(crate) fn set_events(&self, tx: tokio::sync::mpsc::Sender<RoomEvent>) {
        let _ = self.events.set(tx);
    }

    fn places(&self) -> std::sync::MutexGuard<'_, Places> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Carries `room` on cascade link `bit` or stops; the room's workers are told their new
    /// span (a worker new to a link syncs the room to it).
    pub(crate) fn set_link(&self, room: &str, bit: usize, on: bool) {
        self.set_link_in(&mut self.places(), room, bit, on);
    }

    /// A cascade link is gone: no room is carried on it any more.
    pub(crate) fn clear_link(&self, bit: usize) {
        let mut places = self.places();
        let rooms: Vec<String> = places
            .links
            .iter()
            .filter(|(_, m)| **m & (1 << bit) != 0)
            .map(|(r, _)| r.clone())
            .collect();
        for room in rooms {
            self.set_link_in(&mut places, &room, bit, false);
        }
    }

    fn set_link_in(&self, places: &mut Places, room: &str, bit: usize, on: bool) {
        let links = places.links.entry(room.to_owned()).or_default();
        let before = *links;
        if on {
            *links |= 1 << bit;
        } else {
            *links &= !(1 << bit);
        }
        let now = *links;
        if now == 0 {
            places.links.remove(room);
        }
        if now != before && places.rooms.contains_key(room) {
            self.tell_span(room, places.mask(room), None);
        }
    }

    /// Local workers holding members of `room`.
    pub(crate) fn local_mask(&self, room: &str) -> u64 {
        self.places().rooms.get(room).map_or(0, RoomPlace::mask)
    }

    /// Members on this node, for the directory's load figure.
    pub(crate) fn members(&self) -> usize {
        let places = self.places();
        places.rooms.values().flat_map(|p| p.members.iter()).sum()
    }

    /// Every local worker, whatever rooms it holds (link set-up and tear-down).
    pub(crate) fn broadcast(&self, cmd: impl Fn() -> Cmd) {
        for w in 0..self.senders.len() {
            let _ = self.tx(w).send(cmd());
        }
    }

    pub(crate) fn workers(&self) -> usize {
        self.senders.len()
    }

    /// Each worker registers its epoll waker once, at start.
    pub(crate) fn set_waker(&self, worker: usize, waker: mio::Waker) {
        if let Some(slot) = self.wakers.get(worker) {
            let _ = slot.set(waker);
        }
    }

    fn tx(&self, w: usize) -> WorkerTx<'_> {
        WorkerTx {
            index: w,
            tx: &self.senders[w],
            waker: self.wakers[w].get(),
            woken: &self.woken[w],
        }
    }

    /// A worker calls this before draining its channel: a message sent from now on wakes it
    /// again.
    pub(crate) fn draining(&self, worker: usize) {
        if let Some(w) = self.woken.get(worker) {
            w.store(false, Ordering::Release);
        }
    }

    /// The worker for a join into `room`: the room's home until it holds `spill` members,
    /// then whichever of the workers holds fewest of the room. Counts the join; the worker
    /// calls `left` when it ends (or fails). When the room comes to span a new worker, every
    /// worker of the room is told before the join is routed.
    pub(crate) fn join(&self, room: &str) -> WorkerTx<'_> {
        let mut places = self.places();
        let n = self.senders.len();
        let links = places.links.get(room).copied().unwrap_or(0);
        let Places { rooms, .. } = &mut *places;
        let worker = match rooms.get_mut(room) {
            Some(p) => {
                let home = p.members.iter().position(|m| *m > 0).unwrap_or(0);
                let w = if self.spill == 0 || p.members[home] < self.spill {
                    home
                } else {
                    (0..n)
                        .min_by_key(|w| (p.members[*w], *w != home))
                        .unwrap_or(home)
                };
                p.members[w] += 1;
                if p.members[w] == 1 {
                    self.tell_span(room, p.mask() | links, Some(w));
                }
                w
            }
            None => {
                let mut load = vec![0usize; n];
                for p in rooms.values() {
                    for (w, m) in p.members.iter().enumerate() {
                        load[w] += m;
                    }
                }
                let w = (0..n).min_by_key(|w| load[*w]).unwrap_or(0);
                let mut members = vec![0; n];
                members[w] = 1;
                rooms.insert(room.to_owned(), RoomPlace { members });
                if links != 0 {
                    // Cascaded: the worker must sync with the links before its first join.
                    self.tell_span(room, (1 << w) | links, Some(w));
                }
                w
            }
        };
        places.publish();
        self.tx(worker)
    }

    /// A member of `room` on `worker` is gone; the room is forgotten with its last member.
    pub(crate) fn left(&self, room: &str, worker: usize) {
        let mut places = self.places();
        let links = places.links.get(room).copied().unwrap_or(0);
        let Some(p) = places.rooms.get_mut(room) else {
            return;
        };
        let Some(m) = p.members.get_mut(worker) else {
            return;
        };
        *m = m.saturating_sub(1);
        if *m == 0 {
            let mask = p.mask();
            if mask == 0 {
                places.rooms.remove(room);
                if links != 0 {
                    let _ = self.tx(worker).send(Cmd::Pipe(crate::media::PipeMsg::Span {
                        room: room.to_owned(),
                        workers: 0,
                    }));
                }
                if let Some(tx) = self.events.get() {
                    let _ = tx.try_send(RoomEvent::Emptied(room.to_owned()));
                }
            } else {
                self.tell_span(room, mask | links, None);
                // The worker that emptied must drop its replica too.
                let _ = self.tx(worker).send(Cmd::Pipe(crate::media::PipeMsg::Span {
                    room: room.to_owned(),
                    workers: 0,
                }));
            }
        }
        places.publish();
    }

    /// Tells every worker of the room its span; a newly added worker first, so that it has
    /// the span before the others' syncs reach it.
    fn tell_span(&self, room: &str, mask: u64, added: Option<usize>) {
        let order = added
            .into_iter()
            .chain((0..self.senders.len()).filter(|w| Some(*w) != added));
        for w in order {
            if mask & (1 << w) != 0 {
                let _ = self.tx(w).send(Cmd::Pipe(crate::media::PipeMsg::Span {
                    room: room.to_owned(),
                    workers: mask,
                }));
            }
        }
    }

    /// The worker holding an id made by `worker_of`'s scheme.
    pub(crate) fn by_id(&self, id: u64) -> Option<WorkerTx<'_>> {
        (worker_of(id) < self.senders.len()).then(|| self.tx(worker_of(id)))
    }

    pub(crate) fn worker(&self, w: usize) -> Option<WorkerTx<'_>> {
        (w < self.senders.len()).then(|| self.tx(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_go_to_the_least_loaded_worker_and_stay_there() {
        let (a, _ra) = mpsc::channel();
        let (b, _rb) = mpsc::channel();
        let r = Router::new(vec![a, b], 0);
        let place = |room: &str| r.join(room).index();
        assert_eq!(place("big"), 0);
        assert_eq!(place("big"), 0);
        assert_eq!(place("small"), 1);
        assert_eq!(place("other"), 1, "worker 1 has 1 member, worker 0 has 2");
        r.left("big", 0);
        r.left("big", 0);
        assert_eq!(
            place("big"),
            0,
            "forgotten with its last member, placed afresh"
        );
    }

    fn spans(rx: &mpsc::Receiver<Cmd>) -> Vec<u64> {
        rx.try_iter()
            .filter_map(|c| match c {
                Cmd::Pipe(crate::media::PipeMsg::Span { workers, .. }) => Some(workers),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_room_spills_to_other_workers_and_each_is_told_its_span() {
        let (a, ra) = mpsc::channel();
        let (b, rb) = mpsc::channel();
        let r = Router::new(vec![a, b], 2);
        let placed: Vec<usize> = (0..6).map(|_| r.join("big").index()).collect();
        assert_eq!(
            placed,
            vec![0, 0, 1, 1, 0, 1],
            "home until 2, then the emptier worker"
        );
        assert_eq!(spans(&ra), vec![0b11]);
        assert_eq!(spans(&rb), vec![0b11]);
        // Worker 1's members leave: worker 0 learns the room is its alone, worker 1 drops it.
        for _ in 0..3 {
            r.left("big", 1);
        }
        assert_eq!(spans(&ra), vec![0b01]);
        assert_eq!(spans(&rb), vec![0]);
        assert_eq!(r.join("big").index(), 1, "spills again");
        assert_eq!(spans(&rb), vec![0b11]);
    }

    #[test]
    fn a_cascaded_room_spans_its_links_and_its_worker_leaves_them() {
        let (a, ra) = mpsc::channel();
        let (b, rb) = mpsc::channel();
        let r = Router::new(vec![a, b], 0);
        let link = 1u64 << LINK_BASE;
        // The cascade links the room before its first join is routed.
        r.set_link("big", LINK_BASE, true);
        assert!(spans(&ra).is_empty(), "no worker holds the room yet");
        let w = r.join("big").index();
        let rx = if w == 0 { &ra } else { &rb };
        assert_eq!(
            spans(rx),
            vec![(1 << w) | link],
            "the first join syncs with the link"
        );
        // A second link comes and goes.
        r.set_link("big", LINK_BASE + 1, true);
        assert_eq!(spans(rx), vec![(1 << w) | link | (link << 1)]);
        r.clear_link(LINK_BASE + 1);
        assert_eq!(spans(rx), vec![(1 << w) | link]);
        // The last member leaves: the worker drops the room (and the link's replica).
        r.left("big", w);
        assert_eq!(spans(rx), vec![0]);
        assert_eq!(r.members(), 0);
    }

    #[test]
    fn ids_and_ufrags_name_their_worker() {
        assert_eq!(worker_of((77 << WORKER_BITS) | 3), 3);
        let u = format!("{}abcdef", ufrag_prefix(12));
        assert_eq!(worker_of_ufrag(&u), Some(12));
        assert_eq!(worker_of_ufrag("abcdef"), None);
        assert_eq!(worker_of_ufrag("wxyz"), None);
    }
}

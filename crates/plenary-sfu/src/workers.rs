//! Media workers: which worker holds which room, and how commands reach it.
//!
//! Each worker is an OS thread with its own SO_REUSEPORT socket on the one media port, its own
//! rooms and `Rtc`s. Ids carry their worker in the low byte, so a resource or participant id
//! alone finds its worker. Placement is consulted on joins only, never per packet.

use std::collections::HashMap;
use std::sync::{mpsc, Mutex};

use crate::Cmd;

/// Ids are `(counter << 8) | worker`.
pub(crate) const WORKER_BITS: u32 = 8;
pub(crate) const MAX_WORKERS: usize = 1 << WORKER_BITS;

pub(crate) fn worker_of(id: u64) -> usize {
    (id & (MAX_WORKERS as u64 - 1)) as usize
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

#[derive(Default)]
struct RoomPlace {
    worker: usize,
    /// Joins routed to the room and not yet gone (sessions and room participants).
    members: usize,
}

pub(crate) struct Router {
    senders: Vec<mpsc::Sender<Cmd>>,
    rooms: Mutex<HashMap<String, RoomPlace>>,
}

impl Router {
    pub(crate) fn new(senders: Vec<mpsc::Sender<Cmd>>) -> Self {
        Self {
            senders,
            rooms: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn workers(&self) -> usize {
        self.senders.len()
    }

    /// The worker for a join into `room`: where the room lives, else the one with fewest
    /// members. Counts the join; the worker calls `left` when it ends (or fails).
    pub(crate) fn join(&self, room: &str) -> &mpsc::Sender<Cmd> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let worker = match rooms.get_mut(room) {
            Some(p) => {
                p.members += 1;
                p.worker
            }
            None => {
                let mut load = vec![0usize; self.senders.len()];
                for p in rooms.values() {
                    load[p.worker] += p.members;
                }
                let w = (0..load.len()).min_by_key(|w| load[*w]).unwrap_or(0);
                rooms.insert(
                    room.to_owned(),
                    RoomPlace {
                        worker: w,
                        members: 1,
                    },
                );
                w
            }
        };
        &self.senders[worker]
    }

    /// A member of `room` is gone; the room is forgotten with its last member.
    pub(crate) fn left(&self, room: &str) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = rooms.get_mut(room) {
            p.members = p.members.saturating_sub(1);
            if p.members == 0 {
                rooms.remove(room);
            }
        }
    }

    /// The worker holding an id made by `worker_of`'s scheme.
    pub(crate) fn by_id(&self, id: u64) -> Option<&mpsc::Sender<Cmd>> {
        self.senders.get(worker_of(id))
    }

    pub(crate) fn worker(&self, w: usize) -> Option<&mpsc::Sender<Cmd>> {
        self.senders.get(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_go_to_the_least_loaded_worker_and_stay_there() {
        let (a, _ra) = mpsc::channel();
        let (b, _rb) = mpsc::channel();
        let r = Router::new(vec![a, b]);
        let place = |room: &str| {
            let s = r.join(room) as *const _;
            if std::ptr::eq(s, &r.senders[0]) {
                0
            } else {
                1
            }
        };
        assert_eq!(place("big"), 0);
        assert_eq!(place("big"), 0);
        assert_eq!(place("small"), 1);
        assert_eq!(place("other"), 1, "worker 1 has 1 member, worker 0 has 2");
        r.left("big");
        r.left("big");
        assert_eq!(
            place("big"),
            0,
            "forgotten with its last member, placed afresh"
        );
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

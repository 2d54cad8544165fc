//! The links of this node: which slot each holds, which rooms each carries, and what happens
//! when one comes up, is replaced or goes.

use std::collections::HashSet;
use std::sync::Arc;

use plenary_cascade::link::Link;
use plenary_cascade::wire::ControlMsg;

use super::{link_task, Cascade, LinkBytes, LinkEntry, LinkStats, DIAL_RACE, LINK_QUEUE};
use crate::workers::{LINK_BASE, MAX_LINKS};
use crate::Shared;

impl Cascade {
    /// Per open link: its peer and what went through it.
    pub(crate) fn stats(&self) -> Vec<LinkStats> {
        use std::sync::atomic::Ordering::Relaxed;
        self.state()
            .links
            .iter()
            .flatten()
            .map(|l| LinkStats {
                peer: l.peer.clone(),
                tx_bytes: l.bytes.tx.load(Relaxed),
                rx_bytes: l.bytes.rx.load(Relaxed),
                nacked: l.bytes.nacked.load(Relaxed),
                resent: l.bytes.resent.load(Relaxed),
            })
            .collect()
    }

    pub(super) fn slot_of(&self, peer: &str) -> Option<usize> {
        self.state().links.iter().position(|l| {
            l.as_ref()
                .is_some_and(|l| l.peer == peer && !l.handle.is_closed())
        })
    }

    /// Tells the far side of `slot` we hold `room`, and carries it when the far side holds it
    /// too (`listed`: the directory says so).
    pub(super) fn carry(&self, shared: &Shared, slot: usize, room: &str, listed: bool) {
        let mut st = self.state();
        let Some(l) = st.links.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if l.sent_rooms.insert(room.to_owned()) {
            l.handle.send_control(ControlMsg::Room {
                room: room.to_owned(),
            });
        }
        if listed || l.remote_rooms.contains(room) {
            drop(st);
            shared.router.set_link(room, LINK_BASE + slot, true);
        }
    }

    /// The far side of `slot` holds `room` (it sent `Room`).
    pub(super) fn remote_room(&self, shared: &Shared, slot: usize, room: &str) {
        let held = {
            let mut st = self.state();
            let held = st.held.contains(room);
            if let Some(l) = st.links.get_mut(slot).and_then(Option::as_mut) {
                l.remote_rooms.insert(room.to_owned());
            }
            held
        };
        if held {
            self.carry(shared, slot, room, true);
        }
    }

    pub(super) fn remote_room_gone(&self, shared: &Shared, slot: usize, room: &str) {
        if let Some(l) = self.state().links.get_mut(slot).and_then(Option::as_mut) {
            l.remote_rooms.remove(room);
        }
        shared.router.set_link(room, LINK_BASE + slot, false);
    }

    /// Registers an authenticated link in a free slot and starts its task. With two links to
    /// one node dialled at once, both sides keep the one dialled by the smaller name; a link
    /// to a node that already has an older one replaces it (the node restarted: a live node
    /// does not dial again).
    pub(super) fn add_link(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        link: Link,
        dialled: bool,
    ) -> Option<usize> {
        let dialler = if dialled {
            self.node.as_str()
        } else {
            link.peer.as_str()
        };
        let canonical = dialler <= link.peer.as_str().min(self.node.as_str());
        let mut st = self.state();
        if let Some(i) = st
            .links
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.peer == link.peer))
        {
            let racing = st.links[i]
                .as_ref()
                .is_some_and(|l| !l.handle.is_closed() && l.since.elapsed() < DIAL_RACE);
            if racing && !canonical {
                link.handle.close("duplicate link");
                return Some(i);
            }
            if let Some(old) = st.links[i].take() {
                old.handle.close("replaced by a newer link");
                // The far node restarted: its old participants leave every room here before
                // the new link brings the current ones (ordered in each worker's channel).
                shared.router.clear_link(LINK_BASE + i);
                shared.router.broadcast(|| {
                    crate::Cmd::Pipe(crate::media::PipeMsg::Link { slot: i, tx: None })
                });
            }
        }
        let Some(slot) = st.links.iter().position(Option::is_none) else {
            tracing::warn!(peer = %link.peer, "cascade: no free link slot ({MAX_LINKS} links); refused");
            link.handle.close("no free link slot");
            return None;
        };
        let (tx, rx) = tokio::sync::mpsc::channel(LINK_QUEUE);
        st.generation += 1;
        let generation = st.generation;
        let held: Vec<String> = st.held.iter().cloned().collect();
        let bytes = Arc::new(LinkBytes::default());
        st.links[slot] = Some(LinkEntry {
            peer: link.peer.clone(),
            bytes: bytes.clone(),
            handle: link.handle.clone(),
            inbox: tx.clone(),
            remote_rooms: HashSet::new(),
            sent_rooms: held.iter().cloned().collect(),
            generation,
            since: std::time::Instant::now(),
        });
        drop(st);
        // Before any span names the link, so every worker can pipe to it.
        shared.router.broadcast(|| {
            crate::Cmd::Pipe(crate::media::PipeMsg::Link {
                slot,
                tx: Some(tx.clone()),
            })
        });
        for room in held {
            link.handle.send_control(ControlMsg::Room { room });
        }
        let (me, shared) = (self.clone(), shared.clone());
        tokio::spawn(async move {
            let peer = link.peer.clone();
            let reason = link_task::run(&me, &shared, slot, link, rx, &bytes).await;
            tracing::warn!(%peer, "cascade: link closed: {reason}");
            me.link_gone(&shared, slot, generation);
            // A dead node leaves the directory by its heartbeat's TTL: read again after it.
            let held: Vec<String> = me.state().held.iter().cloned().collect();
            for room in held {
                me.refresh_nodes(&shared, &room, Some(std::time::Duration::from_secs(4)));
            }
        });
        Some(slot)
    }

    /// A link ended: its rooms stop spanning it, so the workers drop its participants.
    pub(super) fn link_gone(&self, shared: &Shared, slot: usize, generation: u64) {
        {
            let mut st = self.state();
            if st.links[slot].as_ref().map(|l| l.generation) != Some(generation) {
                return;
            }
            st.links[slot] = None;
        }
        shared.router.clear_link(LINK_BASE + slot);
        shared
            .router
            .broadcast(|| crate::Cmd::Pipe(crate::media::PipeMsg::Link { slot, tx: None }));
    }
}

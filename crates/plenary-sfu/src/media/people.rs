//! Who joined and left a room, told to its members as coalesced deltas: at most one
//! `participants` message per room every `DELTA_INTERVAL`, and never the full list again
//! (a newcomer gets that once, in `joined`). With 500 people joining at 20 per second, one
//! message per join to everyone would be 10,000 messages a second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::MediaLoop;
use crate::media::model::participant_name;
use crate::signal::{ParticipantBrief, ServerMsg};

/// Shortest time between two `participants` messages of one room.
pub(crate) const DELTA_INTERVAL: Duration = Duration::from_millis(250);

/// Joins and leaves of one room not yet told to its members.
pub(crate) struct PeopleDelta {
    joined: Vec<u64>,
    left: Vec<u64>,
    last_sent: Instant,
}

impl PeopleDelta {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            joined: Vec::new(),
            left: Vec::new(),
            // A room's first change goes out at once.
            last_sent: now.checked_sub(DELTA_INTERVAL).unwrap_or(now),
        }
    }

    pub(crate) fn joined(&mut self, id: u64) {
        self.joined.push(id);
    }

    /// A leave cancels a join not told yet: the others never hear of that participant.
    pub(crate) fn left(&mut self, id: u64) {
        match self.joined.iter().position(|j| *j == id) {
            Some(i) => {
                self.joined.remove(i);
            }
            None => self.left.push(id),
        }
    }

    /// When the pending changes may go out; `None` with nothing pending.
    pub(crate) fn due(&self) -> Option<Instant> {
        (!self.joined.is_empty() || !self.left.is_empty())
            .then_some(self.last_sent + DELTA_INTERVAL)
    }

    /// The pending changes, (joined, left), in order; the next go out `DELTA_INTERVAL` later.
    pub(crate) fn take(&mut self, now: Instant) -> (Vec<u64>, Vec<u64>) {
        self.last_sent = now;
        (
            std::mem::take(&mut self.joined),
            std::mem::take(&mut self.left),
        )
    }
}

impl MediaLoop {
    /// A visible participant arrived in its room (local, piped or from a cascade link).
    pub(super) fn person_joined(&mut self, id: u64) {
        self.person_changed(id, true);
    }

    /// A visible participant is leaving its room (call while it is still known).
    pub(super) fn person_left(&mut self, id: u64) {
        self.person_changed(id, false);
    }

    fn person_changed(&mut self, id: u64, joined: bool) {
        let Some(room) = self.participants.get(&id).map(|p| p.room.clone()) else {
            return;
        };
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        if joined {
            r.people.joined(id);
        } else {
            r.people.left(id);
        }
        if let Some(due) = r.people.due() {
            self.people_due = Some(self.people_due.map_or(due, |d| d.min(due)));
        }
    }

    /// Sends every room's changes that are due; called from the worker loop.
    pub(super) fn flush_people(&mut self, now: Instant) {
        if self.people_due.is_none_or(|d| d > now) {
            return;
        }
        self.people_due = None;
        let due: Vec<String> = self
            .rooms
            .iter()
            .filter_map(|(name, r)| {
                let at = r.people.due()?;
                if at <= now {
                    Some(name.clone())
                } else {
                    self.people_due = Some(self.people_due.map_or(at, |d| d.min(at)));
                    None
                }
            })
            .collect();
        for room in due {
            self.send_people(&room, now);
        }
    }

    /// Sends a room's pending changes now, whatever the interval: a track event about a
    /// participant must not reach a member before the participant does.
    pub(super) fn flush_people_of(&mut self, participant: u64) {
        let Some(room) = self.participants.get(&participant).map(|p| p.room.clone()) else {
            return;
        };
        if self.rooms.get(&room).and_then(|r| r.people.due()).is_some() {
            self.send_people(&room, Instant::now());
        }
    }

    fn send_people(&mut self, room: &str, now: Instant) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let (joined, left) = r.people.take(now);
        let joined: Arc<[ParticipantBrief]> = joined
            .iter()
            .filter_map(|id| {
                Some(ParticipantBrief {
                    id: participant_name(*id),
                    name: self.participants.get(id)?.name.clone(),
                })
            })
            .collect();
        let left: Arc<[String]> = left.iter().map(|id| participant_name(*id)).collect();
        if joined.is_empty() && left.is_empty() {
            return;
        }
        let msg = ServerMsg::Participants { joined, left };
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        for id in &r.participants {
            if let Some(p) = self.participants.get(id) {
                p.send(msg.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_wait_for_the_interval_and_a_leave_cancels_an_untold_join() {
        let t0 = Instant::now();
        let mut d = PeopleDelta::new(t0);
        assert_eq!(d.due(), None, "nothing pending");
        d.joined(1);
        assert!(
            d.due().unwrap() <= t0,
            "a room's first change goes out at once"
        );
        assert_eq!(d.take(t0), (vec![1], vec![]));
        d.joined(2);
        d.joined(3);
        d.left(1);
        d.left(2);
        assert_eq!(
            d.due(),
            Some(t0 + DELTA_INTERVAL),
            "then one message per interval"
        );
        assert_eq!(d.take(t0 + DELTA_INTERVAL), (vec![3], vec![1]));
        assert_eq!(d.due(), None);
    }
}

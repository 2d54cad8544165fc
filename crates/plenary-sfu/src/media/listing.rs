//! What a worker holds, for the admin room listing (`GET /rooms`); never on the packet path.

use super::model::participant_name;
use super::MediaLoop;
use crate::http::rooms::{ParticipantView, WorkerRooms};

impl MediaLoop {
    /// This worker's own participants, by room (replicas of other workers' and nodes'
    /// participants are left to their owners).
    pub(super) fn room_views(&self) -> WorkerRooms {
        let mut rooms: WorkerRooms = Default::default();
        for (&id, p) in &self.participants {
            if crate::workers::worker_of(id) != self.worker {
                continue;
            }
            let kind = match (p.events.is_some(), p.visible) {
                (true, _) => "room",
                (false, true) => "whip",
                (false, false) => "whep",
            };
            let tracks = p
                .tracks
                .iter()
                .filter_map(|t| self.tracks.get(t).map(|tr| tr.info(*t)))
                .collect();
            rooms
                .entry(p.room.clone())
                .or_default()
                .push(ParticipantView {
                    id: participant_name(id),
                    name: p.name.clone(),
                    kind,
                    worker: self.worker,
                    tracks,
                });
        }
        rooms
    }
}

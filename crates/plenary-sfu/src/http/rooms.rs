//! Operator endpoints: `/healthz` (the process answers), `/readyz` (it takes new sessions) and
//! the admin room listing `GET /rooms`, guarded by the admin bearer token.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::{text, Resp};
use crate::signal::TrackInfo;
use crate::{Cmd, Shared};

/// How long the listing waits for a busy worker before leaving it out.
const WORKER_ANSWER: Duration = Duration::from_secs(2);

/// One participant as its worker reports it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ParticipantView {
    pub id: String,
    pub name: String,
    /// `room` (room API), `whip` (publisher) or `whep` (viewer).
    pub kind: &'static str,
    pub worker: usize,
    pub tracks: Vec<TrackInfo>,
}

/// A worker's answer: its own participants by room.
pub(crate) type WorkerRooms = BTreeMap<String, Vec<ParticipantView>>;

#[derive(Serialize)]
struct RoomView {
    room: String,
    /// Workers holding participants of the room (several when it spilled).
    workers: Vec<usize>,
    participants: Vec<ParticipantView>,
}

#[derive(Serialize)]
struct Listing {
    rooms: Vec<RoomView>,
    /// Workers that did not answer in time (their participants are missing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unanswered: Vec<usize>,
}

pub(super) fn healthz() -> Resp {
    text(StatusCode::OK, "ok")
}

pub(super) fn readyz(shared: &Shared) -> Resp {
    if shared.draining() {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        text(StatusCode::OK, "ready")
    }
}

/// Why an admin request is refused, if it is.
fn admin_refusal<B>(req: &Request<B>, shared: &Shared) -> Option<Resp> {
    let Some(expected) = &shared.config.admin_token else {
        return Some(text(
            StatusCode::FORBIDDEN,
            "admin endpoints are off: set [http] admin-token-file or --admin-token-file",
        ));
    };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Digests compared, so the time taken says nothing about the token's characters.
    let same = given.is_some_and(|g| Sha256::digest(g) == Sha256::digest(expected));
    if same {
        return None;
    }
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        "admin token missing or wrong: send Authorization: Bearer <token>",
    );
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(r)
}

/// `GET /rooms`: every room on this node with its participants, their tracks and workers.
pub(super) async fn list<B>(req: &Request<B>, shared: &Shared) -> Resp {
    if let Some(refused) = admin_refusal(req, shared) {
        return refused;
    }
    let mut asked = Vec::new();
    for w in 0..shared.router.workers() {
        let (tx, rx) = oneshot::channel();
        let sent = shared
            .router
            .worker(w)
            .is_some_and(|tx_w| tx_w.send(Cmd::Rooms { reply: tx }).is_ok());
        if sent {
            asked.push((w, rx));
        }
    }
    let mut merged: BTreeMap<String, RoomView> = BTreeMap::new();
    let mut unanswered = Vec::new();
    for (w, rx) in asked {
        let Ok(Ok(rooms)) = tokio::time::timeout(WORKER_ANSWER, rx).await else {
            unanswered.push(w);
            continue;
        };
        for (room, participants) in rooms {
            let view = merged.entry(room.clone()).or_insert_with(|| RoomView {
                room,
                workers: Vec::new(),
                participants: Vec::new(),
            });
            view.workers.push(w);
            view.participants.extend(participants);
        }
    }
    let mut listing = Listing {
        rooms: merged.into_values().collect(),
        unanswered,
    };
    for r in &mut listing.rooms {
        r.participants.sort_by(|a, b| a.id.cmp(&b.id));
    }
    match serde_json::to_vec(&listing) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

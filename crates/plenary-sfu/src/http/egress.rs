//! The egress API: `POST /rooms/{room}/egress` starts a `plenary egress` child pulling this
//! node's WHEP feed of the room, `GET /rooms/{room}/egress[/{id}]` lists them, `DELETE
//! /rooms/{room}/egress/{id}` stops one (and answers once its files are finished).
//!
//! Who may: the holder of a room token for that room (the scheme that guards WHIP/WHEP),
//! or of the admin token. An egress sends the room's programme to any URL its caller names,
//! so with neither credential configured the API is off (403) even though the room itself
//! may be open.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{check_token, text, valid_room, Resp};
use crate::egress::handle::StopOutcome;
use crate::egress::plan::{EgressRequest, Plan};
use crate::token::TokenError;
use crate::Shared;

/// A request body is a few receiver URLs and names.
const MAX_BODY: usize = 16 * 1024;
/// DELETE waits this long for the egress to finish its files (it takes at most 20 s).
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Whether `arg` (the path after `/rooms/`) is `{room}/egress` or `{room}/egress/{id}`.
pub(super) fn is_egress_path(arg: &str) -> bool {
    let mut parts = arg.split('/');
    parts.next();
    parts.next() == Some("egress")
}

pub(super) async fn handle(req: Request<Incoming>, shared: &Shared, arg: &str) -> Resp {
    let parts: Vec<&str> = arg.split('/').collect();
    let (room, id) = match parts.as_slice() {
        [room, "egress"] => (*room, None),
        [room, "egress", id] => (*room, Some(*id)),
        _ => return text(StatusCode::NOT_FOUND, "no such endpoint"),
    };
    if !valid_room(room) {
        return text(
            StatusCode::BAD_REQUEST,
            "room must be 1-64 chars of [A-Za-z0-9_-]",
        );
    }
    if let Some(refused) = refusal(&req, shared, room) {
        return refused;
    }
    let id = match id.map(str::parse::<u64>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return text(StatusCode::NOT_FOUND, "unknown egress"),
    };
    match (req.method().clone(), id) {
        (Method::POST, None) => start(req, shared, room).await,
        (Method::GET, id) => list(shared, room, id).await,
        (Method::DELETE, Some(id)) => stop(shared, room, id).await,
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST or GET on /rooms/{room}/egress, GET or DELETE on /rooms/{room}/egress/{id}",
        ),
    }
}

/// Why the caller may not touch this room's egresses, if so.
fn refusal<B>(req: &Request<B>, shared: &Shared, room: &str) -> Option<Resp> {
    let secrets = &shared.config.room_token_secrets;
    let admin = shared.config.admin_token.as_deref();
    if secrets.is_empty() && admin.is_none() {
        return Some(text(
            StatusCode::FORBIDDEN,
            "the egress API is off: it needs room tokens ([rooms] token-secrets) or an admin \
             token ([http] admin-token-file)",
        ));
    }
    // The admin token only in the header: a query string ends up in access logs.
    let bearer = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Digests compared, so the time taken says nothing about the token's characters.
    if admin.is_some_and(|a| bearer.is_some_and(|b| Sha256::digest(a) == Sha256::digest(b))) {
        return None;
    }
    if secrets.is_empty() {
        return Some(challenge(
            "admin token missing or wrong: send Authorization: Bearer <admin token>",
        ));
    }
    match check_token(req, shared, room) {
        Ok(_) => None,
        Err(TokenError::WrongRoom) => Some(text(
            StatusCode::FORBIDDEN,
            "room token is for another room",
        )),
        Err(e) => Some(challenge(&e.to_string())),
    }
}

fn challenge(msg: &str) -> Resp {
    let mut r = text(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn json(status: StatusCode, body: &impl Serialize) -> Resp {
    match serde_json::to_vec(body) {
        Ok(b) => {
            let mut r = Response::new(Full::new(Bytes::from(b)));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn is_json<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

async fn start(req: Request<Incoming>, shared: &Shared, room: &str) -> Resp {
    let egress = &shared.egress;
    let config = egress.config();
    if config.max_running == 0 {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "egress is off on this node ([egress] max-running = 0)",
        );
    }
    if config.binary.is_none() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "egress is off: no plenary executable to run (set [egress] binary)",
        );
    }
    if shared.draining() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "sfu is draining; try another node",
        );
    }
    if !is_json(&req) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type must be application/json",
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request too large or body unreadable",
            )
        }
    };
    let request: EgressRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!(
                    "bad egress request: {e}; expected {{\"to\": [URL...], \"hls\": NAME, \
                     \"record\": NAME.mp4, \"size\": \"WxH\", \"fps\": N}}"
                ),
            )
        }
    };
    let plan = match Plan::check(request, config.dir.is_some()) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match egress.launch(room, plan).await {
        Ok(view) => {
            let mut r = json(StatusCode::CREATED, &view);
            let at = format!("/rooms/{room}/egress/{}", view.id);
            if let Ok(v) = HeaderValue::from_str(&at) {
                r.headers_mut().insert(LOCATION, v);
            }
            r
        }
        Err(e) => text(e.status(), &e.to_string()),
    }
}

#[derive(Serialize)]
struct Listing {
    egresses: Vec<crate::egress::EgressView>,
}

async fn list(shared: &Shared, room: &str, id: Option<u64>) -> Resp {
    let Some(mut all) = shared.egress.list(room).await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "sfu is shutting down");
    };
    match id {
        None => json(StatusCode::OK, &Listing { egresses: all }),
        Some(id) => match all.iter().position(|e| e.id == id) {
            Some(i) => json(StatusCode::OK, &all.swap_remove(i)),
            None => text(StatusCode::NOT_FOUND, "unknown egress"),
        },
    }
}

async fn stop(shared: &Shared, room: &str, id: u64) -> Resp {
    match shared.egress.stop(room, id, STOP_WAIT).await {
        StopOutcome::Done(view) => json(StatusCode::OK, &view),
        StopOutcome::Unknown => text(StatusCode::NOT_FOUND, "unknown egress"),
        StopOutcome::Pending => text(
            StatusCode::ACCEPTED,
            "the egress is still finishing its files; GET shows when it has stopped",
        ),
    }
}

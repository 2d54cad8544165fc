//! HTTP: routing, CORS, tokens, WHIP/WHEP offer/answer hand-off to the media thread, the
//! demo pages, and the upgrade to the room WebSocket (`ws`).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use str0m::change::SdpOffer;
use tokio::sync::oneshot;

use crate::*;

mod accept;
mod egress;
pub(crate) mod rooms;
mod ws;

pub(crate) use ws::ROOM_API_ERRORS_COUNTER;

pub(crate) use accept::{
    accept_loop, bind_listener, RemoteIp, ACCEPT_ERRORS_COUNTER, CLIENT_ERRORS_COUNTER,
    CONNECTIONS_GAUGE, DROPPED_COUNTER, STALLS_COUNTER,
};

pub(crate) type Resp = Response<Full<Bytes>>;

/// The client's address, as the accept loop recorded it.
fn remote_ip<B>(req: &Request<B>) -> std::net::IpAddr {
    req.extensions()
        .get::<RemoteIp>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |r| r.0)
}

/// 429 for a source at its cap of sessions still connecting (`admission`).
fn too_many_connecting() -> Resp {
    let mut r = text(
        StatusCode::TOO_MANY_REQUESTS,
        "too many sessions from your address are still connecting; retry in a few seconds",
    );
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("5"));
    r
}

/// Longest a WHIP/WHEP offer body may take after its head: the header timeout stops at the
/// head, and a client trickling the body would otherwise hold its connection for ever.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);

fn cors(mut r: Resp) -> Resp {
    let h = r.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, DELETE, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("Content-Type, Location, Authorization"),
    );
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("Content-Type, Location, Link"),
    );
    r
}

/// Plain-text error body, always one line (str0m parse errors span several).
/// 307 to the same request on another node (cascade placement); the client re-sends its offer.
fn redirect(location: &str, why: &str) -> Resp {
    let mut r = text(StatusCode::TEMPORARY_REDIRECT, why);
    if let Ok(loc) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, loc);
    }
    r
}

pub(crate) fn text(status: StatusCode, msg: &str) -> Resp {
    let line = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut r = Response::new(Full::new(Bytes::from(line + "\n")));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// An SDP parse error as told to a client: the parser's lines without the one that carries
/// its `PointerOffset(0x…)`, a memory address of this process.
pub(crate) fn sdp_error(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("PointerOffset"))
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn valid_room(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= 64
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Resp, Infallible> {
    Ok(cors(route(req, shared).await))
}

/// The token from `?token=` or `Authorization: Bearer`.
pub(crate) fn token_of<B>(req: &Request<B>) -> Option<String> {
    if let Some(q) = req.uri().query() {
        for pair in q.split('&') {
            if let Some(v) = pair.strip_prefix("token=") {
                return Some(v.to_owned());
            }
        }
    }
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_owned())
}

pub(crate) fn check_token<B>(
    req: &Request<B>,
    shared: &Shared,
    room: &str,
) -> Result<Option<token::Claims>, token::TokenError> {
    token::verify(
        &shared.config.room_token_secrets,
        token_of(req).as_deref(),
        room,
        unix_now(),
    )
}

pub(crate) fn unauthorized(e: token::TokenError) -> Resp {
    text(StatusCode::UNAUTHORIZED, &e.to_string())
}

async fn route(req: Request<Incoming>, shared: Arc<Shared>) -> Resp {
    if req.method() == Method::OPTIONS {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        return r;
    }
    let path = req.uri().path().to_owned();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (req.method().clone(), kind) {
        (Method::POST, "whip") | (Method::POST, "whep") => {
            if !valid_room(arg) {
                return text(
                    StatusCode::BAD_REQUEST,
                    "room must be 1-64 chars of [A-Za-z0-9_-]",
                );
            }
            if let Err(e) = check_token(&req, &shared, arg) {
                return unauthorized(e);
            }
            if shared.draining() {
                // A cascade node sends WHIP/WHEP clients on (they follow 307s) to a live node.
                if let Some(c) = &shared.cascade {
                    if let Ok(Some(node)) = c.drain_target(arg).await {
                        let query = req.uri().query().map(|q| format!("?{q}"));
                        let query = query.unwrap_or_default();
                        return redirect(
                            &format!("{}/{kind}/{arg}{query}", node.http),
                            "this node is draining; use Location",
                        );
                    }
                }
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "sfu is draining; try another node",
                );
            }
            let mut r = offer(req, &shared, arg.to_owned(), kind == "whip").await;
            if r.status() == StatusCode::CREATED {
                // The room's other nodes, where a client goes if this one dies or drains.
                if let Some(c) = &shared.cascade {
                    for url in c.room_urls(arg).iter().skip(1) {
                        let l = format!("<{url}/{kind}/{arg}>; rel=\"alternate\"");
                        if let Ok(v) = HeaderValue::from_str(&l) {
                            r.headers_mut().append(hyper::header::LINK, v);
                        }
                    }
                }
                if let Some(ice) = &shared.config.ice_servers {
                    for l in token::link_headers(&token::ice_servers(ice, unix_now())) {
                        if let Ok(v) = HeaderValue::from_str(&l) {
                            r.headers_mut().append(hyper::header::LINK, v);
                        }
                    }
                }
            }
            r
        }
        (Method::GET, "healthz") if arg.is_empty() => rooms::healthz(),
        (Method::GET, "readyz") if arg.is_empty() => rooms::readyz(&shared),
        (Method::GET, "rooms") if arg.is_empty() => rooms::list(&req, &shared).await,
        (_, "rooms") if egress::is_egress_path(arg) => egress::handle(req, &shared, arg).await,
        (Method::GET, "rooms") => ws::upgrade(req, shared, arg.to_owned()).await,
        (Method::GET, _) => match assets::asset(&path) {
            Some((ctype, body)) => {
                let mut r = Response::new(Full::new(Bytes::from_static(body)));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
                r
            }
            None => text(StatusCode::NOT_FOUND, "no such endpoint"),
        },
        (Method::DELETE, "resource") => {
            let Ok(id) = arg.parse::<u64>() else {
                return text(StatusCode::NOT_FOUND, "unknown resource");
            };
            let (tx, rx) = oneshot::channel();
            let Some(worker) = shared.router.by_id(id) else {
                return text(StatusCode::NOT_FOUND, "unknown resource");
            };
            if worker.send(Cmd::Leave { id, reply: tx }).is_err() {
                return text(StatusCode::SERVICE_UNAVAILABLE, "sfu is shutting down");
            }
            match tokio::time::timeout(Duration::from_secs(5), rx).await {
                Ok(Ok(true)) => {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    r
                }
                Ok(Ok(false)) => text(StatusCode::NOT_FOUND, "unknown resource"),
                _ => text(StatusCode::SERVICE_UNAVAILABLE, "media loop did not answer"),
            }
        }
        (_, "whip" | "whep" | "resource" | "rooms") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

async fn offer(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    room: String,
    publisher: bool,
) -> Resp {
    let source = remote_ip(&req);
    // Kept for a redirect: the token may ride in the query.
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    if !is_sdp(&req) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type must be application/sdp",
        );
    }
    let collect = Limited::new(req.into_body(), MAX_SDP).collect();
    let body = match tokio::time::timeout(BODY_READ_TIMEOUT, collect).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "offer too large or body unreadable",
            )
        }
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "offer body not complete within 5 s of the request head",
            )
        }
    };
    let Ok(sdp) = std::str::from_utf8(&body) else {
        return text(StatusCode::BAD_REQUEST, "offer is not UTF-8");
    };
    let offer = match SdpOffer::from_sdp_string(sdp) {
        Ok(o) => o,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("unparsable SDP offer: {}", sdp_error(&e)),
            )
        }
    };
    let Some(admission) = shared.admissions.admit(source) else {
        return too_many_connecting();
    };
    let (tx, rx) = oneshot::channel();
    let room_name = room.clone();
    let opts = crate::SessionOpts::from_query(query.strip_prefix('?'));
    let cmd = if publisher {
        Cmd::Whip {
            room,
            offer,
            opts,
            admission,
            reply: tx,
        }
    } else {
        Cmd::Whep {
            room,
            offer,
            opts,
            admission,
            reply: tx,
        }
    };
    if let Some(c) = &shared.cascade {
        match c.prepare(shared, &room_name).await {
            Ok(()) => {}
            Err(crate::cascade::JoinRefusal::Redirect(url)) => {
                let kind = if publisher { "whip" } else { "whep" };
                return redirect(
                    &format!("{url}/{kind}/{room_name}{query}"),
                    "this node is full; use Location",
                );
            }
            Err(crate::cascade::JoinRefusal::Directory(e)) => {
                return text(StatusCode::SERVICE_UNAVAILABLE, &e)
            }
        }
    }
    let worker = shared.router.join(&room_name);
    if worker.send(cmd).is_err() {
        shared.router.left(&room_name, worker.index());
        return text(StatusCode::SERVICE_UNAVAILABLE, "sfu is shutting down");
    }
    match tokio::time::timeout(Duration::from_secs(5), rx).await {
        Ok(Ok(Ok((id, answer)))) => {
            let mut r = Response::new(Full::new(Bytes::from(answer)));
            *r.status_mut() = StatusCode::CREATED;
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
            if let Ok(loc) = HeaderValue::from_str(&format!("/resource/{id}")) {
                h.insert(LOCATION, loc);
            }
            r
        }
        Ok(Ok(Err((status, msg)))) => text(status, &msg),
        _ => text(StatusCode::SERVICE_UNAVAILABLE, "media loop did not answer"),
    }
}

/// Whether a WHIP/WHEP request says its body is SDP (parameters after `;` ignored).
pub(crate) fn is_sdp<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"))
}

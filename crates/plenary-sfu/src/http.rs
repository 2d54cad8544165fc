//! WHIP/WHEP over HTTP: routing, CORS, offer/answer hand-off to the media thread.

use std::convert::Infallible;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use str0m::change::SdpOffer;
use tokio::sync::oneshot;

use crate::*;

type Resp = Response<Full<Bytes>>;

fn cors(mut r: Resp) -> Resp {
    let h = r.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, DELETE, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("Content-Type, Location"),
    );
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("Content-Type, Location"),
    );
    r
}

/// Plain-text error body, always one line (str0m parse errors span several).
fn text(status: StatusCode, msg: &str) -> Resp {
    let line = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut r = Response::new(Full::new(Bytes::from(line + "\n")));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn valid_room(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= 64
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) async fn handle(
    req: Request<Incoming>,
    cmds: mpsc::Sender<Cmd>,
) -> Result<Resp, Infallible> {
    Ok(cors(route(req, cmds).await))
}

async fn route(req: Request<Incoming>, cmds: mpsc::Sender<Cmd>) -> Resp {
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
            offer(req, cmds, arg.to_owned(), kind == "whip").await
        }
        (Method::DELETE, "resource") => {
            let Ok(id) = arg.parse::<u64>() else {
                return text(StatusCode::NOT_FOUND, "unknown resource");
            };
            let (tx, rx) = oneshot::channel();
            if cmds.send(Cmd::Leave { id, reply: tx }).is_err() {
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
        (_, "whip" | "whep" | "resource") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

async fn offer(
    req: Request<Incoming>,
    cmds: mpsc::Sender<Cmd>,
    room: String,
    publisher: bool,
) -> Resp {
    if !valid_room(&room) {
        return text(
            StatusCode::BAD_REQUEST,
            "room must be 1-64 chars of [A-Za-z0-9_-]",
        );
    }
    let is_sdp = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"));
    if !is_sdp {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type must be application/sdp",
        );
    }
    let body = match Limited::new(req.into_body(), MAX_SDP).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "offer too large or body unreadable",
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
                &format!("unparsable SDP offer: {e}"),
            )
        }
    };
    let (tx, rx) = oneshot::channel();
    let cmd = Cmd::Join {
        room,
        publisher,
        offer,
        reply: tx,
    };
    if cmds.send(cmd).is_err() {
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

//! The room API WebSocket: handshake, then JSON messages both ways until either side leaves.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use plenary_ops::limited_debug;
use plenary_ops::ratelimit::LogLimiter;

use super::{check_token, text, unauthorized, valid_room, Resp};
use crate::media::EVENT_QUEUE;
use crate::signal::{ClientMsg, ServerMsg, MAX_CLIENT_MESSAGE};
use crate::{Cmd, RoomCmd, Shared};

/// A client that has not joined by then is dropped, whatever else it sent meanwhile.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer per socket. tungstenite allocates it eagerly (128 KiB by default, which made a
/// room of 500 hold 64 MiB of mostly idle buffers); room API messages are small, and a
/// larger one (an SDP) is read in several chunks.
const READ_BUFFER: usize = 4 * 1024;
/// `alive` this often while joined (see `ServerMsg::Alive`).
const ALIVE_EVERY: Duration = Duration::from_secs(1);

pub(crate) const ROOM_API_ERRORS_COUNTER: &str = "plenary_sfu_room_api_errors_total";

/// Debug lines about clients' room API mistakes, at most 10 a second.
static DEBUG_LOG: LogLimiter<1> = LogLimiter::new(10);

/// Counts a room API client's mistake and logs it at debug, rate-limited.
fn client_error(reason: &'static str, detail: &str) {
    metrics::counter!(ROOM_API_ERRORS_COUNTER, "reason" => reason).increment(1);
    limited_debug!(DEBUG_LOG, 0usize, reason, detail, "room API client error");
}

pub(super) async fn upgrade(req: Request<Incoming>, shared: Arc<Shared>, room: String) -> Resp {
    if !valid_room(&room) {
        return text(
            StatusCode::BAD_REQUEST,
            "room must be 1-64 chars of [A-Za-z0-9_-]",
        );
    }
    let claims = match check_token(&req, &shared, &room) {
        Ok(c) => c,
        Err(e) => return unauthorized(e),
    };
    if shared.draining() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "sfu is draining; try another node",
        );
    }
    let is_upgrade = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "room API needs a WebSocket upgrade",
        );
    };
    if !is_upgrade {
        return text(
            StatusCode::BAD_REQUEST,
            "room API needs a WebSocket upgrade",
        );
    }
    let accept = derive_accept_key(key.as_bytes());
    let name_from_token = claims.and_then(|c| c.name);
    let source = super::remote_ip(&req);
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let mut cfg = WebSocketConfig::default();
        cfg.max_message_size = Some(MAX_CLIENT_MESSAGE);
        cfg.max_frame_size = Some(MAX_CLIENT_MESSAGE);
        cfg.read_buffer_size = READ_BUFFER;
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(cfg)).await;
        session(ws, shared, room, name_from_token, source).await;
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

async fn send<S>(ws: &mut WebSocketStream<S>, msg: &ServerMsg) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match serde_json::to_string(msg) {
        Ok(s) => ws.send(Message::text(s)).await.is_ok(),
        Err(_) => false,
    }
}

fn parse(m: &Message) -> Option<Result<ClientMsg, String>> {
    match m {
        Message::Text(t) => Some(
            serde_json::from_str::<ClientMsg>(t.as_str()).map_err(|e| format!("bad message: {e}")),
        ),
        Message::Binary(_) => Some(Err("bad message: binary frames are not used".into())),
        _ => None,
    }
}

async fn session<S>(
    mut ws: WebSocketStream<S>,
    shared: Arc<Shared>,
    room: String,
    token_name: Option<String>,
    source: std::net::IpAddr,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The first message must be `join`, within JOIN_TIMEOUT of the upgrade.
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    let name = loop {
        let m = match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(_) => return,
            Err(_) => {
                client_error("join_timeout", "no join within 10 s");
                let _ = send(&mut ws, &error("no join within 10 s")).await;
                let _ = ws.close(None).await;
                return;
            }
        };
        match parse(&m) {
            None => continue,
            Some(Ok(ClientMsg::Join { name })) => break token_name.unwrap_or(name),
            Some(Ok(_)) => {
                client_error("not_joined", "a message before join");
                let _ = send(&mut ws, &error("first message must be join")).await;
            }
            Some(Err(e)) => {
                client_error("bad_message", &e);
                let _ = send(&mut ws, &error(&e)).await;
            }
        }
    };
    let Some(admission) = shared.admissions.admit(source) else {
        client_error(
            "too_many_connecting",
            "source at its cap of connecting sessions",
        );
        let message =
            "too many sessions from your address are still connecting; retry in a few seconds";
        let _ = send(&mut ws, &error(message)).await;
        let _ = ws.close(None).await;
        return;
    };
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
    let (tx, rx) = oneshot::channel();
    let join = Cmd::Room(RoomCmd::Join {
        room: room.clone(),
        name,
        events: ev_tx,
        admission,
        reply: tx,
    });
    if let Some(c) = &shared.cascade {
        match c.prepare(&shared, &room).await {
            Ok(()) => {}
            Err(crate::cascade::JoinRefusal::Redirect(url)) => {
                let _ = send(&mut ws, &ServerMsg::Redirect { url }).await;
                let _ = ws.close(None).await;
                return;
            }
            Err(crate::cascade::JoinRefusal::Directory(e)) => {
                let _ = send(&mut ws, &error(&e)).await;
                let _ = ws.close(None).await;
                return;
            }
        }
    }
    let worker = shared.router.join(&room);
    if worker.send(join).is_err() {
        shared.router.left(&room, worker.index());
        let _ = send(&mut ws, &error("sfu is shutting down")).await;
        return;
    }
    let participant = match tokio::time::timeout(Duration::from_secs(5), rx).await {
        Ok(Ok(Ok(id))) => id,
        Ok(Ok(Err(e))) => {
            let _ = send(&mut ws, &error(&e)).await;
            let _ = ws.close(None).await;
            return;
        }
        _ => {
            let _ = send(&mut ws, &error("media loop did not answer")).await;
            return;
        }
    };
    let Some(cmds) = shared.router.by_id(participant) else {
        return;
    };
    let mut alive = tokio::time::interval(ALIVE_EVERY);
    alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = alive.tick() => {
                if !send(&mut ws, &ServerMsg::Alive {}).await {
                    break;
                }
            }
            ev = ev_rx.recv() => {
                // None: the media thread removed us (left, died, or too slow to keep up).
                let Some(ev) = ev else { break };
                if !send(&mut ws, &ev).await {
                    break;
                }
            }
            m = ws.next() => {
                let Some(Ok(m)) = m else { break };
                if matches!(m, Message::Close(_)) {
                    break;
                }
                match parse(&m) {
                    None => {}
                    Some(Ok(ClientMsg::Leave)) => break,
                    Some(Ok(msg)) => {
                        let sent = cmds.send(Cmd::Room(RoomCmd::Msg { participant, msg }));
                        if sent.is_err() {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        client_error("bad_message", &e);
                        let ok = send(&mut ws, &error(&e)).await;
                        if !ok {
                            break;
                        }
                    }
                }
            }
        }
    }
    let _ = cmds.send(Cmd::Room(RoomCmd::Leave { participant }));
    let _ = ws.close(None).await;
}

fn error(message: &str) -> ServerMsg {
    ServerMsg::Error {
        message: message.to_owned(),
    }
}

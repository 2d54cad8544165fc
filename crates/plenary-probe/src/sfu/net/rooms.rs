//! The room API client (docs/decisions/0003): a WebSocket per participant, a publish
//! connection the client offers and a subscribe connection the server offers and
//! renegotiates. A session task owns the socket for the participant's whole stay: it
//! answers offers (through the driver that owns the peer), subscribes to the tracks the
//! scenario wants as they are announced, and passes last-N pauses and dynacast layer
//! requests to the driver. One session is one stay at one node; [`super::stay`] follows
//! redirects and re-homes the participant when its node goes away.

use crate::sfu::engine::build::{offered_tracks, PeerPlan};
use crate::sfu::engine::driver::Cmd;
use crate::sfu::join::{Cleanup, ConnectWait, JoinCtx, Phase};
use crate::sfu::plan::{Participant, TrackSource, Want};
use crate::sfu::recv::track::TrackKind;
use futures_util::{SinkExt, StreamExt};
use plenary_sfu::signal::{self, ClientMsg, ServerMsg, SubscribeTrack, TrackInfo};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use str0m::media::Mid;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Silence after which a node that says `alive` is taken for gone: three and a half missed.
const NODE_SILENT: Duration = Duration::from_millis(3500);

/// Names the probe gives its participants, so announcements map back to plan indices.
fn name_of(index: u32) -> String {
    format!("probe-{index}")
}

fn index_of(name: &str) -> Option<u32> {
    name.strip_prefix("probe-")?.parse().ok()
}

fn source_of(s: signal::TrackSource) -> TrackSource {
    match s {
        signal::TrackSource::Microphone => TrackSource::Microphone,
        signal::TrackSource::Camera => TrackSource::Camera,
        signal::TrackSource::Screen => TrackSource::Screen,
    }
}

fn to_signal(s: TrackSource) -> signal::TrackSource {
    match s {
        TrackSource::Microphone => signal::TrackSource::Microphone,
        TrackSource::Camera => signal::TrackSource::Camera,
        TrackSource::Screen => signal::TrackSource::Screen,
    }
}

/// `http://host:port` → `ws://host:port/rooms/{room}`.
pub fn ws_url(base: &str, room: &str) -> Result<String, String> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base}: the room API needs an http:// base"))?;
    Ok(format!("ws://{}/rooms/{room}", rest.trim_end_matches('/')))
}

enum Ctl {
    Send(ClientMsg),
    ExpectPublishAnswer(oneshot::Sender<String>),
    PublishPeer { peer: u64, camera: Option<Mid> },
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// We left.
    Left,
    /// The socket closed or failed without our asking: the node went away.
    Closed,
    /// The server said to join at this base URL instead.
    Redirect(String),
}

/// How a session ended, and the room's nodes it had learnt at join.
#[derive(Clone, Debug)]
pub struct Ended {
    pub how: End,
    pub nodes: Vec<String>,
}

/// A join attempt at one node that did not end joined.
#[derive(Debug)]
pub enum Attempt {
    Redirect(String),
    Failed(String),
}

/// The participant's session at one node; dropping it (or `leave`) ends the stay.
#[derive(Debug)]
pub struct RoomHandle {
    ctl: mpsc::UnboundedSender<Ctl>,
    task: tokio::task::JoinHandle<Ended>,
    redirect: Redirected,
}

/// Set before the session drops anything a join waits on, so the join sees why it failed.
type Redirected = Arc<std::sync::Mutex<Option<String>>>;

impl std::fmt::Debug for Ctl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ctl")
    }
}

impl RoomHandle {
    fn redirected(&self) -> Option<String> {
        self.redirect
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves when the session ends by itself (never after `leave`).
    pub async fn ended(&mut self) -> Ended {
        match (&mut self.task).await {
            Ok(e) => e,
            Err(_) => Ended {
                how: End::Closed,
                nodes: Vec::new(),
            },
        }
    }

    pub async fn leave(self) {
        let _ = self.ctl.send(Ctl::Send(ClientMsg::Leave));
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(1), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

struct Session {
    ctx: Arc<JoinCtx>,
    index: u32,
    wants: Vec<Want>,
    all_cameras: Option<u8>,
    /// Server participant id → plan index.
    people: HashMap<String, u32>,
    subscribed: HashSet<String>,
    sub_peer: Option<u64>,
    sub_ready: Option<oneshot::Sender<Result<ConnectWait, String>>>,
    publish_answer: Option<oneshot::Sender<String>>,
    pub_peer: Option<(u64, Option<Mid>)>,
    /// Our participant id, and the id the server gave our camera (dynacast names it).
    me: Option<String>,
    my_camera: Option<String>,
    /// Track id → subscribe m-line carrying it.
    slot_of: HashMap<String, Mid>,
    pending: Vec<SubscribeTrack>,
    /// The room's nodes (`joined.nodes`), and where the server redirected us.
    nodes: Vec<String>,
    redirect: Redirected,
}

/// Joins `p` through the room API at one node. The session goes into `cleanup` (last) as
/// soon as it exists, so a join cut short by its timeout still leaves. Returns the slowest
/// connect, µs.
pub async fn connect(
    ctx: Arc<JoinCtx>,
    base: &str,
    p: &Participant,
    cleanup: &mut Vec<Cleanup>,
    phase: &Phase,
) -> Result<u64, Attempt> {
    let r = connect_inner(ctx, base, p, cleanup, phase).await;
    match r {
        Ok(us) => Ok(us),
        // A redirect ends the session, which fails the waits of the join: say why.
        Err(e) => match cleanup.last() {
            Some(Cleanup::Room(s)) => match s.redirected() {
                Some(url) => Err(Attempt::Redirect(url)),
                None => Err(Attempt::Failed(e)),
            },
            _ => Err(Attempt::Failed(e)),
        },
    }
}

async fn connect_inner(
    ctx: Arc<JoinCtx>,
    base: &str,
    p: &Participant,
    cleanup: &mut Vec<Cleanup>,
    phase: &Phase,
) -> Result<u64, String> {
    let url = ws_url(base, &p.room)?;
    phase.set("room WebSocket");
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let (ctl, ctl_rx) = mpsc::unbounded_channel();
    let (sub_tx, sub_rx) = oneshot::channel();
    let session = Session {
        ctx: ctx.clone(),
        index: p.index,
        wants: p.want.clone(),
        all_cameras: p.all_cameras,
        people: HashMap::new(),
        subscribed: HashSet::new(),
        sub_peer: None,
        sub_ready: Some(sub_tx),
        publish_answer: None,
        pub_peer: None,
        me: None,
        my_camera: None,
        slot_of: HashMap::new(),
        pending: Vec::new(),
        nodes: Vec::new(),
        redirect: Redirected::default(),
    };
    let redirect = session.redirect.clone();
    let task = tokio::spawn(session.run(ws, ctl_rx));
    cleanup.push(Cleanup::Room(RoomHandle {
        ctl: ctl.clone(),
        task,
        redirect,
    }));
    let _ = ctl.send(Ctl::Send(ClientMsg::Join {
        name: name_of(p.index),
    }));
    let mut waits = Vec::new();
    if !p.publish.is_empty() {
        phase.set("publish answer");
        let plan = PeerPlan {
            participant: p.index,
            label: format!("{}/publish", p.name),
            send: p.publish.iter().map(|x| x.1.clone()).collect(),
            recv: vec![],
        };
        let sources: Vec<TrackSource> = p.publish.iter().map(|x| x.0).collect();
        let ctl2 = ctl.clone();
        let (w, camera) = ctx
            .offer_peer(&plan, |offer| async move {
                let lines = offered_tracks(&offer);
                let camera = lines
                    .iter()
                    .zip(&sources)
                    .find(|(_, s)| **s == TrackSource::Camera)
                    .map(|(l, _)| l.0);
                let tracks = lines
                    .iter()
                    .zip(&sources)
                    .map(|((mid, kind, _), src)| signal::PublishTrack {
                        mid: mid.to_string(),
                        kind: Some(
                            if *kind == TrackKind::Audio {
                                "audio"
                            } else {
                                "video"
                            }
                            .into(),
                        ),
                        source: Some(to_signal(*src)),
                    })
                    .collect();
                let (tx, rx) = oneshot::channel();
                let _ = ctl2.send(Ctl::ExpectPublishAnswer(tx));
                let _ = ctl2.send(Ctl::Send(ClientMsg::Publish { sdp: offer, tracks }));
                let answer = rx
                    .await
                    .map_err(|_| "room session ended before publish_answer".to_string())?;
                Ok((answer, camera))
            })
            .await?;
        let _ = ctl.send(Ctl::PublishPeer {
            peer: w.peer,
            camera,
        });
        waits.push(("ICE/DTLS of the publish connection", w));
    }
    phase.set("subscribe offer");
    let sub = sub_rx
        .await
        .map_err(|_| "room session ended before the subscribe offer".to_string())??;
    waits.push(("ICE/DTLS of the subscribe connection", sub));
    let mut slowest = 0;
    for (step, w) in waits {
        phase.set(step);
        slowest = slowest.max(w.connected().await?);
    }
    Ok(slowest)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Session {
    async fn run(mut self, ws: Ws, ctl: mpsc::UnboundedReceiver<Ctl>) -> Ended {
        let how = self.serve(ws, ctl).await;
        Ended {
            how,
            nodes: std::mem::take(&mut self.nodes),
        }
    }

    async fn serve(&mut self, ws: Ws, mut ctl: mpsc::UnboundedReceiver<Ctl>) -> End {
        let (mut tx, mut rx) = ws.split();
        // A node that says `alive` (every second) and then falls silent is gone even if its
        // TCP connection never closes (frozen, or off the network).
        let mut says_alive = false;
        let mut heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(heard + NODE_SILENT), if says_alive => return End::Closed,
                c = ctl.recv() => match c {
                    Some(Ctl::Send(m)) => {
                        let leave = matches!(m, ClientMsg::Leave);
                        let Ok(text) = serde_json::to_string(&m) else { continue };
                        let failed = tx.send(Message::text(text)).await.is_err();
                        if leave {
                            let _ = tx.close().await;
                            return End::Left;
                        }
                        if failed {
                            return End::Closed;
                        }
                    }
                    Some(Ctl::ExpectPublishAnswer(t)) => self.publish_answer = Some(t),
                    Some(Ctl::PublishPeer { peer, camera }) => self.pub_peer = Some((peer, camera)),
                    None => return End::Left,
                },
                m = rx.next() => {
                    let Some(Ok(m)) = m else { return End::Closed };
                    heard = tokio::time::Instant::now();
                    let Message::Text(text) = m else { continue };
                    let Ok(msg) = serde_json::from_str::<ServerMsg>(text.as_str()) else { continue };
                    if matches!(msg, ServerMsg::Alive {}) {
                        says_alive = true;
                        continue;
                    }
                    let out = self.on_message(msg).await;
                    // The server closes after a redirect; do not wait for it.
                    let redirect = self.redirect.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(url) = redirect {
                        let _ = tx.close().await;
                        return End::Redirect(url);
                    }
                    for out in out {
                        let Ok(text) = serde_json::to_string(&out) else { continue };
                        if tx.send(Message::text(text)).await.is_err() {
                            return End::Closed;
                        }
                    }
                }
            }
        }
    }

    fn consider(&mut self, owner: &str, track: &TrackInfo) {
        let Some(&owner) = self.people.get(owner) else {
            return;
        };
        if owner == self.index || self.subscribed.contains(&track.id) {
            return;
        }
        let source = source_of(track.source);
        let wanted = self
            .wants
            .iter()
            .find(|w| w.publisher == owner && w.source == source)
            .map(|w| w.max_layer);
        let layer = wanted.or(self.all_cameras.filter(|_| source == TrackSource::Camera));
        if let Some(l) = layer {
            self.subscribed.insert(track.id.clone());
            self.pending.push(SubscribeTrack {
                track: track.id.clone(),
                max_layer: Some(l),
            });
        }
    }

    async fn on_message(&mut self, msg: ServerMsg) -> Vec<ClientMsg> {
        let mut out = Vec::new();
        match msg {
            ServerMsg::Joined {
                participant,
                participants,
                nodes,
                ..
            } => {
                self.me = Some(participant);
                self.nodes = nodes;
                for p in &participants {
                    if let Some(i) = index_of(&p.name) {
                        self.people.insert(p.id.clone(), i);
                    }
                }
                for p in &participants {
                    for t in &p.tracks {
                        self.consider(&p.id, t);
                    }
                }
            }
            ServerMsg::Participants { joined, .. } => {
                for p in joined.iter() {
                    if let Some(i) = index_of(&p.name) {
                        self.people.insert(p.id.clone(), i);
                    }
                }
            }
            ServerMsg::TrackPublished { participant, track } => {
                if self.me.as_ref() == Some(&participant)
                    && track.kind == "video"
                    && source_of(track.source) == TrackSource::Camera
                {
                    self.my_camera = Some(track.id.clone());
                }
                self.consider(&participant, &track)
            }
            ServerMsg::PublishAnswer { sdp } => {
                if let Some(t) = self.publish_answer.take() {
                    let _ = t.send(sdp);
                }
            }
            ServerMsg::Offer { sdp, slots } => {
                let expect: Vec<(Mid, TrackKind, bool)> = slots
                    .iter()
                    .map(|s| {
                        let kind = if s.kind == "audio" {
                            TrackKind::Audio
                        } else {
                            TrackKind::Video
                        };
                        // Audio slots carry whoever speaks, and may be silent.
                        (Mid::from(s.mid.as_str()), kind, s.track.is_some())
                    })
                    .collect();
                for s in &slots {
                    if let Some(t) = &s.track {
                        self.slot_of.insert(t.clone(), Mid::from(s.mid.as_str()));
                    }
                }
                if let Some(answer) = self.answer(&sdp, expect).await {
                    out.push(ClientMsg::Answer { sdp: answer });
                }
            }
            ServerMsg::LayersWanted { track, layers } => {
                // The probe publishes at most one simulcast track: its camera.
                if self.my_camera.as_ref() != Some(&track) {
                    return out;
                }
                if let Some((peer, Some(mid))) = self.pub_peer {
                    for layer in 0..3u8 {
                        let active = layers.contains(&layer);
                        self.ctx.driver(self.index).send(Cmd::LayerActive {
                            peer,
                            mid,
                            layer,
                            active,
                        });
                    }
                }
            }
            ServerMsg::Error { message } => {
                eprintln!("participant {}: the server said: {message}", self.index);
            }
            // A track whose publisher left carries nothing from then on; that is no freeze.
            // Forgotten too, so that the same track published again (its publisher
            // re-homed) is subscribed again.
            ServerMsg::TrackUnpublished { track, .. } => {
                self.pause(&track.id, true);
                self.subscribed.remove(&track.id);
            }
            ServerMsg::Redirect { url } => {
                *self.redirect.lock().unwrap_or_else(|e| e.into_inner()) = Some(url);
            }
            // The room gained or lost a node since `joined`: where to go if ours dies.
            ServerMsg::Nodes { nodes } => self.nodes = nodes,
            ServerMsg::Paused { track } => self.pause(&track, true),
            ServerMsg::Resumed { track } => self.pause(&track, false),
            _ => {}
        }
        if !self.pending.is_empty() {
            out.push(ClientMsg::Subscribe {
                tracks: std::mem::take(&mut self.pending),
            });
        }
        out
    }

    fn pause(&self, track: &str, paused: bool) {
        if let (Some(peer), Some(mid)) = (self.sub_peer, self.slot_of.get(track)) {
            self.ctx.driver(self.index).send(Cmd::Paused {
                peer,
                mid: *mid,
                paused,
            });
        }
    }

    /// Answers the server's offer: the first creates the subscribe peer, later ones
    /// renegotiate it on its driver.
    async fn answer(&mut self, sdp: &str, expect: Vec<(Mid, TrackKind, bool)>) -> Option<String> {
        match self.sub_peer {
            None => {
                let label = format!("{}/subscribe", name_of(self.index));
                match self.ctx.answer_peer(self.index, label, sdp, Some(expect)) {
                    Ok((wait, answer)) => {
                        self.sub_peer = Some(wait.peer);
                        if let Some(t) = self.sub_ready.take() {
                            let _ = t.send(Ok(wait));
                        }
                        Some(answer)
                    }
                    Err(e) => {
                        if let Some(t) = self.sub_ready.take() {
                            let _ = t.send(Err(e));
                        }
                        None
                    }
                }
            }
            Some(peer) => {
                let (tx, rx) = oneshot::channel();
                self.ctx.driver(self.index).send(Cmd::RemoteOffer {
                    peer,
                    sdp: sdp.to_string(),
                    expect,
                    reply: tx,
                });
                match tokio::time::timeout(Duration::from_secs(5), rx).await {
                    Ok(Ok(Ok(answer))) => Some(answer),
                    _ => None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls() {
        assert_eq!(index_of(&name_of(42)), Some(42));
        assert_eq!(index_of("p42"), None);
        assert_eq!(
            ws_url("http://127.0.0.1:8080", "assembly").unwrap(),
            "ws://127.0.0.1:8080/rooms/assembly"
        );
        assert!(ws_url("https://x", "r").is_err());
    }
}

//! Cascade: one room over several `plenary sfu` nodes (IO side; the per-link translation is
//! the sans-IO `core`).
//!
//! A link to another node is a pseudo worker of the room's span (`LINK_BASE + slot`), so the
//! workers pipe to it as they pipe to each other: membership, tracks, media, keyframe requests
//! and demand. The link task turns that into the wire format of `plenary_cascade` and back.
//!
//! Which rooms a link carries: each side sends `Room` for the rooms it holds; a room is
//! carried once both sides hold it. The directory (Redis) says which nodes hold a room, so a
//! node's first join into a room knows whom to link with before it is routed.

mod core;
mod link_task;
mod links;
mod repair;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plenary_cascade::directory::{Directory, NodeInfo, Presence};
use plenary_cascade::link::{Endpoint, Link, LinkConfig, LinkHandle};
use plenary_cascade::wire::ControlMsg;

use crate::workers::{RoomEvent, LINK_BASE, MAX_LINKS};
use crate::Shared;

/// Longest a join waits to link with another node of its room.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Heartbeat period; the directory's TTL is three of them.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Two links to one node this close together come from both sides dialling at once.
const DIAL_RACE: Duration = Duration::from_secs(2);
/// Messages queued from the workers to one link before it counts as stalled.
const LINK_QUEUE: usize = 8192;

#[derive(Clone)]
pub struct CascadeConfig {
    /// QUIC listen address of the links (UDP).
    pub listen: SocketAddr,
    /// The address other nodes dial, registered in the directory (default: the bound
    /// listen address). Needed behind a 0.0.0.0 listener, NAT or a proxy.
    pub advertise: Option<SocketAddr>,
    /// `redis://HOST:PORT[/DB]`.
    pub directory: String,
    pub secret: Vec<u8>,
    /// This node's name in the directory and on links.
    pub node: String,
    /// Participants on this node above which joins are sent to a less loaded node of the
    /// room (0: never).
    pub max_load: u32,
    /// Base URL clients reach this node's HTTP at (default `http://` + the HTTP listener).
    pub public_url: Option<String>,
}

impl std::fmt::Debug for CascadeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CascadeConfig")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("directory", &self.directory)
            .field("secret", &"<redacted>")
            .field("node", &self.node)
            .field("max_load", &self.max_load)
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// Why a join cannot be served here.
#[derive(Debug)]
pub(crate) enum JoinRefusal {
    /// This node is over its load: the client should go there (base URL).
    Redirect(String),
    /// The directory is unreachable and the room is not on this node yet.
    Directory(String),
}

/// What went through one link, updated by its task, read by `RunningSfu::cascade_stats`.
#[derive(Default)]
pub(crate) struct LinkBytes {
    /// Media datagrams as encoded.
    pub tx: std::sync::atomic::AtomicU64,
    pub rx: std::sync::atomic::AtomicU64,
    pub nacked: std::sync::atomic::AtomicU64,
    pub resent: std::sync::atomic::AtomicU64,
}

/// One open cascade link, as `RunningSfu::cascade_stats` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStats {
    /// The other node's name.
    pub peer: String,
    /// Media datagram bytes sent to and received from it.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Video packets this node asked it to send again (holes seen on the link).
    pub nacked: u64,
    /// Video packets this node sent again because it asked.
    pub resent: u64,
}

struct LinkEntry {
    peer: String,
    bytes: Arc<LinkBytes>,
    handle: LinkHandle,
    /// Told to the link task's pipe inbox to tear a room's mirror down.
    inbox: crate::media::LinkTx,
    /// Rooms the far side said it holds.
    remote_rooms: HashSet<String>,
    /// Rooms we told the far side we hold.
    sent_rooms: HashSet<String>,
    generation: u64,
    since: std::time::Instant,
}

#[derive(Default)]
struct State {
    links: Vec<Option<LinkEntry>>,
    /// Rooms with members on this node, as registered in the directory.
    held: HashSet<String>,
    /// Base URLs of each held room's nodes, from the directory at the last join.
    room_urls: std::collections::HashMap<String, Vec<String>>,
    generation: u64,
}

pub(crate) struct Cascade {
    node: String,
    /// Set by SIGTERM: the directory shows the node as draining, so nobody is sent here.
    draining: std::sync::atomic::AtomicBool,
    config: CascadeConfig,
    public_url: String,
    endpoint: Endpoint,
    directory: Directory,
    presence: Mutex<Option<Presence>>,
    /// Authenticated incoming links, until `start` takes them.
    incoming: Mutex<Option<tokio::sync::mpsc::Receiver<Link>>>,
    state: Mutex<State>,
}

impl Cascade {
    /// Binds the link endpoint and reaches the directory; the node is announced by `start`.
    pub(crate) async fn new(config: CascadeConfig, http: SocketAddr) -> anyhow::Result<Self> {
        let directory = Directory::connect(&config.directory, "plenary")
            .await
            .map_err(|e| anyhow::anyhow!("cascade: {e}"))?;
        let (endpoint, incoming) = Endpoint::bind(LinkConfig {
            node: config.node.clone(),
            listen: config.listen,
            secret: config.secret.clone(),
        })
        .map_err(|e| anyhow::anyhow!("cascade link listener {}: {e}", config.listen))?;
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{http}"));
        let me = Self {
            node: config.node.clone(),
            draining: std::sync::atomic::AtomicBool::new(false),
            config,
            public_url,
            endpoint,
            directory,
            presence: Mutex::new(None),
            incoming: Mutex::new(Some(incoming)),
            state: Mutex::new(State {
                links: (0..MAX_LINKS).map(|_| None).collect(),
                ..State::default()
            }),
        };
        Ok(me)
    }

    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    pub(crate) fn link_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Heartbeats, incoming links and room events; runs until the SFU stops. Returns once the
    /// node is registered in the directory (joins need it), or after 2 s without.
    pub(crate) async fn start(self: &Arc<Self>, shared: &Arc<Shared>) {
        let incoming = self
            .incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let (events_tx, mut events) = tokio::sync::mpsc::channel(4096);
        shared.router.set_events(events_tx);
        let info_shared = Arc::downgrade(shared);
        let me = self.clone();
        let presence = plenary_cascade::directory::spawn_presence(
            self.directory.clone(),
            move || me.info(info_shared.upgrade().map_or(0, |s| s.router.members())),
            HEARTBEAT,
        );
        if !presence.wait_up(Duration::from_secs(2)).await {
            tracing::warn!(
                directory = self.directory.url(),
                "cascade: the directory does not answer yet; joins into new rooms fail until it does"
            );
        }
        let mut registrations = presence.registrations();
        *self.presence.lock().unwrap_or_else(|e| e.into_inner()) = Some(presence);
        // The directory forgot this node (Redis restarted empty, or others swept it during an
        // outage): announce the rooms held here again.
        let me = self.clone();
        tokio::spawn(async move {
            let mut seen = *registrations.borrow();
            while registrations.changed().await.is_ok() {
                let n = *registrations.borrow();
                if n <= seen.max(1) {
                    seen = n;
                    continue;
                }
                seen = n;
                let held: Vec<String> = me.state().held.iter().cloned().collect();
                tracing::info!(
                    rooms = held.len(),
                    "cascade: re-announcing rooms to the directory"
                );
                for room in held {
                    if let Err(e) = me.directory.join_room(&room, &me.node).await {
                        tracing::warn!(room, "cascade: directory: {e}");
                    }
                }
            }
        });
        if let Some(mut incoming) = incoming {
            let (me, shared) = (self.clone(), Arc::downgrade(shared));
            tokio::spawn(async move {
                while let Some(link) = incoming.recv().await {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    tracing::info!(peer = %link.peer, "cascade: link accepted");
                    me.add_link(&shared, link, false);
                }
            });
        }
        let (me, shared) = (self.clone(), Arc::downgrade(shared));
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                match ev {
                    RoomEvent::Emptied(room) => me.room_emptied(&shared, &room).await,
                    RoomEvent::Track { room, track, up } => {
                        // Track ids are per node: the node's name makes them unique.
                        let track = format!("{}/{track}", me.node);
                        let r = if up {
                            me.directory.set_track(&room, &track, &me.node).await
                        } else {
                            me.directory.clear_track(&room, &track).await
                        };
                        if let Err(e) = r {
                            tracing::debug!(room, track, "cascade: directory track entry: {e}");
                        }
                    }
                }
            }
        });
    }

    fn info(&self, load: usize) -> NodeInfo {
        NodeInfo {
            name: self.node.clone(),
            http: self.public_url.clone(),
            cascade: self.config.advertise.unwrap_or(self.endpoint.local_addr()),
            load: load as u32,
            max_load: self.config.max_load,
            draining: self.draining.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Before a join into `room` is routed: registers the room in the directory, links with
    /// the room's other nodes, or sends the client to a less loaded node.
    pub(crate) async fn prepare(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        room: &str,
    ) -> Result<(), JoinRefusal> {
        let load = shared.router.members() as u32;
        let over = self.config.max_load > 0 && load >= self.config.max_load;
        if self.state().held.contains(room) && !over {
            return Ok(());
        }
        let nodes = if over {
            self.directory.room_nodes(room).await
        } else {
            self.directory.join_room(room, &self.node).await
        }
        .map_err(|e| {
            JoinRefusal::Directory(format!(
                "cascade directory unreachable ({e}); joins into rooms not already on this node fail until it is back"
            ))
        })?;
        if over {
            let others = if nodes.iter().any(|n| n.name != self.node) {
                nodes.clone()
            } else {
                self.directory.nodes().await.unwrap_or_default()
            };
            let target = others
                .iter()
                .filter(|n| n.name != self.node && !n.draining && n.has_capacity())
                .min_by_key(|n| n.load);
            if let Some(n) = target {
                return Err(JoinRefusal::Redirect(n.http.clone()));
            }
            // Nowhere better: serve it here rather than refuse.
            if !self.state().held.contains(room) {
                let _ = self.directory.join_room(room, &self.node).await;
            }
        }
        {
            let mut st = self.state();
            st.held.insert(room.to_owned());
            let urls = nodes.iter().map(|n| n.http.clone()).collect();
            st.room_urls.insert(room.to_owned(), urls);
        }
        for n in nodes.iter().filter(|n| n.name != self.node) {
            let slot = match self.slot_of(&n.name) {
                Some(s) => Some(s),
                None => {
                    match tokio::time::timeout(CONNECT_TIMEOUT, self.endpoint.connect(n.cascade))
                        .await
                    {
                        Ok(Ok(link)) => {
                            tracing::info!(peer = %n.name, addr = %n.cascade, "cascade: link up");
                            self.add_link(shared, link, true)
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(peer = %n.name, addr = %n.cascade, "cascade: cannot link: {e}");
                            None
                        }
                        Err(_) => {
                            tracing::warn!(peer = %n.name, addr = %n.cascade, "cascade: link timed out");
                            None
                        }
                    }
                }
            };
            if let Some(slot) = slot {
                self.carry(shared, slot, room, true);
            }
        }
        Ok(())
    }

    /// Reads the room's nodes from the directory and, when they changed, tells the room's
    /// participants here (`nodes`), so that everyone knows where to go if this node dies;
    /// again after `later` when given (a dead node leaves the directory by its TTL).
    pub(crate) fn refresh_nodes(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        room: &str,
        later: Option<Duration>,
    ) {
        let (me, shared, room) = (self.clone(), Arc::downgrade(shared), room.to_owned());
        tokio::spawn(async move {
            if let Some(d) = later {
                tokio::time::sleep(d).await;
            }
            let Ok(nodes) = me.directory.room_nodes(&room).await else {
                return;
            };
            let urls: Vec<String> = nodes
                .iter()
                .filter(|n| !n.draining)
                .map(|n| n.http.clone())
                .collect();
            {
                let mut st = me.state();
                if !st.held.contains(&room) || st.room_urls.get(&room) == Some(&urls) {
                    return;
                }
                st.room_urls.insert(room.clone(), urls);
            }
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let nodes = me.room_urls(&room);
            shared.router.broadcast(|| crate::Cmd::RoomNodes {
                room: room.clone(),
                nodes: nodes.clone(),
            });
        });
    }

    /// The nodes of a room, for `joined` (base URLs, this node first).
    pub(crate) fn room_urls(&self, room: &str) -> Vec<String> {
        let st = self.state();
        let others = st.room_urls.get(room).into_iter().flatten();
        std::iter::once(self.public_url.clone())
            .chain(others.filter(|u| **u != self.public_url).cloned())
            .collect()
    }

    async fn room_emptied(&self, shared: &Shared, room: &str) {
        let slots: Vec<usize> = {
            let mut st = self.state();
            st.held.remove(room);
            st.room_urls.remove(room);
            st.links
                .iter_mut()
                .enumerate()
                .filter_map(|(i, l)| {
                    let l = l.as_mut()?;
                    if l.sent_rooms.remove(room) {
                        l.handle.send_control(ControlMsg::RoomGone {
                            room: room.to_owned(),
                        });
                    }
                    // The link task drops its mirror of the room.
                    let _ = l.inbox.try_send(crate::media::PipeMsg::Span {
                        room: room.to_owned(),
                        workers: 0,
                    });
                    Some(i)
                })
                .collect()
        };
        for s in slots {
            shared.router.set_link(room, LINK_BASE + s, false);
        }
        if let Err(e) = self.directory.leave_room(room, &self.node).await {
            tracing::debug!(room, "cascade: directory leave_room: {e}");
        }
    }

    /// SIGTERM: the directory and the other nodes learn this node is draining, and every room
    /// API participant is sent to the least loaded other node of its room (by `redirect`).
    /// Media between the other nodes goes on; the links close at `stop`.
    pub(crate) async fn drain(&self, shared: &Shared) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let (rooms, handles): (Vec<String>, Vec<LinkHandle>) = {
            let st = self.state();
            (
                st.held.iter().cloned().collect(),
                st.links
                    .iter()
                    .flatten()
                    .map(|l| l.handle.clone())
                    .collect(),
            )
        };
        for h in handles {
            h.send_control(ControlMsg::Draining);
        }
        for room in rooms {
            let target = match self.drain_target(&room).await {
                Ok(Some(t)) => t,
                Ok(None) => {
                    tracing::info!(room, "cascade drain: no other live node");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(
                        room,
                        "cascade drain: directory: {e}; participants stay until stop"
                    );
                    continue;
                }
            };
            tracing::info!(room, to = %target.name, "cascade drain: re-homing participants");
            shared.router.broadcast(|| crate::Cmd::Rehome {
                room: room.clone(),
                url: target.http.clone(),
            });
        }
    }

    /// Where a draining node sends a room's clients: the least loaded live node of the room,
    /// else (a room held here alone) of the cluster. None when there is no other live node.
    pub(crate) async fn drain_target(&self, room: &str) -> anyhow::Result<Option<NodeInfo>> {
        let pick = |nodes: &[NodeInfo]| {
            nodes
                .iter()
                .filter(|n| n.name != self.node && !n.draining)
                .min_by_key(|n| n.load)
                .cloned()
        };
        if let Some(t) = pick(&self.directory.room_nodes(room).await?) {
            return Ok(Some(t));
        }
        Ok(pick(&self.directory.nodes().await?))
    }

    /// SIGTERM: tell the other nodes, leave the directory, close the links.
    pub(crate) async fn stop(&self) {
        let presence = self
            .presence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(p) = presence {
            p.stop().await;
        }
        self.endpoint.close();
    }
}

//! Joining one participant: build its peer connections, run the signalling of the target
//! (WHIP/WHEP, Janus or the room API), hand the peers to a driver and wait until ICE and
//! DTLS are up. Every wait is bounded by the join timeout.

use super::cascade::{self, Rehome};
use super::engine::build::{self, BuildCtx, PeerPlan};
use super::engine::driver::{Cmd, DriverHandle};
use super::net::whip;
use super::plan::Participant;
use super::recv::track::TrackKind;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Plenary (or any WHIP/WHEP + room API server) at these base URLs: one node, or the
    /// nodes of a cascade, which participants are spread over.
    Plenary { bases: Vec<String> },
    /// Janus's HTTP API root, e.g. `http://127.0.0.1:8088/janus`.
    Janus { base: String },
}

/// What must be undone when the participant leaves.
#[derive(Debug)]
pub enum Cleanup {
    Delete(String),
    Janus(super::net::janus::Session),
    Room(super::net::rooms::RoomHandle),
    Stay(super::net::stay::Stay),
}

pub struct JoinCtx {
    pub build: BuildCtx,
    pub drivers: Vec<DriverHandle>,
    pub target: Target,
    pub timeout: Duration,
    pub next_id: AtomicU64,
    /// Participants use the room API (assembly, meeting), not WHIP/WHEP.
    pub rooms: bool,
    pub janus: super::net::janus::Shared,
    /// Participants present once the current step has joined: a subscription to a
    /// publisher beyond it would wait for someone who never comes.
    pub population: std::sync::atomic::AtomicU32,
    /// The node (`http://host:port`) each participant is on now: the delay of a track is
    /// same-node or cross-node by it.
    pub homes: Mutex<HashMap<u32, String>>,
    /// Every re-homing so far; the controller takes each step's share.
    pub rehomes: Mutex<Vec<Rehome>>,
}

impl JoinCtx {
    pub fn driver(&self, participant: u32) -> &DriverHandle {
        &self.drivers[participant as usize % self.drivers.len()]
    }

    pub fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn set_home(&self, participant: u32, url: &str) {
        let mut h = self.homes.lock().unwrap_or_else(|e| e.into_inner());
        h.insert(participant, cascade::node_of(url));
    }

    pub fn homes(&self) -> HashMap<u32, String> {
        self.homes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The base URLs participants are spread over (empty for Janus).
    pub fn targets(&self) -> &[String] {
        match &self.target {
            Target::Plenary { bases } => bases,
            Target::Janus { .. } => &[],
        }
    }

    /// Builds an offer, sends it with `exchange`, applies the answer and starts the peer
    /// on this participant's driver; returns the connect waiter and what `exchange` kept.
    pub async fn offer_peer<F, Fut, K>(
        &self,
        plan: &PeerPlan,
        exchange: F,
    ) -> Result<(ConnectWait, K), String>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<(String, K), String>>,
    {
        let offered = build::offer(&self.build, plan)?;
        let joined_us = offered.joined_us();
        let offer = offered.offer.clone();
        let (answer, keep) = exchange(offer).await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let peer = offered.accept(&answer, self.id(), tx)?;
        let id = peer.id;
        self.driver(plan.participant).send(Cmd::Add(Box::new(peer)));
        Ok((
            ConnectWait {
                rx,
                joined_us,
                peer: id,
            },
            keep,
        ))
    }

    /// The server offered: answer with a receive-only peer on this participant's driver.
    pub fn answer_peer(
        &self,
        participant: u32,
        label: String,
        offer: &str,
        expect: Option<Vec<(str0m::media::Mid, TrackKind, bool)>>,
    ) -> Result<(ConnectWait, String), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (peer, answer) = build::answer(
            &self.build,
            participant,
            label,
            offer,
            expect,
            self.id(),
            tx,
        )?;
        let (joined_us, id) = (peer.joined_us, peer.id);
        self.driver(participant).send(Cmd::Add(Box::new(peer)));
        Ok((
            ConnectWait {
                rx,
                joined_us,
                peer: id,
            },
            answer,
        ))
    }
}

/// The step a join is at, so that a timeout says where it stuck.
#[derive(Clone, Default)]
pub struct Phase(Arc<std::sync::Mutex<&'static str>>);

impl Phase {
    pub fn set(&self, step: &'static str) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = step;
    }

    pub fn get(&self) -> &'static str {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Resolves when a peer's ICE+DTLS connect.
pub struct ConnectWait {
    rx: tokio::sync::oneshot::Receiver<u64>,
    joined_us: u64,
    pub peer: u64,
}

impl ConnectWait {
    /// Microseconds from the start of signalling to connected.
    pub async fn connected(self) -> Result<u64, String> {
        let at = self
            .rx
            .await
            .map_err(|_| "peer connection failed before connecting".to_string())?;
        Ok(at.saturating_sub(self.joined_us))
    }
}

#[derive(Debug)]
pub struct Joined {
    pub participant: u32,
    pub ok: bool,
    pub join_ms: Option<f64>,
    pub error: Option<String>,
    /// Redirects (room API `redirect`, WHIP/WHEP 307) its join followed.
    pub redirects: u32,
    pub cleanup: Vec<Cleanup>,
}

/// Joins `p`; never takes longer than the join timeout.
pub async fn join(ctx: Arc<JoinCtx>, p: Participant) -> Joined {
    let mut cleanup = Vec::new();
    let participant = p.index;
    let phase = Phase::default();
    phase.set("signalling");
    let mut redirects = 0;
    let work = async {
        match ctx.target.clone() {
            Target::Plenary { bases } => {
                let base = &bases[cascade::target_of(p.index, p.role, bases.len())];
                let mut j = Joining {
                    cleanup: &mut cleanup,
                    phase: &phase,
                    redirects: &mut redirects,
                };
                if ctx.rooms {
                    super::net::stay::join(ctx.clone(), base, &p, &mut j).await
                } else {
                    join_whip_whep(&ctx, base, &p, &mut j).await
                }
            }
            Target::Janus { base } => super::net::janus::join(&ctx, &base, &p, &mut cleanup).await,
        }
    };
    let result = tokio::time::timeout(ctx.timeout, work).await;
    let (ok, join_ms, error) = match result {
        Ok(Ok(us)) => (true, Some(us as f64 / 1000.0), None),
        Ok(Err(e)) => (false, None, Some(e)),
        Err(_) => (
            false,
            None,
            Some(format!(
                "not connected within {:?} (stuck at: {})",
                ctx.timeout,
                phase.get()
            )),
        ),
    };
    Joined {
        participant,
        ok,
        join_ms,
        error,
        redirects,
        cleanup,
    }
}

/// What a join leaves behind even when its timeout cuts it short.
pub struct Joining<'a> {
    pub cleanup: &'a mut Vec<Cleanup>,
    pub phase: &'a Phase,
    pub redirects: &'a mut u32,
}

/// WHIP for what it publishes, WHEP for each room it plays. Returns the slowest connect.
async fn join_whip_whep(
    ctx: &JoinCtx,
    base: &str,
    p: &Participant,
    j: &mut Joining<'_>,
) -> Result<u64, String> {
    let mut waits = Vec::new();
    let t = ctx.timeout;
    let mut home = None;
    if !p.publish.is_empty() {
        let plan = PeerPlan {
            participant: p.index,
            label: format!("{}/whip", p.name),
            send: p.publish.iter().map(|x| x.1.clone()).collect(),
            recv: vec![],
        };
        let url = format!("{base}/whip/{}", p.room);
        let (w, x) = ctx
            .offer_peer(&plan, |o| whip::exchange(&url, o, t))
            .await?;
        j.note(&x, &mut home);
        waits.push(w);
    }
    for room in &p.play {
        let plan = PeerPlan {
            participant: p.index,
            label: format!("{}/whep/{room}", p.name),
            send: vec![],
            recv: vec![TrackKind::Audio, TrackKind::Video],
        };
        let url = format!("{base}/whep/{room}");
        let (w, x) = ctx
            .offer_peer(&plan, |o| whip::exchange(&url, o, t))
            .await?;
        j.note(&x, &mut home);
        waits.push(w);
    }
    if let Some(h) = home {
        ctx.set_home(p.index, &h);
    }
    j.phase.set("ICE/DTLS of a WHIP or WHEP connection");
    let mut slowest = 0;
    for w in waits {
        slowest = slowest.max(w.connected().await?);
    }
    Ok(slowest)
}

impl Joining<'_> {
    /// Keeps a WHIP/WHEP session for leaving, counts its redirects, and takes the node of
    /// the participant's first session as its home.
    fn note(&mut self, x: &whip::Exchanged, home: &mut Option<String>) {
        self.cleanup.extend(x.location.clone().map(Cleanup::Delete));
        *self.redirects += x.redirects;
        home.get_or_insert_with(|| x.url.clone());
    }
}

/// Undoes a participant's sessions, best effort and bounded.
pub async fn leave(ctx: &JoinCtx, j: Joined) {
    ctx.driver(j.participant)
        .send(Cmd::RemoveParticipant(j.participant));
    let t = Duration::from_secs(2);
    for c in j.cleanup {
        match c {
            Cleanup::Delete(url) => whip::delete(&url, t).await,
            Cleanup::Janus(s) => s.destroy(t).await,
            Cleanup::Room(r) => r.leave().await,
            Cleanup::Stay(s) => s.leave().await,
        }
    }
}

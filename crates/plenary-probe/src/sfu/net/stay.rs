//! A room API participant's stay across the nodes of a cascade: the join follows
//! `redirect`s, and when the node closes the room socket (it died or drained), the
//! participant joins again at the next node, publishes and subscribes as before, and the
//! time until its media is back is recorded.

use super::rooms::{self, Attempt, End, RoomHandle};
use crate::sfu::cascade::{self, Redirects, Rehome};
use crate::sfu::engine::driver::Cmd;
use crate::sfu::join::{Cleanup, JoinCtx, Joining, Phase};
use crate::sfu::plan::Participant;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How often a re-homed participant's driver is asked whether media is back (the times
/// themselves are the packets' arrival times, not this polling's).
const WATCH_EVERY: Duration = Duration::from_millis(50);
/// Longest a re-homed participant waits for its first audio or video again.
const WATCH_FOR_US: u64 = 30_000_000;

/// The supervisor of a stay; `leave` ends it wherever it is.
pub struct Stay {
    leave: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Stay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stay")
    }
}

impl Stay {
    pub async fn leave(self) {
        let _ = self.leave.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Joins `p` at `base` (or where it is redirected), then hands the session to a supervisor
/// that re-homes it. Returns the slowest connect, µs.
pub async fn join(
    ctx: Arc<JoinCtx>,
    base: &str,
    p: &Participant,
    j: &mut Joining<'_>,
) -> Result<u64, String> {
    let (us, base) = connect_following(&ctx, base, p, j.phase, j.redirects, j.cleanup).await?;
    // connect_following left the live session last in `cleanup`: the supervisor owns it
    // from here (no await in between, so a timeout cannot lose it).
    let Some(Cleanup::Room(session)) = j.cleanup.pop() else {
        return Err("room session missing after join".into());
    };
    ctx.set_home(p.index, &base);
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(supervise(ctx, p.clone(), base, session, rx));
    j.cleanup.push(Cleanup::Stay(Stay { leave: tx, task }));
    Ok(us)
}

/// Joins at `base`, following up to [`cascade::MAX_REDIRECTS`] redirects. On success the
/// session is the last entry of `cleanup`; returns the slowest connect and the node that
/// took the participant. Sessions that redirected end by themselves and are dropped.
async fn connect_following(
    ctx: &Arc<JoinCtx>,
    base: &str,
    p: &Participant,
    phase: &Phase,
    redirects: &mut u32,
    cleanup: &mut Vec<Cleanup>,
) -> Result<(u64, String), String> {
    let mut followed = Redirects::default();
    let mut base = base.trim_end_matches('/').to_string();
    loop {
        match rooms::connect(ctx.clone(), &base, p, cleanup, phase).await {
            Ok(us) => return Ok((us, base)),
            Err(Attempt::Redirect(url)) => {
                if matches!(cleanup.last(), Some(Cleanup::Room(_))) {
                    cleanup.pop();
                }
                base = followed.follow(&url)?;
                *redirects += 1;
            }
            Err(Attempt::Failed(e)) => return Err(e),
        }
    }
}

/// Keeps `p` in the room until it leaves, re-homing it each time its node lets it go.
async fn supervise(
    ctx: Arc<JoinCtx>,
    p: Participant,
    mut base: String,
    mut session: RoomHandle,
    mut leave: oneshot::Receiver<()>,
) {
    let mut watch: Option<(usize, u64)> = None;
    loop {
        let ended = loop {
            tokio::select! {
                _ = &mut leave => {
                    session.leave().await;
                    return;
                }
                e = session.ended() => break e,
                _ = tokio::time::sleep(WATCH_EVERY), if watch.is_some() => {
                    if let Some((i, closed)) = watch {
                        if media_back(&ctx, p.index, i, closed).await {
                            watch = None;
                        }
                    }
                }
            }
        };
        let closed_us = ctx.build.clock.now_us();
        let mut candidates = match ended.how {
            End::Left => return,
            End::Redirect(url) => vec![url],
            End::Closed => Vec::new(),
        };
        candidates.extend(cascade::rehome_candidates(
            &ended.nodes,
            ctx.targets(),
            &base,
        ));
        let i = record(
            &ctx,
            Rehome {
                participant: p.index,
                from: cascade::node_of(&base),
                closed_us,
                ..Rehome::default()
            },
        );
        let rejoin = rejoin(&ctx, &p, candidates);
        let got = tokio::select! {
            _ = &mut leave => return,
            r = rejoin => r,
        };
        let Some((to, next, redirects)) = got else {
            update(&ctx, i, |e| e.to = None);
            return;
        };
        let rejoin_ms = ms(ctx.build.clock.now_us(), closed_us);
        update(&ctx, i, |e| {
            e.to = Some(cascade::node_of(&to));
            e.rejoin_ms = Some(rejoin_ms);
            e.redirects = redirects;
        });
        ctx.set_home(p.index, &to);
        (base, session, watch) = (to, next, Some((i, closed_us)));
    }
}

/// Tries each candidate in turn, each within the join timeout; the first that takes the
/// participant wins. The dead node's peers are dropped first (their counters stay in the
/// totals), and again after a failed attempt.
async fn rejoin(
    ctx: &Arc<JoinCtx>,
    p: &Participant,
    candidates: Vec<String>,
) -> Option<(String, RoomHandle, u32)> {
    let phase = Phase::default();
    for c in candidates {
        ctx.driver(p.index).send(Cmd::RemoveParticipant(p.index));
        let mut cleanup = Vec::new();
        let mut redirects = 0;
        let attempt = connect_following(ctx, &c, p, &phase, &mut redirects, &mut cleanup);
        let r = tokio::time::timeout(ctx.timeout, attempt).await;
        if let Ok(Ok((_, to))) = r {
            if let Some(Cleanup::Room(s)) = cleanup.pop() {
                return Some((to, s, redirects));
            }
        }
        for c in cleanup {
            if let Cleanup::Room(s) = c {
                s.leave().await;
            }
        }
    }
    ctx.driver(p.index).send(Cmd::RemoveParticipant(p.index));
    None
}

fn ms(now_us: u64, since_us: u64) -> f64 {
    now_us.saturating_sub(since_us) as f64 / 1000.0
}

fn record(ctx: &JoinCtx, e: Rehome) -> usize {
    let mut v = ctx.rehomes.lock().unwrap_or_else(|e| e.into_inner());
    v.push(e);
    v.len() - 1
}

fn update(ctx: &JoinCtx, i: usize, f: impl FnOnce(&mut Rehome)) {
    let mut v = ctx.rehomes.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = v.get_mut(i) {
        f(e);
    }
}

/// Asks the driver when the re-homed peers got their first audio packet and video frame;
/// true once both are known or the watch is over.
async fn media_back(ctx: &JoinCtx, participant: u32, i: usize, closed_us: u64) -> bool {
    let (tx, rx) = oneshot::channel();
    ctx.driver(participant).send(Cmd::FirstMedia {
        participant,
        reply: tx,
    });
    let Ok(Ok((audio, video))) = tokio::time::timeout(Duration::from_secs(1), rx).await else {
        return false;
    };
    update(ctx, i, |e| {
        e.audio_ms = audio.map(|t| ms(t, closed_us));
        e.video_ms = video.map(|t| ms(t, closed_us));
    });
    let over = ctx.build.clock.now_us().saturating_sub(closed_us) > WATCH_FOR_US;
    (audio.is_some() && video.is_some()) || over
}

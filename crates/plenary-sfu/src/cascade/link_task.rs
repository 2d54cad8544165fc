//! The task that drives one cascade link: pipe messages from the workers out, control and
//! media datagrams from the far side in, through the link's `LinkCore`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plenary_cascade::link::Link;
use plenary_cascade::wire::{datagram_len, decode_datagram, ControlMsg};
use tokio::sync::mpsc;

use super::core::{Action, LinkCore};
use super::Cascade;
use crate::media::PipeMsg;
use crate::workers::LINK_BASE;
use crate::{Cmd, Shared};

/// Pipe messages handled per wake-up before the other inputs get a turn.
const BATCH: usize = 256;

static LOG_LIMIT: plenary_ops::ratelimit::LogLimiter<1> =
    plenary_ops::ratelimit::LogLimiter::new(10);

/// Runs until the link closes; returns why.
pub(super) async fn run(
    cascade: &Arc<Cascade>,
    shared: &Arc<Shared>,
    slot: usize,
    mut link: Link,
    mut from_workers: mpsc::Receiver<PipeMsg>,
    bytes: &super::LinkBytes,
) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let handle = link.handle.clone();
    let mut core = LinkCore::new(slot);
    let mut out: Vec<Action> = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut bad_datagrams: u64 = 0;
    loop {
        tokio::select! {
            msg = from_workers.recv() => {
                let Some(msg) = msg else { return "the SFU stopped".to_owned() };
                handle_worker_msg(&mut core, msg, &mut out);
                for _ in 1..BATCH {
                    match from_workers.try_recv() {
                        Ok(msg) => handle_worker_msg(&mut core, msg, &mut out),
                        Err(_) => break,
                    }
                }
            }
            ctrl = link.control.recv() => {
                let Some(ctrl) = ctrl else {
                    return handle.closed().await;
                };
                match ctrl {
                    ControlMsg::Room { room } => {
                        cascade.remote_room(shared, slot, &room);
                        cascade.refresh_nodes(shared, &room, None);
                    }
                    ControlMsg::RoomGone { room } => {
                        cascade.remote_room_gone(shared, slot, &room);
                        core.forget_room(&room);
                        cascade.refresh_nodes(shared, &room, None);
                    }
                    ControlMsg::Hello { .. } => {}
                    ControlMsg::Draining => {
                        tracing::info!(peer = %link.peer, "cascade: the other node is draining");
                    }
                    other => core.on_control(other, &mut out),
                }
            }
            dg = handle.recv_datagram() => {
                let Ok(dg) = dg else { return handle.closed().await };
                bytes.rx.fetch_add(dg.len() as u64, Relaxed);
                match decode_datagram(&dg) {
                    Ok(p) => {
                        if let Some((mask, msg)) = core.on_datagram(&p, Instant::now(), &mut out) {
                            to_workers(shared, mask, msg);
                        }
                    }
                    Err(e) => {
                        bad_datagrams += 1;
                        metrics::counter!("plenary_cascade_bad_frames_total", "reason" => "datagram").increment(1);
                        if LOG_LIMIT.allow(0).is_some() {
                            tracing::debug!(peer = %link.peer, bad_datagrams, "cascade: bad datagram: {e}");
                        }
                    }
                }
            }
            _ = tick.tick() => {
                core.tick(Instant::now(), &mut out);
                if core.unknown_flows > 0 {
                    metrics::counter!("plenary_cascade_bad_frames_total", "reason" => "unknown_flow")
                        .increment(core.unknown_flows);
                    if LOG_LIMIT.allow(0).is_some() {
                        tracing::debug!(peer = %link.peer, n = core.unknown_flows, "cascade: datagrams for unknown flows");
                    }
                    core.unknown_flows = 0;
                }
                let repair = std::mem::take(&mut core.repair);
                metrics::counter!(plenary_cascade::metrics::NACKED, "peer" => link.peer.clone()).increment(repair.nacked);
                metrics::counter!(plenary_cascade::metrics::RESENT, "peer" => link.peer.clone()).increment(repair.resent);
                metrics::counter!(plenary_cascade::metrics::REPAIR_MISSED, "peer" => link.peer.clone()).increment(repair.missed);
                bytes.nacked.fetch_add(repair.nacked, Relaxed);
                bytes.resent.fetch_add(repair.resent, Relaxed);
                // Workers that left a room get no more of it.
                for room in core.rooms().map(str::to_owned).collect::<Vec<_>>() {
                    core.worker_left(&room, shared.router.local_mask(&room));
                }
            }
        }
        for action in out.drain(..) {
            match action {
                Action::Control(msg) => {
                    if !handle.send_control(msg) {
                        return "control queue full (the other node stalled)".to_owned();
                    }
                }
                Action::Media {
                    track,
                    layer,
                    packet,
                } => {
                    let p = super::core::wire_packet(track, layer, &packet);
                    if handle.send_media(&p) {
                        bytes.tx.fetch_add(datagram_len(&p) as u64, Relaxed);
                    }
                }
                Action::Workers(mask, msg) => to_workers(shared, mask, msg),
            }
        }
    }
}

fn handle_worker_msg(core: &mut LinkCore, msg: PipeMsg, out: &mut Vec<Action>) {
    match msg {
        // The cascade's own signal that this node no longer holds the room.
        PipeMsg::Span { room, workers: 0 } => core.forget_room(&room),
        msg => core.on_worker_msg(msg, out),
    }
}

/// Sends a message to each local worker in the mask (a copy each; media payloads are shared).
fn to_workers(shared: &Shared, mask: u64, msg: PipeMsg) {
    let mask = mask & ((1u64 << LINK_BASE) - 1);
    if mask == 0 {
        return;
    }
    let last = 63 - mask.leading_zeros() as usize;
    for w in (0..last).filter(|w| mask & (1 << w) != 0) {
        if let Some(tx) = shared.router.worker(w) {
            let _ = tx.send(Cmd::Pipe(msg.clone()));
        }
    }
    if let Some(tx) = shared.router.worker(last) {
        let _ = tx.send(Cmd::Pipe(msg));
    }
}

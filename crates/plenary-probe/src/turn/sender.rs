//! The sending task: one task paces every flow from a single schedule ([`Pacer`]), writing
//! each packet into one reused buffer. Per packet it takes a timestamp, bumps counters
//! and makes one non-blocking send: nothing allocates and nothing waits.

use super::conn::{Conn, SendOutcome};
use super::flow::{next_due, FlowShape, Pacer, MAX_SIZE};
use super::payload::Stamp;
use super::shared::{lock, Counters, Shared};
use plenary_turn::stun::{attr, channel_data, method, Class, MessageWriter};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Frames sent before the task yields, so setup and readers on the same thread keep up.
const MAX_BATCH: usize = 2048;
/// Room for TURN framing around the largest payload.
const BUF_LEN: usize = MAX_SIZE + 128;

/// One flow as the sender sees it.
pub struct SendFlow {
    pub id: u32,
    pub conn: Arc<Conn>,
    /// `Some`: ChannelData on this channel; `None`: Send indications to `peer`.
    pub channel: Option<u16>,
    pub peer: SocketAddr,
}

struct Slot {
    flow: SendFlow,
    seq: u64,
    stream: bool,
}

pub struct Sender {
    shape: FlowShape,
    shared: Arc<Shared>,
    pacer: Pacer,
    slots: Vec<Slot>,
    frame: Box<[u8]>,
    payload: Box<[u8]>,
    rng: u64,
}

impl Sender {
    pub fn new(shape: FlowShape, shared: Arc<Shared>, capacity: usize) -> Self {
        Sender {
            shape,
            shared,
            pacer: Pacer::with_capacity(capacity),
            slots: Vec::with_capacity(capacity),
            frame: vec![0; BUF_LEN].into_boxed_slice(),
            payload: vec![0; MAX_SIZE].into_boxed_slice(),
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn add(&mut self, flow: SendFlow) {
        let now = self.shared.now_us();
        let slot = self.slots.len() as u32;
        self.pacer
            .schedule(slot, now + self.shape.phase_us(flow.id));
        let stream = flow.conn.is_stream();
        self.slots.push(Slot {
            flow,
            seq: 0,
            stream,
        });
    }

    /// Runs until `stop`. New flows arrive on `add`.
    pub async fn run(
        mut self,
        mut add: mpsc::UnboundedReceiver<SendFlow>,
        mut stop: watch::Receiver<bool>,
    ) {
        let interval = self.shape.frame_interval_us;
        loop {
            while let Ok(flow) = add.try_recv() {
                self.add(flow);
            }
            let shared = self.shared.clone();
            let now = shared.now_us();
            let epoch = shared.epoch();
            let mut batch = 0;
            {
                let mut lag = lock(&shared.lag);
                while let Some((slot, due)) = self.pacer.pop_due(now) {
                    lag.record(now - due);
                    for _ in 0..self.shape.packets_per_frame {
                        self.send_one(slot as usize, epoch);
                    }
                    self.pacer.schedule(slot, next_due(due, interval, now));
                    batch += 1;
                    if batch >= MAX_BATCH {
                        break;
                    }
                }
            }
            if batch >= MAX_BATCH {
                tokio::task::yield_now().await;
                continue;
            }
            let wait = self
                .pacer
                .next_due()
                .map_or(Duration::from_millis(100), |due| {
                    Duration::from_micros(due.saturating_sub(self.shared.now_us()))
                });
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                Some(flow) = add.recv() => self.add(flow),
                _ = stop.changed() => return,
            }
        }
    }

    fn next_txid(&mut self) -> [u8; 12] {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let mut t = [0u8; 12];
        t[..8].copy_from_slice(&self.rng.to_be_bytes());
        t[8..].copy_from_slice(&(self.rng >> 17).to_be_bytes()[..4]);
        t
    }

    fn send_one(&mut self, slot: usize, epoch: u32) {
        let size = self.shape.size;
        let sent_us = self.shared.now_us();
        let (id, seq, channel, peer, stream) = {
            let s = &mut self.slots[slot];
            s.seq += 1;
            (s.flow.id, s.seq - 1, s.flow.channel, s.flow.peer, s.stream)
        };
        let stamp = Stamp {
            flow: id,
            epoch,
            seq,
            sent_us,
        };
        let len = match channel {
            Some(ch) => {
                // Payload in place after the 4-byte header; padding bytes stay zero.
                stamp.write(&mut self.frame[4..4 + size]);
                let mut header = [0u8; 4];
                channel_data::write_header(&mut header, ch, size as u16);
                self.frame[..4].copy_from_slice(&header);
                4 + size
                    + if stream {
                        channel_data::stream_padding(size)
                    } else {
                        0
                    }
            }
            None => {
                stamp.write(&mut self.payload[..size]);
                let txid = self.next_txid();
                let written =
                    MessageWriter::new(&mut self.frame, method::SEND, Class::Indication, &txid)
                        .and_then(|mut w| {
                            w.xor_address(attr::XOR_PEER_ADDRESS, peer)?;
                            w.attr(attr::DATA, &self.payload[..size])?;
                            Ok(w.finish())
                        });
                match written {
                    Ok(n) => n,
                    Err(_) => return,
                }
            }
        };
        let outcome = self.slots[slot].flow.conn.try_send(&self.frame[..len]);
        let c = &self.shared.counters;
        let Some(mut flow) = self.shared.flow(id) else {
            return;
        };
        match outcome {
            SendOutcome::Sent => {
                flow.on_sent(epoch);
                Counters::add(&c.sent, 1);
            }
            SendOutcome::Full => {
                flow.on_send_drop(epoch);
                Counters::add(&c.local_drops, 1);
            }
            SendOutcome::Failed => {
                // The packet is lost to the server side (e.g. it went away): count it as
                // sent so it shows up as loss, not as a probe problem.
                flow.on_sent(epoch);
                Counters::add(&c.sent, 1);
                Counters::add(&c.send_errors, 1);
            }
        }
    }
}

//! What a forwarded video stream keeps to answer NACKs (RFC 4585) with RFC 4588
//! retransmissions: the last packets sent, by sequence number, sharing the publisher's
//! payload `Arc` (no copy), and the resends asked for but not yet sent.

use std::collections::VecDeque;
use std::sync::Arc;

/// Packets kept per video stream: about 1 s at 4 Mbit/s of 1000-byte packets, more than
/// a browser's NACK window for the RTTs a relay sees (str0m keeps 1000).
pub(crate) const RING: usize = 512;
/// Resends queued at most; a NACK storm beyond this is dropped (the receiver asks again
/// or asks for a keyframe).
pub(crate) const MAX_PENDING: usize = 256;

#[derive(Clone)]
pub(crate) struct Sent {
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub pt: u8,
    pub video_orientation: Option<u8>,
    pub payload: Arc<[u8]>,
}

/// A ring indexed by `seq % RING`; a slot answers only for the sequence number it holds.
pub(crate) struct RtxRing {
    slots: Box<[Option<Sent>]>,
}

impl Default for RtxRing {
    fn default() -> Self {
        Self {
            slots: vec![None; RING].into_boxed_slice(),
        }
    }
}

impl RtxRing {
    pub(crate) fn record(&mut self, sent: Sent) {
        let i = usize::from(sent.seq) % RING;
        self.slots[i] = Some(sent);
    }

    pub(crate) fn get(&self, seq: u16) -> Option<&Sent> {
        self.slots[usize::from(seq) % RING]
            .as_ref()
            .filter(|s| s.seq == seq)
    }
}

/// Resends asked for: (stream index, original sequence number). Allocated once.
pub(crate) struct Pending {
    queue: VecDeque<(usize, u16)>,
    pub dropped: u64,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            queue: VecDeque::with_capacity(MAX_PENDING),
            dropped: 0,
        }
    }
}

impl Pending {
    pub(crate) fn push(&mut self, stream: usize, seq: u16) {
        if self.queue.contains(&(stream, seq)) {
            return; // asked twice before we answered: one resend is enough
        }
        if self.queue.len() == MAX_PENDING {
            self.dropped += 1;
            return;
        }
        self.queue.push_back((stream, seq));
    }

    pub(crate) fn pop(&mut self) -> Option<(usize, u16)> {
        self.queue.pop_front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Expands one NACK FCI (PID, BLP; RFC 4585 §6.2.1) into the sequence numbers it lists.
pub(crate) fn nack_seqs(pid: u16, blp: u16) -> impl Iterator<Item = u16> {
    std::iter::once(pid).chain(
        (0..16)
            .filter(move |i| blp & (1 << i) != 0)
            .map(move |i| pid.wrapping_add(i + 1)),
    )
}

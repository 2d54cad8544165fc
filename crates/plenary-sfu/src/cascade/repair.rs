//! Hop-by-hop loss repair on a cascade link (docs/decisions/0004-cascade.md): the owner of a
//! track keeps the video packets it sent over the link, per layer; the receiving node asks for
//! the holes it sees in a layer's sequence numbers with a `Nack`, and the owner sends those
//! packets again. A subscriber's own NACK is then answered by its node as usual, from what the
//! repair delivered.

use plenary_cascade::wire::MAX_NACK_SEQS;

use crate::media::model::Packet;

/// Packets kept per layer sent on a link: about 2 s of a 2.5 Mbit/s layer. A power of two
/// that divides 2^16, so a 16-bit sequence number finds its slot.
const SENT_RING: usize = 512;

/// The video packets of one layer last sent on the link, by sequence number.
pub(super) struct SentRing {
    slots: Box<[Option<Packet>]>,
}

impl SentRing {
    pub(super) fn new() -> Self {
        Self {
            slots: (0..SENT_RING).map(|_| None).collect(),
        }
    }

    /// Keeps a copy of a sent packet (the payload is shared, not copied).
    pub(super) fn keep(&mut self, packet: &Packet) {
        self.slots[packet.seq as usize % SENT_RING] = Some(packet.clone());
    }

    /// The packet sent with these low 16 bits of its sequence number, if still kept.
    pub(super) fn find(&self, seq: u16) -> Option<&Packet> {
        self.slots[usize::from(seq) % SENT_RING]
            .as_ref()
            .filter(|p| p.seq as u16 == seq)
    }
}

/// What repair did since the driver last read it (for metrics).
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RepairStats {
    /// Sequence numbers this side asked the far side for.
    pub nacked: u64,
    /// Packets sent again because the far side asked.
    pub resent: u64,
    /// Asked-for packets no longer kept (or never sent on the link).
    pub missed: u64,
}

/// The sequence numbers missing between the last one received and a newer one, if the hole
/// is small enough to repair (a longer one is a layer that was off the link, or an outage
/// that a keyframe heals better).
pub(super) fn holes(prev: u64, seq: u64) -> Option<Vec<u16>> {
    let missing = seq.checked_sub(prev)?.checked_sub(1)?;
    if missing == 0 || missing > MAX_NACK_SEQS as u64 {
        return None;
    }
    Some((prev + 1..seq).map(|s| s as u16).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    fn packet(seq: u64) -> Packet {
        Packet {
            ssrc: 1,
            pt: 96.into(),
            seq,
            ts: 0,
            marker: false,
            payload: Arc::from(&[seq as u8][..]),
            received: Instant::now(),
            audio_level: None,
            voice_activity: None,
            video_orientation: None,
        }
    }

    #[test]
    fn the_ring_finds_what_it_kept_until_overwritten() {
        let mut ring = SentRing::new();
        for seq in 65_530..65_540u64 {
            ring.keep(&packet(seq));
        }
        // Across the 16-bit wrap: 65_536 is sent as 0.
        assert_eq!(ring.find(0).map(|p| p.seq), Some(65_536));
        assert_eq!(ring.find(65_531).map(|p| p.seq), Some(65_531));
        assert!(ring.find(100).is_none(), "never sent");
        ring.keep(&packet(65_531 + SENT_RING as u64));
        assert!(ring.find(65_531).is_none(), "overwritten by a newer packet");
    }

    #[test]
    fn holes_are_small_gaps_only() {
        assert_eq!(holes(10, 11), None, "in order");
        assert_eq!(holes(10, 10), None, "duplicate");
        assert_eq!(holes(10, 9), None, "late packet");
        assert_eq!(holes(10, 13), Some(vec![11, 12]));
        assert_eq!(holes(65_535, 65_538), Some(vec![0, 1]), "wraps to 16 bits");
        assert_eq!(
            holes(0, MAX_NACK_SEQS as u64 + 1).map(|h| h.len()),
            Some(MAX_NACK_SEQS)
        );
        assert_eq!(holes(0, MAX_NACK_SEQS as u64 + 2), None, "too long a hole");
    }
}

//! The 16-byte stamp every synthetic packet carries right after its codec header (the VP8
//! descriptor and payload header, or the Opus TOC byte). Senders and receivers run in one
//! process on one clock, so the stamp's send time gives the exact one-way delay through the
//! server; the layer and frame rate let a receiver judge a stream whose layer the server
//! chose.

/// Bytes of a stamp.
pub const LEN: usize = 16;
const MAGIC: [u8; 2] = *b"PL";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Audio,
    Camera,
    Screen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub kind: Kind,
    /// Simulcast layer (0 = low) of a video packet; 0 for audio.
    pub layer: u8,
    /// Target frames per second of the stream (0 for audio).
    pub fps: u8,
    /// Which synthetic participant sent it.
    pub source: u32,
    /// Microseconds since the probe's epoch when the packet was handed to the stack.
    pub sent_us: u64,
}

impl Stamp {
    pub fn write(&self, out: &mut [u8; LEN]) {
        out[..2].copy_from_slice(&MAGIC);
        let kind = match self.kind {
            Kind::Audio => 0u8,
            Kind::Camera => 1,
            Kind::Screen => 2,
        };
        out[2] = kind << 4 | (self.layer & 0x0f);
        out[3] = self.fps;
        out[4..8].copy_from_slice(&self.source.to_be_bytes());
        out[8..16].copy_from_slice(&self.sent_us.to_be_bytes());
    }

    pub fn to_bytes(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        self.write(&mut b);
        b
    }

    /// Reads a stamp at the start of `b`; `None` for anything the probe did not send.
    pub fn parse(b: &[u8]) -> Option<Stamp> {
        let b = b.get(..LEN)?;
        if b[..2] != MAGIC {
            return None;
        }
        let kind = match b[2] >> 4 {
            0 => Kind::Audio,
            1 => Kind::Camera,
            2 => Kind::Screen,
            _ => return None,
        };
        Some(Stamp {
            kind,
            layer: b[2] & 0x0f,
            fps: b[3],
            source: u32::from_be_bytes(b[4..8].try_into().ok()?),
            sent_us: u64::from_be_bytes(b[8..16].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_bytes() {
        let s = Stamp {
            kind: Kind::Screen,
            layer: 2,
            fps: 30,
            source: 0xdead_beef,
            sent_us: 123_456_789_012,
        };
        assert_eq!(Stamp::parse(&s.to_bytes()), Some(s));
        assert_eq!(Stamp::parse(&s.to_bytes()[..15]), None);
        let mut bad = s.to_bytes();
        bad[0] = b'X';
        assert_eq!(Stamp::parse(&bad), None);
        bad = s.to_bytes();
        bad[2] = 0x70;
        assert_eq!(Stamp::parse(&bad), None);
        assert_eq!(Stamp::parse(&[]), None);
    }
}

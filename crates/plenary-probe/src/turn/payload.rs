//! The probe's packet payload: who sent it, which window, which number, and when. The rest
//! of the payload is zero filler up to the flow's packet size.
//!
//! ```text
//!  0      4      8     12              20              28
//!  | magic| flow |epoch|      seq      |  sent (µs)    | filler...
//! ```

/// "PLPB": lets receivers drop stray datagrams that are not ours.
pub const MAGIC: [u8; 4] = *b"PLPB";
pub const HEADER_LEN: usize = 28;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub flow: u32,
    pub epoch: u32,
    pub seq: u64,
    /// Send time, µs since the probe started (same clock as the receiver's).
    pub sent_us: u64,
}

impl Stamp {
    /// Writes the header into the first bytes of `payload` (which must hold
    /// [`HEADER_LEN`]); the filler is left as it is.
    pub fn write(&self, payload: &mut [u8]) -> bool {
        let Some(h) = payload.get_mut(..HEADER_LEN) else {
            return false;
        };
        h[0..4].copy_from_slice(&MAGIC);
        h[4..8].copy_from_slice(&self.flow.to_be_bytes());
        h[8..12].copy_from_slice(&self.epoch.to_be_bytes());
        h[12..20].copy_from_slice(&self.seq.to_be_bytes());
        h[20..28].copy_from_slice(&self.sent_us.to_be_bytes());
        true
    }

    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let h: &[u8; HEADER_LEN] = payload.first_chunk()?;
        if h[0..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        Some(Stamp {
            flow: u32_at(4),
            epoch: u32_at(8),
            seq: u64_at(12),
            sent_us: u64_at(20),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_strangers() {
        let s = Stamp {
            flow: 7,
            epoch: 3,
            seq: u64::MAX - 1,
            sent_us: 123_456_789_012,
        };
        let mut buf = [0xaa; 160];
        assert!(s.write(&mut buf));
        assert_eq!(Stamp::read(&buf), Some(s));
        assert_eq!(buf[HEADER_LEN], 0xaa, "filler untouched");
        assert_eq!(Stamp::read(&buf[..HEADER_LEN - 1]), None);
        buf[0] = b'X';
        assert_eq!(Stamp::read(&buf), None);
        assert!(!s.write(&mut [0u8; 10]));
    }
}

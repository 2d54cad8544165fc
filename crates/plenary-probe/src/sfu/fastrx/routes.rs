//! Which received SSRC feeds which track: the SSRCs the server declared in SDP (str0m
//! reads the `a=ssrc` and `a=ssrc-group:FID` lines even when it never sees the RTP), or the
//! MID header extension for a server that declares none. An RTX SSRC (RFC 4588) points to
//! the stream it repairs, so a retransmission counts for the original packet.

use super::nack::NackTracker;
use super::twcc::extend_seq;
use crate::sfu::recv::track::TrackKind;
use str0m::media::Mid;

/// One received stream as signalled: its SSRC, the m-line it belongs to and its RTX SSRC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub ssrc: u32,
    pub mid: Mid,
    pub kind: TrackKind,
    pub rtx: Option<u32>,
    /// The receiver asks for retransmissions: str0m NACKs only streams with an RTX SSRC
    /// (for a MID-mapped stream: whose codec has an RTX payload type).
    pub nack: bool,
}

pub struct Route {
    pub ssrc: u32,
    pub mid: Mid,
    pub kind: TrackKind,
    /// For an RTX SSRC: the route of the stream it repairs.
    pub repairs: Option<usize>,
    /// The peer's receiver for `mid`, once looked up.
    pub receiver: Option<usize>,
    /// Highest extended sequence number delivered (main streams).
    pub highest: Option<u64>,
    pub nack: Option<NackTracker>,
}

/// The routes of one peer connection. A handful per peer: a linear scan with the last
/// hit first is faster than hashing.
#[derive(Default)]
pub struct Routes {
    pub list: Vec<Route>,
    last: usize,
    /// Some stream asks for retransmissions (so the receiver wants an RTT).
    pub any_nack: bool,
    /// Some stream may have packets due a NACK: set when a gap opens, cleared by whoever
    /// finds none left. Saves walking every stream's tracker per packet.
    pub nack_armed: bool,
}

impl Routes {
    pub fn find(&mut self, ssrc: u32) -> Option<usize> {
        if self.list.get(self.last).is_some_and(|r| r.ssrc == ssrc) {
            return Some(self.last);
        }
        let i = self.list.iter().position(|r| r.ssrc == ssrc)?;
        self.last = i;
        Some(i)
    }

    /// Adds what is new in `s` (a stream and its RTX SSRC); known SSRCs are kept as they
    /// are, so their sequence state survives a renegotiation.
    pub fn learn(&mut self, s: StreamInfo) {
        let main = match self.find(s.ssrc) {
            Some(i) => i,
            None => {
                self.list.push(Route {
                    ssrc: s.ssrc,
                    mid: s.mid,
                    kind: s.kind,
                    repairs: None,
                    receiver: None,
                    highest: None,
                    nack: s.nack.then(NackTracker::default),
                });
                self.any_nack |= s.nack;
                self.list.len() - 1
            }
        };
        if let Some(rtx) = s.rtx.filter(|&r| r != s.ssrc) {
            if self.find(rtx).is_none() {
                self.list.push(Route {
                    ssrc: rtx,
                    mid: s.mid,
                    kind: s.kind,
                    repairs: Some(main),
                    receiver: None,
                    highest: None,
                    nack: None,
                });
            }
        }
    }

    /// The main stream's route for `mid`, for an RTX SSRC found through the MID extension.
    pub fn main_of_mid(&self, mid: Mid) -> Option<usize> {
        self.list
            .iter()
            .position(|r| r.mid == mid && r.repairs.is_none())
    }

    /// Adds an RTX SSRC repairing route `main`.
    pub fn learn_rtx(&mut self, ssrc: u32, main: usize) {
        if self.find(ssrc).is_some() || main >= self.list.len() {
            return;
        }
        let (mid, kind) = (self.list[main].mid, self.list[main].kind);
        self.list.push(Route {
            ssrc,
            mid,
            kind,
            repairs: Some(main),
            receiver: None,
            highest: None,
            nack: None,
        });
    }

    /// A packet of route `i` with SRTP index `index` (its extended sequence number) and
    /// `payload`: the route that measures it, its extended sequence number and where the
    /// media payload starts (after an RTX packet's original sequence number). None for an
    /// RTX packet that carries only padding.
    pub fn resolve(&mut self, i: usize, index: u64, payload: &[u8]) -> Option<(usize, u64, usize)> {
        let (main, seq, skip) = match self.list[i].repairs {
            None => (i, index, 0),
            Some(main) => {
                let osn = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]);
                (main, extend_seq(self.list[main].highest, osn), 2)
            }
        };
        let r = &mut self.list[main];
        if r.highest.is_none_or(|h| seq > h) {
            r.highest = Some(seq);
        }
        if let Some(n) = r.nack.as_mut() {
            n.on_packet(seq);
            self.nack_armed |= n.has_pending();
        }
        Some((main, seq, skip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(ssrc: u32, rtx: Option<u32>) -> StreamInfo {
        StreamInfo {
            ssrc,
            mid: Mid::from("1"),
            kind: TrackKind::Video,
            rtx,
            nack: rtx.is_some(),
        }
    }

    #[test]
    fn rtx_counts_for_the_original_packet() {
        let mut r = Routes::default();
        r.learn(info(100, Some(200)));
        r.learn(info(100, Some(200))); // a renegotiation repeats it
        assert_eq!(r.list.len(), 2);
        let (main, rtx) = (r.find(100).unwrap(), r.find(200).unwrap());
        // Main packets 65534, 65535 and 65537 (index across the wrap), then the RTX of
        // 65536 whose 16-bit OSN is 0.
        for index in [65_534, 65_535, 65_537] {
            assert_eq!(r.resolve(main, index, b"xx"), Some((main, index, 0)));
        }
        assert!(r.list[main].nack.as_ref().unwrap().has_pending());
        assert_eq!(r.resolve(rtx, 7, &[0, 0, 9]), Some((main, 65_536, 2)));
        assert!(!r.list[main].nack.as_ref().unwrap().has_pending());
        // Padding on the RTX SSRC has no original sequence number.
        assert_eq!(r.resolve(rtx, 8, &[]), None);
    }

    #[test]
    fn a_mid_mapped_rtx_stream_repairs_its_main() {
        let mut r = Routes::default();
        r.learn(info(5, None));
        let main = r.main_of_mid(Mid::from("1")).unwrap();
        r.learn_rtx(6, main);
        let rtx = r.find(6).unwrap();
        assert_eq!(r.list[rtx].repairs, Some(main));
        assert!(r.list[main].nack.is_none(), "no RTX signalled: no NACKs");
    }
}

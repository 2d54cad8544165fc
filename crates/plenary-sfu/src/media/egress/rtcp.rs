//! The RTCP the fast path reads and writes. Reads (after SRTCP): generic NACK
//! (RFC 4585 §6.2.1), transport-wide feedback (draft-holmer-rmcat-transport-wide-cc-
//! extensions-01 §3.1), report blocks of RR/SR (RFC 3550 §6.4) and XR receiver reference
//! times (RFC 3611 §4.4). Writes: sender reports (RFC 3550 §6.4.1) and the XR DLRR that
//! answers a reference time (RFC 3611 §4.5), which gives the receiver its round trip. Walks
//! the compound packet in place, no allocation.

use std::time::Instant;

const SR: u8 = 200;
const RR: u8 = 201;
const RTPFB: u8 = 205;
const XR: u8 = 207;
const FMT_NACK: u8 = 1;
const FMT_TWCC: u8 = 15;
const BT_RRTR: u8 = 4;
const BT_DLRR: u8 = 5;

/// Length of a sender report without report blocks.
pub(crate) const SR_LEN: usize = 28;
/// Receivers whose reference times wait for an answer at once. A subscriber's transport
/// has a few receiver SSRCs (a browser's, or a probe's str0m beside its fast path), and
/// each needs its own DLRR item or its RTT never comes.
pub(crate) const MAX_REFERENCE_TIMES: usize = 4;

/// Length of an XR packet with one DLRR block of `items` items.
pub(crate) const fn dlrr_len(items: usize) -> usize {
    12 + 12 * items
}

/// One item of interest in a compound RTCP packet.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Feedback<'a> {
    /// One FCI of a generic NACK.
    Nack {
        media_ssrc: u32,
        pid: u16,
        blp: u16,
    },
    Twcc(Twcc<'a>),
    /// A reception report block about `ssrc`: the receiver knows this SSRC.
    Report {
        ssrc: u32,
    },
    /// A receiver reference time from `ssrc`: `lrr` is the middle 32 bits of its NTP
    /// timestamp, echoed in the DLRR answer.
    Rrtr {
        ssrc: u32,
        lrr: u32,
    },
}

/// Calls `f` for every NACK FCI, TWCC feedback, report block and receiver reference time
/// in `buf`. Stops at the first malformed packet and returns false then.
pub(crate) fn parse_compound(mut buf: &[u8], mut f: impl FnMut(Feedback<'_>)) -> bool {
    while buf.len() >= 4 {
        if buf[0] >> 6 != 2 {
            return false;
        }
        let count = buf[0] & 0x1f;
        let pt = buf[1];
        let len = 4 * (usize::from(u16::from_be_bytes([buf[2], buf[3]])) + 1);
        let Some(pkt) = buf.get(..len) else {
            return false;
        };
        buf = &buf[len..];
        match pt {
            SR | RR => {
                let blocks_at = if pt == SR { 28 } else { 8 };
                for i in 0..usize::from(count) {
                    let at = blocks_at + 24 * i;
                    let Some(b) = pkt.get(at..at + 24) else {
                        return false;
                    };
                    f(Feedback::Report { ssrc: be32(b, 0) });
                }
            }
            RTPFB if pkt.len() >= 12 => {
                let media_ssrc = be32(pkt, 8);
                match count {
                    FMT_NACK => {
                        for fci in pkt[12..].chunks_exact(4) {
                            f(Feedback::Nack {
                                media_ssrc,
                                pid: be16(fci, 0),
                                blp: be16(fci, 2),
                            });
                        }
                    }
                    FMT_TWCC => match Twcc::parse(&pkt[12..]) {
                        Some(t) => f(Feedback::Twcc(t)),
                        None => return false,
                    },
                    _ => {}
                }
            }
            XR if pkt.len() >= 8 => {
                let ssrc = be32(pkt, 4);
                let mut blocks = &pkt[8..];
                while blocks.len() >= 4 {
                    let len = 4 * (usize::from(be16(blocks, 2)) + 1);
                    let Some(block) = blocks.get(..len) else {
                        return false;
                    };
                    if block[0] == BT_RRTR && len == 12 {
                        let ntp = u64::from(be32(block, 4)) << 32 | u64::from(be32(block, 8));
                        f(Feedback::Rrtr {
                            ssrc,
                            lrr: (ntp >> 16) as u32,
                        });
                    }
                    blocks = &blocks[len..];
                }
            }
            _ => {}
        }
    }
    true
}

/// One transport-wide feedback message, parsed lazily.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Twcc<'a> {
    pub base_seq: u16,
    pub status_count: u16,
    /// Multiples of 64 ms in the receiver's time base (24 bits).
    pub reference_time: u32,
    /// Packet chunks, then receive deltas, then padding.
    body: &'a [u8],
    /// Offset of the first receive delta in `body`.
    deltas_at: usize,
}

impl<'a> Twcc<'a> {
    fn parse(fci: &'a [u8]) -> Option<Self> {
        if fci.len() < 8 {
            return None;
        }
        let mut t = Twcc {
            base_seq: be16(fci, 0),
            status_count: be16(fci, 2),
            reference_time: u32::from_be_bytes([0, fci[4], fci[5], fci[6]]),
            // fci[7], the feedback packet count, is not needed: windows span messages.
            body: &fci[8..],
            deltas_at: 0,
        };
        // Walk the chunks once to find where the deltas begin.
        let mut seen = 0usize;
        let mut at = 0;
        while seen < usize::from(t.status_count) {
            let c = be16(t.body.get(at..at + 2)?, 0);
            seen += chunk_len(c);
            at += 2;
        }
        t.deltas_at = at;
        Some(t)
    }

    /// Calls `f(seq, arrival)` for every packet the feedback covers, in order. `arrival` is
    /// µs since the receiver's time base, or `None` for a packet reported lost. Returns
    /// false if the deltas run short (the packets before that were reported).
    pub(crate) fn for_each(&self, mut f: impl FnMut(u16, Option<i64>)) -> bool {
        let mut arrival = i64::from(self.reference_time) * 64_000;
        let mut d = self.deltas_at;
        let mut at = 0;
        let mut n: u16 = 0;
        while n < self.status_count {
            let c = be16(&self.body[at..at + 2], 0);
            at += 2;
            for i in 0..chunk_len(c) {
                if n == self.status_count {
                    break;
                }
                let seq = self.base_seq.wrapping_add(n);
                n += 1;
                match chunk_symbol(c, i) {
                    1 => {
                        let Some(&b) = self.body.get(d) else {
                            return false;
                        };
                        d += 1;
                        arrival += i64::from(b) * 250;
                        f(seq, Some(arrival));
                    }
                    2 => {
                        let Some(b) = self.body.get(d..d + 2) else {
                            return false;
                        };
                        d += 2;
                        arrival += i64::from(i16::from_be_bytes([b[0], b[1]])) * 250;
                        f(seq, Some(arrival));
                    }
                    _ => f(seq, None),
                }
            }
        }
        true
    }
}

/// Statuses one packet chunk covers.
fn chunk_len(c: u16) -> usize {
    if c & 0x8000 == 0 {
        usize::from(c & 0x1fff) // run length
    } else if c & 0x4000 == 0 {
        14 // 1-bit symbols
    } else {
        7 // 2-bit symbols
    }
}

/// Symbol `i` of a chunk: 0 not received, 1 small delta, 2 large or negative delta.
fn chunk_symbol(c: u16, i: usize) -> u16 {
    if c & 0x8000 == 0 {
        (c >> 13) & 0x3
    } else if c & 0x4000 == 0 {
        (c >> (13 - i)) & 0x1
    } else {
        (c >> (12 - 2 * i)) & 0x3
    }
}

/// Sender information of one stream (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SenderInfo {
    pub ssrc: u32,
    /// NTP timestamp, 32.32 fixed point seconds since 1900.
    pub ntp: u64,
    pub rtp_ts: u32,
    pub packets: u32,
    pub octets: u32,
}

/// Writes a sender report without report blocks into `buf` and returns its length
/// ([`SR_LEN`]); `buf` must hold it.
pub(crate) fn write_sr(buf: &mut [u8], s: &SenderInfo) -> usize {
    buf[0] = 0x80; // V=2, P=0, RC=0
    buf[1] = SR;
    buf[2..4].copy_from_slice(&((SR_LEN / 4 - 1) as u16).to_be_bytes());
    buf[4..8].copy_from_slice(&s.ssrc.to_be_bytes());
    buf[8..16].copy_from_slice(&s.ntp.to_be_bytes());
    buf[16..20].copy_from_slice(&s.rtp_ts.to_be_bytes());
    buf[20..24].copy_from_slice(&s.packets.to_be_bytes());
    buf[24..28].copy_from_slice(&s.octets.to_be_bytes());
    SR_LEN
}

/// One DLRR item (RFC 3611 §4.5): the answer to receiver `ssrc`'s reference time `lrr`,
/// `dlrr` after it arrived (both in 1/65536 s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Dlrr {
    pub ssrc: u32,
    pub lrr: u32,
    pub dlrr: u32,
}

/// Writes an XR packet from `sender` with one DLRR block of `items` into `buf` and
/// returns its length ([`dlrr_len`]); `buf` must hold it.
pub(crate) fn write_dlrr(buf: &mut [u8], sender: u32, items: &[Dlrr]) -> usize {
    let len = dlrr_len(items.len());
    buf[0] = 0x80;
    buf[1] = XR;
    buf[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
    buf[4..8].copy_from_slice(&sender.to_be_bytes());
    buf[8..10].copy_from_slice(&[BT_DLRR, 0]);
    buf[10..12].copy_from_slice(&((3 * items.len()) as u16).to_be_bytes());
    for (d, out) in items.iter().zip(buf[12..len].chunks_exact_mut(12)) {
        out[..4].copy_from_slice(&d.ssrc.to_be_bytes());
        out[4..8].copy_from_slice(&d.lrr.to_be_bytes());
        out[8..12].copy_from_slice(&d.dlrr.to_be_bytes());
    }
    len
}

/// Reference times received and not yet answered, one per receiver SSRC: a newer one
/// from the same receiver replaces its older, and when all slots are taken the oldest
/// goes. Fixed size, so a hostile peer sending many SSRCs holds no more.
#[derive(Debug, Default)]
pub(crate) struct ReferenceTimes {
    slots: [Option<(u32, u32, Instant)>; MAX_REFERENCE_TIMES],
}

impl ReferenceTimes {
    /// Receiver `ssrc` sent reference time `lrr`, which arrived at `at`.
    pub(crate) fn note(&mut self, ssrc: u32, lrr: u32, at: Instant) {
        let slot = match self
            .slots
            .iter()
            .position(|s| matches!(s, Some((x, ..)) if *x == ssrc))
        {
            Some(i) => i,
            None => match self.slots.iter().position(Option::is_none) {
                Some(i) => i,
                None => (0..MAX_REFERENCE_TIMES)
                    .min_by_key(|&i| self.slots[i].map(|(.., t)| t))
                    .unwrap_or(0),
            },
        };
        self.slots[slot] = Some((ssrc, lrr, at));
    }

    /// Takes every waiting reference time as its DLRR item answered at `now` into `out`;
    /// returns how many.
    pub(crate) fn answer(&mut self, now: Instant, out: &mut [Dlrr; MAX_REFERENCE_TIMES]) -> usize {
        let mut n = 0;
        for (ssrc, lrr, at) in self.slots.iter_mut().filter_map(Option::take) {
            // Delay since the reference time came, in 1/65536 s.
            let waited = now.saturating_duration_since(at).as_micros() as u64;
            out[n] = Dlrr {
                ssrc,
                lrr,
                dlrr: (waited * 65_536 / 1_000_000) as u32,
            };
            n += 1;
        }
        n
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

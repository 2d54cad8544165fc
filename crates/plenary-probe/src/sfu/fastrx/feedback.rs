//! RTCP feedback a receiving browser sends, written byte by byte into a caller's buffer:
//! transport-wide congestion control feedback (RTPFB FMT 15,
//! draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1), generic NACK (RTPFB FMT 1,
//! RFC 4585 §6.2.1), PLI (PSFB FMT 1, RFC 4585 §6.3.1), and the receiver reference time
//! report whose DLRR answer gives a receiver its RTT (RFC 3611 §4.4, §4.5). Pure, no
//! allocation after construction.

/// RTCP packet types (RFC 4585 §6.1).
const RTPFB: u8 = 205;
const PSFB: u8 = 206;
const FMT_NACK: u8 = 1;
const FMT_TWCC: u8 = 15;
const FMT_PLI: u8 = 1;

/// TWCC receive deltas are multiples of 250 µs; the reference time of 64 ms.
const DELTA_US: u64 = 250;
const REF_US: u64 = 64_000;
/// Statuses one report may carry (a 100 ms window is far smaller).
pub const MAX_STATUSES: usize = 2048;

/// Packet status symbols (§3.1.1).
const NOT_RECEIVED: u8 = 0;
const SMALL: u8 = 1;
const LARGE: u8 = 2;

/// The fixed part of every RTCP feedback packet: V=2, FMT, PT, length in words minus one,
/// sender SSRC and media source SSRC.
fn write_common(out: &mut [u8], fmt: u8, pt: u8, len: usize, sender: u32, media: u32) {
    out[0] = 0x80 | fmt;
    out[1] = pt;
    out[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
    out[4..8].copy_from_slice(&sender.to_be_bytes());
    out[8..12].copy_from_slice(&media.to_be_bytes());
}

/// Writes a PLI for `media`; returns its length (12) or None if `out` is too short.
pub fn write_pli(out: &mut [u8], sender: u32, media: u32) -> Option<usize> {
    let out = out.get_mut(..12)?;
    write_common(out, FMT_PLI, PSFB, 12, sender, media);
    Some(12)
}

/// Writes a generic NACK for `media` asking for `missing` (extended sequence numbers in
/// ascending order), packed as PID + BLP pairs. Returns (bytes written, sequence numbers
/// covered): what does not fit in `out` is left for another packet.
pub fn write_nack(out: &mut [u8], sender: u32, media: u32, missing: &[u64]) -> (usize, usize) {
    if out.len() < 16 || missing.is_empty() {
        return (0, 0);
    }
    let mut at = 12;
    let mut i = 0;
    while i < missing.len() && at + 4 <= out.len() {
        let pid = missing[i];
        let mut blp = 0u16;
        i += 1;
        while i < missing.len() && missing[i] > pid && missing[i] - pid <= 16 {
            blp |= 1 << (missing[i] - pid - 1);
            i += 1;
        }
        out[at..at + 2].copy_from_slice(&(pid as u16).to_be_bytes());
        out[at + 2..at + 4].copy_from_slice(&blp.to_be_bytes());
        at += 4;
    }
    write_common(out, FMT_NACK, RTPFB, at, sender, media);
    (at, i)
}

/// RTCP extended report (RFC 3611).
const XR: u8 = 207;
const BT_RRTR: u8 = 4;
const BT_DLRR: u8 = 5;

/// Writes an XR packet with one receiver reference time block carrying `ntp` (64-bit NTP
/// wall clock); returns its length (20) or None if `out` is too short.
pub fn write_rrtr(out: &mut [u8], sender: u32, ntp: u64) -> Option<usize> {
    let out = out.get_mut(..20)?;
    out[..4].copy_from_slice(&[0x80, XR, 0, 4]);
    out[4..8].copy_from_slice(&sender.to_be_bytes());
    out[8..12].copy_from_slice(&[BT_RRTR, 0, 0, 2]);
    out[12..20].copy_from_slice(&ntp.to_be_bytes());
    Some(20)
}

/// The (LRR, DLRR) a server sent back for receiver `ssrc`'s reference time, found in a
/// compound RTCP packet's XR DLRR blocks; both in 1/65536 s.
pub fn find_dlrr(rtcp: &[u8], ssrc: u32) -> Option<(u32, u32)> {
    let word = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let mut at = 0;
    while at + 4 <= rtcp.len() {
        let len = 4 * (usize::from(u16::from_be_bytes([rtcp[at + 2], rtcp[at + 3]])) + 1);
        let packet = rtcp.get(at..at + len)?;
        if packet[1] == XR {
            let mut b = 8;
            while b + 4 <= packet.len() {
                let words = usize::from(u16::from_be_bytes([packet[b + 2], packet[b + 3]]));
                if packet[b] == BT_DLRR {
                    for item in (b + 4..b + 4 + 4 * words).step_by(12) {
                        if word(packet, item)? == ssrc {
                            return Some((word(packet, item + 4)?, word(packet, item + 8)?));
                        }
                    }
                }
                b += 4 + 4 * words;
            }
        }
        at += len;
    }
    None
}

/// The round trip from a DLRR answer received at `ntp_now`: now − LRR − DLRR (RFC 3611
/// §4.5), µs; None when it is not plausible (over 10 s, a clock step).
pub fn rtt_us(ntp_now: u64, lrr: u32, dlrr: u32) -> Option<u64> {
    let mid = (ntp_now >> 16) as u32;
    let units = mid.wrapping_sub(lrr).wrapping_sub(dlrr);
    (units < 10 * 65_536).then(|| u64::from(units) * 1_000_000 / 65_536)
}

/// One transport-wide feedback report's identity.
#[derive(Clone, Copy, Debug)]
pub struct TwccReport {
    pub sender: u32,
    pub media: u32,
    /// Transport-wide sequence number of the first status.
    pub base_seq: u16,
    /// Feedback packet count: +1 per report, so the sender can spot lost reports.
    pub count: u8,
}

/// Writes TWCC reports; owns the scratch space, so writing allocates nothing.
pub struct TwccWriter {
    symbols: Vec<u8>,
    deltas: Vec<i16>,
}

impl Default for TwccWriter {
    fn default() -> Self {
        TwccWriter {
            symbols: vec![0; MAX_STATUSES],
            deltas: vec![0; MAX_STATUSES],
        }
    }
}

impl TwccWriter {
    /// Writes one report for `statuses` consecutive transport-wide sequence numbers from
    /// `r.base_seq`, where `arrival(i)` is the arrival (µs, any fixed epoch) of the i-th or
    /// None if it was not received. Returns (bytes written, statuses covered): a report
    /// ends early when `out` is full or a delta does not fit in 16 bits, and the rest goes
    /// in the next one. (0, 0) when `out` cannot hold even the fixed part.
    pub fn write(
        &mut self,
        out: &mut [u8],
        r: TwccReport,
        statuses: usize,
        arrival: impl Fn(usize) -> Option<u64>,
    ) -> (usize, usize) {
        // Header 20 bytes, then at worst one 2-byte chunk and 2-byte delta per status,
        // then up to 3 bytes of padding.
        if out.len() < 20 + 4 + 3 || statuses == 0 {
            return (0, 0);
        }
        let n = statuses.min(MAX_STATUSES);
        // The reference time is the first received packet's, rounded down to 64 ms; each
        // delta is from the previous received packet, in whole 250 µs ticks of absolute
        // time so rounding never accumulates.
        let first = (0..n).find_map(&arrival).unwrap_or(0);
        let reference = first / REF_US;
        let mut prev_tick = (reference * REF_US / DELTA_US) as i64;
        let budget = out.len() - 20 - 3;
        let (mut taken, mut delta_bytes) = (0, 0);
        for i in 0..n {
            let (sym, delta, bytes) = match arrival(i) {
                None => (NOT_RECEIVED, 0, 0),
                Some(t) => {
                    let tick = (t / DELTA_US) as i64;
                    let d = tick - prev_tick;
                    if (0..=255).contains(&d) {
                        prev_tick = tick;
                        (SMALL, d as i16, 1)
                    } else if let Ok(d) = i16::try_from(d) {
                        prev_tick = tick;
                        (LARGE, d, 2)
                    } else {
                        break;
                    }
                }
            };
            // Chunks never take more than 2 bytes per 7 statuses (+1 partial chunk).
            let chunk_bytes = 2 * ((i + 1).div_ceil(7));
            if delta_bytes + bytes + chunk_bytes > budget {
                break;
            }
            self.symbols[i] = sym;
            self.deltas[i] = delta;
            delta_bytes += bytes;
            taken = i + 1;
        }
        if taken == 0 {
            return (0, 0);
        }
        // Chunks from byte 20, then the deltas of the received statuses, in order.
        let mut at = 20;
        let mut i = 0;
        while i < taken {
            let (chunk, covered) = next_chunk(&self.symbols[i..taken]);
            out[at..at + 2].copy_from_slice(&chunk.to_be_bytes());
            at += 2;
            i += covered;
        }
        for k in 0..taken {
            match self.symbols[k] {
                SMALL => {
                    out[at] = self.deltas[k] as u8;
                    at += 1;
                }
                LARGE => {
                    out[at..at + 2].copy_from_slice(&self.deltas[k].to_be_bytes());
                    at += 2;
                }
                _ => {}
            }
        }
        let padded = at.div_ceil(4) * 4;
        out[at..padded].fill(0);
        write_common(out, FMT_TWCC, RTPFB, padded, r.sender, r.media);
        out[12..14].copy_from_slice(&r.base_seq.to_be_bytes());
        out[14..16].copy_from_slice(&(taken as u16).to_be_bytes());
        let reference = ((reference & 0xff_ffff) as u32).to_be_bytes();
        out[16..19].copy_from_slice(&reference[1..]);
        out[19] = r.count;
        (padded, taken)
    }
}

/// The packet status chunk for the statuses at the start of `s`, and how many it covers:
/// a run-length chunk for 14 or more equal symbols, a one-bit status vector when the
/// next 14 have no large delta, a run for 7 or more, else a two-bit vector of 7.
fn next_chunk(s: &[u8]) -> (u16, usize) {
    let run = s.iter().take(8191).take_while(|&&x| x == s[0]).count();
    let ahead = s.len().min(14);
    if run >= 14 || (run == s.len() && run >= 7) {
        return (u16::from(s[0]) << 13 | run as u16, run);
    }
    if s[..ahead].iter().all(|&x| x != LARGE) {
        let mut v = 0x8000u16;
        for (k, &x) in s[..ahead].iter().enumerate() {
            v |= u16::from(x) << (13 - k);
        }
        return (v, ahead);
    }
    if run >= 7 {
        return (u16::from(s[0]) << 13 | run as u16, run);
    }
    let n = s.len().min(7);
    let mut v = 0xc000u16;
    for (k, &x) in s[..n].iter().enumerate() {
        v |= u16::from(x) << (12 - 2 * k);
    }
    (v, n)
}

#[cfg(test)]
#[path = "feedback_tests.rs"]
mod tests;

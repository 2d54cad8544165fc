//! The RTP header of a forwarded packet: fixed fields and the one-byte header extensions
//! (RFC 8285 §4.2) the subscriber negotiated on the m-line.

use std::time::Duration;

use plenary_srtp::rtp::{write_rtp_header, RtpFields};

/// Largest header we write: 12 fixed + 4 block header + audio level (2) + video
/// orientation (2) + transport-wide seq (3) + abs-send-time (4) + mid (at most 17), padded.
pub(crate) const MAX_HEADER: usize = 12 + 4 + 2 + 2 + 3 + 4 + 17 + 2;

/// Negotiated extension ids of one m-line; `None` when not negotiated or not writable in
/// the one-byte form (ids 15 and up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ExtIds {
    pub audio_level: Option<u8>,
    pub video_orientation: Option<u8>,
    pub transport_cc: Option<u8>,
    pub abs_send_time: Option<u8>,
    pub mid: Option<u8>,
}

impl ExtIds {
    /// Keeps only ids the one-byte form can carry.
    pub(crate) fn one_byte(self) -> Self {
        let ok = |id: Option<u8>| id.filter(|i| (1..=14).contains(i));
        Self {
            audio_level: ok(self.audio_level),
            video_orientation: ok(self.video_orientation),
            transport_cc: ok(self.transport_cc),
            abs_send_time: ok(self.abs_send_time),
            mid: ok(self.mid),
        }
    }
}

/// Per-packet extension values.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExtValues<'a> {
    /// RFC 6464: level in -dBov (0..=127) and the voice activity flag.
    pub audio_level: Option<(u8, bool)>,
    /// 3GPP TS 26.114 §7.4.5: the orientation byte as received (str0m keeps its two
    /// rotation bits).
    pub video_orientation: Option<u8>,
    pub transport_cc: Option<u16>,
    /// Wall-clock time since the Unix epoch, for abs-send-time.
    pub abs_send_time: Option<Duration>,
    /// The m-line's mid, written until the receiver has acknowledged the SSRC.
    pub mid: Option<&'a [u8]>,
}

/// abs-send-time: 6.18 fixed-point seconds, wrapping every 64 s.
pub(crate) fn abs_send_time_24(since_epoch: Duration) -> [u8; 3] {
    let secs = since_epoch.as_secs() & 0x3f;
    let frac = (u64::from(since_epoch.subsec_nanos()) << 18) / 1_000_000_000;
    let v = ((secs << 18) | frac) as u32;
    let b = v.to_be_bytes();
    [b[1], b[2], b[3]]
}

/// Writes the header into `buf` and returns its length. No allocation.
pub(crate) fn write_header(
    buf: &mut [u8],
    fields: &RtpFields,
    ids: &ExtIds,
    vals: &ExtValues<'_>,
) -> Result<usize, plenary_srtp::Error> {
    let level;
    let cvo;
    let tw;
    let abs;
    let mut exts: [(u8, &[u8]); 5] = [(0, &[]); 5];
    let mut n = 0;
    if let (Some(id), Some((l, voice))) = (ids.audio_level, vals.audio_level) {
        level = [(l & 0x7f) | if voice { 0x80 } else { 0 }];
        exts[n] = (id, &level);
        n += 1;
    }
    if let (Some(id), Some(v)) = (ids.video_orientation, vals.video_orientation) {
        cvo = [v];
        exts[n] = (id, &cvo);
        n += 1;
    }
    if let (Some(id), Some(seq)) = (ids.transport_cc, vals.transport_cc) {
        tw = seq.to_be_bytes();
        exts[n] = (id, &tw);
        n += 1;
    }
    if let (Some(id), Some(t)) = (ids.abs_send_time, vals.abs_send_time) {
        abs = abs_send_time_24(t);
        exts[n] = (id, &abs);
        n += 1;
    }
    if let (Some(id), Some(mid)) = (ids.mid, vals.mid) {
        if !mid.is_empty() && mid.len() <= 16 {
            exts[n] = (id, mid);
            n += 1;
        }
    }
    write_rtp_header(buf, fields, &exts[..n])
}

//! Keyframe detection from RTP payloads.
//!
//! A subscriber can only be moved to another video source at a keyframe of that source,
//! otherwise its decoder shows garbage until the next one. The payload formats are parsed
//! just far enough to answer that; every read is bounds-checked because the bytes come from
//! the network.

/// The codecs the forwarding core knows how to inspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Vp8,
    H264,
    Opus,
    /// Anything else: forwarded, but never recognised as a keyframe.
    Other,
}

impl Codec {
    /// Maps an SDP codec name (`VP8`, `h264`, `opus`, also `video/VP8`) to a codec.
    pub fn from_name(name: &str) -> Codec {
        let name = name.rsplit('/').next().unwrap_or(name);
        if name.eq_ignore_ascii_case("vp8") {
            Codec::Vp8
        } else if name.eq_ignore_ascii_case("h264") {
            Codec::H264
        } else if name.eq_ignore_ascii_case("opus") {
            Codec::Opus
        } else {
            Codec::Other
        }
    }

    /// Whether a source switch must wait for a keyframe. Unknown codecs are treated as video
    /// (waiting is safe; cutting into a predicted frame is not).
    pub fn needs_keyframe(self) -> bool {
        !matches!(self, Codec::Opus)
    }
}

/// True only on the first RTP packet of a keyframe (for Opus: on every packet, since each one
/// decodes on its own). Malformed or truncated payloads give `false`.
pub fn is_keyframe_start(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8_keyframe_start(payload),
        Codec::H264 => h264_keyframe_start(payload),
        Codec::Opus => !payload.is_empty(),
        Codec::Other => false,
    }
}

/// The parts of an RFC 7741 payload descriptor the SFU needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Vp8Descriptor {
    /// S bit: first packet of a partition.
    start: bool,
    /// Partition index.
    partition: u8,
    /// Picture ID and whether it is the 15-bit form.
    picture_id: Option<(u16, bool)>,
    tl0picidx: Option<u8>,
    /// Length of the descriptor, i.e. where the VP8 payload starts.
    len: usize,
}

fn vp8_descriptor(p: &[u8]) -> Option<Vp8Descriptor> {
    let b0 = *p.first()?;
    let mut d = Vp8Descriptor {
        start: b0 & 0x10 != 0,
        partition: b0 & 0x07,
        picture_id: None,
        tl0picidx: None,
        len: 1,
    };
    if b0 & 0x80 == 0 {
        return Some(d);
    }
    let x = *p.get(d.len)?;
    d.len += 1;
    if x & 0x80 != 0 {
        let m = *p.get(d.len)?;
        if m & 0x80 != 0 {
            let lo = *p.get(d.len + 1)?;
            d.picture_id = Some(((u16::from(m & 0x7f) << 8) | u16::from(lo), true));
            d.len += 2;
        } else {
            d.picture_id = Some((u16::from(m), false));
            d.len += 1;
        }
    }
    if x & 0x40 != 0 {
        d.tl0picidx = Some(*p.get(d.len)?);
        d.len += 1;
    }
    if x & 0x30 != 0 {
        // TID/Y/KEYIDX byte, present if T or K is set.
        p.get(d.len)?;
        d.len += 1;
    }
    Some(d)
}

fn vp8_keyframe_start(p: &[u8]) -> bool {
    let Some(d) = vp8_descriptor(p) else {
        return false;
    };
    if !d.start || d.partition != 0 {
        return false;
    }
    // VP8 payload header, RFC 6386 9.1: P bit (bit 0) is 0 for a key frame.
    matches!(p.get(d.len), Some(b) if b & 0x01 == 0)
}

/// Picture ID (value, 15-bit form?) and TL0PICIDX of a VP8 payload, for rewriting them when
/// the source changes. `None` when the descriptor carries no picture ID or is truncated.
pub fn vp8_picture_id(payload: &[u8]) -> Option<(u16, bool, Option<u8>)> {
    let d = vp8_descriptor(payload)?;
    let (pid, long) = d.picture_id?;
    Some((pid, long, d.tl0picidx))
}

/// IDR slice or sequence parameter set: either begins a decodable picture.
fn h264_key_nal(nal_type: u8) -> bool {
    nal_type == 5 || nal_type == 7
}

fn h264_keyframe_start(p: &[u8]) -> bool {
    let Some(&hdr) = p.first() else {
        return false;
    };
    if hdr & 0x80 != 0 {
        // forbidden_zero_bit: the NAL unit is known to be corrupt.
        return false;
    }
    match hdr & 0x1f {
        t @ 1..=23 => h264_key_nal(t),
        24 => stap_a_has_key(&p[1..]),
        28 => matches!(p.get(1), Some(fu) if fu & 0x80 != 0 && h264_key_nal(fu & 0x1f)),
        _ => false,
    }
}

/// Walks an STAP-A body (16-bit size, NAL unit, ...). Any size that runs past the end makes
/// the whole packet suspect, so it yields `false` even if a key NAL was seen before it.
fn stap_a_has_key(mut body: &[u8]) -> bool {
    let mut found = false;
    while !body.is_empty() {
        let [hi, lo, rest @ ..] = body else {
            return false;
        };
        let size = usize::from(u16::from_be_bytes([*hi, *lo]));
        if size == 0 || size > rest.len() {
            return false;
        }
        found |= h264_key_nal(rest[0] & 0x1f);
        body = &rest[size..];
    }
    found
}

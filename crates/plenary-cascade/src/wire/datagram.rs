//! Media datagrams: QUIC varint flow id, then an RTP packet.

use super::{MediaPacket, WireError, AUDIO_LEVEL_EXT_ID, VIDEO_ORIENTATION_EXT_ID};
use bytes::BufMut;

const RTP_HEADER: usize = 12;
/// One-byte-header profile, then one word: the audio level and video orientation elements
/// (two bytes each), a missing one padded.
const EXT_LEN: usize = 8;
const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// RFC 8285 two-byte-header profiles are 0x1000..=0x100F (low nibble: appbits).
const TWO_BYTE_PROFILE_MASK: u16 = 0xFFF0;
const TWO_BYTE_PROFILE: u16 = 0x1000;
const VARINT_MAX: u64 = (1 << 62) - 1;

fn flow_id(p: &MediaPacket<'_>) -> u64 {
    debug_assert!(p.track < 1 << 60, "track id {} over 60 bits", p.track);
    debug_assert!(p.layer <= 2, "layer {} over 2", p.layer);
    ((p.track & ((1 << 60) - 1)) << 2) | u64::from(p.layer & 3)
}

fn varint_len(v: u64) -> usize {
    match v {
        0..=63 => 1,
        64..=16_383 => 2,
        16_384..=1_073_741_823 => 4,
        _ => 8,
    }
}

fn put_varint<B: BufMut>(v: u64, out: &mut B) {
    match varint_len(v) {
        1 => out.put_u8(v as u8),
        2 => out.put_u16(0x4000 | v as u16),
        4 => out.put_u32(0x8000_0000 | v as u32),
        _ => out.put_u64(0xC000_0000_0000_0000 | (v & VARINT_MAX)),
    }
}

/// Returns (value, bytes used).
fn get_varint(buf: &[u8]) -> Result<(u64, usize), WireError> {
    let first = *buf.first().ok_or(WireError::Short)?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len).ok_or(WireError::Short)?;
    let mut v = u64::from(first & 0x3F);
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Ok((v, len))
}

/// RFC 6464 level byte: V bit, then -dBov in 7 bits. Levels above 0 clamp to 0 (loudest).
fn level_byte(level: i8, voice: Option<bool>) -> u8 {
    let dbov = (-i16::from(level)).clamp(0, 127) as u8;
    // An unknown voice flag crosses as voiced: V = 0 would tell the far node's speaker
    // detection "silence", which the sender never said.
    (if voice != Some(false) { 0x80 } else { 0 }) | dbov
}

/// Exact size `write_datagram` produces, to check it against the path's datagram limit first.
pub fn datagram_len(p: &MediaPacket<'_>) -> usize {
    let ext = if has_elements(p) { EXT_LEN } else { 0 };
    varint_len(flow_id(p)) + RTP_HEADER + ext + p.payload.len()
}

fn has_elements(p: &MediaPacket<'_>) -> bool {
    p.audio_level.is_some() || p.video_orientation.is_some()
}

/// Appends the datagram for `p` to `out` (a `Vec<u8>` or a reused `BytesMut`).
///
/// `voice_activity` is only carried with an audio level (RFC 6464 has no level-less V bit);
/// `Some(level)` with `None` activity decodes as `Some(false)`.
pub fn write_datagram<B: BufMut>(p: &MediaPacket<'_>, out: &mut B) {
    put_varint(flow_id(p), out);
    let ext = has_elements(p);
    out.put_u8(0x80 | if ext { 0x10 } else { 0 });
    debug_assert!(p.pt < 128, "payload type {} over 7 bits", p.pt);
    out.put_u8(if p.marker { 0x80 } else { 0 } | (p.pt & 0x7F));
    out.put_u16(p.seq);
    out.put_u32(p.ts);
    out.put_u32(p.ssrc);
    if ext {
        // One 32-bit word: two elements of id << 4 | (length - 1 = 0) and one byte each, an
        // absent one as two bytes of padding.
        out.put_u16(ONE_BYTE_PROFILE);
        out.put_u16(1);
        match p.audio_level {
            Some(level) => {
                out.put_slice(&[AUDIO_LEVEL_EXT_ID << 4, level_byte(level, p.voice_activity)])
            }
            None => out.put_u16(0),
        }
        match p.video_orientation {
            Some(cvo) => out.put_slice(&[VIDEO_ORIENTATION_EXT_ID << 4, cvo]),
            None => out.put_u16(0),
        }
    }
    out.put_slice(p.payload);
}

/// Clears `out` and fills it with the datagram for `p`.
pub fn encode_datagram(p: &MediaPacket<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(datagram_len(p));
    write_datagram(p, out);
}

/// Parses a datagram, borrowing the payload. Never panics.
///
/// Accepts what other RTP senders produce: CSRCs, unknown extension elements, two-byte-header
/// and other extension profiles (skipped), and RTP padding. A flow id naming layer 3 (which
/// does not exist) is refused as `BadVarint`.
pub fn decode_datagram(buf: &[u8]) -> Result<MediaPacket<'_>, WireError> {
    let (flow, used) = get_varint(buf)?;
    if flow & 3 == 3 {
        return Err(WireError::BadVarint);
    }
    let rtp = &buf[used..];
    let header = rtp.get(..RTP_HEADER).ok_or(WireError::Short)?;
    if header[0] >> 6 != 2 {
        return Err(WireError::NotRtp);
    }
    let padded = header[0] & 0x20 != 0;
    let has_ext = header[0] & 0x10 != 0;
    let csrcs = usize::from(header[0] & 0x0F);
    let marker = header[1] & 0x80 != 0;
    let pt = header[1] & 0x7F;
    let seq = u16::from_be_bytes([header[2], header[3]]);
    let ts = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let ssrc = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);

    let mut pos = RTP_HEADER + 4 * csrcs;
    if pos > rtp.len() {
        return Err(WireError::Short);
    }
    let (mut level, mut cvo) = (None, None);
    if has_ext {
        let head = rtp.get(pos..pos + 4).ok_or(WireError::BadRtp)?;
        let profile = u16::from_be_bytes([head[0], head[1]]);
        let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let body = rtp
            .get(pos + 4..pos + 4 + 4 * words)
            .ok_or(WireError::BadRtp)?;
        if profile == ONE_BYTE_PROFILE {
            (level, cvo) = find_elements(body)?;
        } else if profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE {
            check_two_byte(body)?;
        }
        pos += 4 + 4 * words;
    }
    let mut end = rtp.len();
    if padded {
        // Last byte counts the padding, itself included.
        let pad = usize::from(*rtp.last().ok_or(WireError::BadRtp)?);
        if pad == 0 || pad > end - pos {
            return Err(WireError::BadRtp);
        }
        end -= pad;
    }
    Ok(MediaPacket {
        track: flow >> 2,
        layer: (flow & 3) as u8,
        ssrc,
        pt,
        seq,
        ts,
        marker,
        audio_level: level.map(|b: u8| -((b & 0x7F) as i8)),
        voice_activity: level.map(|b| b & 0x80 != 0),
        video_orientation: cvo,
        payload: &rtp[pos..end],
    })
}

/// Walks RFC 8285 one-byte elements; returns the audio level and video orientation bytes
/// that are present.
fn find_elements(body: &[u8]) -> Result<(Option<u8>, Option<u8>), WireError> {
    let mut i = 0;
    let (mut level, mut cvo) = (None, None);
    while let Some(&b) = body.get(i) {
        if b == 0 {
            i += 1; // padding byte between elements
            continue;
        }
        let id = b >> 4;
        if id == 15 {
            break; // reserved: RFC 8285 says stop processing here
        }
        let len = usize::from(b & 0x0F) + 1;
        let data = body.get(i + 1..i + 1 + len).ok_or(WireError::BadRtp)?;
        match id {
            AUDIO_LEVEL_EXT_ID => level = Some(data[0]),
            VIDEO_ORIENTATION_EXT_ID => cvo = Some(data[0]),
            _ => {}
        }
        i += 1 + len;
    }
    Ok((level, cvo))
}

/// Two-byte-header elements are skipped, but a block that overruns itself is still malformed.
fn check_two_byte(body: &[u8]) -> Result<(), WireError> {
    let mut i = 0;
    while let Some(&id) = body.get(i) {
        if id == 0 {
            i += 1;
            continue;
        }
        let len = usize::from(*body.get(i + 1).ok_or(WireError::BadRtp)?);
        if i + 2 + len > body.len() {
            return Err(WireError::BadRtp);
        }
        i += 2 + len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn packet(payload: &[u8]) -> MediaPacket<'_> {
        MediaPacket {
            track: 42,
            layer: 1,
            ssrc: 0xDEAD_BEEF,
            pt: 96,
            seq: 65_535,
            ts: 0x8000_0001,
            marker: true,
            audio_level: None,
            voice_activity: None,
            video_orientation: None,
            payload,
        }
    }

    #[test]
    fn round_trips_across_varint_sizes_and_levels() {
        let payload = [1u8, 2, 3, 4, 5];
        let mut out = Vec::new();
        for track in [0, 15, 16, 4095, 4096, (1 << 28) - 1, 1 << 28, (1 << 60) - 1] {
            for layer in 0..=2 {
                for (level, voice, cvo) in [
                    (None, None, None),
                    (Some(-30), Some(true), None),
                    (Some(0), Some(false), None),
                    (None, None, Some(0b1101)),
                    (Some(-1), Some(true), Some(1)),
                ] {
                    let p = MediaPacket {
                        track,
                        layer,
                        audio_level: level,
                        voice_activity: voice,
                        video_orientation: cvo,
                        ..packet(&payload)
                    };
                    encode_datagram(&p, &mut out);
                    assert_eq!(out.len(), datagram_len(&p));
                    assert_eq!(decode_datagram(&out), Ok(p.clone()));
                }
            }
        }
    }

    #[test]
    fn writes_a_real_rtp_header_and_rfc6464_element() {
        let p = MediaPacket {
            track: 1,
            layer: 2,
            audio_level: Some(-30),
            voice_activity: Some(true),
            ..packet(b"op")
        };
        let mut out = Vec::new();
        encode_datagram(&p, &mut out);
        assert_eq!(out[0], 0b0000_0110); // 1-byte varint: track 1, layer 2
        assert_eq!(out[1], 0x90); // V=2, X=1
        assert_eq!(out[2], 0x80 | 96);
        assert_eq!(&out[13..21], &[0xBE, 0xDE, 0, 1, 0x10, 0x80 | 30, 0, 0]);
        assert_eq!(&out[21..], b"op");
    }

    #[test]
    fn writes_the_video_orientation_element_in_the_same_word() {
        let p = MediaPacket {
            track: 1,                        // a 1-byte varint
            video_orientation: Some(0b1001), // flipped, 90 degrees
            ..packet(b"op")
        };
        let mut out = Vec::new();
        encode_datagram(&p, &mut out);
        assert_eq!(out.len(), datagram_len(&p));
        // No level: its two bytes are padding; then id 2, length 1, the byte.
        assert_eq!(&out[13..21], &[0xBE, 0xDE, 0, 1, 0, 0, 0x20, 0b1001]);
        // An older node skips it as an unknown id (`accepts_csrcs_unknown_elements_and_padding`).
        assert_eq!(
            decode_datagram(&out).unwrap().video_orientation,
            Some(0b1001)
        );
    }

    #[test]
    fn level_out_of_range_clamps() {
        assert_eq!(level_byte(-128, Some(false)), 127);
        assert_eq!(level_byte(5, Some(true)), 0x80);
    }

    #[test]
    fn an_unknown_voice_flag_crosses_as_voiced() {
        // V = 0 would make the far node's speaker detection drop a level the sender gave.
        assert_eq!(level_byte(-30, None), 0x80 | 30);
        let p = MediaPacket {
            audio_level: Some(-30),
            voice_activity: None,
            ..packet(b"x")
        };
        let mut out = Vec::new();
        encode_datagram(&p, &mut out);
        assert_eq!(
            decode_datagram(&out).map(|d| d.voice_activity),
            Ok(Some(true))
        );
    }

    /// Builds an RTP packet by hand the way another sender might.
    fn foreign(csrcs: u8, ext: Option<(u16, &[u8])>, pad: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x41, 0x00]; // 2-byte varint 256: track 64, layer 0
        let x = if ext.is_some() { 0x10 } else { 0 };
        let p = if pad > 0 { 0x20 } else { 0 };
        v.extend_from_slice(&[0x80 | p | x | csrcs, 111, 0, 7, 0, 0, 0, 9, 1, 2, 3, 4]);
        for c in 0..csrcs {
            v.extend_from_slice(&[0, 0, 0, c]);
        }
        if let Some((profile, body)) = ext {
            v.extend_from_slice(&profile.to_be_bytes());
            v.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
            v.extend_from_slice(body);
        }
        v.extend_from_slice(payload);
        if pad > 0 {
            v.extend(std::iter::repeat_n(0, usize::from(pad) - 1));
            v.push(pad);
        }
        v
    }

    #[test]
    fn accepts_csrcs_unknown_elements_and_padding() {
        // Element id 3 (2 bytes), a pad byte, the level (id 1), then id 15 stops parsing.
        let body = [0x31, 0xAA, 0xBB, 0x00, 0x10, 0x85, 0xF0, 0x00];
        let buf = foreign(2, Some((ONE_BYTE_PROFILE, &body)), 4, b"media");
        let p = decode_datagram(&buf).expect("valid");
        assert_eq!((p.track, p.layer, p.pt, p.seq, p.ts), (64, 0, 111, 7, 9));
        assert_eq!(p.ssrc, 0x0102_0304);
        assert_eq!(p.audio_level, Some(-5));
        assert_eq!(p.voice_activity, Some(true));
        assert_eq!(p.payload, b"media");
    }

    #[test]
    fn skips_two_byte_and_other_profiles() {
        let body = [1, 2, 0xAA, 0xBB, 0, 0, 0, 0];
        for profile in [0x1000, 0x100F, 0x1234] {
            let buf = foreign(0, Some((profile, &body)), 0, b"x");
            let p = decode_datagram(&buf).expect("valid");
            assert_eq!((p.audio_level, p.payload), (None, &b"x"[..]));
        }
        let overrun = [1, 9, 0xAA, 0xBB];
        let buf = foreign(0, Some((0x1000, &overrun)), 0, b"");
        assert_eq!(decode_datagram(&buf), Err(WireError::BadRtp));
    }

    #[test]
    fn refuses_malformed() {
        assert_eq!(decode_datagram(&[]), Err(WireError::Short));
        assert_eq!(decode_datagram(&[0xC0, 0, 0]), Err(WireError::Short));
        assert_eq!(decode_datagram(&[0x03; 20]), Err(WireError::BadVarint));
        assert_eq!(decode_datagram(&[0x04, 0x80, 0]), Err(WireError::Short));
        assert_eq!(decode_datagram(&[0x04; 20]), Err(WireError::NotRtp));
        let mut buf = foreign(0, None, 0, b"");
        buf[2] |= 0x20; // padding bit, last byte (0x04 of the SSRC) runs into the header
        assert_eq!(decode_datagram(&buf), Err(WireError::BadRtp));
        let mut buf = foreign(0, None, 0, b"");
        buf[2] |= 0x10; // extension bit with no block
        assert_eq!(decode_datagram(&buf), Err(WireError::BadRtp));
        let mut buf = foreign(0, None, 0, b"");
        buf[2] |= 0x0F; // 15 CSRCs absent
        assert_eq!(decode_datagram(&buf), Err(WireError::Short));
        let bad_elem = [0x13, 0xAA, 0, 0]; // id 1 claiming 4 bytes in a 4-byte block
        let buf = foreign(0, Some((ONE_BYTE_PROFILE, &bad_elem)), 0, b"");
        assert_eq!(decode_datagram(&buf), Err(WireError::BadRtp));
    }

    #[test]
    fn random_bytes_never_panic_and_reencode_stably() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut decoded = 0;
        for i in 0..200_000 {
            let len = rng.gen_range(0..64);
            buf.clear();
            buf.extend((0..len).map(|_| rng.gen::<u8>()));
            if i % 2 == 0 && buf.len() > 2 {
                buf[1] = 0x80 | (buf[1] & 0x3F); // make RTP version 2 common
                buf[0] &= 0x3F;
            }
            if let Ok(p) = decode_datagram(&buf) {
                decoded += 1;
                encode_datagram(&p, &mut out);
                assert_eq!(decode_datagram(&out), Ok(p));
            }
        }
        assert!(decoded > 1000, "only {decoded} random inputs parsed");
    }
}

//! The VP8 bytes an SFU looks at (RFC 7741): the payload descriptor on every packet and the
//! payload header at the start of each frame. The probe writes valid ones so that servers
//! that detect keyframes, rewrite PictureIDs or switch simulcast layers at keyframes treat
//! the synthetic stream like a real encoder's, and parses them back on receipt.

/// Descriptor bytes the probe writes: X, S/PID octet, the I octet and a 15-bit PictureID.
pub const DESC_LEN: usize = 4;
/// Payload header of a keyframe: 3-byte frame tag, start code, width and height.
pub const KEY_HEADER_LEN: usize = 10;
/// Payload header of an interframe: the frame tag only.
pub const DELTA_HEADER_LEN: usize = 3;

/// Writes the descriptor: X=1, N=0, S as given, PID=0, I=1 with M=1 (15-bit PictureID).
pub fn write_descriptor(out: &mut [u8; DESC_LEN], start: bool, picture_id: u16) {
    out[0] = 0x80 | if start { 0x10 } else { 0 };
    out[1] = 0x80;
    out[2] = 0x80 | ((picture_id >> 8) as u8 & 0x7f);
    out[3] = picture_id as u8;
}

/// The payload header of the first packet of a frame (RFC 6386 §9.1 frame tag, keyframe
/// start code and dimensions). Returns the bytes and how many are used.
pub fn payload_header(
    keyframe: bool,
    partition_size: u32,
    width: u16,
    height: u16,
) -> ([u8; 10], usize) {
    let size = partition_size.min((1 << 19) - 1);
    let mut h = [0u8; 10];
    // bit 0: P (0 = keyframe), bits 1-3: version 0, bit 4: show_frame, bits 5-7: size0.
    h[0] = u8::from(!keyframe) | 0x10 | ((size & 0x7) as u8) << 5;
    h[1] = (size >> 3) as u8;
    h[2] = (size >> 11) as u8;
    if !keyframe {
        return (h, DELTA_HEADER_LEN);
    }
    h[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
    h[6..8].copy_from_slice(&(width & 0x3fff).to_le_bytes());
    h[8..10].copy_from_slice(&(height & 0x3fff).to_le_bytes());
    (h, KEY_HEADER_LEN)
}

/// What a receiver needs from one VP8 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vp8Packet {
    /// S=1 and PID=0: the first packet of a frame.
    pub frame_start: bool,
    /// Only known on a frame's first packet.
    pub keyframe: Option<bool>,
    pub picture_id: Option<u16>,
    /// Where the bytes after the VP8 headers start (the probe's stamp).
    pub body: usize,
}

/// Parses the descriptor (every optional field of RFC 7741 §4.2) and, on a frame start, the
/// frame tag. `None` when the packet is too short for what its bits announce.
pub fn parse(p: &[u8]) -> Option<Vp8Packet> {
    let b0 = *p.first()?;
    let (x, s, pid) = (b0 & 0x80 != 0, b0 & 0x10 != 0, b0 & 0x07);
    let mut i = 1;
    let mut picture_id = None;
    if x {
        let b1 = *p.get(i)?;
        i += 1;
        let (has_i, has_l, has_t, has_k) = (
            b1 & 0x80 != 0,
            b1 & 0x40 != 0,
            b1 & 0x20 != 0,
            b1 & 0x10 != 0,
        );
        if has_i {
            let m = *p.get(i)?;
            if m & 0x80 != 0 {
                let lo = *p.get(i + 1)?;
                picture_id = Some(u16::from(m & 0x7f) << 8 | u16::from(lo));
                i += 2;
            } else {
                picture_id = Some(u16::from(m));
                i += 1;
            }
        }
        if has_l {
            i += 1;
        }
        if has_t || has_k {
            i += 1;
        }
    }
    if i > p.len() {
        return None;
    }
    let frame_start = s && pid == 0;
    let mut keyframe = None;
    let mut body = i;
    if frame_start {
        let tag = *p.get(i)?;
        let key = tag & 0x01 == 0;
        keyframe = Some(key);
        body += if key {
            KEY_HEADER_LEN
        } else {
            DELTA_HEADER_LEN
        };
        if body > p.len() {
            return None;
        }
    }
    Some(Vp8Packet {
        frame_start,
        keyframe,
        picture_id,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(start: bool, key: bool, pid: u16) -> Vec<u8> {
        let mut d = [0u8; DESC_LEN];
        write_descriptor(&mut d, start, pid);
        let mut v = d.to_vec();
        if start {
            let (h, n) = payload_header(key, 1234, 1280, 720);
            v.extend_from_slice(&h[..n]);
        }
        v.extend_from_slice(b"stamp...");
        v
    }

    #[test]
    fn round_trips_keyframes_interframes_and_continuations() {
        let k = packet(true, true, 0x1234);
        assert_eq!(
            parse(&k),
            Some(Vp8Packet {
                frame_start: true,
                keyframe: Some(true),
                picture_id: Some(0x1234),
                body: 14
            })
        );
        assert_eq!(&k[14..], b"stamp...");
        // Width and height sit after the start code, little-endian.
        assert_eq!(
            (&k[7..10], &k[10..12]),
            (&[0x9d, 0x01, 0x2a][..], &1280u16.to_le_bytes()[..])
        );
        let d = packet(true, false, 7);
        assert_eq!(
            parse(&d).map(|p| (p.keyframe, p.body)),
            Some((Some(false), 7))
        );
        let c = packet(false, false, 7);
        assert_eq!(
            parse(&c).map(|p| (p.frame_start, p.keyframe, p.body)),
            Some((false, None, 4))
        );
    }

    #[test]
    fn keyframe_bit_is_what_sfus_test() {
        // An SFU's keyframe test: S=1, PID=0 and the P bit of the first payload byte clear.
        let k = packet(true, true, 1);
        assert_eq!(k[0] & 0x10, 0x10);
        assert_eq!(k[DESC_LEN] & 0x01, 0);
        assert_eq!(packet(true, false, 1)[DESC_LEN] & 0x01, 1);
    }

    #[test]
    fn parses_other_senders_descriptors() {
        // 7-bit PictureID, TL0PICIDX and TID/KEYIDX present.
        let p = [0x90, 0xe0, 0x05, 0x11, 0x22, 0x01, 0, 0];
        assert_eq!(
            parse(&p).map(|p| (p.picture_id, p.body)),
            Some((Some(5), 8))
        );
        // No extension at all.
        assert_eq!(parse(&[0x10, 0x01, 0, 0]).map(|p| p.body), Some(4));
    }

    #[test]
    fn truncated_input_is_rejected() {
        for p in [
            &[][..],
            &[0x80],
            &[0x80, 0x80, 0x80],
            &[0x90, 0x80, 0x80, 0x01],
            &[0x90, 0x80, 0x80, 0x01, 0x00],
        ] {
            assert_eq!(parse(p), None, "{p:?}");
        }
    }
}

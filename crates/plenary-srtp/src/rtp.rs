//! The little of RTP (RFC 3550 §5.1) and RTCP framing that SRTP, the egress path and the
//! probe's receive path need: where the header ends, its fields and extensions (RFC 8285,
//! one- and two-byte forms), and writing a header with one-byte extensions.

use crate::Error;

/// The fixed RTP header fields a forwarder rewrites per subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtpFields {
    pub payload_type: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// What SRTP needs from an RTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RtpView {
    pub header_len: usize,
    pub seq: u16,
    pub ssrc: u32,
}

/// Parses the header of `packet`: version 2, CSRCs and the extension block must fit.
pub(crate) fn parse_rtp(packet: &[u8]) -> Result<RtpView, Error> {
    let h = parse_header(packet)?;
    Ok(RtpView {
        header_len: h.header_len,
        seq: h.fields.seq,
        ssrc: h.fields.ssrc,
    })
}

/// A received (plain) RTP header: its fields, where the payload starts, and where the
/// extension block's elements are. Borrows nothing, so the packet can be used after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub fields: RtpFields,
    /// Fixed header, CSRCs and extension block: the payload starts here.
    pub header_len: usize,
    /// The P bit: the last payload byte counts the padding bytes.
    pub padding: bool,
    /// RFC 8285 profile (0xBEDE one-byte, 0x100x two-byte) and the elements' byte range.
    ext: Option<(u16, usize, usize)>,
}

/// Parses an RTP header (RFC 3550 §5.1): version 2, and the CSRCs and extension block
/// must fit in `packet`.
pub fn parse_header(packet: &[u8]) -> Result<RtpHeader, Error> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return Err(Error::Malformed);
    }
    let csrc = usize::from(packet[0] & 0x0f);
    let mut header_len = 12 + 4 * csrc;
    let mut ext = None;
    if packet[0] & 0x10 != 0 {
        if packet.len() < header_len + 4 {
            return Err(Error::Malformed);
        }
        let at = header_len;
        let profile = u16::from_be_bytes([packet[at], packet[at + 1]]);
        let words = u16::from_be_bytes([packet[at + 2], packet[at + 3]]);
        header_len += 4 + 4 * usize::from(words);
        ext = Some((profile, at + 4, header_len));
    }
    if packet.len() < header_len {
        return Err(Error::Malformed);
    }
    Ok(RtpHeader {
        fields: RtpFields {
            payload_type: packet[1] & 0x7f,
            marker: packet[1] & 0x80 != 0,
            seq: u16::from_be_bytes([packet[2], packet[3]]),
            timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
            ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
        },
        header_len,
        padding: packet[0] & 0x20 != 0,
        ext,
    })
}

impl RtpHeader {
    /// The payload of `packet` (the one this header was parsed from), padding removed.
    /// A padding count larger than the payload is malformed.
    pub fn payload<'a>(&self, packet: &'a [u8]) -> Result<&'a [u8], Error> {
        let body = packet.get(self.header_len..).ok_or(Error::Malformed)?;
        if !self.padding {
            return Ok(body);
        }
        let pad = usize::from(*body.last().ok_or(Error::Malformed)?);
        if pad == 0 || pad > body.len() {
            return Err(Error::Malformed);
        }
        Ok(&body[..body.len() - pad])
    }

    /// The value of header extension `id` in `packet`, in the one-byte (RFC 8285 §4.2) or
    /// two-byte (§4.3) form; None if absent or the block is malformed.
    pub fn extension<'a>(&self, packet: &'a [u8], id: u8) -> Option<&'a [u8]> {
        let (profile, start, end) = self.ext?;
        let block = packet.get(start..end)?;
        let two_byte = match profile {
            0xbede => false,
            p if p & 0xfff0 == 0x1000 => true,
            _ => return None,
        };
        let mut at = 0;
        while at < block.len() {
            let b = block[at];
            if b == 0 {
                at += 1; // padding between elements
                continue;
            }
            let (eid, len, data) = if two_byte {
                let len = usize::from(*block.get(at + 1)?);
                (b, len, at + 2)
            } else {
                if b >> 4 == 15 {
                    return None; // reserved id: stop parsing (RFC 8285 §4.2)
                }
                (b >> 4, usize::from(b & 0x0f) + 1, at + 1)
            };
            let value = block.get(data..data + len)?;
            if eid == id {
                return Some(value);
            }
            at = data + len;
        }
        None
    }
}

/// RFC 5761 §4: a datagram whose second byte is 192..=223 is RTCP (PT 64..=95 with the
/// marker bit set), so it is never taken for RTP and vice versa.
pub fn is_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 8 && packet[0] >> 6 == 2 && (192..=223).contains(&packet[1])
}

/// RFC 7983: the first byte of an RTP or RTCP datagram is 128..=191.
pub fn is_rtp_or_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 12 && (128..=191).contains(&packet[0])
}

/// Writes an RTP header with one-byte header extensions `(id, value)` into `buf` and
/// returns its length. Ids are 1..=14 and values 1..=16 bytes, as RFC 8285 §4.2 allows;
/// the block is padded to a 32-bit boundary.
pub fn write_rtp_header(
    buf: &mut [u8],
    fields: &RtpFields,
    extensions: &[(u8, &[u8])],
) -> Result<usize, Error> {
    if buf.len() < 12 {
        return Err(Error::BufferTooSmall);
    }
    let has_ext = !extensions.is_empty();
    buf[0] = 0x80 | if has_ext { 0x10 } else { 0 };
    buf[1] = (fields.payload_type & 0x7f) | if fields.marker { 0x80 } else { 0 };
    buf[2..4].copy_from_slice(&fields.seq.to_be_bytes());
    buf[4..8].copy_from_slice(&fields.timestamp.to_be_bytes());
    buf[8..12].copy_from_slice(&fields.ssrc.to_be_bytes());
    if !has_ext {
        return Ok(12);
    }
    let mut at = 16;
    for &(id, value) in extensions {
        if !(1..=14).contains(&id) || value.is_empty() || value.len() > 16 {
            return Err(Error::Malformed);
        }
        let end = at + 1 + value.len();
        if buf.len() < end {
            return Err(Error::BufferTooSmall);
        }
        buf[at] = (id << 4) | (value.len() as u8 - 1);
        buf[at + 1..end].copy_from_slice(value);
        at = end;
    }
    let padded = (at + 3) & !3;
    if buf.len() < padded {
        return Err(Error::BufferTooSmall);
    }
    buf[at..padded].fill(0);
    buf[12..14].copy_from_slice(&[0xbe, 0xde]);
    buf[14..16].copy_from_slice(&(((padded - 16) / 4) as u16).to_be_bytes());
    Ok(padded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_header_parses_back() {
        let mut buf = [0u8; 64];
        let fields = RtpFields {
            payload_type: 96,
            marker: true,
            seq: 0xfffe,
            timestamp: 90_000,
            ssrc: 0xdead_beef,
        };
        // Audio level (1 byte) and a 3-byte transport-wide sequence number field.
        let n = write_rtp_header(&mut buf, &fields, &[(1, &[0x85]), (3, &[0, 1, 2])]).unwrap();
        assert_eq!(n, 12 + 4 + 8);
        assert_eq!(&buf[12..16], &[0xbe, 0xde, 0, 2]);
        assert_eq!(&buf[16..24], &[0x10, 0x85, 0x32, 0, 1, 2, 0, 0]);
        let view = parse_rtp(&buf[..n + 5]).unwrap();
        assert_eq!(view.header_len, n);
        assert_eq!((view.seq, view.ssrc), (0xfffe, 0xdead_beef));
        assert_eq!(buf[1], 0x80 | 96);
    }

    #[test]
    fn short_or_foreign_packets_are_malformed() {
        assert!(parse_rtp(&[0x80; 11]).is_err());
        // Version 1.
        assert!(parse_rtp(&[0x40; 12]).is_err());
        // Two CSRCs announced, none present.
        let mut p = [0u8; 12];
        p[0] = 0x82;
        assert!(parse_rtp(&p).is_err());
        // Extension block longer than the packet.
        let mut p = [0u8; 16];
        p[0] = 0x90;
        p[15] = 4;
        assert!(parse_rtp(&p).is_err());
    }

    #[test]
    fn header_fields_extensions_and_padding_are_read() {
        let mut buf = [0u8; 64];
        let fields = RtpFields {
            payload_type: 97,
            marker: false,
            seq: 513,
            timestamp: 0x0102_0304,
            ssrc: 77,
        };
        let n = write_rtp_header(&mut buf, &fields, &[(3, &[0x12, 0x34]), (4, b"v1")]).unwrap();
        buf[n..n + 5].copy_from_slice(&[9, 8, 7, 0, 2]);
        buf[0] |= 0x20; // two bytes of padding
        let h = parse_header(&buf[..n + 5]).unwrap();
        assert_eq!(h.fields, fields);
        assert_eq!(h.header_len, n);
        assert_eq!(h.extension(&buf, 3), Some(&[0x12, 0x34][..]));
        assert_eq!(h.extension(&buf, 4), Some(&b"v1"[..]));
        assert_eq!(h.extension(&buf, 5), None);
        assert_eq!(h.payload(&buf[..n + 5]).unwrap(), &[9, 8, 7]);
        // Padding longer than the payload.
        buf[n + 4] = 9;
        assert!(h.payload(&buf[..n + 5]).is_err());
    }

    #[test]
    fn two_byte_extensions_are_read() {
        // Profile 0x1000, one word of elements: id 3 with 2 bytes, then padding.
        let mut p = vec![0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        p.extend_from_slice(&[0x10, 0x00, 0, 2]);
        p.extend_from_slice(&[0, 3, 2, 0xab, 0xcd, 0, 0, 0]);
        p.push(1);
        let h = parse_header(&p).unwrap();
        assert_eq!(h.header_len, 24);
        assert_eq!(h.extension(&p, 3), Some(&[0xab, 0xcd][..]));
        assert_eq!(h.payload(&p).unwrap(), &[1]);
    }

    #[test]
    fn rtcp_and_rtp_are_told_apart() {
        let mut rtcp = [0u8; 8];
        rtcp[0] = 0x81;
        rtcp[1] = 206;
        assert!(is_rtcp(&rtcp));
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 96 | 0x80;
        assert!(!is_rtcp(&rtp));
        assert!(is_rtp_or_rtcp(&rtp));
        assert!(!is_rtp_or_rtcp(&[22; 12])); // a DTLS handshake record
    }
}

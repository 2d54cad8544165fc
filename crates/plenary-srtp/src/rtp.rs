//! The little of RTP (RFC 3550 §5.1) and RTCP framing that SRTP and the egress path need:
//! where the header ends, and writing a header with one-byte extensions (RFC 8285 §4.2).

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
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return Err(Error::Malformed);
    }
    let csrc = usize::from(packet[0] & 0x0f);
    let mut header_len = 12 + 4 * csrc;
    if packet[0] & 0x10 != 0 {
        if packet.len() < header_len + 4 {
            return Err(Error::Malformed);
        }
        let words = u16::from_be_bytes([packet[header_len + 2], packet[header_len + 3]]);
        header_len += 4 + 4 * usize::from(words);
    }
    if packet.len() < header_len {
        return Err(Error::Malformed);
    }
    Ok(RtpView {
        header_len,
        seq: u16::from_be_bytes([packet[2], packet[3]]),
        ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
    })
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

//! ChannelData framing (RFC 8656 §12.4).

pub const HEADER_LEN: usize = 4;
pub const MIN_CHANNEL: u16 = 0x4000;
/// RFC 8656 narrowed channels to 0x4000..=0x4FFF; RFC 5766 allowed up to 0x7FFF, and
/// coturn and its `turnutils_uclient` still use that range, so we accept it too. A TURN
/// client port does not multiplex DTLS/SRTP, which is what the narrowing protected.
pub const MAX_CHANNEL: u16 = 0x7FFF;

/// Parses a ChannelData message: (channel number, application data). The length field
/// must not exceed the bytes present; trailing padding is allowed. `None` if malformed or
/// the channel is outside 0x4000..=0x7FFF.
pub fn parse(buf: &[u8]) -> Option<(u16, &[u8])> {
    let (&[c0, c1, l0, l1], rest) = buf.split_first_chunk::<HEADER_LEN>()?;
    let channel = u16::from_be_bytes([c0, c1]);
    if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&channel) {
        return None;
    }
    let data = rest.get(..usize::from(u16::from_be_bytes([l0, l1])))?;
    Some((channel, data))
}

/// Writes the 4-byte header for `channel` and `len` bytes of data into `header`.
pub fn write_header(header: &mut [u8; 4], channel: u16, len: u16) {
    let [c0, c1] = channel.to_be_bytes();
    let [l0, l1] = len.to_be_bytes();
    *header = [c0, c1, l0, l1];
}

/// Bytes of zero padding that follow `len` bytes of data on a stream transport, where
/// ChannelData is padded to a multiple of 4 (RFC 8656 §12.5). UDP needs none.
pub fn stream_padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(channel: u16, data: &[u8]) -> Vec<u8> {
        let mut header = [0u8; 4];
        write_header(&mut header, channel, data.len() as u16);
        let mut out = header.to_vec();
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn header_layout_is_channel_then_length() {
        let mut header = [0xffu8; 4];
        write_header(&mut header, 0x4abc, 0x0102);
        assert_eq!(header, [0x4a, 0xbc, 0x01, 0x02]);
    }

    #[test]
    fn round_trips() {
        let f = frame(0x4001, b"voice");
        assert_eq!(parse(&f), Some((0x4001, &b"voice"[..])));
        assert_eq!(
            parse(&frame(MIN_CHANNEL, b"")),
            Some((MIN_CHANNEL, &b""[..]))
        );
        assert_eq!(
            parse(&frame(MAX_CHANNEL, b"x")),
            Some((MAX_CHANNEL, &b"x"[..]))
        );
    }

    #[test]
    fn trailing_padding_is_allowed() {
        let mut f = frame(0x4abc, b"voice");
        f.extend_from_slice(&[0, 0, 0]);
        assert_eq!(parse(&f), Some((0x4abc, &b"voice"[..])));
    }

    #[test]
    fn rejects_short_frames_and_bad_channels() {
        let f = frame(0x4001, b"voice");
        for cut in 0..f.len() {
            assert_eq!(parse(&f[..cut]), None, "prefix of {cut} bytes");
        }
        assert_eq!(parse(&frame(0x3fff, b"x")), None);
        assert_eq!(parse(&frame(0x8000, b"x")), None);
        assert_eq!(parse(&frame(0x0001, b"x")), None);
    }

    #[test]
    fn stream_padding_rounds_to_four() {
        assert_eq!([0, 1, 2, 3, 4, 5].map(stream_padding), [0, 3, 2, 1, 0, 3]);
    }
}

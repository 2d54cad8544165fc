//! ChannelData framing (RFC 8656 §12.4).

pub const HEADER_LEN: usize = 4;
pub const MIN_CHANNEL: u16 = 0x4000;
pub const MAX_CHANNEL: u16 = 0x4FFF;

/// Parses a ChannelData message: (channel number, application data). The length field
/// must not exceed the bytes present; trailing padding is allowed. `None` if malformed or
/// the channel is outside 0x4000..=0x4FFF.
pub fn parse(buf: &[u8]) -> Option<(u16, &[u8])> {
    let _ = buf;
    todo!()
}

/// Writes the 4-byte header for `channel` and `len` bytes of data into `header`.
pub fn write_header(header: &mut [u8; 4], channel: u16, len: u16) {
    let _ = (header, channel, len);
    todo!()
}

//! Frames a peer's datagram for the client in place: ChannelData when a channel is bound
//! to the peer, otherwise a Data indication (RFC 8656 §11.6, §12.6).

use super::Transport;
use crate::stun::{attr, channel_data, method, MAGIC_COOKIE};
use std::net::SocketAddr;
use std::ops::Range;

/// STUN message type of a Data indication (method 0x007, class indication).
const DATA_INDICATION: u16 = 0x0017;

/// Writes the framing around `buf[payload]` and returns the range of the whole frame, or
/// `None` if the caller left too little head- or tailroom, or the payload is too long.
pub(crate) fn frame_for_client(
    buf: &mut [u8],
    payload: Range<usize>,
    peer: SocketAddr,
    channel: Option<u16>,
    transport: Transport,
    fingerprint: bool,
    txid_seed: u64,
) -> Option<Range<usize>> {
    let len = payload.len();
    let len16 = u16::try_from(len).ok()?;
    let padded_end = payload.start + ((len + 3) & !3);
    match channel {
        Some(number) => {
            let start = payload.start.checked_sub(channel_data::HEADER_LEN)?;
            // Over a stream, ChannelData is padded to 4 bytes (RFC 8656 §12.5).
            let end = if transport == Transport::Udp {
                payload.end
            } else {
                padded_end
            };
            buf.get_mut(payload.end..end)?.fill(0);
            let header: &mut [u8; 4] = buf.get_mut(start..payload.start)?.try_into().ok()?;
            channel_data::write_header(header, number, len16);
            Some(start..end)
        }
        None => {
            let addr_len = if peer.is_ipv4() { 8 } else { 20 };
            let header_len = 20 + 4 + addr_len + 4;
            let start = payload.start.checked_sub(header_len)?;
            let end = padded_end + if fingerprint { 8 } else { 0 };
            buf.get_mut(payload.end..padded_end)?.fill(0);
            let frame = buf.get_mut(start..end)?;
            debug_assert_eq!(method::DATA, 0x007);
            let mut txid = [0u8; 12];
            txid[..8].copy_from_slice(&txid_seed.to_le_bytes());
            frame[0..2].copy_from_slice(&DATA_INDICATION.to_be_bytes());
            let msg_len = u16::try_from(frame.len() - 20).ok()?;
            frame[2..4].copy_from_slice(&msg_len.to_be_bytes());
            frame[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            frame[8..20].copy_from_slice(&txid);
            let mut at = 20;
            frame[at..at + 2].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
            frame[at + 2..at + 4].copy_from_slice(&(addr_len as u16).to_be_bytes());
            write_xor_address(&mut frame[at + 4..at + 4 + addr_len], peer, &txid);
            at += 4 + addr_len;
            frame[at..at + 2].copy_from_slice(&attr::DATA.to_be_bytes());
            frame[at + 2..at + 4].copy_from_slice(&len16.to_be_bytes());
            if fingerprint {
                let fp_at = frame.len() - 8;
                let crc = crc32fast::hash(&frame[..fp_at]) ^ 0x5354_554e;
                frame[fp_at..fp_at + 2].copy_from_slice(&attr::FINGERPRINT.to_be_bytes());
                frame[fp_at + 2..fp_at + 4].copy_from_slice(&4u16.to_be_bytes());
                frame[fp_at + 4..].copy_from_slice(&crc.to_be_bytes());
            }
            Some(start..end)
        }
    }
}

/// XOR-ADDRESS value (RFC 8489 §14.2) into `out` (8 bytes for IPv4, 20 for IPv6).
fn write_xor_address(out: &mut [u8], addr: SocketAddr, txid: &[u8; 12]) {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    out[0] = 0;
    out[2..4].copy_from_slice(&(addr.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
    match addr {
        SocketAddr::V4(v4) => {
            out[1] = attr::FAMILY_IPV4;
            for (i, b) in v4.ip().octets().iter().enumerate() {
                out[4 + i] = b ^ cookie[i];
            }
        }
        SocketAddr::V6(v6) => {
            out[1] = attr::FAMILY_IPV6;
            for (i, b) in v6.ip().octets().iter().enumerate() {
                let mask = if i < 4 { cookie[i] } else { txid[i - 4] };
                out[4 + i] = b ^ mask;
            }
        }
    }
}

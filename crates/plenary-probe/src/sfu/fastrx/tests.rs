//! The fast path driven like a server would: SRTP made with the server's half of the keys
//! goes in; tracks see the packets, retransmissions count for the lost originals, and the
//! feedback that comes out opens with the server's SRTCP context and parses in str0m.

use super::*;
use plenary_srtp::rtp::{write_rtp_header, RtpFields};
use plenary_srtp::{DtlsRole, SrtpProfile};
use str0m::media::Mid;
use str0m::rtp::rtcp::Rtcp;

const TWCC_ID: u8 = 3;
const MAIN: u32 = 0x1111;
const RTX: u32 = 0x2222;
/// Wall clock as NTP (seconds since 1900 in the top 32 bits).
const NTP: u64 = 3_900_000_000 << 32;

/// The probe's keys and the server's (mirrored) keys from one keying material.
fn keys() -> (SrtpKeys, SrtpKeys) {
    let p = SrtpProfile::AeadAes128Gcm;
    let material: Vec<u8> = (0..p.keying_material_len() as u8).collect();
    (
        SrtpKeys::from_keying_material(p, DtlsRole::Client, &material).unwrap(),
        SrtpKeys::from_keying_material(p, DtlsRole::Server, &material).unwrap(),
    )
}

struct Server {
    out: OutboundSrtp,
    feedback_in: InboundSrtp,
    twcc: u16,
    rtx_seq: u16,
}

impl Server {
    fn new(k: &SrtpKeys) -> Server {
        Server {
            out: OutboundSrtp::new(&k.local).unwrap(),
            feedback_in: InboundSrtp::new(&k.remote).unwrap(),
            twcc: 0,
            rtx_seq: 500,
        }
    }

    /// Video packet `seq` as SRTP, with a transport-wide sequence number.
    fn media(&mut self, seq: u16, payload: &[u8]) -> Vec<u8> {
        self.packet(MAIN, 96, seq, payload)
    }

    /// The RTX of `seq` (RFC 4588: OSN, then the original payload).
    fn rtx(&mut self, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut body = seq.to_be_bytes().to_vec();
        body.extend_from_slice(payload);
        self.rtx_seq += 1;
        self.packet(RTX, 97, self.rtx_seq, &body)
    }

    fn packet(&mut self, ssrc: u32, pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 1500];
        let fields = RtpFields {
            payload_type: pt,
            marker: false,
            seq,
            timestamp: 90 * u32::from(seq),
            ssrc,
        };
        let tw = self.twcc.to_be_bytes();
        self.twcc = self.twcc.wrapping_add(1);
        let h = write_rtp_header(&mut buf, &fields, &[(TWCC_ID, &tw)]).unwrap();
        buf[h..h + payload.len()].copy_from_slice(payload);
        let n = self.out.protect_rtp(&mut buf, h + payload.len()).unwrap();
        buf.truncate(n);
        buf
    }

    /// Opens a feedback datagram and parses every RTCP packet in it with str0m.
    fn feedback(&mut self, datagram: &[u8]) -> Vec<Rtcp> {
        let mut buf = datagram.to_vec();
        let n = self
            .feedback_in
            .unprotect_rtcp(&mut buf, datagram.len())
            .unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        while at < n {
            let words = u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize + 1;
            out.push(Rtcp::try_from(&buf[at..at + 4 * words]).expect("str0m parses it"));
            at += 4 * words;
        }
        out
    }
}

fn fast(probe: &SrtpKeys) -> FastRx {
    let mut f = FastRx::new(probe, 0xfeed, Some(TWCC_ID)).unwrap();
    f.learn(StreamInfo {
        ssrc: MAIN,
        mid: Mid::from("v"),
        kind: crate::sfu::recv::track::TrackKind::Video,
        rtx: Some(RTX),
        nack: true,
    });
    f
}

/// Opens and routes one datagram: (extended seq, payload) if it reached a track.
fn deliver(f: &mut FastRx, datagram: &[u8], now_us: u64) -> Option<(u64, Vec<u8>, bool)> {
    let mut buf = datagram.to_vec();
    let o = f.open(&mut buf, now_us)?;
    match f.route(&buf, &o) {
        Routed::Media {
            seq, payload, rtx, ..
        } => Some((seq, buf[payload.0..payload.1].to_vec(), rtx)),
        _ => None,
    }
}

#[test]
fn a_lost_packet_is_nacked_and_its_rtx_fills_the_hole() {
    let (probe, server_keys) = keys();
    let mut s = Server::new(&server_keys);
    let mut f = fast(&probe);
    let mut got = Vec::new();
    for seq in [10u16, 11, 13, 14] {
        let d = s.media(seq, &[seq as u8; 50]);
        got.push(deliver(&mut f, &d, 1_000 * u64::from(seq)).unwrap());
    }
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        [10, 11, 13, 14]
    );
    // Feedback at 20 ms: a TWCC report of 4 packets (transport seq 0..=3, none lost:
    // the server's loss was before numbering here) and a NACK for 12.
    let mut out = [0u8; 1500];
    let n = f.poll_feedback(20_000, NTP, &mut out).unwrap();
    let fb = s.feedback(&out[..n]);
    let Rtcp::Twcc(t) = &fb[0] else {
        panic!("TWCC first: {fb:?}")
    };
    assert_eq!((*t.sender_ssrc, t.base_seq, t.status_count), (0xfeed, 0, 4));
    let Rtcp::Nack(nack) = &fb[1] else {
        panic!("then a NACK: {fb:?}")
    };
    assert_eq!(*nack.ssrc, MAIN);
    let pairs: Vec<(u16, u16)> = nack.reports.iter().map(|e| (e.pid, e.blp)).collect();
    assert_eq!(pairs, [(12, 0)]);
    assert!(
        f.poll_feedback(20_000, NTP, &mut out).is_none(),
        "nothing more due"
    );
    // The RTX of 12 arrives: the track sees 12 with its original payload.
    let d = s.rtx(12, &[12; 50]);
    assert_eq!(deliver(&mut f, &d, 30_000), Some((12, vec![12; 50], true)));
    assert_eq!(f.counters.rtx, 1);
    // No more NACKs for it; the next TWCC report covers the RTX packet.
    let n = f
        .poll_feedback(20_000 + TWCC_INTERVAL_US, NTP, &mut out)
        .unwrap();
    let fb = s.feedback(&out[..n]);
    assert_eq!(fb.len(), 1, "{fb:?}");
    let Rtcp::Twcc(t) = &fb[0] else { panic!() };
    assert_eq!((t.base_seq, t.status_count), (4, 1));
    assert_eq!(f.counters.nacked, 1);
    assert_eq!(f.counters.twcc_reports, 2);
}

#[test]
fn plis_go_out_with_the_next_feedback() {
    let (probe, server_keys) = keys();
    let mut s = Server::new(&server_keys);
    let mut f = fast(&probe);
    let d = s.media(1, &[1; 10]);
    deliver(&mut f, &d, 0).unwrap();
    let route = f.routes.find(MAIN).unwrap();
    f.request_pli(route);
    f.request_pli(route); // asked twice before sending: one PLI
    assert_eq!(f.next_due_us(), Some(0));
    let mut out = [0u8; 1500];
    let n = f.poll_feedback(1, NTP, &mut out).unwrap();
    let fb = s.feedback(&out[..n]);
    let plis: Vec<_> = fb
        .iter()
        .filter_map(|r| match r {
            Rtcp::Pli(p) => Some((*p.sender_ssrc, *p.ssrc)),
            _ => None,
        })
        .collect();
    assert_eq!(plis, [(0xfeed, MAIN)]);
}

#[test]
fn forged_replayed_and_unknown_packets_reach_no_track() {
    let (probe, server_keys) = keys();
    let mut s = Server::new(&server_keys);
    let mut f = fast(&probe);
    let d = s.media(1, &[1; 10]);
    assert!(deliver(&mut f, &d, 0).is_some());
    assert!(deliver(&mut f, &d, 0).is_none(), "replay");
    let mut forged = s.media(2, &[2; 10]);
    forged[20] ^= 1;
    assert!(deliver(&mut f, &forged, 0).is_none(), "forgery");
    assert_eq!(f.counters.srtp_rejected, 2);
    let other = s.packet(0x9999, 96, 1, &[3; 10]);
    let mut buf = other.clone();
    let o = f.open(&mut buf, 0).unwrap();
    assert_eq!(f.route(&buf, &o), Routed::Unknown);
    // Padding-only RTX (a bandwidth probe): measured nowhere.
    let mut plain = vec![0u8; 1500];
    let fields = RtpFields {
        payload_type: 97,
        seq: 901,
        ssrc: RTX,
        ..RtpFields::default()
    };
    let h = write_rtp_header(&mut plain, &fields, &[]).unwrap();
    plain[0] |= 0x20; // P bit: the 4 bytes after the header are all padding
    plain[h..h + 4].copy_from_slice(&[0, 0, 0, 4]);
    let n = s.out.protect_rtp(&mut plain, h + 4).unwrap();
    let mut buf = plain[..n].to_vec();
    let o = f.open(&mut buf, 0).unwrap();
    assert_eq!(f.route(&buf, &o), Routed::Padding);
    assert_eq!(f.counters.padding, 1);
}

#[test]
fn the_dlrr_answer_times_nack_retries() {
    let (probe, server_keys) = keys();
    let mut s = Server::new(&server_keys);
    let mut f = fast(&probe);
    assert_eq!(
        f.nack_retry_us(),
        105_000,
        "str0m's default RTT until one is measured"
    );
    let mut out = [0u8; 1500];
    let n = f.poll_feedback(0, NTP, &mut out).unwrap();
    let fb = s.feedback(&out[..n]);
    let Some(Rtcp::ExtendedReport(xr)) = fb.first() else {
        panic!("an XR RRTR first: {fb:?}")
    };
    assert_eq!(*xr.ssrc, 0xfeed);
    // The server answers 10 ms later with a DLRR of 10 ms; it arrives 40 ms after the
    // RRTR left: a 30 ms round trip.
    let lrr = (NTP >> 16) as u32;
    let mut xr = vec![0x80, 207, 0, 5, 0, 0, 0, 9, 5, 0, 0, 3];
    xr.extend_from_slice(&0xfeedu32.to_be_bytes());
    xr.extend_from_slice(&lrr.to_be_bytes());
    xr.extend_from_slice(&655u32.to_be_bytes());
    let mut server_out = OutboundSrtp::new(&server_keys.local).unwrap();
    let mut buf = xr.clone();
    buf.resize(xr.len() + 64, 0);
    let n = server_out.protect_rtcp(&mut buf, xr.len()).unwrap();
    buf.truncate(n);
    f.on_rtcp(&mut buf, NTP + (4 << 32) / 100);
    let retry = f.nack_retry_us();
    assert!((retry as i64 - 35_000).abs() < 200, "{retry}");
    assert_eq!(f.counters.rtt_samples, 1);
}

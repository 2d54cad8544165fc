//! Cross-checks against str0m: two `Rtc`s in one process, connected by handing each
//! other's datagrams over (fake loopback addresses, no sockets), with keys captured by the
//! wrapping provider. Our contexts must produce what str0m accepts and accept what str0m
//! produces, for RTP and RTCP, in every profile.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::capture::{build_rtc, build_rtc_forcing, KeySlot};
use crate::rtp::{is_rtcp, is_rtp_or_rtcp, parse_rtp, write_rtp_header, RtpFields};
use crate::{DtlsRole, InboundSrtp, OutboundSrtp, SrtpKeys, SrtpProfile};

struct Side {
    rtc: Rtc,
    slot: KeySlot,
    addr: SocketAddr,
    next_timeout: Instant,
    /// Keys were in the slot when str0m reported `Event::Connected`.
    keys_at_connect: Option<bool>,
    events: Vec<Event>,
    /// What str0m wanted sent, not yet delivered.
    outbox: Vec<Vec<u8>>,
}

impl Side {
    fn new(port: u16, force: Option<SrtpProfile>, now: Instant) -> Side {
        let config = Rtc::builder().set_rtp_mode(true);
        let (mut rtc, slot) = match force {
            Some(p) => build_rtc_forcing(config, now, p),
            None => build_rtc(config, now),
        }
        .expect("key capture wired");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        Side {
            rtc,
            slot,
            addr,
            next_timeout: now,
            keys_at_connect: None,
            events: Vec::new(),
            outbox: Vec::new(),
        }
    }

    fn keys(&self) -> &SrtpKeys {
        self.slot.get().expect("keys captured")
    }

    /// Runs str0m until it waits for time or input.
    fn drain(&mut self, now: Instant) {
        if self.next_timeout <= now {
            self.rtc.handle_input(Input::Timeout(now)).expect("timeout");
        }
        loop {
            match self.rtc.poll_output().expect("poll_output") {
                Output::Timeout(t) => {
                    self.next_timeout = t;
                    return;
                }
                Output::Transmit(t) => self.outbox.push(t.contents.to_vec()),
                Output::Event(e) => {
                    if matches!(e, Event::Connected) {
                        self.keys_at_connect = Some(self.slot.get().is_some());
                    }
                    self.events.push(e);
                }
            }
        }
    }

    fn receive(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        let r = Receive::new(Protocol::Udp, from, self.addr, datagram).expect("datagram");
        self.rtc
            .handle_input(Input::Receive(now, r))
            .expect("handle_input");
    }
}

struct Pair {
    a: Side,
    b: Side,
    now: Instant,
    mid: Mid,
}

impl Pair {
    /// A offers one sendonly video m-line, B answers; runs until DTLS is up on both.
    fn connect(force: Option<SrtpProfile>) -> Pair {
        let now = Instant::now();
        let mut a = Side::new(40_001, force, now);
        let mut b = Side::new(40_002, force, now);
        let mut api = a.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().expect("offer");
        let answer = b.rtc.sdp_api().accept_offer(offer).expect("answer");
        a.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("accept answer");
        let mut pair = Pair { a, b, now, mid };
        for _ in 0..2000 {
            pair.step(true);
            if pair.a.keys_at_connect.is_some() && pair.b.keys_at_connect.is_some() {
                return pair;
            }
        }
        panic!("DTLS did not complete");
    }

    /// One round: both sides drain, optionally deliver what they sent, advance time.
    fn step(&mut self, deliver: bool) {
        self.a.drain(self.now);
        self.b.drain(self.now);
        if deliver {
            for d in std::mem::take(&mut self.a.outbox) {
                self.b.receive(self.a.addr, &d, self.now);
            }
            for d in std::mem::take(&mut self.b.outbox) {
                self.a.receive(self.b.addr, &d, self.now);
            }
        }
        let next = self.a.next_timeout.min(self.b.next_timeout);
        self.now = next.clamp(
            self.now + Duration::from_micros(100),
            self.now + Duration::from_millis(5),
        );
    }

    fn a_ssrc_and_pt(&mut self) -> (u32, Pt) {
        let ssrc = *self
            .a
            .rtc
            .direct_api()
            .stream_tx_by_mid(self.mid, None)
            .expect("A's send stream")
            .ssrc();
        let pt = self
            .a
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .expect("VP8 negotiated")
            .pt();
        (ssrc, pt)
    }
}

fn check_profile(force: Option<SrtpProfile>, expected: SrtpProfile) {
    let mut pair = Pair::connect(force);
    assert_eq!(
        pair.a.keys_at_connect,
        Some(true),
        "A's keys before Connected"
    );
    assert_eq!(
        pair.b.keys_at_connect,
        Some(true),
        "B's keys before Connected"
    );
    let (ka, kb) = (pair.a.keys().clone(), pair.b.keys().clone());
    assert_eq!(ka.profile, expected);
    assert_eq!(kb.profile, expected);
    assert_ne!(ka.role, kb.role, "one DTLS client, one server");
    assert!(matches!(ka.role, DtlsRole::Client | DtlsRole::Server));
    assert_eq!(ka.local, kb.remote);
    assert_eq!(ka.remote, kb.local);
    let (ssrc, pt) = pair.a_ssrc_and_pt();

    // (a) Our SRTP with A's keys, as if A sent it: B's str0m must take it.
    let mut ours = OutboundSrtp::new(&ka.local).unwrap();
    let mut sent = Vec::new();
    for i in 0..5u16 {
        let seq = 1000 + i;
        let payload: Vec<u8> = (0..200).map(|j| (j as u8) ^ (i as u8)).collect();
        let mut buf = [0u8; 1500];
        let fields = RtpFields {
            payload_type: *pt,
            marker: true,
            seq,
            timestamp: 3000 * u32::from(i),
            ssrc,
        };
        let h = write_rtp_header(&mut buf, &fields, &[]).unwrap();
        buf[h..h + payload.len()].copy_from_slice(&payload);
        let n = ours.protect_rtp(&mut buf, h + payload.len()).unwrap();
        pair.b.receive(pair.a.addr, &buf[..n], pair.now);
        pair.b.drain(pair.now);
        sent.push((seq, payload));
    }
    let got: Vec<(u16, Vec<u8>)> = pair
        .b
        .events
        .iter()
        .filter_map(|e| match e {
            Event::RtpPacket(p) => Some((p.header.sequence_number, p.payload.to_vec())),
            _ => None,
        })
        .collect();
    assert_eq!(got, sent, "{expected}: B's str0m decrypted our SRTP");

    // (b) str0m's SRTP from A: our context with B's keys must open it.
    let payload: Vec<u8> = (0..1100).map(|j| (j % 251) as u8).collect();
    pair.a
        .rtc
        .direct_api()
        .stream_tx_by_mid(pair.mid, None)
        .expect("A's send stream")
        .write_rtp(
            RtpWrite::new(pt, SeqNo::from(5000), 90_000, pair.now, payload.clone()).marker(true),
        );
    let mut theirs = InboundSrtp::new(&kb.remote).unwrap();
    let mut opened = None;
    for _ in 0..200 {
        pair.step(false);
        for d in std::mem::take(&mut pair.a.outbox) {
            if !is_rtp_or_rtcp(&d) || is_rtcp(&d) {
                continue;
            }
            let mut buf = d.clone();
            let got = theirs
                .unprotect_rtp(&mut buf, d.len())
                .expect("str0m's SRTP opens");
            let view = parse_rtp(&buf[..got.len]).unwrap();
            if view.seq == 5000 {
                opened = Some(buf[view.header_len..got.len].to_vec());
            }
        }
        pair.b.outbox.clear();
        if opened.is_some() {
            break;
        }
    }
    assert_eq!(
        opened.as_deref(),
        Some(&payload[..]),
        "{expected}: str0m's RTP"
    );

    // (c) str0m's SRTCP from B (a PLI): our context with A's keys must open it.
    pair.b
        .rtc
        .direct_api()
        .stream_rx_by_mid(pair.mid, None)
        .expect("B's receive stream")
        .request_keyframe(KeyframeRequestKind::Pli);
    let mut a_in = InboundSrtp::new(&ka.remote).unwrap();
    let mut saw_pli = false;
    for _ in 0..200 {
        pair.step(false);
        for d in std::mem::take(&mut pair.b.outbox) {
            if !is_rtcp(&d) {
                continue;
            }
            let mut buf = d.clone();
            let n = a_in
                .unprotect_rtcp(&mut buf, d.len())
                .expect("str0m's SRTCP opens");
            saw_pli |= compound_has_pli(&buf[..n], ssrc);
        }
        pair.a.outbox.clear();
        if saw_pli {
            break;
        }
    }
    assert!(saw_pli, "{expected}: str0m's PLI");

    // (d) Our SRTCP PLI with B's keys: A's str0m must report a keyframe request.
    let mut b_out = OutboundSrtp::new(&kb.local).unwrap();
    let mut buf = [0u8; 64];
    buf[..4].copy_from_slice(&[0x81, 206, 0, 2]);
    buf[4..8].copy_from_slice(&0x5eed_u32.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    let n = b_out.protect_rtcp(&mut buf, 12).unwrap();
    pair.a.events.clear();
    pair.a.receive(pair.b.addr, &buf[..n], pair.now);
    pair.a.drain(pair.now);
    let asked = pair.a.events.iter().any(|e| {
        matches!(e, Event::KeyframeRequest(r) if r.mid == pair.mid && r.kind == KeyframeRequestKind::Pli)
    });
    assert!(asked, "{expected}: A's str0m took our PLI");
}

/// Walks an RTCP compound packet for a PLI (PSFB, FMT 1) about `media_ssrc`.
fn compound_has_pli(mut p: &[u8], media_ssrc: u32) -> bool {
    while p.len() >= 4 {
        let len = 4 * (usize::from(u16::from_be_bytes([p[2], p[3]])) + 1);
        if len > p.len() {
            return false;
        }
        if p[1] == 206 && p[0] & 0x1f == 1 && len >= 12 && p[8..12] == media_ssrc.to_be_bytes() {
            return true;
        }
        p = &p[len..];
    }
    false
}

#[test]
fn negotiated_profile_aes_256_gcm_matches_str0m() {
    check_profile(None, SrtpProfile::AeadAes256Gcm);
}

#[test]
fn aes_128_gcm_matches_str0m() {
    check_profile(Some(SrtpProfile::AeadAes128Gcm), SrtpProfile::AeadAes128Gcm);
}

#[test]
fn aes_cm_hmac_sha1_80_matches_str0m() {
    check_profile(
        Some(SrtpProfile::Aes128CmHmacSha1_80),
        SrtpProfile::Aes128CmHmacSha1_80,
    );
}

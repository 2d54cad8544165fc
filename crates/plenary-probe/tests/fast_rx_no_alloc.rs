//! The receive fast path allocates nothing per packet: `recvmmsg` over a real loopback
//! socket, SRTP open, routing, transport-wide and NACK bookkeeping, the track's
//! measurements and the feedback it writes, counted by a global allocator armed only
//! around the packet loop on this thread. (aws-lc's C allocations are not counted; its
//! AES-GCM open works on context and caller memory.)
#![cfg(target_os = "linux")]

use std::net::UdpSocket;

use plenary_probe::sfu::fastrx::routes::StreamInfo;
use plenary_probe::sfu::fastrx::{FastRx, Routed};
use plenary_probe::sfu::media::stamp::Kind;
use plenary_probe::sfu::media::video::{VideoGen, VideoSpec};
use plenary_probe::sfu::recv::track::{RxPacket, TrackKind, TrackRx};
use plenary_srtp::recv_batch::RecvBatch;
use plenary_srtp::rtp::{write_rtp_header, RtpFields};
use plenary_srtp::{DtlsRole, OutboundSrtp, SrtpKeys, SrtpProfile};

use plenary_testalloc::allocations_in;

#[global_allocator]
static ALLOC: plenary_testalloc::Counting = plenary_testalloc::Counting;

const SSRC: u32 = 0x5eed;
const TWCC_ID: u8 = 3;

/// Two seconds of a 30 fps camera as the server would send it: SRTP with a
/// transport-wide sequence number, one packet in 50 dropped (so NACKs are written).
fn server_datagrams(keys: &SrtpKeys) -> Vec<Vec<u8>> {
    let spec = VideoSpec {
        kind: Kind::Camera,
        layer: 0,
        width: 640,
        height: 360,
        fps: 30.0,
        kbps: 500.0,
        keyframe_interval_s: 10.0,
        keyframe_factor: 6.0,
        max_payload: 1150,
        min_keyframe_gap_ms: 200,
    };
    let mut gen = VideoGen::new(spec, 1, 7, 0);
    let mut out = OutboundSrtp::new(&keys.local).unwrap();
    let (mut packets, mut datagrams) = (Vec::new(), Vec::new());
    let mut twcc = 0u16;
    while gen.due_us() < 2_000_000 {
        packets.clear();
        let at = gen.due_us();
        gen.frame(at, &mut packets);
        for p in &packets {
            twcc = twcc.wrapping_add(1);
            if twcc.is_multiple_of(50) {
                continue;
            }
            let mut buf = vec![0u8; 1500];
            let fields = RtpFields {
                payload_type: 96,
                marker: p.marker,
                seq: p.seq as u16,
                timestamp: p.rtp_ts,
                ssrc: SSRC,
            };
            let h = write_rtp_header(&mut buf, &fields, &[(TWCC_ID, &twcc.to_be_bytes())]).unwrap();
            buf[h..h + p.payload.len()].copy_from_slice(&p.payload);
            let n = out.protect_rtp(&mut buf, h + p.payload.len()).unwrap();
            buf.truncate(n);
            datagrams.push(buf);
        }
    }
    datagrams
}

#[test]
fn the_counter_sees_allocations() {
    assert_eq!(
        allocations_in(|| drop(std::hint::black_box(vec![1u8; 64]))),
        1
    );
}

#[test]
fn recv_open_route_measure_and_feedback_do_not_allocate() {
    let p = SrtpProfile::AeadAes128Gcm;
    let material: Vec<u8> = (0..p.keying_material_len() as u8).collect();
    let probe = SrtpKeys::from_keying_material(p, DtlsRole::Client, &material).unwrap();
    let server = SrtpKeys::from_keying_material(p, DtlsRole::Server, &material).unwrap();
    let datagrams = server_datagrams(&server);
    assert!(datagrams.len() > 100);

    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = rx.local_addr().unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut batch = RecvBatch::new(64, 2048);
    let mut fast = FastRx::new(&probe, 0xfeed, Some(TWCC_ID)).unwrap();
    fast.learn(StreamInfo {
        ssrc: SSRC,
        mid: str0m::media::Mid::from("0"),
        kind: TrackKind::Video,
        rtx: Some(SSRC + 1),
        nack: true,
    });
    let mut track = TrackRx::new(TrackKind::Video, 0, 0);
    let mut feedback = vec![0u8; 1500];
    // The first packets create per-stream state (SRTP replay window, first frame).
    let (warm, rest) = datagrams.split_at(20);
    let mut now_us = 0u64;
    let mut run = |chunk: &[Vec<u8>], now_us: &mut u64| {
        for group in chunk.chunks(16) {
            let mut got = 0;
            for d in group {
                tx.send_to(d, to).unwrap();
            }
            *now_us += 33_000;
            while got < group.len() {
                let Ok(n) = batch.recv(&rx) else { continue };
                for i in 0..n {
                    let (buf, _, _) = batch.get_mut(i).unwrap();
                    let Some(o) = fast.open(buf, *now_us) else {
                        continue;
                    };
                    if let Routed::Media { seq, payload, .. } = fast.route(buf, &o) {
                        let ask = track.on_packet(RxPacket {
                            seq,
                            rtp_ts: o.header.fields.timestamp,
                            marker: o.header.fields.marker,
                            payload: &buf[payload.0..payload.1],
                            arrival_us: *now_us,
                        });
                        if ask {
                            fast.request_pli(0);
                        }
                    }
                }
                got += n;
            }
            track.poll(*now_us);
            while fast.poll_feedback(*now_us, 0, &mut feedback).is_some() {}
        }
    };
    run(warm, &mut now_us);
    let count = allocations_in(|| run(rest, &mut now_us));
    assert_eq!(count, 0, "allocations on the receive path");
    let c = fast.counters;
    assert!(c.delivered as usize >= datagrams.len() - 1, "{c:?}");
    assert!(c.twcc_reports >= 3 && c.nacked > 0, "{c:?}");
}

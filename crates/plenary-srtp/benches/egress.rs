//! What one forwarded packet costs on the fast path: RTP header write + payload copy +
//! SRTP protect in place + send, batched with sendmmsg (and GSO) against one `sendto` per
//! packet; and SRTP protect alone per profile. Loopback only.
//!
//! The receiving sockets are never read: the kernel runs the loopback receive path up to
//! the socket queue and drops there once it is full, so the figures include the sender's
//! share of the receive work but not a receiver's wake-ups.
//!
//! Run: `cargo bench -p plenary-srtp --bench egress` (the run time is configured below).

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use plenary_srtp::batch::SendBatch;
use plenary_srtp::rtp::{write_rtp_header, RtpFields};
use plenary_srtp::{MasterKey, OutboundSrtp, SrtpProfile};

const VIDEO: usize = 1100;
const AUDIO: usize = 100;
const PEERS: usize = 32;

fn context(profile: SrtpProfile) -> OutboundSrtp {
    let key = MasterKey::new(
        profile,
        &vec![0x5a; profile.key_len()],
        &vec![0xa5; profile.salt_len()],
    )
    .expect("key");
    OutboundSrtp::new(&key).expect("context")
}

/// Writes one forwarded packet into `buf` as the SFU would: rewritten header with an audio
/// level and a transport-wide sequence number, the shared payload, SRTP in place.
fn build_packet(
    buf: &mut [u8],
    srtp: &mut OutboundSrtp,
    payload: &[u8],
    seq: u16,
    ssrc: u32,
) -> usize {
    let fields = RtpFields {
        payload_type: 96,
        marker: false,
        seq,
        timestamp: u32::from(seq) * 3000,
        ssrc,
    };
    let twcc = seq.to_be_bytes();
    let h = write_rtp_header(buf, &fields, &[(1, &[0x30]), (3, &twcc)]).expect("header");
    buf[h..h + payload.len()].copy_from_slice(payload);
    srtp.protect_rtp(buf, h + payload.len()).expect("protect")
}

struct Net {
    tx: UdpSocket,
    _rx: Vec<UdpSocket>,
    peers: Vec<SocketAddr>,
}

fn net() -> Net {
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let rx: Vec<UdpSocket> = (0..PEERS)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let peers = rx.iter().map(|s| s.local_addr().expect("addr")).collect();
    Net { tx, _rx: rx, peers }
}

fn protect_alone(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp_protect");
    g.throughput(Throughput::Elements(1));
    for profile in [
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
        SrtpProfile::Aes128CmHmacSha1_80,
    ] {
        for (name, size) in [("video_1100", VIDEO), ("audio_100", AUDIO)] {
            let payload = vec![0x42u8; size];
            let mut srtp = context(profile);
            let mut buf = [0u8; 1500];
            let fields = RtpFields {
                payload_type: 96,
                ssrc: 0x1111,
                ..Default::default()
            };
            let h = write_rtp_header(&mut buf, &fields, &[(1, &[0x30]), (3, &[0, 0])]).unwrap();
            let len = h + size;
            buf[h..len].copy_from_slice(&payload);
            let mut seq = 0u16;
            g.bench_function(BenchmarkId::new(profile.to_string(), name), |b| {
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    buf[2..4].copy_from_slice(&seq.to_be_bytes());
                    black_box(srtp.protect_rtp(&mut buf, len).unwrap())
                })
            });
        }
    }
    g.finish();
}

fn egress(c: &mut Criterion) {
    let net = net();
    let mut g = c.benchmark_group("egress_aes128gcm");
    for (name, size) in [("video_1100", VIDEO), ("audio_100", AUDIO)] {
        let payload = vec![0x42u8; size];

        // Today's shape after SRTP: one sendto per packet, subscribers round robin.
        let mut srtp = context(SrtpProfile::AeadAes128Gcm);
        let mut buf = [0u8; 1500];
        let mut seq = 0u16;
        let mut peer = 0;
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("sendto", name), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                peer = (peer + 1) % PEERS;
                let n = build_packet(&mut buf, &mut srtp, &payload, seq, 0x1000 + peer as u32);
                // A full receive queue drops the datagram; the send itself succeeds.
                let _ = net.tx.send_to(&buf[..n], net.peers[peer]);
            })
        });

        for batch_size in [16usize, 32] {
            for (shape, gso, fan_out) in [
                ("sendmmsg_fanout", true, true),
                ("sendmmsg_one_peer_gso", true, false),
                ("sendmmsg_one_peer_nogso", false, false),
            ] {
                let mut batch = SendBatch::new(batch_size, 1500);
                batch.set_gso(gso);
                let mut srtp = context(SrtpProfile::AeadAes128Gcm);
                let mut seq = 0u16;
                g.throughput(Throughput::Elements(batch_size as u64));
                let id = BenchmarkId::new(format!("{shape}_{batch_size}"), name);
                g.bench_function(id, |b| {
                    b.iter(|| {
                        for i in 0..batch_size {
                            seq = seq.wrapping_add(1);
                            let (dest, ssrc) = if fan_out {
                                (net.peers[i % PEERS], 0x1000 + i as u32)
                            } else {
                                (net.peers[0], 0x1000)
                            };
                            let buf = batch.next_buf().expect("room");
                            let n = build_packet(buf, &mut srtp, &payload, seq, ssrc);
                            batch.commit(n, Some(dest));
                        }
                        black_box(batch.flush(&net.tx).expect("flush"))
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the machine has 2 cores shared with other work.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = protect_alone, egress
}
criterion_main!(benches);

//! Hot paths of the STUN/TURN codec: what every authenticated request and every relayed
//! ChannelData packet costs before any server logic runs.

use criterion::{criterion_group, criterion_main, Criterion};
use plenary_turn::stun::{
    attr, channel_data, integrity::long_term_key, method, Class, IntegrityCheck, Message,
    MessageWriter,
};
use std::hint::black_box;
use std::net::SocketAddr;

const TXID: [u8; 12] = *b"bench-txid-1";
const USERNAME: &str = "1700000000:alice";
const REALM: &str = "plenary.example";
const NONCE: &str = "obMatJos2gAAAAAAAAAAAHVzZXJfMQ==";

/// An authenticated Allocate request as a browser sends it after the 401 round trip.
fn allocate_request(key: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Request, &TXID).unwrap();
    w.attr(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0])
        .unwrap();
    w.attr(attr::USERNAME, USERNAME.as_bytes()).unwrap();
    w.attr(attr::REALM, REALM.as_bytes()).unwrap();
    w.attr(attr::NONCE, NONCE.as_bytes()).unwrap();
    w.message_integrity(key).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    buf[..n].to_vec()
}

fn write_allocate_success(
    buf: &mut [u8],
    key: &[u8],
    relayed: SocketAddr,
    mapped: SocketAddr,
) -> usize {
    let mut w = MessageWriter::new(buf, method::ALLOCATE, Class::Success, &TXID).unwrap();
    w.xor_address(attr::XOR_RELAYED_ADDRESS, relayed).unwrap();
    w.xor_address(attr::XOR_MAPPED_ADDRESS, mapped).unwrap();
    w.u32(attr::LIFETIME, 600).unwrap();
    w.message_integrity(key).unwrap();
    w.fingerprint().unwrap();
    w.finish()
}

fn stun_codec(c: &mut Criterion) {
    let key = long_term_key(USERNAME, REALM, "password");
    let request = allocate_request(&key);

    c.bench_function("parse_allocate_request", |b| {
        b.iter(|| Message::parse(black_box(&request)).unwrap())
    });

    c.bench_function("parse_and_read_credentials", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(&request)).unwrap();
            (
                m.get_text(attr::USERNAME).unwrap(),
                m.get_text(attr::REALM).unwrap(),
                m.get_text(attr::NONCE).unwrap(),
            )
        })
    });

    let parsed = Message::parse(&request).unwrap();
    c.bench_function("check_integrity", |b| {
        b.iter(|| {
            assert_eq!(
                black_box(&parsed).check_integrity(black_box(&key)),
                IntegrityCheck::Valid
            )
        })
    });

    c.bench_function("long_term_key", |b| {
        b.iter(|| long_term_key(black_box(USERNAME), black_box(REALM), black_box("password")))
    });

    let mut out = [0u8; 512];
    let relayed: SocketAddr = "203.0.113.9:50000".parse().unwrap();
    let mapped: SocketAddr = "198.51.100.2:41000".parse().unwrap();
    c.bench_function("write_allocate_success", |b| {
        b.iter(|| write_allocate_success(black_box(&mut out), black_box(&key), relayed, mapped))
    });

    // One Opus frame's worth of audio (the turn-relay scenario's 160 B).
    let mut frame = vec![0u8; 4 + 160];
    let mut header = [0u8; 4];
    channel_data::write_header(&mut header, 0x4001, 160);
    frame[..4].copy_from_slice(&header);
    c.bench_function("channel_data_parse", |b| {
        b.iter(|| channel_data::parse(black_box(&frame)).unwrap())
    });
}

criterion_group!(benches, stun_codec);
criterion_main!(benches);

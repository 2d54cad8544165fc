//! The sendmmsg/GSO batcher over real loopback sockets: every datagram arrives once, whole,
//! in order per destination, with and without GSO, connected and unconnected.
#![cfg(target_os = "linux")]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use plenary_srtp::batch::{gso_supported, Flushed, SendBatch};

fn receiver() -> (UdpSocket, SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let addr = sock.local_addr().unwrap();
    (sock, addr)
}

/// Datagram `i`: its index, then a pattern derived from it.
fn datagram(i: usize, len: usize) -> Vec<u8> {
    let mut d: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
    d[..4].copy_from_slice(&(i as u32).to_be_bytes());
    d
}

/// Reads `count` datagrams and checks each is the expected one, in order.
fn expect(sock: &UdpSocket, expected: &[(usize, usize)]) {
    let mut buf = [0u8; 2048];
    for &(i, len) in expected {
        let (n, _) = sock.recv_from(&mut buf).expect("datagram arrives");
        assert_eq!(n, len, "length of datagram {i}");
        assert_eq!(&buf[..n], &datagram(i, len)[..], "contents of datagram {i}");
    }
    // Nothing more: no duplicates.
    sock.set_nonblocking(true).unwrap();
    assert!(sock.recv_from(&mut buf).is_err(), "no extra datagram");
    sock.set_nonblocking(false).unwrap();
}

fn send_video_burst(gso: bool) -> Flushed {
    let (rx, to) = receiver();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut batch = SendBatch::new(32, 1500);
    batch.set_gso(gso);
    // 31 full-size packets and a shorter frame tail: one GSO run where the kernel has it.
    let sizes: Vec<usize> = (0..32).map(|i| if i == 31 { 517 } else { 1128 }).collect();
    for (i, &len) in sizes.iter().enumerate() {
        let buf = batch.next_buf().expect("room");
        buf[..len].copy_from_slice(&datagram(i, len));
        assert!(batch.commit(len, Some(to)));
    }
    assert!(batch.is_full());
    let done = batch.flush(&tx).unwrap();
    assert!(batch.is_empty());
    let expected: Vec<(usize, usize)> = sizes.iter().copied().enumerate().collect();
    expect(&rx, &expected);
    assert_eq!(done.sent, 32);
    assert_eq!(done.dropped, 0);
    done
}

#[test]
fn burst_to_one_peer_arrives_whole_with_gso() {
    let done = send_video_burst(true);
    assert_eq!(done.syscalls, 1);
    if gso_supported() {
        assert_eq!(done.gso_messages, 1, "one GSO message for the run");
    }
}

#[test]
fn burst_without_gso_is_one_syscall_of_plain_datagrams() {
    let done = send_video_burst(false);
    assert_eq!(done.syscalls, 1);
    assert_eq!(done.gso_messages, 0);
}

#[test]
fn interleaved_destinations_each_get_their_datagrams_in_order() {
    let (rx_a, a) = receiver();
    let (rx_b, b) = receiver();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut batch = SendBatch::new(16, 1500);
    let mut want_a = Vec::new();
    let mut want_b = Vec::new();
    // Audio-sized, alternating peers, with a same-peer pair in the middle (a GSO run of 2).
    let plan = [a, b, a, b, a, a, b, b, a, b, a, b, b, a, a, b];
    for (i, &dest) in plan.iter().enumerate() {
        let len = 120 + (i % 3) * 10;
        assert!(batch.push(&datagram(i, len), Some(dest)));
        if dest == a {
            want_a.push((i, len));
        } else {
            want_b.push((i, len));
        }
    }
    let done = batch.flush(&tx).unwrap();
    assert_eq!((done.sent, done.dropped), (16, 0));
    expect(&rx_a, &want_a);
    expect(&rx_b, &want_b);
}

#[test]
fn connected_socket_needs_no_destination() {
    let (rx, to) = receiver();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(to).unwrap();
    let mut batch = SendBatch::new(16, 1500);
    let mut want = Vec::new();
    for i in 0..16 {
        assert!(batch.push(&datagram(i, 1000), None));
        want.push((i, 1000));
    }
    let done = batch.flush(&tx).unwrap();
    assert_eq!((done.sent, done.dropped, done.syscalls), (16, 0, 1));
    expect(&rx, &want);

    // The batch is reused: same buffers, second round.
    for i in 16..20 {
        assert!(batch.push(&datagram(i, 300), None));
    }
    let done = batch.flush(&tx).unwrap();
    assert_eq!(done.sent, 4);
    expect(&rx, &[(16, 300), (17, 300), (18, 300), (19, 300)]);
}

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

/// Three fan-outs of a video frame to three subscribers, queued as a worker queues them
/// (one packet per subscriber per fan-out), then a shorter frame tail each. Grouped, each
/// subscriber's four packets go as one GSO run, in their order; ungrouped, no run forms.
fn fan_outs(group: bool) -> Flushed {
    let rx: Vec<(UdpSocket, SocketAddr)> = (0..3).map(|_| receiver()).collect();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut batch = SendBatch::new(16, 1500);
    batch.set_grouping(group);
    let mut want = vec![Vec::new(); rx.len()];
    let mut i = 0;
    for len in [1100, 1100, 1100, 431] {
        for (sub, (_, to)) in rx.iter().enumerate() {
            assert!(batch.push(&datagram(i, len), Some(*to)));
            want[sub].push((i, len));
            i += 1;
        }
    }
    let done = batch.flush(&tx).unwrap();
    assert_eq!((done.sent, done.dropped, done.syscalls), (12, 0, 1));
    for ((sock, _), want) in rx.iter().zip(&want) {
        expect(sock, want);
    }
    // The batch is reused, grouping included.
    assert!(batch.push(&datagram(99, 200), Some(rx[1].1)));
    assert!(batch.push(&datagram(100, 200), Some(rx[0].1)));
    assert!(batch.push(&datagram(101, 200), Some(rx[1].1)));
    assert_eq!(batch.flush(&tx).unwrap().sent, 3);
    expect(&rx[0].0, &[(100, 200)]);
    expect(&rx[1].0, &[(99, 200), (101, 200)]);
    done
}

#[test]
fn grouping_turns_fan_outs_into_one_gso_run_per_subscriber() {
    let done = fan_outs(true);
    if gso_supported() {
        assert_eq!(done.gso_messages, 3, "one run per subscriber");
    }
}

#[test]
fn without_grouping_fan_outs_form_no_runs() {
    assert_eq!(fan_outs(false).gso_messages, 0);
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

#[test]
fn recv_batch_reads_a_queue_in_one_call_with_sources() {
    use plenary_srtp::recv_batch::RecvBatch;
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = rx.local_addr().unwrap();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut batch = RecvBatch::new(8, 1500);
    assert_eq!(
        batch.recv(&rx).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "an empty queue does not block"
    );
    // 11 datagrams: the first recv takes 8, the second the rest; one is too long.
    for i in 0..11 {
        let from = if i % 2 == 0 { &a } else { &b };
        let len = if i == 9 { 1600 } else { 100 + i };
        from.send_to(&datagram(i, len), to).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut seen = Vec::new();
    for expected in [8, 3] {
        assert_eq!(batch.recv(&rx).unwrap(), expected);
        for k in 0..batch.len() {
            let i = seen.len();
            let (buf, src, truncated) = batch.get_mut(k).unwrap();
            let from = if i % 2 == 0 { &a } else { &b };
            assert_eq!(src, Some(from.local_addr().unwrap()), "source of {i}");
            if i == 9 {
                assert!(truncated && buf.len() == 1500);
            } else {
                assert!(!truncated);
                assert_eq!(&buf[..], &datagram(i, 100 + i)[..], "datagram {i}");
            }
            buf[0] ^= 0xff; // writable in place
            seen.push(i);
        }
    }
    assert!(batch.recv(&rx).is_err(), "nothing left");
    assert_eq!(seen.len(), 11);
}

#[test]
fn recv_batch_gives_kernel_receive_times() {
    use plenary_srtp::recv_batch::{enable_timestamps, RecvBatch};
    use std::time::SystemTime;
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = rx.local_addr().unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut batch = RecvBatch::new(8, 1500);
    tx.send_to(b"before", to).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(batch.recv(&rx).unwrap(), 1);
    assert_eq!(batch.timestamp(0), None, "no stamps until asked for");
    enable_timestamps(&rx).unwrap();
    // The kernel turns receive stamping on through deferred work; until then a datagram is
    // stamped when read. The probe's sockets ask long before media flows.
    std::thread::sleep(Duration::from_millis(50));
    tx.send_to(b"warm-up", to).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(batch.recv(&rx).unwrap(), 1);
    let sent = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    tx.send_to(b"one", to).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    tx.send_to(b"two", to).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let read = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    assert_eq!(batch.recv(&rx).unwrap(), 2);
    let (a, b) = (batch.timestamp(0).unwrap(), batch.timestamp(1).unwrap());
    // Stamped when they arrived, not when read: 30 ms apart, both before the read.
    assert!(a >= sent && b <= read, "{sent:?} {a:?} {b:?} {read:?}");
    assert!(b >= a + Duration::from_millis(25), "{a:?} {b:?}");
    assert_eq!(batch.get_mut(1).unwrap().0, b"two");
}

#[test]
fn recv_batch_with_gro_takes_a_gso_run_as_one_message_that_splits_back() {
    use plenary_srtp::recv_batch::{enable_gro, RecvBatch, GRO_SLOT};
    if !gso_supported() {
        return; // a kernel without UDP_SEGMENT sends no runs to keep whole
    }
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = rx.local_addr().unwrap();
    enable_gro(&rx).unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut send = SendBatch::new(8, 1500);
    // A run of 5 (the last shorter), then a lone datagram of another size.
    let sizes = [1100, 1100, 1100, 1100, 300, 77];
    for (i, &len) in sizes.iter().enumerate() {
        send.next_buf().unwrap()[..len].copy_from_slice(&datagram(i, len));
        send.commit(len, Some(to));
    }
    assert_eq!(send.flush(&tx).unwrap().gso_messages, 1);
    let mut batch = RecvBatch::new(4, GRO_SLOT);
    assert_eq!(batch.recv(&rx).unwrap(), 2, "the run and the lone datagram");
    assert_eq!(batch.segment_size(0), Some(1100));
    let (run, src, cut) = batch.get_mut(0).unwrap();
    assert_eq!(
        (run.len(), src, cut),
        (4700, Some(tx.local_addr().unwrap()), false)
    );
    let split: Vec<Vec<u8>> = run.chunks(1100).map(<[u8]>::to_vec).collect();
    let want: Vec<Vec<u8>> = (0..5).map(|i| datagram(i, sizes[i])).collect();
    assert_eq!(split, want);
    assert_eq!(batch.segment_size(1), None, "a lone datagram is not a run");
    assert_eq!(batch.get_mut(1).unwrap().0, &datagram(5, 77)[..]);

    // Without UDP_GRO the kernel splits the run: one message per datagram.
    let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = plain.local_addr().unwrap();
    for (i, &len) in sizes[..5].iter().enumerate() {
        send.next_buf().unwrap()[..len].copy_from_slice(&datagram(i, len));
        send.commit(len, Some(to));
    }
    send.flush(&tx).unwrap();
    assert_eq!(batch.recv(&plain).unwrap(), 4, "as many as the batch holds");
    assert_eq!(batch.segment_size(0), None);
}

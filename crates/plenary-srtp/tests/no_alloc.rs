//! The hot path allocates nothing per packet once a stream is known: protect, unprotect
//! and a batched flush are counted by a global allocator that only counts while armed on
//! this thread. (aws-lc's own C allocations are outside Rust's allocator and not counted;
//! its AES-GCM seal/open and HMAC work on caller and context memory.)

use plenary_srtp::rtp::{write_rtp_header, RtpFields};
use plenary_srtp::{InboundSrtp, MasterKey, OutboundSrtp, SrtpProfile};

use plenary_testalloc::allocations_in;

#[global_allocator]
static ALLOC: plenary_testalloc::Counting = plenary_testalloc::Counting;

fn packet(buf: &mut [u8], seq: u16, ssrc: u32) -> usize {
    let fields = RtpFields {
        payload_type: 96,
        seq,
        ssrc,
        ..Default::default()
    };
    let h = write_rtp_header(buf, &fields, &[(3, &seq.to_be_bytes())]).unwrap();
    buf[h..h + 1100].fill(0x42);
    h + 1100
}

#[test]
fn the_counter_sees_allocations() {
    let count = allocations_in(|| drop(std::hint::black_box(vec![1u8; 64])));
    assert_eq!(count, 1);
}

#[test]
fn protect_and_unprotect_do_not_allocate_per_packet() {
    for profile in [
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
        SrtpProfile::Aes128CmHmacSha1_80,
    ] {
        let key = MasterKey::new(
            profile,
            &vec![1; profile.key_len()],
            &vec![2; profile.salt_len()],
        )
        .unwrap();
        let mut tx = OutboundSrtp::new(&key).unwrap();
        let mut rx = InboundSrtp::new(&key).unwrap();
        let mut buf = [0u8; 1500];
        // The first packet of each SSRC creates its state.
        for ssrc in [1, 2] {
            let n = packet(&mut buf, 0, ssrc);
            let n = tx.protect_rtp(&mut buf, n).unwrap();
            rx.unprotect_rtp(&mut buf, n).unwrap();
        }
        let count = allocations_in(|| {
            for seq in 1..2000u16 {
                for ssrc in [1, 2] {
                    let n = packet(&mut buf, seq.wrapping_mul(37), ssrc);
                    let n = tx.protect_rtp(&mut buf, n).unwrap();
                    // Reordered on purpose: some indexes arrive after higher ones.
                    let _ = rx.unprotect_rtp(&mut buf, n);
                }
            }
        });
        assert_eq!(count, 0, "{profile}: allocations on the packet path");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn batched_send_does_not_allocate() {
    use plenary_srtp::batch::SendBatch;
    use std::net::UdpSocket;
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = rx.local_addr().unwrap();
    let rx2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to2 = rx2.local_addr().unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut batch = SendBatch::new(32, 1500);
    // Grouping by destination sorts at every flush: in place, too.
    batch.set_grouping(true);
    let payload = [7u8; 1000];
    let count = allocations_in(|| {
        for _ in 0..10 {
            for k in 0..32 {
                assert!(batch.push(&payload, Some(if k % 2 == 0 { to } else { to2 })));
            }
            batch.flush(&tx).unwrap();
        }
    });
    assert_eq!(count, 0);
}

#[cfg(target_os = "linux")]
#[test]
fn batched_recv_does_not_allocate() {
    use plenary_srtp::recv_batch::RecvBatch;
    use std::net::UdpSocket;
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = rx.local_addr().unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut batch = RecvBatch::new(32, 1500);
    let payload = [7u8; 1000];
    let mut got = 0;
    let count = allocations_in(|| {
        for _ in 0..10 {
            for _ in 0..16 {
                tx.send_to(&payload, to).unwrap();
            }
            while let Ok(n) = batch.recv(&rx) {
                for i in 0..n {
                    got += batch.get_mut(i).map_or(0, |d| d.0.len());
                }
            }
        }
    });
    assert_eq!(count, 0);
    assert!(got > 0);
}

use super::*;
use tokio::net::TcpListener;

/// A STUN message of `body` bytes (header only matters for framing).
fn stun(body: usize, fill: u8) -> Vec<u8> {
    let mut m = vec![
        0x00,
        0x01,
        (body >> 8) as u8,
        body as u8,
        0x21,
        0x12,
        0xa4,
        0x42,
    ];
    m.extend_from_slice(&[fill; 12]);
    m.extend(std::iter::repeat_n(fill, body));
    m
}

/// A ChannelData frame with `len` payload bytes, padded to 4 as on TCP.
fn channel_data(len: usize, fill: u8) -> Vec<u8> {
    let mut m = vec![0x40, 0x00, (len >> 8) as u8, len as u8];
    m.extend(std::iter::repeat_n(fill, len));
    while m.len() % 4 != 0 {
        m.push(0);
    }
    m
}

fn feed(fb: &mut FrameBuf, bytes: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, ()> {
    let mut out = Vec::new();
    for c in bytes.chunks(chunk) {
        let mut rest = c;
        while !rest.is_empty() {
            let spare = fb.spare();
            let n = spare.len().min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            fb.filled(n);
            rest = &rest[n..];
            while let Some(f) = fb.next_frame()? {
                out.push(f.to_vec());
            }
        }
    }
    Ok(out)
}

#[test]
fn frames_survive_any_chunking() {
    let frames = [
        stun(8, 1),
        channel_data(5, 2),
        stun(0, 3),
        channel_data(160, 4),
        stun(1000, 5),
    ];
    let stream: Vec<u8> = frames.concat();
    for chunk in [1, 3, 4, 7, 64, 4096, stream.len()] {
        let mut fb = FrameBuf::default();
        let got = feed(&mut fb, &stream, chunk).expect("valid stream");
        assert_eq!(got, frames, "chunk {chunk}");
    }
}

#[test]
fn largest_frames_are_assembled_and_buffer_shrinks_back() {
    let big = stun(0xffff, 9);
    assert_eq!(big.len(), MAX_FRAME);
    let cd = channel_data(0xffff, 8);
    let mut fb = FrameBuf::default();
    let got = feed(
        &mut fb,
        &[big.clone(), cd.clone(), stun(4, 1)].concat(),
        1500,
    )
    .expect("valid");
    assert_eq!(got, [big, cd, stun(4, 1)]);
    fb.spare();
    assert_eq!(fb.buf.len(), INITIAL_READ_BUF);
}

#[test]
fn garbage_is_a_framing_error() {
    let mut fb = FrameBuf::default();
    let mut bytes = stun(4, 1);
    // (Letters read as ChannelData 0x40..=0x7F and wait for their length; 0xFF cannot.)
    bytes.extend_from_slice(b"\xff / HTTP/1.1\r\n");
    assert!(feed(&mut fb, &bytes, 5).is_err());
    let mut fb = FrameBuf::default();
    // Neither STUN nor ChannelData (0x4000..=0x7fff).
    assert!(feed(&mut fb, &[0x80, 0, 0, 4, 1, 2, 3, 4], 8).is_err());
}

#[test]
fn out_queue_is_bounded() {
    let out = ConnOut::default();
    let frame = [0u8; 1000];
    let accepted = (0..1000).take_while(|_| out.push(&frame)).count();
    assert_eq!(accepted, OUT_QUEUE_BYTES / 1000);
    assert!(!out.push(&frame));
    // A smaller frame that still fits is taken.
    assert!(out.push(&[0u8; OUT_QUEUE_BYTES % 1000]));
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    (c.expect("connect"), s.expect("accept").0)
}

#[tokio::test]
async fn read_frames_over_loopback_tcp() {
    let (mut client, server) = tcp_pair().await;
    let frames = vec![
        stun(8, 1),
        channel_data(3, 2),
        stun(0xffff, 3),
        channel_data(1200, 4),
    ];
    let wire = frames.concat();
    let writer = tokio::spawn(async move {
        // Odd chunk sizes so frames straddle reads.
        for c in wire.chunks(777) {
            client.write_all(c).await.expect("write");
            tokio::task::yield_now().await;
        }
        client.shutdown().await.expect("shutdown");
    });
    let mut got = Vec::new();
    let close = read_frames(
        server,
        || Duration::from_secs(10),
        |_, f| got.push(f.to_vec()),
    )
    .await;
    writer.await.expect("writer");
    assert!(matches!(close, Close::Eof), "{close:?}");
    assert_eq!(got, frames);
}

#[tokio::test]
async fn silent_or_dribbling_connection_times_out() {
    let (mut client, server) = tcp_pair().await;
    // Half a frame, then nothing: partial bytes do not count as activity.
    client.write_all(&stun(8, 1)[..10]).await.expect("write");
    let close = read_frames(server, || Duration::from_millis(200), |_, _| {}).await;
    assert!(matches!(close, Close::Idle), "{close:?}");
}

#[tokio::test]
async fn garbage_over_tcp_closes() {
    let (mut client, server) = tcp_pair().await;
    // A first byte that is neither STUN (0x00..=0x3f) nor ChannelData (0x40..=0x7f).
    client.write_all(b"\x80garbage\r\n").await.expect("write");
    let close = read_frames(server, || Duration::from_secs(10), |_, _| {}).await;
    assert!(matches!(close, Close::Framing), "{close:?}");
}

#[tokio::test]
async fn queued_frames_are_written_in_order() {
    let (mut client, server) = tcp_pair().await;
    let out = ConnOut::default();
    let frames = [stun(8, 1), channel_data(100, 2), stun(2000, 3)];
    for f in &frames {
        assert!(out.push(f));
    }
    let expected = frames.concat();
    let reader = async {
        let mut buf = vec![0u8; expected.len()];
        client.read_exact(&mut buf).await.expect("read");
        buf
    };
    let got = tokio::select! {
        got = reader => got,
        c = write_queued(server, &out) => panic!("writer ended: {c:?}"),
    };
    assert_eq!(got, expected);
}

#[tokio::test]
async fn peek_sees_plain_stun_first_byte() {
    let (mut client, server) = tcp_pair().await;
    client.write_all(&stun(0, 0)).await.expect("write");
    let mut b = [0u8; 1];
    assert_eq!(server.peek(&mut b).await.expect("peek"), 1);
    assert!(!is_tls_client_hello(b[0]));
    // Peeking consumed nothing: the frame is still all there.
    let mut got = Vec::new();
    drop(client);
    let close = read_frames(
        server,
        || Duration::from_secs(5),
        |_, f| got.push(f.to_vec()),
    )
    .await;
    assert!(matches!(close, Close::Eof));
    assert_eq!(got, [stun(0, 0)]);
}

#[tokio::test]
async fn http_on_a_fresh_connection_closes_at_once() {
    let (mut client, server) = tcp_pair().await;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // Without the first-frame rule "GET " reads as ChannelData 0x4745 and waits.
    let close = read_frames(server, || Duration::from_secs(10), |_, _| {}).await;
    assert!(matches!(close, Close::Framing), "{close:?}");
}

#[test]
fn channel_data_is_accepted_after_a_first_stun_frame_only() {
    let channel_data = [0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4];
    let mut fb = FrameBuf::default();
    assert!(feed(&mut fb, &channel_data, 8).is_err());
    let mut fb = FrameBuf::default();
    let mut bytes = stun(4, 1);
    bytes.extend_from_slice(&channel_data);
    assert_eq!(feed(&mut fb, &bytes, 5).expect("frames").len(), 2);
}

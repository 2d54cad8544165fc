//! webrtc-rs side of the stack comparison, on the sans-IO `rtc` crate (the core that the
//! async `webrtc` 0.21 crate wraps). Same shape as the str0m binary: `sfu` mode is one
//! thread on one shared UDP socket with ICE-lite; `peers` mode runs 1 publisher + N
//! subscribers, each a full `rtc` peer on its own socket.

use bytes::{Bytes, BytesMut};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol as _;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use stack_common::*;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

type BoxErr = Box<dyn std::error::Error>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let params = Params::from_args(&args);
    match args.get(1).map(String::as_str) {
        Some("peers") => peers_main(params),
        _ => sfu_main(params),
    }
}

fn codec(kind: RtpCodecKind) -> RTCRtpCodec {
    match kind {
        RtpCodecKind::Audio => RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        _ => RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

fn track(kind: RtpCodecKind, ssrc: u32) -> MediaStreamTrack {
    let name = if kind == RtpCodecKind::Audio {
        "audio"
    } else {
        "video"
    };
    MediaStreamTrack::new(
        format!("s-{ssrc}"),
        format!("{name}-{ssrc}"),
        name.to_string(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec(kind),
            ..Default::default()
        }],
    )
}

/// Default codecs and the default interceptors (NACK, RTCP reports, TWCC receiver), as a
/// real SFU would run them.
fn new_pc(lite: Option<(String, String)>) -> Result<RTCPeerConnection, BoxErr> {
    let mut me = MediaEngine::default();
    me.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut me)?;
    let mut se = SettingEngineBuilder::new();
    if let Some((ufrag, pwd)) = lite {
        se = se.with_lite(true).with_ice_credentials(ufrag, pwd);
    }
    Ok(RTCPeerConnectionBuilder::new()
        .with_setting_engine(se.build())
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .build(Instant::now())?)
}

fn add_host_candidate(pc: &mut RTCPeerConnection, addr: SocketAddr) -> Result<(), BoxErr> {
    let c = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&c).to_json()?)?;
    Ok(())
}

fn tagged(local: SocketAddr, src: SocketAddr, data: &[u8]) -> TaggedBytesMut {
    TaggedBytesMut {
        now: Instant::now(),
        transport: TransportContext {
            local_addr: local,
            peer_addr: src,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message: BytesMut::from(data),
    }
}

/// USERNAME of a STUN binding request ("local:remote"), for demuxing on a shared port.
fn stun_username(b: &[u8]) -> Option<&str> {
    if b.len() < 20 || b[0] > 3 || b[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let mut i = 20;
    while i + 4 <= b.len() {
        let t = u16::from_be_bytes([b[i], b[i + 1]]);
        let l = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if i + 4 + l > b.len() {
            return None;
        }
        if t == 0x0006 {
            return std::str::from_utf8(&b[i + 4..i + 4 + l]).ok();
        }
        i += 4 + ((l + 3) & !3);
    }
    None
}

// ============================== SFU process ==============================

struct Client {
    pc: RTCPeerConnection,
    track_kind: HashMap<String, RtpCodecKind>,
    senders: Vec<(RtpCodecKind, RTCRtpSenderId, u32, u8)>, // kind, sender, ssrc, pt
    next_timeout: Instant,
}

fn drain(
    c: &mut Client,
    sock: &UdpSocket,
    media: Option<&mut Vec<(RtpCodecKind, rtc::rtp::Packet)>>,
) {
    let mut media = media;
    while let Some(m) = c.pc.poll_write() {
        counters::tx(m.message.len());
        let _ = sock.send_to(&m.message, m.transport.peer_addr);
    }
    while let Some(ev) = c.pc.poll_event() {
        if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(st) = &ev {
            diag(&format!("sfu: pc {st}"));
        }
        if let RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) = ev {
            let kind =
                c.pc.rtp_receiver(init.receiver_id)
                    .map(|r| r.track().kind());
            if let Some(k) = kind {
                c.track_kind.insert(init.track_id, k);
            }
        }
    }
    while let Some(TaggedRTCMessage { message, .. }) = c.pc.poll_read() {
        if let (RTCMessage::RtpPacket(tid, p), Some(out)) = (message, media.as_deref_mut()) {
            if let Some(k) = c.track_kind.get(&tid) {
                out.push((*k, p));
            }
        }
    }
    // Writes queued by reads (RTCP replies) go out now.
    while let Some(m) = c.pc.poll_write() {
        counters::tx(m.message.len());
        let _ = sock.send_to(&m.message, m.transport.peer_addr);
    }
    c.next_timeout =
        c.pc.poll_timeout()
            .unwrap_or(Instant::now() + Duration::from_secs(3600));
}

fn answer_offer(
    i: usize,
    sdp: String,
    local: SocketAddr,
    publisher: bool,
) -> Result<(Client, String), BoxErr> {
    let ufrag = format!("sfu{i:05}");
    let mut pc = new_pc(Some((ufrag, format!("plenary-stack-compare-pwd-{i:05}"))))?;
    pc.set_remote_description(Instant::now(), RTCSessionDescription::offer(sdp)?)?;
    let mut senders = Vec::new();
    if !publisher {
        // Subscribers offered recvonly; our tracks bind to those transceivers.
        for (k, kind) in [RtpCodecKind::Audio, RtpCodecKind::Video]
            .into_iter()
            .enumerate()
        {
            let ssrc = 0x1000_0000 + (i as u32) * 16 + k as u32;
            let id = pc.add_track(track(kind, ssrc))?;
            senders.push((kind, id, ssrc, 0u8));
        }
    }
    add_host_candidate(&mut pc, local)?;
    let answer = pc.create_answer(None)?;
    pc.set_local_description(Instant::now(), answer)?;
    let sdp = pc
        .local_description()
        .map(|d| d.sdp)
        .ok_or("no local description")?;
    for s in senders.iter_mut() {
        if let Some(mut tx) = pc.rtp_sender(s.1) {
            s.3 = tx
                .get_parameters()
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type)
                .unwrap_or(0);
        }
    }
    Ok((
        Client {
            pc,
            track_kind: HashMap::new(),
            senders,
            next_timeout: Instant::now(),
        },
        sdp,
    ))
}

fn sfu_main(params: Params) {
    let sock = bind_udp(rcvbuf_from_env(4 << 20)).expect("bind");
    let local = sock.local_addr().expect("addr");
    diag(&format!(
        "sfu: socket {local} SO_RCVBUF={}",
        rcvbuf_of(&sock)
    ));
    let rss_base = vm_rss_kb();
    let core = std::env::var("PEER_CORE").unwrap_or_else(|_| "1".into());
    let mut peers = PeersProcess::spawn(params, &core).expect("spawn peers");
    let publisher_idx = params.subscribers;
    let hard_stop = Instant::now() + Duration::from_secs(params.secs + 180);

    let mut clients: Vec<Option<Client>> = (0..=params.subscribers).map(|_| None).collect();
    let mut by_ufrag: HashMap<String, usize> = HashMap::new();
    let mut by_addr: HashMap<SocketAddr, usize> = HashMap::new();
    let mut buf = vec![0u8; 2000];
    let mut media: Vec<(RtpCodecKind, rtc::rtp::Packet)> = Vec::new();
    let (mut forwarded, mut write_failures) = (0u64, 0u64);
    let mut start: Option<(Instant, f64, f64, u64)> = None;
    let mut joined = 0usize;
    let (mut in_audio, mut in_video, mut drops0) = (0u64, 0u64, 0u64);
    let mut us0 = (0.0, 0.0);
    let mut rq0 = 0.0;
    let mut cnt0 = [0u64; 4];
    let mut pub_rx = 0u64;

    loop {
        while let Ok(msg) = peers.rx.try_recv() {
            match msg {
                FromPeers::Offer(i, sdp) => match answer_offer(i, sdp, local, i == publisher_idx) {
                    Ok((mut c, answer)) => {
                        peers.send_answer(i, &answer);
                        drain(&mut c, &sock, None);
                        if i < clients.len() {
                            by_ufrag.insert(format!("sfu{i:05}"), i);
                            clients[i] = Some(c);
                            joined += 1;
                        }
                    }
                    Err(e) => eprintln!("sfu: offer {i}: {e}"),
                },
                FromPeers::Start => {
                    start = Some((
                        Instant::now(),
                        thread_cpu_secs(),
                        process_cpu_secs(),
                        vm_rss_kb(),
                    ));
                    drops0 = udp_rcvbuf_errors();
                    us0 = thread_cpu_user_sys();
                    rq0 = thread_runqueue_wait_secs();
                    cnt0 = counters::snapshot();
                }
                FromPeers::Stop => {
                    if let Some((t0, c0, p0, rss_joined)) = start {
                        let rep = sfu_report(
                            "rtc",
                            joined,
                            forwarded,
                            thread_cpu_secs() - c0,
                            process_cpu_secs() - p0,
                            t0.elapsed().as_secs_f64(),
                            rss_base,
                            rss_joined,
                            vm_rss_kb(),
                        );
                        println!(
                            "{rep} write_failures={write_failures} ingress_audio={in_audio} ingress_video={in_video} \
                             sfu_user_s={:.2} sfu_sys_s={:.2} pub_datagrams_rx={pub_rx} sfu_runqueue_wait_s={:.2} host_udp_rcvbuf_errors={} {}",
                            thread_cpu_user_sys().0 - us0.0,
                            thread_cpu_user_sys().1 - us0.1,
                            thread_runqueue_wait_secs() - rq0,
                            udp_rcvbuf_errors() - drops0,
                            counters::since(cnt0)
                        );
                    }
                }
                FromPeers::Line(l) => println!("{l}"),
                FromPeers::Gone => {
                    let _ = peers.child.wait();
                    return;
                }
            }
        }
        let now = Instant::now();
        if now > hard_stop {
            eprintln!("sfu: hard stop");
            let _ = peers.child.kill();
            let _ = peers.child.wait();
            return;
        }
        for c in clients.iter_mut().flatten() {
            if c.next_timeout <= now {
                counters::TIMER_FIRES.fetch_add(1, Ordering::Relaxed);
                let _ = c.pc.handle_timeout(now);
                drain(c, &sock, None);
            }
        }
        let next = clients
            .iter()
            .flatten()
            .map(|c| c.next_timeout)
            .min()
            .unwrap_or(now + Duration::from_millis(5));
        let wait = next
            .saturating_duration_since(now)
            .clamp(Duration::from_micros(200), Duration::from_millis(5));
        let _ = sock.set_read_timeout(Some(wait));
        counters::WAKEUPS.fetch_add(1, Ordering::Relaxed);
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(v) => v,
            Err(_) => continue,
        };
        // Demux: known address, else the SFU-side ufrag in a STUN USERNAME.
        let idx = by_addr.get(&src).copied().or_else(|| {
            let user = stun_username(&buf[..n])?;
            let i = *by_ufrag.get(user.split(':').next()?)?;
            by_addr.insert(src, i);
            Some(i)
        });
        let Some(idx) = idx else { continue };
        if idx == publisher_idx && start.is_some() {
            pub_rx += 1;
        }
        let Some(c) = clients[idx].as_mut() else {
            continue;
        };
        if let Err(e) = c.pc.handle_read(tagged(local, src, &buf[..n])) {
            eprintln!("sfu: handle_read {idx}: {e}");
        }
        media.clear();
        let out = if idx == publisher_idx {
            Some(&mut media)
        } else {
            None
        };
        drain(c, &sock, out);

        for (k, _) in &media {
            if *k == RtpCodecKind::Audio {
                in_audio += 1;
            } else {
                in_video += 1;
            }
        }
        if !media.is_empty() {
            let now = Instant::now();
            for sub in clients[..publisher_idx].iter_mut().flatten() {
                for (kind, p) in &media {
                    let Some(&(_, id, ssrc, pt)) = sub.senders.iter().find(|s| s.0 == *kind) else {
                        write_failures += 1;
                        continue;
                    };
                    let mut out = p.clone();
                    out.header.ssrc = ssrc;
                    out.header.payload_type = pt;
                    let ok = sub
                        .pc
                        .rtp_sender(id)
                        .map(|mut tx| tx.write_rtp(now, out).is_ok());
                    if ok == Some(true) {
                        forwarded += 1;
                    } else {
                        write_failures += 1;
                    }
                }
                drain(sub, &sock, None);
            }
        }
    }
}

// ============================== peers process ==============================

struct Shared {
    connected: AtomicUsize,
    go: AtomicBool,
    publisher_done: AtomicBool,
    stop: AtomicBool,
    sent_audio: AtomicU64,
    sent_video: AtomicU64,
    pub_tx: AtomicU64,
    got: Vec<(AtomicU64, AtomicU64)>,
}

fn peers_main(params: Params) {
    let n = params.subscribers;
    let shared = Arc::new(Shared {
        connected: AtomicUsize::new(0),
        go: AtomicBool::new(false),
        publisher_done: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        sent_audio: AtomicU64::new(0),
        sent_video: AtomicU64::new(0),
        pub_tx: AtomicU64::new(0),
        got: (0..n)
            .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
            .collect(),
    });
    let mut routes = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..=n {
        let (tx, rx) = mpsc::channel::<String>();
        routes.push(tx);
        rxs.push(Some(rx));
    }
    peers_route_answers(routes);
    let mut handles = Vec::new();
    for (i, rx) in rxs.iter_mut().enumerate().take(n) {
        let (rx, sh) = (rx.take().expect("rx"), shared.clone());
        handles.push(std::thread::spawn(move || {
            if let Err(e) = run_peer(i, false, rx, sh, params.secs) {
                eprintln!("peer {i}: {e}");
            }
        }));
    }
    let wait_for = |count: usize, secs: u64| {
        let until = Instant::now() + Duration::from_secs(secs);
        while shared.connected.load(Ordering::SeqCst) < count && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        shared.connected.load(Ordering::SeqCst)
    };
    let subs_up = wait_for(n, 60);
    let (rx, sh) = (rxs[n].take().expect("rx"), shared.clone());
    handles.push(std::thread::spawn(move || {
        if let Err(e) = run_peer(n, true, rx, sh, params.secs) {
            eprintln!("publisher: {e}");
        }
    }));
    let all_up = wait_for(subs_up + 1, 30);
    peers_send_line(&format!(
        "peers: subscribers_connected={subs_up} total_connected={all_up}"
    ));

    std::thread::sleep(Duration::from_millis(500));
    let (c0, t0) = (process_cpu_secs(), Instant::now());
    peers_send_line("START");
    shared.go.store(true, Ordering::SeqCst);
    let until = Instant::now() + Duration::from_secs(params.secs + 10);
    while !shared.publisher_done.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Count what arrives late too: loss is what never arrives, lag shows in the SFU's
    // runqueue wait instead.
    let total = || {
        shared
            .got
            .iter()
            .map(|(a, v)| a.load(Ordering::Relaxed) + v.load(Ordering::Relaxed))
            .sum()
    };
    wait_quiet(total, Duration::from_secs(30));
    peers_send_line("STOP");
    let (cpu, wall) = (process_cpu_secs() - c0, t0.elapsed().as_secs_f64());
    shared.stop.store(true, Ordering::SeqCst);
    for h in handles {
        let _ = h.join();
    }
    let got: Vec<(u64, u64)> = shared
        .got
        .iter()
        .map(|(a, v)| (a.load(Ordering::SeqCst), v.load(Ordering::SeqCst)))
        .collect();
    let sum = loss_summary(
        shared.sent_audio.load(Ordering::SeqCst),
        shared.sent_video.load(Ordering::SeqCst),
        &got,
    );
    peers_send_line(&format!("LOSS stack=rtc {sum}"));
    peers_send_line(&format!(
        "LOADGEN stack=rtc peers_cpu_s={cpu:.2} wall_s={wall:.2} peers_core_util={:.0}% publisher_media_datagrams_tx={}",
        100.0 * cpu / wall.max(0.001),
        shared.pub_tx.load(Ordering::SeqCst)
    ));
}

fn run_peer(
    idx: usize,
    publisher: bool,
    answers: mpsc::Receiver<String>,
    sh: Arc<Shared>,
    secs: u64,
) -> Result<(), BoxErr> {
    let sock = bind_udp(rcvbuf_from_env(1 << 20))?;
    let local = sock.local_addr()?;
    let mut pc = new_pc(None)?;
    // kind, sender, ssrc, pt
    let mut senders: Vec<(RtpCodecKind, RTCRtpSenderId, u32, u8)> = Vec::new();
    for (k, kind) in [RtpCodecKind::Audio, RtpCodecKind::Video]
        .into_iter()
        .enumerate()
    {
        if publisher {
            let ssrc = 0x2000_0000 + k as u32;
            senders.push((kind, pc.add_track(track(kind, ssrc))?, ssrc, 0));
        } else {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            };
            pc.add_transceiver_from_kind(kind, Some(init))?;
        }
    }
    let offer = pc.create_offer(None)?;
    pc.set_local_description(Instant::now(), offer)?;
    add_host_candidate(&mut pc, local)?;
    let sdp = pc
        .local_description()
        .map(|d| d.sdp)
        .ok_or("no local description")?;
    peers_send_offer(idx, &sdp);
    let answer = answers.recv_timeout(Duration::from_secs(60))?;
    pc.set_remote_description(Instant::now(), RTCSessionDescription::answer(answer)?)?;
    for s in senders.iter_mut() {
        if let Some(mut tx) = pc.rtp_sender(s.1) {
            s.3 = tx
                .get_parameters()
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type)
                .unwrap_or(0);
        }
    }

    let video_first = Bytes::from(video_payload(true));
    let video_rest = Bytes::from(video_payload(false));
    let audio = Bytes::from(audio_payload());
    let mut track_kind: HashMap<String, RtpCodecKind> = HashMap::new();
    let mut sched: Option<Schedule> = None;
    let mut due = Vec::new();
    let mut buf = vec![0u8; 2000];
    let mut connected = false;

    loop {
        while let Some(m) = pc.poll_write() {
            let _ = sock.send_to(&m.message, m.transport.peer_addr);
            if publisher && sched.is_some() && m.message.len() >= 150 {
                sh.pub_tx.fetch_add(1, Ordering::Relaxed);
            }
        }
        while let Some(ev) = pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(st) = &ev {
                diag(&format!("peer {idx}: pc {st}"));
            }
            match ev {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                    RTCPeerConnectionState::Connected,
                ) if !connected => {
                    connected = true;
                    sh.connected.fetch_add(1, Ordering::SeqCst);
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    if let Some(k) = pc.rtp_receiver(init.receiver_id).map(|r| r.track().kind()) {
                        track_kind.insert(init.track_id, k);
                    }
                }
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = pc.poll_read() {
            if let RTCMessage::RtpPacket(tid, _) = message {
                let g = &sh.got[idx.min(sh.got.len().saturating_sub(1))];
                match track_kind.get(&tid) {
                    Some(RtpCodecKind::Audio) if !publisher => {
                        g.0.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(RtpCodecKind::Video) if !publisher => {
                        g.1.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }
        if sh.stop.load(Ordering::Relaxed) {
            let _ = pc.close();
            return Ok(());
        }
        let now = Instant::now();
        let timeout = pc.poll_timeout().unwrap_or(now + Duration::from_secs(1));
        let mut deadline = timeout.min(now + Duration::from_millis(20));
        if publisher && sh.go.load(Ordering::Relaxed) {
            let s = sched.get_or_insert_with(|| Schedule::new(now, secs));
            if s.finished(now) {
                if !sh.publisher_done.load(Ordering::SeqCst) {
                    sh.sent_audio.store(s.audio_total, Ordering::SeqCst);
                    sh.sent_video.store(s.video_total, Ordering::SeqCst);
                    sh.publisher_done.store(true, Ordering::SeqCst);
                }
            } else {
                s.due(now, &mut due);
                let wrote = !due.is_empty();
                for d in &due {
                    let kind = if d.video {
                        RtpCodecKind::Video
                    } else {
                        RtpCodecKind::Audio
                    };
                    let Some(&(_, id, ssrc, pt)) = senders.iter().find(|s| s.0 == kind) else {
                        continue;
                    };
                    let payload = if !d.video {
                        audio.clone()
                    } else if d.seq % VIDEO_PKTS_PER_FRAME as u64 == 1 {
                        video_first.clone()
                    } else {
                        video_rest.clone()
                    };
                    let pkt = rtc::rtp::Packet {
                        header: rtc::rtp::Header {
                            version: 2,
                            marker: d.marker,
                            payload_type: pt,
                            sequence_number: d.seq as u16,
                            timestamp: d.rtp_time,
                            ssrc,
                            ..Default::default()
                        },
                        payload,
                    };
                    if let Some(mut tx) = pc.rtp_sender(id) {
                        let _ = tx.write_rtp(now, pkt);
                    }
                }
                if wrote {
                    continue;
                }
                deadline = deadline.min(s.next_deadline());
            }
        }
        if timeout <= now {
            let _ = pc.handle_timeout(now);
            continue;
        }
        let wait = deadline
            .saturating_duration_since(now)
            .max(Duration::from_micros(100));
        let _ = sock.set_read_timeout(Some(wait));
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => {
                let _ = pc.handle_read(tagged(local, src, &buf[..n]));
            }
            Err(_) => {
                let _ = pc.handle_timeout(Instant::now());
            }
        }
    }
}

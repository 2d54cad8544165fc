//! str0m side of the stack comparison. `sfu` mode: one thread, one shared UDP socket,
//! ICE-lite, RTP mode; it starts the `peers` mode (1 publisher + N subscribers, each a full
//! str0m peer with its own socket) as a child pinned to another core.

use stack_common::*;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let params = Params::from_args(&args);
    match args.get(1).map(String::as_str) {
        Some("peers") => peers_main(params),
        _ => sfu_main(params),
    }
}

// ============================== SFU process ==============================

struct Client {
    rtc: Rtc,
    kinds: HashMap<Mid, MediaKind>,
    next_timeout: Instant,
}

/// Sends what the Rtc wants sent; hands media packets from the publisher to `media`.
fn drain(c: &mut Client, sock: &UdpSocket, media: Option<&mut Vec<(MediaKind, RtpPacket)>>) {
    let mut media = media;
    loop {
        match c.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                c.next_timeout = t;
                return;
            }
            Ok(Output::Transmit(t)) => {
                counters::tx(t.contents.len());
                let _ = sock.send_to(&t.contents, t.destination);
            }
            Ok(Output::Event(e)) => match e {
                Event::MediaAdded(m) => {
                    c.kinds.insert(m.mid, m.kind);
                }
                Event::IceConnectionStateChange(st) => diag(&format!("sfu: ice {st:?}")),
                Event::RtpPacket(p) => {
                    if let Some(out) = media.as_deref_mut() {
                        let mid = c
                            .rtc
                            .direct_api()
                            .stream_rx(&p.header.ssrc)
                            .map(|s| s.mid());
                        if let Some(kind) = mid.and_then(|m| c.kinds.get(&m)) {
                            out.push((*kind, p));
                        }
                    }
                }
                _ => {}
            },
            Err(e) => {
                eprintln!("sfu: poll_output: {e}");
                c.next_timeout = Instant::now() + Duration::from_secs(3600);
                return;
            }
        }
    }
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
    let mut by_addr: HashMap<SocketAddr, usize> = HashMap::new();
    let mut buf = vec![0u8; 2000];
    let mut media: Vec<(MediaKind, RtpPacket)> = Vec::new();
    let mut forwarded: u64 = 0;
    let mut write_failures: u64 = 0;
    let mut start: Option<(Instant, f64, f64, u64)> = None;
    let mut joined = 0usize;
    let (mut in_audio, mut in_video, mut drops0) = (0u64, 0u64, 0u64);
    let mut us0 = (0.0, 0.0);
    let mut rq0 = 0.0;
    let mut cnt0 = [0u64; 4];
    let mut pub_rx = 0u64;

    loop {
        // Signaling, never blocking the media loop.
        while let Ok(msg) = peers.rx.try_recv() {
            match msg {
                FromPeers::Offer(i, sdp) => {
                    let mut rtc = RtcConfig::new()
                        .set_ice_lite(true)
                        .set_rtp_mode(true)
                        .build(Instant::now());
                    rtc.add_local_candidate(Candidate::host(local, "udp").expect("cand"));
                    let answer = SdpOffer::from_sdp_string(&sdp)
                        .map_err(|e| e.to_string())
                        .and_then(|o| rtc.sdp_api().accept_offer(o).map_err(|e| e.to_string()));
                    match answer {
                        Ok(a) => {
                            peers.send_answer(i, &a.to_sdp_string());
                            let mut c = Client {
                                rtc,
                                kinds: HashMap::new(),
                                next_timeout: Instant::now(),
                            };
                            drain(&mut c, &sock, None);
                            if i < clients.len() {
                                clients[i] = Some(c);
                                joined += 1;
                            }
                        }
                        Err(e) => eprintln!("sfu: offer {i}: {e}"),
                    }
                }
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
                            "str0m",
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

        // Timers due.
        for c in clients.iter_mut().flatten() {
            if c.next_timeout <= now {
                counters::TIMER_FIRES.fetch_add(1, Ordering::Relaxed);
                let _ = c.rtc.handle_input(Input::Timeout(now));
                drain(c, &sock, None);
            }
        }

        // Wait for a datagram, at most until the next timer, and at most 5 ms so
        // signaling stays responsive.
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
        let now = Instant::now();
        let Ok(recv) = Receive::new(Protocol::Udp, src, local, &buf[..n]) else {
            continue;
        };
        let input = Input::Receive(now, recv);

        // Demux: known source address first, else ask each Rtc (STUN ufrag match).
        let idx = match by_addr.get(&src) {
            Some(&i) => Some(i),
            None => {
                let found = clients
                    .iter()
                    .position(|c| c.as_ref().is_some_and(|c| c.rtc.accepts(&input)));
                if let Some(i) = found {
                    by_addr.insert(src, i);
                }
                found
            }
        };
        let Some(idx) = idx else { continue };
        if idx == publisher_idx && start.is_some() {
            pub_rx += 1;
        }
        let Some(c) = clients[idx].as_mut() else {
            continue;
        };
        if let Err(e) = c.rtc.handle_input(input) {
            eprintln!("sfu: handle_input {idx}: {e}");
            continue;
        }
        media.clear();
        let out = if idx == publisher_idx {
            Some(&mut media)
        } else {
            None
        };
        drain(c, &sock, out);

        // Forward every publisher packet to every subscriber.
        for (k, _) in &media {
            if *k == MediaKind::Audio {
                in_audio += 1;
            } else {
                in_video += 1;
            }
        }
        if !media.is_empty() {
            for sub in clients[..publisher_idx].iter_mut().flatten() {
                for (kind, p) in &media {
                    let mid = sub.kinds.iter().find(|(_, k)| *k == kind).map(|(m, _)| *m);
                    let Some(mid) = mid else {
                        write_failures += 1;
                        continue;
                    };
                    let mut api = sub.rtc.direct_api();
                    let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                        write_failures += 1;
                        continue;
                    };
                    tx.write_rtp(
                        RtpWrite::new(
                            p.header.payload_type,
                            p.seq_no,
                            p.header.timestamp,
                            p.timestamp,
                            p.payload.clone(),
                        )
                        .marker(p.header.marker)
                        .nackable(*kind == MediaKind::Video),
                    );
                    forwarded += 1;
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
            run_peer(i, false, rx, sh, params.secs)
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
        run_peer(n, true, rx, sh, params.secs)
    }));
    let all_up = wait_for(subs_up + 1, 30);
    peers_send_line(&format!(
        "peers: subscribers_connected={subs_up} total_connected={all_up}"
    ));

    // Let any join-time work settle before the measured window.
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
    peers_send_line(&format!("LOSS stack=str0m {sum}"));
    peers_send_line(&format!(
        "LOADGEN stack=str0m peers_cpu_s={cpu:.2} wall_s={wall:.2} peers_core_util={:.0}% publisher_media_datagrams_tx={}",
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
) {
    let sock = bind_udp(rcvbuf_from_env(1 << 20)).expect("bind");
    let local = sock.local_addr().expect("addr");
    let mut rtc = RtcConfig::new().set_rtp_mode(true).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").expect("cand"));
    let dir = if publisher {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    };
    let mut api = rtc.sdp_api();
    let amid = api.add_media(MediaKind::Audio, dir, None, None, None);
    let vmid = api.add_media(MediaKind::Video, dir, None, None, None);
    let Some((offer, pending)) = api.apply() else {
        return;
    };
    peers_send_offer(idx, &offer.to_sdp_string());
    let Ok(answer) = answers.recv_timeout(Duration::from_secs(60)) else {
        eprintln!("peer {idx}: no answer");
        return;
    };
    let accepted = SdpAnswer::from_sdp_string(&answer)
        .map_err(|e| e.to_string())
        .and_then(|a| {
            rtc.sdp_api()
                .accept_answer(pending, a)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = accepted {
        eprintln!("peer {idx}: answer: {e}");
        return;
    }

    let (apt, vpt) = {
        // RTP mode has no Writer; the first negotiated PT is the codec to claim.
        let pt_of = |rtc: &Rtc, mid| rtc.media(mid).and_then(|m| m.remote_pts().first().copied());
        (pt_of(&rtc, amid), pt_of(&rtc, vmid))
    };
    let video_first: Arc<[u8]> = video_payload(true).into();
    let video_rest: Arc<[u8]> = video_payload(false).into();
    let audio: Arc<[u8]> = audio_payload().into();
    let mut sched: Option<Schedule> = None;
    let mut due = Vec::new();
    let mut buf = vec![0u8; 2000];
    let mut connected = false;

    loop {
        // Outputs until the Rtc asks for a timer.
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = sock.send_to(&t.contents, t.destination);
                    if publisher && sched.is_some() && t.contents.len() >= 150 {
                        sh.pub_tx.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Output::Event(Event::IceConnectionStateChange(st))) => {
                    diag(&format!("peer {idx}: ice {st:?}"));
                }
                Ok(Output::Event(Event::Connected)) => {
                    if !connected {
                        connected = true;
                        sh.connected.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Ok(Output::Event(Event::RtpPacket(p))) if !publisher => {
                    let mid = rtc.direct_api().stream_rx(&p.header.ssrc).map(|s| s.mid());
                    let g = &sh.got[idx];
                    if mid == Some(amid) {
                        g.0.fetch_add(1, Ordering::Relaxed);
                    } else if mid == Some(vmid) {
                        g.1.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("peer {idx}: {e}");
                    return;
                }
            }
        };
        if sh.stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
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
                    let (mid, pt) = if d.video { (vmid, vpt) } else { (amid, apt) };
                    let Some(pt) = pt else { continue };
                    let payload = if !d.video {
                        audio.clone()
                    } else if d.seq % VIDEO_PKTS_PER_FRAME as u64 == 1 {
                        video_first.clone()
                    } else {
                        video_rest.clone()
                    };
                    if let Some(tx) = rtc.direct_api().stream_tx_by_mid(mid, None) {
                        tx.write_rtp(
                            RtpWrite::new(pt, d.seq.into(), d.rtp_time, now, payload)
                                .marker(d.marker)
                                .nackable(d.video),
                        );
                    }
                }
                if wrote {
                    continue; // flush the writes before sleeping
                }
                deadline = deadline.min(s.next_deadline());
            }
        }
        let wait = deadline
            .saturating_duration_since(now)
            .max(Duration::from_micros(100));
        let _ = sock.set_read_timeout(Some(wait));
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => {
                if let Ok(r) = Receive::new(Protocol::Udp, src, local, &buf[..n]) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), r));
                }
            }
            Err(_) => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }
}

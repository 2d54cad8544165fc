//! Async `webrtc` 0.21 side of the comparison (webrtc-rs's runtime layer over `rtc`). SFU only:
//! the peers are the `rtc-sfu peers` process (same webrtc-rs core), picked via PEERS_EXE.
//! Each peer connection binds its own loopback socket: this crate's driver owns sockets per
//! connection, so one shared port is not available here. ICE-lite is on. Everything runs on
//! one tokio current-thread runtime, so the main thread's CPU is the SFU's CPU.

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use stack_common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder,
};
use webrtc::runtime::TokioRuntime;

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

/// Readings at START: wall, thread CPU, process CPU, RSS, (user, sys), runqueue wait.
type Window = (Instant, f64, f64, u64, (f64, f64), f64);

struct Sub {
    audio: (Arc<TrackLocalStaticRTP>, u32),
    video: (Arc<TrackLocalStaticRTP>, u32),
}

/// Shared by all connection handlers: the subscriber tracks and the counters.
#[derive(Default)]
struct Hub {
    subs: RwLock<Vec<Sub>>,
    forwarded: AtomicU64,
    write_failures: AtomicU64,
    in_audio: AtomicU64,
    in_video: AtomicU64,
}

struct Handler {
    hub: Arc<Hub>,
    publisher: bool,
    gathered: tokio::sync::mpsc::Sender<()>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        diag(&format!("sfu: pc {state}"));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if !self.publisher {
            return;
        }
        let hub = self.hub.clone();
        tokio::spawn(async move {
            let kind = track.kind().await;
            while let Some(ev) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(p) = ev else {
                    continue;
                };
                if kind == RtpCodecKind::Audio {
                    hub.in_audio.fetch_add(1, Ordering::Relaxed);
                } else {
                    hub.in_video.fetch_add(1, Ordering::Relaxed);
                }
                let subs = hub.subs.read().await;
                for s in subs.iter() {
                    let (t, ssrc) = if kind == RtpCodecKind::Audio {
                        &s.audio
                    } else {
                        &s.video
                    };
                    let mut out = p.clone();
                    out.header.ssrc = *ssrc;
                    if t.write_rtp(out).await.is_ok() {
                        hub.forwarded.fetch_add(1, Ordering::Relaxed);
                    } else {
                        hub.write_failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
}

fn track(kind: RtpCodecKind, ssrc: u32) -> MediaStreamTrack {
    let (name, codec) = if kind == RtpCodecKind::Audio {
        (
            "audio",
            RTCRtpCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
        )
    } else {
        (
            "video",
            RTCRtpCodec {
                mime_type: "video/VP8".into(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
        )
    };
    MediaStreamTrack::new(
        format!("s-{ssrc}"),
        format!("{name}-{ssrc}"),
        name.into(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )
}

async fn answer(
    i: usize,
    sdp: String,
    publisher: bool,
    hub: &Arc<Hub>,
) -> Result<(Box<dyn PeerConnection>, String), BoxErr> {
    let (gtx, mut grx) = tokio::sync::mpsc::channel(1);
    let mut me = MediaEngine::default();
    me.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut me)?;
    let se = SettingEngineBuilder::new()
        .with_lite(true)
        .with_include_loopback_candidate(true)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_setting_engine(se)
        .with_handler(Arc::new(Handler {
            hub: hub.clone(),
            publisher,
            gathered: gtx,
        }))
        .with_runtime(Arc::new(TokioRuntime))
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await?;
    pc.set_remote_description(RTCSessionDescription::offer(sdp)?)
        .await?;
    if !publisher {
        let (a, v) = (0x1000_0000 + i as u32 * 16, 0x1000_0001 + i as u32 * 16);
        let at = Arc::new(TrackLocalStaticRTP::new(track(RtpCodecKind::Audio, a)));
        let vt = Arc::new(TrackLocalStaticRTP::new(track(RtpCodecKind::Video, v)));
        pc.add_track(at.clone() as Arc<dyn TrackLocal>).await?;
        pc.add_track(vt.clone() as Arc<dyn TrackLocal>).await?;
        hub.subs.write().await.push(Sub {
            audio: (at, a),
            video: (vt, v),
        });
    }
    let ans = pc.create_answer(None).await?;
    pc.set_local_description(ans).await?;
    // Host candidates come from the driver's socket; wait for them before answering.
    let _ = tokio::time::timeout(Duration::from_secs(5), grx.recv()).await;
    let sdp = pc
        .local_description()
        .await
        .ok_or("no local description")?
        .sdp;
    Ok((Box::new(pc), sdp))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let params = Params::from_args(&args);
    if std::env::var_os("PEERS_EXE").is_none() {
        // Default: the rtc-sfu binary next to this one runs the peers.
        if let Ok(me) = std::env::current_exe() {
            std::env::set_var("PEERS_EXE", me.with_file_name("rtc-sfu"));
        }
    }
    let rss_base = vm_rss_kb();
    let core = std::env::var("PEER_CORE").unwrap_or_else(|_| "1".into());
    let mut peers = PeersProcess::spawn(params, &core).expect("spawn peers");
    let hub = Arc::new(Hub::default());
    let mut pcs: Vec<Box<dyn PeerConnection>> = Vec::new();
    let hard_stop = Instant::now() + Duration::from_secs(params.secs + 180);
    let mut start: Option<Window> = None;

    loop {
        let msg = match peers.rx.try_recv() {
            Ok(m) => m,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                if Instant::now() > hard_stop {
                    eprintln!("sfu: hard stop");
                    let _ = peers.child.kill();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Err(_) => FromPeers::Gone,
        };
        match msg {
            FromPeers::Offer(i, sdp) => match answer(i, sdp, i == params.subscribers, &hub).await {
                Ok((pc, sdp)) => {
                    peers.send_answer(i, &sdp);
                    pcs.push(pc);
                }
                Err(e) => eprintln!("sfu: offer {i}: {e}"),
            },
            FromPeers::Start => {
                start = Some((
                    Instant::now(),
                    thread_cpu_secs(),
                    process_cpu_secs(),
                    vm_rss_kb(),
                    thread_cpu_user_sys(),
                    thread_runqueue_wait_secs(),
                ));
            }
            FromPeers::Stop => {
                if let Some((t0, c0, p0, rss_joined, us0, rq0)) = start {
                    let rep = sfu_report(
                        "webrtc",
                        pcs.len(),
                        hub.forwarded.load(Ordering::Relaxed),
                        thread_cpu_secs() - c0,
                        process_cpu_secs() - p0,
                        t0.elapsed().as_secs_f64(),
                        rss_base,
                        rss_joined,
                        vm_rss_kb(),
                    );
                    let us = thread_cpu_user_sys();
                    println!(
                        "{rep} write_failures={} ingress_audio={} ingress_video={} sfu_user_s={:.2} \
                         sfu_sys_s={:.2} sfu_runqueue_wait_s={:.2} sfu_ports={}",
                        hub.write_failures.load(Ordering::Relaxed),
                        hub.in_audio.load(Ordering::Relaxed),
                        hub.in_video.load(Ordering::Relaxed),
                        us.0 - us0.0,
                        us.1 - us0.1,
                        thread_runqueue_wait_secs() - rq0,
                        pcs.len()
                    );
                }
            }
            FromPeers::Line(l) => println!("{l}"),
            FromPeers::Gone => break,
        }
    }
    for pc in &pcs {
        let _ = pc.close().await;
    }
    let _ = peers.child.wait();
}

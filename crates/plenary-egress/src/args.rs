//! The command line of `plenary egress`.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `--from` when none is given: `plenary sfu`'s embedded HTTP listener, room `demo`.
pub const DEFAULT_FROM: &str = "http://127.0.0.1:8280/whep/demo";
/// The HLS directory when no output at all is given.
pub const DEFAULT_HLS_DIR: &str = "plenary-egress-hls";

/// Pull a room's programme over WHEP and push it as a broadcast: H.264 + one mixed AAC track.
#[derive(Args, Clone, Debug)]
pub struct EgressArgs {
    /// The WHEP endpoint of the room's programme, e.g. http://sfu.example:8080/whep/assembly.
    /// `screen=1` is added (the room's screen share, shown with the speaker as a
    /// picture-in-picture) unless the URL sets `screen=0`. Default: room `demo` of a
    /// `plenary sfu` on its embedded defaults on this host.
    #[arg(long, value_name = "URL", default_value = DEFAULT_FROM)]
    pub from: String,

    /// Room token, sent as `Authorization: Bearer`.
    #[arg(
        long,
        value_name = "T",
        env = "PLENARY_EGRESS_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// A receiver: rtmp://HOST[:PORT]/APP/KEY, rtmps://..., or srt://HOST:PORT[?streamid=...].
    /// Repeat for several; each one stands alone and reconnects with backoff.
    #[arg(long = "to", value_name = "URL")]
    pub to: Vec<String>,

    /// Also write HLS (index.m3u8 and 2 s MPEG-TS segments) into this directory. Run with no
    /// arguments at all, HLS goes to ./plenary-egress-hls/.
    #[arg(long, value_name = "DIR")]
    pub hls: Option<PathBuf>,

    /// Also record to this file (fragmented MP4, readable even after a crash).
    #[arg(long, value_name = "FILE.mp4")]
    pub record: Option<PathBuf>,

    /// Output video size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1280x720", value_name = "WxH")]
    pub size: String,

    /// Output frame rate.
    #[arg(long, default_value_t = 30, value_name = "FPS")]
    pub fps: u32,

    /// Seconds between keyframes.
    #[arg(long, default_value_t = 2, value_name = "SECS")]
    pub keyframe_interval: u32,

    /// H.264 bitrate in kbit/s.
    #[arg(long, default_value_t = 2500, value_name = "KBPS")]
    pub video_kbps: u32,

    /// AAC bitrate in kbit/s (48 kHz stereo).
    #[arg(long, default_value_t = 128, value_name = "KBPS")]
    pub audio_kbps: u32,

    /// Stop after this many seconds (exit 0). Without it, run until SIGINT/SIGTERM.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Seconds between status lines on stderr (0: none).
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub status_every: f64,

    /// Serve Prometheus metrics (plenary_egress_*) on this address.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Log filter (tracing syntax), e.g. `info` or `debug,plenary_egress=trace`.
    #[arg(long, default_value = "info", value_name = "FILTER")]
    pub log_level: String,
}

//! `plenary egress`: the mixer, the outputs, the WHEP puller and the loop that ties them.
//! All pipeline changes happen on this thread; the puller and GStreamer's streaming threads
//! only send frames and messages here.

use gstreamer as gst;
use gstreamer::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::args::EgressArgs;
use crate::backoff::Backoff;
use crate::fanout::{Counters, Fanout, Feed};
use crate::mixer::{missing_elements, Format, Mixer};
use crate::output::{BusNews, OutputPipe};
use crate::source::{KeyframeWants, SourceEvent, SourceSpec};
use crate::status::{self, Meter, SourceState, State, Totals};
use crate::target::Target;
use crate::{pull, whep};

/// Exit codes, documented in `--help` and the crate README.
pub mod exit {
    /// Stopped by SIGINT/SIGTERM or at the end of `--duration`.
    pub const STOPPED: u8 = 0;
    /// The media pipeline failed outside any one output.
    pub const PIPELINE: u8 = 1;
    /// A bad command line (URL, size...).
    pub const USAGE: u8 = 2;
    /// The WHEP endpoint refused us for good (400, 401, 403: check the token and room).
    pub const REFUSED: u8 = 3;
    /// GStreamer or one of its plugins is missing.
    pub const MISSING: u8 = 4;
}

/// Errors building an input (a decoder that will not start) would repeat on every frame.
static INPUT_ERRORS: plenary_ops::ratelimit::LogLimiter<1> =
    plenary_ops::ratelimit::LogLimiter::new(1);

/// Loudest voices mixed: as many as the SFU's default `audio-slots`.
const AUDIO_SLOTS: usize = 3;
/// How long each output may take to write its trailer at the end.
const EOS_LIMIT: Duration = Duration::from_secs(3);
/// After this, a stop that hangs (a receiver that never answers) exits anyway.
const STOP_LIMIT: Duration = Duration::from_secs(20);

struct Output {
    id: usize,
    target: Target,
    name: String,
    counters: Arc<Counters>,
    pipe: Option<OutputPipe>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    reconnects: u64,
    meter: Meter,
    flowing: bool,
    reported: Totals,
}

pub fn run(args: EgressArgs) -> u8 {
    match start(&args) {
        Ok(code) => code,
        Err((code, message)) => {
            eprintln!("plenary egress: {message}");
            code
        }
    }
}

fn parse_size(size: &str) -> Option<(u32, u32)> {
    let (w, h) = size.split_once(['x', 'X'])?;
    let (w, h) = (w.parse::<u32>().ok()?, h.parse::<u32>().ok()?);
    (w >= 16 && h >= 16 && w % 2 == 0 && h % 2 == 0 && w <= 7680 && h <= 4320).then_some((w, h))
}

fn start(args: &EgressArgs) -> Result<u8, (u8, String)> {
    let usage = |m: String| (exit::USAGE, m);
    // Run with no arguments at all (the binary's contract): the embedded default output, HLS
    // in the working directory. A named source without an output is still a usage error.
    let hls = match &args.hls {
        None if args.to.is_empty()
            && args.record.is_none()
            && args.from == crate::args::DEFAULT_FROM =>
        {
            let dir = std::path::PathBuf::from(crate::args::DEFAULT_HLS_DIR);
            eprintln!(
                "egress: no --to, --hls or --record given: writing HLS to {}/",
                dir.display()
            );
            Some(dir)
        }
        hls => hls.clone(),
    };
    let targets =
        Target::all(&args.to, hls, args.record.clone()).map_err(|e| usage(e.to_string()))?;
    let url = whep::check_url(&args.from).map_err(|e| usage(e.to_string()))?;
    let (url, screen) = whep::with_screen(&url);
    let (width, height) = parse_size(&args.size).ok_or_else(|| {
        usage(format!(
            "--size {:?}: expected WIDTHxHEIGHT with even numbers, e.g. 1280x720",
            args.size
        ))
    })?;
    if !(1..=60).contains(&args.fps) {
        return Err(usage(format!("--fps {}: expected 1 to 60", args.fps)));
    }
    plenary_ops::logging::init(
        &args.log_level,
        plenary_ops::logging::LogFormat::Plain,
        None,
    )
    .map_err(|e| usage(format!("--log-level: {e}")))?;
    if let Some(addr) = args.metrics {
        plenary_ops::metrics::start_exporter(addr).map_err(|e| usage(e.to_string()))?;
        plenary_ops::metrics::describe(crate::metrics_desc::METRICS);
    }
    gst::init().map_err(|e| (exit::MISSING, format!("GStreamer does not start: {e}")))?;
    let missing = missing_elements();
    if !missing.is_empty() {
        return Err((
            exit::MISSING,
            format!("GStreamer elements missing: {}", missing.join(", ")),
        ));
    }
    let format = Format {
        width,
        height,
        fps: args.fps,
        keyframe_secs: args.keyframe_interval,
        video_kbps: args.video_kbps,
        audio_kbps: args.audio_kbps,
    };
    let mut mixer =
        Mixer::new(format, AUDIO_SLOTS).map_err(|e| (exit::PIPELINE, format!("{e:#}")))?;
    let fanout = Fanout::default();
    fanout.attach(&mixer.video_out, &mixer.audio_out);
    mixer
        .pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| (exit::PIPELINE, format!("the mixer does not start: {e}")))?;

    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());
    let want_keyframe = Arc::new([AtomicBool::new(true), AtomicBool::new(false)]);
    let (tx, rx) = sync_channel(1024);
    let (refused_tx, refused_rx) = sync_channel(1);
    let mut source = status::Source {
        node: whep::display(&url),
        state: SourceState::Pulling,
        repulls: 0,
    };
    let spec = SourceSpec {
        url,
        token: args.token.clone(),
        audio_slots: AUDIO_SLOTS,
        screen,
        want_keyframe: want_keyframe.clone(),
    };
    let puller = pull::spawn(spec, tx, stop.clone(), refused_tx)
        .map_err(|e| (exit::PIPELINE, format!("cannot start the WHEP thread: {e}")))?;

    let now = Instant::now();
    let mut outputs: Vec<Output> = targets
        .into_iter()
        .enumerate()
        .map(|(id, target)| Output {
            id,
            name: target.to_string(),
            target,
            counters: Arc::default(),
            pipe: None,
            backoff: Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(30),
                Duration::from_secs(30),
            ),
            retry_at: Some(now),
            reconnects: 0,
            meter: Meter::new(now),
            flowing: false,
            reported: Totals::default(),
        })
        .collect();
    tracing::info!(from = %args.from, outputs = outputs.len(), "egress started");

    let deadline = args
        .duration
        .map(|s| now + Duration::from_secs_f64(s.max(0.0)));
    let every = (args.status_every > 0.0).then(|| Duration::from_secs_f64(args.status_every));
    let mut next_status = every.map(|e| now + e);
    let code = loop {
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break exit::STOPPED;
        }
        if let Ok(reason) = refused_rx.try_recv() {
            eprintln!("plenary egress: WHEP source refused: {reason}");
            break exit::REFUSED;
        }
        pump_source(&rx, &mut mixer, &want_keyframe, &mut source);
        if let Some(code) = pump_bus(&mixer) {
            break code;
        }
        let now = Instant::now();
        if let Some(layout) = mixer.tick(now) {
            tracing::info!(layout = layout.name(), "layout changes");
        }
        for o in outputs.iter_mut() {
            tend(o, &fanout, &mixer, now);
        }
        if next_status.is_some_and(|t| now >= t) {
            next_status = every.map(|e| now + e);
            eprintln!(
                "egress {}",
                status::source_line(&source, mixer.layout().name(), now)
            );
            report(&mut outputs, now);
        }
    };
    stop.store(true, Ordering::Relaxed);
    tracing::info!("egress stopping: finishing the outputs");
    exit_anyway_after(STOP_LIMIT, code);
    for o in outputs.iter_mut() {
        fanout.remove(o.id);
        if let Some(pipe) = o.pipe.take() {
            pipe.finish(EOS_LIMIT);
        }
    }
    mixer.stop();
    let _ = puller.join();
    Ok(code)
}

/// Frames from the WHEP puller into the mixer: waits up to 10 ms for the first.
fn pump_source(
    rx: &Receiver<SourceEvent>,
    mixer: &mut Mixer,
    want_keyframe: &KeyframeWants,
    source: &mut status::Source,
) {
    let mut next = rx.recv_timeout(Duration::from_millis(10)).ok();
    let mut handled = 0;
    while let Some(ev) = next.take() {
        match ev {
            SourceEvent::Frame(f) => match mixer.push(f) {
                Ok(Some(role)) => {
                    want_keyframe[role.index()].store(true, Ordering::Relaxed);
                    metrics::counter!("plenary_egress_source_dropped_total", "reason" => "no_keyframe").increment(1);
                }
                Ok(None) => {}
                Err(e) => {
                    metrics::counter!("plenary_egress_source_dropped_total", "reason" => "input_error").increment(1);
                    if let Some(suppressed) = INPUT_ERRORS.allow(0) {
                        tracing::warn!(error = %format!("{e:#}"), suppressed, "programme input");
                    }
                }
            },
            SourceEvent::Pulling { node } => {
                tracing::info!(from = %node, "pulling the WHEP source");
                source.node = node;
                source.state = SourceState::Pulling;
            }
            SourceEvent::Answered { node, alternates } => {
                tracing::info!(from = %node, alternates, "WHEP source answered");
                source.node = node;
                source.state = SourceState::Answered;
            }
            SourceEvent::Connected => {
                source.state = SourceState::Connected;
                metrics::gauge!("plenary_egress_source_up").set(1.0);
                tracing::info!(from = %source.node, "WHEP source connected");
            }
            SourceEvent::Lost {
                reason,
                detail,
                retry_in,
            } => {
                source.state = SourceState::Lost {
                    reason: format!("{}: {detail}", reason.as_str()),
                    retry_at: Instant::now() + retry_in,
                };
                source.repulls += 1;
                metrics::gauge!("plenary_egress_source_up").set(0.0);
                mixer.source_lost();
            }
        }
        handled += 1;
        if handled < 512 {
            next = rx.try_recv().ok();
        }
    }
}

/// The mixer's own messages: an error there ends the run (outputs have their own buses).
fn pump_bus(mixer: &Mixer) -> Option<u8> {
    let bus = mixer.pipeline.bus()?;
    while let Some(msg) = bus.pop() {
        match msg.view() {
            gst::MessageView::Error(err) => {
                let at = msg
                    .src()
                    .map(|s| s.path_string().to_string())
                    .unwrap_or_default();
                eprintln!(
                    "plenary egress: the mixer failed in {at}: {} ({})",
                    err.error(),
                    err.debug().as_deref().unwrap_or("")
                );
                return Some(exit::PIPELINE);
            }
            gst::MessageView::Warning(w) => {
                tracing::debug!(src = ?msg.src().map(|s| s.path_string()), warning = %w.error(), "mixer warning");
            }
            _ => {}
        }
    }
    None
}

/// The muxers get a few seconds for their trailers; a stop never hangs for longer.
fn exit_anyway_after(limit: Duration, code: u8) {
    let _ = std::thread::Builder::new()
        .name("egress-stop-limit".into())
        .spawn(move || {
            std::thread::sleep(limit);
            eprintln!("plenary egress: outputs did not finish within {limit:?}; exiting");
            std::process::exit(i32::from(code));
        });
}

/// Notices a failed output and restarts a due one.
fn tend(o: &mut Output, fanout: &Fanout, mixer: &Mixer, now: Instant) {
    if let Some(BusNews::Failed(reason)) = o.pipe.as_ref().map(OutputPipe::poll) {
        fanout.remove(o.id);
        if let Some(pipe) = o.pipe.take() {
            pipe.stop();
        }
        fail(o, &reason, now);
    }
    if o.retry_at.is_none_or(|t| now < t) {
        return;
    }
    o.retry_at = None;
    match OutputPipe::start(&o.target, &o.counters) {
        Ok(pipe) => {
            let feed = Feed::new(
                o.id,
                pipe.video.clone(),
                pipe.audio.clone(),
                o.counters.clone(),
            );
            fanout.add(feed);
            o.pipe = Some(pipe);
            // Start the receiver on a fresh keyframe rather than wait up to a GOP.
            mixer.force_keyframe();
        }
        Err(e) => fail(o, &format!("{e:#}"), now),
    }
}

fn fail(o: &mut Output, reason: &str, now: Instant) {
    let delay = o.backoff.failed(now);
    o.retry_at = Some(now + delay);
    o.reconnects += 1;
    o.flowing = false;
    metrics::counter!("plenary_egress_output_reconnects_total", "output" => o.name.clone())
        .increment(1);
    metrics::gauge!("plenary_egress_output_up", "output" => o.name.clone()).set(0.0);
    tracing::debug!(output = %o.name, %reason, retry_in = ?delay, "output failed");
    eprintln!(
        "egress {}: failed: {reason}; retrying in {:.0}s",
        o.name,
        delay.as_secs_f64()
    );
}

fn report(outputs: &mut [Output], now: Instant) {
    for o in outputs.iter_mut() {
        let totals = Totals {
            bytes: o.counters.bytes.load(Ordering::Relaxed),
            video_frames: o.counters.video_frames.load(Ordering::Relaxed),
            dropped: o.counters.dropped.load(Ordering::Relaxed),
        };
        let rates = o.meter.read(now, totals);
        o.flowing = rates.flowing && o.pipe.is_some();
        if o.flowing {
            o.backoff.up(now);
        }
        let state = match (&o.pipe, o.retry_at) {
            (_, Some(t)) => State::Retrying(t.saturating_duration_since(now)),
            (Some(_), None) if o.flowing => State::Up,
            _ => State::Starting,
        };
        let label = o.name.clone();
        metrics::counter!("plenary_egress_output_bytes_total", "output" => label.clone())
            .increment(totals.bytes - o.reported.bytes);
        metrics::counter!("plenary_egress_output_frames_total", "output" => label.clone())
            .increment(totals.video_frames - o.reported.video_frames);
        metrics::counter!("plenary_egress_output_dropped_total", "output" => label.clone())
            .increment(totals.dropped - o.reported.dropped);
        metrics::gauge!("plenary_egress_output_up", "output" => label).set(if o.flowing {
            1.0
        } else {
            0.0
        });
        o.reported = totals;
        eprintln!(
            "egress {}",
            status::line(&o.name, &state, &rates, totals.dropped, o.reconnects)
        );
    }
}

/// SIGINT/SIGTERM stop the egress cleanly (muxers write their trailers).
fn watch_signals(stop: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("egress-signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(mut signals) = plenary_ops::signals::Signals::new() else {
                    return;
                };
                loop {
                    let got = signals.recv().await;
                    if got.event == plenary_ops::signals::SignalEvent::Terminate {
                        tracing::info!(signal = got.name, "stopping");
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
        });
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_must_be_even_and_sane() {
        assert_eq!(super::parse_size("1280x720"), Some((1280, 720)));
        assert_eq!(super::parse_size("1281x720"), None);
        assert_eq!(super::parse_size("big"), None);
    }
}

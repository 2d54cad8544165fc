//! One output: its own GStreamer pipeline, two appsrcs (H.264, AAC) fed by `fanout`, a
//! muxer and a sink. It fails, stops and is rebuilt alone; the mixer and the other outputs
//! never notice.

use anyhow::{anyhow, Context};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::fanout::Counters;
use crate::target::Target;

/// A running output pipeline.
pub struct OutputPipe {
    pipeline: gst::Pipeline,
    pub video: gst_app::AppSrc,
    pub audio: gst_app::AppSrc,
}

/// What an output's bus said.
pub enum BusNews {
    Nothing,
    /// The output failed: its pipeline must be stopped and rebuilt later.
    Failed(String),
}

fn description(target: &Target) -> String {
    // Non-live sources: the muxers interleave what they get and never wait on a clock.
    let src = |name: &str| {
        format!("appsrc name={name} format=time is-live=false do-timestamp=false block=false")
    };
    let (v, a) = (src("v"), src("a"));
    match target {
        Target::Rtmp { .. } => format!(
            "{v} ! h264parse name=vparse ! flvmux name=mux streamable=true \
               ! rtmp2sink name=sink sync=false async=false \
             {a} ! aacparse ! mux."
        ),
        Target::Srt { .. } => format!(
            "{v} ! h264parse name=vparse config-interval=-1 ! mpegtsmux name=mux alignment=7 \
               ! srtsink name=sink sync=false async=false \
             {a} ! aacparse ! mux."
        ),
        Target::Hls { .. } => format!(
            "{v} ! h264parse name=vparse config-interval=-1 \
               ! hlssink2 name=sink target-duration=2 playlist-length=0 max-files=0 \
             {a} ! aacparse ! sink.audio"
        ),
        Target::Record { .. } => format!(
            "{v} ! h264parse name=vparse ! mp4mux name=mux fragment-duration=1000 \
               ! filesink name=sink sync=false async=false \
             {a} ! aacparse ! mux."
        ),
    }
}

fn configure(sink: &gst::Element, target: &Target) -> anyhow::Result<()> {
    match target {
        Target::Rtmp { location } => sink.set_property("location", location),
        Target::Srt {
            uri,
            streamid,
            passphrase,
            latency_ms,
        } => {
            sink.set_property("uri", format!("{uri}?mode=caller"));
            if let Some(id) = streamid {
                sink.set_property("streamid", id);
            }
            if let Some(p) = passphrase {
                sink.set_property("passphrase", p);
            }
            if let Some(l) = latency_ms {
                sink.set_property("latency", *l as i32);
            }
        }
        Target::Hls { dir } => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the HLS directory {}", dir.display()))?;
            let segment = dir.join("segment%05d.ts");
            let playlist = dir.join("index.m3u8");
            sink.set_property("location", segment.to_string_lossy().as_ref());
            sink.set_property("playlist-location", playlist.to_string_lossy().as_ref());
        }
        Target::Record { path } => sink.set_property("location", path.to_string_lossy().as_ref()),
    }
    Ok(())
}

impl OutputPipe {
    /// Builds and starts the output's pipeline.
    pub fn start(target: &Target, counters: &Arc<Counters>) -> anyhow::Result<OutputPipe> {
        let pipeline = gst::parse::launch(&description(target))
            .context("building the output")?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow!("the output description did not make a pipeline"))?;
        let by_name = |n: &str| {
            pipeline
                .by_name(n)
                .ok_or_else(|| anyhow!("output element {n} missing"))
        };
        let sink = by_name("sink")?;
        configure(&sink, target)?;
        count(&sink, &by_name("vparse")?, counters);
        let appsrc = |n: &str| -> anyhow::Result<gst_app::AppSrc> {
            let src = by_name(n)?
                .downcast::<gst_app::AppSrc>()
                .map_err(|_| anyhow!("{n} is not an appsrc"))?;
            src.set_max_bytes(8 * 1024 * 1024);
            Ok(src)
        };
        let out = OutputPipe {
            video: appsrc("v")?,
            audio: appsrc("a")?,
            pipeline,
        };
        if let Err(e) = out.pipeline.set_state(gst::State::Playing) {
            let reason = out.failure().unwrap_or_else(|| e.to_string());
            out.stop();
            return Err(anyhow!(reason));
        }
        Ok(out)
    }

    /// The first error waiting on the bus, if any.
    fn failure(&self) -> Option<String> {
        let bus = self.pipeline.bus()?;
        while let Some(msg) = bus.pop() {
            if let gst::MessageView::Error(err) = msg.view() {
                return Some(explain(err));
            }
        }
        None
    }

    pub fn poll(&self) -> BusNews {
        let Some(bus) = self.pipeline.bus() else {
            return BusNews::Nothing;
        };
        while let Some(msg) = bus.pop() {
            match msg.view() {
                gst::MessageView::Error(err) => return BusNews::Failed(explain(err)),
                gst::MessageView::Eos(_) => {
                    return BusNews::Failed("the output ended (end of stream)".into())
                }
                gst::MessageView::Warning(w) => {
                    tracing::debug!(warning = %w.error(), debug = ?w.debug(), "output warning");
                }
                _ => {}
            }
        }
        BusNews::Nothing
    }

    /// Ends the stream so the muxer writes its trailer (MP4 index, HLS end tag, FLV close),
    /// waiting at most `limit`, then stops.
    pub fn finish(self, limit: Duration) {
        let _ = self.video.end_of_stream();
        let _ = self.audio.end_of_stream();
        if let Some(bus) = self.pipeline.bus() {
            let _ = bus.timed_pop_filtered(
                gst::ClockTime::from_nseconds(limit.as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            );
        }
        self.stop();
    }

    pub fn stop(&self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Counts what the output really sends on (bytes entering its sink, frames leaving its
/// parser), so a receiver that stalls the output shows as 0 kbit/s, not as what was queued.
fn count(sink: &gst::Element, vparse: &gst::Element, counters: &Arc<Counters>) {
    for pad in sink.sink_pads() {
        let c = counters.clone();
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                let size = match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => b.size(),
                    Some(gst::PadProbeData::BufferList(l)) => l.calculate_size(),
                    _ => 0,
                };
                c.bytes.fetch_add(size as u64, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            },
        );
    }
    if let Some(pad) = vparse.static_pad("src") {
        let c = counters.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            c.video_frames.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    }
}

/// The error and the first line of its debug text (which names the element and the cause).
fn explain(err: &gst::message::Error) -> String {
    match err.debug() {
        Some(d) => format!("{} ({})", err.error(), d.lines().next().unwrap_or("")),
        None => err.error().to_string(),
    }
}

//! A lip-sync meter inside the mixer: with `plenary_egress::avprobe=debug` in the log
//! filter, logs the running time at which a flash (a picture going from dark to bright) and
//! a beep (sound after at least 0.5 s of silence) pass each watched pad: each input after
//! its decoder and the two mixers' outputs. With a publisher that sends a flash and a beep
//! at the same moment (`tests/egress_av.rs`), it tells which stage moves one against the
//! other; the outputs' share is read from the files (docs/decisions/0005-egress.md). Off,
//! it installs nothing.

use gstreamer as gst;
use gstreamer::prelude::*;
use std::sync::Mutex;

/// A picture whose luma averages above this is bright (black is 16, the flash 235).
const BRIGHT_LUMA: u64 = 60;
/// A sample above this (full scale 1.0) is sound.
const LOUD: f32 = 0.1;
/// Sound after this much silence is a beep onset (ns).
const QUIET_NS: u64 = 500_000_000;

#[derive(Default)]
struct Onsets {
    bright: bool,
    /// Running time since which it has been quiet, if it is.
    quiet_since: Option<u64>,
}

/// Watches the raw video or audio leaving `pad`, if the debug log of this module is on.
pub fn watch(pad: &gst::Pad, stage: &'static str) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let onsets = Mutex::new(Onsets {
        bright: true,
        quiet_since: Some(0),
    });
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let (Some(buffer), Some(caps)) = (info.buffer(), pad.current_caps()) else {
            return gst::PadProbeReturn::Ok;
        };
        let (Some(s), Some(pts)) = (caps.structure(0), buffer.pts()) else {
            return gst::PadProbeReturn::Ok;
        };
        let segment = pad
            .sticky_event::<gst::event::Segment>(0)
            .and_then(|e| e.segment().downcast_ref::<gst::ClockTime>().cloned());
        let running = segment
            .and_then(|seg| seg.to_running_time(pts))
            .unwrap_or(pts)
            .nseconds();
        let Ok(map) = buffer.map_readable() else {
            return gst::PadProbeReturn::Ok;
        };
        let mut o = onsets.lock().unwrap_or_else(|e| e.into_inner());
        if s.name() == "video/x-raw" {
            // The first plane of the planar YUV formats the decoders and mixer use.
            let w = s.get::<i32>("width").unwrap_or(1).max(1) as usize;
            let h = s.get::<i32>("height").unwrap_or(1).max(1) as usize;
            let luma = &map.as_slice()[..(w * h).min(map.size())];
            let mean = luma.iter().map(|&v| u64::from(v)).sum::<u64>() / luma.len().max(1) as u64;
            let bright = mean > BRIGHT_LUMA;
            if bright && !o.bright {
                tracing::debug!(stage, at_ms = running as f64 / 1e6, "flash");
            }
            o.bright = bright;
        } else {
            let channels = s.get::<i32>("channels").unwrap_or(2).max(1) as u64;
            let rate = s.get::<i32>("rate").unwrap_or(48_000).max(1) as u64;
            let samples: Vec<f32> = match s.get::<&str>("format").unwrap_or_default() {
                "S16LE" => map
                    .chunks_exact(2)
                    .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                    .collect(),
                "F32LE" => map
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                _ => Vec::new(),
            };
            for (i, v) in samples.iter().enumerate() {
                let t = running + (i as u64 / channels) * 1_000_000_000 / rate;
                if v.abs() > LOUD {
                    if o.quiet_since
                        .is_some_and(|q| t.saturating_sub(q) > QUIET_NS)
                    {
                        tracing::debug!(stage, at_ms = t as f64 / 1e6, "beep");
                    }
                    o.quiet_since = None;
                } else if o.quiet_since.is_none() {
                    o.quiet_since = Some(t);
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
}

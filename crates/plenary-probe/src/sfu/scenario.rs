//! Scenario files (`loadtest/*.toml`): what participants do, how the ramp climbs and which
//! thresholds judge it. Every number is a key so a run is described by its file; unknown
//! keys are errors, so a typo cannot silently fall back to a default.

use super::media::opus::AudioSpec;
use super::media::stamp::Kind;
use super::media::video::VideoSpec;
use super::ramp::Thresholds;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The scenarios shipped in `loadtest/`, so `--scenario webinar` works from anywhere.
pub const BUILTIN: [(&str, &str); 4] = [
    ("webinar", include_str!("../../../../loadtest/webinar.toml")),
    (
        "assembly",
        include_str!("../../../../loadtest/assembly.toml"),
    ),
    ("meeting", include_str!("../../../../loadtest/meeting.toml")),
    (
        "assembly-500",
        include_str!("../../../../loadtest/assembly-500.toml"),
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioKind {
    Webinar,
    Assembly,
    Meeting,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub kind: ScenarioKind,
    pub ramp: Ramp,
    #[serde(default)]
    pub thresholds: Thresholds,
    #[serde(default)]
    pub probe: ProbeLimits,
    pub audio: Audio,
    pub video: Video,
    pub screen: Option<Screen>,
    pub webinar: Option<Webinar>,
    pub assembly: Option<Assembly>,
    pub meeting: Option<Meeting>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    pub start: u32,
    pub step: u32,
    pub max: u32,
    pub hold_s: u64,
    pub warmup_s: u64,
    pub join_rate_per_s: f64,
    pub join_timeout_s: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeLimits {
    pub max_cpu_pct: f64,
    pub max_lag_ms: f64,
    pub max_socket_drop_pct: f64,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        ProbeLimits {
            max_cpu_pct: 90.0,
            max_lag_ms: 20.0,
            max_socket_drop_pct: 0.1,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audio {
    pub frame_ms: u32,
    pub talk_bytes: usize,
    pub silence_bytes: usize,
    pub dtx_interval_ms: u32,
    pub talk_s: [f64; 2],
    pub pause_s: [f64; 2],
    pub dtx_in_pauses: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub rid: String,
    pub width: u16,
    pub height: u16,
    pub kbps: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Video {
    pub fps: f64,
    pub keyframe_interval_s: f64,
    pub keyframe_factor: f64,
    pub max_payload: usize,
    pub min_keyframe_gap_ms: u64,
    pub layers: Vec<Layer>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Screen {
    pub fps: f64,
    pub kbps: f64,
    pub width: u16,
    pub height: u16,
    pub keyframe_interval_s: f64,
    pub keyframe_factor: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webinar {
    pub presenters: u32,
    pub simulcast: bool,
    pub layer: String,
    pub room_prefix: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assembly {
    pub room: String,
    pub speakers: u32,
    pub speaker_pool: u32,
    pub rotate_s: f64,
    pub presenter_max_layer: u8,
    pub screen_share: bool,
    pub cameras: u32,
    pub camera_max_layer: u8,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meeting {
    pub room_prefix: String,
    pub room_size: u32,
    pub last_n: u32,
    pub speakers: u32,
    pub rotate_s: f64,
    pub camera_max_layer: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Parse(String, toml::de::Error),
    #[error("{0}: {1}")]
    Invalid(String, String),
}

impl Scenario {
    /// A built-in name (`webinar`, `assembly`, `meeting`) or a path to a TOML file.
    pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Scenario::parse(name_or_path, text);
        }
        let text = std::fs::read_to_string(Path::new(name_or_path))
            .map_err(|e| ScenarioError::Read(name_or_path.into(), e))?;
        Scenario::parse(name_or_path, &text)
    }

    pub fn parse(origin: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario =
            toml::from_str(text).map_err(|e| ScenarioError::Parse(origin.into(), e))?;
        s.validate()
            .map_err(|m| ScenarioError::Invalid(origin.into(), m))?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), String> {
        let r = &self.ramp;
        if r.start == 0 || r.step == 0 || r.max < r.start {
            return Err("[ramp] needs start >= 1, step >= 1 and max >= start".into());
        }
        if r.hold_s == 0 || r.join_rate_per_s <= 0.0 || r.join_timeout_s == 0 {
            return Err(
                "[ramp] hold_s, join_rate_per_s and join_timeout_s must be positive".into(),
            );
        }
        if self.video.layers.is_empty() || self.video.layers.len() > 3 {
            return Err("[video] needs 1 to 3 layers (low to high)".into());
        }
        if self.video.fps <= 0.0 || self.audio.frame_ms == 0 || self.audio.dtx_interval_ms == 0 {
            return Err(
                "[video] fps, [audio] frame_ms and dtx_interval_ms must be positive".into(),
            );
        }
        let need = match self.kind {
            ScenarioKind::Webinar => self.webinar.as_ref().map(|w| w.presenters >= 1),
            ScenarioKind::Assembly => self.assembly.as_ref().map(|a| a.speakers <= a.speaker_pool),
            ScenarioKind::Meeting => self.meeting.as_ref().map(|m| m.room_size >= 2),
        };
        match need {
            None => Err(format!("kind = {:?} needs its [{:?}] table", self.kind, self.kind).to_lowercase()),
            Some(false) => Err("the scenario's own table has inconsistent numbers (presenters >= 1, speakers <= speaker_pool, room_size >= 2)".into()),
            Some(true) => Ok(()),
        }
    }

    pub fn audio_spec(&self) -> AudioSpec {
        let a = &self.audio;
        AudioSpec {
            frame_ms: a.frame_ms,
            talk_bytes: a.talk_bytes,
            silence_bytes: a.silence_bytes,
            dtx_interval_ms: a.dtx_interval_ms,
            talk_s: (a.talk_s[0], a.talk_s[1]),
            pause_s: (a.pause_s[0], a.pause_s[1]),
            dtx_in_pauses: a.dtx_in_pauses,
        }
    }

    /// The camera layer `index` (0 = low), as a generator spec.
    pub fn camera_spec(&self, index: usize) -> VideoSpec {
        let v = &self.video;
        let l = &v.layers[index.min(v.layers.len() - 1)];
        VideoSpec {
            kind: Kind::Camera,
            layer: index as u8,
            width: l.width,
            height: l.height,
            fps: v.fps,
            kbps: l.kbps,
            keyframe_interval_s: v.keyframe_interval_s,
            keyframe_factor: v.keyframe_factor,
            max_payload: v.max_payload,
            min_keyframe_gap_ms: v.min_keyframe_gap_ms,
        }
    }

    pub fn layer_index(&self, rid: &str) -> Option<usize> {
        self.video.layers.iter().position(|l| l.rid == rid)
    }

    pub fn screen_spec(&self) -> Option<VideoSpec> {
        let s = self.screen.as_ref()?;
        Some(VideoSpec {
            kind: Kind::Screen,
            layer: 0,
            width: s.width,
            height: s.height,
            fps: s.fps,
            kbps: s.kbps,
            keyframe_interval_s: s.keyframe_interval_s,
            keyframe_factor: s.keyframe_factor,
            max_payload: self.video.max_payload,
            min_keyframe_gap_ms: self.video.min_keyframe_gap_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_scenarios_parse() {
        for (name, _) in BUILTIN {
            let s = Scenario::load(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.name, name);
            assert_eq!(s.video.layers.len(), 3, "{name}: q/h/f");
            assert_eq!(s.layer_index("f"), Some(2));
        }
        assert_eq!(
            Scenario::load("webinar").unwrap().kind,
            ScenarioKind::Webinar
        );
    }

    #[test]
    fn typos_and_bad_numbers_are_errors() {
        let text = BUILTIN[0].1.replace("hold_s", "hold_secs");
        let e = Scenario::parse("x", &text).unwrap_err().to_string();
        assert!(
            e.contains("hold_secs") || e.contains("unknown field"),
            "{e}"
        );
        let text = BUILTIN[0].1.replace("step = ", "step = 0 #");
        assert!(Scenario::parse("x", &text).is_err());
        assert!(Scenario::load("/nonexistent/file.toml").is_err());
    }
}

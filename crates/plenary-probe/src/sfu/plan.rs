//! Who each synthetic participant is in a scenario: what it publishes, what it receives,
//! which room it joins. Participant `i` is the same in every step and every repeat, so a
//! staircase only ever adds participants.

use super::engine::build::SendPlan;
use super::media::opus::Role;
use super::scenario::{Scenario, ScenarioKind};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackSource {
    Microphone,
    Camera,
    Screen,
}

impl TrackSource {
    pub fn name(self) -> &'static str {
        match self {
            TrackSource::Microphone => "microphone",
            TrackSource::Camera => "camera",
            TrackSource::Screen => "screen",
        }
    }
}

/// A subscription the participant asks for (room API): another participant's track.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Want {
    pub publisher: u32,
    pub source: TrackSource,
    pub max_layer: u8,
}

#[derive(Clone, Debug)]
pub struct Participant {
    pub index: u32,
    pub name: String,
    pub role: &'static str,
    pub room: String,
    pub publish: Vec<(TrackSource, SendPlan)>,
    /// Webinar: the rooms whose publisher it plays (WHEP, or a Janus feed).
    pub play: Vec<String>,
    /// Room API: explicit video subscriptions.
    pub want: Vec<Want>,
    /// Room API: subscribe to every camera in the room at this layer (meeting; the
    /// server's last-N picks what flows).
    pub all_cameras: Option<u8>,
    /// Whose microphones it subscribes to where the server has no audio slots (Janus).
    pub hear: Vec<u32>,
}

pub struct Plan {
    pub scenario: Scenario,
}

impl Plan {
    pub fn new(scenario: Scenario) -> Plan {
        Plan { scenario }
    }

    /// Participants present at a step of `n` (the ramp's unit: viewers for a webinar,
    /// participants otherwise).
    pub fn population(&self, n: u32) -> u32 {
        match (&self.scenario.kind, &self.scenario.webinar) {
            (ScenarioKind::Webinar, Some(w)) => n + w.presenters,
            _ => n,
        }
    }

    pub fn unit(&self) -> &'static str {
        match self.scenario.kind {
            ScenarioKind::Webinar => "viewers",
            _ => "participants",
        }
    }

    /// Whether participants connect over the room API (not WHIP/WHEP).
    pub fn uses_rooms(&self) -> bool {
        self.scenario.kind != ScenarioKind::Webinar
    }

    fn mic(&self, role: Role) -> (TrackSource, SendPlan) {
        (
            TrackSource::Microphone,
            SendPlan::Audio {
                spec: self.scenario.audio_spec(),
                role,
            },
        )
    }

    fn camera(&self, simulcast: bool, single: usize) -> (TrackSource, SendPlan) {
        let s = &self.scenario;
        let layers = if simulcast {
            (0..s.video.layers.len())
                .map(|i| (Some(s.video.layers[i].rid.clone()), s.camera_spec(i)))
                .collect()
        } else {
            vec![(None, s.camera_spec(single))]
        };
        (TrackSource::Camera, SendPlan::Video { layers })
    }

    pub fn participant(&self, index: u32) -> Participant {
        let s = &self.scenario;
        let mut p = Participant {
            index,
            name: format!("p{index}"),
            role: "listener",
            room: String::new(),
            publish: vec![],
            play: vec![],
            want: vec![],
            all_cameras: None,
            hear: vec![],
        };
        match s.kind {
            ScenarioKind::Webinar => {
                let Some(w) = &s.webinar else { return p };
                let room = |i: u32| format!("{}-{i}", w.room_prefix);
                if index < w.presenters {
                    p.role = "presenter";
                    p.room = room(index);
                    let single = s.layer_index(&w.layer).unwrap_or(s.video.layers.len() - 1);
                    p.publish = vec![self.mic(Role::Speaker), self.camera(w.simulcast, single)];
                } else {
                    p.role = "viewer";
                    p.play = (0..w.presenters).map(room).collect();
                }
            }
            ScenarioKind::Assembly => {
                let Some(a) = &s.assembly else { return p };
                p.room = a.room.clone();
                let speaking = Role::Rotating {
                    index,
                    pool: a.speaker_pool,
                    active: a.speakers,
                    rotate_us: (a.rotate_s * 1e6) as u64,
                };
                let role = if index < a.speaker_pool {
                    speaking
                } else {
                    Role::Muted
                };
                p.publish.push(self.mic(role));
                if index == 0 {
                    p.role = "presenter";
                    p.publish.push(self.camera(true, 0));
                    if a.screen_share {
                        if let Some(spec) = s.screen_spec() {
                            p.publish.push((
                                TrackSource::Screen,
                                SendPlan::Video {
                                    layers: vec![(None, spec)],
                                },
                            ));
                        }
                    }
                } else if index <= a.cameras {
                    p.role = "camera";
                    p.publish.push(self.camera(true, 0));
                }
                if index != 0 {
                    p.want.push(Want {
                        publisher: 0,
                        source: TrackSource::Camera,
                        max_layer: a.presenter_max_layer,
                    });
                    if a.screen_share {
                        p.want.push(Want {
                            publisher: 0,
                            source: TrackSource::Screen,
                            max_layer: 0,
                        });
                    }
                }
                p.hear = (0..a.speaker_pool).filter(|&i| i != index).collect();
                for c in (1..=a.cameras).filter(|&c| c != index) {
                    p.want.push(Want {
                        publisher: c,
                        source: TrackSource::Camera,
                        max_layer: a.camera_max_layer,
                    });
                }
            }
            ScenarioKind::Meeting => {
                let Some(m) = &s.meeting else { return p };
                let size = m.room_size.max(1);
                p.role = "member";
                p.room = format!("{}-{}", m.room_prefix, index / size);
                let role = Role::Rotating {
                    index: index % size,
                    pool: size,
                    active: m.speakers,
                    rotate_us: (m.rotate_s * 1e6) as u64,
                };
                p.publish = vec![self.mic(role), self.camera(true, 0)];
                p.all_cameras = Some(m.camera_max_layer);
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str) -> Plan {
        Plan::new(Scenario::load(name).unwrap())
    }

    #[test]
    fn webinar_presenters_then_viewers() {
        let p = plan("webinar");
        assert_eq!(p.population(10), 11);
        let pres = p.participant(0);
        assert_eq!(
            (pres.role, pres.room.as_str(), pres.publish.len()),
            ("presenter", "webinar-0", 2)
        );
        let SendPlan::Video { layers } = &pres.publish[1].1 else {
            panic!()
        };
        assert_eq!(layers.len(), 3, "q/h/f simulcast over WHIP");
        assert_eq!(
            (layers[0].0.as_deref(), layers[2].1.width),
            (Some("q"), 1280)
        );
        let v = p.participant(5);
        assert_eq!(
            (v.role, v.play.clone(), v.publish.len()),
            ("viewer", vec!["webinar-0".to_string()], 0)
        );
    }

    #[test]
    fn assembly_roles() {
        let p = plan("assembly");
        assert!(p.uses_rooms());
        let pres = p.participant(0);
        assert_eq!(
            pres.publish.iter().map(|x| x.0).collect::<Vec<_>>(),
            [
                TrackSource::Microphone,
                TrackSource::Camera,
                TrackSource::Screen
            ]
        );
        let cam = p.participant(3);
        assert_eq!(cam.role, "camera");
        assert_eq!(
            cam.want.len(),
            2 + 8,
            "presenter camera + screen + the 8 other cameras"
        );
        let listener = p.participant(100);
        assert_eq!(listener.publish.len(), 1);
        assert!(matches!(
            listener.publish[0].1,
            SendPlan::Audio {
                role: Role::Muted,
                ..
            }
        ));
        assert_eq!(
            listener.want.iter().filter(|w| w.max_layer == 0).count(),
            10
        );
        // Three speakers at any time among the pool.
        let speaking = (0..20).filter(|&i| match p.participant(i).publish[0].1 {
            SendPlan::Audio { role, .. } => role.speaks_at(30_000_000),
            _ => false,
        });
        assert_eq!(speaking.count(), 3);
    }

    #[test]
    fn meeting_fills_rooms() {
        let p = plan("meeting");
        assert_eq!(p.participant(49).room, "meeting-0");
        assert_eq!(p.participant(50).room, "meeting-1");
        assert_eq!(p.participant(7).all_cameras, Some(1));
    }
}

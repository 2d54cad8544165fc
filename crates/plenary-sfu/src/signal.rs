//! Room API messages (JSON over WebSocket), as documented in docs/decisions/0003.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Largest client message we parse; SDP offers with many m-lines stay well below.
pub const MAX_CLIENT_MESSAGE: usize = 128 * 1024;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    Join {
        #[serde(default)]
        name: String,
    },
    Publish {
        sdp: String,
        #[serde(default)]
        tracks: Vec<PublishTrack>,
    },
    Subscribe {
        tracks: Vec<SubscribeTrack>,
    },
    Unsubscribe {
        tracks: Vec<String>,
    },
    SetLayer {
        track: String,
        max_layer: u8,
    },
    Answer {
        sdp: String,
    },
    Leave,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PublishTrack {
    pub mid: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub source: Option<TrackSource>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Microphone,
    Camera,
    Screen,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SubscribeTrack {
    pub track: String,
    #[serde(default)]
    pub max_layer: Option<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Joined {
        participant: String,
        participants: Vec<ParticipantInfo>,
        audio_slots: usize,
        #[serde(skip_serializing_if = "Vec::is_empty", default)]
        ice_servers: Vec<IceServerInfo>,
        /// Cascade: base URLs of the room's nodes, this one first, so a client whose node
        /// dies knows where to rejoin. Empty on a single node.
        #[serde(skip_serializing_if = "Vec::is_empty", default)]
        nodes: Vec<String>,
    },
    PublishAnswer {
        sdp: String,
    },
    Offer {
        sdp: String,
        slots: Vec<SlotInfo>,
    },
    /// Who joined and left the room since the last such message: at most one every 250 ms
    /// per room, never the whole list again. Apply as a set: a joined id already known (or
    /// the receiver's own) and a left id never seen are ignored.
    Participants {
        joined: Arc<[ParticipantBrief]>,
        left: Arc<[String]>,
    },
    TrackPublished {
        participant: String,
        track: TrackInfo,
    },
    TrackUnpublished {
        participant: String,
        track: TrackInfo,
    },
    ActiveSpeaker {
        participant: Option<String>,
    },
    AudioSlot {
        mid: String,
        participant: Option<String>,
    },
    Paused {
        track: String,
    },
    Resumed {
        track: String,
    },
    LayersWanted {
        track: String,
        layers: Vec<u8>,
    },
    Error {
        message: String,
    },
    /// Cascade: this node is over its load (or draining); join the room at `url` instead
    /// (a base URL: append `/rooms/{room}`).
    Redirect {
        url: String,
    },
    /// Cascade: the room's nodes changed (base URLs, this node first), as in `joined`.
    Nodes {
        nodes: Vec<String>,
    },
    /// Sent every second while joined: a client that hears nothing for a few seconds knows
    /// its node is gone even when no FIN or RST comes (a frozen process, a machine off the
    /// network). A text message, not a WebSocket ping, because browsers hide pings from JS.
    Alive {},
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantBrief {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: String,
    pub name: String,
    pub tracks: Vec<TrackInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrackInfo {
    pub id: String,
    pub kind: String,
    pub source: TrackSource,
    /// Simulcast layers published (1 without simulcast).
    pub layers: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotInfo {
    pub mid: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub track: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IceServerInfo {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub credential: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_from_the_documented_shapes() {
        let m: ClientMsg = serde_json::from_str(
            r#"{"type":"subscribe","tracks":[{"track":"p1-1","max_layer":0},{"track":"p2-1"}]}"#,
        )
        .unwrap();
        let ClientMsg::Subscribe { tracks } = m else {
            panic!("wrong variant")
        };
        assert_eq!(tracks[0].max_layer, Some(0));
        assert_eq!(tracks[1].max_layer, None);
        let m: ClientMsg = serde_json::from_str(r#"{"type":"leave"}"#).unwrap();
        assert!(matches!(m, ClientMsg::Leave));
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn server_messages_carry_their_type_tag() {
        let s = serde_json::to_string(&ServerMsg::ActiveSpeaker {
            participant: Some("p3".into()),
        })
        .unwrap();
        assert_eq!(s, r#"{"type":"active_speaker","participant":"p3"}"#);
    }
}

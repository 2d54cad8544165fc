//! Janus VideoRoom through Janus's HTTP API, so the same scenario drives Janus and Plenary
//! (DESIGN.md: the SFU's claims are ratios against Janus). Per participant: a session, a
//! publisher handle (join, then publish with the offer) and a subscriber handle (join with
//! the feeds' streams, answer Janus's offer, start). A long-poll task per session reads
//! events and sends keepalives.

use super::http::request;
use crate::sfu::engine::build::{offered_tracks, PeerPlan, SendPlan};
use crate::sfu::join::{Cleanup, JoinCtx};
use crate::sfu::plan::{Participant, TrackSource};
use crate::sfu::scenario::ScenarioKind;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// A publisher as subscribers need it: its feed id and the mid of each source.
#[derive(Clone, Debug)]
pub struct Feed {
    pub id: u64,
    pub mids: Vec<(TrackSource, String)>,
}

/// What participants of one run share: the feeds published so far.
#[derive(Default)]
pub struct Shared {
    feeds: Mutex<HashMap<u32, Feed>>,
    room_feeds: Mutex<HashMap<String, u32>>,
    notify: tokio::sync::Notify,
}

impl Shared {
    /// Forgets every feed: after a teardown their publishers have left, and a subscriber of
    /// the next repeat must wait for the new ones (Janus answers "No such feed" otherwise).
    pub fn clear(&self) {
        if let Ok(mut f) = self.feeds.lock() {
            f.clear();
        }
        if let Ok(mut r) = self.room_feeds.lock() {
            r.clear();
        }
    }

    fn feed(&self, index: u32) -> Option<Feed> {
        self.feeds.lock().ok()?.get(&index).cloned()
    }

    async fn wait_feed(&self, index: u32) -> Feed {
        loop {
            let notified = self.notify.notified();
            if let Some(f) = self.feed(index) {
                return f;
            }
            notified.await;
        }
    }
}

/// A Janus session; `destroy` ends it and its handles.
#[derive(Debug)]
pub struct Session {
    url: String,
    poller: tokio::task::JoinHandle<()>,
}

impl Session {
    pub async fn destroy(self, t: Duration) {
        let _ = request(
            "POST",
            &self.url,
            Some("application/json"),
            json!({"janus": "destroy", "transaction": "bye"}).to_string(),
            t,
        )
        .await;
        self.poller.abort();
    }
}

/// Janus room numbers from room names (rooms are numeric by default).
pub fn room_number(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h % 1_000_000_000 + 1
}

static TX: AtomicU64 = AtomicU64::new(1);

fn tx() -> String {
    format!("p{}", TX.fetch_add(1, Ordering::Relaxed))
}

struct Api {
    base: String,
    session: u64,
    timeout: Duration,
    events: mpsc::UnboundedReceiver<Value>,
    held: Vec<Value>,
}

async fn post(url: &str, body: Value, t: Duration) -> Result<Value, String> {
    let r = request("POST", url, Some("application/json"), body.to_string(), t)
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let v: Value =
        serde_json::from_str(&r.body).map_err(|e| format!("POST {url}: not JSON ({e})"))?;
    if v["janus"] == "error" {
        return Err(format!(
            "janus error {}: {}",
            v["error"]["code"], v["error"]["reason"]
        ));
    }
    Ok(v)
}

impl Api {
    async fn create(
        base: &str,
        timeout: Duration,
        cleanup: &mut Vec<Cleanup>,
    ) -> Result<Api, String> {
        let v = post(
            base,
            json!({"janus": "create", "transaction": tx()}),
            timeout,
        )
        .await?;
        let session = v["data"]["id"]
            .as_u64()
            .ok_or("janus create: no session id")?;
        let (etx, events) = mpsc::unbounded_channel();
        let url = format!("{base}/{session}");
        let poller = tokio::spawn(poll(url.clone(), etx));
        cleanup.push(Cleanup::Janus(Session { url, poller }));
        Ok(Api {
            base: base.to_string(),
            session,
            timeout,
            events,
            held: Vec::new(),
        })
    }

    async fn attach(&self) -> Result<u64, String> {
        let url = format!("{}/{}", self.base, self.session);
        let v = post(
            &url,
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": tx()}),
            self.timeout,
        )
        .await?;
        v["data"]["id"]
            .as_u64()
            .ok_or_else(|| "janus attach: no handle id".into())
    }

    async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}/{}/{handle}", self.base, self.session);
        let mut m = json!({"janus": "message", "transaction": tx(), "body": body});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        post(&url, m, self.timeout).await
    }

    async fn trickle_done(&self, handle: u64) {
        let url = format!("{}/{}/{handle}", self.base, self.session);
        let _ = post(
            &url,
            json!({"janus": "trickle", "transaction": tx(), "candidate": {"completed": true}}),
            self.timeout,
        )
        .await;
    }

    /// The next plugin event from `handle` whose data satisfies `want`.
    async fn event(&mut self, handle: u64, want: impl Fn(&Value) -> bool) -> Result<Value, String> {
        let matches = |e: &Value| e["sender"].as_u64() == Some(handle) && e["janus"] == "event";
        loop {
            if let Some(i) = self.held.iter().position(|e| {
                matches(e) && (want(e) || e["plugindata"]["data"]["error"].is_string())
            }) {
                let e = self.held.remove(i);
                if let Some(err) = e["plugindata"]["data"]["error"].as_str() {
                    return Err(format!("videoroom: {err}"));
                }
                return Ok(e);
            }
            let e = self.events.recv().await.ok_or("janus session ended")?;
            self.held.push(e);
        }
    }
}

/// Long-polls the session's events (which also keeps it alive) and sends a keepalive
/// whenever a poll came back empty.
async fn poll(url: String, out: mpsc::UnboundedSender<Value>) {
    loop {
        let get = format!("{url}?maxev=10&rid={}", TX.fetch_add(1, Ordering::Relaxed));
        let Ok(r) = request("GET", &get, None, String::new(), Duration::from_secs(40)).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&r.body) else {
            continue;
        };
        let list = match v {
            Value::Array(a) => a,
            other => vec![other],
        };
        for e in list {
            if e["janus"] == "keepalive" {
                let _ = post(
                    &url,
                    json!({"janus": "keepalive", "transaction": tx()}),
                    Duration::from_secs(5),
                )
                .await;
            } else {
                let _ = out.send(e);
            }
        }
    }
}

/// Creates the room unless it exists (Janus answers 427 then).
async fn ensure_room(api: &Api, room: u64) -> Result<(), String> {
    let h = api.attach().await?;
    let body = json!({
        "request": "create", "room": room, "publishers": 5000, "bitrate": 0, "fir_freq": 10,
        "audiocodec": "opus", "videocodec": "vp8", "audiolevel_ext": true, "transport_wide_cc_ext": true,
        "notify_joining": false,
    });
    match api.message(h, body, None).await {
        Ok(v) => match v["plugindata"]["data"]["error_code"].as_u64() {
            None | Some(427) => Ok(()),
            Some(_) => Err(format!("create room: {}", v["plugindata"]["data"]["error"])),
        },
        Err(e) => Err(e),
    }
}

/// Joins `p` on Janus; returns the slowest connect, µs.
pub async fn join(
    ctx: &JoinCtx,
    base: &str,
    p: &Participant,
    cleanup: &mut Vec<Cleanup>,
) -> Result<u64, String> {
    if p.all_cameras.is_some() {
        return Err("the meeting scenario relies on the server's last-N, which Janus VideoRoom does not have".into());
    }
    let mut api = Api::create(base, ctx.timeout, cleanup).await?;
    let room_name = if p.room.is_empty() {
        p.play.first().cloned().unwrap_or_default()
    } else {
        p.room.clone()
    };
    let room = room_number(&room_name);
    ensure_room(&api, room).await?;
    let mut slowest = 0;
    let mut waits = Vec::new();
    if !p.publish.is_empty() {
        let h = api.attach().await?;
        api.message(
            h,
            json!({"request": "join", "room": room, "ptype": "publisher", "display": p.name}),
            None,
        )
        .await?;
        let joined = api
            .event(h, |e| e["plugindata"]["data"]["videoroom"] == "joined")
            .await?;
        let feed_id = joined["plugindata"]["data"]["id"]
            .as_u64()
            .ok_or("publisher join: no id")?;
        // Janus takes rid-based simulcast layers in SDP order, highest first.
        let send = p
            .publish
            .iter()
            .map(|x| match &x.1 {
                SendPlan::Video { layers } => SendPlan::Video {
                    layers: layers.iter().rev().cloned().collect(),
                },
                other => other.clone(),
            })
            .collect();
        let plan = PeerPlan {
            participant: p.index,
            label: format!("{}/janus-pub", p.name),
            send,
            recv: vec![],
        };
        let sources: Vec<TrackSource> = p.publish.iter().map(|x| x.0).collect();
        let api_ref = &mut api;
        let (w, mids) = ctx
            .offer_peer(&plan, |offer| async move {
                let mids: Vec<(TrackSource, String)> = offered_tracks(&offer)
                    .into_iter()
                    .zip(&sources)
                    .map(|(l, s)| (*s, l.0.to_string()))
                    .collect();
                api_ref
                    .message(
                        h,
                        json!({"request": "publish"}),
                        Some(json!({"type": "offer", "sdp": offer})),
                    )
                    .await?;
                let ev = api_ref.event(h, |e| e["jsep"]["type"] == "answer").await?;
                let sdp = ev["jsep"]["sdp"]
                    .as_str()
                    .ok_or("publish: no answer")?
                    .to_string();
                Ok((sdp, mids))
            })
            .await?;
        api.trickle_done(h).await;
        // Janus lists a feed once its PeerConnection is up; subscribing earlier fails.
        let us = w.connected().await?;
        if let Ok(mut f) = ctx.janus.feeds.lock() {
            f.insert(p.index, Feed { id: feed_id, mids });
        }
        if let Ok(mut r) = ctx.janus.room_feeds.lock() {
            r.insert(room_name.clone(), p.index);
        }
        ctx.janus.notify.notify_waiters();
        slowest = us;
    }
    let streams = subscriptions(ctx, p).await;
    if !streams.is_empty() {
        let h = api.attach().await?;
        api.message(
            h,
            json!({"request": "join", "room": room, "ptype": "subscriber", "streams": streams}),
            None,
        )
        .await?;
        let ev = api.event(h, |e| e["jsep"]["type"] == "offer").await?;
        let offer = ev["jsep"]["sdp"].as_str().ok_or("subscriber: no offer")?;
        let (w, answer) = ctx.answer_peer(p.index, format!("{}/janus-sub", p.name), offer, None)?;
        api.message(
            h,
            json!({"request": "start", "room": room}),
            Some(json!({"type": "answer", "sdp": answer})),
        )
        .await?;
        api.trickle_done(h).await;
        let layers = substreams(&ev["plugindata"]["data"]["streams"], &streams);
        if !layers.is_empty() {
            api.message(h, json!({"request": "configure", "streams": layers}), None)
                .await?;
        }
        waits.push(w);
    }
    for w in waits {
        slowest = slowest.max(w.connected().await?);
    }
    Ok(slowest)
}

/// The streams `p` subscribes to: whole feeds it plays (webinar), the sources it wants
/// at their layer, and the microphones it hears (Janus has no audio slots).
async fn subscriptions(ctx: &JoinCtx, p: &Participant) -> Vec<Value> {
    let mut out = Vec::new();
    let present = ctx.population.load(Ordering::Relaxed);
    for room in &p.play {
        let publisher = ctx
            .janus
            .room_feeds
            .lock()
            .ok()
            .and_then(|r| r.get(room).copied());
        if let Some(f) = publisher.and_then(|i| ctx.janus.feed(i)) {
            out.push(json!({"feed": f.id}));
        }
    }
    for w in p.want.iter().filter(|w| w.publisher < present) {
        let f = ctx.janus.wait_feed(w.publisher).await;
        if let Some((_, mid)) = f.mids.iter().find(|(s, _)| *s == w.source) {
            let mut s = json!({"feed": f.id, "mid": mid});
            if w.source == TrackSource::Camera {
                s["substream"] = json!(w.max_layer);
            }
            out.push(s);
        }
    }
    for &i in p.hear.iter().filter(|&&i| i < present) {
        let f = ctx.janus.wait_feed(i).await;
        if let Some((_, mid)) = f.mids.iter().find(|(s, _)| *s == TrackSource::Microphone) {
            out.push(json!({"feed": f.id, "mid": mid}));
        }
    }
    out
}

/// `configure` entries that pick each simulcast camera's layer: Janus relays the highest
/// substream unless told otherwise, and takes the choice per subscriber m-line.
fn substreams(attached: &Value, wanted: &[Value]) -> Vec<Value> {
    let Some(list) = attached.as_array() else {
        return vec![];
    };
    wanted
        .iter()
        .filter_map(|w| {
            let layer = w["substream"].as_u64()?;
            let s = list
                .iter()
                .find(|s| s["feed_id"] == w["feed"] && s["feed_mid"] == w["mid"])?;
            Some(json!({"mid": s["mid"], "substream": layer, "temporal": 2}))
        })
        .collect()
}

/// Whether a scenario can run on Janus.
pub fn supports(kind: ScenarioKind) -> bool {
    kind != ScenarioKind::Meeting
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substream_choice_follows_the_attached_mids() {
        let attached = json!([
            {"mid": "0", "feed_id": 7, "feed_mid": "a"},
            {"mid": "1", "feed_id": 7, "feed_mid": "v"},
            {"mid": "2", "feed_id": 8, "feed_mid": "v"},
        ]);
        let wanted = [
            json!({"feed": 7, "mid": "v", "substream": 2}),
            json!({"feed": 8, "mid": "v", "substream": 0}),
            json!({"feed": 7, "mid": "a"}),
        ];
        let c = substreams(&attached, &wanted);
        assert_eq!(
            c,
            [
                json!({"mid": "1", "substream": 2, "temporal": 2}),
                json!({"mid": "2", "substream": 0, "temporal": 2})
            ]
        );
    }

    #[test]
    fn cleared_feeds_are_waited_for_again() {
        let shared = Shared::default();
        let feed = Feed {
            id: 7,
            mids: Vec::new(),
        };
        shared.feeds.lock().unwrap().insert(0, feed);
        shared.room_feeds.lock().unwrap().insert("r".into(), 0);
        assert_eq!(shared.feed(0).map(|f| f.id), Some(7));
        shared.clear();
        assert!(shared.feed(0).is_none());
        assert!(shared.room_feeds.lock().unwrap().is_empty());
    }

    #[test]
    fn room_numbers_are_stable_and_distinct() {
        assert_eq!(room_number("webinar-0"), room_number("webinar-0"));
        assert_ne!(room_number("webinar-0"), room_number("webinar-1"));
        assert!(room_number("assembly") >= 1 && room_number("assembly") <= 1_000_000_000);
    }
}

//! Real Chromium against a cascade of in-process SFU nodes on 127.0.0.1, sharing a real
//! redis-server as their directory.
//!
//! - Chromium publishes by WHIP on node A and plays by WHEP on nodes B and C: both viewers
//!   decode video and receive audio that crossed a QUIC link.
//! - Each track crosses a link once: with one and then five WHEP viewers on node B, what A
//!   sends to B per byte the publisher sends stays within 10%.
//! - Two room participants (the demo room page) on different nodes see and hear each other.
//! - When a participant's node stops (its WebSocket closes) or drains (it sends `redirect`),
//!   the page re-homes by itself to the room's other node, and the two see and hear each
//!   other again within 10 s, also when the node freezes (a `plenary sfu` process
//!   SIGSTOPped: nothing closes; the page notices that `alive` stopped).

mod common;
#[path = "../crates/plenary-sfu/tests/common/mod.rs"]
mod sfu_common;

use common::cascade_node::{free_ports, Node};
use common::sfu::{browser, leave_seen_by, poll, poll_every};
use common::webdriver::{require_browser, Driver};
use plenary_sfu::{serve, CascadeConfig, RunningSfu, SfuConfig};
use serde_json::{json, Value};
use sfu_common::redis::Redis;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One browser test at a time: each encodes and decodes video in Chromium.
static SERIAL: Mutex<()> = Mutex::new(());

const SECRET: &[u8] = b"cluster-secret-for-chromium-tests-0123";
/// How long a page may take to connect and show media.
const MEDIA: Duration = Duration::from_secs(20);
/// Each link-bytes measurement window.
const WINDOW: Duration = Duration::from_secs(4);

/// In-process SFU nodes (one media worker each) on one tokio runtime, shut down on Drop.
struct Cluster {
    rt: tokio::runtime::Runtime,
    nodes: Vec<(String, RunningSfu)>,
}

impl Cluster {
    fn start(redis: &Redis, names: &[&str]) -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let nodes = names
            .iter()
            .map(|name| {
                let config = SfuConfig {
                    http: any,
                    media: any,
                    workers: 1,
                    cascade: Some(CascadeConfig {
                        listen: any,
                        advertise: None,
                        directory: redis.url(),
                        secret: SECRET.to_vec(),
                        node: (*name).to_owned(),
                        max_load: 0,
                        public_url: None,
                    }),
                    ..SfuConfig::default()
                };
                let sfu = rt.block_on(serve(config)).expect("sfu node starts");
                ((*name).to_owned(), sfu)
            })
            .collect();
        Cluster { rt, nodes }
    }

    fn node(&self, name: &str) -> &RunningSfu {
        &self
            .nodes
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no node {name}"))
            .1
    }

    /// `http://127.0.0.1:PORT` of a node: its pages, WHIP, WHEP and the room API.
    fn base(&self, name: &str) -> String {
        format!("http://{}", self.node(name).http_addr())
    }

    /// Stops node `name` (`RunningSfu::shutdown`: its WebSockets close) and removes it.
    fn stop(&mut self, name: &str) {
        let i = self
            .nodes
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no node {name}"));
        let (_, sfu) = self.nodes.remove(i);
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), sfu.shutdown())
                .await
                .expect("node shuts down within 10 s")
        });
    }

    /// Drains node `name` (`RunningSfu::drain`): the peers still on it after `timeout`.
    fn drain(&self, name: &str, timeout: Duration) -> usize {
        self.rt.block_on(self.node(name).drain(timeout))
    }

    /// Media bytes `from` has sent to `to` over their link(s).
    fn link_tx(&self, from: &str, to: &str) -> u64 {
        self.node(from)
            .cascade_stats()
            .iter()
            .filter(|l| l.peer == to)
            .map(|l| l.tx_bytes)
            .sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, sfu) in self.nodes.drain(..).rev() {
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), sfu.shutdown()).await
            });
        }
    }
}

/// whip.html: `ok` once the publish connection is up and video is being sent.
const WHIP_READY: &str = r#"
const done = arguments[arguments.length - 1];
const w = window.whip;
const page = { state: w && w.state, error: w && w.error,
  status: document.getElementById('status').textContent };
if (!w || !w.pc) { done(page); return; }
Plenary.outboundStats(w.pc).then((out) => {
  const sending = out.some((s) => s.kind === 'video' && s.bytesSent > 0);
  const bytesSent = out.reduce((a, s) => a + s.bytesSent, 0);
  done(Object.assign(page, { ok: w.state === 'publishing' && sending, outbound: out, bytesSent }));
}, (e) => done(Object.assign(page, { statsError: String(e) })));
"#;

/// whep.html: `ok` once more than `arguments[0]` video frames were decoded and more than
/// `arguments[1]` audio bytes arrived.
const WHEP_MEDIA: &str = r#"
const done = arguments[arguments.length - 1];
const [minFrames, minAudio] = arguments;
const w = window.whep;
const page = { state: w && w.state, error: w && w.error,
  status: document.getElementById('status').textContent,
  stats: document.getElementById('stats').textContent };
if (!w || !w.pc) { done(page); return; }
Plenary.inboundStats(w.pc).then((s) => {
  const ok = s.video.framesDecoded > minFrames && s.audio.bytesReceived > minAudio;
  done(Object.assign(page, { ok, video: s.video, audio: s.audio }));
}, (e) => done(Object.assign(page, { statsError: String(e) })));
"#;

/// Opens whep.html on `base` in a new tab and waits until it decodes video that keeps
/// coming (10 more frames) and audio that keeps coming.
fn whep_tab(driver: &Driver, base: &str, room: &str, who: &str) -> String {
    let tab = driver.new_tab();
    driver.switch_to(&tab);
    let t0 = Instant::now();
    driver.navigate(&format!("{base}/whep.html?room={room}&autoplay=1"));
    let first = poll(driver, WHEP_MEDIA, &json!([0, 0]), MEDIA).unwrap_or_else(|last| {
        panic!(
            "{who}: no decoded video or no audio within {MEDIA:?}: {last:#}\nconsole: {:#?}",
            driver.browser_log()
        )
    });
    let shown = t0.elapsed();
    let frames = first["video"]["framesDecoded"].as_u64().unwrap_or(0);
    let audio = first["audio"]["bytesReceived"].as_u64().unwrap_or(0);
    let later = poll(driver, WHEP_MEDIA, &json!([frames + 10, audio]), MEDIA)
        .unwrap_or_else(|last| {
            panic!("{who}: video or audio stopped after {frames} frames, {audio} audio bytes: {last:#}")
        });
    eprintln!(
        "{who}: first media {:.1} s after loading; video {} audio {}",
        shown.as_secs_f64(),
        later["video"],
        later["audio"]
    );
    tab
}

/// Bytes the WHIP publisher has sent (audio and video payload), from getStats.
fn published_bytes(driver: &Driver, publisher: &str) -> u64 {
    driver.switch_to(publisher);
    let v = driver.execute_async(WHIP_READY, json!([]));
    v["bytesSent"]
        .as_u64()
        .unwrap_or_else(|| panic!("publisher stats: {v:#}"))
}

/// Bytes over `WINDOW`: what A sent to B, what A sent to C, what the publisher sent.
#[derive(Debug, Clone, Copy)]
struct Window {
    to_b: u64,
    to_c: u64,
    published: u64,
}

impl Window {
    fn kbps(bytes: u64) -> f64 {
        bytes as f64 * 8.0 / WINDOW.as_secs_f64() / 1000.0
    }

    /// A -> B relative to A -> C (the same tracks to one viewer all along).
    fn b_per_c(&self) -> f64 {
        self.to_b as f64 / self.to_c.max(1) as f64
    }

    fn show(&self, what: &str) -> String {
        format!(
            "{what}: A -> B {:.0} kbit/s, A -> C {:.0} kbit/s (B/C {:.3}), publisher {:.0} kbit/s \
             (A -> B per published byte {:.3})",
            Window::kbps(self.to_b),
            Window::kbps(self.to_c),
            self.b_per_c(),
            Window::kbps(self.published),
            self.to_b as f64 / self.published.max(1) as f64
        )
    }
}

fn measure(cluster: &Cluster, driver: &Driver, publisher: &str) -> Window {
    let sample = || {
        let links = (cluster.link_tx("a", "b"), cluster.link_tx("a", "c"));
        (links, published_bytes(driver, publisher))
    };
    let ((b0, c0), p0) = sample();
    std::thread::sleep(WINDOW);
    let ((b1, c1), p1) = sample();
    Window {
        to_b: b1.saturating_sub(b0),
        to_c: c1.saturating_sub(c0),
        published: p1.saturating_sub(p0),
    }
}

#[test]
fn chromium_whip_on_a_plays_by_whep_on_b_and_c_and_crosses_each_link_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(chromedriver) = require_browser() else {
        return;
    };
    let Some(redis) = Redis::start() else {
        return;
    };
    let cluster = Cluster::start(&redis, &["a", "b", "c"]);
    let driver = browser(&chromedriver);
    let room = "cascade-whip";

    let publisher = driver.current_tab();
    driver.navigate(&format!(
        "{}/whip.html?room={room}&autostart=1",
        cluster.base("a")
    ));
    let ready = poll(&driver, WHIP_READY, &json!([]), MEDIA).unwrap_or_else(|last| {
        panic!(
            "publisher on A did not start sending video: {last:#}\nconsole: {:#?}",
            driver.browser_log()
        )
    });
    eprintln!("publisher on A: {}", ready["outbound"]);

    whep_tab(&driver, &cluster.base("b"), room, "WHEP viewer on B");
    let c_tab = whep_tab(&driver, &cluster.base("c"), room, "WHEP viewer on C");
    assert!(
        cluster.link_tx("a", "b") > 0 && cluster.link_tx("a", "c") > 0,
        "A's links: {:?}",
        cluster.node("a").cascade_stats()
    );

    // One viewer on B.
    let one = measure(&cluster, &driver, &publisher);
    // Four more (str0m WHEP viewers: RTP-level receivers, far lighter than tabs).
    let b_http = cluster.node("b").http_addr();
    let extra: Vec<_> = (0..4)
        .map(|_| sfu_common::whep_viewer(b_http, room))
        .collect();
    let video_on = |v: &(sfu_common::MediaPeer, String, String)| v.0.shared.count_on(&v.2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while extra.iter().any(|v| video_on(v) < 30) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let counts: Vec<usize> = extra.iter().map(video_on).collect();
    assert!(
        counts.iter().all(|c| *c >= 30),
        "the four extra WHEP viewers on B did not all get video within 10 s: packets {counts:?}"
    );
    let before: Vec<usize> = extra.iter().map(video_on).collect();
    let five = measure(&cluster, &driver, &publisher);
    let after: Vec<usize> = extra.iter().map(video_on).collect();
    assert!(
        before.iter().zip(&after).all(|(b, a)| a > b),
        "the extra viewers stopped getting video while measured: {before:?} -> {after:?}"
    );

    // The publisher's encoder is still ramping up, so the windows are compared through A -> C,
    // which carries the same tracks to one viewer throughout.
    eprintln!("{}", one.show("1 viewer on B"));
    eprintln!("{}", five.show("5 viewers on B"));
    let change = five.b_per_c() / one.b_per_c();
    eprintln!("A -> B relative to A -> C: x{change:.3} from 1 to 5 viewers on B");
    assert!(
        one.to_b > 0 && one.to_c > 0 && five.to_c > 0,
        "nothing measured: {one:?} {five:?}"
    );
    assert!(
        (change - 1.0).abs() <= 0.10,
        "A -> B went from {:.3} to {:.3} times A -> C with 1 then 5 viewers on B: \
         a track crosses the link more than once",
        one.b_per_c(),
        five.b_per_c()
    );
    assert!(
        (five.b_per_c() - 1.0).abs() <= 0.10,
        "with 5 viewers on B and 1 on C, A -> B is {:.3} times A -> C",
        five.b_per_c()
    );

    // C drains: its WHEP session is closed and the page pulls again from another node of the
    // room (its answer named them), while B's viewers go on.
    let left = cluster.drain("c", Duration::from_secs(5));
    assert_eq!(left, 0, "C's WHEP session was not ended by the drain");
    driver.switch_to(&c_tab);
    let t0 = Instant::now();
    let moved = poll(
        &driver,
        WHEP_REHOMED,
        &json!([cluster.base("c"), 10]),
        MEDIA,
    )
    .unwrap_or_else(|last| {
        panic!(
            "the WHEP page on C did not play again from another node: {last:#}\nconsole: {:#?}",
            driver.browser_log()
        )
    });
    eprintln!(
        "WHEP viewer on C re-homed to {} in {:.1} s after the drain",
        moved["source"],
        t0.elapsed().as_secs_f64()
    );
    let before: Vec<usize> = extra.iter().map(video_on).collect();
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<usize> = extra.iter().map(video_on).collect();
    assert!(
        before.iter().zip(&after).all(|(b, a)| a > b),
        "B's viewers stopped getting video during C's drain: {before:?} -> {after:?}"
    );
    drop(extra);
    drop(driver);
}

/// whep.html after its node drained: `ok` once it pulled again (`repulls`), from a node other
/// than `arguments[0]`, and decoded more than `arguments[1]` frames there.
const WHEP_REHOMED: &str = r#"
const done = arguments[arguments.length - 1];
const [drained, minFrames] = arguments;
const w = window.whep;
const page = { state: w.state, error: w.error, repulls: w.repulls, source: w.source,
  alternates: w.alternates, status: document.getElementById('status').textContent };
if (!w.pc || w.repulls < 1 || !w.source || w.source.startsWith(drained)) { done(page); return; }
Plenary.inboundStats(w.pc).then((s) => {
  done(Object.assign(page, { ok: s.video.framesDecoded > minFrames, video: s.video }));
}, (e) => done(Object.assign(page, { statsError: String(e) })));
"#;

/// index.html: `ok` once joined, `arguments[0]` is among the participants, more than
/// `arguments[1]` video frames were decoded and more than `arguments[2]` audio bytes arrived on
/// the subscribe connection.
const ROOM_MEDIA: &str = r#"
const done = arguments[arguments.length - 1];
const [other, minFrames, minAudio] = arguments;
const r = window.room;
if (!r) { done({ status: document.body.textContent.slice(0, 300) }); return; }
const names = [...r.participants.values()].map((p) => p.name);
const page = { state: r.state, error: r.error, me: r.me, names,
  tiles: [...r.tiles.keys()], slots: [...r.slots.values()],
  status: document.getElementById('status').textContent };
if (!r.sub) { done(page); return; }
Plenary.inboundStats(r.sub).then((s) => {
  const ok = r.state === 'joined' && names.includes(other) && s.video.framesDecoded > minFrames
    && s.audio.bytesReceived > minAudio;
  done(Object.assign(page, { ok, video: s.video, audio: s.audio }));
}, (e) => done(Object.assign(page, { statsError: String(e) })));
"#;

#[test]
fn chromium_room_participants_on_two_nodes_see_and_hear_each_other() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(chromedriver) = require_browser() else {
        return;
    };
    let Some(redis) = Redis::start() else {
        return;
    };
    let cluster = Cluster::start(&redis, &["a", "b"]);
    let driver = browser(&chromedriver);
    let page = |node: &str, name: &str| {
        format!(
            "{}/?room=cascade-room&name={name}&autojoin=1",
            cluster.base(node)
        )
    };
    let t0 = Instant::now();
    let alice = driver.current_tab();
    driver.navigate(&page("a", "alice"));
    let bob = driver.new_tab();
    driver.switch_to(&bob);
    driver.navigate(&page("b", "bob"));

    for (tab, me, other) in [(&bob, "bob", "alice"), (&alice, "alice", "bob")] {
        driver.switch_to(tab);
        let first = poll(&driver, ROOM_MEDIA, &json!([other, 0, 0]), 2 * MEDIA);
        let first = first.unwrap_or_else(|last| {
            panic!(
                "{me} does not see and hear {other} across nodes: {last:#}\nconsole: {:#?}",
                driver.browser_log()
            )
        });
        let shown = t0.elapsed();
        let frames = first["video"]["framesDecoded"].as_u64().unwrap_or(0);
        let audio = first["audio"]["bytesReceived"].as_u64().unwrap_or(0);
        let later = poll(
            &driver,
            ROOM_MEDIA,
            &json!([other, frames + 10, audio]),
            MEDIA,
        );
        let later: Value = later.unwrap_or_else(|last| {
            panic!("{me}: {other}'s video or audio stopped after {frames} frames: {last:#}")
        });
        eprintln!(
            "{me} sees and hears {other} ({:.1} s after the pages loaded): video {} audio {} tiles {}",
            shown.as_secs_f64(),
            later["video"],
            later["audio"],
            later["tiles"]
        );
        assert!(
            later["tiles"].as_array().is_some_and(|t| t.len() >= 2),
            "{me}: expected its own tile and {other}'s: {later:#}"
        );
    }

    // Alice leaves node A: bob on node B is told.
    driver.switch_to(&alice);
    let gone = leave_seen_by(&driver, &bob, "alice");
    assert!(
        gone.is_ok(),
        "bob on B still lists alice after she left A: {gone:?}"
    );
    drop(driver);
}

/// Milliseconds since the Unix epoch, the clock `Date.now()` reads in the page.
fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `poll` every 100 ms until `deadline`, for timings finer than its 500 ms.
fn poll_until(
    driver: &Driver,
    script: &str,
    args: &Value,
    deadline: Instant,
) -> Result<Value, Value> {
    poll_every(driver, script, args, deadline, Duration::from_millis(100))
}

/// index.html: wraps room.js's message handlers (its global `handlers`) to note in
/// `window.handlerTrace` when each starts and ends, so that a failure shows a handler that
/// never finished (room.js runs them one after another on `room.queue`).
const HANDLER_TRACE: &str = r#"
window.handlerTrace = [];
const t0 = Date.now();
const note = (s) => window.handlerTrace.push(`+${Date.now() - t0} ms: ${s}`);
for (const k of Object.keys(handlers)) {
  const h = handlers[k];
  handlers[k] = async function (m, ws) {
    const n = `${k}#${window.handlerTrace.length}`;
    note(`start ${n}`);
    try { return await h.call(this, m, ws); }
    catch (e) { note(`threw ${n}: ${e}`); throw e; }
    finally { note(`end ${n}`); }
  };
}
return true;
"#;

/// index.html: starts a watcher in the page that notes (by `Date.now()`) each change of
/// state, node and re-home count, what the WebSocket to the old node receives and how it
/// closes, when the page is joined again at `arguments[0]` after a
/// re-home, and when video frames and audio bytes first arrive on the new subscribe
/// connection. Answers the page's room as it is now.
const WATCH_REHOME: &str = r#"
const [target] = arguments;
const r = window.room;
const w = { start: Date.now(), joinedAt: 0, videoAt: 0, audioAt: 0, states: [], old: [] };
window.rehomeWatch = w;
// What the WebSocket to the old node carries from now on: message types, then its close.
const ws = r.ws;
ws.addEventListener('message', (e) => {
  let type = '?';
  try { type = JSON.parse(e.data).type; } catch {}
  w.old.push(`+${Date.now() - w.start} ms: <- ${type}`);
});
ws.addEventListener('close', (e) => {
  w.old.push(`+${Date.now() - w.start} ms: closed ${e.code} ${e.reason} clean=${e.wasClean}`);
});
let last = '';
let busy = false;
const tick = () => {
  const s = `${r.state} ${r.base} rehomes=${r.rehomes}`;
  if (s !== last) { w.states.push(`+${Date.now() - w.start} ms: ${s}`); last = s; }
  const home = r.state === 'joined' && r.base === target && r.rehomes >= 1;
  if (home && !w.joinedAt) w.joinedAt = Date.now();
  if (home && r.sub && !busy) {
    busy = true;
    Plenary.inboundStats(r.sub).then((st) => {
      if (!w.videoAt && st.video.framesDecoded > 0) w.videoAt = Date.now();
      if (!w.audioAt && st.audio.bytesReceived > 0) w.audioAt = Date.now();
    }).finally(() => { busy = false; });
  }
  if (!(w.videoAt && w.audioAt) && Date.now() - w.start < 60000) setTimeout(tick, 10);
};
tick();
return { me: r.me, state: r.state, base: r.base, nodes: r.nodes, rehomes: r.rehomes };
"#;

/// index.html: the watcher's notes; `ok` once media arrives on the new node.
const REHOME_WATCHED: &str = r#"
const done = arguments[arguments.length - 1];
const w = window.rehomeWatch;
const r = window.room;
done(Object.assign({}, w, { ok: !!(w && w.joinedAt && w.videoAt && w.audioAt),
  state: r.state, base: r.base, rehomes: r.rehomes, error: r.error,
  handlers: (window.handlerTrace || []).slice(-12),
  status: document.getElementById('status').textContent }));
"#;

/// index.html after a re-home: `ok` once joined at `arguments[0]` after at least one re-home,
/// `arguments[1]` is among the participants, more than `arguments[2]` video frames were
/// decoded and more than `arguments[3]` audio bytes arrived on the subscribe connection.
const REHOMED_MEDIA: &str = r#"
const done = arguments[arguments.length - 1];
const [base, other, minFrames, minAudio] = arguments;
const r = window.room;
const names = [...r.participants.values()].map((p) => p.name);
const page = { state: r.state, error: r.error, me: r.me, base: r.base, nodes: r.nodes,
  rehomes: r.rehomes, names, tiles: [...r.tiles.keys()],
  status: document.getElementById('status').textContent };
if (!r.sub) { done(page); return; }
Plenary.inboundStats(r.sub).then((s) => {
  const ok = r.state === 'joined' && r.base === base && r.rehomes >= 1 && names.includes(other)
    && s.video.framesDecoded > minFrames && s.audio.bytesReceived > minAudio;
  done(Object.assign(page, { ok, video: s.video, audio: s.audio }));
}, (e) => done(Object.assign(page, { statsError: String(e) })));
"#;

/// index.html (the participant who stayed): `ok` once participant `arguments[0]` is listed
/// under the name `arguments[1]`, `arguments[2]` (its id before it moved) is gone, one of its
/// video tiles decoded more than `arguments[3]` frames, and more than `arguments[4]` audio
/// bytes arrived in all.
const SEES_MOVED: &str = r#"
const done = arguments[arguments.length - 1];
const [id, name, oldId, minFrames, minAudio] = arguments;
const r = window.room;
const p = r.participants.get(id);
const participants = [...r.participants].map(([k, v]) => `${k}=${v.name}`);
const page = { state: r.state, error: r.error, participants, tiles: [...r.tiles.keys()],
  status: document.getElementById('status').textContent };
const tracks = [...r.tiles.values()]
  .filter((el) => el.dataset.participant === id)
  .map((el) => el.querySelector('video').srcObject)
  .filter((s) => s)
  .map((s) => s.getVideoTracks()[0]);
const rx = r.sub ? r.sub.getReceivers().filter((x) => tracks.includes(x.track)) : [];
Promise.all([Promise.all(rx.map((x) => x.getStats())), r.sub ? Plenary.inboundStats(r.sub) : null])
  .then(([reports, all]) => {
    let frames = 0;
    for (const rep of reports) rep.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
    });
    const audio = all ? all.audio.bytesReceived : 0;
    const ok = r.state === 'joined' && !!p && p.name === name && !r.participants.has(oldId)
      && frames > minFrames && audio > minAudio;
    done(Object.assign(page, { ok, frames, audio, videoTiles: tracks.length }));
  }, (e) => done(Object.assign(page, { statsError: String(e) })));
"#;

/// index.html: `ok` once joined.
const JOINED: &str = r#"
const done = arguments[arguments.length - 1];
const r = window.room;
done({ ok: !!r && r.state === 'joined', state: r && r.state, error: r && r.error,
  nodes: r && r.nodes });
"#;

/// How bob's node goes away.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Leave {
    /// `RunningSfu::shutdown`: bob's WebSocket closes and the page moves on its own.
    Stop,
    /// `RunningSfu::drain`: the node sends bob `redirect` and stays up while he moves.
    Drain,
    /// B is a `plenary sfu` process, SIGSTOPped: a machine gone off the network. Nothing
    /// closes; the page notices its subscribe connection `disconnected` and moves.
    Freeze,
}

/// Re-homes must complete (bob joined on A, media both ways, alice sees him) this fast.
const REHOME: Duration = Duration::from_secs(10);

/// Alice on A and bob on B (each page from its own node) see and hear each other; then B
/// goes away as `how` says, and bob's page re-homes to A by itself.
fn rehome_case(how: Leave) {
    let Some(chromedriver) = require_browser() else {
        return;
    };
    let Some(redis) = Redis::start() else {
        return;
    };
    // A frozen node is noticed by its silence: `alive` stops for 3.5 s.
    let within = REHOME;
    // Frozen, B must be a process of its own; otherwise both nodes run in this one.
    let in_process: &[&str] = if how == Leave::Freeze {
        &["a"]
    } else {
        &["a", "b"]
    };
    let mut cluster = Cluster::start(&redis, in_process);
    let logs = tempfile::tempdir().expect("tempdir");
    let mut b_process = (how == Leave::Freeze).then(|| {
        let p = free_ports(3);
        let secret = std::str::from_utf8(SECRET).expect("secret is text");
        let mut n = Node::new("b", [p[0], p[1], p[2]], logs.path(), &redis.url(), secret);
        cluster.rt.block_on(n.start());
        n
    });
    let a = cluster.base("a");
    let b = match &b_process {
        Some(n) => n.url(),
        None => cluster.base("b"),
    };
    let room = match how {
        Leave::Stop => "cascade-rehome-stop",
        Leave::Drain => "cascade-rehome-drain",
        Leave::Freeze => "cascade-rehome-freeze",
    };
    let driver = browser(&chromedriver);
    let page = |base: &str, name: &str| format!("{base}/?room={room}&name={name}&autojoin=1");
    let alice = driver.current_tab();
    driver.navigate(&page(&a, "alice"));
    // Alice first, so that the room is on A when bob joins on B and B lists A for it.
    let joined = poll(&driver, JOINED, &json!([]), MEDIA).unwrap_or_else(|last| {
        panic!(
            "alice did not join on A: {last:#}\nconsole: {:#?}",
            driver.browser_log()
        )
    });
    eprintln!(
        "{how:?}: alice joined on A; her page's nodes: {}",
        joined["nodes"]
    );
    let bob = driver.new_tab();
    driver.switch_to(&bob);
    driver.navigate(&page(&b, "bob"));
    driver.execute(HANDLER_TRACE, json!([]));
    for (tab, me, other) in [(&bob, "bob", "alice"), (&alice, "alice", "bob")] {
        driver.switch_to(tab);
        poll(&driver, ROOM_MEDIA, &json!([other, 0, 0]), 2 * MEDIA).unwrap_or_else(|last| {
            panic!(
                "{me} does not see and hear {other} across nodes: {last:#}\nconsole: {:#?}",
                driver.browser_log()
            )
        });
    }

    // Bob's page knows where the room goes on before its node goes away.
    driver.switch_to(&bob);
    let before = driver.execute(WATCH_REHOME, json!([a]));
    eprintln!("{how:?}: bob before: {before}");
    assert_eq!(
        before["base"],
        json!(b),
        "bob's page is not on B: {before:#}"
    );
    assert_eq!(
        before["nodes"],
        json!([b, a]),
        "bob's page does not list B then A as the room's nodes: {before:#}"
    );
    let old_bob = before["me"]
        .as_str()
        .expect("bob's participant id")
        .to_owned();

    let t0 = Instant::now();
    let t0_ms = epoch_ms();
    match how {
        Leave::Stop => cluster.stop("b"),
        Leave::Drain => {
            let left = cluster.drain("b", Duration::from_secs(2));
            eprintln!(
                "Drain: drain returned after {:.2} s with {left} peer(s) still on B",
                t0.elapsed().as_secs_f64()
            );
        }
        Leave::Freeze => b_process.as_mut().expect("B runs as a process").freeze(),
    }
    let gone = t0.elapsed();
    let deadline = t0 + within;

    // Bob's page: joined again on A, alice's video and audio flowing.
    let watched =
        poll_until(&driver, REHOME_WATCHED, &json!([]), deadline).unwrap_or_else(|last| {
            panic!(
                "{how:?}: bob's page did not re-home to A ({a}) with media within {within:?} (a \
             handler that started and never ended holds room.queue, so the new session's \
             messages wait behind it): {last:#}\nconsole: {:#?}",
                driver.browser_log()
            )
        });
    let since = |key: &str| watched[key].as_u64().unwrap_or(0).saturating_sub(t0_ms);
    let bob_media = poll_until(&driver, REHOMED_MEDIA, &json!([a, "alice", 0, 0]), deadline)
        .unwrap_or_else(|last| {
            panic!(
                "{how:?}: bob on A does not see and hear alice within {within:?}: {last:#}\n\
                 console: {:#?}",
                driver.browser_log()
            )
        });
    let new_bob = bob_media["me"].as_str().expect("bob's new id").to_owned();
    assert_ne!(new_bob, old_bob, "bob's page did not join again");

    // Alice: bob listed again (his new participant, by name), his video decoding.
    driver.switch_to(&alice);
    let seen = poll_until(
        &driver,
        SEES_MOVED,
        &json!([new_bob, "bob", old_bob, 0, 0]),
        deadline,
    )
    .unwrap_or_else(|last| {
        panic!(
            "{how:?}: alice on A does not see bob's video again within {within:?}: {last:#}\n\
             console: {:#?}",
            driver.browser_log()
        )
    });
    let alice_sees = t0.elapsed();
    let (frames, audio) = (
        seen["frames"].as_u64().unwrap_or(0),
        seen["audio"].as_u64().unwrap_or(0),
    );
    // Bob's audio reaches alice again too (he is the only other one who could send it), and
    // his video keeps coming.
    let later = poll_until(
        &driver,
        SEES_MOVED,
        &json!([new_bob, "bob", old_bob, frames + 10, audio]),
        Instant::now() + within,
    )
    .unwrap_or_else(|last| {
        panic!(
            "{how:?}: bob's video or audio stopped reaching alice after {frames} frames: {last:#}"
        )
    });
    let alice_hears = t0.elapsed();

    driver.switch_to(&bob);
    let frames = bob_media["video"]["framesDecoded"].as_u64().unwrap_or(0);
    let audio = bob_media["audio"]["bytesReceived"].as_u64().unwrap_or(0);
    let bob_later = poll(
        &driver,
        REHOMED_MEDIA,
        &json!([a, "alice", frames + 10, audio]),
        within,
    )
    .unwrap_or_else(|last| {
        panic!(
            "{how:?}: alice's video or audio stopped reaching bob after {frames} frames: {last:#}"
        )
    });
    assert!(
        bob_later["tiles"].as_array().is_some_and(|t| t.len() >= 2),
        "{how:?}: bob on A: expected his own tile and alice's: {bob_later:#}"
    );
    assert_eq!(
        bob_later["rehomes"],
        json!(1),
        "{how:?}: bob's page moved more than once: {bob_later:#}"
    );

    eprintln!(
        "{how:?}: B's {} returned after {:.0} ms; bob's page joined on A {} ms after, alice's video {} ms \
         and audio {} ms after; alice saw bob's video again {:.0} ms after and heard him by {:.0} ms",
        match how {
            Leave::Stop => "shutdown",
            Leave::Drain => "drain",
            Leave::Freeze => "SIGSTOP",
        },
        gone.as_secs_f64() * 1000.0,
        since("joinedAt"),
        since("videoAt"),
        since("audioAt"),
        alice_sees.as_secs_f64() * 1000.0,
        alice_hears.as_secs_f64() * 1000.0,
    );
    eprintln!("{how:?}: bob's page: {}", watched["states"]);
    eprintln!(
        "{how:?}: bob on A: video {} audio {} tiles {}; alice: {} bob frames, {} audio bytes",
        bob_later["video"], bob_later["audio"], bob_later["tiles"], later["frames"], later["audio"]
    );

    if how == Leave::Drain {
        // The page moved on the redirect while B was still up; B now stops, and bob stays.
        cluster.stop("b");
        std::thread::sleep(Duration::from_secs(2));
        let after = driver.execute_async(REHOMED_MEDIA, json!([a, "alice", 0, 0]));
        assert!(
            after["ok"] == json!(true) && after["rehomes"] == json!(1),
            "Drain: bob's page after B stopped: {after:#}"
        );
    }
    let old_socket: Vec<&str> = watched["old"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    eprintln!("{how:?}: bob's WebSocket to B: {old_socket:?}");
    let redirected = old_socket.iter().any(|l| l.ends_with("<- redirect"));
    match how {
        Leave::Drain => assert!(
            redirected,
            "Drain: B sent bob's page no `redirect`: {old_socket:?}"
        ),
        Leave::Stop => assert!(
            !redirected && old_socket.iter().any(|l| l.contains("closed")),
            "Stop: bob's WebSocket to B did not just close: {old_socket:?}"
        ),
        // A frozen node sends nothing: the page left on its own.
        Leave::Freeze => assert!(
            !redirected,
            "Freeze: a frozen B sent a redirect: {old_socket:?}"
        ),
    }
    drop(driver);
}

#[test]
fn chromium_room_participant_rehomes_when_its_node_stops() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    rehome_case(Leave::Stop);
}

#[test]
fn chromium_room_participant_follows_a_redirect_when_its_node_drains() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    rehome_case(Leave::Drain);
}

#[test]
fn chromium_room_participant_rehomes_when_its_node_freezes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    rehome_case(Leave::Freeze);
}

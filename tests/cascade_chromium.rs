//! Real Chromium against a cascade of in-process SFU nodes on 127.0.0.1, sharing a real
//! redis-server as their directory.
//!
//! - Chromium publishes by WHIP on node A and plays by WHEP on nodes B and C: both viewers
//!   decode video and receive audio that crossed a QUIC link.
//! - Each track crosses a link once: with one and then five WHEP viewers on node B, what A
//!   sends to B per byte the publisher sends stays within 10%.
//! - Two room participants (the demo room page) on different nodes see and hear each other.

mod common;
#[path = "../crates/plenary-sfu/tests/common/mod.rs"]
mod sfu_common;

use common::sfu::{browser, poll};
use common::webdriver::{require_browser, Driver};
use plenary_sfu::{serve, CascadeConfig, RunningSfu, SfuConfig};
use serde_json::{json, Value};
use sfu_common::redis::Redis;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

    /// Media bytes `from` has sent to `to` over their link(s).
    fn link_tx(&self, from: &str, to: &str) -> u64 {
        self.node(from)
            .cascade_stats()
            .iter()
            .filter(|(peer, _, _)| peer == to)
            .map(|(_, tx, _)| *tx)
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
    whep_tab(&driver, &cluster.base("c"), room, "WHEP viewer on C");
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
    drop(extra);
    drop(driver);
}

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
    driver.execute(
        "document.getElementById('leave').click(); return true;",
        json!([]),
    );
    driver.switch_to(&bob);
    let gone = poll(
        &driver,
        r#"const done = arguments[arguments.length - 1];
           const names = [...window.room.participants.values()].map((p) => p.name);
           done({ ok: !names.includes('alice'), names });"#,
        &json!([]),
        Duration::from_secs(10),
    );
    assert!(
        gone.is_ok(),
        "bob on B still lists alice after she left A: {gone:?}"
    );
    drop(driver);
}

//! Real Chromium (fake camera and microphone) against the SFU, in-process on 127.0.0.1.
//!
//! The WHIP and WHEP pages are served by a small static server on another port, so they run
//! on another origin than the SFU and exercise its CORS: one tab publishes with whip.html,
//! another plays with whep.html, and getStats in the viewer must show decoded video frames
//! and received audio. The room page (index.html, served by the SFU) is tested with two tabs
//! that must see each other's video.

mod common;

use common::sfu::{browser, leave_seen_by, poll, Sfu};
use common::webdriver::require_browser;
use plenary_sfu::EgressPath;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One browser test at a time: each encodes and decodes video in Chromium.
static SERIAL: Mutex<()> = Mutex::new(());

/// How long a page may take to connect, and then to show media.
const CONNECT: Duration = Duration::from_secs(20);
const MEDIA: Duration = Duration::from_secs(20);

/// Serves the files of one directory over HTTP/1.0 on 127.0.0.1 (a second origin).
struct StaticSite {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StaticSite {
    fn start(dir: PathBuf) -> StaticSite {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind static site");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let dir = dir.clone();
                        std::thread::spawn(move || serve_file(stream, &dir));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        StaticSite {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for StaticSite {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request per connection: `GET /name` for a plain file name in `dir`, else 404.
fn serve_file(mut stream: TcpStream, dir: &Path) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or("");
    let path = words.next().unwrap_or("").split('?').next().unwrap_or("");
    let name = match path.strip_prefix('/') {
        Some("") => "index.html",
        Some(name) => name,
        None => "",
    };
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    let body = if method == "GET" && plain {
        std::fs::read(dir.join(name)).ok()
    } else {
        None
    };
    let (status, ctype, body) = match body {
        Some(body) => {
            let ctype = match name.rsplit('.').next() {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                _ => "application/octet-stream",
            };
            ("200 OK", ctype, body)
        }
        None => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
    };
    let header = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(header.as_bytes());
    let _ = stream.write_all(&body);
}

fn assets_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/plenary-sfu/assets")
}

/// whip.html: `ok` once the publish connection is up; with `layers` > 1, once that many video
/// layers (rids) are being sent.
const WHIP_READY: &str = r#"
const done = arguments[arguments.length - 1];
const layers = arguments[0];
const w = window.whip;
const page = { state: w && w.state, error: w && w.error,
  status: document.getElementById('status').textContent };
if (!w || !w.pc) { done(page); return; }
Plenary.outboundStats(w.pc).then((out) => {
  const video = out.filter((s) => s.kind === 'video' && s.bytesSent > 0);
  const rids = video.map((s) => s.rid).filter((r) => r);
  const sending = layers > 1 ? rids.length >= layers : video.length > 0;
  done(Object.assign(page, { ok: w.state === 'publishing' && sending, outbound: out }));
}, (e) => done(Object.assign(page, { statsError: String(e) })));
"#;

/// whep.html: `ok` once more than `arguments[0]` video frames were decoded and audio arrived.
const WHEP_MEDIA: &str = r#"
const done = arguments[arguments.length - 1];
const minFrames = arguments[0];
const w = window.whep;
const page = { state: w && w.state, error: w && w.error,
  status: document.getElementById('status').textContent,
  stats: document.getElementById('stats').textContent };
if (!w || !w.pc) { done(page); return; }
Plenary.inboundStats(w.pc).then((s) => {
  const ok = s.video.framesDecoded > minFrames && s.audio.bytesReceived > 0;
  done(Object.assign(page, { ok, video: s.video, audio: s.audio }));
}, (e) => done(Object.assign(page, { statsError: String(e) })));
"#;

/// Calls the page's `stop()` (DELETE on the WHIP/WHEP Location) and returns the status.
const STOP: &str = r#"
const done = arguments[arguments.length - 1];
const page = window.whip || window.whep;
stop().then(() => done(page.lastDelete), (e) => done(String(e)));
"#;

fn whip_to_whep(room: &str, simulcast: bool, egress: EgressPath) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(chromedriver) = require_browser() else {
        return;
    };
    let sfu = Sfu::start_with(|c| c.egress_path = egress);
    let site = StaticSite::start(assets_dir());
    let driver = browser(&chromedriver);
    let query = format!("sfu={}&room={room}", sfu.base());
    let layers = if simulcast { 3 } else { 1 };

    let publisher = driver.current_tab();
    let sim = if simulcast { "&simulcast=1" } else { "" };
    driver.navigate(&format!(
        "{}/whip.html?{query}{sim}&autostart=1",
        site.base()
    ));
    let ready = poll(&driver, WHIP_READY, &json!([layers]), CONNECT);
    let ready = ready.unwrap_or_else(|last| {
        panic!(
            "publisher did not start sending {layers} video layer(s): {last:#}\nconsole: {:#?}",
            driver.browser_log()
        )
    });
    eprintln!("publisher: {}", ready["outbound"]);

    let viewer = driver.new_tab();
    driver.switch_to(&viewer);
    driver.navigate(&format!("{}/whep.html?{query}&autoplay=1", site.base()));
    let first = poll(&driver, WHEP_MEDIA, &json!([0]), MEDIA);
    let first = first.unwrap_or_else(|last| {
        driver.switch_to(&publisher);
        let publishing = driver.execute_async(WHIP_READY, json!([layers]));
        panic!(
            "viewer got no video frames or no audio within {MEDIA:?}: {last:#}\n\
             publisher: {publishing:#}\nconsole: {:#?}",
            driver.browser_log()
        )
    });
    let frames = first["video"]["framesDecoded"].as_u64().unwrap_or(0);
    // Still flowing: at least 10 more frames (the fake camera sends 30 per second).
    let later = poll(&driver, WHEP_MEDIA, &json!([frames + 10]), MEDIA);
    let later = later.unwrap_or_else(|last| {
        panic!("decoded frames stopped increasing after {frames}: {last:#}")
    });
    eprintln!("viewer: video {} audio {}", later["video"], later["audio"]);
    let fast = u64::from(egress.with_env_override() == EgressPath::Fast);
    assert_eq!(
        sfu.fast_egress_subscribers(),
        fast,
        "the viewer's media went through the egress path asked for ({egress:?})"
    );

    // Stopping DELETEs the Location the SFU returned, across origins.
    assert_eq!(
        driver.execute_async(STOP, json!([])),
        json!(204),
        "WHEP DELETE"
    );
    driver.switch_to(&publisher);
    assert_eq!(
        driver.execute_async(STOP, json!([])),
        json!(204),
        "WHIP DELETE"
    );
}

/// Through str0m's egress path (`[media] egress = "str0m"`), kept as the fallback.
#[test]
fn chromium_whip_to_whep_across_origins() {
    whip_to_whep("chromium-plain", false, EgressPath::Str0m);
}

/// The WHEP playback through the fast egress path (`[media] egress = "fast"`): Chromium
/// must accept our headers, SRTP, sender reports and RTX.
#[test]
fn chromium_whip_to_whep_fast_egress() {
    whip_to_whep("chromium-fast", false, EgressPath::Fast);
}

#[test]
fn chromium_whip_simulcast_to_whep() {
    whip_to_whep("chromium-simulcast", true, EgressPath::Fast);
}

/// index.html: `ok` once joined, `arguments[0]` is among the participants and more than
/// `arguments[1]` video frames were decoded on the subscribe connection.
const ROOM_MEDIA: &str = r#"
const done = arguments[arguments.length - 1];
const [other, minFrames] = arguments;
const r = window.room;
if (!r) { done({ status: document.body.textContent.slice(0, 300) }); return; }
const names = [...r.participants.values()].map((p) => p.name);
const page = { state: r.state, error: r.error, me: r.me, names,
  tiles: [...r.tiles.keys()], slots: [...r.slots.values()],
  status: document.getElementById('status').textContent };
if (!r.sub) { done(page); return; }
Plenary.inboundStats(r.sub).then((s) => {
  const ok = r.state === 'joined' && names.includes(other) && s.video.framesDecoded > minFrames;
  done(Object.assign(page, { ok, video: s.video, audio: s.audio }));
}, (e) => done(Object.assign(page, { statsError: String(e) })));
"#;

#[test]
fn chromium_room_two_participants_see_each_other() {
    room_two_participants(Sfu::start());
}

/// The same with the room spread over two media workers (`spill-at` 1): the second browser
/// joins on the other worker and everything crosses the pipe between them.
#[test]
fn chromium_room_across_two_workers() {
    let Some(ids) = room_two_participants(Sfu::start_with(|c| {
        c.workers = 2;
        c.room_spill = 1;
    })) else {
        return;
    };
    // Ids are `p{n}` with the worker in n's low byte.
    let workers: Vec<u64> = ids
        .iter()
        .filter_map(|id| id.strip_prefix('p')?.parse::<u64>().ok())
        .map(|n| n & 0xff)
        .collect();
    assert_eq!(workers.len(), 2, "{ids:?}");
    assert_ne!(workers[0], workers[1], "both joined on one worker: {ids:?}");
}

/// Returns the participant ids the two pages were given (None: no browser here, outside CI).
fn room_two_participants(sfu: Sfu) -> Option<Vec<String>> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let chromedriver = require_browser()?;
    let driver = browser(&chromedriver);
    let page = |name: &str| format!("{}/?room=chromium-room&name={name}&autojoin=1", sfu.base());
    let alice = driver.current_tab();
    driver.navigate(&page("alice"));
    let bob = driver.new_tab();
    driver.switch_to(&bob);
    driver.navigate(&page("bob"));
    let mut ids = Vec::new();

    for (tab, me, other) in [(&bob, "bob", "alice"), (&alice, "alice", "bob")] {
        driver.switch_to(tab);
        let first = poll(&driver, ROOM_MEDIA, &json!([other, 0]), CONNECT + MEDIA);
        let first = first.unwrap_or_else(|last| {
            panic!(
                "{me} does not see {other}'s video: {last:#}\nconsole: {:#?}",
                driver.browser_log()
            )
        });
        let frames = first["video"]["framesDecoded"].as_u64().unwrap_or(0);
        let later = poll(&driver, ROOM_MEDIA, &json!([other, frames + 10]), MEDIA);
        let later = later.unwrap_or_else(|last| {
            panic!("{me}: {other}'s video stopped after {frames}: {last:#}")
        });
        eprintln!(
            "{me} sees {other}: video {} audio {} tiles {}",
            later["video"], later["audio"], later["tiles"]
        );
        assert!(
            later["tiles"].as_array().is_some_and(|t| t.len() >= 2),
            "{me}: expected its own tile and {other}'s: {later:#}"
        );
        assert!(
            later["audio"]["bytesReceived"].as_u64().unwrap_or(0) > 0,
            "{me} hears nothing through the audio slots: {later:#}"
        );
        let id = driver.execute("return window.room.me;", json!([]));
        ids.push(id.as_str().unwrap_or_default().to_owned());
    }

    // The status line counts the others, also for alice, who joined before bob.
    let alice_status = poll(
        &driver,
        r#"const done = arguments[arguments.length - 1];
           const status = document.getElementById('status').textContent;
           done({ ok: status.includes('; 1 other(s) here.'), status });"#,
        &json!([]),
        Duration::from_secs(5),
    );
    assert!(
        alice_status.is_ok(),
        "alice's status line: {alice_status:?}"
    );

    // Leaving is seen by the other participant, and counted.
    let gone = leave_seen_by(&driver, &bob, "alice");
    assert!(
        gone.is_ok(),
        "bob still lists alice after she left: {gone:?}"
    );
    let status = gone
        .as_ref()
        .map(|v| v["status"].as_str().unwrap_or("").to_owned());
    assert!(
        status
            .as_deref()
            .is_ok_and(|s| s.contains("; 0 other(s) here.")),
        "bob's status line after alice left: {status:?}"
    );
    Some(ids)
}

//! Egresses started from the SFU: the real `plenary sfu` binary on 127.0.0.1 with a temp
//! config, `POST /rooms/{room}/egress` making it run `plenary egress` as its child, a str0m
//! WHIP publisher (GStreamer-encoded media) in the room, and the HLS and MP4 the child
//! writes read back with ffprobe. Also: the listing, DELETE, refusals (tokens, paths, the
//! cap), a crashed child restarted, and no child left running once the SFU is killed.

mod common;
mod turn_proc;
#[path = "common/whip_publisher.rs"]
mod whip_publisher;

use common::media::{luma_track, probe, Region};
use common::{free_port_except, plenary_bin, require_peer};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use turn_proc::{http_get, http_until, Proc};
use whip_publisher::{Look, Publisher};

const SECRET: &str = "sfu-egress-api-room-secret-0123456789";
const ADMIN: &str = "sfu-egress-api-admin-token-0123456789";

/// One test at a time: an egress encodes 720p30 on a 2-core machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `plenary egress` needs GStreamer's plugins; the outputs are read back with ffprobe.
fn media_peers_present() -> bool {
    ["ffprobe", "gst-inspect-1.0"]
        .iter()
        .all(|p| require_peer(p).is_some())
}

fn token(room: &str, secret: &str) -> String {
    let claims = plenary_sfu::token::Claims {
        room: room.into(),
        exp: common::unix_now() as u64 + 3600,
        name: Some("operator".into()),
    };
    plenary_sfu::token::issue(secret, &claims)
}

/// A `plenary sfu` process with its own config, egress directory and ports.
struct Sfu {
    proc: Proc,
    http: SocketAddr,
    metrics: SocketAddr,
    dir: tempfile::TempDir,
}

impl Sfu {
    /// `auth`: `[rooms] token-secrets` and the admin token (else neither is configured).
    fn start(auth: bool, max_running: usize) -> Sfu {
        let dir = tempfile::tempdir().expect("tempdir");
        let lo = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let http = free_port_except(&lo, &[]);
        let media = free_port_except(&lo, &[http]);
        let metrics = free_port_except(&lo, &[http, media]);
        let egress_dir = dir.path().join("egress");
        let (secrets, admin) = if auth {
            (format!("[\"{SECRET}\"]"), ADMIN)
        } else {
            ("[]".to_owned(), "")
        };
        let config = format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\nadmin-token = \"{admin}\"\n\
             [media]\nlisten = \"127.0.0.1:{media}\"\nworkers = 1\n\
             [rooms]\ntoken-secrets = {secrets}\n\
             [ops]\nmetrics = \"127.0.0.1:{metrics}\"\ndrain-timeout-seconds = 10\n\
             [egress]\ndir = \"{}\"\nmax-running = {max_running}\n",
            egress_dir.display()
        );
        let path = dir.path().join("sfu.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = Command::new(plenary_bin());
        cmd.arg("sfu").arg("--config").arg(&path);
        let proc = Proc::spawn(cmd, dir.path(), "sfu");
        let at = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let sfu = Sfu {
            proc,
            http: at(http),
            metrics: at(metrics),
            dir,
        };
        let (status, _) = http_until(sfu.http, "/healthz", 200);
        assert_eq!(status, 200, "sfu not up:\n{}", sfu.proc.log());
        sfu
    }

    fn egress_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("egress")
    }

    /// `METHOD path` with an optional bearer token and JSON body: (status, body, Location).
    fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, String, Option<String>) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(40))
            .build();
        let mut req = agent.request(method, &format!("http://{}{path}", self.http));
        if let Some(t) = bearer {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let res = match body {
            Some(b) => req
                .set("Content-Type", "application/json")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        let r = match res {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}\n{}", self.proc.log()),
        };
        let location = r.header("location").map(str::to_owned);
        (r.status(), r.into_string().unwrap_or_default(), location)
    }

    fn post(&self, room: &str, bearer: Option<&str>, body: &Value) -> (u16, String) {
        let (status, body, _) =
            self.call("POST", &format!("/rooms/{room}/egress"), bearer, Some(body));
        (status, body)
    }

    fn list(&self, room: &str, bearer: &str) -> Vec<Value> {
        let (status, body, _) =
            self.call("GET", &format!("/rooms/{room}/egress"), Some(bearer), None);
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("JSON listing");
        v["egresses"].as_array().cloned().unwrap_or_default()
    }

    /// Polls the listing until egress `id` satisfies `pred` (bounded); returns its entry.
    fn wait_for(&self, room: &str, id: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list = self.list(room, ADMIN);
            let entry = list.iter().find(|e| e["id"] == id).cloned();
            if let Some(e) = entry.as_ref().filter(|e| pred(e)) {
                return e.clone();
            }
            assert!(
                Instant::now() < deadline,
                "egress {id} never {what}: {entry:?}\n{}",
                self.proc.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn metrics(&self) -> String {
        let (status, body) = http_get(self.metrics, "/metrics", None);
        assert_eq!(status, 200);
        body
    }
}

/// The value of the first Prometheus sample line starting with `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Segments listed in an HLS playlist so far.
fn hls_segments(playlist: &Path) -> usize {
    std::fs::read_to_string(playlist)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("#EXTINF"))
        .count()
}

/// The first segment an HLS playlist lists (a finished one).
fn first_segment(dir: &Path) -> std::path::PathBuf {
    let playlist = std::fs::read_to_string(dir.join("index.m3u8")).unwrap_or_default();
    let name = playlist
        .lines()
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .expect("a segment in the playlist");
    dir.join(name)
}

fn wait_segments(playlist: &Path, n: usize, sfu: &Sfu) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while hls_segments(playlist) < n {
        assert!(
            Instant::now() < deadline,
            "{} has {} segments after 60 s:\n{}",
            playlist.display(),
            hls_segments(playlist),
            sfu.proc.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Whether `pid` runs (a zombie runs nothing: it counts as gone).
fn running(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state != 'Z')
        })
        .unwrap_or(false)
}

fn cmdline(pid: u64) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// A publisher in the room; the SFU runs an egress of it writing HLS and MP4 (and retrying
/// an RTMP receiver nobody listens on). It is listed as running, then DELETE stops it: the
/// child is reaped, the listing says stopped with exit 0, and both files hold H.264 + AAC at
/// 1280x720 with the publisher's picture. A second egress is stopped by the SFU's SIGTERM.
#[test]
fn an_egress_started_over_http_runs_is_listed_and_stops() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !media_peers_present() {
        return;
    }
    let mut sfu = Sfu::start(true, 4);
    let room = "assembly";
    let room_token = token(room, SECRET);
    let mut publisher = Publisher::start(
        format!("http://{}/whip/{room}?token={room_token}", sfu.http),
        Look::Speaker {
            luma: 200,
            talks: |_| true,
        },
        (320, 240),
    );
    publisher
        .started
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("the publisher never connected:\n{}", sfu.proc.log()));

    let nobody = free_port_except(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], &[sfu.http.port()]);
    let body = json!({
        "to": [format!("rtmp://127.0.0.1:{nobody}/live/stream-key-1234")],
        "hls": "assembly/hls",
        "record": "assembly/rec.mp4",
    });
    let (status, text, location) = sfu.call(
        "POST",
        &format!("/rooms/{room}/egress"),
        Some(&room_token),
        Some(&body),
    );
    assert_eq!(status, 201, "{text}\n{}", sfu.proc.log());
    let created: Value = serde_json::from_str(&text).expect("JSON");
    let id = created["id"].as_u64().expect("id");
    assert_eq!(
        location.as_deref(),
        Some(&*format!("/rooms/{room}/egress/{id}"))
    );
    assert_eq!(created["state"], "running", "{created}");
    assert_eq!(
        created["outputs"],
        json!([
            format!("rtmp://127.0.0.1:{nobody}/live/****"),
            "hls:assembly/hls",
            "file:assembly/rec.mp4"
        ]),
        "outputs are shown without their stream key"
    );
    let pid = created["pid"].as_u64().expect("pid");
    let argv = cmdline(pid);
    assert!(
        argv.contains("egress") && argv.contains(&format!("/whep/{room}")),
        "{argv}"
    );
    assert!(
        !argv.contains(&room_token) && !argv.contains("--token"),
        "the token is not in ps: {argv}"
    );

    let playlist = sfu.egress_dir().join("assembly/hls/index.m3u8");
    wait_segments(&playlist, 4, &sfu);
    let listed = sfu.list(room, &room_token);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "running");
    assert_eq!(listed[0]["pid"], pid);
    assert_eq!(listed[0]["restarts"], 0);
    assert!(listed[0]["started"]
        .as_u64()
        .is_some_and(|t| t > 1_700_000_000));
    assert!(sfu.list("other-room", ADMIN).is_empty(), "listed per room");
    let m = sfu.metrics();
    assert_eq!(sample(&m, "plenary_sfu_egress_running "), Some(1.0), "{m}");

    let (status, text, _) = sfu.call(
        "DELETE",
        &format!("/rooms/{room}/egress/{id}"),
        Some(&room_token),
        None,
    );
    assert_eq!(status, 200, "{text}");
    let stopped: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert_eq!(stopped["exit"], json!({"code": 0}), "{stopped}");
    assert_eq!(stopped["pid"], Value::Null);
    // Reaped by the SFU: not even a zombie is left.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the egress child {pid} is still there after DELETE"
    );
    let listed = sfu.list(room, &room_token);
    assert_eq!(listed[0]["state"], "stopped", "{listed:?}");
    let m = sfu.metrics();
    assert_eq!(sample(&m, "plenary_sfu_egress_running "), Some(0.0), "{m}");
    assert_eq!(
        sample(&m, "plenary_sfu_egress_exits_total{code=\"0\"} "),
        Some(1.0),
        "{m}"
    );
    assert!(
        sfu.proc
            .log()
            .contains(&format!("rtmp://127.0.0.1:{nobody}/live/****")),
        "the child's lines reach the SFU's log"
    );

    let record = sfu.egress_dir().join("assembly/rec.mp4");
    for (what, path) in [("hls", &playlist), ("mp4", &record)] {
        let r = probe(path);
        eprintln!(
            "{what}: codecs {:?} sizes {:?} frames {} duration {:.1}s",
            r.codecs, r.sizes, r.video_frames, r.duration
        );
        assert_eq!(r.codecs, ["aac", "h264"], "{what}");
        assert_eq!(r.sizes, [(1280, 720)], "{what}");
        assert!(r.duration > 6.0, "{what}: {:.1}s", r.duration);
    }
    // The publisher's grey (luma 200) in the middle of the picture, not the black filler.
    let centre = Region {
        width: 320,
        height: 240,
        x: 480,
        y: 240,
    };
    let luma = luma_track(&record, Some(centre));
    let bright = luma.iter().filter(|(_, y)| *y > 150.0).count();
    eprintln!("mp4: {bright} of {} frames show the publisher", luma.len());
    assert!(
        bright * 2 >= luma.len() && !luma.is_empty(),
        "the publisher's picture is missing: {luma:?}"
    );

    // A second egress; SIGTERM drains the SFU, which stops it and reaps it before leaving.
    publisher.stop();
    let (status, text) = sfu.post(room, Some(ADMIN), &json!({"hls": "assembly/hls2"}));
    assert_eq!(status, 201, "the admin token works too: {text}");
    let second: Value = serde_json::from_str(&text).expect("JSON");
    let pid2 = second["pid"].as_u64().expect("pid");
    wait_segments(&sfu.egress_dir().join("assembly/hls2/index.m3u8"), 1, &sfu);
    sfu.proc.signal(libc::SIGTERM);
    let status = sfu.proc.wait_exit(Duration::from_secs(40));
    assert!(
        status.is_some_and(|s| s.success()),
        "sfu exit {status:?}:\n{}",
        sfu.proc.log()
    );
    let log = sfu.proc.log();
    assert_eq!(
        log.matches("egress child exited").count(),
        2,
        "the SFU reaped its second egress before leaving:\n{log}"
    );
    assert!(!running(pid2), "egress {pid2} outlived the SFU");
}

/// Requests the SFU refuses, each with a clear status and message; no child is started.
#[test]
fn egress_requests_are_refused_clearly() {
    let sfu = Sfu::start(true, 4);
    let room = "ga";
    let good = token(room, SECRET);
    let hls = json!({"hls": "ga"});

    let (status, text) = sfu.post(room, None, &hls);
    assert_eq!(status, 401, "no token: {text}");
    let (status, text) = sfu.post(
        room,
        Some(&token(room, "not-the-secret-not-the-secret")),
        &hls,
    );
    assert_eq!(status, 401, "forged token: {text}");
    let (status, text) = sfu.post(room, Some(&token("other", SECRET)), &hls);
    assert_eq!(status, 403, "another room's token: {text}");
    assert!(text.contains("another room"), "{text}");
    let (status, _, _) = sfu.call("GET", &format!("/rooms/{room}/egress"), None, None);
    assert_eq!(status, 401, "the listing needs a token too");

    for bad in ["../escape", "a/../../b", "/tmp/abs"] {
        let (status, text) = sfu.post(room, Some(&good), &json!({ "hls": bad }));
        assert_eq!(status, 400, "{bad}: {text}");
        assert!(
            text.contains("no '..'") && text.contains(bad),
            "{bad}: {text}"
        );
    }
    let (status, text) = sfu.post(room, Some(&good), &json!({"record": "../x.mp4"}));
    assert_eq!(status, 400, "{text}");
    let (status, text) = sfu.post(room, Some(&good), &json!({"record": "x.ts"}));
    assert_eq!((status, text.contains(".mp4")), (400, true), "{text}");
    let (status, text) = sfu.post(room, Some(&good), &json!({"to": ["http://x/a/b"]}));
    assert_eq!(status, 400, "{text}");
    let (status, text) = sfu.post(room, Some(&good), &json!({"hls": "ga", "bitrate": 1}));
    assert_eq!((status, text.contains("bitrate")), (400, true), "{text}");
    let (status, text) = sfu.post(room, Some(&good), &json!({}));
    assert_eq!(
        (status, text.contains("nothing to do")),
        (400, true),
        "{text}"
    );

    // A symbolic link inside the directory that leads out of it.
    let outside = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(outside.path(), sfu.egress_dir().join("out")).expect("symlink");
    let (status, text) = sfu.post(room, Some(&good), &json!({"hls": "out/x"}));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("leads out"), "{text}");
    // A recording is never overwritten.
    std::fs::write(sfu.egress_dir().join("old.mp4"), b"yesterday").expect("old recording");
    let (status, text) = sfu.post(room, Some(&good), &json!({"record": "old.mp4"}));
    assert_eq!(status, 409, "{text}");

    let (status, text, _) = sfu.call("POST", &format!("/rooms/{room}/egress"), Some(&good), None);
    assert_eq!(status, 415, "no JSON body: {text}");
    let (status, _, _) = sfu.call(
        "DELETE",
        &format!("/rooms/{room}/egress/99"),
        Some(&good),
        None,
    );
    assert_eq!(status, 404);
    assert!(sfu.list(room, ADMIN).is_empty(), "nothing was started");

    // Neither room tokens nor an admin token: the API is off, even for an open room.
    let open = Sfu::start(false, 4);
    let (status, text) = open.post(room, None, &hls);
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("token-secrets") && text.contains("admin-token"),
        "{text}"
    );
}

/// A child that crashes is started again; the cap holds; and SIGKILL on the SFU leaves no
/// child running (PR_SET_PDEATHSIG).
#[test]
fn a_crashed_egress_is_restarted_and_a_killed_sfu_leaves_none_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !media_peers_present() {
        return;
    }
    // Orphans of the SFU become this process's children, so the test can see how they end.
    // SAFETY: prctl(2) on this test process only.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
    let mut sfu = Sfu::start(true, 1);
    let room = "webtv";
    let t = token(room, SECRET);
    // Nobody publishes: the broadcast carries black and silence, as an empty room does.
    let (status, text) = sfu.post(
        room,
        Some(&t),
        &json!({"hls": "a", "size": "640x360", "fps": 25}),
    );
    assert_eq!(status, 201, "{text}");
    let first: Value = serde_json::from_str(&text).expect("JSON");
    let id = first["id"].as_u64().expect("id");
    let pid1 = first["pid"].as_u64().expect("pid");
    let (status, text) = sfu.post(room, Some(&t), &json!({"hls": "b"}));
    assert_eq!(status, 503, "max-running = 1: {text}");
    assert!(text.contains("max-running"), "{text}");
    wait_segments(&sfu.egress_dir().join("a/index.m3u8"), 1, &sfu);
    // A finished segment (ffprobe would wait forever on a live playlist).
    let r = probe(&first_segment(&sfu.egress_dir().join("a")));
    assert_eq!(r.codecs, ["aac", "h264"]);
    assert_eq!(r.sizes, [(640, 360)], "the requested size");

    // A media crash, as the SFU sees it: the child dies of a signal.
    // SAFETY: kill(2) on the egress child this test's SFU started, by its PID.
    assert_eq!(unsafe { libc::kill(pid1 as i32, libc::SIGKILL) }, 0);
    let again = sfu.wait_for(room, id, "restarted", |e| {
        e["restarts"] == 1 && e["state"] == "running" && e["pid"].as_u64().is_some()
    });
    assert_eq!(again["exit"], json!({"signal": 9}), "{again}");
    let pid2 = again["pid"].as_u64().expect("pid");
    assert_ne!(pid1, pid2);
    assert!(
        !Path::new(&format!("/proc/{pid1}")).exists(),
        "the crashed child was reaped"
    );
    let m = sfu.metrics();
    assert_eq!(
        sample(&m, "plenary_sfu_egress_exits_total{code=\"signal\"} "),
        Some(1.0),
        "{m}"
    );

    // The restarted child is up (its signal handling too) once it has pulled the room.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sfu.proc.log().matches("WHEP source connected").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the restarted egress never connected:\n{}",
            sfu.proc.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The SFU dies without a chance to stop anything: its child must go too.
    assert!(running(pid2) && cmdline(pid2).contains("egress"));
    // SAFETY: kill(2) on the SFU this test started.
    assert_eq!(
        unsafe { libc::kill(sfu.proc.pid() as i32, libc::SIGKILL) },
        0
    );
    assert!(sfu.proc.wait_exit(Duration::from_secs(10)).is_some());
    let status = wait_orphan(pid2, Duration::from_secs(30)).unwrap_or_else(|| {
        // Leave nothing running: the orphan is this test's to end.
        // SAFETY: kill(2) on the egress this test's SFU started, now our child.
        unsafe { libc::kill(pid2 as i32, libc::SIGKILL) };
        let _ = wait_orphan(pid2, Duration::from_secs(5));
        panic!("egress {pid2} still ran 30 s after its SFU was killed")
    });
    // Exit 0 is the egress's answer to SIGTERM (PR_SET_PDEATHSIG): told to stop, it finished
    // its files. Anything else means it died of something else (a closed pipe, a crash).
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the orphaned egress ended with wait status {status:#x}, not exit 0"
    );
}

/// Waits (bounded) for `pid`, an orphan re-parented to this subreaper, and reaps it.
fn wait_orphan(pid: u64, limit: Duration) -> Option<libc::c_int> {
    let deadline = Instant::now() + limit;
    let pid = libc::pid_t::try_from(pid).ok()?;
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) on one pid, with a valid pointer to an int.
        let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if got == pid {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

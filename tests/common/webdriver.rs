//! Real Chromium, driven through chromedriver over raw WebDriver HTTP (ureq). chromedriver and
//! every process below it (Chromium and its helpers) are killed by PID on Drop.

use super::{free_port, is_ci, require_peer, Guard};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The chromedriver to use, after checking that Chromium is installed too. `None` (with a
/// loud SKIP) when either is missing; under CI=true that is a failure instead.
pub fn require_browser() -> Option<PathBuf> {
    let chromedriver = require_peer("chromedriver")?;
    if !Path::new(CHROMIUM).is_file() {
        assert!(
            !is_ci(),
            "{CHROMIUM} missing (CI=true: a missing peer is a failure)"
        );
        eprintln!("!!!!!!!! SKIP: {CHROMIUM} is not installed; this test did NOT run !!!!!!!!");
        return None;
    }
    Some(chromedriver)
}

/// What the browser is started with beyond the headless basics.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// A fake camera and microphone, granted without a prompt, and media that autoplays
    /// without a user gesture. Background tabs are not throttled, so a publisher in one tab
    /// keeps sending while another tab is in front.
    pub fake_media: bool,
    /// WebRTC may also gather loopback (127.0.0.1) ICE candidates, for peer connections to a
    /// server on 127.0.0.1.
    pub loopback_webrtc: bool,
}

impl Options {
    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-domain-reliability",
            // No DNS at all (Chromium looks up Google and search-engine hosts by itself, and
            // for pages with forms): tests only use IP literals on loopback.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
        ]
        .map(String::from)
        .to_vec();
        // Chromium honours only the last --disable-features, so they are collected here.
        // WebRtcHideLocalIpsWithMdns: ICE host candidates keep their plain addresses instead
        // of .local names announced by multicast DNS on every interface.
        let disabled = [
            "AutofillServerCommunication",
            "MediaRouter",
            "OptimizationHints",
            "WebRtcHideLocalIpsWithMdns",
        ];
        if self.fake_media {
            args.extend(
                [
                    "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream",
                    "--autoplay-policy=no-user-gesture-required",
                    "--disable-background-timer-throttling",
                    "--disable-backgrounding-occluded-windows",
                    "--disable-renderer-backgrounding",
                ]
                .map(String::from),
            );
        }
        if self.loopback_webrtc {
            args.push("--allow-loopback-in-peer-connection".into());
        }
        args.push(format!("--disable-features={}", disabled.join(",")));
        args
    }
}

fn http_post(url: &str, body: &Value, timeout: Duration) -> Result<Value, String> {
    match ureq::post(url).timeout(timeout).send_json(body.clone()) {
        Ok(resp) => resp.into_json::<Value>().map_err(|e| e.to_string()),
        Err(ureq::Error::Status(code, resp)) => Err(format!(
            "HTTP {code}: {}",
            resp.into_string().unwrap_or_default()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// chromedriver and the Chromium it starts; both killed by PID on Drop.
pub struct Driver {
    guard: Guard,
    base: String,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Driver {
    pub fn start(chromedriver: &Path, options: Options) -> Driver {
        let port = free_port();
        let profile = tempfile::tempdir().expect("profile dir");
        let mut cmd = Command::new(chromedriver);
        cmd.arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let guard = Guard::spawn(cmd, "chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let mut driver = Driver {
            guard,
            base,
            session: None,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready = loop {
            let status = ureq::get(&format!("{}/status", driver.base))
                .timeout(Duration::from_secs(2))
                .call()
                .ok()
                .and_then(|r| r.into_json::<Value>().ok());
            if status.is_some_and(|s| s["value"]["ready"] == json!(true)) {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(ready, "chromedriver did not become ready");
        let mut args = options.args();
        args.push(format!(
            "--user-data-dir={}",
            driver._profile.path().display()
        ));
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
                    "goog:loggingPrefs": { "browser": "ALL" },
                },
            },
        });
        let resp = http_post(
            &format!("{}/session", driver.base),
            &caps,
            Duration::from_secs(60),
        )
        .expect("new WebDriver session");
        let id = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {resp}"))
            .to_owned();
        driver.session = Some(id);
        driver.post(
            "timeouts",
            &json!({ "script": 45000, "pageLoad": 20000 }),
            Duration::from_secs(10),
        );
        driver
    }

    fn url(&self, cmd: &str) -> String {
        let session = self.session.as_deref().expect("session");
        format!("{}/session/{session}/{cmd}", self.base)
    }

    /// A session command with a JSON body; panics on a WebDriver error.
    pub fn post(&self, cmd: &str, body: &Value, timeout: Duration) -> Value {
        http_post(&self.url(cmd), body, timeout).unwrap_or_else(|e| panic!("WebDriver {cmd}: {e}"))
    }

    /// A session command without a body; panics on a WebDriver error.
    pub fn get(&self, cmd: &str, timeout: Duration) -> Value {
        match ureq::get(&self.url(cmd)).timeout(timeout).call() {
            Ok(resp) => resp.into_json::<Value>().expect("WebDriver JSON"),
            Err(e) => panic!("WebDriver {cmd}: {e}"),
        }
    }

    /// Loads `url` in the current tab and waits for the page load.
    pub fn navigate(&self, url: &str) {
        self.post("url", &json!({ "url": url }), Duration::from_secs(30));
    }

    /// Runs a synchronous script (`return ...;`) with `args`; returns its value.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        let resp = self.post(
            "execute/sync",
            &json!({ "script": script, "args": args }),
            Duration::from_secs(30),
        );
        resp["value"].clone()
    }

    /// Runs an asynchronous script that calls `arguments[arguments.length - 1]` with its
    /// result; returns that result. Bounded by the session's 45 s script timeout.
    pub fn execute_async(&self, script: &str, args: Value) -> Value {
        let resp = self.post(
            "execute/async",
            &json!({ "script": script, "args": args }),
            Duration::from_secs(60),
        );
        resp["value"].clone()
    }

    /// Opens a new tab and returns its window handle (the current tab does not change).
    pub fn new_tab(&self) -> String {
        let resp = self.post(
            "window/new",
            &json!({ "type": "tab" }),
            Duration::from_secs(20),
        );
        resp["value"]["handle"]
            .as_str()
            .unwrap_or_else(|| panic!("no window handle in {resp}"))
            .to_owned()
    }

    /// The current tab's window handle.
    pub fn current_tab(&self) -> String {
        let resp = self.get("window", Duration::from_secs(10));
        resp["value"]
            .as_str()
            .unwrap_or_else(|| panic!("no window handle in {resp}"))
            .to_owned()
    }

    /// Makes `handle` the tab that later commands act on.
    pub fn switch_to(&self, handle: &str) {
        self.post(
            "window",
            &json!({ "handle": handle }),
            Duration::from_secs(10),
        );
    }

    /// A PNG of the current tab's viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let resp = self.get("screenshot", Duration::from_secs(30));
        let b64 = resp["value"].as_str().expect("screenshot data");
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("screenshot base64")
    }

    /// Console messages since the last call, as "LEVEL message" lines (empty if the
    /// chromedriver does not offer the log endpoint).
    pub fn browser_log(&self) -> Vec<String> {
        let Ok(resp) = http_post(
            &self.url("se/log"),
            &json!({ "type": "browser" }),
            Duration::from_secs(10),
        ) else {
            return Vec::new();
        };
        resp["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["level"].as_str().unwrap_or("?"),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every process below chromedriver (Chromium and its helpers), from /proc.
    fn descendants(&self) -> Vec<i32> {
        let mut parent_of: Vec<(i32, i32)> = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                // Fields after the parenthesised command name: state, ppid, ...
                let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                    continue;
                };
                if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                    parent_of.push((pid, ppid));
                }
            }
        }
        let root = i32::try_from(self.guard.pid()).expect("pid");
        let mut found = vec![root];
        let mut i = 0;
        while i < found.len() {
            let p = found[i];
            for (pid, ppid) in &parent_of {
                if *ppid == p && !found.contains(pid) {
                    found.push(*pid);
                }
            }
            i += 1;
        }
        found.retain(|p| *p != root);
        found
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Chromium's processes, listed while chromedriver is still their ancestor.
        let ours = self.descendants();
        if let Some(session) = self.session.take() {
            let _ = ureq::delete(&format!("{}/session/{session}", self.base))
                .timeout(Duration::from_secs(10))
                .call();
        }
        // Give Chromium a bounded moment to exit by itself, then kill what is left, by PID.
        let alive = |pid: &i32| Path::new(&format!("/proc/{pid}")).exists();
        let deadline = Instant::now() + Duration::from_secs(5);
        while ours.iter().any(alive) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in ours.iter().filter(|p| alive(p)) {
            // SAFETY: kill(2) on PIDs that were under the chromedriver this test spawned.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        // `guard` drops next: chromedriver itself is killed by PID.
    }
}

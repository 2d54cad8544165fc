//! Real Chromium, driven through chromedriver (WebDriver over HTTP), connects two
//! RTCPeerConnections with `iceTransportPolicy: 'relay'` through the server, over UDP and
//! over TCP to the server, and checks a data-channel message and the selected candidates.
//!
//! Relay port ranges used here: k = 25..=27.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

/// The page-side test: two peer connections, relay-only, a message, then getStats.
const SCRIPT: &str = r#"
const done = arguments[arguments.length - 1];
const [url, username, credential] = arguments;
(async () => {
  const log = [];
  const cfg = { iceServers: [{ urls: url, username, credential }], iceTransportPolicy: 'relay' };
  const a = new RTCPeerConnection(cfg);
  const b = new RTCPeerConnection(cfg);
  const wire = (from, to, name) => {
    from.onicecandidate = (e) => {
      if (e.candidate) {
        log.push(name + ': ' + e.candidate.candidate);
        to.addIceCandidate(e.candidate).catch((err) => log.push(name + ' add: ' + err));
      }
    };
    from.onicecandidateerror = (e) =>
      log.push(name + ' candidate error ' + e.errorCode + ' ' + e.errorText + ' ' + e.url);
  };
  wire(a, b, 'a');
  wire(b, a, 'b');
  const timeout = (ms, what) => new Promise((_, reject) =>
    setTimeout(() => reject(new Error('timeout waiting for ' + what + '; log: ' + JSON.stringify(log))), ms));
  const dc = a.createDataChannel('plenary');
  const opened = new Promise((resolve) => { dc.onopen = resolve; });
  const received = new Promise((resolve) => {
    b.ondatachannel = (ev) => { ev.channel.onmessage = (m) => resolve(m.data); };
  });
  const offer = await a.createOffer();
  await a.setLocalDescription(offer);
  await b.setRemoteDescription(offer);
  const answer = await b.createAnswer();
  await b.setLocalDescription(answer);
  await a.setRemoteDescription(answer);
  await Promise.race([opened, timeout(20000, 'data channel open')]);
  const sent = 'hello through the relay ' + Math.random();
  dc.send(sent);
  const got = await Promise.race([received, timeout(10000, 'the message')]);
  const stats = await a.getStats();
  const byId = {};
  stats.forEach((s) => { byId[s.id] = s; });
  let pair = null;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId[s.selectedCandidatePairId];
  });
  if (!pair) {
    stats.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    });
  }
  const local = pair ? byId[pair.localCandidateId] : null;
  const remote = pair ? byId[pair.remoteCandidateId] : null;
  a.close();
  b.close();
  return {
    sent, got,
    localType: local ? local.candidateType : null,
    remoteType: remote ? remote.candidateType : null,
    relayProtocol: local ? (local.relayProtocol || null) : null,
    localAddress: local ? (local.address || local.ip || null) : null,
    log,
  };
})().then(done, (e) => done({ error: String(e) }));
"#;

/// chromedriver and the Chromium it starts; both killed by PID on Drop.
struct Driver {
    guard: Guard,
    base: String,
    session: Option<String>,
    _profile: tempfile::TempDir,
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

impl Driver {
    fn start(chromedriver: &Path) -> Driver {
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
        let profile_arg = format!("--user-data-dir={}", driver._profile.path().display());
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                            "--no-first-run", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync", profile_arg,
                        ],
                    },
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

    fn post(&self, cmd: &str, body: &Value, timeout: Duration) -> Value {
        let session = self.session.as_deref().expect("session");
        let url = format!("{}/session/{session}/{cmd}", self.base);
        http_post(&url, body, timeout).unwrap_or_else(|e| panic!("WebDriver {cmd}: {e}"))
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
    }
}

fn browser_relay(transport: &str, k: u16) {
    let Some(chromedriver) = require_peer("chromedriver") else {
        return;
    };
    if !Path::new(CHROMIUM).is_file() {
        assert!(
            !is_ci(),
            "{CHROMIUM} missing (CI=true: a missing peer is a failure)"
        );
        eprintln!("!!!!!!!! SKIP: {CHROMIUM} is not installed; this test did NOT run !!!!!!!!");
        return;
    }
    let conf = fixture(INSTALL_FIXTURE);
    let secret = conf_value(&conf, "static-auth-secret");
    let mut spec = ServerSpec::new(conf, k);
    // Chrome relays between two relay candidates on 127.0.0.1; the fixture's
    // allowed-peer-ip=127.0.0.1 names it, and loopback needs the flag as well.
    spec.allow_loopback = true;
    spec.allowed_peer_ips = vec!["127.0.0.1".into()];
    let server = Server::start(&spec);
    let (username, credential) = plenary_cred(&secret, Some("chromium"), 600);

    let driver = Driver::start(&chromedriver);
    driver.post(
        "url",
        &json!({ "url": "data:text/html,<title>plenary</title><p>relay test</p>" }),
        Duration::from_secs(20),
    );
    let url = format!("turn:127.0.0.1:{}?transport={transport}", server.port);
    let resp = driver.post(
        "execute/async",
        &json!({ "script": SCRIPT, "args": [url, username, credential] }),
        Duration::from_secs(60),
    );
    let r = &resp["value"];
    eprintln!(
        "chromium over {transport}: local={} remote={} protocol={} address={}",
        r["localType"], r["remoteType"], r["relayProtocol"], r["localAddress"]
    );
    assert!(r.get("error").is_none(), "browser test failed: {r:#}");
    assert_eq!(
        r["got"], r["sent"],
        "data-channel message did not arrive: {r:#}"
    );
    assert_eq!(
        r["localType"],
        json!("relay"),
        "selected local candidate: {r:#}"
    );
    assert_eq!(
        r["remoteType"],
        json!("relay"),
        "selected remote candidate: {r:#}"
    );
    assert_eq!(
        r["relayProtocol"],
        json!(transport),
        "relay protocol: {r:#}"
    );
    assert_eq!(
        r["localAddress"],
        json!("127.0.0.1"),
        "relayed address: {r:#}"
    );
}

#[test]
fn chromium_data_channel_over_turn_udp() {
    browser_relay("udp", 25);
}

#[test]
fn chromium_data_channel_over_turn_tcp() {
    browser_relay("tcp", 26);
}

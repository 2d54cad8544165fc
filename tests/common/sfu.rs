//! The SFU in-process on 127.0.0.1 and the Chromium that views it: shared by the browser
//! tests of the SFU (`sfu_chromium`, `sfu_probe_vs_chromium`).

use super::webdriver::{Driver, Options};
use plenary_sfu::{serve, RunningSfu, SfuConfig};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The SFU on its own tokio runtime, shut down on Drop.
pub struct Sfu {
    rt: tokio::runtime::Runtime,
    sfu: Option<RunningSfu>,
}

impl Sfu {
    pub fn start() -> Sfu {
        Sfu::start_with(|_| {})
    }

    pub fn start_with(f: impl FnOnce(&mut SfuConfig)) -> Sfu {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut config = SfuConfig {
            http: any,
            media: any,
            public_ip: None,
            ..SfuConfig::default()
        };
        f(&mut config);
        let sfu = rt.block_on(serve(config)).expect("sfu starts");
        Sfu { rt, sfu: Some(sfu) }
    }

    /// `http://127.0.0.1:PORT`, where the pages, WHIP, WHEP and the room API are.
    pub fn base(&self) -> String {
        format!("http://{}", self.sfu.as_ref().expect("running").http_addr())
    }

    /// Subscribers that went onto the fast egress path.
    pub fn fast_egress_subscribers(&self) -> u64 {
        self.sfu
            .as_ref()
            .expect("running")
            .fast_egress_subscribers()
    }

    /// The shared UDP media port.
    pub fn media_addr(&self) -> SocketAddr {
        self.sfu.as_ref().expect("running").media_addr()
    }
}

impl Drop for Sfu {
    fn drop(&mut self) {
        if let Some(sfu) = self.sfu.take() {
            self.rt.block_on(sfu.shutdown());
        }
    }
}

/// Chromium with a fake camera and microphone that may use loopback ICE candidates.
pub fn browser(chromedriver: &Path) -> Driver {
    Driver::start(
        chromedriver,
        Options {
            fake_media: true,
            loopback_webrtc: true,
        },
    )
}

/// Runs the async `script` with `args` until it answers `{ok: true, ...}`, at most `limit`.
/// `Err` carries the last answer.
pub fn poll(driver: &Driver, script: &str, args: &Value, limit: Duration) -> Result<Value, Value> {
    poll_every(
        driver,
        script,
        args,
        Instant::now() + limit,
        Duration::from_millis(500),
    )
}

/// `poll` until `deadline`, every `every` (finer for timings).
pub fn poll_every(
    driver: &Driver,
    script: &str,
    args: &Value,
    deadline: Instant,
    every: Duration,
) -> Result<Value, Value> {
    loop {
        let v = driver.execute_async(script, args.clone());
        if v["ok"] == json!(true) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(v);
        }
        std::thread::sleep(every);
    }
}

/// The room page in the current window leaves; the page in `watcher` must stop listing
/// `name` within 10 s. Err carries the watcher's last answer.
pub fn leave_seen_by(driver: &Driver, watcher: &str, name: &str) -> Result<Value, Value> {
    driver.execute(
        "document.getElementById('leave').click(); return true;",
        json!([]),
    );
    driver.switch_to(watcher);
    poll(
        driver,
        r#"const [name, done] = [arguments[0], arguments[arguments.length - 1]];
           const names = [...window.room.participants.values()].map((p) => p.name);
           const status = document.getElementById('status').textContent;
           done({ ok: !names.includes(name), names, status });"#,
        &json!([name]),
        Duration::from_secs(10),
    )
}

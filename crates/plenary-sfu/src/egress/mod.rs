//! Egresses started from the SFU's HTTP API (`POST /rooms/{room}/egress`): each one is a
//! `plenary egress` child process pulling this node's own WHEP feed of the room, so a media
//! crash ends that child and never the SFU.
//!
//! - `plan` (sans-IO): the request body checked into outputs, names inside `[egress] dir`
//!   and the child's command line.
//! - `life` (sans-IO): one egress's state and restart policy (backoff, give-up, stop grace).
//! - `supervisor`: the thread that spawns, signals, reaps and restarts the children;
//!   `child` starts one (dies with the SFU, logs to a file copied into the SFU's log);
//!   `handle` is the HTTP side's end of the supervisor's channel.
//! - `config`: the `[egress]` section of `configs/sfu.toml`.

use std::path::PathBuf;
use std::time::Duration;

mod child;
pub(crate) mod config;
pub(crate) mod handle;
mod life;
pub(crate) mod plan;
mod supervisor;

pub(crate) use handle::{EgressView, Egresses};

/// Gauge: egress children running now.
pub(crate) const RUNNING_GAUGE: &str = "plenary_sfu_egress_running";
/// Counter: egress children that exited, by `code` (the exit code, or `signal`).
pub(crate) const EXITS_COUNTER: &str = "plenary_sfu_egress_exits_total";

/// How the SFU runs egresses (`[egress]`).
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// The `plenary` executable run as `plenary egress`. `plenary sfu` fills in its own
    /// (`std::env::current_exe()`) when `[egress] binary` is empty; an SFU embedded in another
    /// program (tests) must set it. `None`: starting an egress answers 503.
    pub binary: Option<PathBuf>,
    /// The one directory HLS outputs and recordings named in requests are written under.
    /// `None`: only RTMP(S) and SRT outputs are accepted.
    pub dir: Option<PathBuf>,
    /// Egress children at most at once (each encodes 720p30: about 40% of a core); further
    /// requests get 503. 0 turns the egress API off.
    pub max_running: usize,
    /// Consecutive quick failures (a run under a minute) after which a child is not
    /// started again.
    pub max_restarts: u32,
    /// Lifetime of the room token minted for each child run (it re-pulls WHEP with it).
    pub token_ttl: Duration,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            binary: None,
            dir: None,
            max_running: 4,
            max_restarts: 5,
            token_ttl: Duration::from_secs(86400),
        }
    }
}

//! CPU of the probe and of the server between two moments, from `/proc`: the server's for
//! work per CPU-second, the probe's to tell when it, not the server, was the limit.

use super::engine::load;
use std::time::Instant;

/// Where the server's CPU comes from.
#[derive(Clone, Copy, Debug)]
pub enum ServerCpu {
    /// Threads of this process named `plenary-sfu*`.
    Embedded,
    Pid(u32),
    Unknown,
}

#[derive(Clone, Copy, Default)]
pub struct Cpu {
    pub at: Option<Instant>,
    pub process: f64,
    pub server: Option<f64>,
    pub server_rss: Option<u64>,
}

impl ServerCpu {
    pub fn sample(self) -> Cpu {
        let process = crate::procfs::sample(None)
            .map(|s| s.cpu_seconds)
            .unwrap_or(0.0);
        let (server, server_rss) = match self {
            ServerCpu::Embedded => (
                Some(load::threads_cpu("plenary-sfu")),
                crate::procfs::sample(None).ok().and_then(|s| s.rss_kb),
            ),
            ServerCpu::Pid(pid) => match crate::procfs::sample(Some(pid)) {
                Ok(s) => (Some(s.cpu_seconds), s.rss_kb),
                Err(_) => (None, None),
            },
            ServerCpu::Unknown => (None, None),
        };
        Cpu {
            at: Some(Instant::now()),
            process,
            server,
            server_rss,
        }
    }

    /// (probe CPU %, server CPU %) between two samples. An embedded server's threads are
    /// in this process, so they are taken out of the probe's share.
    pub fn pct(self, a: &Cpu, b: &Cpu) -> (f64, Option<f64>) {
        let (Some(ta), Some(tb)) = (a.at, b.at) else {
            return (0.0, None);
        };
        let dt = tb.duration_since(ta).as_secs_f64().max(1e-3);
        let server = match (a.server, b.server) {
            (Some(x), Some(y)) => Some((y - x) * 100.0 / dt),
            _ => None,
        };
        let mut probe = (b.process - a.process) * 100.0 / dt;
        if matches!(self, ServerCpu::Embedded) {
            probe -= server.unwrap_or(0.0);
        }
        (probe.max(0.0), server)
    }
}

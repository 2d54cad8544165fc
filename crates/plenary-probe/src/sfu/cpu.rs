//! CPU of the probe and of the server between two moments, from `/proc`: the server's for
//! work per CPU-second, the probe's to tell when it, not the server, was the limit. A
//! cascade's nodes are separate processes: each is read by its PID, and the server's CPU is
//! their sum.

use super::engine::load;
use std::time::Instant;

/// Where the server's CPU comes from.
#[derive(Clone, Debug)]
pub enum ServerCpu {
    /// Threads of this process named `plenary-sfu*`.
    Embedded,
    /// One process per node, in `--target` order.
    Pids(Vec<u32>),
    Unknown,
}

/// One server process at one moment: CPU seconds and RSS, or None once it is gone.
#[derive(Clone, Copy, Debug, Default)]
pub struct Proc {
    pub cpu_s: Option<f64>,
    pub rss_kb: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct Cpu {
    pub at: Option<Instant>,
    pub process: f64,
    pub server: Option<f64>,
    pub server_rss: Option<u64>,
    /// Per node, when the server is several PIDs.
    pub nodes: Vec<Proc>,
}

impl ServerCpu {
    pub fn sample(&self) -> Cpu {
        let process = crate::procfs::sample(None)
            .map(|s| s.cpu_seconds)
            .unwrap_or(0.0);
        let mut nodes = Vec::new();
        let (server, server_rss) = match self {
            ServerCpu::Embedded => (
                Some(load::threads_cpu("plenary-sfu")),
                crate::procfs::sample(None).ok().and_then(|s| s.rss_kb),
            ),
            ServerCpu::Pids(pids) => {
                nodes = pids
                    .iter()
                    .map(|&pid| match crate::procfs::sample(Some(pid)) {
                        Ok(s) => Proc {
                            cpu_s: Some(s.cpu_seconds),
                            rss_kb: s.rss_kb,
                        },
                        Err(_) => Proc::default(),
                    })
                    .collect();
                let cpu: Vec<f64> = nodes.iter().filter_map(|n| n.cpu_s).collect();
                let rss: Vec<u64> = nodes.iter().filter_map(|n| n.rss_kb).collect();
                (
                    (!cpu.is_empty()).then(|| cpu.iter().sum()),
                    (!rss.is_empty()).then(|| rss.iter().sum()),
                )
            }
            ServerCpu::Unknown => (None, None),
        };
        Cpu {
            at: Some(Instant::now()),
            process,
            server,
            server_rss,
            nodes,
        }
    }

    /// (probe CPU %, server CPU %) between two samples. An embedded server's threads are
    /// in this process, so they are taken out of the probe's share. Several nodes: the sum
    /// over the nodes readable at both samples (a node that died in between is left out).
    pub fn pct(&self, a: &Cpu, b: &Cpu) -> (f64, Option<f64>) {
        let (Some(ta), Some(tb)) = (a.at, b.at) else {
            return (0.0, None);
        };
        let dt = tb.duration_since(ta).as_secs_f64().max(1e-3);
        let server = match self {
            ServerCpu::Pids(_) => {
                let v: Vec<f64> = node_pct(a, b).into_iter().flatten().collect();
                (!v.is_empty()).then(|| v.iter().sum())
            }
            _ => match (a.server, b.server) {
                (Some(x), Some(y)) => Some((y - x) * 100.0 / dt),
                _ => None,
            },
        };
        let mut probe = (b.process - a.process) * 100.0 / dt;
        if matches!(self, ServerCpu::Embedded) {
            probe -= server.unwrap_or(0.0);
        }
        (probe.max(0.0), server)
    }
}

/// Each node's CPU % (of one core) between two samples.
pub fn node_pct(a: &Cpu, b: &Cpu) -> Vec<Option<f64>> {
    let (Some(ta), Some(tb)) = (a.at, b.at) else {
        return Vec::new();
    };
    let dt = tb.duration_since(ta).as_secs_f64().max(1e-3);
    a.nodes
        .iter()
        .zip(&b.nodes)
        .map(|(x, y)| match (x.cpu_s, y.cpu_s) {
            (Some(x), Some(y)) => Some((y - x) * 100.0 / dt),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn nodes_add_up_and_a_dead_one_is_left_out() {
        let t0 = Instant::now();
        let at = |cpu: [Option<f64>; 2], t| Cpu {
            at: Some(t),
            nodes: cpu
                .iter()
                .map(|&c| Proc {
                    cpu_s: c,
                    rss_kb: None,
                })
                .collect(),
            ..Cpu::default()
        };
        let a = at([Some(1.0), Some(5.0)], t0);
        let b = at([Some(1.5), None], t0 + Duration::from_secs(1));
        let per = node_pct(&a, &b);
        assert!((per[0].unwrap() - 50.0).abs() < 1e-9 && per[1].is_none());
        let (_, total) = ServerCpu::Pids(vec![1, 2]).pct(&a, &b);
        assert!((total.unwrap() - 50.0).abs() < 1e-9);
        let none = at([None, None], t0 + Duration::from_secs(2));
        assert!(ServerCpu::Pids(vec![1, 2]).pct(&a, &none).1.is_none());
    }
}

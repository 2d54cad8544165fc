//! When is a measurement about the load generator rather than the server? A saturated
//! generator sends late and drains sockets late, which looks exactly like a slow relay.
//! Such a step, and the run it belongs to, is declared invalid.

use serde::Serialize;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Limits {
    /// The probe's own CPU, % of one core per runtime thread: must stay at or below.
    pub max_cpu_pct: f64,
    /// p99 of how late packets left compared with their schedule, ms.
    pub max_lag_p99_ms: f64,
    /// Sends the probe itself could not make (its socket buffers were full), % of sends.
    pub max_local_drop_pct: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_cpu_pct: 90.0,
            max_lag_p99_ms: 20.0,
            max_local_drop_pct: 0.1,
        }
    }
}

/// What the generator measured about itself over one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LoadSide {
    /// CPU of the whole probe process over the window, % of one core.
    pub cpu_pct: f64,
    /// Runtime worker threads, the cores the probe may use.
    pub threads: usize,
    pub lag_p99_ms: f64,
    pub local_drops: u64,
    pub send_attempts: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Invalid {
    CpuSaturated {
        cpu_pct: f64,
        limit_pct: f64,
    },
    /// `starved`: the probe itself was not busy, so something else took the CPU.
    PacingLag {
        p99_ms: f64,
        limit_ms: f64,
        starved: bool,
    },
    LocalDrops {
        pct: f64,
        limit_pct: f64,
    },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::CpuSaturated { cpu_pct, limit_pct } => write!(
                f,
                "load generator CPU {cpu_pct:.0}% > {limit_pct:.0}% (saturated)"
            ),
            Invalid::PacingLag {
                p99_ms,
                limit_ms,
                starved,
            } => {
                write!(f, "pacing lag p99 {p99_ms:.1} ms > {limit_ms} ms")?;
                if *starved {
                    f.write_str(" while the probe was not busy: other processes took its CPU (pin it with taskset to an idle core)")?;
                }
                Ok(())
            }
            Invalid::LocalDrops { pct, limit_pct } => write!(
                f,
                "probe could not send {pct:.2}% of packets (> {limit_pct}%): its socket buffers were full"
            ),
        }
    }
}

/// Every rule the window broke; empty when the generator was not the limit.
pub fn check(l: &Limits, s: &LoadSide) -> Vec<Invalid> {
    let mut out = Vec::new();
    let cpu_limit = l.max_cpu_pct * s.threads.max(1) as f64;
    if s.cpu_pct > cpu_limit {
        out.push(Invalid::CpuSaturated {
            cpu_pct: s.cpu_pct,
            limit_pct: cpu_limit,
        });
    }
    if s.lag_p99_ms > l.max_lag_p99_ms {
        out.push(Invalid::PacingLag {
            p99_ms: s.lag_p99_ms,
            limit_ms: l.max_lag_p99_ms,
            starved: s.cpu_pct < cpu_limit / 2.0,
        });
    }
    if s.send_attempts > 0 {
        let pct = s.local_drops as f64 * 100.0 / s.send_attempts as f64;
        if pct > l.max_local_drop_pct {
            out.push(Invalid::LocalDrops {
                pct,
                limit_pct: l.max_local_drop_pct,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(cpu: f64, threads: usize, lag: f64, drops: u64, sends: u64) -> LoadSide {
        LoadSide {
            cpu_pct: cpu,
            threads,
            lag_p99_ms: lag,
            local_drops: drops,
            send_attempts: sends,
        }
    }

    #[test]
    fn healthy_generator_is_valid() {
        assert!(check(&Limits::default(), &side(40.0, 1, 1.5, 0, 10_000)).is_empty());
        // At the limit is still valid.
        assert!(check(&Limits::default(), &side(90.0, 1, 20.0, 10, 10_000)).is_empty());
    }

    #[test]
    fn each_rule_fires() {
        let l = Limits::default();
        assert_eq!(
            check(&l, &side(95.0, 1, 0.0, 0, 0)),
            [Invalid::CpuSaturated {
                cpu_pct: 95.0,
                limit_pct: 90.0
            }]
        );
        assert_eq!(
            check(&l, &side(0.0, 1, 25.0, 0, 0)),
            [Invalid::PacingLag {
                p99_ms: 25.0,
                limit_ms: 20.0,
                starved: true
            }]
        );
        let lag = check(&l, &side(80.0, 1, 25.0, 0, 0));
        assert!(matches!(
            lag[..],
            [Invalid::PacingLag { starved: false, .. }]
        ));
        assert!(check(&l, &side(5.0, 1, 25.0, 0, 0))[0]
            .to_string()
            .contains("taskset"));
        let drops = check(&l, &side(0.0, 1, 0.0, 2, 1000));
        assert!(matches!(drops[..], [Invalid::LocalDrops { pct, .. }] if pct == 0.2));
        assert_eq!(check(&l, &side(99.0, 1, 30.0, 5, 10)).len(), 3);
    }

    #[test]
    fn cpu_limit_scales_with_threads() {
        let l = Limits::default();
        assert!(check(&l, &side(150.0, 2, 0.0, 0, 0)).is_empty());
        assert_eq!(check(&l, &side(185.0, 2, 0.0, 0, 0)).len(), 1);
        assert!(check(&l, &side(50.0, 0, 0.0, 0, 0)).is_empty());
        let msg = check(&l, &side(95.0, 1, 0.0, 0, 0))[0].to_string();
        assert!(msg.contains("saturated"), "{msg}");
    }
}

//! The short summary printed on stdout at the end of a run.

use super::Report;
use crate::turn::name;
use std::fmt::Write as _;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

pub fn summary(r: &Report) -> String {
    let c = &r.config;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plenary probe turn: {} over {}, {} flows ({:.0} pps x {} B), {} peers{}",
        c.server_addr,
        name(&c.transport),
        name(&c.flow),
        c.pps_per_flow,
        c.shape.size,
        name(&c.peer_mode),
        if c.send_indications {
            ", Send indications"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "{:>4} {:>6} {:>5} {:>9} {:>10} {:>7} {:>9} {:>10} {:>8} {:>11} {:>6}  verdict",
        "step",
        "allocs",
        "ready",
        "alloc p95",
        "relayed/s",
        "loss %",
        "delay p95",
        "jitter p95",
        "srv cpu%",
        "pkts/srv-s",
        "probe%"
    );
    for s in &r.steps {
        let verdict = match (s.valid, s.held) {
            (false, _) => "INVALID".to_string(),
            (true, true) => "held".to_string(),
            (true, false) => {
                let b: Vec<String> = s.breaches.iter().map(ToString::to_string).collect();
                format!("FAILED ({})", b.join(", "))
            }
        };
        let _ = writeln!(
            out,
            "{:>4} {:>6} {:>5} {:>9.1} {:>10.0} {:>7.2} {:>9.1} {:>10.2} {:>8} {:>11} {:>6.0}  {verdict}",
            s.index + 1,
            s.allocations,
            s.ready,
            s.setup.alloc_time_ms.p95,
            s.relayed_pps,
            s.loss_pct,
            s.flow_delay_p95_ms.p95,
            s.flow_jitter_ms.p95,
            opt(s.server.map(|w| w.cpu_pct), 0),
            opt(s.server.and_then(|w| w.relayed_per_cpu_second), 0),
            s.probe.load.cpu_pct,
        );
    }
    let a = &r.allocations;
    let _ = write!(
        out,
        "allocations: {}/{} succeeded, alloc time p50 {:.1} / p95 {:.1} / p99 {:.1} ms",
        a.succeeded, a.attempted, a.alloc_time_ms.p50, a.alloc_time_ms.p95, a.alloc_time_ms.p99
    );
    for (kind, n) in &a.errors {
        let _ = write!(out, ", {n} x {kind}");
    }
    out.push('\n');
    if let Some(s) = &r.server {
        let _ = writeln!(
            out,
            "server pid {}: {:.2} CPU-s measured, {} relayed packets per server CPU-second, peak RSS {} KiB",
            s.pid,
            s.cpu_seconds,
            opt(s.relayed_per_cpu_second, 0),
            s.peak_rss_kb.map_or("-".into(), |k| k.to_string())
        );
    }
    let _ = writeln!(
        out,
        "result: {} (exit {}): {}",
        r.result.verdict, r.result.exit_code, r.result.summary
    );
    out
}

//! Text for people: one line per measured step, and how driver snapshots add up.

use super::engine::driver::Snapshot;
use super::report::{CascadeStep, StepResult};
use crate::stats::percentile::Percentiles;

/// Adds one driver's snapshot to the total of all drivers.
pub fn merge(a: &mut Snapshot, b: &Snapshot) {
    a.peers += b.peers;
    a.connected += b.connected;
    a.dead += b.dead;
    super::engine::driver::add(&mut a.counters, &b.counters);
    a.socket_drops += b.socket_drops;
    a.audio_rx_packets += b.audio_rx_packets;
    a.video_rx_packets += b.video_rx_packets;
    a.audio_expected += b.audio_expected;
    a.audio_lost += b.audio_lost;
    a.video_expected += b.video_expected;
    a.video_lost += b.video_lost;
    a.delay_sum_us += b.delay_sum_us;
    a.delay_n += b.delay_n;
    a.delay_max_us = a.delay_max_us.max(b.delay_max_us);
    a.frames += b.frames;
    a.lag.merge(&b.lag);
}

/// One line per measured step.
pub fn describe(s: &StepResult) -> String {
    let p95 = |p: &Option<Percentiles>| p.map_or("-".to_string(), |p| format!("{:.2}", p.p95));
    let verdict =
        crate::stats::knee::step_verdict(s.valid, s.held, &s.invalid_reasons, &s.breaches);
    let m = &s.metrics;
    format!(
        "{} | joins {:.0}% | p95: audio loss {}% freeze {}% fps {}% delay {} ms jitter {} ms | rx {:.1} Mbit/s ({:.2} each) | probe cpu {:.0}% lag p99 {:.1} ms{}",
        verdict,
        s.joins.join_pct,
        p95(&m.audio_loss_pct),
        p95(&m.freeze_pct),
        p95(&m.frame_rate_pct),
        p95(&m.delay_ms),
        p95(&m.jitter_ms),
        s.rx_mbps,
        // The layers the SFU chose: the same count on lower layers is a lighter load.
        s.rx_mbps / f64::from(s.participants.max(1)),
        s.probe.load.cpu_pct,
        s.probe_lag_ms.p99,
        s.server
            .as_ref()
            .map_or(String::new(), |w| format!(" | server cpu {:.0}%", w.cpu_pct))
    ) + &s.cascade.as_ref().map_or(String::new(), cascade)
}

/// The cascade's part of a step line: what a link adds in delay and carries in bytes, and
/// how re-homing went.
fn cascade(c: &CascadeStep) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let mut s = format!(
        " | nodes {} | cross-node delay p95 {} ms (same-node {} ms, added {} ms)",
        c.participants_per_node.len(),
        ms(c.delay.cross_node_ms.map(|p| p.p95)),
        ms(c.delay.same_node_ms.map(|p| p.p95)),
        ms(c.delay.added_p95_ms),
    );
    if c.link_mbps.is_some() || !c.links_missing.is_empty() {
        s += &format!(" | link {} Mbit/s", ms(c.link_mbps));
        if !c.links_missing.is_empty() {
            let who: Vec<&str> = c.links_missing.iter().map(|m| m.node.as_str()).collect();
            s += &format!(" ({} unknown)", who.join(", "));
        }
    }
    if let Some(r) = &c.rehome {
        s += &format!(
            " | re-homed {} ({} failed): audio back p50/p95 {}/{} ms, video {}/{} ms",
            r.count,
            r.failed,
            ms(r.audio_ms.map(|p| p.p50)),
            ms(r.audio_ms.map(|p| p.p95)),
            ms(r.video_ms.map(|p| p.p50)),
            ms(r.video_ms.map(|p| p.p95)),
        );
        if let Some(n) = r.noticed_ms {
            s += &format!(
                "; since the fault: noticed p95 {} ms, audio back p95 {} ms, video {} ms",
                ms(Some(n.p95)),
                ms(r.audio_since_fault_ms.map(|p| p.p95)),
                ms(r.video_since_fault_ms.map(|p| p.p95)),
            );
        }
    }
    s
}

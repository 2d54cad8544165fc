//! `report.html`: one self-contained page (inline CSS and SVG, no script) with each metric
//! against participants, its threshold and the knee; CPU and bandwidth curves; and how the
//! subscribers of one step were spread.

use super::{Report, StepResult};
use crate::report::svg::{self, esc, Chart, Series};
use crate::stats::percentile::Percentiles;
use std::fmt::Write as _;

const CSS: &str = "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222;padding:0 1em}\
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f3f3f3}td.l,th.l{text-align:left}.banner{padding:1em;border-radius:6px;font-size:17px}\
.ok{background:#e6f4e6;border:1px solid #7b7}.breached{background:#fdf0dc;border:1px solid #d93}\
.invalid{background:#fbe3e3;border:1px solid #c55}svg{display:block;margin:1em 0}code{font-size:12px}";

type Pick = fn(&StepResult) -> Option<Percentiles>;

fn series(
    r: &Report,
    name: &str,
    color: &'static str,
    f: impl Fn(&StepResult) -> Option<f64>,
) -> Series {
    Series {
        name: name.into(),
        color,
        points: r
            .steps
            .iter()
            .filter(|s| s.repeat == 0)
            .filter_map(|s| Some((f64::from(s.participants), f(s)?)))
            .collect(),
    }
}

fn chart(
    r: &Report,
    title: &str,
    y: &str,
    series: Vec<Series>,
    limit: Option<(f64, String)>,
) -> String {
    svg::render(&Chart {
        title: title.into(),
        x_label: format!("{} (step)", r.unit),
        y_label: y.into(),
        series,
        marker_x: (r.capacity > 0)
            .then(|| (f64::from(r.capacity), format!("capacity {}", r.capacity))),
        limit_y: limit,
        invalid_x: r
            .steps
            .iter()
            .filter(|s| !s.valid)
            .map(|s| f64::from(s.participants))
            .collect(),
    })
}

fn metric_chart(r: &Report, title: &str, y: &str, pick: Pick, limit: f64, unit: &str) -> String {
    if !r.steps.iter().any(|s| pick(s).is_some()) {
        return String::new();
    }
    chart(
        r,
        title,
        y,
        vec![
            series(r, "p95 across subscribers", "#c60", |s| {
                pick(s).map(|p| p.p95)
            }),
            series(r, "p50", "#999", |s| pick(s).map(|p| p.p50)),
        ],
        Some((limit, format!("threshold {limit}{unit}"))),
    )
}

/// A histogram of one metric over the subscribers of a step, as SVG bars.
fn distribution(title: &str, unit: &str, values: &[f64]) -> String {
    if values.is_empty() {
        return String::new();
    }
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let bins = 20usize;
    let width = ((hi - lo) / bins as f64).max(1e-9);
    let mut counts = vec![0u32; bins];
    for v in values {
        counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
    }
    let points = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| (lo + width * (i as f64 + 0.5), f64::from(c)))
        .collect();
    svg::render(&Chart {
        title: format!("{title}: {} subscribers", values.len()),
        x_label: unit.into(),
        y_label: "subscribers".into(),
        series: vec![Series {
            name: "subscribers per bin".into(),
            color: "#06c",
            points,
        }],
        marker_x: None,
        limit_y: None,
        invalid_x: vec![],
    })
}

fn charts(r: &Report) -> String {
    let t = &r.thresholds;
    let mut h = String::new();
    h += &chart(
        r,
        "Joins that succeeded",
        "%",
        vec![series(r, "joins", "#06c", |s| Some(s.joins.join_pct))],
        Some((t.min_join_pct, format!("threshold {}%", t.min_join_pct))),
    );
    h += &metric_chart(
        r,
        "Audio loss",
        "%",
        |s| s.metrics.audio_loss_pct,
        t.max_audio_loss_pct,
        "%",
    );
    h += &metric_chart(
        r,
        "Video frozen time (W3C rule)",
        "%",
        |s| s.metrics.freeze_pct,
        t.max_freeze_pct,
        "%",
    );
    h += &metric_chart(
        r,
        "Frame rate (p95 = worst 5%)",
        "% of target",
        |s| s.metrics.frame_rate_pct,
        t.min_frame_rate_pct,
        "%",
    );
    h += &metric_chart(
        r,
        "One-way delay through the server (worst track's p95)",
        "ms",
        |s| s.metrics.delay_ms,
        t.max_delay_ms,
        " ms",
    );
    h += &metric_chart(
        r,
        "Jitter, RFC 3550 (worst track)",
        "ms",
        |s| s.metrics.jitter_ms,
        t.max_jitter_ms,
        " ms",
    );
    h += &chart(
        r,
        "CPU",
        "% of one core",
        vec![
            series(r, "server", "#080", |s| {
                s.server.as_ref().map(|w| w.cpu_pct)
            }),
            series(r, "probe", "#c00", |s| Some(s.probe.load.cpu_pct)),
        ],
        None,
    );
    h += &chart(
        r,
        "Bandwidth at the probe",
        "Mbit/s",
        vec![
            series(r, "received", "#06c", |s| Some(s.rx_mbps)),
            series(r, "sent", "#999", |s| Some(s.tx_mbps)),
        ],
        None,
    );
    if r.steps.iter().any(|s| {
        s.server
            .as_ref()
            .and_then(|w| w.rx_mbit_per_cpu_s)
            .is_some()
    }) {
        h += &chart(
            r,
            "Media delivered per server CPU-second",
            "Mbit/CPU-s",
            vec![series(r, "delivered", "#080", |s| {
                s.server.as_ref().and_then(|w| w.rx_mbit_per_cpu_s)
            })],
            None,
        );
    }
    h += &svg::render(&Chart {
        title: "Timeline".into(),
        x_label: "seconds since start".into(),
        y_label: "Mbit/s, % CPU".into(),
        series: vec![
            Series {
                name: "received Mbit/s".into(),
                color: "#06c",
                points: r.timeline.iter().map(|t| (t.t, t.rx_mbps)).collect(),
            },
            Series {
                name: "probe CPU %".into(),
                color: "#c00",
                points: r.timeline.iter().map(|t| (t.t, t.probe_cpu_pct)).collect(),
            },
        ],
        marker_x: None,
        limit_y: None,
        invalid_x: vec![],
    });
    h
}

fn distributions(r: &Report) -> String {
    let step = r
        .steps
        .iter()
        .filter(|s| s.repeat == 0)
        .find(|s| s.participants == r.capacity)
        .or_else(|| r.steps.iter().rev().find(|s| s.repeat == 0));
    let Some(s) = step else { return String::new() };
    let mut h = format!(
        "<h2>Subscribers at {} {} (step {})</h2>",
        s.participants,
        r.unit,
        s.index + 1
    );
    let col = |f: fn(&crate::sfu::step::Subscriber) -> Option<f64>| {
        s.subscribers.iter().filter_map(f).collect::<Vec<f64>>()
    };
    h += &distribution(
        "One-way delay (worst track's p95)",
        "ms",
        &col(|x| x.delay_ms),
    );
    h += &distribution("Audio loss", "%", &col(|x| x.audio_loss_pct));
    h += &distribution("Frame rate", "% of target", &col(|x| x.frame_rate_pct));
    h += &distribution("Time to first frame", "ms", &col(|x| x.first_media_ms));
    h
}

fn step_table(r: &Report) -> String {
    let mut h = String::from(
        "<h2>Steps</h2><table><tr><th>repeat</th><th>step</th><th>participants</th><th>joins %</th><th>join p95 ms</th>\
         <th>audio loss p95 %</th><th>freeze p95 %</th><th>fps p95 %</th><th>delay p95 ms</th><th>jitter p95 ms</th>\
         <th>first frame p95 ms</th><th>rx Mbit/s</th><th>server CPU %</th><th>probe CPU %</th><th>lag p99 ms</th><th class=\"l\">verdict</th></tr>",
    );
    let p95 = |p: Option<Percentiles>| p.map_or("-".into(), |p| format!("{:.2}", p.p95));
    for s in &r.steps {
        let verdict = crate::sfu::summary::describe(s);
        let verdict = verdict.split(" | ").next().unwrap_or("");
        let m = &s.metrics;
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{:.0}</td><td>{:.1}</td><td class=\"l\">{}</td></tr>",
            s.repeat + 1,
            s.index + 1,
            s.participants,
            s.joins.join_pct,
            s.joins.join_ms.p95,
            p95(m.audio_loss_pct),
            p95(m.freeze_pct),
            p95(m.frame_rate_pct),
            p95(m.delay_ms),
            p95(m.jitter_ms),
            p95(m.first_media_ms),
            s.rx_mbps,
            s.server.as_ref().map_or("-".into(), |w| format!("{:.0}", w.cpu_pct)),
            s.probe.load.cpu_pct,
            s.probe_lag_ms.p99,
            esc(verdict)
        );
    }
    h + "</table>"
}

/// Per step over several nodes: the delay a link adds, re-homing times, each node's CPU
/// and the bytes on each link.
fn cascade_table(r: &Report) -> String {
    if r.steps.iter().all(|s| s.cascade.is_none()) {
        return String::new();
    }
    let mut h = String::from(
        "<h2>Nodes</h2><table><tr><th>repeat</th><th>step</th><th class=\"l\">participants per node</th>\
         <th>same-node delay p50/p95 ms</th><th>cross-node delay p50/p95 ms</th><th>added p50/p95 ms</th>\
         <th>re-homed (failed)</th><th>audio back p50/p95 ms</th><th>video back p50/p95 ms</th><th class=\"l\">node CPU %</th>\
         <th class=\"l\">link Mbit/s (lost, dropped)</th></tr>",
    );
    let pair =
        |p: Option<Percentiles>| p.map_or("-".into(), |p| format!("{:.1}/{:.1}", p.p50, p.p95));
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    for s in &r.steps {
        let Some(c) = &s.cascade else { continue };
        let per: Vec<String> = c
            .participants_per_node
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let cpu: Vec<String> = s
            .server
            .iter()
            .flat_map(|w| &w.nodes)
            .map(|n| {
                format!(
                    "{}: {}",
                    n.target.as_deref().unwrap_or("?"),
                    n.cpu_pct.map_or("gone".into(), |c| format!("{c:.0}"))
                )
            })
            .collect();
        let mut links: Vec<String> = c
            .links
            .iter()
            .map(|l| match (l.tx_mbps, l.lost, l.dropped) {
                (Some(m), Some(lost), Some(d)) => {
                    format!("{}→{}: {m:.1} ({lost}, {d})", l.from, l.to)
                }
                _ => format!("{}→{}: ?", l.from, l.to),
            })
            .collect();
        links.extend(
            c.links_missing
                .iter()
                .map(|m| format!("{}: {}", m.node, m.reason)),
        );
        let rh = c.rehome.as_ref();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            s.repeat + 1,
            s.index + 1,
            esc(&per.join(", ")),
            pair(c.delay.same_node_ms),
            pair(c.delay.cross_node_ms),
            opt(c.delay.added_p50_ms),
            opt(c.delay.added_p95_ms),
            rh.map_or("0".into(), |r| format!("{} ({})", r.count, r.failed)),
            pair(rh.and_then(|r| r.audio_ms)),
            pair(rh.and_then(|r| r.video_ms)),
            esc(&cpu.join(", ")),
            esc(&links.join("; "))
        );
    }
    h + "</table>"
}

pub fn render(r: &Report) -> String {
    let c = &r.config;
    let t = &r.thresholds;
    let mut h = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>plenary probe sfu: {}</title><style>{CSS}</style></head><body>",
        esc(&c.scenario.name)
    );
    let _ = write!(
        h,
        "<h1>SFU capacity: {} scenario</h1><div class=\"banner {}\"><b>{}</b> (exit {}): {}</div>",
        esc(&c.scenario.name),
        r.verdict,
        r.verdict.to_uppercase(),
        r.exit_code,
        esc(&r.summary)
    );
    if !r.invalid_reasons.is_empty() {
        h += "<p>The probe, not the server, was the limit (or nobody could join), so these numbers do not measure the server:</p><ul>";
        for reason in &r.invalid_reasons {
            let _ = write!(h, "<li>{}</li>", esc(reason));
        }
        h += "</ul>";
    }
    let ramp = &c.scenario.ramp;
    let rows = [
        ("Scenario", format!("{}: {}", c.scenario.name, c.scenario.description)),
        ("Target", format!("{} ({:?}){}", c.targets.join(", "), c.api, if c.embedded { ", embedded in the probe" } else { "" })),
        ("Ramp", format!("{}..{} {} by {}, {} s warm-up + {} s measured per step, {} joins/s, {} repeat(s)", ramp.start, ramp.max, r.unit, ramp.step, ramp.warmup_s, ramp.hold_s, ramp.join_rate_per_s, c.repeat)),
        (
            "Thresholds (p95 across subscribers)",
            format!(
                "audio loss < {}%, frozen < {}%, frame rate ≥ {}% of target, delay < {} ms, jitter < {} ms, joins ≥ {}%",
                t.max_audio_loss_pct, t.max_freeze_pct, t.min_frame_rate_pct, t.max_delay_ms, t.max_jitter_ms, t.min_join_pct
            ),
        ),
        ("Pinning", format!("server CPUs {:?}, probe CPUs {:?}, {} driver thread(s)", c.sfu_cpus, c.probe_cpus, c.drivers)),
        ("Machine", format!("{} CPUs, Linux {}, load {} → {}", r.environment.cpus, r.environment.kernel, r.environment.loadavg_start, r.environment.loadavg_end)),
        ("Stack", r.environment.webrtc_stack.to_string()),
    ];
    h += "<table>";
    for (k, v) in rows {
        let _ = write!(
            h,
            "<tr><th class=\"l\">{k}</th><td class=\"l\">{}</td></tr>",
            esc(&v)
        );
    }
    h += "</table>";
    h += &charts(r);
    h += &distributions(r);
    h += &step_table(r);
    h += &cascade_table(r);
    let _ = write!(
        h,
        "<p><small>{} {}, command: <code>{}</code>. Delay is measured from the sending client's stamp to the receiving client on one clock, so it includes the probe's own queueing (see the lag column).</small></p></body></html>",
        r.tool,
        r.version,
        esc(&r.command.join(" "))
    );
    h
}

//! `report.html`: one self-contained page (inline CSS and SVG, no script) that an
//! operator can attach to an email or show their board.

use super::svg::{self, esc, Chart, Series};
use super::Report;
use crate::turn::name;
use std::fmt::Write as _;

const CSS: &str = "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222;padding:0 1em}\
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f3f3f3}td.l,th.l{text-align:left}.banner{padding:1em;border-radius:6px;font-size:17px}\
.ok{background:#e6f4e6;border:1px solid #7b7}.breached{background:#fdf0dc;border:1px solid #d93}\
.invalid{background:#fbe3e3;border:1px solid #c55}svg{display:block;margin:1em 0}code{font-size:12px}";

fn per_step(r: &Report, f: impl Fn(&crate::turn::step::StepResult) -> f64) -> Vec<(f64, f64)> {
    r.steps
        .iter()
        .map(|s| (f64::from(s.allocations), f(s)))
        .collect()
}

fn chart(
    r: &Report,
    title: &str,
    y_label: &str,
    series: Vec<Series>,
    limit: Option<(f64, String)>,
) -> String {
    svg::render(&Chart {
        title: title.into(),
        x_label: "allocations (step)".into(),
        y_label: y_label.into(),
        series,
        marker_x: r
            .result
            .capacity
            .map(|c| (f64::from(c), format!("capacity {c}"))),
        limit_y: limit,
        invalid_x: r
            .steps
            .iter()
            .filter(|s| !s.valid)
            .map(|s| f64::from(s.allocations))
            .collect(),
    })
}

pub fn render_charts(r: &Report) -> String {
    let t = &r.thresholds;
    let mut out = String::new();
    out += &chart(
        r,
        "Relayed packets per second",
        "packets/s",
        vec![
            Series {
                name: "relayed".into(),
                color: "#06c",
                points: per_step(r, |s| s.relayed_pps),
            },
            Series {
                name: "offered".into(),
                color: "#999",
                points: per_step(r, |s| s.offered_pps),
            },
        ],
        None,
    );
    out += &chart(
        r,
        "Loss (p95 across flows)",
        "loss %",
        vec![Series {
            name: "loss p95".into(),
            color: "#c60",
            points: per_step(r, |s| s.flow_loss_pct.p95),
        }],
        Some((t.max_loss_pct, format!("limit {}%", t.max_loss_pct))),
    );
    out += &chart(
        r,
        "Delay (each flow's p95, p95 across flows)",
        "ms",
        vec![Series {
            name: "delay p95".into(),
            color: "#609",
            points: per_step(r, |s| s.flow_delay_p95_ms.p95),
        }],
        Some((t.max_delay_ms, format!("limit {} ms", t.max_delay_ms))),
    );
    if r.steps.iter().any(|s| s.server.is_some()) {
        out += &chart(
            r,
            "Relayed packets per server CPU-second",
            "packets/CPU-s",
            vec![Series {
                name: "work per CPU-second".into(),
                color: "#080",
                points: per_step(r, |s| {
                    s.server
                        .and_then(|w| w.relayed_per_cpu_second)
                        .unwrap_or(f64::NAN)
                }),
            }],
            None,
        );
    }
    out += &svg::render(&Chart {
        title: "Timeline".into(),
        x_label: "seconds since start".into(),
        y_label: "packets/s".into(),
        series: vec![Series {
            name: "relayed".into(),
            color: "#06c",
            points: r.timeline.iter().map(|t| (t.t, t.relayed_pps)).collect(),
        }],
        marker_x: None,
        limit_y: None,
        invalid_x: vec![],
    });
    out
}

pub fn render(r: &Report) -> String {
    let mut h = String::new();
    let res = &r.result;
    let c = &r.config;
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>plenary probe turn: {}</title><style>{CSS}</style></head><body>",
        esc(&c.server)
    );
    let _ = write!(
        h,
        "<h1>TURN load report</h1><div class=\"banner {}\"><b>{}</b> (exit {}): {}</div>",
        res.verdict,
        res.verdict.to_uppercase(),
        res.exit_code,
        esc(&res.summary)
    );
    if !res.invalid_reasons.is_empty() {
        h += "<p>The probe, not the server, was the limit, so these numbers do not measure the server:</p><ul>";
        for reason in &res.invalid_reasons {
            let _ = write!(h, "<li>{}</li>", esc(reason));
        }
        h += "</ul>";
    }
    let t = &r.thresholds;
    let rows = [
        ("Server", format!("{} ({}), {}", c.server, c.server_addr, name(&c.transport))),
        (
            "Flows",
            format!(
                "{}: {:.0} packets/s of {} B per allocation, {} peers{}",
                name(&c.flow),
                c.pps_per_flow,
                c.shape.size,
                name(&c.peer_mode),
                if c.send_indications { ", Send indications" } else { ", ChannelData" }
            ),
        ),
        (
            "Steps",
            format!(
                "{:?} allocations, {} s warm-up + {} s measured each",
                c.steps, c.warmup_seconds, c.measure_seconds
            ),
        ),
        (
            "Thresholds",
            format!(
                "loss < {}%, delay p95 < {} ms, jitter < {} ms, joins ≥ {}% (p95 across flows)",
                t.max_loss_pct, t.max_delay_ms, t.max_jitter_ms, t.min_join_pct
            ),
        ),
        (
            "Allocations",
            format!(
                "{}/{} succeeded; alloc time p50 {:.1} / p95 {:.1} / p99 {:.1} ms{}",
                r.allocations.succeeded,
                r.allocations.attempted,
                r.allocations.alloc_time_ms.p50,
                r.allocations.alloc_time_ms.p95,
                r.allocations.alloc_time_ms.p99,
                r.allocations
                    .errors
                    .iter()
                    .map(|(k, n)| format!("; {n} × {k}"))
                    .collect::<String>()
            ),
        ),
        (
            "Server process",
            r.server.as_ref().map_or("not sampled (no --server-pid)".into(), |s| {
                format!(
                    "pid {}: {:.2} CPU-s over the measured windows, {} relayed packets per CPU-second, peak RSS {} KiB",
                    s.pid,
                    s.cpu_seconds,
                    s.relayed_per_cpu_second.map_or("-".into(), |v| format!("{v:.0}")),
                    s.peak_rss_kb.map_or("-".into(), |k| k.to_string())
                )
            }),
        ),
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
    h += &render_charts(r);
    h += "<h2>Steps</h2><table><tr><th>step</th><th>allocations</th><th>ready</th><th>alloc p95 ms</th>\
          <th>relayed/s</th><th>loss %</th><th>loss p95 %</th><th>delay p95 ms</th><th>jitter p95 ms</th>\
          <th>server CPU %</th><th>packets/server CPU-s</th><th>probe CPU %</th><th>lag p99 ms</th><th class=\"l\">verdict</th></tr>";
    for s in &r.steps {
        let verdict =
            crate::stats::knee::step_verdict(s.valid, s.held, &s.invalid_reasons, &s.breaches);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.0}</td><td>{:.2}</td><td>{:.2}</td><td>{:.1}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.1}</td><td class=\"l\">{}</td></tr>",
            s.index + 1,
            s.allocations,
            s.ready,
            s.setup.alloc_time_ms.p95,
            s.relayed_pps,
            s.loss_pct,
            s.flow_loss_pct.p95,
            s.flow_delay_p95_ms.p95,
            s.flow_jitter_ms.p95,
            s.server.map_or("-".into(), |w| format!("{:.0}", w.cpu_pct)),
            s.server
                .and_then(|w| w.relayed_per_cpu_second)
                .map_or("-".into(), |v| format!("{v:.0}")),
            s.probe.load.cpu_pct,
            s.probe.lag_ms.p99,
            esc(&verdict)
        );
    }
    h += "</table>";
    let _ = writeln!(
        h,
        "<p><small>{} {}, command: <code>{}</code></small></p></body></html>",
        r.tool,
        r.version,
        esc(&r.command.join(" "))
    );
    h
}

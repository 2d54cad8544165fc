//! The Grafana dashboard (`configs/grafana/plenary.json`) queries only metrics the binary
//! exports: every metric name in every PromQL expression must be one that `plenary turn` or
//! `plenary sfu` (cascade included) describes at start. A renamed or removed metric fails
//! here instead of leaving an empty panel.

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// Collects the names passed to `describe_*`; registers nothing.
#[derive(Default)]
struct Described {
    counters_gauges: Mutex<BTreeSet<String>>,
    histograms: Mutex<BTreeSet<String>>,
}

impl Recorder for Described {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        lock(&self.counters_gauges).insert(key.as_str().to_owned());
    }
    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        lock(&self.counters_gauges).insert(key.as_str().to_owned());
    }
    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        lock(&self.histograms).insert(key.as_str().to_owned());
    }
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every series name the binary can expose: described counters and gauges as they are, and
/// histograms (rendered as summaries) with their `_sum` and `_count` series.
fn exported() -> BTreeSet<String> {
    let rec = Described::default();
    metrics::with_local_recorder(&rec, || {
        plenary_turn::net::describe_metrics();
        plenary_sfu::describe_metrics();
    });
    let mut names = lock(&rec.counters_gauges).clone();
    for h in lock(&rec.histograms).iter() {
        for suffix in ["", "_sum", "_count"] {
            names.insert(format!("{h}{suffix}"));
        }
    }
    names
}

const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
];

/// Removes `open … close` spans (label matchers, ranges, grouping lists), keeping the rest.
fn strip(expr: &str, open: char, close: char) -> String {
    let mut depth = 0usize;
    let mut out = String::new();
    for c in expr.chars() {
        if c == open {
            depth += 1;
            out.push(' ');
        } else if c == close && depth > 0 {
            depth -= 1;
        } else if depth == 0 {
            out.push(c);
        }
    }
    out
}

/// The metric names a PromQL expression reads: identifiers that are not functions (followed
/// by `(`), keywords, label names in `by (…)` lists, numbers or `$variables`.
fn metric_names(expr: &str) -> Vec<String> {
    let no_labels = strip(&strip(expr, '{', '}'), '[', ']');
    // Grouping lists name labels: `by (instance, worker)` → dropped with the parentheses.
    let mut text = no_labels.clone();
    for kw in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(i) = find_word(rest, kw) {
            out.push_str(&rest[..i]);
            let after = rest[i + kw.len()..].trim_start();
            rest = match after.strip_prefix('(') {
                Some(r) => r.split_once(')').map_or("", |(_, tail)| tail),
                None => after,
            };
        }
        out.push_str(rest);
        text = out;
    }
    let mut names = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts = c.is_ascii_alphabetic() || c == '_' || c == ':';
        if !starts || (i > 0 && (chars[i - 1] == '$' || chars[i - 1].is_ascii_digit())) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let next = chars[i..].iter().find(|c| !c.is_whitespace());
        if next == Some(&'(') || KEYWORDS.contains(&word.as_str()) {
            continue;
        }
        names.push(word);
    }
    names
}

fn find_word(text: &str, word: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find(word).map(|i| i + from) {
        let before = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let end = i + word.len();
        let after =
            end >= bytes.len() || !(bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_');
        if before && after {
            return Some(i);
        }
        from = end;
    }
    None
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_name_extractor_sees_metrics_and_skips_the_rest() {
    let e = "sum by (instance, worker) (rate(plenary_sfu_peers{instance=~\"$instance\",worker=\"0\"}[$__rate_interval])) * 8 / on (instance) group_left turn_total_allocations";
    assert_eq!(
        metric_names(e),
        ["plenary_sfu_peers", "turn_total_allocations"]
    );
    assert_eq!(
        metric_names("max by (quantile) (x_total{quantile=~\"0.5|0.9\"}) offset 5m"),
        ["x_total"]
    );
    // A name the binary does not export is caught.
    let known = exported();
    let unknown: Vec<String> = metric_names("sum(rate(plenary_turn_no_such_metric_total[5m]))")
        .into_iter()
        .filter(|n| !known.contains(n))
        .collect();
    assert_eq!(unknown, ["plenary_turn_no_such_metric_total"]);
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/grafana/plenary.json");
    let text = std::fs::read_to_string(path).expect("read the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    assert!(all.len() >= 30, "only {} queries found", all.len());
    let known = exported();
    assert!(known.contains("turn_total_allocations") && known.contains("plenary_cascade_links"));
    let mut queried = BTreeSet::new();
    let mut unknown = Vec::new();
    for e in &all {
        let names = metric_names(e);
        assert!(!names.is_empty(), "no metric found in `{e}`");
        for n in names {
            if !known.contains(&n) {
                unknown.push(format!("{n} (in `{e}`)"));
            }
            queried.insert(n);
        }
    }
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the binary does not export:\n{}",
        unknown.join("\n")
    );
    // The panels the operator's kit promises.
    for must in [
        "turn_total_allocations",
        "turn_total_traffic_peer_sentb",
        "plenary_turn_unauthorized_total",
        "plenary_sfu_rooms",
        "plenary_sfu_room_members",
        "plenary_sfu_forwarded_packets_total",
        "plenary_sfu_nacks_received_total",
        "plenary_sfu_peers",
        "plenary_cascade_links",
        "plenary_cascade_rtt_seconds",
    ] {
        assert!(queried.contains(must), "no panel shows {must}");
    }
}

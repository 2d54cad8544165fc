//! Bytes per node-to-node link: each node's Prometheus counters (`plenary_cascade_*`, by
//! peer) read at the start and end of a measured step, and their difference. The parser
//! and the difference are pure; only [`fetch`] touches the network.

use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

const TX_BYTES: &str = "plenary_cascade_tx_bytes_total";
const RX_BYTES: &str = "plenary_cascade_rx_bytes_total";
const LOST: &str = "plenary_cascade_datagrams_lost_total";
const DROPPED: &str = "plenary_cascade_datagrams_dropped_total";

/// A scrape must not hold up the step: a node that does not answer in time is missing.
const TIMEOUT: Duration = Duration::from_secs(1);
/// A node's whole exposition is a few hundred KiB at most.
const MAX_BODY: u64 = 8 << 20;

/// One sample line of the Prometheus text format.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl Sample<'_> {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `name{label="v",...} value [timestamp]`; None for comments, blank and malformed lines.
pub fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let end = line.find(|c: char| !is_name(c)).unwrap_or(line.len());
    let (name, mut rest) = line.split_at(end);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let end = rest.find(|c: char| !is_name(c))?;
            let (key, r) = rest.split_at(end);
            let r = r.trim_start().strip_prefix('=')?.trim_start();
            let (value, r) = quoted(r.strip_prefix('"')?)?;
            if key.is_empty() {
                return None;
            }
            labels.push((key, value));
            rest = r.trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    // A space must separate the series from its value.
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// A label value after its opening quote, unescaped, and what follows its closing quote.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// One node's counters towards one peer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub lost: u64,
    /// By reason.
    pub dropped: BTreeMap<String, u64>,
}

/// A node's link counters by peer name, from its `/metrics` text; other lines are ignored.
pub fn node_counters(text: &str) -> BTreeMap<String, Counters> {
    let mut out: BTreeMap<String, Counters> = BTreeMap::new();
    for s in text.lines().filter_map(parse_sample) {
        if ![TX_BYTES, RX_BYTES, LOST, DROPPED].contains(&s.name) {
            continue;
        }
        let Some(peer) = s.label("peer") else {
            continue;
        };
        // Counters are integers; anything else is not a count.
        if !(s.value.is_finite() && s.value >= 0.0) {
            continue;
        }
        let v = s.value.round() as u64;
        let c = out.entry(peer.to_string()).or_default();
        match s.name {
            TX_BYTES => c.tx_bytes = v,
            RX_BYTES => c.rx_bytes = v,
            LOST => c.lost = v,
            _ => {
                let reason = s.label("reason").unwrap_or("").to_string();
                *c.dropped.entry(reason).or_default() += v;
            }
        }
    }
    out
}

/// One direction of one link over a step, as the sending node counted it. None: unknown
/// (the node's counters went back, so it restarted during the step).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Link {
    /// The sending node: its name (`--local-nodes`) or its `--target` URL.
    pub from: String,
    /// The peer's node name, as the sender labels it.
    pub to: String,
    pub tx_bytes: Option<u64>,
    pub tx_mbps: Option<f64>,
    /// Bytes `from` received back from `to` (control frames, and media the other way).
    pub rx_bytes: Option<u64>,
    /// QUIC packets declared lost.
    pub lost: Option<u64>,
    /// Datagrams dropped before sending, all reasons.
    pub dropped: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub dropped_by_reason: BTreeMap<String, u64>,
}

/// A node whose links are not (fully) known over a step, and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Missing {
    pub node: String,
    pub reason: String,
}

/// One node's links between two reads `secs` apart. Err when a counter went back or a
/// peer's series vanished: counters only grow, so the node restarted and every delta of
/// it is unknown (a restarted node's new count would pass for a small delta otherwise).
pub fn node_delta(
    from: &str,
    a: &BTreeMap<String, Counters>,
    b: &BTreeMap<String, Counters>,
    secs: f64,
) -> Result<Vec<Link>, String> {
    let zero = Counters::default();
    let mut out = Vec::new();
    for (peer, x) in a {
        if !b.contains_key(peer) {
            return Err(format!("its counters for {peer} vanished (restarted?)"));
        }
        let y = &b[peer];
        let back = y.tx_bytes < x.tx_bytes
            || y.rx_bytes < x.rx_bytes
            || y.lost < x.lost
            || x.dropped
                .iter()
                .any(|(r, v)| y.dropped.get(r).unwrap_or(&0) < v);
        if back {
            return Err(format!("its counters for {peer} went back (restarted?)"));
        }
    }
    for (peer, y) in b {
        // A link that came up during the step started from zero.
        let x = a.get(peer).unwrap_or(&zero);
        let dropped_by_reason: BTreeMap<String, u64> = y
            .dropped
            .iter()
            .map(|(r, v)| (r.clone(), v - x.dropped.get(r).unwrap_or(&0)))
            .filter(|(_, d)| *d > 0)
            .collect();
        let tx = y.tx_bytes - x.tx_bytes;
        out.push(Link {
            from: from.to_string(),
            to: peer.clone(),
            tx_bytes: Some(tx),
            tx_mbps: Some(tx as f64 * 8.0 / 1e6 / secs.max(1e-3)),
            rx_bytes: Some(y.rx_bytes - x.rx_bytes),
            lost: Some(y.lost - x.lost),
            dropped: Some(dropped_by_reason.values().sum()),
            dropped_by_reason,
        });
    }
    Ok(out)
}

/// One node read once: when, and its counters, or why it could not be read.
pub type Read1 = Result<(Instant, BTreeMap<String, Counters>), String>;

/// Every node's links over a step from its reads at the start (`a`) and end (`b`), in node
/// order. A node unread at either end is missing, not zero; a restarted node is missing
/// and its links (those it has at the end) have unknown figures.
pub fn step_links(names: &[String], a: &[Read1], b: &[Read1]) -> (Vec<Link>, Vec<Missing>) {
    let (mut links, mut missing) = (Vec::new(), Vec::new());
    for (i, name) in names.iter().enumerate() {
        let miss = |reason: String| Missing {
            node: name.clone(),
            reason,
        };
        match (a.get(i), b.get(i)) {
            (Some(Ok((t0, x))), Some(Ok((t1, y)))) => {
                let secs = t1.saturating_duration_since(*t0).as_secs_f64();
                match node_delta(name, x, y, secs) {
                    Ok(v) => links.extend(v),
                    Err(e) => {
                        links.extend(y.keys().map(|peer| Link {
                            from: name.clone(),
                            to: peer.clone(),
                            ..Link::default()
                        }));
                        missing.push(miss(e));
                    }
                }
            }
            (Some(Err(e)), _) => missing.push(miss(format!("not read at the start: {e}"))),
            (_, Some(Err(e))) => missing.push(miss(format!("not read at the end: {e}"))),
            _ => missing.push(miss("not read".into())),
        }
    }
    (links, missing)
}

/// Sum of the known links' Mbit/s; None when no link's rate is known.
pub fn total_mbps(links: &[Link]) -> Option<f64> {
    let v: Vec<f64> = links.iter().filter_map(|l| l.tx_mbps).collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

/// The nodes whose metrics are read: (name for the report, metrics URL).
#[derive(Clone, Debug)]
pub struct Scraper {
    pub nodes: Vec<(String, String)>,
}

impl Scraper {
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Reads every node at once, so N slow nodes cost one timeout, not N.
    pub fn read(&self) -> Vec<Read1> {
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .nodes
                .iter()
                .map(|(_, url)| {
                    s.spawn(move || {
                        let text = fetch(url, TIMEOUT)?;
                        Ok((Instant::now(), node_counters(&text)))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("reader panicked".into())))
                .collect()
        })
    }
}

/// GET `url` over HTTP/1.0 (the server closes after the body, so no chunking or
/// keep-alive to handle); the body of a 200.
pub fn fetch(url: &str, timeout: Duration) -> Result<String, String> {
    let (auth, path) = super::net::http::split_url(url).map_err(|e| e.to_string())?;
    let addr = auth
        .to_socket_addrs()
        .map_err(|e| format!("{auth}: {e}"))?
        .next()
        .ok_or_else(|| format!("{auth} does not resolve"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{auth}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {auth}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take(MAX_BODY)
        .read_to_end(&mut raw)
        .map_err(|e| format!("{auth}: {e}"))?;
    body_of(&String::from_utf8_lossy(&raw))
}

/// The body of a 200 response, else the status line as the error.
fn body_of(raw: &str) -> Result<String, String> {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or("no complete HTTP response")?;
    let status = head.lines().next().unwrap_or("");
    match status.split_whitespace().nth(1) {
        Some("200") => Ok(body.to_string()),
        _ => Err(format!("answered {status:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_lines_parse() {
        let s = parse_sample(r#"plenary_cascade_tx_bytes_total{peer="n1"} 12345"#).unwrap();
        assert_eq!(
            (s.name, s.label("peer"), s.value),
            (TX_BYTES, Some("n1"), 12345.0)
        );
        // Several labels, spaces, a trailing comma, escapes, a timestamp, float values.
        let s = parse_sample(
            r#"  m:x_total{ peer = "a\"b,}" ,reason="too_large",} 1.5e3 1700000000000 "#,
        )
        .unwrap();
        assert_eq!(s.name, "m:x_total");
        assert_eq!(s.label("peer"), Some("a\"b,}"));
        assert_eq!(s.label("reason"), Some("too_large"));
        assert_eq!(s.value, 1500.0);
        let s = parse_sample("up 1").unwrap();
        assert!(s.labels.is_empty() && s.value == 1.0);
        assert!(parse_sample(r#"x{a="\\\n"} 2"#).unwrap().label("a") == Some("\\\n"));
        assert!(parse_sample("x +Inf").unwrap().value.is_infinite());
        for bad in [
            "",
            "# HELP plenary_cascade_tx_bytes_total Bytes sent",
            "# TYPE x counter",
            "x",
            "x{peer=\"n1\"}",
            "x{peer=\"n1} 3",
            "x{peer=n1} 3",
            "x{=\"a\"} 3",
            "x{peer=\"n1\"}3",
            "x nope",
            "9x 1",
        ] {
            assert!(parse_sample(bad).is_none(), "{bad:?}");
        }
    }

    const EXPOSITION: &str = "\
# HELP plenary_cascade_tx_bytes_total Bytes sent to a peer node.
# TYPE plenary_cascade_tx_bytes_total counter
plenary_cascade_tx_bytes_total{peer=\"n1\"} 1000000
plenary_cascade_tx_bytes_total{peer=\"n2\"} 500
plenary_cascade_rx_bytes_total{peer=\"n1\"} 2000
plenary_cascade_datagrams_lost_total{peer=\"n1\"} 3
plenary_cascade_datagrams_dropped_total{peer=\"n1\",reason=\"buffer_full\"} 4
plenary_cascade_datagrams_dropped_total{peer=\"n1\",reason=\"too_large\"} 1
plenary_cascade_links 2
plenary_cascade_rtt_seconds{peer=\"n1\"} 0.0004
plenary_cascade_tx_bytes_total 77
plenary_sfu_peers 40
garbage line {{
";

    #[test]
    fn counters_by_peer_ignore_other_lines() {
        let c = node_counters(EXPOSITION);
        assert_eq!(c.keys().collect::<Vec<_>>(), ["n1", "n2"]);
        let n1 = &c["n1"];
        assert_eq!((n1.tx_bytes, n1.rx_bytes, n1.lost), (1_000_000, 2000, 3));
        assert_eq!(n1.dropped["buffer_full"] + n1.dropped["too_large"], 5);
        assert_eq!(c["n2"].tx_bytes, 500);
        assert!(node_counters("").is_empty());
    }

    fn counters(tx: u64, lost: u64, full: u64) -> Counters {
        Counters {
            tx_bytes: tx,
            rx_bytes: tx / 10,
            lost,
            dropped: [("buffer_full".to_string(), full)].into(),
        }
    }

    fn map(v: &[(&str, Counters)]) -> BTreeMap<String, Counters> {
        v.iter().map(|(k, c)| (k.to_string(), c.clone())).collect()
    }

    #[test]
    fn deltas_per_link_and_rate() {
        let a = map(&[("n1", counters(1_000_000, 1, 2))]);
        let b = map(&[
            ("n1", counters(3_500_000, 4, 2)),
            ("n2", counters(250_000, 0, 1)),
        ]);
        let v = node_delta("n0", &a, &b, 2.0).unwrap();
        assert_eq!(v.len(), 2);
        let l = &v[0];
        assert_eq!((l.from.as_str(), l.to.as_str()), ("n0", "n1"));
        assert_eq!(l.tx_bytes, Some(2_500_000));
        assert_eq!(l.tx_mbps, Some(10.0));
        assert_eq!(
            (l.rx_bytes, l.lost, l.dropped),
            (Some(250_000), Some(3), Some(0))
        );
        assert!(l.dropped_by_reason.is_empty());
        // A link that came up during the step counts from zero.
        assert_eq!((v[1].tx_bytes, v[1].dropped), (Some(250_000), Some(1)));
        assert_eq!(v[1].dropped_by_reason["buffer_full"], 1);
        assert_eq!(total_mbps(&v), Some(11.0));
        assert_eq!(total_mbps(&[]), None);
    }

    #[test]
    fn a_counter_going_back_makes_the_node_unknown() {
        let a = map(&[("n1", counters(5_000, 0, 0)), ("n2", counters(100, 0, 3))]);
        // n2's count grew but n1's went back: the node restarted; n2's "delta" is a lie too.
        let b = map(&[("n1", counters(4_000, 0, 0)), ("n2", counters(900, 0, 3))]);
        assert!(node_delta("n0", &a, &b, 1.0).is_err());
        let mut fewer = b.clone();
        fewer.get_mut("n2").unwrap().dropped.clear();
        fewer.get_mut("n1").unwrap().tx_bytes = 6_000;
        assert!(node_delta("n0", &a, &fewer, 1.0).is_err());
        let gone = map(&[("n1", counters(6_000, 0, 0))]);
        assert!(node_delta("n0", &a, &gone, 1.0).is_err());
    }

    #[test]
    fn unread_and_restarted_nodes_are_missing_not_zero() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(4);
        let names: Vec<String> = ["n0", "n1", "n2"].map(String::from).into();
        let ok = |t, tx| -> Read1 { Ok((t, map(&[("nx", counters(tx, 0, 0))]))) };
        let a = vec![ok(t0, 0), Err("refused".into()), ok(t0, 9_000)];
        let b = vec![ok(t1, 1_000_000), ok(t1, 5), ok(t1, 10)];
        let (links, missing) = step_links(&names, &a, &b);
        assert_eq!(links.len(), 2);
        assert_eq!(
            (links[0].from.as_str(), links[0].tx_mbps),
            ("n0", Some(2.0))
        );
        // n2 restarted: its link is listed, its figures unknown.
        assert_eq!(links[1].from, "n2");
        assert!(links[1].tx_bytes.is_none() && links[1].tx_mbps.is_none());
        let who: Vec<&str> = missing.iter().map(|m| m.node.as_str()).collect();
        assert_eq!(who, ["n1", "n2"]);
        assert!(missing[0].reason.contains("start: refused"));
        assert_eq!(total_mbps(&links), Some(2.0));
        // Read at neither end (fewer reads than nodes): missing.
        let (links, missing) = step_links(&names, &[], &[]);
        assert!(links.is_empty() && missing.len() == 3);
    }

    #[test]
    fn responses() {
        assert_eq!(
            body_of("HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nup 1\n").unwrap(),
            "up 1\n"
        );
        assert!(body_of("HTTP/1.1 404 Not Found\r\n\r\n")
            .unwrap_err()
            .contains("404"));
        assert!(body_of("HTTP/1.0 200 OK\r\n").is_err());
    }

    #[test]
    fn fetch_reads_a_local_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/metrics", l.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = [0u8; 256];
            let n = c.read(&mut req).unwrap();
            let req = String::from_utf8_lossy(&req[..n]).to_string();
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\n\r\n");
            let _ = c.write_all(EXPOSITION.as_bytes());
            req
        });
        let body = fetch(&url, Duration::from_secs(2)).unwrap();
        assert!(server
            .join()
            .unwrap()
            .starts_with("GET /metrics HTTP/1.0\r\n"));
        assert_eq!(node_counters(&body)["n1"].tx_bytes, 1_000_000);
        // Nothing listens there any more: an error, not a panic or a zero.
        assert!(fetch(&url, Duration::from_millis(300)).is_err());
    }
}

//! Per-worker counters pushed to the `metrics` recorder once a second, as deltas.
//!
//! Names follow coturn where a coturn metric means the same thing (dashboards built for
//! coturn keep working): `turn_total_allocations`, `turn_total_traffic_*` (client side),
//! `turn_total_traffic_peer_*` (peer side), `stun_binding_request`. coturn's
//! `turn_traffic_*{realm}` are exported too, counted live rather than per finished
//! session. Everything else is `plenary_turn_*`.

use super::relay::RelayStats;
use super::worker::IoStats;
use crate::server::Stats;
use metrics::Counter;
use plenary_ops::metrics::{MetricDesc, MetricKind};

type Getter<S> = fn(&S) -> u64;

struct Row<S: 'static> {
    name: &'static str,
    label: Option<(&'static str, &'static str)>,
    help: &'static str,
    get: Getter<S>,
}

const fn row<S>(name: &'static str, help: &'static str, get: Getter<S>) -> Row<S> {
    Row {
        name,
        label: None,
        help,
        get,
    }
}

const CORE: &[Row<Stats>] = &[
    row(
        "turn_total_traffic_peer_rcvp",
        "Packets received from peers",
        |s| s.received_packets,
    ),
    row(
        "turn_total_traffic_peer_rcvb",
        "Bytes received from peers",
        |s| s.received_bytes,
    ),
    row(
        "turn_total_traffic_peer_sentp",
        "Packets relayed to peers",
        |s| s.sent_packets,
    ),
    row(
        "turn_total_traffic_peer_sentb",
        "Bytes relayed to peers",
        |s| s.sent_bytes,
    ),
    row(
        "stun_binding_request",
        "Incoming STUN Binding requests",
        |s| s.binding_requests,
    ),
    row(
        "plenary_turn_allocations_created_total",
        "Allocations granted",
        |s| s.allocations_created,
    ),
    row(
        "plenary_turn_allocations_deleted_total",
        "Allocations ended (refresh 0, expiry, transport closed)",
        |s| s.allocations_deleted,
    ),
    Row {
        name: "plenary_turn_allocations_refused_total",
        label: Some(("reason", "quota")),
        help: "Allocations refused: quota (486) or relay ports exhausted (508)",
        get: |s| s.allocations_refused_quota,
    },
    Row {
        name: "plenary_turn_allocations_refused_total",
        label: Some(("reason", "ports")),
        help: "Allocations refused: quota (486) or relay ports exhausted (508)",
        get: |s| s.allocations_refused_ports,
    },
    row(
        "plenary_turn_unauthorized_total",
        "401 responses sent",
        |s| s.unauthorized,
    ),
    row(
        "plenary_turn_unauthorized_dropped_total",
        "Requests dropped by the 401 rate limit",
        |s| s.unauthorized_dropped_rate,
    ),
    row(
        "plenary_turn_stale_nonce_total",
        "438 Stale Nonce responses sent",
        |s| s.stale_nonce,
    ),
    row(
        "plenary_turn_bad_request_total",
        "400 Bad Request responses sent",
        |s| s.bad_request,
    ),
    row(
        "plenary_turn_unknown_attribute_total",
        "420 Unknown Attribute responses sent",
        |s| s.unknown_attribute,
    ),
    row(
        "plenary_turn_malformed_dropped_total",
        "Malformed client input dropped",
        |s| s.malformed_dropped,
    ),
    row(
        "plenary_turn_peer_denied_total",
        "Permissions or channels refused by the peer filter (403)",
        |s| s.peer_denied,
    ),
    row(
        "plenary_turn_peer_no_permission_dropped_total",
        "Datagrams dropped: no permission for the peer",
        |s| s.peer_no_permission_dropped,
    ),
    row(
        "plenary_turn_bandwidth_dropped_total",
        "Datagrams dropped by the per-allocation bandwidth cap",
        |s| s.bandwidth_dropped,
    ),
];

const IO: &[Row<IoStats>] = &[
    row(
        "turn_total_traffic_rcvp",
        "Packets received from clients",
        |s| s.client_rx_packets,
    ),
    row(
        "turn_total_traffic_rcvb",
        "Bytes received from clients",
        |s| s.client_rx_bytes,
    ),
    row("turn_total_traffic_sentp", "Packets sent to clients", |s| {
        s.client_tx_packets
    }),
    row("turn_total_traffic_sentb", "Bytes sent to clients", |s| {
        s.client_tx_bytes
    }),
    row(
        "plenary_turn_udp_send_dropped_total",
        "Datagrams to clients dropped: UDP send buffer full",
        |s| s.udp_send_dropped,
    ),
    row(
        "plenary_turn_stream_send_dropped_total",
        "Frames to TCP/TLS clients dropped: queue full",
        |s| s.stream_send_dropped,
    ),
    row(
        "plenary_turn_send_errors_total",
        "Sends to clients that failed",
        |s| s.send_errors,
    ),
    row(
        "plenary_turn_recv_errors_total",
        "Socket receive errors",
        |s| s.recv_errors,
    ),
    row(
        "plenary_turn_connections_opened_total",
        "TCP/TLS connections taken by workers",
        |s| s.conns_opened,
    ),
    row(
        "plenary_turn_connections_closed_total",
        "TCP/TLS connections closed",
        |s| s.conns_closed,
    ),
    row(
        "plenary_turn_connections_idle_closed_total",
        "TCP/TLS connections closed for silence (stream_idle_timeout before authentication)",
        |s| s.conns_idle_closed,
    ),
    row(
        "plenary_turn_stream_framing_errors_total",
        "TCP/TLS connections closed: not STUN/ChannelData",
        |s| s.stream_framing_errors,
    ),
    row(
        "plenary_turn_tls_handshakes_failed_total",
        "TLS handshakes that failed or timed out",
        |s| s.tls_handshake_failed,
    ),
    row(
        "plenary_turn_tls_handshake_timeouts_total",
        "TLS handshakes abandoned by the client, closed after tls_handshake_timeout (also counted as failed)",
        |s| s.tls_handshake_timeouts,
    ),
];

const RELAY: &[Row<RelayStats>] = &[
    row(
        "plenary_turn_relay_open_failed_total",
        "Relay sockets that could not be opened",
        |s| s.open_failed,
    ),
    row(
        "plenary_turn_relay_send_dropped_total",
        "Datagrams to peers dropped: relay send buffer full",
        |s| s.send_dropped,
    ),
    row(
        "plenary_turn_relay_send_errors_total",
        "Sends to peers that failed",
        |s| s.send_errors,
    ),
];

/// Names coturn's per-realm counters mirror from `turn_total_traffic_*`.
const REALM_MIRRORS: &[(&str, &str, Getter<IoStats>)] = &[
    (
        "turn_traffic_rcvp",
        "Packets received from clients, by realm",
        |s| s.client_rx_packets,
    ),
    (
        "turn_traffic_rcvb",
        "Bytes received from clients, by realm",
        |s| s.client_rx_bytes,
    ),
    (
        "turn_traffic_sentp",
        "Packets sent to clients, by realm",
        |s| s.client_tx_packets,
    ),
    (
        "turn_traffic_sentb",
        "Bytes sent to clients, by realm",
        |s| s.client_tx_bytes,
    ),
];

/// Gauges set by the control thread.
pub(crate) const GAUGE_ALLOCATIONS: &str = "turn_total_allocations";
pub(crate) const GAUGE_CONNECTIONS: &str = "plenary_turn_connections";
pub(crate) const GAUGE_DRAINING: &str = "plenary_turn_draining";
pub(crate) const COUNTER_REJECTED: &str = "plenary_turn_connections_rejected_total";
pub(crate) const COUNTER_ACCEPT_ERRORS: &str = "plenary_turn_accept_errors_total";
pub(crate) const COUNTER_STALLS: &str = "plenary_turn_stalls_total";

/// Every metric the TURN service exports, for HELP text ([`describe_metrics`]) and docs.
pub static METRICS: std::sync::LazyLock<Vec<MetricDesc>> = std::sync::LazyLock::new(|| {
    let counter = |name, help| MetricDesc {
        name,
        kind: MetricKind::Counter,
        help,
    };
    let mut v: Vec<MetricDesc> = Vec::new();
    let mut push = |d: MetricDesc| {
        if !v.iter().any(|e| e.name == d.name) {
            v.push(d);
        }
    };
    CORE.iter().for_each(|r| push(counter(r.name, r.help)));
    IO.iter().for_each(|r| push(counter(r.name, r.help)));
    RELAY.iter().for_each(|r| push(counter(r.name, r.help)));
    REALM_MIRRORS
        .iter()
        .for_each(|(n, h, _)| push(counter(n, h)));
    push(counter(
        COUNTER_REJECTED,
        "TCP/TLS connections refused: limit reached or workers busy",
    ));
    push(counter(
        COUNTER_ACCEPT_ERRORS,
        "TCP accepts that failed, e.g. out of file descriptors (the listener backs off 50 ms)",
    ));
    push(counter(
        COUNTER_STALLS,
        "Times the process did not run for a second or more (SIGSTOP, frozen VM, CPU starvation)",
    ));
    for (name, help) in [
        (GAUGE_ALLOCATIONS, "Current allocations"),
        (GAUGE_CONNECTIONS, "Open TCP/TLS client connections"),
        (GAUGE_DRAINING, "1 while draining (no new allocations)"),
    ] {
        push(MetricDesc {
            name,
            kind: MetricKind::Gauge,
            help,
        });
    }
    v
});

/// Registers HELP text for every TURN metric. Call after installing the exporter.
pub fn describe_metrics() {
    plenary_ops::metrics::describe(&METRICS);
}

fn handles<S>(rows: &[Row<S>]) -> Vec<Counter> {
    rows.iter()
        .map(|r| match r.label {
            Some((k, v)) => metrics::counter!(r.name, k => v),
            None => metrics::counter!(r.name),
        })
        .collect()
}

/// One worker's exporter: remembers what it last pushed and pushes the difference.
pub(crate) struct StatsExporter {
    core: (Vec<Counter>, Stats),
    io: (Vec<Counter>, IoStats),
    relay: (Vec<Counter>, RelayStats),
    realm: Vec<Counter>,
}

impl StatsExporter {
    pub(crate) fn new(realm: &str) -> Self {
        StatsExporter {
            core: (handles(CORE), Stats::default()),
            io: (handles(IO), IoStats::default()),
            relay: (handles(RELAY), RelayStats::default()),
            realm: REALM_MIRRORS
                .iter()
                .map(|(n, _, _)| metrics::counter!(*n, "realm" => realm.to_owned()))
                .collect(),
        }
    }

    pub(crate) fn flush(&mut self, core: &Stats, io: &IoStats, relay: &RelayStats) {
        push_deltas(CORE, &self.core.0, &self.core.1, core);
        push_deltas(IO, &self.io.0, &self.io.1, io);
        push_deltas(RELAY, &self.relay.0, &self.relay.1, relay);
        for ((_, _, get), c) in REALM_MIRRORS.iter().zip(&self.realm) {
            c.increment(get(io).saturating_sub(get(&self.io.1)));
        }
        self.core.1 = core.clone();
        self.io.1 = io.clone();
        self.relay.1 = relay.clone();
    }
}

fn push_deltas<S>(rows: &[Row<S>], counters: &[Counter], prev: &S, cur: &S) {
    for (r, c) in rows.iter().zip(counters) {
        let d = (r.get)(cur).saturating_sub((r.get)(prev));
        if d > 0 {
            c.increment(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_label_and_prometheus_safe() {
        let mut seen = std::collections::HashSet::new();
        for (name, label) in CORE
            .iter()
            .map(|r| (r.name, r.label))
            .chain(IO.iter().map(|r| (r.name, r.label)))
            .chain(RELAY.iter().map(|r| (r.name, r.label)))
        {
            assert!(
                seen.insert((name, label)),
                "duplicate metric {name} {label:?}"
            );
            assert!(name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
        assert!(METRICS.iter().any(|d| d.name == "turn_total_allocations"));
        assert!(METRICS
            .iter()
            .any(|d| d.name == "turn_total_traffic_peer_sentb"));
    }

    #[test]
    fn flush_without_recorder_is_harmless() {
        let mut e = StatsExporter::new("example.org");
        let s = Stats {
            unauthorized: 3,
            ..Stats::default()
        };
        e.flush(&s, &IoStats::default(), &RelayStats::default());
        assert_eq!(e.core.1.unauthorized, 3);
    }
}

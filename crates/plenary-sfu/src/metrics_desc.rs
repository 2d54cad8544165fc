//! HELP text for the SFU's Prometheus metrics (the media worker records them).

use plenary_ops::metrics::{describe, MetricDesc, MetricKind};

/// Registers the descriptions; call after the exporter is installed.
pub fn describe_metrics() {
    plenary_cascade::metrics::describe();
    describe(&[
        MetricDesc {
            name: crate::workers::ROOMS_GAUGE,
            kind: MetricKind::Gauge,
            help: "Rooms with at least one member on this node.",
        },
        MetricDesc {
            name: crate::workers::MEMBERS_GAUGE,
            kind: MetricKind::Gauge,
            help: "Room members on this node: room API participants, WHIP publishers and WHEP viewers.",
        },
        MetricDesc {
            name: "plenary_sfu_peers",
            kind: MetricKind::Gauge,
            help: "Peer connections held (WHIP, WHEP, room publish and subscribe), per media worker.",
        },
        MetricDesc {
            name: "plenary_sfu_tracks",
            kind: MetricKind::Gauge,
            help: "Published tracks, per media worker that holds their publisher.",
        },
        MetricDesc {
            name: "plenary_sfu_piped_packets_total",
            kind: MetricKind::Counter,
            help: "RTP packets piped to another media worker of a large room (one per worker).",
        },
        MetricDesc {
            name: "plenary_sfu_forwarded_packets_total",
            kind: MetricKind::Counter,
            help: "RTP packets written to subscribers (one per subscriber).",
        },
        MetricDesc {
            name: "plenary_sfu_forwarded_bytes_total",
            kind: MetricKind::Counter,
            help: "RTP payload bytes written to subscribers.",
        },
        MetricDesc {
            name: "plenary_sfu_layer_switches_total",
            kind: MetricKind::Counter,
            help: "Simulcast layer changes decided for subscriber slots.",
        },
        MetricDesc {
            name: "plenary_sfu_keyframe_requests_total",
            kind: MetricKind::Counter,
            help: "PLIs sent to publishers (after rate limiting).",
        },
        MetricDesc {
            name: "plenary_sfu_nacks_received_total",
            kind: MetricKind::Counter,
            help: "NACKs subscribers sent (each answered from the RTX cache when it still holds the packet).",
        },
        MetricDesc {
            name: "plenary_sfu_subscriber_keyframe_requests_total",
            kind: MetricKind::Counter,
            help: "PLIs and FIRs subscribers sent (forwarded to publishers rate-limited).",
        },
        MetricDesc {
            name: "plenary_sfu_subscriber_estimate_bps",
            kind: MetricKind::Histogram,
            help: "Subscriber bandwidth estimates (TWCC, else REMB) as they change.",
        },
        MetricDesc {
            name: "plenary_sfu_dropped_datagrams_total",
            kind: MetricKind::Counter,
            help: "Input dropped, by reason: malformed, unknown_source, unrouted, no_common_codec.",
        },
        MetricDesc {
            name: crate::egress::RUNNING_GAUGE,
            kind: MetricKind::Gauge,
            help: "plenary egress children running, started with POST /rooms/{room}/egress.",
        },
        MetricDesc {
            name: crate::egress::EXITS_COUNTER,
            kind: MetricKind::Counter,
            help: "plenary egress children that exited, by code: 0 stopped, 1 media pipeline, 2 arguments, 3 WHEP refused, 4 GStreamer missing, signal (crash or SIGKILL).",
        },
        MetricDesc {
            name: crate::http::CONNECTIONS_GAUGE,
            kind: MetricKind::Gauge,
            help: "Open HTTP connections, room API WebSockets included.",
        },
        MetricDesc {
            name: crate::http::DROPPED_COUNTER,
            kind: MetricKind::Counter,
            help: "HTTP connections closed by the server, by reason: header_timeout (no complete request head within 10 s: slowloris, half-open), malformed (not HTTP/1.1), incomplete (client left mid-request), limit (16384 open already).",
        },
        MetricDesc {
            name: crate::http::ACCEPT_ERRORS_COUNTER,
            kind: MetricKind::Counter,
            help: "HTTP accepts that failed, e.g. out of file descriptors (the listener backs off 50 ms).",
        },
        MetricDesc {
            name: crate::http::CLIENT_ERRORS_COUNTER,
            kind: MetricKind::Counter,
            help: "HTTP 4xx answers, by status (400: malformed SDP offer or request, 401: bad token, 413: offer too large).",
        },
        MetricDesc {
            name: crate::http::STALLS_COUNTER,
            kind: MetricKind::Counter,
            help: "Times the process did not run for a second or more (SIGSTOP, frozen VM, CPU starvation).",
        },
        MetricDesc {
            name: crate::http::ROOM_API_ERRORS_COUNTER,
            kind: MetricKind::Counter,
            help: "Room API client mistakes, by reason: bad_message (not JSON of a known type, or binary), not_joined (a message before join), join_timeout (no join within 10 s of the upgrade; the socket is closed).",
        },
    ]);
}

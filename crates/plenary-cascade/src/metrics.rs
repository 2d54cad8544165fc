//! Prometheus names of the cascade links.
//!
//! Per-link handles are resolved once when the link comes up, so the media path increments
//! an atomic and never looks labels up.

use metrics::{counter, gauge, Counter, Gauge};
use plenary_ops::metrics::{MetricDesc, MetricKind};

pub const TX_BYTES: &str = "plenary_cascade_tx_bytes_total";
pub const RX_BYTES: &str = "plenary_cascade_rx_bytes_total";
pub const LINKS: &str = "plenary_cascade_links";
pub const RTT: &str = "plenary_cascade_rtt_seconds";
pub const DATAGRAMS_LOST: &str = "plenary_cascade_datagrams_lost_total";
pub const DATAGRAMS_DROPPED: &str = "plenary_cascade_datagrams_dropped_total";
pub const AUTH_FAILURES: &str = "plenary_cascade_auth_failures_total";
pub const BAD_FRAMES: &str = "plenary_cascade_bad_frames_total";
pub const STALLS: &str = "plenary_cascade_link_stalls_total";
pub const NACKED: &str = "plenary_cascade_nacked_total";
pub const RESENT: &str = "plenary_cascade_resent_total";
pub const REPAIR_MISSED: &str = "plenary_cascade_repair_missed_total";

/// Registers HELP text for the cascade metrics; call after the exporter is installed.
pub fn describe() {
    plenary_ops::metrics::describe(&[
        MetricDesc {
            name: TX_BYTES,
            kind: MetricKind::Counter,
            help: "Bytes sent to a peer node (media datagrams and control frames), by peer.",
        },
        MetricDesc {
            name: RX_BYTES,
            kind: MetricKind::Counter,
            help: "Bytes received from a peer node (media datagrams and control frames), by peer.",
        },
        MetricDesc {
            name: LINKS,
            kind: MetricKind::Gauge,
            help: "Open authenticated links to other nodes.",
        },
        MetricDesc {
            name: RTT,
            kind: MetricKind::Gauge,
            help: "QUIC round-trip time estimate of the link, by peer.",
        },
        MetricDesc {
            name: DATAGRAMS_LOST,
            kind: MetricKind::Counter,
            help: "QUIC packets declared lost on the link, by peer (media is repaired by \
                   plenary_cascade_nacked_total, not by QUIC).",
        },
        MetricDesc {
            name: DATAGRAMS_DROPPED,
            kind: MetricKind::Counter,
            help: "Media datagrams dropped before sending, by peer and reason \
                   (buffer_full, too_large, closed).",
        },
        MetricDesc {
            name: AUTH_FAILURES,
            kind: MetricKind::Counter,
            help: "Incoming links refused: wrong cluster secret, or no tag in time.",
        },
        MetricDesc {
            name: BAD_FRAMES,
            kind: MetricKind::Counter,
            help: "Control frames refused, by reason (bad_json, too_large, unexpected).",
        },
        MetricDesc {
            name: STALLS,
            kind: MetricKind::Counter,
            help: "Links closed because the peer stopped draining control messages, by peer.",
        },
        MetricDesc {
            name: NACKED,
            kind: MetricKind::Counter,
            help: "Video packets missing on the link that this node asked the peer for again, \
                   by peer.",
        },
        MetricDesc {
            name: RESENT,
            kind: MetricKind::Counter,
            help: "Video packets sent again to the peer because it asked, by peer.",
        },
        MetricDesc {
            name: REPAIR_MISSED,
            kind: MetricKind::Counter,
            help: "Packets the peer asked for that this node no longer kept (or never sent on \
                   the link), by peer.",
        },
    ]);
}

/// Handles for one link, labelled with the peer's node name.
#[derive(Clone)]
pub(crate) struct LinkMetrics {
    pub tx_bytes: Counter,
    pub rx_bytes: Counter,
    pub lost: Counter,
    pub dropped_full: Counter,
    pub dropped_large: Counter,
    pub dropped_closed: Counter,
    pub rtt: Gauge,
    pub stalls: Counter,
}

impl LinkMetrics {
    pub fn new(peer: &str) -> Self {
        let peer = peer.to_owned();
        let dropped = |reason: &'static str| counter!(DATAGRAMS_DROPPED, "peer" => peer.clone(), "reason" => reason);
        LinkMetrics {
            tx_bytes: counter!(TX_BYTES, "peer" => peer.clone()),
            rx_bytes: counter!(RX_BYTES, "peer" => peer.clone()),
            lost: counter!(DATAGRAMS_LOST, "peer" => peer.clone()),
            dropped_full: dropped("buffer_full"),
            dropped_large: dropped("too_large"),
            dropped_closed: dropped("closed"),
            rtt: gauge!(RTT, "peer" => peer.clone()),
            stalls: counter!(STALLS, "peer" => peer),
        }
    }
}

pub(crate) fn links() -> Gauge {
    gauge!(LINKS)
}

pub(crate) fn auth_failure() {
    counter!(AUTH_FAILURES).increment(1);
}

pub(crate) fn bad_frame(reason: &'static str) {
    counter!(BAD_FRAMES, "reason" => reason).increment(1);
}

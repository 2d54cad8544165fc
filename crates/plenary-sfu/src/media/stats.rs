//! Counters kept by the media worker and published to `metrics` once per policy pass, so the
//! packet path touches no shared atomics.

use metrics::{counter, gauge};

#[derive(Default)]
pub(crate) struct Stats {
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub piped_packets: u64,
    pub layer_switches: u64,
    pub keyframe_requests: u64,
    pub nacks_received: u64,
    pub plis_received: u64,
    pub dropped_malformed: u64,
    pub dropped_unknown: u64,
    pub dropped_unrouted: u64,
    pub dropped_no_codec: u64,
    /// Piped packets a full cascade link queue refused.
    pub dropped_pipe: u64,
    /// Another source's datagrams read on a peer's connected socket (routed by source).
    pub strays: u64,
    /// Fast egress path: resends sent, sender reports sent, `sendmmsg` calls, datagrams
    /// the kernel refused, subscriber RTCP that failed SRTCP or parsing, packets not written.
    pub rtx_packets: u64,
    pub sender_reports: u64,
    pub egress_sendmmsg: u64,
    pub egress_dropped: u64,
    pub egress_rtcp_errors: u64,
    pub egress_errors: u64,
}

impl Stats {
    /// Adds what was counted since the last call to the exported metrics.
    /// Gauges carry the worker: each worker sets its own, and Prometheus sums them.
    pub(crate) fn publish(&mut self, worker: usize, peers: usize, tracks: usize) {
        let s = std::mem::take(self);
        let w = worker.to_string();
        gauge!("plenary_sfu_peers", "worker" => w.clone()).set(peers as f64);
        gauge!("plenary_sfu_tracks", "worker" => w).set(tracks as f64);
        counter!("plenary_sfu_piped_packets_total").increment(s.piped_packets);
        counter!("plenary_sfu_forwarded_packets_total").increment(s.forwarded_packets);
        counter!("plenary_sfu_forwarded_bytes_total").increment(s.forwarded_bytes);
        counter!("plenary_sfu_layer_switches_total").increment(s.layer_switches);
        counter!("plenary_sfu_keyframe_requests_total").increment(s.keyframe_requests);
        counter!("plenary_sfu_nacks_received_total").increment(s.nacks_received);
        counter!("plenary_sfu_subscriber_keyframe_requests_total").increment(s.plis_received);
        counter!("plenary_sfu_stray_datagrams_total").increment(s.strays);
        counter!("plenary_sfu_rtx_packets_total").increment(s.rtx_packets);
        counter!("plenary_sfu_sender_reports_total").increment(s.sender_reports);
        counter!("plenary_sfu_egress_sendmmsg_total").increment(s.egress_sendmmsg);
        counter!("plenary_sfu_egress_send_dropped_total").increment(s.egress_dropped);
        counter!("plenary_sfu_egress_rtcp_errors_total").increment(s.egress_rtcp_errors);
        counter!("plenary_sfu_egress_write_errors_total").increment(s.egress_errors);
        for (reason, n) in [
            ("malformed", s.dropped_malformed),
            ("unknown_source", s.dropped_unknown),
            ("unrouted", s.dropped_unrouted),
            ("no_common_codec", s.dropped_no_codec),
            ("cascade_link_full", s.dropped_pipe),
        ] {
            counter!("plenary_sfu_dropped_datagrams_total", "reason" => reason).increment(n);
        }
    }
}

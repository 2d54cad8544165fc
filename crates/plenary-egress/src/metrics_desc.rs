//! HELP text for the `plenary_egress_*` metrics.

use plenary_ops::metrics::{MetricDesc, MetricKind};

pub const METRICS: &[MetricDesc] = &[
    MetricDesc {
        name: "plenary_egress_output_bytes_total",
        kind: MetricKind::Counter,
        help: "Encoded bytes handed to each output's muxer (label output).",
    },
    MetricDesc {
        name: "plenary_egress_output_frames_total",
        kind: MetricKind::Counter,
        help: "H.264 frames handed to each output.",
    },
    MetricDesc {
        name: "plenary_egress_output_dropped_total",
        kind: MetricKind::Counter,
        help: "Buffers an output's queue dropped because its receiver was too slow.",
    },
    MetricDesc {
        name: "plenary_egress_output_reconnects_total",
        kind: MetricKind::Counter,
        help: "Times an output failed and was started again.",
    },
    MetricDesc {
        name: "plenary_egress_output_up",
        kind: MetricKind::Gauge,
        help: "1 while data reaches the output's receiver.",
    },
    MetricDesc {
        name: "plenary_egress_source_frames_total",
        kind: MetricKind::Counter,
        help: "Frames received from the WHEP source (label kind: audio, video, screen).",
    },
    MetricDesc {
        name: "plenary_egress_source_dropped_total",
        kind: MetricKind::Counter,
        help:
            "Source frames not used (label reason: codec, mixer_behind, no_keyframe, input_error, bad_packet).",
    },
    MetricDesc {
        name: "plenary_egress_source_repulls_total",
        kind: MetricKind::Counter,
        help: "Times the WHEP source was lost or refused and pulled again (label reason: http, connect, ice, closed, silence, webrtc).",
    },
    MetricDesc {
        name: "plenary_egress_source_up",
        kind: MetricKind::Gauge,
        help: "1 while the WHEP session is connected.",
    },
];

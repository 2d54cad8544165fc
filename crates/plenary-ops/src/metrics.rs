//! The Prometheus exporter (an HTTP listener serving `/metrics`) and helpers to describe
//! metrics so the exposition carries HELP lines.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
#[error("cannot start the Prometheus exporter on {addr}: {message}")]
pub struct ExporterError {
    pub addr: SocketAddr,
    pub message: String,
}

/// Installs the global `metrics` recorder and serves it over HTTP on `addr`.
///
/// Called inside a tokio runtime, the listener runs on that runtime; otherwise the exporter
/// crate starts its own single-threaded runtime on a background thread.
pub fn start_exporter(addr: SocketAddr) -> Result<(), ExporterError> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| ExporterError {
            addr,
            message: e.to_string(),
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric's name, kind and HELP text.
#[derive(Clone, Copy, Debug)]
pub struct MetricDesc {
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
}

/// Registers HELP text for every metric in `descs` with the installed recorder. Without a
/// recorder this does nothing, so call it after [`start_exporter`].
pub fn describe(descs: &[MetricDesc]) {
    for d in descs {
        match d.kind {
            MetricKind::Counter => metrics::describe_counter!(d.name, d.help),
            MetricKind::Gauge => metrics::describe_gauge!(d.name, d.help),
            MetricKind::Histogram => metrics::describe_histogram!(d.name, d.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    #[test]
    fn serves_described_metrics_over_http() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        let addr = probe.local_addr().expect("addr");
        drop(probe);
        start_exporter(addr).expect("exporter");
        describe(&[MetricDesc {
            name: "plenary_ops_test_total",
            kind: MetricKind::Counter,
            help: "A test counter",
        }]);
        metrics::counter!("plenary_ops_test_total").increment(7);
        // The listener starts on a background thread: retry briefly.
        let mut body = String::new();
        for _ in 0..50 {
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .expect("request");
                let _ = s.read_to_string(&mut body);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(body.contains("plenary_ops_test_total 7"), "{body}");
        assert!(
            body.contains("# HELP plenary_ops_test_total A test counter"),
            "{body}"
        );
    }
}

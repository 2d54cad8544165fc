//! The TURN ops listener (the metrics port): `GET /metrics` (Prometheus), `GET /healthz`
//! (the process answers) and `GET /readyz` (it takes new allocations: 503 before the service
//! has started and once a drain has begun), so a load balancer can take a draining node out.

use super::service::{Phase, TurnControl};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Histogram upkeep period (the exporter leaves it to whoever installs the recorder).
const UPKEEP: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics and health on {addr}: {message}")]
pub struct OpsError {
    pub addr: SocketAddr,
    pub message: String,
}

/// The running ops listener. It answers `/readyz` with 503 until [`attach`](Self::attach)
/// gives it the service to watch. Lives until the process ends.
pub struct OpsListener {
    addr: SocketAddr,
    control: Arc<OnceLock<TurnControl>>,
}

impl OpsListener {
    /// Where it listens (the port resolved when `addr` said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `/readyz` follows this service's phase from now on.
    pub fn attach(&self, control: TurnControl) {
        let _ = self.control.set(control);
    }
}

/// Binds `addr`, installs the global Prometheus recorder and serves on a thread of its own.
pub fn serve_ops(addr: SocketAddr) -> Result<OpsListener, OpsError> {
    let fail = |message: String| OpsError { addr, message };
    let listener = std::net::TcpListener::bind(addr).map_err(|e| fail(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    let local = listener.local_addr().map_err(|e| fail(e.to_string()))?;
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| fail(e.to_string()))?;
    let control = Arc::new(OnceLock::new());
    let seen = control.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    std::thread::Builder::new()
        .name("turn-ops-http".into())
        .spawn(move || runtime.block_on(accept_loop(listener, handle, seen)))
        .map_err(|e| fail(e.to_string()))?;
    Ok(OpsListener {
        addr: local,
        control,
    })
}

async fn accept_loop(
    listener: std::net::TcpListener,
    handle: PrometheusHandle,
    control: Arc<OnceLock<TurnControl>>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        tracing::error!("the metrics listener cannot join its runtime; metrics are off");
        return;
    };
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP).await;
            upkeep.run_upkeep();
        }
    });
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let handle = handle.clone();
        let control = control.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let r = answer(&req, &handle, control.get());
                async move { Ok::<_, Infallible>(r) }
            });
            let io = hyper_util::rt::TokioIo::new(tcp);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// What `phase` means to a load balancer.
fn readiness(control: Option<&TurnControl>) -> (StatusCode, &'static str) {
    match control.map(TurnControl::phase) {
        None => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        Some(Phase::Running) => (StatusCode::OK, "ready\n"),
        Some(Phase::Draining) => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        Some(Phase::Stopping) => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n"),
    }
}

fn answer<B>(
    req: &Request<B>,
    handle: &PrometheusHandle,
    control: Option<&TurnControl>,
) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", handle.render()),
        "/healthz" => reply(StatusCode::OK, TEXT, "ok\n"),
        "/readyz" => {
            let (status, body) = readiness(control);
            reply(status, TEXT, body)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "no such endpoint: /metrics, /healthz, /readyz\n",
        ),
    }
}

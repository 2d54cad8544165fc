//! The tokio drivers around the sans-IO [`Server`](crate::server::Server): the only
//! module of this crate that does IO.
//!
//! Shape (one process):
//! - N worker threads, each a current-thread runtime owning one `Server` core, one
//!   SO_REUSEPORT UDP socket per listening address, its relay sockets and its TCP/TLS
//!   connections. Worker state is `Rc<RefCell<_>>`, never borrowed across an `.await`;
//!   nothing is locked across workers on the packet path.
//! - UDP is batched: `recvmmsg` on every socket, and client-bound datagrams leave each
//!   listening socket in one `sendmmsg` per scheduler pass ([`flush`]), so the cost per
//!   datagram is the kernel's own work and little else.
//! - One control thread: TCP accept (connections handed to workers round-robin), drain
//!   supervision, the allocation gauge.
//!
//! Entry point: [`start`], which returns a [`RunningTurn`].

mod batch;
mod bind;
mod control;
#[cfg(test)]
mod e2e_tests;
mod flush;
mod metrics_export;
mod ops_http;
mod port_lock;
mod ports;
mod relay;
mod service;
mod sockets;
mod stream;
mod task;
mod tls;
mod udp;
mod worker;

pub use metrics_export::{describe_metrics, METRICS};
pub use ops_http::{serve_ops, OpsError, OpsListener};
pub use service::{
    run_until_stopped, start, BoundAddrs, Phase, RunError, RunningTurn, StartError, TurnControl,
};
pub use tls::{build_tls, select_cipher_suites, CertResolver, CipherSelection, TlsError, TlsSetup};

use plenary_ops::ratelimit::LogLimiter;

/// Kinds of network-input trouble, each with its own debug-log budget.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LogKind {
    UdpRecv,
    UdpSend,
    RelayOpen,
    RelaySend,
    StreamRead,
    StreamFraming,
    TlsHandshake,
    Accept,
    StreamIdle,
}

/// Debug lines per second per [`LogKind`], process-wide.
pub(crate) static NET_LOG: LogLimiter<9> = LogLimiter::new(10);

/// Conditions an operator must see at the default log level: the process ran out of
/// something, or did not run at all. Each has its own budget of one line per second.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WarnKind {
    /// Out of descriptors when accepting a TCP/TLS connection.
    AcceptFds,
    /// Out of descriptors when opening a relay socket.
    RelayFds,
    RelayPortsExhausted,
}

pub(crate) static WARN_LOG: LogLimiter<3> = LogLimiter::new(1);

/// `limited_warn!(WarnKind::X, "format", args...)`: a `tracing::warn!` admitted by
/// [`WARN_LOG`], noting how many lines of its kind were suppressed since the last.
macro_rules! limited_warn {
    ($kind:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $crate::net::WARN_LOG.allow($kind as usize) {
            tracing::warn!(suppressed, $($arg)+);
        }
    };
}
pub(crate) use limited_warn;

/// Whether an error means the process (EMFILE) or the system (ENFILE) is out of file
/// descriptors.
pub(crate) fn out_of_fds(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

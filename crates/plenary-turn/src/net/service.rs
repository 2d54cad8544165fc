//! Starting, controlling and stopping the TURN service: binds every socket up front (so
//! errors surface from [`start`]), starts the workers and the control thread, and runs
//! drain and shutdown.

use super::bind::{bind_with_retries, choose_relay_ips};
use super::control::{self, ControlSeed};
use super::metrics_export::describe_metrics;
use super::ports::RelayAllocator;
use super::stream::StreamSettings;
use super::tls::{build_tls, CertResolver, TlsError};
use super::worker::{self, WorkerSeed};
use crate::config::TurnConfig;
use crate::server::{ServerSettings, Shared};
use plenary_ops::signals::{SignalEvent, Signals};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};

/// Connections waiting for a worker to pick them up, per worker.
const INCOMING_QUEUE: usize = 128;

/// The service's life cycle. Moves forward only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// No new allocations, no new TCP/TLS connections; existing ones keep working until
    /// they are gone or the drain timeout passes.
    Draining,
    /// Everything stops now.
    Stopping,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    /// The port is served already: by another `plenary turn` (its claim, see `port_lock`)
    /// or by another program (the bind itself failed).
    #[error(
        "address in use: {what} port {} ({addr}) is already served by {holder}. \
         A port has one owner: stop the other server, or wait until it has exited (a draining \
         plenary turn exits when its last allocation ends or drain-timeout passes); \
         `ss -lnptu 'sport = :{}'` shows who holds it",
        addr.port(),
        addr.port()
    )]
    InUse {
        what: &'static str,
        addr: SocketAddr,
        holder: &'static str,
    },
    #[error("nothing to listen on: no usable listening address")]
    NoListener,
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
}

#[derive(Debug, thiserror::Error)]
#[error("TURN service failed: {}", .0.join("; "))]
pub struct RunError(pub Vec<String>);

/// The addresses actually bound (ports resolved when the config said 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BoundAddrs {
    /// UDP listening addresses (one per listening IP; every worker shares each).
    pub udp: Vec<SocketAddr>,
    /// TCP on the listening port (plain, or TLS detected per connection when configured).
    pub tcp: Vec<SocketAddr>,
    /// TCP on the TLS listening port (TLS, or plain detected per connection).
    pub tls: Vec<SocketAddr>,
    /// Addresses relay sockets bind to.
    pub relay_ips: Vec<IpAddr>,
}

/// A cloneable, thread-safe handle for signals and admin code.
#[derive(Clone)]
pub struct TurnControl {
    phase: Arc<watch::Sender<Phase>>,
    shared: Arc<Shared>,
    tls: Option<Arc<CertResolver>>,
}

impl TurnControl {
    /// Starts a graceful drain: new allocations are refused and new connections are no
    /// longer accepted; the service stops once no allocation is left or the drain timeout
    /// has passed. Does nothing if already draining or stopping.
    pub fn drain(&self) {
        let started = self.phase.send_if_modified(|p| {
            let go = *p == Phase::Running;
            if go {
                *p = Phase::Draining;
            }
            go
        });
        if started {
            self.shared.begin_drain();
            tracing::info!(allocations = self.shared.total_allocations(), "draining");
        }
    }

    /// Stops at once (allocations are dropped).
    pub fn shutdown(&self) {
        self.phase.send_if_modified(|p| {
            let go = *p != Phase::Stopping;
            *p = Phase::Stopping;
            go
        });
    }

    /// Re-reads the TLS certificate and key. On failure the current certificate stays and
    /// the error is logged (and returned). Connections and allocations are untouched.
    /// Without TLS configured this does nothing.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        let Some(resolver) = &self.tls else {
            return Ok(());
        };
        match resolver.reload() {
            Ok(()) => {
                tracing::info!("TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate reload failed; keeping the current one");
                Err(e)
            }
        }
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn total_allocations(&self) -> u64 {
        self.shared.total_allocations()
    }

    /// Resolves once the service is stopping (after a drain completes, a shutdown, or a
    /// worker failure). Then call [`RunningTurn::join`].
    pub async fn stopped(&self) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|p| *p == Phase::Stopping).await;
    }
}

/// The running service. Dropping it stops the service (without waiting).
pub struct RunningTurn {
    control: TurnControl,
    addrs: BoundAddrs,
    warnings: Vec<String>,
    threads: Vec<JoinHandle<()>>,
    errors: Arc<Mutex<Vec<String>>>,
    /// Claims on the listening ports, released when the service is dropped (or the process
    /// ends), after every socket is closed.
    _claims: Vec<super::port_lock::PortClaim>,
}

impl RunningTurn {
    pub fn addrs(&self) -> &BoundAddrs {
        &self.addrs
    }
    /// Start-up warnings (unsupported cipher names, skipped IPv6, guessed relay address),
    /// already logged; here for the caller's report.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
    pub fn control(&self) -> TurnControl {
        self.control.clone()
    }
    pub fn drain(&self) {
        self.control.drain()
    }
    pub fn shutdown(&self) {
        self.control.shutdown()
    }
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.control.reload_tls()
    }
    pub async fn stopped(&self) {
        self.control.stopped().await
    }

    /// Waits for every thread to finish (blocking). Returns the failures, if a worker or
    /// the control thread died. Call after [`stopped`](Self::stopped), or from a thread.
    pub fn join(mut self) -> Result<(), RunError> {
        for t in std::mem::take(&mut self.threads) {
            if t.join().is_err() {
                lock(&self.errors).push("a service thread panicked".into());
            }
        }
        let errors = std::mem::take(&mut *lock(&self.errors));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(RunError(errors))
        }
    }
}

impl Drop for RunningTurn {
    fn drop(&mut self) {
        self.control.shutdown();
    }
}

/// Runs the service until it stops, handling signals as coturn does: SIGTERM or SIGINT
/// start a drain (a second one stops at once), SIGHUP or SIGUSR2 reload the TLS
/// certificate. Then joins every thread. Call from inside a tokio runtime.
pub async fn run_until_stopped(running: RunningTurn) -> Result<(), RunError> {
    let mut signals = Signals::new()
        .map_err(|e| RunError(vec![format!("cannot install signal handlers: {e}")]))?;
    let control = running.control();
    loop {
        tokio::select! {
            _ = control.stopped() => break,
            got = signals.recv() => match got.event {
                SignalEvent::Terminate if control.phase() == Phase::Running => {
                    tracing::info!(signal = got.name, "draining; send it again to stop now");
                    control.drain();
                }
                SignalEvent::Terminate => {
                    tracing::info!(signal = got.name, "stopping now");
                    control.shutdown();
                }
                SignalEvent::Reload => {
                    tracing::info!(signal = got.name, "reloading the TLS certificate");
                    // Failure is logged by reload_tls; the old certificate stays.
                    let _ = control.reload_tls();
                }
            },
        }
    }
    tokio::task::spawn_blocking(move || running.join())
        .await
        .map_err(|e| RunError(vec![format!("join: {e}")]))?
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Binds every socket, then starts the worker threads and the control thread.
///
/// Ports 0 in `config` mean "any free port"; the bound ones are in
/// [`RunningTurn::addrs`]. `config` should have passed `TurnConfig::validate`.
pub fn start(config: &TurnConfig) -> Result<RunningTurn, StartError> {
    describe_metrics();
    let mut warnings = Vec::new();
    let workers = match config.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let tls = config.tls.as_ref().map(build_tls).transpose()?;
    if let Some(t) = &tls {
        warnings.extend(t.warnings.iter().cloned());
    }
    let bound = bind_with_retries(config, workers, &mut warnings)?;
    let relay_ips = choose_relay_ips(config, &bound.addrs.udp, &mut warnings);
    let mut addrs = bound.addrs;
    addrs.relay_ips = relay_ips.clone();

    let mut own: Vec<IpAddr> = addrs
        .udp
        .iter()
        .map(|a| a.ip())
        .chain(relay_ips.iter().copied())
        .collect();
    own.extend(config.external_ips.iter().map(|e| e.public));
    own.retain(|ip| !ip.is_unspecified());
    own.sort_unstable();
    own.dedup();
    let shared = Shared::new(ServerSettings::from_config(config, own), rand::random());

    let (phase_tx, _) = watch::channel(Phase::Running);
    let phase = Arc::new(phase_tx);
    let errors = Arc::new(Mutex::new(Vec::new()));
    let control = TurnControl {
        phase: phase.clone(),
        shared: shared.clone(),
        tls: tls.as_ref().map(|t| t.resolver.clone()),
    };
    let streams = Arc::new(StreamSettings {
        tls: tls.map(|t| t.acceptor),
        idle_unauthenticated: config.limits.stream_idle_timeout,
        idle_authenticated: config.limits.max_lifetime + Duration::from_secs(60),
        handshake_timeout: config.limits.tls_handshake_timeout,
    });
    let relays = Arc::new(RelayAllocator::new(
        &relay_ips,
        config.min_port,
        config.max_port,
    ));
    let start = Instant::now();
    let start_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    let mut running = RunningTurn {
        control,
        addrs,
        warnings,
        threads: Vec::new(),
        errors: errors.clone(),
        _claims: bound.claims,
    };
    let mut senders = Vec::with_capacity(workers);
    for (id, udp) in bound.udp.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        senders.push(tx);
        let seed = WorkerSeed {
            id,
            shared: shared.clone(),
            start,
            start_unix,
            udp,
            incoming: rx,
            relays: relays.clone(),
            streams: streams.clone(),
            phase: phase.subscribe(),
            realm: config.realm.clone(),
        };
        let t = spawn_supervised(
            format!("turn-worker-{id}"),
            phase.clone(),
            errors.clone(),
            move || worker::run(seed).map_err(|e| e.to_string()),
        )?;
        running.threads.push(t);
    }
    let seed = ControlSeed {
        listeners: bound.tcp,
        senders,
        phase: phase.clone(),
        shared,
        drain_timeout: config.drain_timeout,
        open_connections: Arc::new(AtomicUsize::new(0)),
    };
    let t = spawn_supervised("turn-control".into(), phase, errors, move || {
        control::run(seed).map_err(|e| format!("control thread: {e}"))
    })?;
    running.threads.push(t);
    for w in &running.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(
        workers,
        udp = ?running.addrs.udp,
        tcp = ?running.addrs.tcp,
        tls = ?running.addrs.tls,
        relay_ips = ?running.addrs.relay_ips,
        "TURN service started"
    );
    Ok(running)
}

/// Spawns a service thread whose failure (error or panic), or unexpected exit, stops the
/// whole service: half a server is worse than none.
fn spawn_supervised(
    name: String,
    phase: Arc<watch::Sender<Phase>>,
    errors: Arc<Mutex<Vec<String>>>,
    f: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<JoinHandle<()>, StartError> {
    let spawned = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let failure = match catch_unwind(AssertUnwindSafe(f)) {
                Ok(Ok(())) if *phase.borrow() == Phase::Stopping => None,
                Ok(Ok(())) => Some(format!("{name} exited unexpectedly")),
                Ok(Err(e)) => Some(format!("{name}: {e}")),
                Err(_) => Some(format!("{name} panicked")),
            };
            if let Some(f) = failure {
                tracing::error!("{f}; stopping the TURN service");
                lock(&errors).push(f);
                phase.send_replace(Phase::Stopping);
            }
        });
    // On failure, threads already started stop when the caller's `RunningTurn` drops.
    spawned.map_err(StartError::Thread)
}

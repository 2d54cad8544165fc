//! The thread that owns every egress child. One long-lived OS thread forks them all: Linux
//! sends `PR_SET_PDEATHSIG` when the thread that forked a child ends, so forking from a
//! tokio worker or blocking-pool thread (which come and go) would stop children at random.
//! The thread also reaps them (no zombies), restarts crashed ones after their backoff, and
//! kills those that overrun their stop. HTTP handlers talk to it over a channel (`handle`).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::child::{self, ChildSpec, LogTail};
use super::handle::{EgressView, Msg, StartError};
use super::life::{Action, Exit, Life};
use super::plan::Plan;
use super::{EgressConfig, EXITS_COUNTER, RUNNING_GAUGE};
use crate::{token, unix_now};

/// How often children are polled for exits, restarts and stop deadlines while any exist.
const TICK: Duration = Duration::from_millis(100);
/// Finished egresses still listed (with their exit) before the oldest are forgotten.
const FINISHED_KEPT: usize = 32;

struct Entry {
    id: u64,
    room: String,
    plan: Plan,
    life: Life,
    child: Option<Child>,
    /// Which run the recording name belongs to (`NAME-N.mp4` after restarts).
    record_run: u32,
    started: u64,
    log: LogTail,
    waiters: Vec<oneshot::Sender<Option<EgressView>>>,
}

impl Entry {
    fn view(&self) -> EgressView {
        EgressView {
            id: self.id,
            room: self.room.clone(),
            outputs: self.plan.outputs(self.record_run),
            pid: self.child.as_ref().map(Child::id),
            state: self.life.state(),
            started: self.started,
            restarts: self.life.restarts(),
            exit: self.life.last_exit(),
            last_line: self.log.last_line(),
        }
    }

    /// Once done: waiters get the final view and the log reader finishes.
    fn settle(&mut self) {
        if !self.life.is_done() {
            return;
        }
        self.log.finish();
        let view = self.view();
        for w in self.waiters.drain(..) {
            let _ = w.send(Some(view.clone()));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let Some(child) = &self.child else { return };
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            return;
        };
        // SAFETY: kill(2) on our own child, not yet reaped (only this thread reaps it).
        unsafe { libc::kill(pid, sig) };
    }

    fn stop(&mut self, now: Instant) {
        if self.life.stop(now) == Some(Action::Terminate) {
            tracing::info!(egress = self.id, room = %self.room, "stopping the egress");
            self.signal(libc::SIGTERM);
        }
        self.settle();
    }
}

pub(super) struct Supervisor {
    config: EgressConfig,
    /// `[egress] dir`, resolved.
    dir: Option<PathBuf>,
    /// Where each egress's log file goes.
    log_dir: PathBuf,
    /// `http://IP:PORT` of this SFU.
    from_base: String,
    /// Room tokens for children are signed with this (the first of `token-secrets`).
    secret: Option<String>,
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
    /// Set once shutting down: who to tell when the last child is reaped.
    shutdown: Option<Vec<oneshot::Sender<()>>>,
}

impl Supervisor {
    pub(super) fn new(
        config: EgressConfig,
        dir: Option<PathBuf>,
        log_dir: PathBuf,
        from_base: String,
        secret: Option<String>,
    ) -> Supervisor {
        Supervisor {
            config,
            dir,
            log_dir,
            from_base,
            secret,
            next_id: 1,
            entries: BTreeMap::new(),
            shutdown: None,
        }
    }

    pub(super) fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut connected = true;
        loop {
            let busy = self.entries.values().any(|e| !e.life.is_done());
            let msg = if !connected {
                std::thread::sleep(TICK);
                None
            } else if busy || self.shutdown.is_some() {
                match rx.recv_timeout(TICK) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        connected = false;
                        None
                    }
                }
            } else {
                // Nothing to poll: sleep until asked.
                rx.recv().map_err(|_| connected = false).ok()
            };
            if !connected && self.shutdown.is_none() {
                // The SFU dropped its handle without a shutdown.
                self.begin_shutdown(None);
            }
            if let Some(m) = msg {
                self.handle(m);
            }
            while let Ok(m) = rx.try_recv() {
                self.handle(m);
            }
            let now = Instant::now();
            self.reap(now);
            self.due(now);
            metrics::gauge!(RUNNING_GAUGE).set(self.running() as f64);
            self.forget_old();
            if self.shutdown.is_some() && self.running() == 0 {
                for done in self.shutdown.take().into_iter().flatten() {
                    let _ = done.send(());
                }
                return;
            }
        }
    }

    fn running(&self) -> usize {
        self.entries.values().filter(|e| e.child.is_some()).count()
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Start { room, plan, reply } => {
                let _ = reply.send(self.create(room, plan));
            }
            Msg::List { room, reply } => {
                let views = self
                    .entries
                    .values()
                    .filter(|e| e.room == room)
                    .map(Entry::view)
                    .collect();
                let _ = reply.send(views);
            }
            Msg::Stop { room, id, reply } => match self.entries.get_mut(&id) {
                Some(e) if e.room == room => {
                    e.waiters.push(reply);
                    e.stop(Instant::now());
                }
                _ => {
                    let _ = reply.send(None);
                }
            },
            Msg::StopAll => self.stop_all(),
            Msg::Shutdown { done } => self.begin_shutdown(done),
        }
    }

    fn stop_all(&mut self) {
        let now = Instant::now();
        for e in self.entries.values_mut() {
            e.stop(now);
        }
    }

    fn begin_shutdown(&mut self, done: Option<oneshot::Sender<()>>) {
        self.stop_all();
        self.shutdown.get_or_insert_with(Vec::new).extend(done);
    }

    /// Checks a new egress against the others and the file system, then starts it.
    fn create(&mut self, room: String, plan: Plan) -> Result<EgressView, StartError> {
        if self.shutdown.is_some() {
            return Err(StartError::ShuttingDown);
        }
        let live: Vec<&Entry> = self
            .entries
            .values()
            .filter(|e| !e.life.is_done())
            .collect();
        if live.len() >= self.config.max_running {
            return Err(StartError::Full(live.len()));
        }
        if let Some(why) = live.iter().find_map(|e| plan.clash(&e.plan)) {
            return Err(StartError::Clash(why));
        }
        if let Some(dir) = &self.dir {
            for (field, name) in [("hls", &plan.hls), ("record", &plan.record)] {
                if let Some(n) = name {
                    if !child::stays_inside(dir, &n.under(dir)) {
                        return Err(StartError::Escapes(field, n.to_string()));
                    }
                }
            }
            if let Some(r) = &plan.record {
                if r.under(dir).exists() {
                    return Err(StartError::Exists(r.to_string()));
                }
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let started = unix_now();
        std::fs::create_dir_all(&self.log_dir)
            .map_err(|e| StartError::Spawn(format!("log {}: {e}", self.log_dir.display())))?;
        let log_path = self.log_dir.join(format!("{started}-{room}-{id}.log"));
        let log = LogTail::start(log_path, id, &room).map_err(StartError::Spawn)?;
        let child = self.spawn(id, &room, &plan, 0, &log).map_err(|e| {
            let _ = std::fs::remove_file(&log.path);
            StartError::Spawn(e)
        })?;
        let entry = Entry {
            id,
            room,
            plan,
            life: Life::new(Instant::now(), self.config.max_restarts),
            child: Some(child),
            record_run: 0,
            started,
            log,
            waiters: Vec::new(),
        };
        let view = entry.view();
        tracing::info!(
            egress = id,
            room = %entry.room,
            pid = ?view.pid,
            outputs = ?view.outputs,
            log = %entry.log.path.display(),
            "egress started"
        );
        self.entries.insert(id, entry);
        Ok(view)
    }

    /// Starts run `record_run` of egress `id`, with a freshly minted room token.
    fn spawn(
        &self,
        id: u64,
        room: &str,
        plan: &Plan,
        record_run: u32,
        log: &LogTail,
    ) -> Result<Child, String> {
        let binary = self
            .config
            .binary
            .as_ref()
            .ok_or("no plenary executable configured ([egress] binary)")?;
        if let (Some(dir), Some(r)) = (&self.dir, &plan.record) {
            if let Some(parent) = r.for_run(record_run).under(dir).parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
        }
        // Fresh on every run, so a restart after an expiry (exit 3) gets in again.
        let token = self.secret.as_ref().map(|secret| {
            let claims = token::Claims {
                room: room.to_owned(),
                exp: unix_now() + self.config.token_ttl.as_secs(),
                name: Some(format!("egress-{id}")),
            };
            token::issue(secret, &claims)
        });
        let from = format!("{}/whep/{room}", self.from_base);
        child::spawn(ChildSpec {
            binary,
            args: plan.args(&from, self.dir.as_deref(), record_run),
            token,
            cwd: self.dir.as_deref(),
            log,
        })
    }

    /// Collects exited children (so none stays a zombie) and applies the restart policy.
    fn reap(&mut self, now: Instant) {
        for e in self.entries.values_mut() {
            let Some(child) = &mut e.child else { continue };
            let exit = match child.try_wait() {
                Ok(None) => continue,
                Ok(Some(status)) => match (status.code(), status.signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(sig)) => Exit::Signal(sig),
                    (None, None) => Exit::Code(-1),
                },
                Err(err) => {
                    tracing::warn!(egress = e.id, "cannot wait for the egress child: {err}");
                    Exit::Code(-1)
                }
            };
            e.child = None;
            metrics::counter!(EXITS_COUNTER, "code" => exit.label()).increment(1);
            e.life.exited(exit, now);
            let state = e.life.state();
            tracing::info!(egress = e.id, room = %e.room, ?exit, ?state, "egress child exited");
            e.settle();
        }
    }

    /// Restarts whose backoff is over, SIGKILL for children that overran their stop.
    fn due(&mut self, now: Instant) {
        let ids: Vec<u64> = self.entries.keys().copied().collect();
        for id in ids {
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            match e.life.due(now) {
                Some(Action::Kill) => {
                    tracing::warn!(egress = id, "egress did not stop in time; killing it");
                    e.signal(libc::SIGKILL);
                }
                Some(Action::Spawn) => self.restart(id, now),
                Some(Action::Terminate) | None => {}
            }
        }
    }

    fn restart(&mut self, id: u64, now: Instant) {
        let Some(e) = self.entries.get(&id) else {
            return;
        };
        // A restarted child records to a new file: the crashed run's recording is kept.
        let mut run = e.record_run + 1;
        if let (Some(dir), Some(r)) = (&self.dir, &e.plan.record) {
            while r.for_run(run).under(dir).exists() && run < e.record_run + 1000 {
                run += 1;
            }
        }
        let spawned = self.spawn(id, &e.room, &e.plan, run, &e.log);
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.record_run = run;
        match spawned {
            Ok(child) => {
                tracing::info!(
                    egress = id,
                    room = %e.room,
                    pid = child.id(),
                    restarts = e.life.restarts(),
                    "egress restarted"
                );
                e.child = Some(child);
            }
            Err(err) => {
                tracing::warn!(egress = id, room = %e.room, "cannot restart the egress: {err}");
                e.log.note(err);
                e.life.spawn_failed(now);
                e.settle();
            }
        }
    }

    /// Keeps the newest `FINISHED_KEPT` finished egresses for the listing.
    fn forget_old(&mut self) {
        let done: Vec<u64> = self
            .entries
            .values()
            .filter(|e| e.life.is_done() && e.child.is_none())
            .map(|e| e.id)
            .collect();
        for id in done.iter().take(done.len().saturating_sub(FINISHED_KEPT)) {
            self.entries.remove(id);
        }
    }
}

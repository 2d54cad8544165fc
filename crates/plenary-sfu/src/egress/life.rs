//! One egress child's life: running, stopping, restarted after a crash with backoff, or
//! done. Sans-IO: the supervisor reports spawns and exits with `now` and performs the
//! actions returned.

use std::time::{Duration, Instant};

use serde::Serialize;

/// A run at least this long was not a quick failure: the backoff starts again from 1 s.
const STABLE_RUN: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// After SIGTERM the egress writes its trailers and leaves within 20 s (its own limit);
/// beyond this it gets SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(25);

/// `plenary egress` exit codes that a restart cannot fix (`plenary_egress::exit`).
const EXIT_USAGE: i32 = 2;
const EXIT_MISSING: i32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum State {
    /// A child is running.
    Running,
    /// The child crashed; another starts at the backoff's end.
    Restarting,
    /// Asked to stop: SIGTERM sent, waiting for the child to leave.
    Stopping,
    /// Stopped on request (DELETE, drain, shutdown) or by a signal from outside (exit 0).
    Stopped,
    /// Not started again: a usage error, GStreamer missing, or too many quick failures.
    Failed,
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The `code` label of the exits counter.
    pub fn label(self) -> String {
        match self {
            Exit::Code(c) => c.to_string(),
            Exit::Signal(_) => "signal".into(),
        }
    }
}

/// What the supervisor must do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start the next run (a new child with a fresh token).
    Spawn,
    /// SIGTERM the child (it writes its trailers).
    Terminate,
    /// SIGKILL the child: it overran its stop grace.
    Kill,
}

#[derive(Debug)]
pub(crate) struct Life {
    state: State,
    max_restarts: u32,
    /// Runs started after the first.
    restarts: u32,
    /// Failures in a row, each after a run shorter than `STABLE_RUN`.
    quick_failures: u32,
    run_started: Instant,
    restart_at: Option<Instant>,
    kill_at: Option<Instant>,
    last_exit: Option<Exit>,
}

impl Life {
    /// The first child was spawned at `now`.
    pub fn new(now: Instant, max_restarts: u32) -> Life {
        Life {
            state: State::Running,
            max_restarts,
            restarts: 0,
            quick_failures: 0,
            run_started: now,
            restart_at: None,
            kill_at: None,
            last_exit: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    pub fn last_exit(&self) -> Option<Exit> {
        self.last_exit
    }

    /// Stopped or failed: no child now and none to come.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Stopped | State::Failed)
    }

    /// The child exited with `exit` at `now`.
    pub fn exited(&mut self, exit: Exit, now: Instant) {
        self.last_exit = Some(exit);
        self.kill_at = None;
        self.state = match (self.state, exit) {
            (State::Stopping, _) | (_, Exit::Code(0)) => State::Stopped,
            (_, Exit::Code(EXIT_USAGE | EXIT_MISSING)) => State::Failed,
            // A crash, a media pipeline failure, or a refused token (a new one is minted).
            _ => self.failed(now),
        };
    }

    /// A restart could not even spawn (the executable vanished, fork failed).
    pub fn spawn_failed(&mut self, now: Instant) {
        self.run_started = now;
        self.state = self.failed(now);
    }

    fn failed(&mut self, now: Instant) -> State {
        if now.saturating_duration_since(self.run_started) >= STABLE_RUN {
            self.quick_failures = 0;
        }
        self.quick_failures += 1;
        if self.quick_failures > self.max_restarts {
            return State::Failed;
        }
        let doubling = FIRST_BACKOFF.saturating_mul(1 << (self.quick_failures - 1).min(8));
        self.restart_at = Some(now + doubling.min(MAX_BACKOFF));
        State::Restarting
    }

    /// A stop was asked for (DELETE, drain, shutdown).
    pub fn stop(&mut self, now: Instant) -> Option<Action> {
        match self.state {
            State::Running => {
                self.state = State::Stopping;
                self.kill_at = Some(now + STOP_GRACE);
                Some(Action::Terminate)
            }
            State::Restarting => {
                self.state = State::Stopped;
                self.restart_at = None;
                None
            }
            State::Stopping | State::Stopped | State::Failed => None,
        }
    }

    /// What is due at `now`: a restart after its backoff, or SIGKILL after the stop grace.
    pub fn due(&mut self, now: Instant) -> Option<Action> {
        match self.state {
            State::Restarting if self.restart_at.is_some_and(|t| now >= t) => {
                self.restart_at = None;
                self.state = State::Running;
                self.restarts += 1;
                self.run_started = now;
                Some(Action::Spawn)
            }
            State::Stopping if self.kill_at.is_some_and(|t| now >= t) => {
                self.kill_at = None;
                Some(Action::Kill)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_crash_is_restarted_with_doubling_backoff_until_it_gives_up() {
        let t0 = Instant::now();
        let mut l = Life::new(t0, 3);
        let mut now = t0 + secs(5);
        let mut waits = Vec::new();
        for _ in 0..3 {
            l.exited(Exit::Signal(11), now);
            assert_eq!(l.state(), State::Restarting);
            let mut waited = 0;
            while l.due(now).is_none() {
                now += secs(1);
                waited += 1;
                assert!(waited < 60, "no restart");
            }
            assert_eq!(l.state(), State::Running);
            waits.push(waited);
            now += secs(2);
        }
        assert_eq!(waits, [1, 2, 4]);
        assert_eq!(l.restarts(), 3);
        l.exited(Exit::Code(1), now);
        assert_eq!(l.state(), State::Failed, "a fourth quick failure ends it");
        assert!(l.is_done());
        assert_eq!(l.due(now + secs(100)), None);
    }

    #[test]
    fn a_long_run_resets_the_backoff() {
        let t0 = Instant::now();
        let mut l = Life::new(t0, 1);
        l.exited(Exit::Code(1), t0 + secs(1));
        assert_eq!(l.due(t0 + secs(2)), Some(Action::Spawn));
        // This run lasts two minutes: its crash is the first of a new series.
        l.exited(Exit::Code(3), t0 + secs(122));
        assert_eq!(l.state(), State::Restarting);
        assert_eq!(l.due(t0 + secs(123)), Some(Action::Spawn));
        assert_eq!(l.restarts(), 2);
    }

    #[test]
    fn usage_errors_missing_gstreamer_and_exit_0_are_final() {
        let t0 = Instant::now();
        for (exit, state) in [
            (Exit::Code(2), State::Failed),
            (Exit::Code(4), State::Failed),
            (Exit::Code(0), State::Stopped),
        ] {
            let mut l = Life::new(t0, 5);
            l.exited(exit, t0 + secs(1));
            assert_eq!(l.state(), state, "{exit:?}");
            assert_eq!(l.last_exit(), Some(exit));
        }
    }

    #[test]
    fn a_stop_terminates_then_kills_after_the_grace() {
        let t0 = Instant::now();
        let mut l = Life::new(t0, 5);
        assert_eq!(l.stop(t0), Some(Action::Terminate));
        assert_eq!(l.stop(t0), None, "asked once");
        assert_eq!(l.due(t0 + secs(1)), None);
        assert_eq!(l.due(t0 + STOP_GRACE), Some(Action::Kill));
        assert_eq!(l.due(t0 + STOP_GRACE + secs(1)), None, "killed once");
        l.exited(Exit::Signal(9), t0 + STOP_GRACE);
        assert_eq!(l.state(), State::Stopped, "a stop that needed SIGKILL");
    }

    #[test]
    fn a_stop_while_waiting_to_restart_ends_at_once() {
        let t0 = Instant::now();
        let mut l = Life::new(t0, 5);
        l.exited(Exit::Code(1), t0);
        assert_eq!(l.stop(t0), None, "no child to signal");
        assert_eq!(l.state(), State::Stopped);
        assert_eq!(l.due(t0 + secs(60)), None, "and no restart later");
    }

    #[test]
    fn a_restart_that_cannot_spawn_counts_as_a_failure() {
        let t0 = Instant::now();
        let mut l = Life::new(t0, 1);
        l.exited(Exit::Code(1), t0);
        assert_eq!(l.due(t0 + secs(1)), Some(Action::Spawn));
        l.spawn_failed(t0 + secs(1));
        assert_eq!(l.state(), State::Failed);
    }
}

//! Unix signals folded into the two things a server does with them.

use tokio::signal::unix::{signal, Signal, SignalKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGTERM or SIGINT: drain, then stop (a second one should stop at once).
    Terminate,
    /// SIGHUP or SIGUSR2: reload what can be reloaded (TLS certificates), keep running.
    /// coturn reloads on SIGUSR2, systemd's `reload` sends SIGHUP: both work.
    Reload,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub event: SignalEvent,
    /// "SIGTERM", "SIGINT", "SIGHUP" or "SIGUSR2", for the log line.
    pub name: &'static str,
}

/// Listens for SIGTERM, SIGINT, SIGHUP and SIGUSR2. Must be created inside a tokio runtime.
/// Once created, these signals no longer have their default action (termination) for the
/// whole process.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr2: Signal,
}

impl Signals {
    pub fn new() -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// Waits for the next signal. Cancel-safe (can sit in a `select!`).
    pub async fn recv(&mut self) -> Received {
        let (event, name) = tokio::select! {
            _ = self.term.recv() => (SignalEvent::Terminate, "SIGTERM"),
            _ = self.int.recv() => (SignalEvent::Terminate, "SIGINT"),
            _ = self.hup.recv() => (SignalEvent::Reload, "SIGHUP"),
            _ = self.usr2.recv() => (SignalEvent::Reload, "SIGUSR2"),
        };
        Received { event, name }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reload_signal_is_reported() {
        let mut s = Signals::new().expect("signal handlers");
        // std has no raise(): signal ourselves through kill(1).
        let pid = std::process::id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-USR2", &pid])
            .status()
            .expect("run kill");
        assert!(status.success());
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), s.recv())
            .await
            .expect("signal within 5 s");
        assert_eq!(got.event, SignalEvent::Reload);
        assert_eq!(got.name, "SIGUSR2");
    }
}

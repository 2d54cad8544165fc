//! Keeps the WHEP source pulled: one session after another, with backoff between them,
//! until stopped or refused for good (a bad token).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::source::{run_session, SourceError, SourceEvent, SourceSpec};

/// A session that stayed connected this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);

pub fn spawn(
    spec: SourceSpec,
    tx: SyncSender<SourceEvent>,
    stop: Arc<AtomicBool>,
    refused: SyncSender<String>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("egress-whep".into())
        .spawn(move || {
            let mut backoff =
                Backoff::new(Duration::from_millis(500), Duration::from_secs(10), STABLE);
            let mut attempt = 0u64;
            while !stop.load(Ordering::Relaxed) {
                attempt += 1;
                let started = Instant::now();
                let result = run_session(&spec, &tx, &stop);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let reason = match result {
                    Ok(()) => break,
                    Err(SourceError::Whep(e)) if !e.is_retryable() => {
                        let _ = refused.send(e.to_string());
                        break;
                    }
                    Err(e) => e.to_string(),
                };
                // A session counts as having been up if it lasted; a refusal at POST did not.
                if started.elapsed() > Duration::from_secs(5) {
                    backoff.up(started);
                }
                let delay = backoff.failed(Instant::now());
                metrics::counter!("plenary_egress_source_reconnects_total").increment(1);
                let _ = tx.try_send(SourceEvent::Lost(format!(
                    "{reason}; pulling again in {:.1}s",
                    delay.as_secs_f64()
                )));
                tracing::warn!(attempt, %reason, retry_in = ?delay, "WHEP source lost");
                let until = Instant::now() + delay;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
}

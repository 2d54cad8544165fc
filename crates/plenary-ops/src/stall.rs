//! Notices when the whole process did not run for a while (SIGSTOP, a frozen VM, a starved
//! CPU): a timer that fires much later than due. Clients got no answers meanwhile, so each
//! stall is counted and logged, one warning a second at most.

use std::future::Future;
use std::time::Duration;

use crate::ratelimit::LogLimiter;

/// How often the watch wakes.
const TICK: Duration = Duration::from_millis(250);
/// Waking this much later than due counts as a stall.
const THRESHOLD: Duration = Duration::from_secs(1);

static WARN_LOG: LogLimiter<1> = LogLimiter::new(1);

/// Counts stalls in the counter `counter` until `stop` completes.
pub async fn watch_stalls(counter: &'static str, stop: impl Future<Output = ()>) {
    let stalls = metrics::counter!(counter);
    tokio::pin!(stop);
    let mut due = tokio::time::Instant::now() + TICK;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = &mut stop => return,
        }
        let now = tokio::time::Instant::now();
        let late = now.saturating_duration_since(due);
        if late >= THRESHOLD {
            stalls.increment(1);
            if let Some(suppressed) = WARN_LOG.allow(0) {
                tracing::warn!(
                    suppressed,
                    stalled_ms = late.as_millis() as u64,
                    "the process did not run for {:.1} s (stopped by SIGSTOP, a frozen VM, or \
                     starved of CPU); clients got no answers meanwhile",
                    late.as_secs_f64()
                );
            }
        }
        due = now + TICK;
    }
}

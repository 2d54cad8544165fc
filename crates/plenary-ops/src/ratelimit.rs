//! Rate-limited logging for errors caused by network input.
//!
//! A flood of malformed packets must not turn into a flood of log lines (disk, CPU, and a
//! log that hides everything else). [`LogLimiter`] admits at most `per_sec` messages per
//! second per kind, counts what it suppressed, and never allocates, so it can sit on a
//! packet path. [`limited_debug!`](crate::limited_debug) checks the log level first, so a
//! server not logging at debug pays one branch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// `N` independent kinds (index them with a small enum cast to `usize`), each admitting
/// `per_sec` messages per one-second window. Shareable across threads (atomics only).
pub struct LogLimiter<const N: usize> {
    per_sec: u32,
    /// Per kind: window second (high 32 bits) and messages admitted in it (low 32 bits).
    windows: [AtomicU64; N],
    /// Per kind: messages suppressed since the last admitted one.
    suppressed: [AtomicU64; N],
}

impl<const N: usize> LogLimiter<N> {
    pub const fn new(per_sec: u32) -> Self {
        LogLimiter {
            per_sec,
            windows: [const { AtomicU64::new(0) }; N],
            suppressed: [const { AtomicU64::new(0) }; N],
        }
    }

    /// Whether a message of `kind` may be logged now. `Some(n)`: yes, and `n` messages of
    /// this kind were suppressed since the last one admitted (worth mentioning in the
    /// line). `None`: suppressed. Out-of-range kinds are always suppressed.
    pub fn allow(&self, kind: usize) -> Option<u64> {
        self.allow_at(kind, now_secs())
    }

    /// [`allow`](Self::allow) with an explicit clock, for tests.
    pub fn allow_at(&self, kind: usize, now_secs: u32) -> Option<u64> {
        let (Some(window), Some(suppressed)) = (self.windows.get(kind), self.suppressed.get(kind))
        else {
            return None;
        };
        let mut cur = window.load(Ordering::Relaxed);
        loop {
            let (sec, count) = ((cur >> 32) as u32, cur as u32);
            let next = if sec != now_secs {
                (u64::from(now_secs) << 32) | 1
            } else if count < self.per_sec {
                cur + 1
            } else {
                suppressed.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            match window.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(suppressed.swap(0, Ordering::Relaxed)),
                Err(actual) => cur = actual,
            }
        }
    }
}

/// Seconds since the first call in this process (a coarse monotonic clock; wraps after
/// 136 years).
fn now_secs() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs() as u32
}

/// `limited_debug!(LIMITER, kind, "format", args...)`: a `tracing::debug!` that is rate
/// limited per kind and notes how many were suppressed.
#[macro_export]
macro_rules! limited_debug {
    ($limiter:expr, $kind:expr, $($arg:tt)+) => {
        if $crate::__tracing::enabled!($crate::__tracing::Level::DEBUG) {
            if let Some(suppressed) = $limiter.allow($kind as usize) {
                $crate::__tracing::debug!(suppressed, $($arg)+);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_per_second_per_kind() {
        let l = LogLimiter::<2>::new(3);
        assert_eq!(l.allow_at(0, 10), Some(0));
        assert_eq!(l.allow_at(0, 10), Some(0));
        assert_eq!(l.allow_at(0, 10), Some(0));
        assert_eq!(l.allow_at(0, 10), None);
        assert_eq!(l.allow_at(0, 10), None);
        // Other kinds have their own budget.
        assert_eq!(l.allow_at(1, 10), Some(0));
        // Next second: admitted again, reporting the two suppressed.
        assert_eq!(l.allow_at(0, 11), Some(2));
        assert_eq!(l.allow_at(0, 11), Some(0));
    }

    #[test]
    fn out_of_range_kind_is_suppressed() {
        let l = LogLimiter::<1>::new(10);
        assert_eq!(l.allow_at(5, 0), None);
    }

    #[test]
    fn zero_budget_never_admits_within_a_second_after_the_first() {
        // per_sec = 0 still admits the first message of a new window (it resets the
        // window); document it by test so nobody relies on 0 meaning "off".
        let l = LogLimiter::<1>::new(0);
        assert_eq!(l.allow_at(0, 1), Some(0));
        assert_eq!(l.allow_at(0, 1), None);
    }

    static SHARED: LogLimiter<1> = LogLimiter::new(5);

    #[test]
    fn usable_as_a_static_from_many_threads() {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..100).filter(|_| SHARED.allow_at(0, 7).is_some()).count())
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn macro_compiles_and_runs() {
        let l = LogLimiter::<1>::new(1);
        crate::limited_debug!(l, 0, peer = "1.2.3.4:5", "malformed input");
    }
}

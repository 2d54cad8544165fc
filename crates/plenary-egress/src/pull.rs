//! Keeps the WHEP source pulled: one session after another, with backoff between them,
//! until stopped or refused for good (a bad token at `--from`).
//!
//! Where the next session is pulled from (`Rotation`, sans-IO): after a loss, the room's
//! other nodes as the last answer listed them (`Link: rel="alternate"`), in order, then
//! `--from` itself; and round again while none answers. A node that drains answers with a
//! 307 to another one, which `whep::post_offer` follows.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use url::Url;

use crate::backoff::Backoff;
use crate::source::{run_session, SourceError, SourceEvent, SourceSpec};
use crate::whep;

/// A session that stayed connected this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);
/// A session this long counts as having been up (a refusal at POST does not).
const WAS_UP: Duration = Duration::from_secs(5);

/// The order in which the source is pulled. Sans-IO.
#[derive(Clone, Debug)]
pub struct Rotation {
    original: Url,
    /// The other nodes of the room, from the last answer.
    alternates: Vec<Url>,
    /// What is left to try in this round.
    queue: VecDeque<Url>,
}

impl Rotation {
    pub fn new(original: Url) -> Rotation {
        Rotation {
            original,
            alternates: Vec::new(),
            queue: VecDeque::new(),
        }
    }

    /// Where to pull from next: the rest of this round, or a new round (the alternates,
    /// then the original URL).
    pub fn next(&mut self) -> Url {
        if self.queue.is_empty() {
            self.queue.extend(self.alternates.iter().cloned());
            if !self.queue.contains(&self.original) {
                self.queue.push_back(self.original.clone());
            }
        }
        self.queue
            .pop_front()
            .unwrap_or_else(|| self.original.clone())
    }

    /// A node answered: its list of the room's other nodes replaces the last one, and the
    /// next loss starts a new round.
    pub fn answered(&mut self, alternates: Vec<Url>) {
        self.alternates = alternates;
        self.queue.clear();
    }

    /// Whether `url` is `--from` (a refusal there is final; at an alternate it is not).
    pub fn is_original(&self, url: &Url) -> bool {
        *url == self.original
    }
}

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
            let mut rotation = Rotation::new(spec.url.clone());
            let mut attempt = 0u64;
            while !stop.load(Ordering::Relaxed) {
                attempt += 1;
                let url = rotation.next();
                let _ = tx.try_send(SourceEvent::Pulling {
                    node: whep::display(&url),
                });
                let started = Instant::now();
                let mut on_answer = |s: &whep::Session| {
                    rotation.answered(s.alternates.clone());
                    let _ = tx.try_send(SourceEvent::Answered {
                        node: whep::display(&s.url),
                        alternates: s.alternates.len(),
                    });
                };
                let result = run_session(&spec, &url, &tx, &stop, &mut on_answer);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let error = match result {
                    Ok(()) => break,
                    Err(e) => e,
                };
                if let SourceError::Whep(e) = &error {
                    if !e.is_retryable() && rotation.is_original(&url) {
                        let _ = refused.send(e.to_string());
                        break;
                    }
                }
                let reason = error.reason();
                if started.elapsed() > WAS_UP {
                    backoff.up(started);
                }
                let delay = backoff.failed(Instant::now());
                metrics::counter!("plenary_egress_source_repulls_total", "reason" => reason.as_str())
                    .increment(1);
                let _ = tx.try_send(SourceEvent::Lost {
                    reason,
                    detail: error.to_string(),
                    retry_in: delay,
                });
                tracing::warn!(
                    attempt,
                    from = %whep::display(&url),
                    reason = reason.as_str(),
                    error = %error,
                    retry_in = ?delay,
                    "WHEP source lost"
                );
                let until = Instant::now() + delay;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[test]
    fn without_alternates_the_original_again_and_again() {
        let mut r = Rotation::new(url("http://b/whep/r?screen=1"));
        for _ in 0..3 {
            assert_eq!(r.next().as_str(), "http://b/whep/r?screen=1");
        }
    }

    #[test]
    fn after_a_loss_the_alternates_in_order_then_the_original_then_round_again() {
        let b = url("http://b/whep/r?screen=1");
        let mut r = Rotation::new(b.clone());
        assert_eq!(r.next(), b);
        // b answers: the room is also on a and c.
        r.answered(vec![
            url("http://a/whep/r?screen=1"),
            url("http://c/whep/r?screen=1"),
        ]);
        // b is lost; a and c do not answer either.
        let tried: Vec<String> = (0..5).map(|_| r.next().to_string()).collect();
        assert_eq!(
            tried,
            [
                "http://a/whep/r?screen=1",
                "http://c/whep/r?screen=1",
                "http://b/whep/r?screen=1",
                "http://a/whep/r?screen=1",
                "http://c/whep/r?screen=1",
            ]
        );
        assert!(r.is_original(&b) && !r.is_original(&url("http://a/whep/r?screen=1")));
    }

    #[test]
    fn a_new_answer_starts_a_new_round_from_its_own_list() {
        let b = url("http://b/whep/r");
        let mut r = Rotation::new(b.clone());
        r.next();
        r.answered(vec![url("http://a/whep/r"), url("http://c/whep/r")]);
        assert_eq!(r.next().as_str(), "http://a/whep/r");
        // a answers, listing b and c; it is lost later.
        r.answered(vec![url("http://b/whep/r"), url("http://c/whep/r")]);
        let tried: Vec<String> = (0..3).map(|_| r.next().to_string()).collect();
        // The original is not tried twice in one round.
        assert_eq!(
            tried,
            ["http://b/whep/r", "http://c/whep/r", "http://b/whep/r"]
        );
    }
}

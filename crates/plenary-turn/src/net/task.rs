//! Spawning worker-local tasks so that a panic in one brings the worker down instead of
//! silently killing one socket's loop (tokio would otherwise swallow it into a JoinHandle
//! nobody reads, and the worker would go on half-alive).

use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Default)]
pub(crate) struct Supervisor {
    crashed: Cell<bool>,
    notify: Notify,
}

impl Supervisor {
    /// `spawn_local` with the panic caught and reported to [`crashed`](Self::crashed).
    pub(crate) fn spawn<F>(self: &Rc<Self>, fut: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + 'static,
    {
        tokio::task::spawn_local(Guarded {
            fut: Box::pin(fut),
            sup: self.clone(),
        })
    }

    /// Resolves once any supervised task has panicked.
    pub(crate) async fn crashed(&self) {
        loop {
            let wait = self.notify.notified();
            if self.crashed.get() {
                return;
            }
            wait.await;
        }
    }

    pub(crate) fn has_crashed(&self) -> bool {
        self.crashed.get()
    }
}

struct Guarded<F> {
    fut: Pin<Box<F>>,
    sup: Rc<Supervisor>,
}

impl<F: Future<Output = ()>> Future for Guarded<F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match catch_unwind(AssertUnwindSafe(|| this.fut.as_mut().poll(cx))) {
            Ok(p) => p,
            Err(_) => {
                // The default panic hook already printed the message.
                this.sup.crashed.set(true);
                this.sup.notify.notify_waiters();
                Poll::Ready(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_in_a_task_is_reported() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let sup = Rc::new(Supervisor::default());
            let ok = sup.spawn(async {});
            ok.await.expect("ran");
            assert!(!sup.has_crashed());
            sup.spawn(async {
                tokio::task::yield_now().await;
                panic!("test panic (expected)");
            });
            tokio::time::timeout(std::time::Duration::from_secs(5), sup.crashed())
                .await
                .expect("crash reported");
            assert!(sup.has_crashed());
        });
    }
}

//! The per-worker flush of client-bound UDP datagrams. Relay sockets' readers queue what
//! they receive into the listening sockets' [`SendBatch`](super::batch::SendBatch)es;
//! one task sends each batch with a single `sendmmsg` once the readers woken in the same
//! scheduler pass have run (tasks run in wake order, and this one is woken by the first
//! datagram queued, so it runs after the readers already scheduled).

use super::worker::WorkerRef;
use std::cell::Cell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// A single-threaded "batch became non-empty" flag with the flush task's waker.
#[derive(Default)]
pub(crate) struct FlushSignal {
    raised: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl FlushSignal {
    pub(crate) fn raise(&self) {
        if !self.raised.replace(true) {
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    async fn wait(&self) {
        poll_fn(|cx| {
            if self.raised.replace(false) {
                return Poll::Ready(());
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

pub(crate) async fn flush_loop(worker: WorkerRef, signal: Rc<FlushSignal>) {
    loop {
        signal.wait().await;
        worker.borrow_mut().flush_udp();
    }
}

//! A global allocator for tests that prove a hot path allocates nothing per packet.
//!
//! A test binary installs it with
//! `#[global_allocator] static A: plenary_testalloc::Counting = plenary_testalloc::Counting;`
//! and wraps the loop under test in [`allocations_in`]. Counting is armed per thread, so
//! other tests running beside it in the same binary are not counted. Allocations made by C
//! code (aws-lc) bypass Rust's allocator and are not seen.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards to the system allocator, counting allocations on a thread while it is armed.
pub struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the bookkeeping touches only const-initialised
// thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A growing Vec or VecDeque is an allocation on the hot path too.
        if ARMED.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        System.realloc(ptr, layout, new_size)
    }
}

/// Allocations (and reallocations) made on this thread while `f` runs. Only meaningful in
/// a binary whose global allocator is [`Counting`]; elsewhere it returns 0.
pub fn allocations_in(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    COUNT.with(Cell::get)
}

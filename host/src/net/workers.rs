//! Which serving worker the current thread is. The binary serves with one
//! single-threaded runtime per core (see `server::serve_on`); state that is
//! cheaper per worker than shared, such as upstream connection pools, keeps
//! one copy per worker so a connection is only ever used by the thread
//! that opened it.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Set the number of workers, before any configuration is loaded.
pub fn set_count(n: usize) {
    COUNT.store(n.max(1), Ordering::Relaxed);
}

/// The number of workers (1 unless the binary set it).
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// Mark the current thread as worker `i`.
pub fn enter(i: usize) {
    INDEX.with(|c| c.set(i));
}

/// The current thread's worker (0 on threads that are not workers).
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// One value per worker; [`PerWorker::get`] gives the current thread's.
pub struct PerWorker<T>(Box<[T]>);

impl<T> PerWorker<T> {
    pub fn new(mut make: impl FnMut() -> T) -> Self {
        PerWorker((0..count()).map(|_| make()).collect())
    }

    pub fn get(&self) -> &T {
        &self.0[index() % self.0.len()]
    }
}

/// Run forever on a worker runtime, waking once a second, so that its
/// timer driver always has a deadline within the next second.
///
/// Why: tokio's timer wakes its own thread through an eventfd whenever a
/// timer is registered that is due before the driver's next wake-up, and
/// a driver that parked with no timers at all counts every new timer as
/// earlier. Every request registers some (hyper's header-read timeout,
/// the upstream response timeout), so under load about one request in
/// four paid a `write` to the eventfd and an extra trip through
/// `epoll_wait`. With this tick the driver's next wake is never more than
/// a second away, and those timers (seconds long) need no wake-up.
pub async fn keep_timer_near() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Transparent huge pages off for this process (the binary calls this
/// first thing): the allocator asks for them on its arenas, and the 2 MiB
/// pages the kernel backs on first touch made ~50 MB of resident memory
/// that a gateway at rest never uses. Policy memories never used them.
pub fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes plain integers and changes
    // only this process's memory policy; failure leaves it as it was.
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_gets_its_own() {
        set_count(3);
        let n = std::sync::atomic::AtomicUsize::new(0);
        let values = PerWorker::new(|| n.fetch_add(1, Ordering::Relaxed));
        assert_eq!(
            *values.get(),
            0,
            "a thread that is no worker gets the first"
        );
        std::thread::scope(|s| {
            for i in 0..3 {
                let values = &values;
                s.spawn(move || {
                    enter(i);
                    assert_eq!(*values.get(), i);
                });
            }
        });
        set_count(1);
    }
}

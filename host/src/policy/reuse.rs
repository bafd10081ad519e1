//! Instances of a step kept by each worker thread and reused by its next
//! requests: warm ones under worker isolation, and, under request isolation
//! (the default), ones reset to the step's snapshot after each request
//! ([`super::reset`]), instead of a fresh instance from the snapshot for
//! every request.
//!
//! Each worker thread has a pool per step: at most [`PER_WORKER`] idle
//! instances, and [`MAX_IDLE`] across the runtime. The pools are sized for
//! the instances a worker has in use at once under load, not for one
//! request: a step with a response phase holds its instance across the
//! upstream call, so a worker with 32 requests in flight has about 32 of
//! them out. With 4 per pool (as first built), measured at 64 connections
//! on 2 workers, about 69% of the calls of each such step still got a
//! fresh instance (and the instance they returned was dropped). An instance goes
//! back to its pool ([`Runtime::release`](super::Runtime::release)) only
//! after the last phase it ran for a request returned normally and its
//! output passed the gateway's checks; a caller that drops an instance
//! instead discards it, which is what every failure path does (a trap, a
//! deadline, a memory-cap hit, a host error, an invalid output). On release
//! an instance is discarded too when it hit its memory cap, when its memory
//! grew past the size it had after its first request, or after `max-uses`
//! requests; a pooled instance unused for `idle` is discarded instead of
//! served, and a sweeper thread drops it within a second or so even when
//! no request comes.
//!
//! Pooled instances count toward `max-instances` (each keeps its slot); a
//! request that would be refused as busy first evicts an idle one
//! (`Reuse::evict_one`). [`Runtime::reuse_counts`](super::Runtime::reuse_counts)
//! says how many calls each path served, and each call logs its path at
//! `trace`.

use super::runtime::StepInstance;
use super::{RequestScope, Step};
pub use crate::manifest::Isolation;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Most idle instances of one step kept by one worker thread.
pub const PER_WORKER: usize = 64;
/// The same under `request` isolation (instances reset to the snapshot).
/// A reset writes an instance's whole memory, so each one parked keeps all
/// of it resident: with 64 per worker the 5-step chain's RSS after load
/// was 147 MB against 111 MB with fresh instances (`tests/bench/run`),
/// nearly all of it instances of the step with both phases (cache), which
/// holds one per request in flight across the upstream call and gained
/// nothing from the reset (`tests/bench/steps`: +56.2 against +57.6 µs).
/// Steps with one phase have about one instance out per worker.
pub const PER_WORKER_RESET: usize = 4;
/// Most idle instances kept across the runtime (each keeps its slot of
/// `max-instances`; a request that would be refused as busy evicts one).
pub const MAX_IDLE: usize = 256;
/// Shards of the pools (by worker thread), so threads rarely share a lock.
const SHARDS: usize = 16;
/// How often idle instances of every worker are looked at (each thread's
/// own are looked at whenever it takes or returns one).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Default `max-uses`: requests one instance serves before it is discarded.
pub const DEFAULT_MAX_USES: u64 = 10_000;
/// Largest `max-uses`.
pub const MAX_MAX_USES: u64 = 1_000_000_000;
/// Longest `idle`.
pub const MAX_IDLE_TIME: Duration = Duration::from_secs(3600);

/// How a step's instances may be reused; shared by the step's clones, and
/// the identity of its pools (a reloaded step gets new ones).
#[derive(Debug)]
pub struct StepReuse {
    id: u64,
    pub isolation: Isolation,
    pub max_uses: u64,
    pub idle: Duration,
}

impl StepReuse {
    pub fn new(isolation: Isolation, max_uses: u64, idle: Duration) -> Arc<StepReuse> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Arc::new(StepReuse {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            isolation,
            max_uses,
            idle,
        })
    }

    fn worker(&self) -> bool {
        self.isolation == Isolation::Worker
    }

    /// Most idle instances one worker keeps.
    fn per_worker(&self) -> usize {
        if self.worker() {
            PER_WORKER
        } else {
            PER_WORKER_RESET
        }
    }
}

impl Default for StepReuse {
    fn default() -> Self {
        Arc::into_inner(StepReuse::new(
            Isolation::Request,
            DEFAULT_MAX_USES,
            Duration::from_secs(60),
        ))
        .expect("just made")
    }
}

/// `max-uses` and `idle` in range, or the message (which starts with the
/// key it is about, for the caller to prefix with where it is).
pub fn check_reuse_limits(max_uses: u64, idle: Duration) -> Result<(), (&'static str, String)> {
    if !(1..=MAX_MAX_USES).contains(&max_uses) {
        return Err((
            "max-uses",
            format!("max-uses = {max_uses} must be between 1 and {MAX_MAX_USES}"),
        ));
    }
    if idle < Duration::from_millis(1) || idle > MAX_IDLE_TIME {
        return Err((
            "idle",
            format!("idle = {idle:?} must be between 1ms and 1h"),
        ));
    }
    Ok(())
}

/// What an instance has done for reuse: requests served and the memory it
/// had after its first.
#[derive(Debug, Default)]
pub(super) struct Uses {
    count: u64,
    settled: Option<usize>,
}

/// How many requests each path served, and how many instances were
/// discarded instead of pooled or served (for tests and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReuseCounts {
    /// A fresh instance (from the snapshot, or configured for the request).
    pub fresh: u64,
    /// An instance from the worker's pool: kept warm (`worker`
    /// isolation) or reset to its snapshot (`request`).
    pub warm: u64,
    /// Instances discarded after a request returned them: memory cap or
    /// growth, `max-uses`, `idle`, no room in the pool, or (`request`) no
    /// reset.
    pub discarded: u64,
}

/// The runtime's pools of warm instances and their counts.
pub(super) struct Reuse {
    pools: Arc<Pools<StepInstance>>,
    /// By thread shard, so that workers counting every step of every
    /// request do not share a cache line.
    counts: Arc<[Counters]>,
    /// The sweeper thread, started with the first pooled instance.
    sweeper: std::sync::Once,
}

#[derive(Default)]
#[repr(align(128))]
struct Counters {
    fresh: AtomicU64,
    warm: AtomicU64,
    discarded: AtomicU64,
}

impl Default for Reuse {
    fn default() -> Self {
        Reuse {
            pools: Arc::new(Pools::new(PER_WORKER, MAX_IDLE)),
            counts: (0..SHARDS).map(|_| Counters::default()).collect(),
            sweeper: std::sync::Once::new(),
        }
    }
}

impl Reuse {
    /// A warm instance of `step` from this worker's pool, ready for the
    /// request `scope` (fresh deadline), if the step is a worker step and
    /// the pool has one.
    pub(super) fn take(&self, step: &Step, scope: &RequestScope) -> Option<StepInstance> {
        if !step.reuse.worker() && !step.snapshot.get().is_some_and(|s| s.reset.is_some()) {
            return None;
        }
        let now = Instant::now();
        let (inst, stale) = self.pools.take(thread_key(), &step.reuse, now);
        self.discard(stale, step, "idle");
        let mut inst = inst?;
        inst.store.data_mut().reuse_for(step, scope);
        inst.store.set_epoch_deadline(1);
        self.here().warm.fetch_add(1, Ordering::Relaxed);
        let path = if step.reuse.worker() { "warm" } else { "reset" };
        tracing::trace!(api = %step.api, step = %step.name, request_id = %scope.request_id, path, "step instance");
        Some(inst)
    }

    /// Whether this worker's pool for `step` has room for one more
    /// instance (so that one is not reset only to be dropped: a reset
    /// leaves its whole memory resident in its slot).
    pub(super) fn has_room(&self, step: &Step) -> bool {
        self.pools.has_room(thread_key(), &step.reuse)
    }

    /// Count a fresh instance served for `step`.
    pub(super) fn served_fresh(&self, step: &Step, scope: &RequestScope) {
        self.here().fresh.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(api = %step.api, step = %step.name, request_id = %scope.request_id, path = "fresh", "step instance");
    }

    /// Take back an instance whose request is done with it, after its last
    /// phase returned normally: into this worker's pool for `step` when the
    /// step is a worker step and the instance may serve again; else it is
    /// dropped.
    pub(super) fn release(&self, step: &Step, mut inst: StepInstance) {
        if !step.reuse.worker() && inst.reset.is_none() {
            return;
        }
        let now = Instant::now();
        self.sweep(now);
        if let Some(why) = spent(step, &mut inst) {
            self.discard(vec![inst], step, why);
            return;
        }
        if let Err(inst) = self.pools.put(thread_key(), &step.reuse, inst, now) {
            self.discard(vec![inst], step, "the pool is full");
        }
        self.sweeper.call_once(|| self.start_sweeper());
    }

    /// A thread that drops instances idle for too long every
    /// [`SWEEP_EVERY`], so that their memory and slots are released when
    /// traffic stops, not at the next request. It ends with the runtime.
    fn start_sweeper(&self) {
        let pools = Arc::downgrade(&self.pools);
        let counts = Arc::downgrade(&self.counts);
        let spawned = std::thread::Builder::new()
            .name("tollgate-reuse-sweep".into())
            .spawn(move || loop {
                std::thread::sleep(SWEEP_EVERY);
                let (Some(pools), Some(counts)) = (pools.upgrade(), counts.upgrade()) else {
                    return;
                };
                let stale = pools.sweep_due(Instant::now());
                if !stale.is_empty() {
                    counts[0]
                        .discarded
                        .fetch_add(stale.len() as u64, Ordering::Relaxed);
                    tracing::trace!(instances = stale.len(), "idle step instances discarded");
                }
            });
        if let Err(e) = spawned {
            // Requests still sweep as they pass.
            tracing::warn!("no thread to sweep idle step instances: {e}");
        }
    }

    /// Drop one idle instance (the longest idle), freeing its slot; false
    /// when none is idle.
    pub(super) fn evict_one(&self) -> bool {
        match self.pools.evict_one() {
            Some(inst) => {
                self.here().discarded.fetch_add(1, Ordering::Relaxed);
                drop(inst);
                true
            }
            None => false,
        }
    }

    pub(super) fn counts(&self) -> ReuseCounts {
        let sum = |f: fn(&Counters) -> &AtomicU64| {
            self.counts
                .iter()
                .map(|c| f(c).load(Ordering::Relaxed))
                .sum()
        };
        ReuseCounts {
            fresh: sum(|c| &c.fresh),
            warm: sum(|c| &c.warm),
            discarded: sum(|c| &c.discarded),
        }
    }

    /// The current thread's counters.
    fn here(&self) -> &Counters {
        &self.counts[thread_key() as usize % SHARDS]
    }

    /// Idle instances in the pools now.
    pub(super) fn idle(&self) -> usize {
        self.pools.idle()
    }

    /// At most once a second: drop every worker's instances idle too long
    /// and those of steps no longer loaded.
    fn sweep(&self, now: Instant) {
        let stale = self.pools.sweep_due(now);
        if !stale.is_empty() {
            self.here()
                .discarded
                .fetch_add(stale.len() as u64, Ordering::Relaxed);
        }
    }

    pub(super) fn discard(&self, insts: Vec<StepInstance>, step: &Step, why: &str) {
        if insts.is_empty() {
            return;
        }
        self.here()
            .discarded
            .fetch_add(insts.len() as u64, Ordering::Relaxed);
        tracing::trace!(api = %step.api, step = %step.name, why, "step instance discarded");
    }
}

/// Why `inst` may not serve another request of `step`, if so. Counts the
/// use it just made.
fn spent(step: &Step, inst: &mut StepInstance) -> Option<&'static str> {
    let limiter = &inst.store.data().limiter;
    if limiter.exceeded {
        return Some("memory cap");
    }
    let grown = limiter.grown;
    let uses = &mut inst.uses;
    uses.count += 1;
    if uses.count >= step.reuse.max_uses {
        return Some("max-uses");
    }
    match uses.settled {
        None => uses.settled = Some(grown),
        Some(size) if grown > size => return Some("memory growth"),
        Some(_) => {}
    }
    None
}

/// The current thread's key in the pools: distinct for every thread the
/// process ever ran.
fn thread_key() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static KEY: Cell<u64> = const { Cell::new(0) };
    }
    KEY.with(|k| {
        if k.get() == 0 {
            k.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        k.get()
    })
}

// ---------------------------------------------------------------------------
// The pools themselves, for any kind of item (unit-tested with plain ones).

/// Idle items by (thread, step): at most `per_pool` (and the step's own
/// bound) in each pool and `max_idle` in all.
pub(super) struct Pools<T> {
    shards: Box<[Mutex<Vec<Pool<T>>>]>,
    idle: AtomicUsize,
    per_pool: usize,
    max_idle: usize,
    /// When every shard is next swept, in nanoseconds after `epoch`.
    next_sweep: AtomicU64,
    epoch: Instant,
}

struct Pool<T> {
    thread: u64,
    step: u64,
    /// The step: once it is gone (a reload replaced it), so is the pool.
    alive: Weak<StepReuse>,
    idle_for: Duration,
    /// Oldest first.
    parked: Vec<(T, Instant)>,
}

impl<T> Pool<T> {
    /// Remove what may no longer be served, into `out`.
    fn expire(&mut self, now: Instant, out: &mut Vec<T>) {
        let dead = self.alive.strong_count() == 0;
        let idle_for = self.idle_for;
        let keep = self
            .parked
            .iter()
            .position(|(_, since)| !dead && now.saturating_duration_since(*since) < idle_for)
            .unwrap_or(self.parked.len());
        out.extend(self.parked.drain(..keep).map(|(t, _)| t));
    }
}

impl<T> Pools<T> {
    pub(super) fn new(per_pool: usize, max_idle: usize) -> Self {
        let epoch = Instant::now();
        Pools {
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            idle: AtomicUsize::new(0),
            per_pool,
            max_idle,
            next_sweep: AtomicU64::new(SWEEP_EVERY.as_nanos() as u64),
            epoch,
        }
    }

    fn shard(&self, thread: u64) -> std::sync::MutexGuard<'_, Vec<Pool<T>>> {
        self.lock(thread as usize % SHARDS)
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, Vec<Pool<T>>> {
        self.shards[shard].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used item of `step` that `thread` keeps, if one
    /// is still fresh enough; also the ones that were not (to drop).
    pub(super) fn take(
        &self,
        thread: u64,
        step: &Arc<StepReuse>,
        now: Instant,
    ) -> (Option<T>, Vec<T>) {
        let mut stale = Vec::new();
        let item = {
            let mut shard = self.shard(thread);
            shard
                .iter_mut()
                .find(|p| p.thread == thread && p.step == step.id)
                .and_then(|pool| {
                    pool.expire(now, &mut stale);
                    pool.parked.pop().map(|(t, _)| t)
                })
        };
        let gone = stale.len() + usize::from(item.is_some());
        if gone > 0 {
            self.idle.fetch_sub(gone, Ordering::AcqRel);
        }
        (item, stale)
    }

    /// Whether `thread`'s pool for `step` would take one more item now.
    pub(super) fn has_room(&self, thread: u64, step: &Arc<StepReuse>) -> bool {
        if self.idle.load(Ordering::Acquire) >= self.max_idle {
            return false;
        }
        let cap = self.per_pool.min(step.per_worker());
        self.shard(thread)
            .iter()
            .find(|p| p.thread == thread && p.step == step.id)
            .is_none_or(|p| p.parked.len() < cap)
    }

    /// Park `item` in `thread`'s pool for `step`; back when that pool or
    /// all of them are full.
    pub(super) fn put(
        &self,
        thread: u64,
        step: &Arc<StepReuse>,
        item: T,
        now: Instant,
    ) -> Result<(), T> {
        if self.idle.fetch_add(1, Ordering::AcqRel) >= self.max_idle {
            self.idle.fetch_sub(1, Ordering::AcqRel);
            return Err(item);
        }
        let mut shard = self.shard(thread);
        let pool = match shard
            .iter()
            .position(|p| p.thread == thread && p.step == step.id)
        {
            Some(i) => &mut shard[i],
            None => {
                shard.push(Pool {
                    thread,
                    step: step.id,
                    alive: Arc::downgrade(step),
                    idle_for: step.idle,
                    parked: Vec::with_capacity(self.per_pool),
                });
                shard.last_mut().expect("just pushed")
            }
        };
        if pool.parked.len() >= self.per_pool.min(step.per_worker()) {
            drop(shard);
            self.idle.fetch_sub(1, Ordering::AcqRel);
            return Err(item);
        }
        pool.parked.push((item, now));
        Ok(())
    }

    /// The longest-idle item of any pool, if any.
    pub(super) fn evict_one(&self) -> Option<T> {
        if self.idle.load(Ordering::Acquire) == 0 {
            return None;
        }
        let oldest_in = |pools: &[Pool<T>]| {
            pools
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.parked.first().map(|(_, since)| (*since, i)))
                .min()
        };
        // The shard holding the longest-idle item, then that item (or, if
        // another thread took it meanwhile, the oldest left there).
        let shard = self
            .shards
            .iter()
            .enumerate()
            .filter_map(|(n, _)| oldest_in(&self.lock(n)).map(|(since, _)| (since, n)))
            .min()
            .map(|(_, n)| n)?;
        let mut pools = self.lock(shard);
        let (_, i) = oldest_in(&pools)?;
        let (item, _) = pools[i].parked.remove(0);
        self.idle.fetch_sub(1, Ordering::AcqRel);
        Some(item)
    }

    /// Every item idle too long or of a step that is gone, and the pools
    /// left empty by that; only when a sweep is due (once a second).
    pub(super) fn sweep_due(&self, now: Instant) -> Vec<T> {
        let at = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let due = self.next_sweep.load(Ordering::Relaxed);
        if at < due
            || self
                .next_sweep
                .compare_exchange(
                    due,
                    at + SWEEP_EVERY.as_nanos() as u64,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return Vec::new();
        }
        self.sweep(now)
    }

    /// [`Pools::sweep_due`], now.
    pub(super) fn sweep(&self, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        for n in 0..self.shards.len() {
            let mut shard = self.lock(n);
            for pool in shard.iter_mut() {
                pool.expire(now, &mut out);
            }
            shard.retain(|p| !p.parked.is_empty() || p.alive.strong_count() > 0);
        }
        if !out.is_empty() {
            self.idle.fetch_sub(out.len(), Ordering::AcqRel);
        }
        out
    }

    pub(super) fn idle(&self) -> usize {
        self.idle.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(idle_ms: u64) -> Arc<StepReuse> {
        StepReuse::new(Isolation::Worker, 10, Duration::from_millis(idle_ms))
    }

    #[test]
    fn an_item_comes_back_to_its_own_thread_and_step_only() {
        let pools = Pools::new(4, 64);
        let (a, b) = (worker(60_000), worker(60_000));
        let now = Instant::now();
        pools.put(1, &a, "a1", now).unwrap();
        assert_eq!(pools.idle(), 1);
        // Another thread, another step: nothing.
        assert_eq!(pools.take(2, &a, now), (None, vec![]));
        assert_eq!(pools.take(1, &b, now), (None, vec![]));
        assert_eq!(pools.take(1, &a, now), (Some("a1"), vec![]));
        assert_eq!(pools.idle(), 0);
        assert_eq!(pools.take(1, &a, now), (None, vec![]));
    }

    #[test]
    fn request_steps_keep_fewer_than_worker_steps() {
        let pools = Pools::new(PER_WORKER, MAX_IDLE);
        let request = StepReuse::new(Isolation::Request, 10, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..PER_WORKER_RESET {
            assert!(pools.put(1, &request, i, now).is_ok());
        }
        assert!(!pools.has_room(1, &request));
        assert!(pools.has_room(2, &request), "another worker's pool");
        assert_eq!(pools.put(1, &request, 99, now), Err(99));
        let worker = worker(60_000);
        for i in 0..PER_WORKER {
            assert!(pools.put(1, &worker, i, now).is_ok());
        }
        assert_eq!(pools.idle(), PER_WORKER_RESET + PER_WORKER);
    }

    #[test]
    fn the_most_recently_used_is_served_first() {
        let pools = Pools::new(4, 64);
        let a = worker(60_000);
        let t0 = Instant::now();
        pools.put(1, &a, 1, t0).unwrap();
        pools.put(1, &a, 2, t0 + Duration::from_millis(1)).unwrap();
        assert_eq!(pools.take(1, &a, t0).0, Some(2));
        assert_eq!(pools.take(1, &a, t0).0, Some(1));
    }

    #[test]
    fn pools_are_bounded_per_worker_and_in_all() {
        let pools = Pools::new(2, 3);
        let (a, b) = (worker(60_000), worker(60_000));
        let now = Instant::now();
        assert!(pools.put(1, &a, 1, now).is_ok());
        assert!(pools.put(1, &a, 2, now).is_ok());
        assert_eq!(pools.put(1, &a, 3, now), Err(3), "per worker and step");
        assert!(pools.put(2, &a, 4, now).is_ok());
        assert_eq!(pools.put(2, &b, 5, now), Err(5), "in all");
        assert_eq!(pools.idle(), 3);
        pools.take(1, &a, now);
        assert!(pools.put(2, &b, 5, now).is_ok());
        assert_eq!(pools.idle(), 3);
    }

    #[test]
    fn an_item_idle_too_long_is_never_served() {
        let pools = Pools::new(4, 64);
        let a = worker(100);
        let t0 = Instant::now();
        pools.put(1, &a, 1, t0).unwrap();
        pools.put(1, &a, 2, t0 + Duration::from_millis(80)).unwrap();
        // At 150ms the first is 150ms idle (gone), the second 70ms (served).
        let (got, stale) = pools.take(1, &a, t0 + Duration::from_millis(150));
        assert_eq!((got, stale), (Some(2), vec![1]));
        assert_eq!(pools.idle(), 0);
        pools.put(1, &a, 3, t0).unwrap();
        assert_eq!(
            pools.take(1, &a, t0 + Duration::from_millis(100)),
            (None, vec![3])
        );
    }

    #[test]
    fn a_sweep_drops_idle_items_and_pools_of_dropped_steps() {
        let pools = Pools::new(4, 64);
        let (a, b) = (worker(100), worker(60_000));
        let t0 = Instant::now();
        pools.put(1, &a, 1, t0).unwrap();
        pools.put(2, &b, 2, t0).unwrap();
        pools.put(3, &b, 3, t0).unwrap();
        assert!(pools.sweep(t0 + Duration::from_millis(50)).is_empty());
        assert_eq!(pools.sweep(t0 + Duration::from_millis(100)), vec![1]);
        drop(b);
        let mut gone = pools.sweep(t0 + Duration::from_millis(100));
        gone.sort();
        assert_eq!(gone, vec![2, 3]);
        assert_eq!(pools.idle(), 0);
        let pools_left: usize = pools.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(pools_left, 1, "only the live step's (empty) pool stays");
    }

    #[test]
    fn a_sweep_is_due_once_a_second() {
        let pools = Pools::<u8>::new(4, 64);
        let t0 = pools.epoch;
        let a = worker(1);
        pools.put(1, &a, 1, t0).unwrap();
        assert!(pools.sweep_due(t0 + Duration::from_millis(500)).is_empty());
        assert_eq!(pools.sweep_due(t0 + SWEEP_EVERY), vec![1]);
        pools.put(1, &a, 2, t0).unwrap();
        assert!(
            pools.sweep_due(t0 + SWEEP_EVERY).is_empty(),
            "not due again yet"
        );
        assert_eq!(pools.sweep_due(t0 + 2 * SWEEP_EVERY), vec![2]);
    }

    #[test]
    fn eviction_takes_the_longest_idle_of_any_pool() {
        let pools = Pools::new(4, 64);
        let (a, b) = (worker(60_000), worker(60_000));
        let t0 = Instant::now();
        assert_eq!(pools.evict_one(), None);
        pools
            .put(1, &a, "new", t0 + Duration::from_millis(5))
            .unwrap();
        pools.put(7, &b, "old", t0).unwrap();
        assert_eq!(pools.evict_one(), Some("old"));
        assert_eq!(pools.evict_one(), Some("new"));
        assert_eq!(pools.evict_one(), None);
        assert_eq!(pools.idle(), 0);
    }

    #[test]
    fn reuse_limits_are_checked() {
        assert!(check_reuse_limits(1, Duration::from_millis(1)).is_ok());
        assert_eq!(
            check_reuse_limits(0, Duration::from_secs(60)).unwrap_err(),
            (
                "max-uses",
                "max-uses = 0 must be between 1 and 1000000000".into()
            )
        );
        assert_eq!(
            check_reuse_limits(5, Duration::from_secs(7200))
                .unwrap_err()
                .0,
            "idle"
        );
        assert_eq!(check_reuse_limits(5, Duration::ZERO).unwrap_err().0, "idle");
    }

    #[test]
    fn thread_keys_are_distinct() {
        let here = thread_key();
        assert_eq!(here, thread_key());
        let there = std::thread::spawn(thread_key).join().unwrap();
        assert_ne!(here, there);
    }
}

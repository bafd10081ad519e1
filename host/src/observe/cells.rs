//! Counters and histograms that every serving thread adds to at once,
//! without handing one cache line back and forth between the CPUs.
//!
//! A plain `AtomicU64` that all workers increment is one cache line that
//! each add must take from the CPU that added last, and a call counts into
//! a dozen of them. With plain atomics (and a reference count or two per
//! call on shared `Arc`s) metrics cost +3.3 µs of gateway CPU per call at
//! 0 steps (tests/bench/run, ", unobserved" variants, 3 rounds), against
//! +0.9 µs sharded (5 rounds; docs/performance.md, 2026-12-05). So each
//! cell here is a set of shards,
//! one per CPU (rounded up to a power of two, at most [`MAX_SHARDS`]), each
//! on its own cache line; an add goes to the shard of the CPU the thread
//! runs on, and a scrape adds the shards up. Two threads on one CPU (or
//! on two CPUs that share a shard) still count right: the shards are
//! atomics, only their cache lines are meant to stay put.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

/// The most shards a cell has (a 64-CPU machine shares each among 4).
pub const MAX_SHARDS: usize = 16;

/// Shards per cell on this machine.
static SHARDS: LazyLock<usize> = LazyLock::new(|| {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_SHARDS)
        .next_power_of_two()
});

/// The CPU the calling thread runs on (0 where that is unknown). With
/// glibc 2.35 and later this reads the kernel's rseq area: no system call.
#[inline]
fn cpu() -> usize {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sched_getcpu takes nothing and returns a CPU number or
        // -1; it touches no memory of ours.
        #[allow(unsafe_code)]
        let cpu = unsafe { libc::sched_getcpu() };
        cpu.max(0) as usize
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// One value alone on its cache line (128 bytes: adjacent-line
/// prefetching pairs 64-byte lines on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Line<T>(T);

/// A counter in shards: [`Tally::inc_by`] touches the calling CPU's shard
/// alone; [`Tally::get`] adds them up. Clones share the count (as
/// `prometheus_client`'s `Counter` does), so a family and the request
/// path's cached cells see one value.
#[derive(Clone)]
pub struct Tally(Arc<[Line<AtomicU64>]>);

impl Default for Tally {
    fn default() -> Self {
        Tally((0..*SHARDS).map(|_| Line::default()).collect())
    }
}

impl Tally {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        let s = &self.0;
        s[cpu() & (s.len() - 1)].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count: the sum of the shards.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|l| l.0.load(Ordering::Relaxed)).sum()
    }
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tally({})", self.get())
    }
}

impl TypedMetric for Tally {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Tally {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// The most buckets a [`Hist`] has, `+Inf` included.
const MAX_BUCKETS: usize = 16;

/// One shard of a histogram: per-bucket counts and the sum, together on
/// their own lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct HistShard {
    counts: [AtomicU64; MAX_BUCKETS],
    sum_us: AtomicU64,
}

/// A histogram of fixed buckets in shards: observing is a scan of at most
/// 15 bounds and two atomic adds (bucket, sum) on the calling CPU's shard.
/// Clones share the counts.
#[derive(Debug, Clone)]
pub struct Hist(Arc<HistInner>);

#[derive(Debug)]
struct HistInner {
    bounds: &'static [f64],
    /// Upper bounds in microseconds, for the scan.
    bounds_us: Box<[u64]>,
    shards: Box<[HistShard]>,
}

impl Hist {
    /// A histogram with these upper bounds, in seconds (at most 15).
    pub fn new(bounds: &'static [f64]) -> Hist {
        assert!(bounds.len() < MAX_BUCKETS, "too many buckets");
        Hist(Arc::new(HistInner {
            bounds,
            bounds_us: bounds.iter().map(|b| (b * 1e6).round() as u64).collect(),
            shards: (0..*SHARDS).map(|_| HistShard::default()).collect(),
        }))
    }

    /// Count one observation of `us` microseconds.
    pub fn observe_us(&self, us: u64) {
        let h = &self.0;
        let i = h
            .bounds_us
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(h.bounds_us.len());
        let s = &h.shards[cpu() & (h.shards.len() - 1)];
        s.counts[i].fetch_add(1, Ordering::Relaxed);
        s.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Per bucket (not cumulative; the last is `+Inf`) and the sum in
    /// microseconds, each added up over the shards.
    fn totals(&self) -> (Vec<u64>, u64) {
        let h = &self.0;
        let mut counts = vec![0; h.bounds.len() + 1];
        let mut sum = 0;
        for s in h.shards.iter() {
            for (t, c) in counts.iter_mut().zip(&s.counts) {
                *t += c.load(Ordering::Relaxed);
            }
            sum += s.sum_us.load(Ordering::Relaxed);
        }
        (counts, sum)
    }

    /// How many observations so far.
    pub fn count(&self) -> u64 {
        self.totals().0.iter().sum()
    }
}

impl TypedMetric for Hist {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Hist {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Per bucket, not cumulative: the encoder adds them up. The count
        // is their total (read together), so it equals the `+Inf` bucket
        // even while calls are counted during the scrape.
        let (counts, sum_us) = self.totals();
        let total = counts.iter().sum();
        let buckets: Vec<(f64, u64)> = counts
            .into_iter()
            .enumerate()
            .map(|(i, n)| (self.0.bounds.get(i).copied().unwrap_or(f64::INFINITY), n))
            .collect();
        encoder.encode_histogram::<NoLabelSet>(sum_us as f64 / 1e6, total, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_a_power_of_two_and_lines_apart() {
        let t = Tally::default();
        assert!(t.0.len().is_power_of_two() && t.0.len() <= MAX_SHARDS);
        assert_eq!(std::mem::align_of::<Line<AtomicU64>>(), 128);
        assert_eq!(std::mem::size_of::<HistShard>() % 128, 0);
    }

    #[test]
    fn threads_on_any_cpu_add_up_exactly() {
        let t = Tally::default();
        let h = Hist::new(&[0.001]);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for i in 0..10_000u64 {
                        t.inc();
                        h.observe_us(i % 2 * 5_000);
                    }
                });
            }
        });
        assert_eq!(t.get(), 80_000);
        assert_eq!(h.count(), 80_000);
        let (counts, sum) = h.totals();
        assert_eq!(counts, vec![40_000, 40_000]);
        assert_eq!(sum, 40_000 * 5_000);
        let clone = t.clone();
        clone.inc_by(5);
        assert_eq!(t.get(), 80_005, "clones share the count");
    }
}

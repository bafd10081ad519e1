//! The one wrapper around `wasmtime::Engine`: engine configuration, pooling
//! limits, the epoch ticker, and the compiled-component cache.
//!
//! Deadlines are given as durations; the ticker turns them into epochs, so
//! no caller deals with raw ticks.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of step deadlines.
pub const TICK: Duration = Duration::from_millis(1);

/// Largest memory one policy instance may be given (`memory` per step).
pub const MAX_STEP_MEMORY: u64 = 256 << 20;

/// Engine-wide limits, fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct EngineLimits {
    /// Instances alive at once across all requests.
    pub max_instances: u32,
}

/// The process's Wasm engine.
pub struct PolicyEngine {
    engine: Engine,
    stop: Arc<AtomicBool>,
    cache_dir: Option<PathBuf>,
    compat: String,
}

impl PolicyEngine {
    /// Build the engine and start the epoch ticker. `cache_dir` holds
    /// precompiled components keyed by content hash and engine settings.
    pub fn new(limits: &EngineLimits, cache_dir: Option<PathBuf>) -> Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        // Rust components hold a few core instances (the program and the
        // adapter shims) with one memory and a table or two each.
        let instances = limits.max_instances.max(1);
        pool.total_component_instances(instances + 8)
            .total_core_instances((instances + 8) * 8)
            .total_memories((instances + 8) * 2)
            .total_tables((instances + 8) * 4)
            .total_stacks(instances + 8)
            .max_core_instances_per_component(16)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_memory_size(MAX_STEP_MEMORY as usize)
            // Reset a used slot by rewriting only the pages the instance
            // dirtied (PAGEMAP_SCAN, Linux 6.7+; a plain memset of the low
            // `keep_resident` bytes elsewhere), keeping them resident: no
            // madvise, no page faults for the next instance. Sound from
            // wasmtime 50 on: 48 and 49 left dirty pages the kernel had
            // swapped out unreset, so the next instance in the slot could
            // read them (wasmtime PR 14357; docs/security.md).
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(64 << 10);

        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .concurrency_support(false)
            .wasm_component_model(true)
            .memory_init_cow(true)
            .max_wasm_stack(512 << 10)
            .async_stack_size(1 << 20)
            .memory_reservation(MAX_STEP_MEMORY)
            .memory_guard_size(64 << 10)
            .memory_reservation_for_growth(0);
        // `TOLLGATE_PERFMAP=1` writes /tmp/perf-PID.map so that `perf`
        // names the policies' compiled functions (for profiling only).
        if std::env::var_os("TOLLGATE_PERFMAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;

        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let compat = format!("{:016x}", h.finish());

        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let stop2 = stop.clone();
        std::thread::Builder::new()
            .name("tollgate-epoch".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    match weak.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("starting the epoch ticker")?;

        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating plugin cache {}", dir.display()))?;
        }
        Ok(PolicyEngine {
            engine,
            stop,
            cache_dir,
            compat,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Load a component from Wasm bytes, through the precompiled cache.
    /// Returns the component and its content hash (hex).
    pub fn load_component(&self, wasm: &[u8], origin: &Path) -> Result<(Component, String)> {
        let hash = hex::encode(Sha256::digest(wasm));
        let Some(dir) = &self.cache_dir else {
            let c = Component::new(&self.engine, wasm).map_err(anyhow::Error::from)?;
            return Ok((c, hash));
        };
        let cached = dir.join(format!("{hash}-{}.cwasm", self.compat));
        if cached.exists() {
            // SAFETY: the file is one this process family wrote with
            // `precompile_component` into our own data directory, named by
            // the hash of its source and of the engine settings; wasmtime
            // also checks the header and the engine compatibility.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(&self.engine, &cached) };
            match loaded {
                Ok(c) => return Ok((c, hash)),
                Err(e) => tracing::warn!(
                    file = %cached.display(),
                    error = %e,
                    "discarding unreadable precompiled plugin"
                ),
            }
        }
        let compiled = self
            .engine
            .precompile_component(wasm)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling {}", origin.display()))?;
        // The cache only saves compile time: if it cannot be written (a full
        // disk), say so and go on with the component compiled just now.
        let tmp = dir.join(format!(".{hash}.{}.tmp", std::process::id()));
        if let Err(e) = std::fs::write(&tmp, &compiled).and_then(|_| std::fs::rename(&tmp, &cached))
        {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(
                file = %cached.display(),
                error = %e,
                "cannot write the precompiled plugin cache; going on without it"
            );
        }
        // SAFETY: as above; the bytes were produced by this engine just now.
        #[allow(unsafe_code)]
        let c = unsafe { Component::deserialize(&self.engine, &compiled) }
            .map_err(anyhow::Error::from)?;
        Ok((c, hash))
    }
}

impl Drop for PolicyEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

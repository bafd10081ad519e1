//! Step deadlines that measure the step, not the machine.
//!
//! A step has two limits per phase ([`Deadline`]):
//!
//! - **running time** (`timeout`, 50 ms by default): how long the guest
//!   itself may run. It is counted in epoch ticks observed while the guest
//!   executes. The engine's ticker advances the epoch every [`TICK`]; the
//!   store's epoch callback fires only at an epoch check in guest code, and
//!   each time it re-arms the deadline one tick ahead (after its yield to
//!   the executor, wasmtime sets the new deadline from the epoch *then*).
//!   So each callback is one tick boundary crossed while the guest was in
//!   progress, about 1 ms of its own running. Time the task spends waiting
//!   for a core, waiting in the executor after a yield, or awaiting a host
//!   call is not counted: however many ticks pass meanwhile, the guest
//!   sees at most one callback when it runs again (a host call that waited
//!   says so, [`Deadline::host_waited`], and that one is not counted
//!   either). A phase may see `timeout / TICK + 1` callbacks (the first
//!   tick may be partial); the next one ends it.
//! - **wall-clock time** (`wall-timeout`, by default the larger of 5 s and
//!   `timeout`): a generous bound on the whole phase, host calls included
//!   (JWKS fetches, outbound HTTP). It is checked by the same callback,
//!   bounds every host call that waits ([`Deadline::wall_left`]), and ends
//!   a call into the guest that is still pending at that instant
//!   ([`by_wall`]).
//!
//! The response phase starts both afresh ([`Deadline::restart`]).
//!
//! What ticks cost in precision: a thread descheduled mid-phase costs the
//! phase one tick (so it may end with less than `timeout` of CPU on a busy
//! machine), and ticks further apart than [`TICK`] (the ticker thread
//! itself starved) let a looping guest run longer than `timeout` before
//! it is stopped, within `wall-timeout` at worst.
//!
//! Rejected ways to measure running time:
//! - thread CPU time (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`): measured
//!   at ~180 ns per call here, a cost at every tick and at every phase
//!   start and end; and a step's task migrates between worker threads at
//!   each yield, so one thread's CPU clock is not the step's.
//! - fuel: exact, but it instruments every basic block of every guest with
//!   a counter update, a cost on every call of every step, while epochs
//!   cost one load and compare at function entries and loop headers.
//! - the old wall-clock deadline: it charged the step for time it spent
//!   waiting for a core, so on a busy machine cheap steps answered 503
//!   "policy step timed out" (issue 15).

use super::engine::TICK;
use super::gate::Tick;
use std::future::Future;
use std::time::{Duration, Instant};
use wasmtime::{Store, Trap, UpdateDeadline};

/// The default wall-clock bound is at least this long.
pub const MIN_DEFAULT_WALL: Duration = Duration::from_secs(5);

/// Longest `wall-timeout` a step may be given.
pub const MAX_WALL_TIMEOUT: Duration = Duration::from_secs(300);

/// A step's wall-clock bound when neither the step nor `[limits]` sets
/// one: the larger of 5 s and its `timeout`.
pub fn default_wall_timeout(timeout: Duration) -> Duration {
    timeout.max(MIN_DEFAULT_WALL)
}

/// Which of a step's limits ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// The guest ran for longer than its `timeout`.
    Running,
    /// The phase, host calls included, took longer than its `wall-timeout`.
    Wall,
}

impl std::fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutKind::Running => "running-time",
            TimeoutKind::Wall => "wall-clock",
        })
    }
}

/// The limits of the phase running now, and what it has used of them.
#[derive(Debug, Clone)]
pub struct Deadline {
    timeout: Duration,
    wall_timeout: Duration,
    /// Callbacks the phase may see: `timeout / TICK + 1`.
    budget: u64,
    /// Callbacks seen (ticks the guest ran).
    ran: u64,
    /// When the phase must be over, host calls included.
    wall: Instant,
    /// A host call waited since the last callback.
    waited: bool,
    /// The limit that ended the phase, once one has.
    fired: Option<TimeoutKind>,
}

impl Deadline {
    /// A phase starting now with `timeout` of running time within
    /// `wall_timeout` of wall-clock time.
    pub fn new(timeout: Duration, wall_timeout: Duration) -> Deadline {
        let budget =
            u64::try_from(timeout.as_nanos().div_ceil(TICK.as_nanos())).unwrap_or(u64::MAX - 1) + 1;
        Deadline {
            timeout,
            wall_timeout,
            budget,
            ran: 0,
            wall: Instant::now() + wall_timeout,
            waited: false,
            fired: None,
        }
    }

    /// The same limits, afresh, for a phase starting now.
    pub fn restart(&mut self) {
        *self = Deadline::new(self.timeout, self.wall_timeout);
    }

    /// One epoch callback: a tick passed while the guest was in progress.
    /// `Err` when a limit is used up.
    pub fn tick(&mut self, now: Instant) -> Result<(), TimeoutKind> {
        if now >= self.wall {
            self.fired = Some(TimeoutKind::Wall);
            return Err(TimeoutKind::Wall);
        }
        if std::mem::take(&mut self.waited) {
            // The ticks passed while a host call waited.
            return Ok(());
        }
        self.ran += 1;
        if self.ran > self.budget {
            self.fired = Some(TimeoutKind::Running);
            return Err(TimeoutKind::Running);
        }
        Ok(())
    }

    /// A host call has just waited (for the network): the next callback is
    /// for ticks that passed while it did, not while the guest ran.
    pub fn host_waited(&mut self) {
        self.waited = true;
    }

    /// When the phase must be over, host calls included.
    pub fn wall(&self) -> Instant {
        self.wall
    }

    /// How long a host call may still wait.
    pub fn wall_left(&self, now: Instant) -> Duration {
        self.wall.saturating_duration_since(now)
    }

    /// Ticks of running seen in this phase.
    pub fn ticks_run(&self) -> u64 {
        self.ran
    }

    /// Which limit ended the phase (it was interrupted at `now`).
    pub fn kind(&self, now: Instant) -> TimeoutKind {
        self.fired.unwrap_or(if now >= self.wall {
            TimeoutKind::Wall
        } else {
            TimeoutKind::Running
        })
    }

    /// The limit of that kind.
    pub fn limit(&self, kind: TimeoutKind) -> Duration {
        match kind {
            TimeoutKind::Running => self.timeout,
            TimeoutKind::Wall => self.wall_timeout,
        }
    }
}

/// Count `store`'s running time against the [`Deadline`] `get` finds in
/// its data, from now. At each callback within the limits the guest
/// yields to the executor, tokio's own yield: it lets the worker poll for
/// I/O before the guest runs again, so a busy guest never holds a worker
/// thread. (wasmtime's plain `Yield` wakes the task at once, so with busy
/// guests on every worker the network was only polled every 61 scheduler
/// ticks, i.e. every ~60 ms of guest time, and other calls' p99 went from
/// ~1 ms to 75-170 ms.)
///
/// A call that keeps running needs a place in its step's gate
/// ([`super::gate::on_tick`]): it waits for one before it yields, and ends
/// when none comes free in time.
pub fn arm<T: 'static>(store: &mut Store<T>, get: fn(&mut T) -> &mut Deadline) {
    store.epoch_deadline_callback(move |mut ctx| {
        let d = get(ctx.data_mut());
        if d.tick(Instant::now()).is_err() {
            return Ok(UpdateDeadline::Interrupt);
        }
        let place = match super::gate::on_tick(d.ticks_run()) {
            Tick::Run => None,
            Tick::Wait(place) => Some(place),
            Tick::Refused => return Ok(UpdateDeadline::Interrupt),
        };
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                if let Some(place) = place {
                    place.await;
                }
                tokio::task::yield_now().await
            }),
        ))
    });
    store.set_epoch_deadline(1);
}

/// `call`, a call into the guest, ended at `wall` if it is still pending
/// then (waiting in a host call the callback cannot see, a WASI sleep):
/// the same `Interrupt` trap the callback raises. The store must not be
/// called again after that.
pub async fn by_wall<R>(
    wall: Instant,
    call: impl Future<Output = wasmtime::Result<R>>,
) -> wasmtime::Result<R> {
    match tokio::time::timeout_at(wall.into(), call).await {
        Ok(r) => r,
        Err(_) => Err(Trap::Interrupt.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_budget_is_timeout_over_tick_plus_one() {
        let now = Instant::now();
        let mut d = Deadline::new(50 * MS, 5000 * MS);
        for _ in 0..51 {
            assert_eq!(d.tick(now), Ok(()));
        }
        assert_eq!(d.tick(now), Err(TimeoutKind::Running));
        assert_eq!(d.kind(now), TimeoutKind::Running);
        assert_eq!(d.limit(TimeoutKind::Running), 50 * MS);
        // A part of a tick is a whole one.
        let mut d = Deadline::new(MS + MS / 2, 5000 * MS);
        for _ in 0..3 {
            assert_eq!(d.tick(now), Ok(()));
        }
        assert_eq!(d.tick(now), Err(TimeoutKind::Running));
    }

    #[test]
    fn ticks_that_passed_while_a_host_call_waited_are_not_counted() {
        let now = Instant::now();
        let mut d = Deadline::new(2 * MS, 5000 * MS);
        for _ in 0..10 {
            d.host_waited();
            assert_eq!(d.tick(now), Ok(()));
        }
        assert_eq!(d.ticks_run(), 0);
        for _ in 0..3 {
            assert_eq!(d.tick(now), Ok(()));
        }
        assert_eq!(d.tick(now), Err(TimeoutKind::Running));
    }

    #[test]
    fn the_wall_bound_ends_the_phase_whatever_it_ran() {
        let mut d = Deadline::new(50 * MS, 200 * MS);
        let later = Instant::now() + 200 * MS;
        assert_eq!(d.wall_left(later), Duration::ZERO);
        assert_eq!(d.tick(later), Err(TimeoutKind::Wall));
        assert_eq!(d.kind(later), TimeoutKind::Wall);
        assert_eq!(d.limit(TimeoutKind::Wall), 200 * MS);
        // Interrupted from outside (by_wall) past the bound: the wall's.
        let d = Deadline::new(50 * MS, 200 * MS);
        assert_eq!(d.kind(Instant::now() + 300 * MS), TimeoutKind::Wall);
        assert_eq!(d.kind(Instant::now()), TimeoutKind::Running);
    }

    #[test]
    fn restart_gives_a_fresh_budget() {
        let now = Instant::now();
        let mut d = Deadline::new(MS, 5000 * MS);
        while d.tick(now).is_ok() {}
        d.restart();
        assert_eq!(d.ticks_run(), 0);
        assert_eq!(d.tick(now), Ok(()));
        assert!(d.wall_left(Instant::now()) > 4000 * MS);
    }

    #[test]
    fn the_default_wall_bound_is_at_least_5s_and_the_timeout() {
        assert_eq!(default_wall_timeout(50 * MS), Duration::from_secs(5));
        assert_eq!(
            default_wall_timeout(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn the_error_says_which_limit_ended_the_step() {
        let e = |kind, limit| crate::policy::PolicyError::Timeout {
            step: "auth".into(),
            limit,
            kind,
        };
        assert_eq!(
            e(TimeoutKind::Running, 50 * MS).to_string(),
            "step `auth` exceeded its running-time deadline of 50ms"
        );
        assert_eq!(
            e(TimeoutKind::Wall, 5000 * MS).to_string(),
            "step `auth` exceeded its wall-clock deadline of 5s"
        );
    }

    // -----------------------------------------------------------------
    // With a real engine and its ticker.

    use crate::policy::engine::{EngineLimits, PolicyEngine};
    use wasm_encoder::{
        BlockType, CodeSection, EntityType, ExportKind, ExportSection, Function, FunctionSection,
        ImportSection, Instruction as I, Module, TypeSection, ValType,
    };
    use wasmtime::{Linker, Module as WasmModule};

    /// A module importing `host.pause: () -> ()` and exporting
    /// `spin: () -> ()` (an endless loop) and `pauses: (n: i32) -> ()`
    /// (calls `pause` n times).
    fn guest() -> Vec<u8> {
        let mut types = TypeSection::new();
        let none: [ValType; 0] = [];
        types.ty().function(none, none);
        types.ty().function([ValType::I32], none);
        let mut imports = ImportSection::new();
        imports.import("host", "pause", EntityType::Function(0));
        let mut funcs = FunctionSection::new();
        funcs.function(0); // spin: func 1
        funcs.function(1); // pauses: func 2
        let mut exports = ExportSection::new();
        exports.export("spin", ExportKind::Func, 1);
        exports.export("pauses", ExportKind::Func, 2);
        let mut code = CodeSection::new();
        let mut spin = Function::new([]);
        for i in [I::Loop(BlockType::Empty), I::Br(0), I::End, I::End] {
            spin.instruction(&i);
        }
        code.function(&spin);
        let mut pauses = Function::new([]);
        for i in [
            I::Block(BlockType::Empty),
            I::Loop(BlockType::Empty),
            I::LocalGet(0),
            I::I32Eqz,
            I::BrIf(1),
            I::Call(0),
            I::LocalGet(0),
            I::I32Const(1),
            I::I32Sub,
            I::LocalSet(0),
            I::Br(0),
            I::End,
            I::End,
            I::End,
        ] {
            pauses.instruction(&i);
        }
        code.function(&pauses);
        let mut m = Module::new();
        m.section(&types)
            .section(&imports)
            .section(&funcs)
            .section(&exports)
            .section(&code);
        m.finish()
    }

    /// This thread's CPU time.
    fn thread_cpu() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid pointer to a timespec the call fills in.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// What the guest's `pause` does.
    #[derive(Clone, Copy)]
    enum Pause {
        /// Sleeps the thread that long (time off the guest, as when the
        /// thread is descheduled).
        Sleep(Duration),
        /// Waits forever (a host call that never answers).
        Hang,
    }

    /// Call `name(args)` in a fresh instance under `timeout` / `wall`, on a
    /// current-thread runtime (so the guest runs on this thread). The
    /// result, the wall time, this thread's CPU time, and the deadline
    /// afterwards.
    fn run(
        name: &str,
        arg: Option<i32>,
        pause: Pause,
        timeout: Duration,
        wall: Duration,
    ) -> (wasmtime::Result<()>, Duration, Duration, Deadline) {
        let engine = PolicyEngine::new(&EngineLimits { max_instances: 4 }, None).unwrap();
        let module = WasmModule::new(engine.engine(), guest()).unwrap();
        let mut linker = Linker::<Deadline>::new(engine.engine());
        match pause {
            Pause::Sleep(d) => linker.func_wrap("host", "pause", move || std::thread::sleep(d)),
            Pause::Hang => linker.func_wrap_async("host", "pause", |_, (): ()| {
                Box::new(std::future::pending::<()>())
            }),
        }
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut store = Store::new(engine.engine(), Deadline::new(timeout, wall));
            let instance = linker.instantiate_async(&mut store, &module).await.unwrap();
            arm(&mut store, |d| d);
            let (t0, c0) = (Instant::now(), thread_cpu());
            let f = instance.get_func(&mut store, name).unwrap();
            let args: Vec<wasmtime::Val> = arg.into_iter().map(wasmtime::Val::I32).collect();
            let r = by_wall(
                store.data().wall(),
                f.call_async(&mut store, &args, &mut []),
            )
            .await;
            (r, t0.elapsed(), thread_cpu() - c0, store.data().clone())
        })
    }

    fn interrupted(r: &wasmtime::Result<()>) -> bool {
        r.as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<Trap>())
            .is_some_and(|t| *t == Trap::Interrupt)
    }

    #[test]
    fn a_spinning_guest_ends_after_about_its_timeout_of_running() {
        let (r, took, cpu, d) = run("spin", None, Pause::Sleep(MS), 50 * MS, 5000 * MS);
        assert!(interrupted(&r), "{r:?}");
        assert_eq!(d.kind(Instant::now()), TimeoutKind::Running);
        assert!(
            cpu >= 25 * MS && took < 2000 * MS,
            "ran {cpu:?} of CPU in {took:?}"
        );
    }

    #[test]
    fn time_off_the_guest_is_not_counted() {
        // 40 pauses of 5 ms: 200 ms of wall time, four times the 50 ms
        // timeout, but the guest itself ran for next to nothing. The old
        // wall-clock deadline ended it at 50 ms.
        let (r, took, _, d) = run("pauses", Some(40), Pause::Sleep(5 * MS), 50 * MS, 5000 * MS);
        assert!(r.is_ok(), "{r:?} after {took:?}, {} ticks", d.ticks_run());
        assert!(took >= 200 * MS, "{took:?}");
        assert!(d.ticks_run() <= 41, "{} ticks", d.ticks_run());
    }

    #[test]
    fn the_wall_bound_ends_a_guest_that_keeps_pausing() {
        // Each pause costs one tick at most, 20 ms of wall time: 1000 of
        // them stay within a 2 s running budget but not a 300 ms wall.
        let (r, took, _, d) = run(
            "pauses",
            Some(1000),
            Pause::Sleep(20 * MS),
            2000 * MS,
            300 * MS,
        );
        assert!(interrupted(&r), "{r:?}");
        assert_eq!(d.kind(Instant::now()), TimeoutKind::Wall);
        assert!(
            took >= 300 * MS && took < 1500 * MS,
            "ended after {took:?} for a 300 ms wall bound"
        );
    }

    #[test]
    fn the_wall_bound_ends_a_host_call_that_never_answers() {
        // No guest code runs, so no callback: `by_wall` ends the call.
        let (r, took, _, d) = run("pauses", Some(1), Pause::Hang, 50 * MS, 200 * MS);
        assert!(interrupted(&r), "{r:?}");
        assert_eq!(d.kind(Instant::now()), TimeoutKind::Wall);
        assert!(
            took >= 200 * MS && took < 1500 * MS,
            "ended after {took:?} for a 200 ms wall bound"
        );
    }
}

//! A fixed pool of worker threads for splitting one op across cores.
//!
//! Why not rayon: a session dispatches one short job per heavy node (tens of
//! microseconds each) and must not allocate or lock while it runs. This pool
//! hands a borrowed closure to parked workers through one atomic gate, wakes
//! them with `unpark` (a futex, no lock), and never waits for a worker that
//! has not started: jobs are written so that the caller alone can finish them
//! (pieces are claimed from a shared counter), so when the caller runs out of
//! pieces it closes the gate and waits only for workers already inside. A
//! worker the OS did not schedule in time (a busy board, a LITTLE core) costs
//! nothing. The workers are created once, in [`Pool::new`] (prepare), and
//! joined on drop.
//!
//! Results never depend on the number of workers: callers split work into
//! pieces whose outputs are disjoint and computed by the same kernel whatever
//! thread runs them (int32 accumulation is exact), so any split and any
//! schedule produce identical bytes.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle thread spins before parking: long enough to catch a
/// dispatch that follows at once (back-to-back split nodes), short enough
/// not to burn a core while the caller runs serial ops. On a 2-vCPU VM whose
/// other vCPU runs other processes, a spinning worker takes CPU time the
/// caller then lacks: at 2 threads, 50 us cost mobilenet_v2 3.13-3.60 ms,
/// yolov8n 10.1, FastestDet 3.47, UltraFace RFB-320 2.15-2.23 where 5 us
/// gives 2.96-3.01, 8.86-8.89, 2.76-2.80, 1.91-1.95 (0 us about as 5).
const SPIN: Duration = Duration::from_micros(5);

/// Jobs a pool leaves to its caller after a straggler ([`Pool::ready`]):
/// the first back-off, and the longest (doubling while stragglers persist).
const BACKOFF_MIN: u32 = 16;
const BACKOFF_MAX: u32 = 1024;

/// `gate` layout: job id in the high bits, then the open flag, then the
/// number of workers inside the current job.
const OPEN: usize = 1 << 15;
const ACTIVE: usize = OPEN - 1;
const ID_SHIFT: u32 = 16;

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// `(job id << ID_SHIFT) | OPEN? | active workers`. A worker may enter the
    /// job with the id it last saw only while OPEN is set.
    gate: AtomicUsize,
    /// The current job; written only by the dispatcher before it publishes a
    /// new id in `gate` (Release) and read by workers after they entered it.
    job: UnsafeCell<Option<Job>>,
    panicked: AtomicBool,
    shutdown: AtomicBool,
}

// SAFETY: `job` is only written by the dispatcher while no worker
// is inside a job (the gate is closed with no active workers: `Pool::run`
// takes `&mut self` and waits for that before returning).
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// `threads - 1` background workers plus the calling thread.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<(JoinHandle<()>, Thread)>,
    next_id: usize,
    /// Jobs still to leave to the caller alone ([`Pool::ready`]).
    skip: u32,
    /// The next back-off.
    backoff: u32,
}

impl Pool {
    /// Starts `threads - 1` workers (`threads` is clamped to at least 1).
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            gate: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
        });
        let mut workers = Vec::new();
        for w in 1..threads.max(1) {
            let s = shared.clone();
            let h = thread::Builder::new()
                .name(format!("strix-worker-{w}"))
                .spawn(move || worker(&s, w))?;
            let t = h.thread().clone();
            workers.push((h, t));
        }
        Ok(Pool {
            shared,
            workers,
            next_id: 0,
            skip: 0,
            backoff: BACKOFF_MIN,
        })
    }

    /// Number of threads a job may run on (workers plus the caller).
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Whether the next job should be split at all; counts one job of a
    /// back-off down. After a job whose caller waited for a worker longer
    /// than its own share took (a worker descheduled inside the job: on a
    /// machine whose cores are taken by other processes, a wait of a whole
    /// scheduler slice, milliseconds for a job of microseconds), the next
    /// [`BACKOFF_MIN`] jobs run on the caller alone, then one is split
    /// again to probe; each straggling probe doubles the back-off (up to
    /// [`BACKOFF_MAX`]), and a job without a straggler resets it. Splitting
    /// never changes results, only who computes them.
    pub fn ready(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            false
        } else {
            true
        }
    }

    /// Runs `f(i)` on the caller (`i == 0`) and on every worker `i` that
    /// starts before the caller's own call returns; returns when every call
    /// that started has finished. `f` must therefore finish the whole job on
    /// its own when no worker joins (claim pieces from a shared counter).
    /// Returns `false` if any call panicked (contained, not propagated).
    pub fn run(&mut self, f: &(dyn Fn(usize) + Sync)) -> bool {
        if self.workers.is_empty() {
            return catch_unwind(AssertUnwindSafe(|| f(0))).is_ok();
        }
        let s = &*self.shared;
        self.next_id = self.next_id.wrapping_add(1);
        // SAFETY: the gate is closed with no worker inside (see `Shared`). The
        // lifetime is erased, but `f` outlives every use: workers enter only
        // while the gate is open, and this function does not return (or
        // unwind) before the gate is closed and empty.
        unsafe {
            *s.job.get() = Some(std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f));
        }
        s.panicked.store(false, Ordering::Relaxed);
        s.gate
            .store((self.next_id << ID_SHIFT) | OPEN, Ordering::Release);
        for (_, t) in &self.workers {
            t.unpark();
        }
        let own = Instant::now();
        let mine = catch_unwind(AssertUnwindSafe(|| f(0))).is_ok();
        s.gate.fetch_and(!OPEN, Ordering::AcqRel);
        // Only workers already inside remain, each finishing a piece it
        // claimed: a short wait, so spin (then yield) rather than park. (No
        // park also means no `thread::current()` handle, which a C caller's
        // thread would otherwise allocate and never free.)
        let start = Instant::now();
        while s.gate.load(Ordering::Acquire) & ACTIVE != 0 {
            if start.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        if start.elapsed() > start.duration_since(own) {
            self.skip = self.backoff;
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        } else {
            self.backoff = BACKOFF_MIN;
        }
        mine && !s.panicked.load(Ordering::Relaxed)
    }
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0usize;
    loop {
        let mut start = Instant::now();
        let g = loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            let g = s.gate.load(Ordering::Acquire);
            if g >> ID_SHIFT != seen {
                break g;
            }
            if start.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                thread::park();
                start = Instant::now();
            }
        };
        seen = g >> ID_SHIFT;
        // Enter the job only while its gate is open.
        let mut cur = g;
        let entered = loop {
            if cur >> ID_SHIFT != seen || cur & OPEN == 0 {
                break false;
            }
            match s
                .gate
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break true,
                Err(now) => cur = now,
            }
        };
        if !entered {
            continue;
        }
        // SAFETY: published before the gate opened (Release/Acquire); the
        // dispatcher keeps the closure alive while any worker is inside.
        let job = unsafe { (*s.job.get()).expect("job published with the gate") };
        let f = unsafe { &*job };
        if catch_unwind(AssertUnwindSafe(|| f(index))).is_err() {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.gate.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        for (h, t) in self.workers.drain(..) {
            t.unpark();
            let _ = h.join();
        }
    }
}

/// The default thread count: the cores this process may use.
pub fn default_threads() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// A raw output pointer shared by the pieces of one split op, each of which
/// writes a disjoint set of elements (the caller's contract).
#[derive(Clone, Copy)]
pub(crate) struct SharedOut<T>(pub *mut T);
impl<T> SharedOut<T> {
    /// The pointer (a method, so closures capture the `Sync` wrapper rather
    /// than its raw-pointer field).
    pub(crate) fn ptr(self) -> *mut T {
        self.0
    }
}
// SAFETY: only used within one `Pool::run`, whose pieces write disjoint
// elements; the pointee outlives the run.
unsafe impl<T> Sync for SharedOut<T> {}
unsafe impl<T> Send for SharedOut<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces claimed from a counter, as the session's splits do.
    fn claim_all(p: &mut Pool, pieces: &[AtomicUsize]) -> bool {
        let next = AtomicUsize::new(0);
        p.run(&|_| loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= pieces.len() {
                break;
            }
            pieces[i].fetch_add(1, Ordering::Relaxed);
        })
    }

    #[test]
    fn every_piece_runs_exactly_once() {
        let mut p = Pool::new(3).unwrap();
        assert_eq!(p.threads(), 3);
        for round in 0..300 {
            let pieces: Vec<AtomicUsize> =
                (0..round % 37 + 1).map(|_| AtomicUsize::new(0)).collect();
            assert!(claim_all(&mut p, &pieces));
            assert!(
                pieces.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                "round {round}"
            );
        }
    }

    #[test]
    fn panics_are_contained_and_the_pool_survives() {
        let mut p = Pool::new(2).unwrap();
        assert!(!p.run(&|i| {
            if i == 0 {
                panic!("caller panic is contained");
            }
        }));
        // A worker panic: the caller waits (bounded) until a worker entered.
        let entered = AtomicBool::new(false);
        let ok = p.run(&|i| {
            if i == 0 {
                let t = Instant::now();
                while !entered.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(10) {
                    std::thread::yield_now();
                }
            } else {
                entered.store(true, Ordering::Release);
                panic!("worker panic is contained");
            }
        });
        assert!(entered.load(Ordering::Acquire), "no worker joined in 10 s");
        assert!(!ok);
        let pieces: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
        assert!(claim_all(&mut p, &pieces));
        assert!(pieces.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    /// A caller that waits for a worker longer than its own share leaves
    /// the next BACKOFF_MIN jobs to itself, then probes again; a job
    /// without a straggler resets the back-off.
    #[test]
    fn a_straggler_backs_the_pool_off() {
        use std::sync::atomic::AtomicU64;
        let mut p = Pool::new(2).unwrap();
        assert!(p.ready());
        let entered = AtomicBool::new(false);
        // The caller's own time in microseconds, +1 once it is known.
        let own_us = AtomicU64::new(0);
        assert!(p.run(&|i| {
            if i == 0 {
                let t = Instant::now();
                while !entered.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(10) {
                    std::thread::yield_now();
                }
                own_us.store(t.elapsed().as_micros() as u64 + 1, Ordering::Release);
            } else {
                entered.store(true, Ordering::Release);
                let mut own = 0;
                while own == 0 {
                    own = own_us.load(Ordering::Acquire);
                    std::hint::spin_loop();
                }
                // Well past the caller's own time.
                std::thread::sleep(Duration::from_micros(2 * own + 20_000));
            }
        }));
        assert!(entered.load(Ordering::Acquire), "no worker joined in 10 s");
        for _ in 0..BACKOFF_MIN {
            assert!(!p.ready());
        }
        assert!(p.ready());
        assert_eq!(p.backoff, 2 * BACKOFF_MIN);
        // A job whose workers finish long before the caller has no
        // straggler.
        assert!(p.run(&|i| {
            if i == 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
        assert!(p.ready());
        assert_eq!(p.backoff, BACKOFF_MIN);
    }

    #[test]
    fn single_thread_pool_runs_inline() {
        let mut p = Pool::new(0).unwrap();
        assert_eq!(p.threads(), 1);
        let n = AtomicUsize::new(0);
        assert!(p.run(&|i| {
            assert_eq!(i, 0);
            n.fetch_add(1, Ordering::Relaxed);
        }));
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }
}

//! Splitting the heavy int8 ops over a session's worker threads: the
//! session's threads and buffers ([`Workers`]) and the two ways to cut an
//! op into pieces ([`split_conv`], [`split_channels`]); each op's use of
//! them is in its file (`ops/qconv.rs`, `ops/qconv_sparse.rs`,
//! `ops/qgemm.rs`).
//!
//! Every split hands each thread whole output elements, computed by the same
//! kernel call they would get on one thread, so the bytes never depend on the
//! thread count (the tests compare 1..4 threads on every shared model).
//! Threads claim pieces from an atomic counter, which balances big.LITTLE
//! cores without changing any result.

use crate::error::{try_vec, Error};
use crate::kernels::Prepared;
use crate::pool::{Pool, SharedOut};
use std::sync::atomic::{AtomicUsize, Ordering};
use strix_kernels::driver::CONV_TILE;
use strix_kernels::reference::ConvGeometry;
use strix_kernels::Isa;

/// Below this many multiply-accumulates a node runs on the calling thread:
/// waking the workers (a few microseconds) would cost more than it saves.
/// The floor of every path; faster paths raise it ([`par_min_macs`]).
pub(crate) const PAR_MIN_MACS: usize = 100_000;

/// The split threshold of kernel path `isa`: the work of the same few
/// microseconds. A split costs about 4 us on a 2-vCPU x86 VM even with the
/// worker spinning (KWS, whose five split convs have 0.3-0.5M MACs each:
/// 0.050 ms on one thread, 0.070 ms on two), while the x86 paths run about
/// 0.1 MMAC per microsecond (VNNI; AVX2 about half), so the x86 thresholds
/// are the MACs of 10 us and 5 us. Other paths keep the floor (not
/// measured here; their cores are slower).
pub(crate) fn par_min_macs(isa: Isa) -> usize {
    match isa {
        Isa::Avx512Vnni | Isa::AvxVnni => 1_000_000,
        Isa::Avx2 => 500_000,
        _ => PAR_MIN_MACS,
    }
}

/// Pixel tiles narrower than this starve the 16-wide gemm micro-kernels.
const MIN_TILE: usize = 16;

/// A session's threads and their private buffers (allocated at prepare).
pub(crate) struct Workers {
    pool: Option<Pool>,
    /// Per thread: `sl` bytes of im2row scratch.
    scratch: Vec<i8>,
    sl: usize,
    /// Per thread: `tl` f32s of gemm output tile (int8 tiles use its bytes).
    tiles: Vec<f32>,
    tl: usize,
    /// f32 im2col columns of small f32 convs (used on the calling thread).
    scratch_f32: Vec<f32>,
    /// The packed convs' staged input, shared by the threads (read-only
    /// while they run).
    staged: Vec<i8>,
    /// Nodes with fewer multiply-accumulates run on the calling thread.
    min_macs: usize,
}

impl Workers {
    /// Buffers are reserved fallibly (an error, not an abort, when the
    /// system refuses) before any thread starts.
    pub(crate) fn new(p: &Prepared, threads: usize) -> crate::Result<Workers> {
        let threads = threads.max(1);
        let tl = if threads > 1 { p.tile } else { 0 };
        let per_thread = |len: usize, what: &str| {
            len.checked_mul(threads).ok_or_else(|| {
                Error::Argument(format!(
                    "{threads} threads of {len}-element {what} overflow"
                ))
            })
        };
        let scratch = try_vec(per_thread(p.scratch, "scratch")?, 0, "im2row scratch")?;
        let tiles = try_vec(per_thread(tl, "tiles")?, 0.0, "gemm output tiles")?;
        let scratch_f32 = try_vec(p.scratch_f32, 0.0, "f32 im2col scratch")?;
        let staged = try_vec(p.staged, 0, "packed conv staging")?;
        let pool = if threads > 1 {
            Some(
                Pool::new(threads)
                    .map_err(|e| Error::Argument(format!("cannot start {threads} threads: {e}")))?,
            )
        } else {
            None
        };
        Ok(Workers {
            min_macs: par_min_macs(p.isa),
            pool,
            scratch,
            sl: p.scratch,
            tiles,
            tl,
            scratch_f32,
            staged,
        })
    }

    pub(crate) fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, Pool::threads)
    }

    /// The pool, when the session has worker threads and the node has
    /// `macs` multiply-accumulates, enough to wake them.
    pub(crate) fn pool_for(&mut self, macs: usize) -> Option<&mut Pool> {
        eligible(&mut self.pool, macs, self.min_macs)
    }

    /// Lends the staging buffer out (a move, no allocation) while the
    /// workers are borrowed; give it back with [`Workers::put_staged`].
    pub(crate) fn take_staged(&mut self) -> Vec<i8> {
        std::mem::take(&mut self.staged)
    }

    pub(crate) fn put_staged(&mut self, staged: Vec<i8>) {
        self.staged = staged;
    }

    /// The f32 scratch (serial f32 convs).
    pub(crate) fn scratch_f32(&mut self) -> &mut [f32] {
        &mut self.scratch_f32
    }
}

fn failed() -> String {
    "a worker thread panicked".to_string()
}

/// One piece of a conv: output channels `c0..c1`, pixels `p0..p0 + t`, written
/// to `out` (channel-major, row stride `rs`) using `scratch` for im2row.
pub(crate) type ConvPiece<'a, T> =
    dyn Fn(usize, usize, usize, usize, &mut [i8], &mut [T], usize) + Sync + 'a;

/// `pool` when a node of `macs` multiply-accumulates is worth splitting:
/// at least `min` of them, and the pool not backing off ([`Pool::ready`]).
fn eligible(pool: &mut Option<Pool>, macs: usize, min: usize) -> Option<&mut Pool> {
    pool.as_mut()
        .filter(|_| macs >= min)
        .and_then(|p| p.ready().then_some(p))
}

/// Runs an ungrouped conv's pieces on every thread: pixel tiles when there are
/// enough pixels, otherwise slices of output channels. `macs` is the work the
/// conv really does (below the path's [`par_min_macs`] it runs on the
/// calling thread).
pub(crate) fn split_conv<T: Copy>(
    wk: &mut Workers,
    g: &ConvGeometry,
    macs: usize,
    out: &mut [T],
    piece: &ConvPiece<'_, T>,
) -> Result<(), String> {
    let threads = wk.threads();
    let p = g.out_h * g.out_w;
    let Workers {
        pool,
        scratch,
        sl,
        tiles,
        tl,
        min_macs,
        ..
    } = wk;
    let (sl, tl) = (*sl, *tl);
    let Some(pool) = eligible(pool, macs, *min_macs) else {
        piece(0, g.out_c, 0, p, &mut scratch[..sl], out, p);
        return Ok(());
    };
    let next = AtomicUsize::new(0);
    let (scr, til, dst) = (
        SharedOut(scratch.as_mut_ptr()),
        SharedOut(tiles.as_mut_ptr()),
        SharedOut(out.as_mut_ptr()),
    );
    let tile_elems = tl * 4 / std::mem::size_of::<T>();
    let tile = (p.div_ceil(2 * threads).div_ceil(MIN_TILE) * MIN_TILE).min(CONV_TILE);
    let ok = if p >= 2 * MIN_TILE {
        let n = p.div_ceil(tile);
        pool.run(&|w| {
            // SAFETY: thread `w` alone uses scratch/tile block `w`.
            let s = unsafe { std::slice::from_raw_parts_mut(scr.ptr().add(w * sl), sl) };
            let tb = unsafe {
                std::slice::from_raw_parts_mut(
                    (til.ptr() as *mut T).add(w * tile_elems),
                    tile_elems,
                )
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let (p0, t) = (i * tile, tile.min(p - i * tile));
                piece(0, g.out_c, p0, t, s, tb, t);
                for c in 0..g.out_c {
                    // SAFETY: pixels p0..p0+t of channel c belong to this
                    // piece only; the tile holds out_c rows of t values.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            tb.as_ptr().add(c * t),
                            dst.ptr().add(c * p + p0),
                            t,
                        )
                    };
                }
            }
        })
    } else {
        // Few pixels, many channels (the deep end of a network): split the
        // channels; each piece repeats the (small) im2row.
        let chunk = g.out_c.div_ceil(2 * threads).div_ceil(4) * 4;
        let n = g.out_c.div_ceil(chunk);
        pool.run(&|w| {
            // SAFETY: thread `w` alone uses scratch block `w`.
            let s = unsafe { std::slice::from_raw_parts_mut(scr.ptr().add(w * sl), sl) };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let (c0, c1) = (i * chunk, ((i + 1) * chunk).min(g.out_c));
                // SAFETY: rows c0..c1 of the output are this piece's alone.
                let o =
                    unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(c0 * p), (c1 - c0) * p) };
                let mut p0 = 0;
                while p0 < p {
                    let t = CONV_TILE.min(p - p0);
                    piece(c0, c1, p0, t, s, &mut o[p0..], p);
                    p0 += t;
                }
            }
        })
    };
    ok.then_some(()).ok_or_else(failed)
}

/// Runs `piece(c0, c1)` over slices of `channels` channels on every thread.
/// Every slice is a multiple of `quantum` channels but the last, which takes
/// the remainder (`quantum` is the width a kernel vectorises across
/// channels: a slice of 24 runs a 16-channel kernel once whole and once
/// overlapping, recomputing 8 channels, and one of 8 not at all).
pub(crate) fn split_channels(
    pool: &mut Pool,
    channels: usize,
    quantum: usize,
    piece: &(dyn Fn(usize, usize) + Sync),
) -> Result<(), String> {
    let chunk = channel_chunk(channels, quantum, pool.threads());
    let n = (channels / chunk).max(1);
    let next = AtomicUsize::new(0);
    pool.run(&|_| loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        piece(
            i * chunk,
            if i + 1 == n {
                channels
            } else {
                (i + 1) * chunk
            },
        );
    })
    .then_some(())
    .ok_or_else(failed)
}

/// The slice width [`split_channels`] cuts: a multiple of `quantum` (at
/// least 1 channel), two slices per thread where that keeps the threads
/// equally loaded (the second slice lets a thread that started late take
/// less), else one per thread.
fn channel_chunk(channels: usize, quantum: usize, threads: usize) -> usize {
    let q = quantum.max(1);
    // Whole quanta; the remainder rides on the last slice.
    let units = (channels / q).max(1);
    // Units on the busiest thread when slices of `c` units are claimed in
    // turn by `threads` equally fast threads.
    let span = |c: usize| (units / c).max(1).div_ceil(threads) * c + units % c;
    let two = (units / (2 * threads)).max(1);
    let one = (units / threads).max(1);
    (if span(two) <= span(one) { two } else { one }) * q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Channel slices are whole quanta but the last, cover every channel
    /// once, and load two threads evenly where the quanta allow.
    #[test]
    fn channel_slices_are_whole_quanta() {
        for threads in 1..=4 {
            for quantum in [1, 4, 16] {
                for channels in 1..=1000 {
                    let chunk = channel_chunk(channels, quantum, threads);
                    assert!(chunk >= 1 && chunk.is_multiple_of(quantum));
                    let n = (channels / chunk).max(1);
                    // The last slice holds the remainder: less than two
                    // chunks, and at least one quantum when there is one.
                    let last = channels - (n - 1) * chunk;
                    assert!(last < 2 * chunk, "{channels} {quantum} {threads}");
                    assert!(last >= quantum.min(channels));
                }
            }
        }
        // The depthwise widths of mobilenet_v2 on two threads.
        let two = |c| channel_chunk(c, 16, 2);
        assert_eq!(two(32), 16);
        assert_eq!(two(96), 16);
        assert_eq!(two(144), 32);
        assert_eq!(two(192), 48);
        assert_eq!(two(960), 240);
    }
}

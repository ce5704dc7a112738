//! Splitting the heavy int8 ops over a session's worker threads.
//!
//! Every split hands each thread whole output elements, computed by the same
//! kernel call they would get on one thread, so the bytes never depend on the
//! thread count (the tests compare 1..4 threads on every shared model).
//! Threads claim pieces from an atomic counter, which balances big.LITTLE
//! cores without changing any result.

use crate::kernels::Prepared;
use crate::pool::{Pool, SharedOut};
use std::sync::atomic::{AtomicUsize, Ordering};
use strix_kernels::driver::{self as drv, CONV_TILE};
use strix_kernels::reference::{ConvGeometry, QConvParams, QOut};
use strix_kernels::table::KernelSet;
use strix_kernels::Requant;

/// Below this many multiply-accumulates a node runs on the calling thread:
/// waking the workers (a few microseconds) would cost more than it saves.
const PAR_MIN_MACS: usize = 100_000;

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
}

impl Workers {
    pub(crate) fn new(p: &Prepared, threads: usize) -> std::io::Result<Workers> {
        let threads = threads.max(1);
        let pool = if threads > 1 {
            Some(Pool::new(threads)?)
        } else {
            None
        };
        let tl = if threads > 1 { p.tile } else { 0 };
        Ok(Workers {
            pool,
            scratch: vec![0; p.scratch * threads],
            sl: p.scratch,
            tiles: vec![0.0; tl * threads],
            tl,
            scratch_f32: vec![0.0; p.scratch_f32],
        })
    }

    pub(crate) fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, Pool::threads)
    }

    /// The f32 scratch (serial f32 convs).
    pub(crate) fn scratch_f32(&mut self) -> &mut [f32] {
        &mut self.scratch_f32
    }

    /// The first thread's scratch (for serial calls).
    pub(crate) fn scratch(&mut self) -> &mut [i8] {
        &mut self.scratch[..self.sl]
    }
}

fn failed() -> String {
    "a worker thread panicked".to_string()
}

/// One piece of a conv: output channels `c0..c1`, pixels `p0..p0 + t`, written
/// to `out` (channel-major, row stride `rs`) using `scratch` for im2row.
type ConvPiece<'a, T> = dyn Fn(usize, usize, usize, usize, &mut [i8], &mut [T], usize) + Sync + 'a;

/// Runs an ungrouped conv's pieces on every thread: pixel tiles when there are
/// enough pixels, otherwise slices of output channels.
fn split_conv<T: Copy>(
    wk: &mut Workers,
    g: &ConvGeometry,
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
        ..
    } = wk;
    let (sl, tl) = (*sl, *tl);
    let Some(pool) = pool.as_mut().filter(|_| g.macs() >= PAR_MIN_MACS) else {
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

/// [`drv::qs8_conv2d_gemm`] on the session's threads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_i8(
    wk: &mut Workers,
    ks: &KernelSet,
    g: &ConvGeometry,
    q: &QConvParams,
    x: &[i8],
    w: &[i8],
    fb: &[i32],
    rq: &[Requant],
    out: &mut [i8],
) -> Result<(), String> {
    let k = g.k();
    split_conv(wk, g, out, &|c0, c1, p0, t, s, o, rs| {
        if t == g.out_h * g.out_w && rs == t && c0 == 0 && c1 == g.out_c {
            drv::qs8_conv2d_gemm(ks, g, q, x, w, fb, rq, s, o);
        } else {
            drv::qs8_conv2d_gemm_tile(
                ks,
                g,
                q,
                x,
                &w[c0 * k..c1 * k],
                &fb[c0..c1],
                &rq[c0..c1],
                p0,
                t,
                s,
                o,
                rs,
            );
        }
    })
}

/// [`drv::qs8_conv2d_gemm_f32out`] on the session's threads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_f32(
    wk: &mut Workers,
    ks: &KernelSet,
    g: &ConvGeometry,
    in_zp: i32,
    act: (f32, f32),
    x: &[i8],
    w: &[i8],
    fb: &[i32],
    scale: &[f32],
    out: &mut [f32],
) -> Result<(), String> {
    let k = g.k();
    split_conv(wk, g, out, &|c0, c1, p0, t, s, o, rs| {
        if t == g.out_h * g.out_w && rs == t && c0 == 0 && c1 == g.out_c {
            drv::qs8_conv2d_gemm_f32out(ks, g, in_zp, act.0, act.1, x, w, fb, scale, s, o);
        } else {
            drv::qs8_conv2d_gemm_f32out_tile(
                ks,
                g,
                in_zp,
                act.0,
                act.1,
                x,
                &w[c0 * k..c1 * k],
                &fb[c0..c1],
                &scale[c0..c1],
                p0,
                t,
                s,
                o,
                rs,
            );
        }
    })
}

/// Runs `piece(c0, c1)` over slices of `channels` channels on every thread.
fn split_channels(
    pool: &mut Pool,
    channels: usize,
    piece: &(dyn Fn(usize, usize) + Sync),
) -> Result<(), String> {
    let threads = pool.threads();
    let chunk = channels.div_ceil(2 * threads).max(1);
    let n = channels.div_ceil(chunk);
    let next = AtomicUsize::new(0);
    pool.run(&|_| loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        piece(i * chunk, ((i + 1) * chunk).min(channels));
    })
    .then_some(())
    .ok_or_else(failed)
}

/// The depthwise kernel on the session's threads, split by channel (each
/// channel is an independent plane, so a channel slice is a smaller depthwise
/// conv of the same kind).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dwconv(
    wk: &mut Workers,
    ks: &KernelSet,
    g: &ConvGeometry,
    q: &QConvParams,
    x: &[i8],
    w: &[i8],
    b: &[i32],
    rq: &[Requant],
    out: &mut [i8],
) -> Result<(), String> {
    let Some(pool) = wk.pool.as_mut().filter(|_| g.macs() >= PAR_MIN_MACS) else {
        (ks.dwconv2d.run)(g, q, x, w, b, rq, out);
        return Ok(());
    };
    let (pi, po, kk) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
    let dst = SharedOut(out.as_mut_ptr());
    split_channels(pool, g.out_c, &|c0, c1| {
        let sub = ConvGeometry {
            in_c: c1 - c0,
            out_c: c1 - c0,
            groups: c1 - c0,
            ..*g
        };
        // SAFETY: output planes c0..c1 are this piece's alone.
        let o = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(c0 * po), (c1 - c0) * po) };
        let (xs, ws) = (&x[c0 * pi..c1 * pi], &w[c0 * kk..c1 * kk]);
        if c1 - c0 > 1 {
            (ks.dwconv2d.run)(&sub, q, xs, ws, &b[c0..c1], &rq[c0..c1], o);
        } else {
            // One channel is an ungrouped conv, not a depthwise geometry.
            strix_kernels::reference::qs8_conv2d(&sub, q, xs, ws, &b[c0..c1], &rq[c0..c1], o);
        }
    })
}

/// An int8 fully connected layer with one input row (`m == 1`), split by
/// output channel; other shapes run on the calling thread.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_i8(
    wk: &mut Workers,
    ks: &KernelSet,
    (m, n, k): (usize, usize, usize),
    w: &[i8],
    x: &[i8],
    fb: &[i32],
    rq: &[Requant],
    qo: &QOut,
    out: &mut [i8],
) -> Result<(), String> {
    let Some(pool) = wk.pool.as_mut().filter(|_| m == 1 && n * k >= PAR_MIN_MACS) else {
        (ks.gemm_nt.run)(n, m, k, w, x, fb, rq, qo, out, 1, n);
        return Ok(());
    };
    let dst = SharedOut(out.as_mut_ptr());
    split_channels(pool, n, &|c0, c1| {
        // SAFETY: with one input row, outputs c0..c1 are this piece's alone.
        let o = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(c0), c1 - c0) };
        (ks.gemm_nt.run)(
            c1 - c0,
            1,
            k,
            &w[c0 * k..c1 * k],
            x,
            &fb[c0..c1],
            &rq[c0..c1],
            qo,
            o,
            1,
            c1 - c0,
        );
    })
}

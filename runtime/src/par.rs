//! Splitting the heavy int8 ops over a session's worker threads.
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
use strix_kernels::driver::{self as drv, CONV_TILE};
use strix_kernels::reference::{ConvGeometry, QConvParams, QOut, SparseWeights};
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
        let pool = if threads > 1 {
            Some(
                Pool::new(threads)
                    .map_err(|e| Error::Argument(format!("cannot start {threads} threads: {e}")))?,
            )
        } else {
            None
        };
        Ok(Workers {
            pool,
            scratch,
            sl: p.scratch,
            tiles,
            tl,
            scratch_f32,
        })
    }

    pub(crate) fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, Pool::threads)
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
type ConvPiece<'a, T> = dyn Fn(usize, usize, usize, usize, &mut [i8], &mut [T], usize) + Sync + 'a;

/// Runs an ungrouped conv's pieces on every thread: pixel tiles when there are
/// enough pixels, otherwise slices of output channels. `macs` is the work the
/// conv really does (below [`PAR_MIN_MACS`] it runs on the calling thread).
fn split_conv<T: Copy>(
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
        ..
    } = wk;
    let (sl, tl) = (*sl, *tl);
    let Some(pool) = pool.as_mut().filter(|_| macs >= PAR_MIN_MACS) else {
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
    split_conv(wk, g, g.macs(), out, &|c0, c1, p0, t, s, o, rs| {
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

/// [`drv::qs8_conv2d_gemm_sparse`] on the session's threads: the dense
/// convs' pixel tiles or output-channel slices (row ranges of `w`). The
/// threshold counts the stored blocks' multiply-accumulates only.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_sparse(
    wk: &mut Workers,
    ks: &KernelSet,
    g: &ConvGeometry,
    q: &QConvParams,
    x: &[i8],
    w: &SparseWeights,
    fb: &[i32],
    rq: &[Requant],
    out: &mut [i8],
) -> Result<(), String> {
    let dense_blocks = (w.m() * w.k_blocks()).max(1);
    let macs = (g.macs() as u128 * w.nnz_blocks() as u128 / dense_blocks as u128) as usize;
    split_conv(wk, g, macs, out, &|c0, c1, p0, t, s, o, rs| {
        if t == g.out_h * g.out_w && rs == t && c0 == 0 && c1 == g.out_c {
            drv::qs8_conv2d_gemm_sparse(ks, g, q, x, w, fb, rq, s, o);
        } else {
            drv::qs8_conv2d_gemm_sparse_tile(
                ks,
                g,
                q,
                x,
                &w.rows(c0, c1),
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
    split_conv(wk, g, g.macs(), out, &|c0, c1, p0, t, s, o, rs| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use strix_kernels::driver::{fold_bias_sparse, sparse_conv_scratch_len};
    use strix_kernels::reference::{pack_sparse, qs8_conv2d, SPARSE_BLOCK};
    use strix_kernels::table::{kernels_for, SCALAR};
    use strix_kernels::{quantize_multiplier, Isa};

    /// Sparse convs split over 1-4 threads give the reference's bytes: pixel
    /// tiles (many pixels), channel slices (fewer than `2 * MIN_TILE` pixels,
    /// cut into row ranges of the sparse weights), and the serial fallback
    /// (too little stored work), on the reference and the detected path.
    #[test]
    fn sparse_convs_are_bit_identical_on_1_to_4_threads() {
        let mut s = 0x9e37_79b9u32;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        // (in_c, out_c, hw, kernel, zero fraction in %, splits?)
        let shapes = [
            (96, 24, 28, 1, 80, true), // 784 pixels: tiles
            (64, 40, 14, 3, 80, true), // 3x3, 196 pixels: tiles
            (256, 52, 5, 1, 70, true), // 25 pixels: channel slices
            (256, 19, 4, 3, 80, true), // 16 pixels, odd channels: slices
            (16, 8, 12, 1, 90, false), // under PAR_MIN_MACS: serial
        ];
        for (in_c, out_c, hw, kh, zero, splits) in shapes {
            let g = ConvGeometry {
                in_c,
                in_h: hw,
                in_w: hw,
                out_c,
                out_h: hw,
                out_w: hw,
                kh,
                kw: kh,
                stride_h: 1,
                stride_w: 1,
                dil_h: 1,
                dil_w: 1,
                pad_top: kh / 2,
                pad_left: kh / 2,
                groups: 1,
            };
            let k = g.k();
            let x: Vec<i8> = (0..g.input_len()).map(|_| rnd() as i8).collect();
            let mut w: Vec<i8> = (0..out_c * k).map(|_| (rnd() % 255) as i8).collect();
            for blk in w.chunks_mut(SPARSE_BLOCK) {
                if rnd() % 100 < zero {
                    blk.fill(0);
                }
            }
            let b: Vec<i32> = (0..out_c).map(|_| (rnd() % 20001) as i32 - 10000).collect();
            let rq: Vec<_> = (0..out_c)
                .map(|i| quantize_multiplier(0.0003 * (i % 5 + 1) as f64))
                .collect();
            let q = QConvParams {
                in_zp: -7,
                out_zp: 2,
                act_min: -128,
                act_max: 110,
            };
            let mut want = vec![0i8; g.output_len()];
            qs8_conv2d(&g, &q, &x, &w, &b, &rq, &mut want);
            let sp = pack_sparse(out_c, k, &w).unwrap();
            let sv = sp.view();
            let fb = fold_bias_sparse(&sv, &b, q.in_zp).unwrap();
            let work = g.macs() * sv.nnz_blocks() / (out_c * sv.k_blocks());
            assert_eq!(work >= PAR_MIN_MACS, splits, "{g:?}: {work} stored MACs");
            for ks in [&SCALAR, kernels_for(Isa::detect())] {
                let prepared = Prepared {
                    isa: ks.isa,
                    ks,
                    folded: vec![],
                    scratch: sparse_conv_scratch_len(&g),
                    tile: g.out_c * CONV_TILE.min(g.out_h * g.out_w),
                    scratch_f32: 0,
                    f16_as_f32: vec![],
                };
                for threads in 1..=4 {
                    let mut wk = Workers::new(&prepared, threads).unwrap();
                    // Twice: dirty scratch and tiles must not matter.
                    for _ in 0..2 {
                        let mut got = vec![0x5a; g.output_len()];
                        conv_sparse(&mut wk, ks, &g, &q, &x, &sv, &fb, &rq, &mut got).unwrap();
                        assert!(
                            got == want,
                            "{} {g:?}: {threads} threads differ from the reference",
                            ks.gemm_nt_sparse.name
                        );
                    }
                }
            }
        }
    }
}

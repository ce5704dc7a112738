//! int8 NT gemm with `sdot` (FEAT_DotProd), via `asm!`.
//!
//! An MR x NR register tile (MR, NR in {4, 2, 1}) keeps one int32x4
//! accumulator per output; each 16-byte step is one `sdot` per output (each
//! i32 lane adds four int8 products exactly).

use core::arch::aarch64::*;

use super::{dispatch_tile, pick, tail, Sink};

/// `acc += sum over 16 byte lanes of a * b`, in 4 i32 partial sums.
///
/// # Safety
/// The CPU implements FEAT_DotProd.
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn step(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: `sdot` only reads and writes the named vector registers; the
    // feature is guaranteed by the caller.
    core::arch::asm!(
        "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
}

/// One MR x NR tile at (i0, j0).
///
/// # Safety
/// Rows `i0..i0+MR` of `a` and `j0..j0+NR` of `b` (`k` bytes each, row stride
/// `k`) are readable; `bias.len() >= i0 + MR`; the CPU implements FEAT_DotProd.
#[inline]
#[target_feature(enable = "dotprod")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // register tile loops
unsafe fn tile<const MR: usize, const NR: usize, S: Sink>(
    i0: usize,
    j0: usize,
    k: usize,
    a: *const i8,
    b: *const i8,
    bias: &[i32],
    sink: &mut S,
) {
    // SAFETY (whole body): every pointer formed below addresses a byte of
    // rows i0..i0+MR of `a` or j0..j0+NR of `b`, below offset k (caller contract).
    let ap: [*const i8; MR] = core::array::from_fn(|r| a.add((i0 + r) * k));
    let bp: [*const i8; NR] = core::array::from_fn(|c| b.add((j0 + c) * k));
    let mut acc = [[vdupq_n_s32(0); NR]; MR];
    let mut off = 0;
    while off + 16 <= k {
        let av: [int8x16_t; MR] = core::array::from_fn(|r| vld1q_s8(ap[r].add(off)));
        let bv: [int8x16_t; NR] = core::array::from_fn(|c| vld1q_s8(bp[c].add(off)));
        for r in 0..MR {
            for c in 0..NR {
                acc[r][c] = step(acc[r][c], av[r], bv[c]);
            }
        }
        off += 16;
    }
    if off < k {
        let (av, bv) = tail(&ap, &bp, k, off);
        for r in 0..MR {
            for c in 0..NR {
                acc[r][c] = step(acc[r][c], av[r], bv[c]);
            }
        }
    }
    for r in 0..MR {
        let bi = bias[i0 + r];
        if NR == 4 {
            // Lane sums of the four accumulators, as one vector.
            let lo = vpaddq_s32(acc[r][0], acc[r][1]);
            let hi = vpaddq_s32(acc[r][2], acc[r][3]);
            let row = vaddq_s32(vpaddq_s32(lo, hi), vdupq_n_s32(bi));
            sink.put_row4(i0 + r, j0, core::mem::transmute::<int32x4_t, [i32; 4]>(row));
        } else {
            for c in 0..NR {
                sink.put(i0 + r, j0 + c, bi.wrapping_add(vaddvq_s32(acc[r][c])));
            }
        }
    }
}

/// The whole `m x n` product, tile by tile.
///
/// # Safety
/// `a` holds `m*k` readable bytes, `b` holds `n*k`, `bias.len() >= m`; the
/// CPU implements FEAT_DotProd.
#[target_feature(enable = "dotprod")]
pub(super) unsafe fn gemm<S: Sink>(
    m: usize,
    n: usize,
    k: usize,
    a: *const i8,
    b: *const i8,
    bias: &[i32],
    sink: &mut S,
) {
    let mut i = 0;
    while i < m {
        let mr = pick(m - i);
        let mut j = 0;
        while j < n {
            let nr = pick(n - j);
            // SAFETY: i + mr <= m and j + nr <= n, so the tile's rows are in bounds.
            dispatch_tile!(tile, mr, nr, i, j, k, a, b, bias, sink);
            j += nr;
        }
        i += mr;
    }
}

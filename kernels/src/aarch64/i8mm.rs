//! int8 NT gemm with `smmla` (FEAT_I8MM), via `asm!`.
//!
//! `smmla vd.4s, vn.16b, vm.16b` adds the 2x2 i32 product of a 2x8 int8 block
//! (`vn`: two 8-byte rows) and an 8x2 block (`vm`: two 8-byte columns) into
//! `vd = [r0.c0, r0.c1, r1.c0, r1.c1]`. Rows of `a` and rows of `b` are both
//! k-contiguous, so a pair of rows of either operand at the same k offset is
//! just two 8-byte loads into the halves of one vector: no packing needed.
//!
//! The main loop takes 16 bytes of k per row load and splits them into the
//! two pair vectors with `zip1`/`zip2` (8 bytes of k then uses 8-byte loads).
//!
//! A tile is MP row pairs x NP column pairs (MP, NP in {4, 2, 1}); an odd last
//! row (column) is paired with itself and its duplicate results are dropped.

use core::arch::aarch64::*;

use super::{dispatch_tile, pick, Sink};

/// `acc += a (2x8) * b (8x2)`.
///
/// # Safety
/// The CPU implements FEAT_I8MM.
#[inline]
#[target_feature(enable = "i8mm")]
unsafe fn step(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: `smmla` only reads and writes the named vector registers; the
    // feature is guaranteed by the caller.
    core::arch::asm!(
        "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
}

/// Two 8-byte rows side by side.
///
/// # Safety
/// 8 bytes are readable at `p0` and at `p1`.
#[inline(always)]
unsafe fn pair(p0: *const i8, p1: *const i8) -> int8x16_t {
    vcombine_s8(vld1_s8(p0), vld1_s8(p1))
}

/// One tile of MP row pairs x NP column pairs at (i0, j0), clipped to m x n.
///
/// # Safety
/// `i0 < m`, `j0 < n`; rows `0..m` of `a` and `0..n` of `b` (`k` bytes each,
/// row stride `k`) are readable; `bias.len() >= m`; the CPU implements FEAT_I8MM.
#[inline]
#[target_feature(enable = "i8mm")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // register tile loops
unsafe fn tile<const MP: usize, const NP: usize, S: Sink>(
    (i0, m): (usize, usize),
    (j0, n): (usize, usize),
    k: usize,
    a: *const i8,
    b: *const i8,
    bias: &[i32],
    sink: &mut S,
) {
    // Rows past the edge re-read the last valid row (results discarded).
    // SAFETY (whole body): every pointer formed below addresses a byte of a
    // row < m of `a` or < n of `b`, below offset k (caller contract).
    let ap: [[*const i8; 2]; MP] =
        core::array::from_fn(|p| [0, 1].map(|h| a.add((i0 + 2 * p + h).min(m - 1) * k)));
    let bp: [[*const i8; 2]; NP] =
        core::array::from_fn(|p| [0, 1].map(|h| b.add((j0 + 2 * p + h).min(n - 1) * k)));
    let mut acc = [[vdupq_n_s32(0); NP]; MP];
    let mut off = 0;
    // 16 bytes of k per step: one 16-byte load per row, then `zip1`/`zip2` on
    // 64-bit lanes make the two pair vectors (k 0..8 and k 8..16).
    while off + 16 <= k {
        let bv: [[int8x16_t; 2]; NP] = core::array::from_fn(|p| {
            let (x, y) = (
                vreinterpretq_s64_s8(vld1q_s8(bp[p][0].add(off))),
                vreinterpretq_s64_s8(vld1q_s8(bp[p][1].add(off))),
            );
            [
                vreinterpretq_s8_s64(vzip1q_s64(x, y)),
                vreinterpretq_s8_s64(vzip2q_s64(x, y)),
            ]
        });
        for r in 0..MP {
            let (x, y) = (
                vreinterpretq_s64_s8(vld1q_s8(ap[r][0].add(off))),
                vreinterpretq_s64_s8(vld1q_s8(ap[r][1].add(off))),
            );
            let (lo, hi) = (
                vreinterpretq_s8_s64(vzip1q_s64(x, y)),
                vreinterpretq_s8_s64(vzip2q_s64(x, y)),
            );
            for c in 0..NP {
                acc[r][c] = step(step(acc[r][c], lo, bv[c][0]), hi, bv[c][1]);
            }
        }
        off += 16;
    }
    if off + 8 <= k {
        let av: [int8x16_t; MP] =
            core::array::from_fn(|p| pair(ap[p][0].add(off), ap[p][1].add(off)));
        let bv: [int8x16_t; NP] =
            core::array::from_fn(|p| pair(bp[p][0].add(off), bp[p][1].add(off)));
        for r in 0..MP {
            for c in 0..NP {
                acc[r][c] = step(acc[r][c], av[r], bv[c]);
            }
        }
        off += 8;
    }
    let rem = k - off;
    if rem != 0 {
        // Zero-padded tails, laid out as the pair vectors themselves.
        let mut abuf = [[0i8; 16]; MP];
        let mut bbuf = [[0i8; 16]; NP];
        for p in 0..MP {
            for h in 0..2 {
                core::ptr::copy_nonoverlapping(
                    ap[p][h].add(off),
                    abuf[p].as_mut_ptr().add(8 * h),
                    rem,
                );
            }
        }
        for p in 0..NP {
            for h in 0..2 {
                core::ptr::copy_nonoverlapping(
                    bp[p][h].add(off),
                    bbuf[p].as_mut_ptr().add(8 * h),
                    rem,
                );
            }
        }
        let av: [int8x16_t; MP] = core::array::from_fn(|p| vld1q_s8(abuf[p].as_ptr()));
        let bv: [int8x16_t; NP] = core::array::from_fn(|p| vld1q_s8(bbuf[p].as_ptr()));
        for r in 0..MP {
            for c in 0..NP {
                acc[r][c] = step(acc[r][c], av[r], bv[c]);
            }
        }
    }
    for r in 0..MP {
        let i = i0 + 2 * r;
        let mut c = 0;
        // Two column blocks side by side are two full rows of 4 outputs.
        while c + 1 < NP && j0 + 2 * c + 4 <= n {
            let (x, y) = (
                vreinterpretq_s64_s32(acc[r][c]),
                vreinterpretq_s64_s32(acc[r][c + 1]),
            );
            for (h, row) in [vzip1q_s64(x, y), vzip2q_s64(x, y)].into_iter().enumerate() {
                if i + h < m {
                    let row = vaddq_s32(vreinterpretq_s32_s64(row), vdupq_n_s32(bias[i + h]));
                    sink.put_row4(
                        i + h,
                        j0 + 2 * c,
                        core::mem::transmute::<int32x4_t, [i32; 4]>(row),
                    );
                }
            }
            c += 2;
        }
        while c < NP {
            let lanes = core::mem::transmute::<int32x4_t, [i32; 4]>(acc[r][c]);
            for (idx, v) in lanes.into_iter().enumerate() {
                let (i, j) = (i + idx / 2, j0 + 2 * c + idx % 2);
                if i < m && j < n {
                    sink.put(i, j, bias[i].wrapping_add(v));
                }
            }
            c += 1;
        }
    }
}

/// The whole `m x n` product, tile by tile.
///
/// # Safety
/// `a` holds `m*k` readable bytes, `b` holds `n*k`, `bias.len() >= m`; the CPU
/// implements FEAT_I8MM.
#[target_feature(enable = "i8mm")]
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
        let mp = pick((m - i).div_ceil(2));
        let mut j = 0;
        while j < n {
            let np = pick((n - j).div_ceil(2));
            // SAFETY: i < m and j < n; the tile clamps its rows to m and n.
            dispatch_tile!(tile, mp, np, (i, m), (j, n), k, a, b, bias, sink);
            j += 2 * np;
        }
        i += 2 * mp;
    }
}

//! `qs8_gemm_nt_sparse` on baseline aarch64 Advanced SIMD.
//!
//! `b` is packed into the caller's scratch as i16, in groups of eight columns
//! (`panel[(g * kpad + kk) * 8 + c] = b[8g + c][kk]`, zero past `k` and past
//! `n`; `kpad` = `k` rounded up to whole 4-blocks), by an 8x8 `trn` transpose.
//! A 1x4 weight block is widened to an i16x4 vector; each of its four weights
//! multiplies the eight packed columns of its `k` by lane (`smlal`/`smlal2`
//! by element: exact i16 x i16 -> i32 products), for every group of a tile of
//! up to four groups (32 columns). Skipped blocks cost nothing. The output
//! stage is [`super::I8Sink`]'s vector requantization (bit-exact).

use core::arch::aarch64::*;

use super::sink::{I8Sink, Sink};
use crate::reference::{
    sparse_scratch_len, QOut, SparseWeights, SPARSE_BLOCK, SPARSE_SCRATCH_ALIGN,
};
use crate::requant::Requant;

/// [`crate::reference::qs8_gemm_nt_sparse`] on baseline Advanced SIMD; same
/// contract, bit-identical output. Runs on every aarch64 CPU.
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_nt_sparse__neon(
    n: usize,
    a: &SparseWeights,
    b: &[i8],
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: &mut [i8],
    rs: usize,
    cs: usize,
    scratch: &mut [i8],
) {
    let (m, k) = (a.m(), a.k());
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        n.checked_mul(k).is_some_and(|l| l <= b.len()) && bias.len() >= m && rq.len() >= m,
        "qs8_gemm_nt_sparse: buffers do not match m={m} n={n} k={k}"
    );
    assert!(
        scratch.len() >= sparse_scratch_len(n, k),
        "qs8_gemm_nt_sparse: scratch shorter than sparse_scratch_len"
    );
    let align = scratch.as_ptr().align_offset(SPARSE_SCRATCH_ALIGN);
    assert!(align < SPARSE_SCRATCH_ALIGN, "unalignable scratch");
    let mut sink = I8Sink { rq, q, out, rs, cs };
    // SAFETY: NEON is baseline; rows 0..n of `b` are in bounds (checked); the
    // aligned panel fits in `scratch` (`sparse_scratch_len` includes the
    // slack); block indices of a `SparseWeights` are below `k_blocks()`.
    unsafe {
        let panel = scratch.as_mut_ptr().add(align) as *mut i16;
        let kpad = a.k_blocks() * SPARSE_BLOCK;
        let ng = n.div_ceil(8);
        for g in 0..ng {
            pack_group(
                b.as_ptr().add(g * 8 * k),
                (n - g * 8).min(8),
                k,
                kpad,
                panel.add(g * kpad * 8),
            );
        }
        let mut g = 0;
        while g + 4 <= ng {
            tile::<4>(a, g, n, kpad, panel, bias, &mut sink);
            g += 4;
        }
        if g + 2 <= ng {
            tile::<2>(a, g, n, kpad, panel, bias, &mut sink);
            g += 2;
        }
        if g < ng {
            tile::<1>(a, g, n, kpad, panel, bias, &mut sink);
        }
    }
}

/// Packs `valid <= 8` rows of `b` (`k` bytes each) as i16 columns:
/// `dst[kk * 8 + c] = b[c][kk]`, zero for `kk >= k` or `c >= valid`.
///
/// Safety: `b` points at `valid` rows of `k` bytes; `dst` has room for
/// `kpad * 8` i16, `kpad >= k`.
#[inline(always)]
unsafe fn pack_group(b: *const i8, valid: usize, k: usize, kpad: usize, dst: *mut i16) {
    let mut kk = 0;
    while kk + 8 <= k {
        let r: [int16x8_t; 8] = core::array::from_fn(|c| {
            if c < valid {
                vmovl_s8(vld1_s8(b.add(c * k + kk)))
            } else {
                vdupq_n_s16(0)
            }
        });
        let t = |x: int16x8_t| vreinterpretq_s32_s16(x);
        let (t0, t1) = (vtrn1q_s16(r[0], r[1]), vtrn2q_s16(r[0], r[1]));
        let (t2, t3) = (vtrn1q_s16(r[2], r[3]), vtrn2q_s16(r[2], r[3]));
        let (t4, t5) = (vtrn1q_s16(r[4], r[5]), vtrn2q_s16(r[4], r[5]));
        let (t6, t7) = (vtrn1q_s16(r[6], r[7]), vtrn2q_s16(r[6], r[7]));
        let u = |x: int32x4_t| vreinterpretq_s64_s32(x);
        let (u0, u2) = (u(vtrn1q_s32(t(t0), t(t2))), u(vtrn2q_s32(t(t0), t(t2))));
        let (u1, u3) = (u(vtrn1q_s32(t(t1), t(t3))), u(vtrn2q_s32(t(t1), t(t3))));
        let (u4, u6) = (u(vtrn1q_s32(t(t4), t(t6))), u(vtrn2q_s32(t(t4), t(t6))));
        let (u5, u7) = (u(vtrn1q_s32(t(t5), t(t7))), u(vtrn2q_s32(t(t5), t(t7))));
        let cols = [
            vtrn1q_s64(u0, u4),
            vtrn1q_s64(u1, u5),
            vtrn1q_s64(u2, u6),
            vtrn1q_s64(u3, u7),
            vtrn2q_s64(u0, u4),
            vtrn2q_s64(u1, u5),
            vtrn2q_s64(u2, u6),
            vtrn2q_s64(u3, u7),
        ];
        for (x, v) in cols.iter().enumerate() {
            vst1q_s16(dst.add((kk + x) * 8), vreinterpretq_s16_s64(*v));
        }
        kk += 8;
    }
    for kk in kk..kpad {
        for c in 0..8 {
            let v = if c < valid && kk < k {
                *b.add(c * k + kk) as i16
            } else {
                0
            };
            *dst.add(kk * 8 + c) = v;
        }
    }
}

/// Every row of `a` against packed groups `g0..g0 + G`.
///
/// Safety: the groups are packed in `panel` with `kpad` rows each.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<const G: usize>(
    a: &SparseWeights,
    g0: usize,
    n: usize,
    kpad: usize,
    panel: *const i16,
    bias: &[i32],
    sink: &mut I8Sink,
) {
    let gstride = kpad * 8;
    let base = panel.add(g0 * gstride);
    for i in 0..a.m() {
        let (blocks, values) = a.row(i);
        let mut lo = [vdupq_n_s32(0); G];
        let mut hi = [vdupq_n_s32(0); G];
        for (&c, w) in blocks.iter().zip(values.chunks_exact(SPARSE_BLOCK)) {
            let w4 = u32::from_le_bytes([w[0] as u8, w[1] as u8, w[2] as u8, w[3] as u8]);
            let wv = vget_low_s16(vmovl_s8(vcreate_s8(w4 as u64)));
            // c < kpad / 4: the block's four k rows are inside each group.
            let bp = base.add(c as usize * SPARSE_BLOCK * 8);
            for g in 0..G {
                let p = bp.add(g * gstride);
                let (b0, b1, b2, b3) = (
                    vld1q_s16(p),
                    vld1q_s16(p.add(8)),
                    vld1q_s16(p.add(16)),
                    vld1q_s16(p.add(24)),
                );
                lo[g] = vmlal_lane_s16::<0>(lo[g], vget_low_s16(b0), wv);
                hi[g] = vmlal_high_lane_s16::<0>(hi[g], b0, wv);
                lo[g] = vmlal_lane_s16::<1>(lo[g], vget_low_s16(b1), wv);
                hi[g] = vmlal_high_lane_s16::<1>(hi[g], b1, wv);
                lo[g] = vmlal_lane_s16::<2>(lo[g], vget_low_s16(b2), wv);
                hi[g] = vmlal_high_lane_s16::<2>(hi[g], b2, wv);
                lo[g] = vmlal_lane_s16::<3>(lo[g], vget_low_s16(b3), wv);
                hi[g] = vmlal_high_lane_s16::<3>(hi[g], b3, wv);
            }
        }
        let vb = vdupq_n_s32(bias[i]);
        for g in 0..G {
            let j = (g0 + g) * 8;
            let valid = (n - j).min(8);
            let mut v = [0i32; 8];
            vst1q_s32(v.as_mut_ptr(), vaddq_s32(lo[g], vb));
            vst1q_s32(v.as_mut_ptr().add(4), vaddq_s32(hi[g], vb));
            if valid == 8 {
                sink.put_row4(i, j, [v[0], v[1], v[2], v[3]]);
                sink.put_row4(i, j + 4, [v[4], v[5], v[6], v[7]]);
            } else {
                for (c, &x) in v.iter().enumerate().take(valid) {
                    sink.put(i, j + c, x);
                }
            }
        }
    }
}

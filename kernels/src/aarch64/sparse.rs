//! `qs8_gemm_nt_sparse` on aarch64: baseline Advanced SIMD (`__neon`) and
//! FEAT_DotProd (`__dotprod`).
//!
//! Both pack `b` into the caller's scratch in groups of eight columns, `k`
//! padded to whole 4-blocks with zeros (and zero columns past `n`), then walk
//! every row's stored blocks against a tile of up to eight groups (64
//! columns, the conv driver's whole tile: the per-block work of loading and
//! preparing the weights is shared by all eight). Skipped blocks cost nothing.
//!
//! * `__neon`: the panel is i16 (`panel[(g * kpad + kk) * 8 + c] =
//!   b[8g + c][kk]`, an 8x8 `trn` transpose); a block's four weights multiply
//!   the eight columns of their `k` by lane (`smlal`/`smlal2` by element:
//!   exact i16 x i16 -> i32 products), 8 instructions per block and group.
//! * `__dotprod`: the panel stays int8 with the four `k` of a block adjacent
//!   (`panel[g * kpad * 8 + c * 32 + col * 4 + t] = b[8g + col][4c + t]`, a
//!   4x4 transpose of 32-bit words); the block's four weights, broadcast to
//!   every 32-bit lane, are one `sdot` per four columns (each lane adds its
//!   four int8 products exactly), 2 instructions per block and group.
//!
//! **Output stage.** Each accumulator pair holds eight consecutive outputs of
//! one row, so the requantization constants are per row, hoisted out of the
//! column loop. The vector requantization is [`crate::arm_shared::sink::I8Sink`]'s (`sqshl`,
//! skipped for rows without a left shift, where it is the identity;
//! `sqrdmulh`; gemmlowp's `sqadd` fixup + `srshl`), then the eight i32 are
//! narrowed with saturation (`sqxtn`) and the activation clamp runs on the
//! bytes: `[act_min, act_max]` lies inside the int8 range, so clamping the
//! saturated value equals clamping the i32. At high sparsity this stage is a
//! large part of the work, which is why it is not [`crate::arm_shared::sink::I8Sink`]'s
//! four-at-a-time scalar store.

use core::arch::aarch64::*;

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
    let Some(align) = check(n, a, b, bias, rq, q, scratch) else {
        return;
    };
    let mut o = Out {
        n,
        rq,
        q,
        out,
        rs,
        cs,
    };
    // SAFETY: NEON is baseline; `check` proved rows 0..n of `b` in bounds and
    // the aligned panel inside `scratch`; block indices of a `SparseWeights`
    // are below `k_blocks()`.
    unsafe {
        let panel = scratch.as_mut_ptr().add(align) as *mut i16;
        let (k, kpad) = (a.k(), a.k_blocks() * SPARSE_BLOCK);
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
        while g + 8 <= ng {
            tile::<8>(a, g, kpad, panel, bias, &mut o);
            g += 8;
        }
        if g + 4 <= ng {
            tile::<4>(a, g, kpad, panel, bias, &mut o);
            g += 4;
        }
        if g + 2 <= ng {
            tile::<2>(a, g, kpad, panel, bias, &mut o);
            g += 2;
        }
        if g < ng {
            tile::<1>(a, g, kpad, panel, bias, &mut o);
        }
    }
}

/// [`crate::reference::qs8_gemm_nt_sparse`] with `sdot`; same contract,
/// bit-identical output. Meant for CPUs with FEAT_DotProd; on others (the
/// kernel table's row contract) it runs [`qs8_gemm_nt_sparse__neon`].
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_nt_sparse__dotprod(
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
    if !super::has_dotprod() {
        return qs8_gemm_nt_sparse__neon(n, a, b, bias, rq, q, out, rs, cs, scratch);
    }
    let Some(align) = check(n, a, b, bias, rq, q, scratch) else {
        return;
    };
    let mut o = Out {
        n,
        rq,
        q,
        out,
        rs,
        cs,
    };
    // SAFETY: FEAT_DotProd is present (checked); `check` proved rows 0..n of
    // `b` in bounds and the aligned panel inside `scratch` (the int8 panel is
    // half the i16 one `sparse_scratch_len` sizes); block indices of a
    // `SparseWeights` are below `k_blocks()`.
    unsafe {
        let panel = scratch.as_mut_ptr().add(align);
        let (k, kpad) = (a.k(), a.k_blocks() * SPARSE_BLOCK);
        let ng = n.div_ceil(8);
        for g in 0..ng {
            pack_group_dot(
                b.as_ptr().add(g * 8 * k),
                (n - g * 8).min(8),
                k,
                kpad,
                panel.add(g * kpad * 8),
            );
        }
        let mut g = 0;
        while g + 8 <= ng {
            tile_dot::<8>(a, g, kpad, panel, bias, &mut o);
            g += 8;
        }
        if g + 4 <= ng {
            tile_dot::<4>(a, g, kpad, panel, bias, &mut o);
            g += 4;
        }
        if g + 2 <= ng {
            tile_dot::<2>(a, g, kpad, panel, bias, &mut o);
            g += 2;
        }
        if g < ng {
            tile_dot::<1>(a, g, kpad, panel, bias, &mut o);
        }
    }
}

/// The contract checks both kernels share. `None`: nothing to compute;
/// otherwise the offset that aligns the panel inside `scratch`.
fn check(
    n: usize,
    a: &SparseWeights,
    b: &[i8],
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    scratch: &[i8],
) -> Option<usize> {
    let (m, k) = (a.m(), a.k());
    if m == 0 || n == 0 {
        return None;
    }
    assert!(
        n.checked_mul(k).is_some_and(|l| l <= b.len()) && bias.len() >= m && rq.len() >= m,
        "qs8_gemm_nt_sparse: buffers do not match m={m} n={n} k={k}"
    );
    assert!(
        scratch.len() >= sparse_scratch_len(n, k),
        "qs8_gemm_nt_sparse: scratch shorter than sparse_scratch_len"
    );
    // The reference's `clamp` panics on these; keep that behaviour.
    assert!(
        q.act_min <= q.act_max,
        "qs8_gemm_nt_sparse: act_min > act_max"
    );
    let align = scratch.as_ptr().align_offset(SPARSE_SCRATCH_ALIGN);
    assert!(align < SPARSE_SCRATCH_ALIGN, "unalignable scratch");
    Some(align)
}

/// The output side.
struct Out<'a> {
    n: usize,
    rq: &'a [Requant],
    q: &'a QOut,
    out: &'a mut [i8],
    rs: usize,
    cs: usize,
}

/// Requantizes, clamps and stores row `i`'s accumulators for groups
/// `g0..g0 + G` (`acc[g]` = columns `8(g0 + g)..+4` and `+4..+8`, bias
/// included).
#[inline(always)]
unsafe fn emit<const G: usize>(o: &mut Out, i: usize, g0: usize, acc: &[[int32x4_t; 2]; G]) {
    let r = o.rq[i];
    let left = r.shift.max(0);
    let vleft = vdupq_n_s32(left);
    let mult = vdupq_n_s32(r.mult);
    // A negative `srshl` count is a rounding right shift.
    let sh = vdupq_n_s32(-(-r.shift).max(0));
    let zp = vdupq_n_s32(o.q.out_zp);
    let (lo, hi) = (vdup_n_s8(o.q.act_min), vdup_n_s8(o.q.act_max));
    let rq = |x: int32x4_t| {
        let x = if left > 0 { vqshlq_s32(x, vleft) } else { x };
        let x = vqrdmulhq_s32(x, mult);
        let fixup = vshrq_n_s32::<31>(vandq_s32(x, sh));
        vaddq_s32(vrshlq_s32(vqaddq_s32(x, fixup), sh), zp)
    };
    for (g, &[l, h]) in acc.iter().enumerate() {
        let x = vqmovn_s16(vcombine_s16(vqmovn_s32(rq(l)), vqmovn_s32(rq(h))));
        let x = vmin_s8(vmax_s8(x, lo), hi);
        let j = (g0 + g) * 8;
        let valid = (o.n - j).min(8);
        let at = i * o.rs + j * o.cs;
        if o.cs == 1 && valid == 8 {
            let dst = &mut o.out[at..at + 8];
            vst1_s8(dst.as_mut_ptr(), x);
        } else {
            let mut v = [0i8; 8];
            vst1_s8(v.as_mut_ptr(), x);
            for (c, &x) in v.iter().enumerate().take(valid) {
                o.out[at + c * o.cs] = x;
            }
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
    // 16 k at a time: transposing the int8 bytes (two 8x8 byte transposes
    // side by side in q registers) and widening afterwards takes a third
    // fewer instructions than widening first; with few output channels this
    // packing is a large share of the kernel.
    while kk + 16 <= k {
        let r: [int8x16_t; 8] = core::array::from_fn(|c| {
            if c < valid {
                vld1q_s8(b.add(c * k + kk))
            } else {
                vdupq_n_s8(0)
            }
        });
        // Bytes, then halfwords, then words: after the last step vector x
        // holds k = kk + x (low 8 bytes) and kk + x + 8 (high), column c at
        // byte c of each half.
        let t: [int8x16_t; 8] = core::array::from_fn(|i| {
            let (x, y) = (r[i & !1], r[i | 1]);
            if i & 1 == 0 {
                vtrn1q_s8(x, y)
            } else {
                vtrn2q_s8(x, y)
            }
        });
        let h = |x: int8x16_t| vreinterpretq_s16_s8(x);
        // u[4q + d]: rows 4q..4q + 4 of k = kk + d (+4, +8, +12), d in 0..4.
        let u: [int16x8_t; 8] = core::array::from_fn(|i| {
            let (q, d) = (i / 4, i % 4);
            let (x, y) = (h(t[4 * q + (d & 1)]), h(t[4 * q + 2 + (d & 1)]));
            if d < 2 {
                vtrn1q_s16(x, y)
            } else {
                vtrn2q_s16(x, y)
            }
        });
        let w = |x: int16x8_t| vreinterpretq_s32_s16(x);
        for d in 0..4 {
            // k = kk + d | kk + d + 8, and kk + d + 4 | kk + d + 12.
            let e = vreinterpretq_s8_s32(vtrn1q_s32(w(u[d]), w(u[4 + d])));
            let o = vreinterpretq_s8_s32(vtrn2q_s32(w(u[d]), w(u[4 + d])));
            vst1q_s16(dst.add((kk + d) * 8), vmovl_s8(vget_low_s8(e)));
            vst1q_s16(dst.add((kk + d + 8) * 8), vmovl_high_s8(e));
            vst1q_s16(dst.add((kk + d + 4) * 8), vmovl_s8(vget_low_s8(o)));
            vst1q_s16(dst.add((kk + d + 12) * 8), vmovl_high_s8(o));
        }
        kk += 16;
    }
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

/// Every row of `a` against packed i16 groups `g0..g0 + G`.
///
/// Safety: the groups are packed in `panel` with `kpad` rows each.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<const G: usize>(
    a: &SparseWeights,
    g0: usize,
    kpad: usize,
    panel: *const i16,
    bias: &[i32],
    o: &mut Out,
) {
    let gstride = kpad * 8;
    let base = panel.add(g0 * gstride);
    for i in 0..a.m() {
        let (blocks, values) = a.row(i);
        // The bias starts the sum: i32 addition is associative.
        let mut acc = [[vdupq_n_s32(bias[i]); 2]; G];
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
                let [lo, hi] = &mut acc[g];
                *lo = vmlal_lane_s16::<0>(*lo, vget_low_s16(b0), wv);
                *hi = vmlal_high_lane_s16::<0>(*hi, b0, wv);
                *lo = vmlal_lane_s16::<1>(*lo, vget_low_s16(b1), wv);
                *hi = vmlal_high_lane_s16::<1>(*hi, b1, wv);
                *lo = vmlal_lane_s16::<2>(*lo, vget_low_s16(b2), wv);
                *hi = vmlal_high_lane_s16::<2>(*hi, b2, wv);
                *lo = vmlal_lane_s16::<3>(*lo, vget_low_s16(b3), wv);
                *hi = vmlal_high_lane_s16::<3>(*hi, b3, wv);
            }
        }
        emit::<G>(o, i, g0, &acc);
    }
}

/// Packs `valid <= 8` rows of `b` (`k` bytes each) for `sdot`:
/// `dst[c * 32 + col * 4 + t] = b[col][4c + t]`, zero for `4c + t >= k` or
/// `col >= valid`.
///
/// Safety: `b` points at `valid` rows of `k` bytes; `dst` has room for
/// `kpad * 8` bytes, `kpad` = `k` rounded up to whole blocks.
#[inline(always)]
unsafe fn pack_group_dot(b: *const i8, valid: usize, k: usize, kpad: usize, dst: *mut i8) {
    for half in 0..2 {
        let c0 = half * 4;
        let mut kk = 0;
        while kk + 16 <= k {
            // Row q: the 32-bit words of blocks kk/4 .. kk/4 + 4.
            let r: [uint32x4_t; 4] = core::array::from_fn(|q| {
                if c0 + q < valid {
                    vreinterpretq_u32_s8(vld1q_s8(b.add((c0 + q) * k + kk)))
                } else {
                    vdupq_n_u32(0)
                }
            });
            // 4x4 transpose of words: word x of row q -> vector x, lane q.
            let (t0, t1) = (vtrn1q_u32(r[0], r[1]), vtrn2q_u32(r[0], r[1]));
            let (t2, t3) = (vtrn1q_u32(r[2], r[3]), vtrn2q_u32(r[2], r[3]));
            let u = |x: uint32x4_t| vreinterpretq_u64_u32(x);
            let cols = [
                vtrn1q_u64(u(t0), u(t2)),
                vtrn1q_u64(u(t1), u(t3)),
                vtrn2q_u64(u(t0), u(t2)),
                vtrn2q_u64(u(t1), u(t3)),
            ];
            for (x, v) in cols.iter().enumerate() {
                let blk = kk / SPARSE_BLOCK + x;
                vst1q_s8(dst.add(blk * 32 + c0 * 4), vreinterpretq_s8_u64(*v));
            }
            kk += 16;
        }
        for kk in kk..kpad {
            for q in 0..4 {
                let col = c0 + q;
                let v = if col < valid && kk < k {
                    *b.add(col * k + kk)
                } else {
                    0
                };
                *dst.add((kk / SPARSE_BLOCK) * 32 + col * 4 + kk % SPARSE_BLOCK) = v;
            }
        }
    }
}

/// `acc += ` the four-byte dot products of `b` and `w`, per 32-bit lane.
///
/// Safety: the CPU implements FEAT_DotProd.
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn sdot(mut acc: int32x4_t, b: int8x16_t, w: int8x16_t) -> int32x4_t {
    // SAFETY: `sdot` only reads and writes the named vector registers; the
    // feature is guaranteed by the caller. (The intrinsic is unstable.)
    core::arch::asm!(
        "sdot {acc:v}.4s, {b:v}.16b, {w:v}.16b",
        acc = inout(vreg) acc,
        b = in(vreg) b,
        w = in(vreg) w,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
}

/// Every row of `a` against `sdot`-packed groups `g0..g0 + G`.
///
/// Safety: FEAT_DotProd; the groups are packed in `panel` (`kpad * 8` bytes
/// each).
#[inline]
#[target_feature(enable = "dotprod")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_dot<const G: usize>(
    a: &SparseWeights,
    g0: usize,
    kpad: usize,
    panel: *const i8,
    bias: &[i32],
    o: &mut Out,
) {
    let gstride = kpad * 8;
    let base = panel.add(g0 * gstride);
    for i in 0..a.m() {
        let (blocks, values) = a.row(i);
        // The bias starts the sum: i32 addition is associative.
        let mut acc = [[vdupq_n_s32(bias[i]); 2]; G];
        for (&c, w) in blocks.iter().zip(values.chunks_exact(SPARSE_BLOCK)) {
            // The block's four weights in every 32-bit lane.
            let w4 = i32::from_le_bytes([w[0] as u8, w[1] as u8, w[2] as u8, w[3] as u8]);
            let wv = vreinterpretq_s8_s32(vdupq_n_s32(w4));
            // c < kpad / 4: the block's 32 bytes are inside each group.
            let bp = base.add(c as usize * 32);
            for g in 0..G {
                let p = bp.add(g * gstride);
                acc[g][0] = sdot(acc[g][0], vld1q_s8(p), wv);
                acc[g][1] = sdot(acc[g][1], vld1q_s8(p.add(16)), wv);
            }
        }
        emit::<G>(o, i, g0, &acc);
    }
}

//! [`crate::reference::qs8_gemm_4x16c4`] on aarch64: a 4-channel x 16-pixel
//! register tile over all of K from the packed layouts, with the output
//! stage fused (requantize, zero point, clamp, one 16-byte store per channel).
//!
//! * `__dotprod`: per K group of four, one 16-byte weight load, four 16-byte
//!   panel loads and 16 `sdot` by element (`sdot acc.4s, panel.16b,
//!   w.4b[r]`: lane `i` of `acc` is pixel `4q + i` of channel `r`), the shape
//!   of XNNPACK's `qs8-gemm/4x16c4-minmax-*-neondot`.
//! * `__neon` (baseline ARMv8-A): two passes of eight pixels, each one asm K
//!   loop ([`kloop_neon`]); per channel and pixel pair `smull`/`smull2` of
//!   the panel against the channel's four weights (replicated by `ld1r`),
//!   then `sadalp`, and a final pairwise add. Channel groups whose `pairs`
//!   flag is set ([`crate::reference::pairable_4c4`], computed once at
//!   prepare) add a second K group's products in i16 (`smlal`) before the
//!   `sadalp`; without the flag each i16 holds one product, so `-128 *
//!   -128` cannot overflow. Each pass's output stage runs on the registers
//!   the loop left (8 bytes per channel).
//!
//! The accumulators are the reference's exactly (integer sums), and the
//! output stage is [`super::Sink`]'s bit-exact vector requantization, so the
//! output is bit-identical to the reference.

use core::arch::aarch64::*;

use super::has_dotprod;
use crate::reference::{QOut, PACK_MR, PACK_NR};
use crate::requant::Requant;

/// Requantizes four accumulators of one channel (16 pixels) and narrows them
/// to int8, clamped: bit-identical to `clamp_i8(requantize(x, r) + zp)`
/// (`sqshl`, `sqrdmulh`, sign fix-up and `srshl` as in `arm_shared::sink`;
/// the saturating narrows cannot change a value the clamp keeps, since the
/// clamp bounds lie inside the int8 range).
///
/// With `shift < 0` (no left shift: multipliers below 1/2, the usual case)
/// a shorter stage gives the same bytes: the sign fix-up `(v & right) >> 31`
/// is `v >> 31` and `v + (v >> 31)` cannot wrap (`sqrdmulh` never returns
/// `i32::MIN`), so one `ssra` replaces `and`, `sshr` and `sqadd`; and
/// `|v| <= 2^30` after a right shift, so the zero point can be added after
/// the first saturating narrow (`sqadd` in i16: a value saturated to i16
/// stays beyond the int8 range after adding an int8 zero point, and the
/// clamp gives the same bound).
#[inline(always)]
unsafe fn requant16(x: [int32x4_t; 4], r: Requant, q: &QOut) -> int8x16_t {
    if r.shift < 0 && (-128..=127).contains(&q.out_zp) {
        let mult = vdupq_n_s32(r.mult);
        let right = vdupq_n_s32(r.shift);
        let zp = vdupq_n_s16(q.out_zp as i16);
        let f = |v: int32x4_t| {
            let v = vqrdmulhq_s32(v, mult);
            vrshlq_s32(vsraq_n_s32::<31>(v, v), right)
        };
        let lo = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(f(x[0])), f(x[1])), zp);
        let hi = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(f(x[2])), f(x[3])), zp);
        let v = vqmovn_high_s16(vqmovn_s16(lo), hi);
        return vminq_s8(vmaxq_s8(v, vdupq_n_s8(q.act_min)), vdupq_n_s8(q.act_max));
    }
    let left = vdupq_n_s32(r.shift.max(0));
    let mult = vdupq_n_s32(r.mult);
    let right = vdupq_n_s32(-(-r.shift).max(0));
    let zp = vdupq_n_s32(q.out_zp);
    let f = |v: int32x4_t| {
        let v = vqrdmulhq_s32(vqshlq_s32(v, left), mult);
        let fixup = vshrq_n_s32::<31>(vandq_s32(v, right));
        vaddq_s32(vrshlq_s32(vqaddq_s32(v, fixup), right), zp)
    };
    let lo = vcombine_s16(vqmovn_s32(f(x[0])), vqmovn_s32(f(x[1])));
    let hi = vcombine_s16(vqmovn_s32(f(x[2])), vqmovn_s32(f(x[3])));
    let v = vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi));
    vminq_s8(vmaxq_s8(v, vdupq_n_s8(q.act_min)), vdupq_n_s8(q.act_max))
}

/// Stores the first `n` bytes of `v` at `dst`.
#[inline(always)]
unsafe fn store(v: int8x16_t, dst: *mut i8, n: usize) {
    if n == PACK_NR {
        vst1q_s8(dst, v);
    } else {
        let mut buf = [0i8; PACK_NR];
        vst1q_s8(buf.as_mut_ptr(), v);
        core::ptr::copy_nonoverlapping(buf.as_ptr(), dst, n);
    }
}

/// The checks that keep the raw-pointer tile loops in bounds.
#[allow(clippy::too_many_arguments)]
fn check(
    m: usize,
    n: usize,
    kb: usize,
    a: &[i8],
    b: &[i8],
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: &[i8],
    rs: usize,
) {
    // Checked products: a `kb` or `rs` whose byte counts wrap must fail
    // here, not pass with a small wrapped size.
    let need_a = m
        .div_ceil(PACK_MR)
        .checked_mul(kb)
        .and_then(|x| x.checked_mul(16));
    let need_b = kb.checked_mul(64);
    let need_out = (m.max(1) - 1)
        .checked_mul(rs)
        .and_then(|x| x.checked_add(n));
    assert!(
        n <= PACK_NR
            && need_a.is_some_and(|x| a.len() >= x)
            && need_b.is_some_and(|x| b.len() >= x)
            && bias.len() >= m
            && rq.len() >= m
            && (m == 0 || n == 0 || need_out.is_some_and(|x| out.len() >= x)),
        "qs8_gemm_4x16c4: buffers do not match m {m} n {n} kb {kb}"
    );
    assert!(q.act_min <= q.act_max, "clamp: act_min > act_max");
}

/// The K loop of one dotprod tile: `acc[r][q] += panel quad q . weights of
/// channel r`, over `kb >= 1` groups. One asm loop, so that each group is two
/// loads (`ld1` of the 64-byte panel group into four consecutive registers,
/// and of the 16 weight bytes, both post-incremented), 16 `sdot` by element
/// and the loop branch: the accumulators live in v0-v15, the operands in
/// v16-v20 (fixed registers: `ld1` of four needs consecutive ones).
///
/// # Safety
/// `a` and `b` address `kb` readable groups (16 and 64 bytes each); the CPU
/// implements FEAT_DotProd.
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn kloop_dot(acc: &mut [[int32x4_t; 4]; 4], kb: usize, a: *const i8, b: *const i8) {
    let [[c00, c01, c02, c03], [c10, c11, c12, c13], [c20, c21, c22, c23], [c30, c31, c32, c33]] =
        acc;
    core::arch::asm!(
        "2:",
        "ld1 {{v16.16b, v17.16b, v18.16b, v19.16b}}, [{b}], #64",
        "ld1 {{v20.16b}}, [{a}], #16",
        "sdot v0.4s, v16.16b, v20.4b[0]",
        "sdot v1.4s, v17.16b, v20.4b[0]",
        "sdot v2.4s, v18.16b, v20.4b[0]",
        "sdot v3.4s, v19.16b, v20.4b[0]",
        "sdot v4.4s, v16.16b, v20.4b[1]",
        "sdot v5.4s, v17.16b, v20.4b[1]",
        "sdot v6.4s, v18.16b, v20.4b[1]",
        "sdot v7.4s, v19.16b, v20.4b[1]",
        "sdot v8.4s, v16.16b, v20.4b[2]",
        "sdot v9.4s, v17.16b, v20.4b[2]",
        "sdot v10.4s, v18.16b, v20.4b[2]",
        "sdot v11.4s, v19.16b, v20.4b[2]",
        "sdot v12.4s, v16.16b, v20.4b[3]",
        "sdot v13.4s, v17.16b, v20.4b[3]",
        "sdot v14.4s, v18.16b, v20.4b[3]",
        "sdot v15.4s, v19.16b, v20.4b[3]",
        "subs {n}, {n}, #1",
        "b.ne 2b",
        a = inout(reg) a => _,
        b = inout(reg) b => _,
        n = inout(reg) kb => _,
        inout("v0") *c00, inout("v1") *c01, inout("v2") *c02, inout("v3") *c03,
        inout("v4") *c10, inout("v5") *c11, inout("v6") *c12, inout("v7") *c13,
        inout("v8") *c20, inout("v9") *c21, inout("v10") *c22, inout("v11") *c23,
        inout("v12") *c30, inout("v13") *c31, inout("v14") *c32, inout("v15") *c33,
        out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _,
        options(nostack, readonly),
    );
}

#[target_feature(enable = "dotprod")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_dot(
    m: usize,
    n: usize,
    kb: usize,
    a: *const i8,
    b: *const i8,
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: *mut i8,
    rs: usize,
) {
    let mut i0 = 0;
    while i0 < m {
        let mr = (m - i0).min(PACK_MR);
        if mr == PACK_MR {
            // A whole tile, unrolled so the accumulators stay in registers
            // (a loop over the tile's rows kept them on the stack: on short
            // K the tile's set-up and output stage cost as much as the dot
            // products).
            full_tile_dot(
                kb,
                a.add(i0 / PACK_MR * kb * 16),
                b,
                &bias[i0..i0 + 4],
                &rq[i0..i0 + 4],
                q,
                out.add(i0 * rs),
                rs,
                n,
            );
            i0 += PACK_MR;
            continue;
        }
        let mut acc: [[int32x4_t; 4]; 4] =
            core::array::from_fn(|r| [vdupq_n_s32(if r < mr { bias[i0 + r] } else { 0 }); 4]);
        if kb > 0 {
            kloop_dot(&mut acc, kb, a.add(i0 / PACK_MR * kb * 16), b);
        }
        for r in 0..mr {
            let v = requant16(acc[r], rq[i0 + r], q);
            store(v, out.add((i0 + r) * rs), n);
        }
        i0 += PACK_MR;
    }
}

/// Four channels (`bias`, `rq`: four each) of [`gemm_dot`]'s tile, written
/// to `out + r * rs`, `n` pixels each.
///
/// # Safety
/// As [`kloop_dot`]; four rows of `n` writable bytes at `out`, `rs` apart.
#[inline]
#[target_feature(enable = "dotprod")]
#[allow(clippy::too_many_arguments)]
unsafe fn full_tile_dot(
    kb: usize,
    a: *const i8,
    b: *const i8,
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: *mut i8,
    rs: usize,
    n: usize,
) {
    let bp = bias.as_ptr();
    let mut acc: [[int32x4_t; 4]; 4] = [
        [vld1q_dup_s32(bp); 4],
        [vld1q_dup_s32(bp.add(1)); 4],
        [vld1q_dup_s32(bp.add(2)); 4],
        [vld1q_dup_s32(bp.add(3)); 4],
    ];
    if kb > 0 {
        kloop_dot(&mut acc, kb, a, b);
    }
    let [c0, c1, c2, c3] = acc;
    let v = [
        requant16(c0, rq[0], q),
        requant16(c1, rq[1], q),
        requant16(c2, rq[2], q),
        requant16(c3, rq[3], q),
    ];
    if n == PACK_NR {
        vst1q_s8(out, v[0]);
        vst1q_s8(out.add(rs), v[1]);
        vst1q_s8(out.add(2 * rs), v[2]);
        vst1q_s8(out.add(3 * rs), v[3]);
    } else {
        for (r, v) in v.into_iter().enumerate() {
            store(v, out.add(r * rs), n);
        }
    }
}

/// One 8-pixel half (`h` = 0 or 1) of a 4-channel tile without dot products.
#[inline(always)]
unsafe fn half_neon(kb: usize, a: *const i8, b: *const i8) -> [[int32x4_t; 2]; 4] {
    // acc[r][2q + s]: channel r, pixel pair (4q + 2s, 4q + 2s + 1), lanes
    // [k01, k23] of each pixel.
    let mut acc = [[vdupq_n_s32(0); 4]; 4];
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kb {
        let w = vreinterpretq_s32_s8(vld1q_s8(ap));
        let bv = [vld1q_s8(bp), vld1q_s8(bp.add(16))];
        let wr = [
            vreinterpretq_s8_s32(vdupq_laneq_s32::<0>(w)),
            vreinterpretq_s8_s32(vdupq_laneq_s32::<1>(w)),
            vreinterpretq_s8_s32(vdupq_laneq_s32::<2>(w)),
            vreinterpretq_s8_s32(vdupq_laneq_s32::<3>(w)),
        ];
        for r in 0..4 {
            for q in 0..2 {
                let lo = vmull_s8(vget_low_s8(bv[q]), vget_low_s8(wr[r]));
                let hi = vmull_high_s8(bv[q], wr[r]);
                acc[r][2 * q] = vpadalq_s16(acc[r][2 * q], lo);
                acc[r][2 * q + 1] = vpadalq_s16(acc[r][2 * q + 1], hi);
            }
        }
        ap = ap.add(16);
        bp = bp.add(64);
    }
    core::array::from_fn(|r| {
        [
            vpaddq_s32(acc[r][0], acc[r][1]),
            vpaddq_s32(acc[r][2], acc[r][3]),
        ]
    })
}

/// The K loop of one 8-pixel half of a NEON tile: `acc[4r + 2q + s]` (lanes
/// `[k01, k23]` of pixels `4q + 2s` and `4q + 2s + 1` of the half, channel
/// `r`) gains the products of `kb` K groups. Each group's four channel
/// weights are replicated by `ld1r` (one load per channel, no `dup`), the
/// half's two panel vectors are the first or last 32 bytes of the group.
/// With `pair`, two groups per step: the second group's products are added to
/// the first's in i16 (`smlal`/`smlal2`) before one `sadalp`, so 16 products
/// take three instructions instead of four; safe only for weights that never
/// hold -128 in the same byte of groups `2i` and `2i + 1` (|w1 x1 + w2 x2| <=
/// 2^14 + 127 * 128 < 2^15; only -128 * -128 twice overflows), i.e. where
/// [`crate::reference::pairable_4c4`] says so.
/// One asm loop each (accumulators v0-v15, panel v16-v19, weights v20-v27,
/// products v28-v31), ending on `subs`/`b.ne`.
///
/// # Safety
/// `a` addresses `kb` groups of 16 readable bytes, `b` `kb` groups of 64
/// bytes of which the half's 32 (at `b`, so `b` is the group base plus 0 or
/// 32) are read; `pair` as above.
#[inline(always)]
unsafe fn kloop_neon(acc: &mut [int32x4_t; 16], kb: usize, pair: bool, a: *const i8, b: *const i8) {
    let [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15] = acc;
    let (mut a, mut b) = (a, b);
    let pairs = if pair { kb / 2 } else { 0 };
    if pairs > 0 {
        core::arch::asm!(
            "2:",
            "ld1r {{v20.4s}}, [{a}], #4",
            "ld1r {{v21.4s}}, [{a}], #4",
            "ld1r {{v22.4s}}, [{a}], #4",
            "ld1r {{v23.4s}}, [{a}], #4",
            "ld1r {{v24.4s}}, [{a}], #4",
            "ld1r {{v25.4s}}, [{a}], #4",
            "ld1r {{v26.4s}}, [{a}], #4",
            "ld1r {{v27.4s}}, [{a}], #4",
            "ldp q18, q19, [{b}, #64]",
            "ld1 {{v16.16b, v17.16b}}, [{b}], {step}",
            "smull v28.8h, v16.8b, v20.8b",
            "smull2 v29.8h, v16.16b, v20.16b",
            "smlal v28.8h, v18.8b, v24.8b",
            "smlal2 v29.8h, v18.16b, v24.16b",
            "sadalp v0.4s, v28.8h",
            "sadalp v1.4s, v29.8h",
            "smull v30.8h, v17.8b, v20.8b",
            "smull2 v31.8h, v17.16b, v20.16b",
            "smlal v30.8h, v19.8b, v24.8b",
            "smlal2 v31.8h, v19.16b, v24.16b",
            "sadalp v2.4s, v30.8h",
            "sadalp v3.4s, v31.8h",
            "smull v28.8h, v16.8b, v21.8b",
            "smull2 v29.8h, v16.16b, v21.16b",
            "smlal v28.8h, v18.8b, v25.8b",
            "smlal2 v29.8h, v18.16b, v25.16b",
            "sadalp v4.4s, v28.8h",
            "sadalp v5.4s, v29.8h",
            "smull v30.8h, v17.8b, v21.8b",
            "smull2 v31.8h, v17.16b, v21.16b",
            "smlal v30.8h, v19.8b, v25.8b",
            "smlal2 v31.8h, v19.16b, v25.16b",
            "sadalp v6.4s, v30.8h",
            "sadalp v7.4s, v31.8h",
            "smull v28.8h, v16.8b, v22.8b",
            "smull2 v29.8h, v16.16b, v22.16b",
            "smlal v28.8h, v18.8b, v26.8b",
            "smlal2 v29.8h, v18.16b, v26.16b",
            "sadalp v8.4s, v28.8h",
            "sadalp v9.4s, v29.8h",
            "smull v30.8h, v17.8b, v22.8b",
            "smull2 v31.8h, v17.16b, v22.16b",
            "smlal v30.8h, v19.8b, v26.8b",
            "smlal2 v31.8h, v19.16b, v26.16b",
            "sadalp v10.4s, v30.8h",
            "sadalp v11.4s, v31.8h",
            "smull v28.8h, v16.8b, v23.8b",
            "smull2 v29.8h, v16.16b, v23.16b",
            "smlal v28.8h, v18.8b, v27.8b",
            "smlal2 v29.8h, v18.16b, v27.16b",
            "sadalp v12.4s, v28.8h",
            "sadalp v13.4s, v29.8h",
            "smull v30.8h, v17.8b, v23.8b",
            "smull2 v31.8h, v17.16b, v23.16b",
            "smlal v30.8h, v19.8b, v27.8b",
            "smlal2 v31.8h, v19.16b, v27.16b",
            "sadalp v14.4s, v30.8h",
            "sadalp v15.4s, v31.8h",

            "subs {n}, {n}, #1",
            "b.ne 2b",
            a = inout(reg) a,
            b = inout(reg) b,
            n = inout(reg) pairs => _,
            step = in(reg) 128usize,
            inout("v0") *c0, inout("v1") *c1, inout("v2") *c2, inout("v3") *c3,
            inout("v4") *c4, inout("v5") *c5, inout("v6") *c6, inout("v7") *c7,
            inout("v8") *c8, inout("v9") *c9, inout("v10") *c10, inout("v11") *c11,
            inout("v12") *c12, inout("v13") *c13, inout("v14") *c14, inout("v15") *c15,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            out("v24") _, out("v25") _, out("v26") _, out("v27") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack, readonly),
        );
    }
    let rest = kb - 2 * pairs;
    if rest > 0 {
        core::arch::asm!(
            "2:",
            "ld1r {{v20.4s}}, [{a}], #4",
            "ld1r {{v21.4s}}, [{a}], #4",
            "ld1r {{v22.4s}}, [{a}], #4",
            "ld1r {{v23.4s}}, [{a}], #4",
            "ld1 {{v16.16b, v17.16b}}, [{b}], {step}",
            "smull v28.8h, v16.8b, v20.8b",
            "smull2 v29.8h, v16.16b, v20.16b",
            "sadalp v0.4s, v28.8h",
            "sadalp v1.4s, v29.8h",
            "smull v30.8h, v17.8b, v20.8b",
            "smull2 v31.8h, v17.16b, v20.16b",
            "sadalp v2.4s, v30.8h",
            "sadalp v3.4s, v31.8h",
            "smull v28.8h, v16.8b, v21.8b",
            "smull2 v29.8h, v16.16b, v21.16b",
            "sadalp v4.4s, v28.8h",
            "sadalp v5.4s, v29.8h",
            "smull v30.8h, v17.8b, v21.8b",
            "smull2 v31.8h, v17.16b, v21.16b",
            "sadalp v6.4s, v30.8h",
            "sadalp v7.4s, v31.8h",
            "smull v28.8h, v16.8b, v22.8b",
            "smull2 v29.8h, v16.16b, v22.16b",
            "sadalp v8.4s, v28.8h",
            "sadalp v9.4s, v29.8h",
            "smull v30.8h, v17.8b, v22.8b",
            "smull2 v31.8h, v17.16b, v22.16b",
            "sadalp v10.4s, v30.8h",
            "sadalp v11.4s, v31.8h",
            "smull v28.8h, v16.8b, v23.8b",
            "smull2 v29.8h, v16.16b, v23.16b",
            "sadalp v12.4s, v28.8h",
            "sadalp v13.4s, v29.8h",
            "smull v30.8h, v17.8b, v23.8b",
            "smull2 v31.8h, v17.16b, v23.16b",
            "sadalp v14.4s, v30.8h",
            "sadalp v15.4s, v31.8h",

            "subs {n}, {n}, #1",
            "b.ne 2b",
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            n = inout(reg) rest => _,
            step = in(reg) 64usize,
            inout("v0") *c0, inout("v1") *c1, inout("v2") *c2, inout("v3") *c3,
            inout("v4") *c4, inout("v5") *c5, inout("v6") *c6, inout("v7") *c7,
            inout("v8") *c8, inout("v9") *c9, inout("v10") *c10, inout("v11") *c11,
            inout("v12") *c12, inout("v13") *c13, inout("v14") *c14, inout("v15") *c15,
            out("v16") _, out("v17") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack, readonly),
        );
    }
}

/// The output stage of one 8-pixel half of a NEON tile: per channel `r`,
/// `bias[r]` plus the pairwise sums of `acc` (layout of [`kloop_neon`]),
/// requantized by `rq[r]` as [`requant16`] does, `cnt <= 8` bytes stored at
/// `out + r * rs`. Channels go two to a vector for the int8 narrow, the
/// clamp and the two 8-byte stores.
///
/// # Safety
/// `bias` and `rq` address four values; four rows of `cnt` writable bytes
/// at `out`, `rs` apart.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_half(
    acc: &[int32x4_t; 16],
    bias: *const i32,
    rq: *const Requant,
    short: bool,
    q: &QOut,
    out: *mut i8,
    rs: usize,
    cnt: usize,
) {
    let (lo, hi) = (vdupq_n_s8(q.act_min), vdupq_n_s8(q.act_max));
    // Unrolled by hand (channel pairs 0-1 and 2-3) so that the accumulators
    // stay in the registers the K loop left them in.
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15] = *acc;
    let v = vqmovn_high_s16(
        vqmovn_s16(chan_neon([a0, a1, a2, a3], bias, *rq, short, q)),
        chan_neon([a4, a5, a6, a7], bias.add(1), *rq.add(1), short, q),
    );
    store_pair(vminq_s8(vmaxq_s8(v, lo), hi), out, out.add(rs), cnt);
    let v = vqmovn_high_s16(
        vqmovn_s16(chan_neon(
            [a8, a9, a10, a11],
            bias.add(2),
            *rq.add(2),
            short,
            q,
        )),
        chan_neon([a12, a13, a14, a15], bias.add(3), *rq.add(3), short, q),
    );
    store_pair(
        vminq_s8(vmaxq_s8(v, lo), hi),
        out.add(2 * rs),
        out.add(3 * rs),
        cnt,
    );
}

/// One channel of [`finish_half`]: `*bias` plus the pairwise sums of its
/// four accumulators, requantized by `r` as [`requant16`] does, as eight
/// i16 lanes with the zero point added (saturating as `requant16`'s stages
/// do, so the int8 narrow and clamp that follow give its bytes).
///
/// # Safety
/// `bias` addresses one value.
#[inline(always)]
unsafe fn chan_neon(
    acc: [int32x4_t; 4],
    bias: *const i32,
    r: Requant,
    short: bool,
    q: &QOut,
) -> int16x8_t {
    let bi = vld1q_dup_s32(bias);
    let x0 = vaddq_s32(vpaddq_s32(acc[0], acc[1]), bi);
    let x1 = vaddq_s32(vpaddq_s32(acc[2], acc[3]), bi);
    if short {
        let mult = vdupq_n_s32(r.mult);
        let right = vdupq_n_s32(r.shift);
        let f = |v: int32x4_t| {
            let v = vqrdmulhq_s32(v, mult);
            vrshlq_s32(vsraq_n_s32::<31>(v, v), right)
        };
        vqaddq_s16(
            vqmovn_high_s32(vqmovn_s32(f(x0)), f(x1)),
            vdupq_n_s16(q.out_zp as i16),
        )
    } else {
        let left = vdupq_n_s32(r.shift.max(0));
        let mult = vdupq_n_s32(r.mult);
        let right = vdupq_n_s32(-(-r.shift).max(0));
        let zp = vdupq_n_s32(q.out_zp);
        let f = |v: int32x4_t| {
            let v = vqrdmulhq_s32(vqshlq_s32(v, left), mult);
            let fixup = vshrq_n_s32::<31>(vandq_s32(v, right));
            vaddq_s32(vrshlq_s32(vqaddq_s32(v, fixup), right), zp)
        };
        vcombine_s16(vqmovn_s32(f(x0)), vqmovn_s32(f(x1)))
    }
}

/// Stores the low 8 bytes of `v` at `o0` and the high 8 at `o1`, the first
/// `cnt <= 8` of each.
#[inline(always)]
unsafe fn store_pair(v: int8x16_t, o0: *mut i8, o1: *mut i8, cnt: usize) {
    if cnt == 8 {
        vst1_s8(o0, vget_low_s8(v));
        vst1_s8(o1, vget_high_s8(v));
    } else {
        let mut buf = [0i8; 16];
        vst1q_s8(buf.as_mut_ptr(), v);
        core::ptr::copy_nonoverlapping(buf.as_ptr(), o0, cnt);
        core::ptr::copy_nonoverlapping(buf.as_ptr().add(8), o1, cnt);
    }
}

/// One whole 4-channel tile of [`gemm_neon`]: `n` pixels (one half when
/// `n <= 8`) over `kb` groups, written to `out + r * rs`.
///
/// # Safety
/// As [`kloop_neon`] for each half read; `bias` and `rq` address four
/// values; four rows of `n` writable bytes at `out`, `rs` apart.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_neon(
    kb: usize,
    pair: bool,
    a: *const i8,
    b: *const i8,
    bias: *const i32,
    rq: *const Requant,
    q: &QOut,
    out: *mut i8,
    rs: usize,
    n: usize,
) {
    // The short output stage (see `requant16`) when every channel of the
    // tile shifts right.
    let short = (-128..=127).contains(&q.out_zp) && (0..4).all(|r| (*rq.add(r)).shift < 0);
    let mut h = 0;
    while 8 * h < n {
        let mut acc = [vdupq_n_s32(0); 16];
        kloop_neon(&mut acc, kb, pair, a, b.add(32 * h));
        finish_half(
            &acc,
            bias,
            rq,
            short,
            q,
            out.add(8 * h),
            rs,
            (n - 8 * h).min(8),
        );
        h += 1;
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn gemm_neon(
    m: usize,
    n: usize,
    kb: usize,
    a: *const i8,
    pairs: &[bool],
    b: *const i8,
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: *mut i8,
    rs: usize,
) {
    let mut i0 = 0;
    while i0 < m {
        let ap = a.add(i0 / PACK_MR * kb * 16);
        let pair = pairs.get(i0 / PACK_MR).copied().unwrap_or(false);
        if m - i0 >= PACK_MR {
            tile_neon(
                kb,
                pair,
                ap,
                b,
                bias.as_ptr().add(i0),
                rq.as_ptr().add(i0),
                q,
                out.add(i0 * rs),
                rs,
                n,
            );
        } else {
            // The last, partial channel group: its packed rows past `m` are
            // zero; they get a copy of a real channel's constants and a
            // scratch tile, and only the real rows are copied out.
            let mr = m - i0;
            let bi: [i32; PACK_MR] = core::array::from_fn(|r| bias[i0 + r.min(mr - 1)]);
            let rqs: [Requant; PACK_MR] = core::array::from_fn(|r| rq[i0 + r.min(mr - 1)]);
            let mut tile = [0i8; PACK_MR * PACK_NR];
            tile_neon(
                kb,
                pair,
                ap,
                b,
                bi.as_ptr(),
                rqs.as_ptr(),
                q,
                tile.as_mut_ptr(),
                PACK_NR,
                n,
            );
            for r in 0..mr {
                core::ptr::copy_nonoverlapping(
                    tile.as_ptr().add(r * PACK_NR),
                    out.add((i0 + r) * rs),
                    n,
                );
            }
        }
        i0 += PACK_MR;
    }
}

/// [`crate::reference::qs8_gemm_4x16c4`] on baseline aarch64 Advanced SIMD.
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_4x16c4__neon(
    m: usize,
    n: usize,
    kb: usize,
    a: &[i8],
    pairs: &[bool],
    b: &[i8],
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: &mut [i8],
    rs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    check(m, n, kb, a, b, bias, rq, q, out, rs);
    // SAFETY: `check` bounds every load (weight groups of rows 0..m, the
    // panel's kb groups; the second half is read only when n > 8, within
    // the 64-byte groups) and store (rows 0..m, n bytes each).
    unsafe {
        gemm_neon(
            m,
            n,
            kb,
            a.as_ptr(),
            pairs,
            b.as_ptr(),
            bias,
            rq,
            q,
            out.as_mut_ptr(),
            rs,
        )
    }
}

/// [`crate::reference::qs8_gemm_4x16c4`] with `sdot` (FEAT_DotProd); runs
/// `__neon` on CPUs without it.
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_4x16c4__dotprod(
    m: usize,
    n: usize,
    kb: usize,
    a: &[i8],
    pairs: &[bool],
    b: &[i8],
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: &mut [i8],
    rs: usize,
) {
    if !has_dotprod() {
        return qs8_gemm_4x16c4__neon(m, n, kb, a, pairs, b, bias, rq, q, out, rs);
    }
    if m == 0 || n == 0 {
        return;
    }
    check(m, n, kb, a, b, bias, rq, q, out, rs);
    // SAFETY: as in `__neon`; FEAT_DotProd checked above.
    unsafe {
        gemm_dot(
            m,
            n,
            kb,
            a.as_ptr(),
            b.as_ptr(),
            bias,
            rq,
            q,
            out.as_mut_ptr(),
            rs,
        )
    }
}

/// The f32 output stage of one channel's 16 pixels: `scvtf`, `fmul`, then
/// the clamp as compare-and-select, so that `-0.0` stays `-0.0` as in
/// `f32::clamp` (`fmax` would turn it into `+0.0`). Stores the first `n`.
#[inline(always)]
unsafe fn store_f32(x: [int32x4_t; 4], scale: f32, lo: f32, hi: f32, dst: *mut f32, n: usize) {
    let (s, vlo, vhi) = (vdupq_n_f32(scale), vdupq_n_f32(lo), vdupq_n_f32(hi));
    let mut buf = [0f32; PACK_NR];
    let full = n == PACK_NR;
    for (q, v) in x.into_iter().enumerate() {
        let f = vmulq_f32(vcvtq_f32_s32(v), s);
        let f = vbslq_f32(vcltq_f32(f, vlo), vlo, f);
        let f = vbslq_f32(vcgtq_f32(f, vhi), vhi, f);
        if full {
            vst1q_f32(dst.add(4 * q), f);
        } else {
            vst1q_f32(buf.as_mut_ptr().add(4 * q), f);
        }
    }
    if !full {
        core::ptr::copy_nonoverlapping(buf.as_ptr(), dst, n);
    }
}

/// The checks of [`check`] for the f32 variant.
#[allow(clippy::too_many_arguments)]
fn check_f32(
    m: usize,
    n: usize,
    kb: usize,
    a: &[i8],
    b: &[i8],
    bias: &[i32],
    scale: &[f32],
    lo: f32,
    hi: f32,
    out: &[f32],
    rs: usize,
) {
    let need_a = m
        .div_ceil(PACK_MR)
        .checked_mul(kb)
        .and_then(|x| x.checked_mul(16));
    let need_b = kb.checked_mul(64);
    let need_out = (m.max(1) - 1)
        .checked_mul(rs)
        .and_then(|x| x.checked_add(n));
    assert!(
        n <= PACK_NR
            && need_a.is_some_and(|x| a.len() >= x)
            && need_b.is_some_and(|x| b.len() >= x)
            && bias.len() >= m
            && scale.len() >= m
            && (m == 0 || n == 0 || need_out.is_some_and(|x| out.len() >= x)),
        "qs8_gemm_4x16c4_f32out: buffers do not match m {m} n {n} kb {kb}"
    );
    assert!(lo <= hi, "clamp: lo > hi");
}

/// [`crate::reference::qs8_gemm_4x16c4_f32out`] on baseline aarch64 Advanced SIMD.
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_4x16c4_f32out__neon(
    m: usize,
    n: usize,
    kb: usize,
    a: &[i8],
    b: &[i8],
    bias: &[i32],
    scale: &[f32],
    lo: f32,
    hi: f32,
    out: &mut [f32],
    rs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    check_f32(m, n, kb, a, b, bias, scale, lo, hi, out, rs);
    // SAFETY: as in `qs8_gemm_4x16c4__neon` (the same loads; stores of n
    // floats per channel row, bounded by `check_f32`).
    unsafe {
        let (a, b, o) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
        let mut i0 = 0;
        while i0 < m {
            let mr = (m - i0).min(PACK_MR);
            let ap = a.add(i0 / PACK_MR * kb * 16);
            let lo4 = half_neon(kb, ap, b);
            let hi4 = if n > 8 {
                half_neon(kb, ap, b.add(32))
            } else {
                [[vdupq_n_s32(0); 2]; 4]
            };
            for r in 0..mr {
                let bi = vdupq_n_s32(bias[i0 + r]);
                let x = [
                    vaddq_s32(lo4[r][0], bi),
                    vaddq_s32(lo4[r][1], bi),
                    vaddq_s32(hi4[r][0], bi),
                    vaddq_s32(hi4[r][1], bi),
                ];
                store_f32(x, scale[i0 + r], lo, hi, o.add((i0 + r) * rs), n);
            }
            i0 += PACK_MR;
        }
    }
}

#[target_feature(enable = "dotprod")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_dot_f32(
    m: usize,
    n: usize,
    kb: usize,
    a: *const i8,
    b: *const i8,
    bias: &[i32],
    scale: &[f32],
    lo: f32,
    hi: f32,
    out: *mut f32,
    rs: usize,
) {
    let mut i0 = 0;
    while i0 < m {
        let mr = (m - i0).min(PACK_MR);
        let mut acc: [[int32x4_t; 4]; 4] =
            core::array::from_fn(|r| [vdupq_n_s32(if r < mr { bias[i0 + r] } else { 0 }); 4]);
        if kb > 0 {
            kloop_dot(&mut acc, kb, a.add(i0 / PACK_MR * kb * 16), b);
        }
        for r in 0..mr {
            store_f32(acc[r], scale[i0 + r], lo, hi, out.add((i0 + r) * rs), n);
        }
        i0 += PACK_MR;
    }
}

/// [`crate::reference::qs8_gemm_4x16c4_f32out`] with `sdot`; `__neon` on
/// CPUs without FEAT_DotProd.
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_4x16c4_f32out__dotprod(
    m: usize,
    n: usize,
    kb: usize,
    a: &[i8],
    b: &[i8],
    bias: &[i32],
    scale: &[f32],
    lo: f32,
    hi: f32,
    out: &mut [f32],
    rs: usize,
) {
    if !has_dotprod() {
        return qs8_gemm_4x16c4_f32out__neon(m, n, kb, a, b, bias, scale, lo, hi, out, rs);
    }
    if m == 0 || n == 0 {
        return;
    }
    check_f32(m, n, kb, a, b, bias, scale, lo, hi, out, rs);
    // SAFETY: as in `__neon`; FEAT_DotProd checked above.
    unsafe {
        gemm_dot_f32(
            m,
            n,
            kb,
            a.as_ptr(),
            b.as_ptr(),
            bias,
            scale,
            lo,
            hi,
            out.as_mut_ptr(),
            rs,
        )
    }
}

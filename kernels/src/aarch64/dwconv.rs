//! Depthwise `qs8_conv2d` on baseline aarch64 Advanced SIMD, vectorised along
//! the output width (16 outputs per step, then 8).
//!
//! Input rows come zero-point-padded from [`super::dwrows`], so every output
//! takes the vector path. Per tap: one load (`ld1`, or `ld2` for stride 2,
//! whose first register holds exactly the even bytes, i.e. the stride-2
//! subsample), `ssubl` of the input zero point (exact in i16: |x - zp| <= 255)
//! and `smlal`/`smlal2` by the weight into i32 accumulators (exact products,
//! |p| <= 32385; the reference's accumulator bound keeps the sums in i32).
//! Integer addition is associative, so the accumulator equals the
//! reference's; the output stage is [`super::requant`]'s bit-exact one.

use core::arch::aarch64::*;

use super::dwrows::{for_each_row, Plan, RowJob};
use super::requant::{pack16, pack8, OutQ, RqV};
use crate::reference::{self, ConvGeometry, QConvParams};
use crate::requant::Requant;

/// Depthwise [`reference::qs8_conv2d`] on Advanced SIMD: the reference
/// contract plus `groups == in_c == out_c`; bit-identical output. Other
/// geometries, `stride_w > 2`, zero points outside the int8 range and
/// kernels spanning more than 32 input rows run the reference. Runs on every
/// aarch64 CPU.
#[allow(non_snake_case)]
pub fn qs8_dwconv2d__neon(
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    bias: &[i32],
    rq: &[Requant],
    output: &mut [i8],
) {
    let depthwise = g.is_valid() && g.groups == g.in_c && g.groups == g.out_c;
    let zps = (-128..=127).contains(&q.in_zp) && (-128..=127).contains(&q.out_zp);
    let plan = if depthwise && zps { Plan::new(g) } else { None };
    let Some(plan) = plan else {
        return reference::qs8_conv2d(g, q, input, weights, bias, rq, output);
    };
    assert!(
        input.len() >= g.input_len()
            && weights.len() >= g.weight_len()
            && bias.len() >= g.out_c
            && rq.len() >= g.out_c
            && output.len() >= g.output_len(),
        "qs8_dwconv2d: buffers do not match the geometry"
    );
    if g.output_len() == 0 {
        return;
    }
    assert!(q.act_min <= q.act_max, "qs8_dwconv2d: act_min > act_max");
    let o = OutQ::new(q.out_zp, q.act_min, q.act_max);
    // SAFETY (zp vector): Advanced SIMD is baseline on aarch64.
    let zp = unsafe { vdup_n_s8(q.in_zp as i8) };
    let (kw, dil) = (g.kw, g.dil_w);
    let mut last = usize::MAX;
    let mut r = RqV::splat(rq[0]);
    // SAFETY: the geometry is a valid depthwise one, the plan is its own and
    // the buffer lengths were checked above; `row` reads only what the job
    // describes (see `row`).
    unsafe {
        for_each_row(g, &plan, q.in_zp as i8, input, weights, output, |c, job| {
            if c != last {
                r = RqV::splat(rq[c]);
                last = c;
            }
            let b = bias[c];
            match (g.stride_w, kw) {
                (1, 3) => row::<1, 3>(job, 3, dil, zp, b, &r, &o),
                (2, 3) => row::<2, 3>(job, 3, dil, zp, b, &r, &o),
                (1, _) => row::<1, 0>(job, kw, dil, zp, b, &r, &o),
                _ => row::<2, 0>(job, kw, dil, zp, b, &r, &o),
            }
        })
    }
}

/// One input vector of tap `kx` for `LANES` (8 or 16) outputs from `p`
/// (already at the block's first output): plain bytes for stride 1, the even
/// bytes of twice as many for stride 2.
#[inline(always)]
unsafe fn load16<const S: usize>(p: *const i8) -> int8x16_t {
    if S == 1 {
        vld1q_s8(p)
    } else {
        vld2q_s8(p).0
    }
}

#[inline(always)]
unsafe fn load8<const S: usize>(p: *const i8) -> int8x8_t {
    if S == 1 {
        vld1_s8(p)
    } else {
        vld2_s8(p).0
    }
}

/// All outputs of one job: stride `S`, `KW` taps per row (0: `kw` at run time).
///
/// # Safety
/// As [`RowJob`] describes: each tap row holds the padded inputs of `n`
/// rounded up to 8 outputs, each weight pointer `kw` weights, `out` `n` bytes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn row<const S: usize, const KW: usize>(
    job: &RowJob,
    kw: usize,
    dil: usize,
    zp: int8x8_t,
    bias: i32,
    r: &RqV,
    o: &OutQ,
) {
    let kw = if KW == 0 { kw } else { KW };
    let zp16 = vcombine_s8(zp, zp);
    let b = vdupq_n_s32(bias);
    let n = job.n;
    let mut ox = 0;
    while ox + 16 <= n {
        let mut acc = [b; 4];
        for &(p, w) in job.taps {
            let p = p.add(ox * S);
            for kx in 0..kw {
                let wv = *w.add(kx) as i16;
                let x = load16::<S>(p.add(kx * dil));
                let lo = vsubl_s8(vget_low_s8(x), zp);
                let hi = vsubl_high_s8(x, zp16);
                acc[0] = vmlal_n_s16(acc[0], vget_low_s16(lo), wv);
                acc[1] = vmlal_high_n_s16(acc[1], lo, wv);
                acc[2] = vmlal_n_s16(acc[2], vget_low_s16(hi), wv);
                acc[3] = vmlal_high_n_s16(acc[3], hi, wv);
            }
        }
        vst1q_s8(job.out.add(ox), pack16(acc, r, o));
        ox += 16;
    }
    while ox < n {
        let mut acc = [b; 2];
        for &(p, w) in job.taps {
            let p = p.add(ox * S);
            for kx in 0..kw {
                let wv = *w.add(kx) as i16;
                let x = vsubl_s8(load8::<S>(p.add(kx * dil)), zp);
                acc[0] = vmlal_n_s16(acc[0], vget_low_s16(x), wv);
                acc[1] = vmlal_high_n_s16(acc[1], x, wv);
            }
        }
        let v = pack8(acc, r, o);
        if n - ox >= 8 {
            vst1_s8(job.out.add(ox), v);
        } else {
            let mut tmp = [0i8; 8];
            vst1_s8(tmp.as_mut_ptr(), v);
            core::ptr::copy_nonoverlapping(tmp.as_ptr(), job.out.add(ox), n - ox);
        }
        ox += 8;
    }
}

//! Depthwise `qs8_conv2d` on baseline aarch64 Advanced SIMD, vectorised along
//! the output width (16 outputs per step, then 8).
//!
//! Input rows come zero-point-padded from [`crate::arm_shared::dwrows`], so every output
//! takes the vector path. Per tap: one load (`ld1`, or `ld2` for stride 2,
//! whose first register holds exactly the even bytes, i.e. the stride-2
//! subsample), `ssubl` of the input zero point (exact in i16: |x - zp| <= 255)
//! and `smlal`/`smlal2` by the weight into i32 accumulators (exact products,
//! |p| <= 32385; the reference's accumulator bound keeps the sums in i32).
//! Integer addition is associative, so the accumulator equals the
//! reference's; the output stage is [`super::requant`]'s bit-exact one.

use core::arch::aarch64::*;

use super::requant::{pack16, pack8, OutQ, RqV};
use crate::arm_shared::dwrows::{for_each_row, Flat, Plan, RowJob, FLAT_BYTES, MAX_SPAN};
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
    let plan = if depthwise && zps {
        Plan::new(g, 8)
    } else {
        None
    };
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
    let taps = g.kh * g.kw;
    let mut ch = Channel {
        w: &weights[..taps],
        w3: [[0; 4]; MAX_SPAN],
        r: RqV::splat(rq[0]),
        bias: 0,
    };
    let mut c_start = 0;
    if zps && super::dwconv_hwc::applies(g) {
        // Uninitialised: `block` writes every byte it reads (zeroing 64 KiB
        // per call cost more than a small layer's taps).
        let mut buf = core::mem::MaybeUninit::<[i8; super::dwconv_hwc::HWC_BYTES]>::uninit();
        let buf = buf.as_mut_ptr() as *mut i8;
        while c_start + 16 <= g.out_c {
            // SAFETY: buffer lengths checked above; the block is in range.
            unsafe {
                super::dwconv_hwc::block(g, q, input, weights, bias, rq, output, c_start, buf)
            };
            c_start += 16;
        }
        if c_start == g.out_c {
            return;
        }
    }
    if c_start > 0 {
        // The channels past the last whole block, as a depthwise conv of
        // their own (one channel is an ungrouped conv: the reference).
        let rest = g.out_c - c_start;
        let sub = ConvGeometry {
            in_c: rest,
            out_c: rest,
            groups: rest,
            ..*g
        };
        let (pi, po, taps) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
        let (x, w) = (&input[c_start * pi..], &weights[c_start * taps..]);
        let (b, r, out) = (
            &bias[c_start..],
            &rq[c_start..],
            &mut output[c_start * po..],
        );
        if rest > 1 {
            return qs8_dwconv2d__neon(&sub, q, x, w, b, r, out);
        }
        return reference::qs8_conv2d(&sub, q, x, w, b, r, out);
    }
    if let Some(flat) = Flat::new(g) {
        let mut buf = [0i8; FLAT_BYTES];
        for c in 0..g.out_c {
            ch.set(g, &weights[c * taps..(c + 1) * taps], rq[c], bias[c]);
            let plane = &input[c * g.in_h * g.in_w..(c + 1) * g.in_h * g.in_w];
            let out = &mut output[c * g.out_h * g.out_w..(c + 1) * g.out_h * g.out_w];
            flat.channel(g, q.in_zp as i8, plane, out, &mut buf, copy, |job| {
                // SAFETY: the job describes the padded plane (see `Flat`).
                unsafe {
                    match g.kw {
                        3 => row::<1, 3>(job, &ch, 3, g.dil_w, zp, &o),
                        _ => row::<1, 0>(job, &ch, g.kw, g.dil_w, zp, &o),
                    }
                }
            });
        }
        return;
    }
    let mut last = usize::MAX;
    // SAFETY: the geometry is a valid depthwise one, the plan is its own and
    // the buffer lengths were checked above; `row` reads only what the job
    // describes (see `row`).
    unsafe {
        for_each_row(g, &plan, q.in_zp as i8, input, output, |c, job| {
            if c != last {
                ch.set(g, &weights[c * taps..(c + 1) * taps], rq[c], bias[c]);
                last = c;
            }
            match (g.stride_w, g.kw) {
                (1, 3) => row::<1, 3>(job, &ch, g.kw, g.dil_w, zp, &o),
                (2, 3) => row::<2, 3>(job, &ch, g.kw, g.dil_w, zp, &o),
                (1, _) => row::<1, 0>(job, &ch, g.kw, g.dil_w, zp, &o),
                _ => row::<2, 0>(job, &ch, g.kw, g.dil_w, zp, &o),
            }
        })
    }
}

/// `dst.copy_from_slice(src)` for the short rows of the flat path, inline:
/// 16-byte vectors (the last one ending at the end), two overlapping 8- or
/// 4-byte words below 16 or 8, bytes below 4. A `memcpy` call per row costs more here
/// (measured under qemu: it also makes the caller spill vector registers).
#[inline(always)]
fn copy(dst: &mut [i8], src: &[i8]) {
    let n = dst.len();
    assert_eq!(n, src.len());
    let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
    // SAFETY: every load/store lies inside `src` / `dst` (`n` bytes each):
    // 16-byte ones at offsets <= n - 16, 8-byte ones at 0 and n - 8 (n >= 8),
    // 4-byte ones at 0 and n - 4 (n >= 4).
    unsafe {
        if n >= 16 {
            let mut i = 0;
            while i + 16 < n {
                vst1q_s8(d.add(i), vld1q_s8(s.add(i)));
                i += 16;
            }
            vst1q_s8(d.add(n - 16), vld1q_s8(s.add(n - 16)));
        } else if n >= 8 {
            let (a, b) = (vld1_s8(s), vld1_s8(s.add(n - 8)));
            vst1_s8(d, a);
            vst1_s8(d.add(n - 8), b);
        } else if n >= 4 {
            let a = core::ptr::read_unaligned(s as *const u32);
            let b = core::ptr::read_unaligned(s.add(n - 4) as *const u32);
            core::ptr::write_unaligned(d as *mut u32, a);
            core::ptr::write_unaligned(d.add(n - 4) as *mut u32, b);
        } else {
            for i in 0..n {
                *d.add(i) = *s.add(i);
            }
        }
    }
}

/// One channel's parameters.
struct Channel<'a> {
    /// The `kh * kw` weights.
    w: &'a [i8],
    /// For `kw == 3`: row `ky`'s weights widened to i16 (lane 3 unused), so a
    /// tap row costs one load and the taps multiply by lane.
    w3: [[i16; 4]; MAX_SPAN],
    r: RqV,
    bias: i32,
}

impl<'a> Channel<'a> {
    /// Switches to the channel with weights `w`.
    #[inline(always)]
    fn set(&mut self, g: &ConvGeometry, w: &'a [i8], r: Requant, bias: i32) {
        self.w = w;
        if g.kw == 3 {
            for ky in 0..g.kh {
                self.w3[ky] = [
                    w[ky * 3] as i16,
                    w[ky * 3 + 1] as i16,
                    w[ky * 3 + 2] as i16,
                    0,
                ];
            }
        }
        self.r = RqV::splat(r);
        self.bias = bias;
    }
}

/// Sixteen input lanes of one tap for outputs `ox..ox + 16` of the padded row
/// `p`: plain bytes for stride 1, the even bytes of 32 for stride 2.
#[inline(always)]
unsafe fn load16<const S: usize>(p: *const i8) -> int8x16_t {
    if S == 1 {
        vld1q_s8(p)
    } else {
        vld2q_s8(p).0
    }
}

/// Eight input lanes (as [`load16`]).
#[inline(always)]
unsafe fn load8<const S: usize>(p: *const i8) -> int8x8_t {
    if S == 1 {
        vld1_s8(p)
    } else {
        vld2_s8(p).0
    }
}

/// `acc += (x - zp) * w` for sixteen lanes (`w` in lane `L` of `wv`).
#[inline(always)]
unsafe fn mac16<const L: i32>(acc: &mut [int32x4_t; 4], x: int8x16_t, zp: int8x8_t, wv: int16x4_t) {
    let lo = vsubl_s8(vget_low_s8(x), zp);
    let hi = vsubl_s8(vget_high_s8(x), zp);
    acc[0] = vmlal_lane_s16::<L>(acc[0], vget_low_s16(lo), wv);
    acc[1] = vmlal_lane_s16::<L>(acc[1], vget_high_s16(lo), wv);
    acc[2] = vmlal_lane_s16::<L>(acc[2], vget_low_s16(hi), wv);
    acc[3] = vmlal_lane_s16::<L>(acc[3], vget_high_s16(hi), wv);
}

/// `acc += (x - zp) * w` for eight lanes (`w` in lane `L` of `wv`).
#[inline(always)]
unsafe fn mac8<const L: i32>(acc: &mut [int32x4_t; 2], x: int8x8_t, zp: int8x8_t, wv: int16x4_t) {
    let x = vsubl_s8(x, zp);
    acc[0] = vmlal_lane_s16::<L>(acc[0], vget_low_s16(x), wv);
    acc[1] = vmlal_lane_s16::<L>(acc[1], vget_high_s16(x), wv);
}

/// The accumulators of outputs `ox..ox + 16` (bias included).
#[inline(always)]
unsafe fn block16<const S: usize, const KW: usize>(
    job: &RowJob,
    ch: &Channel,
    kw: usize,
    dil: usize,
    zp: int8x8_t,
    ox: usize,
) -> [int32x4_t; 4] {
    let mut acc = [vdupq_n_s32(ch.bias); 4];
    for &(p, ky) in job.taps {
        let p = p.add(ox * S);
        if KW == 3 {
            let wv = vld1_s16(ch.w3[ky].as_ptr());
            mac16::<0>(&mut acc, load16::<S>(p), zp, wv);
            mac16::<1>(&mut acc, load16::<S>(p.add(dil)), zp, wv);
            mac16::<2>(&mut acc, load16::<S>(p.add(2 * dil)), zp, wv);
        } else {
            for kx in 0..kw {
                let wv = vdup_n_s16(ch.w[ky * kw + kx] as i16);
                mac16::<0>(&mut acc, load16::<S>(p.add(kx * dil)), zp, wv);
            }
        }
    }
    acc
}

/// The accumulators of outputs `ox..ox + 8` (bias included).
#[inline(always)]
unsafe fn block8<const S: usize, const KW: usize>(
    job: &RowJob,
    ch: &Channel,
    kw: usize,
    dil: usize,
    zp: int8x8_t,
    ox: usize,
) -> [int32x4_t; 2] {
    let mut acc = [vdupq_n_s32(ch.bias); 2];
    for &(p, ky) in job.taps {
        let p = p.add(ox * S);
        if KW == 3 {
            let wv = vld1_s16(ch.w3[ky].as_ptr());
            mac8::<0>(&mut acc, load8::<S>(p), zp, wv);
            mac8::<1>(&mut acc, load8::<S>(p.add(dil)), zp, wv);
            mac8::<2>(&mut acc, load8::<S>(p.add(2 * dil)), zp, wv);
        } else {
            for kx in 0..kw {
                let wv = vdup_n_s16(ch.w[ky * kw + kx] as i16);
                mac8::<0>(&mut acc, load8::<S>(p.add(kx * dil)), zp, wv);
            }
        }
    }
    acc
}

/// All outputs of one job: stride `S`, `KW` taps per row (0: `kw` at run
/// time). Blocks of 16; a remainder is one more block ending at the last
/// output (of 8 when at most 8 remain), overlapping outputs already written
/// with identical values; fewer than 8 outputs in all go through a buffer.
///
/// # Safety
/// As [`RowJob`] describes: each tap row holds the padded inputs of `n`
/// rounded up to 8 outputs, `out` has `n` writable bytes; `ch.w` holds
/// `kh * kw` weights.
#[inline(always)]
unsafe fn row<const S: usize, const KW: usize>(
    job: &RowJob,
    ch: &Channel,
    kw: usize,
    dil: usize,
    zp: int8x8_t,
    o: &OutQ,
) {
    let n = job.n;
    if n < 8 {
        let v = pack8(block8::<S, KW>(job, ch, kw, dil, zp, 0), &ch.r, o);
        let mut tmp = [0i8; 8];
        vst1_s8(tmp.as_mut_ptr(), v);
        core::ptr::copy_nonoverlapping(tmp.as_ptr(), job.out, n);
        return;
    }
    if n < 16 {
        // Eight outputs at 0, then (if any remain) the eight ending at n.
        for at in [0, n - 8] {
            let acc = block8::<S, KW>(job, ch, kw, dil, zp, at);
            vst1_s8(job.out.add(at), pack8(acc, &ch.r, o));
            if n == 8 {
                break;
            }
        }
        return;
    }
    let mut ox = 0;
    while ox + 16 <= n {
        let acc = block16::<S, KW>(job, ch, kw, dil, zp, ox);
        vst1q_s8(job.out.add(ox), pack16(acc, &ch.r, o));
        ox += 16;
    }
    let rem = n - ox;
    if rem > 8 {
        let at = n - 16;
        let acc = block16::<S, KW>(job, ch, kw, dil, zp, at);
        vst1q_s8(job.out.add(at), pack16(acc, &ch.r, o));
    } else if rem > 0 {
        let at = n - 8;
        let acc = block8::<S, KW>(job, ch, kw, dil, zp, at);
        vst1_s8(job.out.add(at), pack8(acc, &ch.r, o));
    }
}

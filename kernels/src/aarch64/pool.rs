//! `qs8_maxpool2d` and `qs8_avgpool2d` on baseline aarch64 Advanced SIMD,
//! vectorised along the output width (16 outputs per step) for strides 1 and
//! 2, on the padded rows of [`crate::arm_shared::dwrows`].
//!
//! Max pooling pads with -128: the reference's running maximum starts at
//! -128, so a padding tap never changes it (a window with no in-image tap
//! gives -128 both ways). Average pooling pads with the zero point, whose
//! `x - zp` is 0, and sums in i16 lanes (`saddw`, wrapping: the true sum
//! `|sum(x - zp)| <= 255 * taps` fits i16 for windows of at most 128 taps, so
//! the wrapped partial sums end exact). The divisor depends on how the window
//! is clipped: one value for blocks whose windows lie inside the row, else
//! computed per lane exactly as the reference's `PoolGeometry::window`. The
//! rounded division is done in f32, exact here (see [`average16`]).

use core::arch::aarch64::*;

use crate::arm_shared::dwrows::{check_pool, conv_geometry, count, for_each_row, Plan};
use crate::reference::{self, PoolGeometry};

/// Sixteen input lanes of one tap (plain bytes for stride 1, the even bytes
/// of 32 for stride 2).
#[inline(always)]
unsafe fn load16<const S: usize>(p: *const i8) -> int8x16_t {
    if S == 1 {
        vld1q_s8(p)
    } else {
        vld2q_s8(p).0
    }
}

/// Runs `block(ox)` for 16-output blocks covering `n >= 16` outputs (the
/// last one overlapping), or once through a buffer for `n < 16`: `block`
/// returns the 16 results for outputs `ox..ox + 16`.
///
/// # Safety
/// `out` has `n` writable bytes; `block(ox)` is sound for the `ox` passed.
#[inline(always)]
unsafe fn store_blocks(n: usize, out: *mut i8, mut block: impl FnMut(usize) -> int8x16_t) {
    if n < 16 {
        let mut tmp = [0i8; 16];
        vst1q_s8(tmp.as_mut_ptr(), block(0));
        core::ptr::copy_nonoverlapping(tmp.as_ptr(), out, n);
        return;
    }
    let mut ox = 0;
    while ox + 16 <= n {
        vst1q_s8(out.add(ox), block(ox));
        ox += 16;
    }
    if ox < n {
        vst1q_s8(out.add(n - 16), block(n - 16));
    }
}

/// Advanced SIMD [`reference::qs8_maxpool2d`]; same contract, same output.
/// Strides above 2 run the reference. Runs on every aarch64 CPU.
#[allow(non_snake_case)]
pub fn qs8_maxpool2d__neon(g: &PoolGeometry, input: &[i8], output: &mut [i8]) {
    let cg = conv_geometry(g);
    let plan = if g.is_valid() {
        Plan::new(&cg, 16)
    } else {
        None
    };
    let Some(plan) = plan else {
        return reference::qs8_maxpool2d(g, input, output);
    };
    check_pool(g, input, output);
    // SAFETY: the geometry is valid, the plan is its own (blocks of 16) and
    // the buffer lengths were checked; each job's padded rows hold the
    // inputs of its outputs rounded up to 16, which every block reads within.
    unsafe {
        for_each_row(&cg, &plan, i8::MIN, input, output, |_, job| {
            let kw = g.kw;
            let max = |ox: usize| {
                let mut acc = vdupq_n_s8(i8::MIN);
                for &(p, _) in job.taps {
                    let p = p.add(ox * g.stride_w);
                    for kx in 0..kw {
                        let x = if g.stride_w == 1 {
                            load16::<1>(p.add(kx))
                        } else {
                            load16::<2>(p.add(kx))
                        };
                        acc = vmaxq_s8(acc, x);
                    }
                }
                acc
            };
            store_blocks(job.n, job.out, max);
        });
    }
}

/// Advanced SIMD [`reference::qs8_avgpool2d`]; same contract, same output.
/// Strides above 2, windows of more than 128 taps and zero points outside
/// the int8 range run the reference. Runs on every aarch64 CPU.
#[allow(non_snake_case)]
pub fn qs8_avgpool2d__neon(g: &PoolGeometry, zp: i32, input: &[i8], output: &mut [i8]) {
    if g.is_valid() && is_global(g) && (-128..=127).contains(&zp) {
        return global_avgpool(g, zp, input, output);
    }
    let cg = conv_geometry(g);
    let ok = g.is_valid() && g.kh * g.kw <= 128 && (-128..=127).contains(&zp);
    let plan = if ok { Plan::new(&cg, 16) } else { None };
    let Some(plan) = plan else {
        return reference::qs8_avgpool2d(g, zp, input, output);
    };
    check_pool(g, input, output);
    // SAFETY: as in `qs8_maxpool2d__neon`.
    unsafe {
        let zp16 = vdupq_n_s16(zp as i16);
        for_each_row(&cg, &plan, zp as i8, input, output, |_, job| {
            let kw = g.kw;
            // Every summed tap (in-image or padding) adds `x`; start at
            // `-taps * zp` so the total is `sum(x - zp)` (mod 2^16, see above).
            let init = vdupq_n_s16((job.taps.len() * kw) as i16 * -(zp as i16));
            let avg = |ox: usize| {
                let (mut lo, mut hi) = (init, init);
                for &(p, _) in job.taps {
                    let p = p.add(ox * g.stride_w);
                    for kx in 0..kw {
                        let x = if g.stride_w == 1 {
                            load16::<1>(p.add(kx))
                        } else {
                            load16::<2>(p.add(kx))
                        };
                        lo = vaddw_s8(lo, vget_low_s8(x));
                        hi = vaddw_high_s8(hi, x);
                    }
                }
                // Windows of the block inside the row: one divisor.
                let first = (job.ox0 + ox) * g.stride_w;
                let interior =
                    first >= g.pad_left && first + 15 * g.stride_w + kw <= g.in_w + g.pad_left;
                let counts: [int32x4_t; 4] = if interior {
                    [vdupq_n_s32(count(g, job.oy, job.ox0 + ox)); 4]
                } else {
                    let c: [i32; 16] = core::array::from_fn(|l| count(g, job.oy, job.ox0 + ox + l));
                    core::array::from_fn(|i| vld1q_s32(c.as_ptr().add(4 * i)))
                };
                average16([lo, hi], counts, zp16)
            };
            store_blocks(job.n, job.out, avg);
        });
    }
}

/// `clamp(zp + round_half_away(sum / n), -128, 127)` for sixteen lanes.
///
/// The reference's `(sum +- n/2) / n` truncates; here the division is in f32,
/// which is exact for it: numerator and divisor are integers below 2^22, so a
/// non-integer quotient is at least `1/n` from the next integer while the f32
/// rounding error is below `2^22/n * 2^-24`, and truncation cannot change.
#[inline(always)]
unsafe fn average16(sum: [int16x8_t; 2], n: [int32x4_t; 4], zp: int16x8_t) -> int8x16_t {
    let s = [
        vmovl_s16(vget_low_s16(sum[0])),
        vmovl_high_s16(sum[0]),
        vmovl_s16(vget_low_s16(sum[1])),
        vmovl_high_s16(sum[1]),
    ];
    let q: [int32x4_t; 4] = core::array::from_fn(|i| {
        let half = vshrq_n_s32::<1>(n[i]);
        // +n/2 for sum >= 0, -n/2 for sum < 0 (sum == 0 gives 0 either way).
        let sign = vshrq_n_s32::<31>(s[i]);
        let num = vaddq_s32(s[i], vsubq_s32(veorq_s32(half, sign), sign));
        vcvtq_s32_f32(vdivq_f32(vcvtq_f32_s32(num), vcvtq_f32_s32(n[i])))
    });
    // |q| <= 255: the i16 add of `zp` is exact, the final narrowing clamps.
    let lo = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(q[0]), q[1]), zp);
    let hi = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(q[2]), q[3]), zp);
    vqmovn_high_s16(vqmovn_s16(lo), hi)
}

/// One window over each whole plane (a global average pool: no padding, a
/// 1x1 output), whatever its size.
fn is_global(g: &PoolGeometry) -> bool {
    g.out_h == 1
        && g.out_w == 1
        && g.kh == g.in_h
        && g.kw == g.in_w
        && g.pad_top == 0
        && g.pad_left == 0
        && g.in_h * g.in_w <= 1 << 23
}

/// [`reference::qs8_avgpool2d`] of a global pool: per channel the plane's
/// sum (`saddlp`/`sadalp` into i32 lanes, 16 bytes per step; exact: at most
/// 2^23 taps of |x| <= 128), minus `count * zp`, then the reference's
/// rounding division.
fn global_avgpool(g: &PoolGeometry, zp: i32, input: &[i8], output: &mut [i8]) {
    let plane = g.in_h * g.in_w;
    assert!(
        input.len() >= g.channels * plane && output.len() >= g.channels,
        "qs8_avgpool2d: buffers do not match the geometry"
    );
    let n = plane as i32;
    for (c, o) in output[..g.channels].iter_mut().enumerate() {
        let x = &input[c * plane..(c + 1) * plane];
        let mut chunks = x.chunks_exact(16);
        // SAFETY: NEON is baseline on aarch64; each load reads one 16-byte chunk.
        let mut sum = unsafe {
            let mut acc = vdupq_n_s32(0);
            for ch in &mut chunks {
                acc = vpadalq_s16(acc, vpaddlq_s8(vld1q_s8(ch.as_ptr())));
            }
            vaddvq_s32(acc)
        };
        sum += chunks.remainder().iter().map(|&v| v as i32).sum::<i32>();
        let sum = sum - n * zp;
        let q = if sum >= 0 {
            (sum + n / 2) / n
        } else {
            (sum - n / 2) / n
        };
        *o = (q + zp).clamp(-128, 127) as i8;
    }
}

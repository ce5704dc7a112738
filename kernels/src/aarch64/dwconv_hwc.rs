//! Depthwise convolution of small planes across channels: sixteen channels
//! per vector on an HWC copy of a 16-channel block.
//!
//! The planar kernel (`dwconv.rs`) vectorises along output rows, so planes a
//! few pixels wide (KWS's 25x5, the 7x7 ends of image backbones) pay its
//! per-row and per-channel costs for every handful of outputs. Here one
//! block of 16 channels is transposed (16x16 byte blocks) into a
//! zero-point-padded HWC buffer, every output pixel is 16 channels at once
//! (per tap: one 16-byte load at a fixed offset, `ssubl` of the zero point,
//! four `smlal` by per-channel i16 weights), requantized with per-lane
//! multipliers, and the HWC result is transposed back into the channel
//! planes. Integer sums are exact and the output stage is
//! `super::requant`'s lane by lane, so the bytes are the reference's.

use core::arch::aarch64::*;

use crate::driver::transpose16;
use crate::reference::{ConvGeometry, QConvParams};
use crate::requant::Requant;

/// Bytes of the stack buffer: a block's padded input, its outputs, slack.
pub(super) const HWC_BYTES: usize = 65536;
/// Largest window (taps per channel) of the HWC path.
const MAX_TAPS: usize = 25;
const CB: usize = 16;

/// The padded extent the taps reach: `(hp, wp)`.
fn padded(g: &ConvGeometry) -> (usize, usize) {
    (
        (g.out_h - 1) * g.stride_h + (g.kh - 1) * g.dil_h + 1,
        (g.out_w - 1) * g.stride_w + (g.kw - 1) * g.dil_w + 1,
    )
}

/// Whether depthwise `g` (already checked valid) takes the HWC path: at
/// least one whole block of 16 channels, narrow planes (`out_w < 32`, where
/// the planar path's row costs dominate), at most 25 taps, and a block's
/// padded input plus outputs (plus 256 bytes of slack for the last
/// transpose) within [`HWC_BYTES`].
pub(super) fn applies(g: &ConvGeometry) -> bool {
    if g.out_c < CB || g.out_w == 0 || g.out_h == 0 || g.out_w >= 32 || g.kh * g.kw > MAX_TAPS {
        return false;
    }
    let (hp, wp) = padded(g);
    (hp * wp + g.out_h * g.out_w) * CB + 256 <= HWC_BYTES
}

/// Channels `c0..c0 + 16` of depthwise `g` (`applies(g)`, buffers checked
/// by the caller, in and out zero points in the int8 range, `act_min <=
/// act_max`).
///
/// # Safety
/// `input`, `weights`, `bias`, `rq` and `output` hold what `g` needs and
/// `c0 + 16 <= g.out_c`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn block(
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    bias: &[i32],
    rq: &[Requant],
    output: &mut [i8],
    c0: usize,
    buf: &mut [i8; HWC_BYTES],
) {
    let (hp, wp) = padded(g);
    let (pi, po, taps) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
    buf[..hp * wp * CB].fill(q.in_zp as i8);
    let base = buf.as_mut_ptr();
    let obuf = base.add(hp * wp * CB);

    // In: chunks of 16 pixels of the plane (they may span input rows), each
    // transposed to 16 pixel vectors, stored at their padded positions.
    let mut tmp = [0i8; 256];
    let src0 = input.as_ptr().add(c0 * pi);
    let mut p = 0;
    while p < pi {
        let n = (pi - p).min(16);
        if n == 16 {
            transpose16(src0.add(p), pi, tmp.as_mut_ptr(), 16);
        } else {
            for c in 0..CB {
                for j in 0..n {
                    tmp[j * 16 + c] = *src0.add(c * pi + p + j);
                }
            }
        }
        for j in 0..n {
            let (iy, ix) = ((p + j) / g.in_w, (p + j) % g.in_w);
            let (yy, xx) = (iy + g.pad_top, ix + g.pad_left);
            if yy < hp && xx < wp {
                vst1q_s8(
                    base.add((yy * wp + xx) * CB),
                    vld1q_s8(tmp.as_ptr().add(j * 16)),
                );
            }
        }
        p += n;
    }

    // Per-channel constants of the block.
    let mut w = [[vdupq_n_s16(0); 2]; MAX_TAPS];
    for (t, wt) in w.iter_mut().enumerate().take(taps) {
        let mut lanes = [0i16; CB];
        for (c, l) in lanes.iter_mut().enumerate() {
            *l = weights[(c0 + c) * taps + t] as i16;
        }
        *wt = [vld1q_s16(lanes.as_ptr()), vld1q_s16(lanes.as_ptr().add(8))];
    }
    let b: [int32x4_t; 4] = core::array::from_fn(|i| vld1q_s32(bias.as_ptr().add(c0 + 4 * i)));
    let lane = |f: &dyn Fn(Requant) -> i32, i: usize| {
        let v: [i32; 4] = core::array::from_fn(|l| f(rq[c0 + 4 * i + l]));
        vld1q_s32(v.as_ptr())
    };
    let mult: [int32x4_t; 4] = core::array::from_fn(|i| lane(&|r| r.mult, i));
    let left: [int32x4_t; 4] = core::array::from_fn(|i| lane(&|r| r.shift.max(0), i));
    let right: [int32x4_t; 4] = core::array::from_fn(|i| lane(&|r| -(-r.shift).max(0), i));
    let zp = vdup_n_s8(q.in_zp as i8);
    let ozp = vdupq_n_s16(q.out_zp as i16);
    let (lo, hi) = (vdupq_n_s8(q.act_min), vdupq_n_s8(q.act_max));
    let mut off = [0usize; MAX_TAPS];
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            off[ky * g.kw + kx] = (ky * g.dil_h * wp + kx * g.dil_w) * CB;
        }
    }

    // Compute: one output pixel (16 channels) at a time.
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            let at = base.add((oy * g.stride_h * wp + ox * g.stride_w) * CB);
            let mut acc = b;
            for t in 0..taps {
                let x = vld1q_s8(at.add(off[t]));
                let xl = vsubl_s8(vget_low_s8(x), zp);
                let xh = vsubl_s8(vget_high_s8(x), zp);
                acc[0] = vmlal_s16(acc[0], vget_low_s16(xl), vget_low_s16(w[t][0]));
                acc[1] = vmlal_high_s16(acc[1], xl, w[t][0]);
                acc[2] = vmlal_s16(acc[2], vget_low_s16(xh), vget_low_s16(w[t][1]));
                acc[3] = vmlal_high_s16(acc[3], xh, w[t][1]);
            }
            // `requantize` lane by lane (see `super::requant`), then the
            // zero point and clamp as `pack16` does.
            let r: [int32x4_t; 4] = core::array::from_fn(|i| {
                let v = vqrdmulhq_s32(vqshlq_s32(acc[i], left[i]), mult[i]);
                let fixup = vshrq_n_s32::<31>(vandq_s32(v, right[i]));
                vrshlq_s32(vqaddq_s32(v, fixup), right[i])
            });
            let l16 = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(r[0]), r[1]), ozp);
            let h16 = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(r[2]), r[3]), ozp);
            let v = vminq_s8(vmaxq_s8(vqmovn_high_s16(vqmovn_s16(l16), h16), lo), hi);
            vst1q_s8(obuf.add((oy * g.out_w + ox) * CB), v);
        }
    }

    // Out: chunks of 16 output pixels transposed back into the planes (the
    // 256 bytes of slack after the outputs cover the last chunk's reads).
    let dst0 = output.as_mut_ptr().add(c0 * po);
    let mut p = 0;
    while p < po {
        let n = (po - p).min(16);
        if n == 16 {
            transpose16(obuf.add(p * CB), CB, dst0.add(p), po);
        } else {
            transpose16(obuf.add(p * CB), CB, tmp.as_mut_ptr(), 16);
            for c in 0..CB {
                core::ptr::copy_nonoverlapping(tmp.as_ptr().add(c * 16), dst0.add(c * po + p), n);
            }
        }
        p += n;
    }
}

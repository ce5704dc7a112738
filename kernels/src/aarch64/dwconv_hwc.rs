//! Depthwise convolution across channels: sixteen channels per vector on an
//! HWC copy of a 16-channel block, in bands of output rows.
//!
//! The planar kernel (`dwconv.rs`) vectorises along output rows, so planes a
//! few pixels wide (KWS's 25x5, the 7x7 ends of image backbones) pay its
//! per-row and per-channel costs for every handful of outputs, and wide ones
//! its padded row ring. Here one block of 16 channels is transposed (16x16
//! byte blocks), one band of rows at a time, into a zero-point-padded HWC
//! buffer on the stack, every output pixel is 16 channels at once
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

/// Widest output rows of the HWC path (the 3x3 kernel's row buffer).
const MAX_OUT_W: usize = 128;

/// Padded input rows the taps of `rows` output rows reach.
fn band_rows(g: &ConvGeometry, rows: usize) -> usize {
    (rows - 1) * g.stride_h + (g.kh - 1) * g.dil_h + 1
}

/// Padded input columns the taps reach.
fn padded_w(g: &ConvGeometry) -> usize {
    (g.out_w - 1) * g.stride_w + (g.kw - 1) * g.dil_w + 1
}

/// Output rows per band: the most whose padded input, outputs and 256 bytes
/// of slack (the last transpose's reads) fit [`HWC_BYTES`]; 0 if none.
fn band(g: &ConvGeometry) -> usize {
    let wp = padded_w(g);
    let fits = |r: usize| (band_rows(g, r) * wp + r * g.out_w) * CB + 256 <= HWC_BYTES;
    let mut r = 0;
    while r < g.out_h && fits(r + 1) {
        r += 1;
    }
    r
}

/// Whether depthwise `g` (already checked valid) takes the HWC path: at
/// least one whole block of 16 channels, output rows of at most 128, at most
/// 25 taps, and at least one output row per band.
pub(super) fn applies(g: &ConvGeometry) -> bool {
    g.out_c >= CB
        && g.out_w > 0
        && g.out_h > 0
        && g.out_w <= MAX_OUT_W
        && g.kh * g.kw <= MAX_TAPS
        && band(g) > 0
}

/// Channels `c0..c0 + 16` of depthwise `g` (`applies(g)`, buffers checked
/// by the caller, in and out zero points in the int8 range, `act_min <=
/// act_max`).
///
/// # Safety
/// `input`, `weights`, `bias`, `rq` and `output` hold what `g` needs and
/// `c0 + 16 <= g.out_c`; `buf` is [`HWC_BYTES`] writable bytes (their
/// contents do not matter: every byte read is written first).
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
    buf: *mut i8,
) {
    let wp = padded_w(g);
    let (po, taps) = (g.out_h * g.out_w, g.kh * g.kw);

    // Per-channel constants of the block. The input zero point is folded
    // into the bias (`bias - zp * sum(w)`), so a tap is `x * w`: int8
    // products, exact in i16 (|p| <= 2^14, reached only by -128 * -128).
    // Taps are summed in i16 in pairs (taps 2i and 2i + 1) before widening:
    // exact unless both weights of a pair are -128 in one channel
    // (otherwise |p1 + p2| <= 2^14 + 128 * 127 < 2^15); such blocks sum
    // every tap alone. Every partial sum stays within |bias| + 25 * 2^14 +
    // 128 * 25 * 128 < 2^31, and integer addition is exact, so the
    // accumulator is the reference's.
    // All vector work (it ran per block call, and a small layer has few
    // pixels per block): the block's `16 x taps` weights (contiguous,
    // channel-major) copied out and transposed 16 x 16 into tap vectors.
    let mut wl = [0i8; CB * MAX_TAPS + 16];
    core::ptr::copy_nonoverlapping(weights.as_ptr().add(c0 * taps), wl.as_mut_ptr(), CB * taps);
    let mut w = [vdupq_n_s8(0); 32];
    for t0 in (0..taps).step_by(16) {
        // Reads end at 15 * taps + t0 + 16 <= 16 * taps + 16.
        transpose16(
            wl.as_ptr().add(t0),
            taps,
            w.as_mut_ptr().add(t0) as *mut i8,
            16,
        );
    }
    let mut w: [int8x16_t; MAX_TAPS] = core::array::from_fn(|t| w[t]);
    for wt in w.iter_mut().skip(taps) {
        *wt = vdupq_n_s8(0);
    }
    // Channel sums in i16 (|sum| <= 25 * 128), pairs with both weights -128.
    let (mut s_lo, mut s_hi) = (vdupq_n_s16(0), vdupq_n_s16(0));
    for wt in &w[..taps] {
        s_lo = vaddw_s8(s_lo, vget_low_s8(*wt));
        s_hi = vaddw_high_s8(s_hi, *wt);
    }
    let min = vdupq_n_s8(i8::MIN);
    let mut both = vdupq_n_u8(0);
    for i in 0..taps / 2 {
        let pair = vandq_u8(vceqq_s8(w[2 * i], min), vceqq_s8(w[2 * i + 1], min));
        both = vorrq_u8(both, pair);
    }
    let pairable = vmaxvq_u8(both) == 0;
    let sums = [
        vmovl_s16(vget_low_s16(s_lo)),
        vmovl_high_s16(s_lo),
        vmovl_s16(vget_low_s16(s_hi)),
        vmovl_high_s16(s_hi),
    ];
    let b: [int32x4_t; 4] = core::array::from_fn(|i| {
        vmlsq_n_s32(vld1q_s32(bias.as_ptr().add(c0 + 4 * i)), sums[i], q.in_zp)
    });
    // `Requant` is `repr(C)` (mult, shift): `ld2` splits four of them.
    let rqp = rq.as_ptr().add(c0) as *const i32;
    let pairs: [int32x4x2_t; 4] = core::array::from_fn(|i| vld2q_s32(rqp.add(8 * i)));
    let mult: [int32x4_t; 4] = core::array::from_fn(|i| pairs[i].0);
    let left: [int32x4_t; 4] = core::array::from_fn(|i| vmaxq_s32(pairs[i].1, vdupq_n_s32(0)));
    let right: [int32x4_t; 4] = core::array::from_fn(|i| vminq_s32(pairs[i].1, vdupq_n_s32(0)));
    // Every lane shifts right and none left (multipliers below 1/2, the
    // usual case): the short output stage (`out16`).
    let fast = (0..4).all(|i| vmaxvq_s32(pairs[i].1) < 0);
    let ozp = vdupq_n_s16(q.out_zp as i16);
    let (lo, hi) = (vdupq_n_s8(q.act_min), vdupq_n_s8(q.act_max));
    let mut off = [0usize; MAX_TAPS];
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            off[ky * g.kw + kx] = (ky * g.dil_h * wp + kx * g.dil_w) * CB;
        }
    }

    // Compute: one output pixel (16 channels) at a time; 3x3 windows with
    // the taps unrolled (weights and offsets stay in registers).
    let k = Consts {
        b,
        mult,
        left,
        right,
        ozp,
        lo,
        hi,
    };
    // Bands of output rows, each staged, computed and written back.
    let rows = band(g);
    let mut oy0 = 0;
    while oy0 < g.out_h {
        let r = rows.min(g.out_h - oy0);
        let gb = ConvGeometry { out_h: r, ..*g };
        let hb = band_rows(g, r);
        let base = buf;
        stage(g, q.in_zp as i8, input, c0, oy0 * g.stride_h, hb, wp, buf);
        let obuf = base.add(hb * wp * CB);
        let (w, off) = (&w, &off);
        match (taps, pairable, fast) {
            (9, true, true) => pixels3x3_fused(&gb, wp, base, obuf, w, off, &k),
            (9, true, false) => pixels3x3::<false>(&gb, wp, base, obuf, w, off, &k),
            (_, true, true) => {
                pixels::<true, true>(&gb, wp, base, obuf, &w[..taps], &off[..taps], &k)
            }
            (_, true, false) => {
                pixels::<true, false>(&gb, wp, base, obuf, &w[..taps], &off[..taps], &k)
            }
            (_, false, true) => {
                pixels::<false, true>(&gb, wp, base, obuf, &w[..taps], &off[..taps], &k)
            }
            _ => pixels::<false, false>(&gb, wp, base, obuf, &w[..taps], &off[..taps], &k),
        }
        // The slack the last transpose reads past the outputs (`band`
        // keeps 256 bytes for it): defined bytes, discarded.
        core::ptr::write_bytes(obuf.add(r * g.out_w * CB), 0, 256);
        // Out: chunks of 16 output pixels transposed back into the planes
        // (the 256 bytes of slack after the outputs cover a last chunk's
        // reads).
        let dst0 = output.as_mut_ptr().add(c0 * po);
        let (p0, p1) = (oy0 * g.out_w, (oy0 + r) * g.out_w);
        let mut tmp = [0i8; 256];
        let mut p = p0;
        while p < p1 {
            let n = (p1 - p).min(16);
            if n == 16 {
                transpose16(obuf.add((p - p0) * CB), CB, dst0.add(p), po);
            } else {
                transpose16(obuf.add((p - p0) * CB), CB, tmp.as_mut_ptr(), 16);
                for c in 0..CB {
                    core::ptr::copy_nonoverlapping(
                        tmp.as_ptr().add(c * 16),
                        dst0.add(c * po + p),
                        n,
                    );
                }
            }
            p += n;
        }
        oy0 += r;
    }
}

/// Stages padded input rows `yy0..yy0 + hb` (padded coordinates) of channels
/// `c0..c0 + 16` into `buf` as HWC, `wp` pixels per row, padding as `zp`:
/// chunks of 16 pixels of the input rows inside, each transposed to 16 pixel
/// vectors: straight into place when the chunk lies in one row, else through
/// a temporary, copied by row segments (chunks that span rows).
///
/// # Safety
/// `input` holds channels `c0..c0 + 16` of `g`; `buf` has `hb * wp * 16 <=
/// HWC_BYTES` writable bytes.
#[allow(clippy::too_many_arguments)]
unsafe fn stage(
    g: &ConvGeometry,
    zp: i8,
    input: &[i8],
    c0: usize,
    yy0: usize,
    hb: usize,
    wp: usize,
    buf: *mut i8,
) {
    core::ptr::write_bytes(buf, zp as u8, hb * wp * CB);
    let pi = g.in_h * g.in_w;
    let iy_lo = yy0.saturating_sub(g.pad_top).min(g.in_h);
    let iy_hi = (yy0 + hb).saturating_sub(g.pad_top).min(g.in_h);
    if iy_lo >= iy_hi {
        return;
    }
    // Input columns the padded row holds (the taps may not reach the last
    // ones: then the bottom-right padding is negative).
    let cols = g.in_w.min(wp.saturating_sub(g.pad_left));
    let src0 = input.as_ptr().add(c0 * pi);
    let mut tmp = [0i8; 256];
    let (mut p, p_hi) = (iy_lo * g.in_w, iy_hi * g.in_w);
    // Pixel `p` is input column `ix` of the row staged at `row` (its column
    // 0); rows step by `wp * 16` bytes (`wrapping_add`: one row past the
    // last is formed, never used).
    let mut ix = 0;
    let mut row = buf.add(((iy_lo + g.pad_top - yy0) * wp + g.pad_left) * CB);
    while p < p_hi {
        let n = (p_hi - p).min(16);
        if n == 16 && ix + 16 <= cols {
            transpose16(src0.add(p), pi, row.add(ix * CB), CB);
            ix += 16;
            if ix == g.in_w {
                ix = 0;
                row = row.wrapping_add(wp * CB);
            }
            p += 16;
            continue;
        }
        if n == 16 {
            transpose16(src0.add(p), pi, tmp.as_mut_ptr(), 16);
        } else {
            for c in 0..CB {
                for j in 0..n {
                    tmp[j * 16 + c] = *src0.add(c * pi + p + j);
                }
            }
        }
        // By row segments: the pixels of one input row are consecutive
        // vectors in `tmp` and in the row (those past `cols` are dropped).
        let mut j = 0;
        while j < n {
            let seg = (n - j).min(g.in_w - ix);
            let keep = seg.min(cols.saturating_sub(ix));
            let (mut d, mut s) = (row.wrapping_add(ix * CB), tmp.as_ptr().add(j * 16));
            for _ in 0..keep {
                vst1q_s8(d, vld1q_s8(s));
                d = d.add(CB);
                s = s.add(16);
            }
            j += seg;
            ix += seg;
            if ix == g.in_w {
                ix = 0;
                row = row.wrapping_add(wp * CB);
            }
        }
        p += n;
    }
}

/// `requantize` lane by lane (see `super::requant`), then the zero point and
/// clamp as `pack16` does. `FAST`: every lane has `shift < 0` (no left
/// shift, `right` negative): the sign fix-up `(v & right) >> 31` is then
/// `v >> 31`, and `v + (v >> 31)` cannot wrap (`sqrdmulh` never returns
/// `i32::MIN`), so one `ssra` replaces `and`, `sshr` and `sqadd`.
#[inline(always)]
unsafe fn out16<const FAST: bool>(acc: &[int32x4_t; 4], k: &Consts) -> int8x16_t {
    let r: [int32x4_t; 4] = core::array::from_fn(|i| {
        if FAST {
            let v = vqrdmulhq_s32(acc[i], k.mult[i]);
            vrshlq_s32(vsraq_n_s32::<31>(v, v), k.right[i])
        } else {
            let v = vqrdmulhq_s32(vqshlq_s32(acc[i], k.left[i]), k.mult[i]);
            let fixup = vshrq_n_s32::<31>(vandq_s32(v, k.right[i]));
            vrshlq_s32(vqaddq_s32(v, fixup), k.right[i])
        }
    });
    let l16 = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(r[0]), r[1]), k.ozp);
    let h16 = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(r[2]), r[3]), k.ozp);
    vminq_s8(vmaxq_s8(vqmovn_high_s16(vqmovn_s16(l16), h16), k.lo), k.hi)
}

/// A block's per-channel constants.
struct Consts {
    b: [int32x4_t; 4],
    mult: [int32x4_t; 4],
    left: [int32x4_t; 4],
    right: [int32x4_t; 4],
    ozp: int16x8_t,
    lo: int8x16_t,
    hi: int8x16_t,
}

/// Every output pixel of the block, `w.len()` taps; `PAIR`: taps summed in
/// i16 in pairs before widening (see the block's constants).
///
/// # Safety
/// `base` holds the padded HWC input the offsets address for every output
/// pixel, `obuf` `out_h * out_w * 16` writable bytes.
#[inline(always)]
unsafe fn pixels<const PAIR: bool, const FAST: bool>(
    g: &ConvGeometry,
    wp: usize,
    base: *const i8,
    obuf: *mut i8,
    w: &[int8x16_t],
    off: &[usize],
    k: &Consts,
) {
    let taps = w.len();
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            let at = base.add((oy * g.stride_h * wp + ox * g.stride_w) * CB);
            let mut acc = k.b;
            let widen = |acc: &mut [int32x4_t; 4], lo: int16x8_t, hi: int16x8_t| {
                acc[0] = vaddw_s16(acc[0], vget_low_s16(lo));
                acc[1] = vaddw_high_s16(acc[1], lo);
                acc[2] = vaddw_s16(acc[2], vget_low_s16(hi));
                acc[3] = vaddw_high_s16(acc[3], hi);
            };
            let mut t = 0;
            if PAIR {
                while t + 2 <= taps {
                    let (x0, x1) = (vld1q_s8(at.add(off[t])), vld1q_s8(at.add(off[t + 1])));
                    let lo = vmlal_s8(
                        vmull_s8(vget_low_s8(x0), vget_low_s8(w[t])),
                        vget_low_s8(x1),
                        vget_low_s8(w[t + 1]),
                    );
                    let hi = vmlal_high_s8(vmull_high_s8(x0, w[t]), x1, w[t + 1]);
                    widen(&mut acc, lo, hi);
                    t += 2;
                }
            }
            while t < taps {
                let x = vld1q_s8(at.add(off[t]));
                let lo = vmull_s8(vget_low_s8(x), vget_low_s8(w[t]));
                let hi = vmull_high_s8(x, w[t]);
                widen(&mut acc, lo, hi);
                t += 1;
            }
            vst1q_s8(obuf.add((oy * g.out_w + ox) * CB), out16::<FAST>(&acc, k));
        }
    }
}

/// [`pixels3x3`] with the short output stage (`out16::<true>`) in the same
/// asm block, one pass: per pixel the bias (two `ldp`), the 47 tap
/// instructions, `sqrdmulh`, `ssra`, `srshl` per quarter, the narrows, zero
/// point and clamp, one store. The 9 weights and 11 output constants stay
/// in registers (28 vector registers in all), so no accumulator goes
/// through memory.
///
/// # Safety
/// As [`pixels3x3`]; every lane of the block has `shift < 0`.
#[inline(always)]
unsafe fn pixels3x3_fused(
    g: &ConvGeometry,
    wp: usize,
    base: *const i8,
    obuf: *mut i8,
    w: &[int8x16_t; MAX_TAPS],
    off: &[usize; MAX_TAPS],
    k: &Consts,
) {
    let bias = k.b;
    let bp = bias.as_ptr() as *const i32;
    let [w0, w1, w2, w3, w4, w5, w6, w7, w8] =
        [w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]];
    let [o1, o2, o3, o4, o5, o6, o7, o8] = [
        off[1], off[2], off[3], off[4], off[5], off[6], off[7], off[8],
    ];
    let [m0, m1, m2, m3] = k.mult;
    let [r0, r1, r2, r3] = k.right;
    let (zp, lo, hi) = (k.ozp, k.lo, k.hi);
    let step = g.stride_w * CB;
    let mut dst = obuf;
    for oy in 0..g.out_h {
        let mut at = base.add(oy * g.stride_h * wp * CB);
        for _ in 0..g.out_w {
            // SAFETY: the nine loads are the taps of this output pixel,
            // inside the padded buffer (caller contract), the bias load the
            // 64 bytes of `bias`, the store the pixel's 16 output bytes.
            core::arch::asm!(
                "ldp {a0:q}, {a1:q}, [{bp}]",
                "ldp {a2:q}, {a3:q}, [{bp}, #32]",
                "ldr {x0:q}, [{at}]",
                "ldr {x1:q}, [{at}, {o1}]",
                "smull {l:v}.8h, {x0:v}.8b, {w0:v}.8b",
                "smull2 {h:v}.8h, {x0:v}.16b, {w0:v}.16b",
                "smlal {l:v}.8h, {x1:v}.8b, {w1:v}.8b",
                "smlal2 {h:v}.8h, {x1:v}.16b, {w1:v}.16b",
                "saddw {a0:v}.4s, {a0:v}.4s, {l:v}.4h",
                "saddw2 {a1:v}.4s, {a1:v}.4s, {l:v}.8h",
                "saddw {a2:v}.4s, {a2:v}.4s, {h:v}.4h",
                "saddw2 {a3:v}.4s, {a3:v}.4s, {h:v}.8h",
                "ldr {x0:q}, [{at}, {o2}]",
                "ldr {x1:q}, [{at}, {o3}]",
                "smull {l:v}.8h, {x0:v}.8b, {w2:v}.8b",
                "smull2 {h:v}.8h, {x0:v}.16b, {w2:v}.16b",
                "smlal {l:v}.8h, {x1:v}.8b, {w3:v}.8b",
                "smlal2 {h:v}.8h, {x1:v}.16b, {w3:v}.16b",
                "saddw {a0:v}.4s, {a0:v}.4s, {l:v}.4h",
                "saddw2 {a1:v}.4s, {a1:v}.4s, {l:v}.8h",
                "saddw {a2:v}.4s, {a2:v}.4s, {h:v}.4h",
                "saddw2 {a3:v}.4s, {a3:v}.4s, {h:v}.8h",
                "ldr {x0:q}, [{at}, {o4}]",
                "ldr {x1:q}, [{at}, {o5}]",
                "smull {l:v}.8h, {x0:v}.8b, {w4:v}.8b",
                "smull2 {h:v}.8h, {x0:v}.16b, {w4:v}.16b",
                "smlal {l:v}.8h, {x1:v}.8b, {w5:v}.8b",
                "smlal2 {h:v}.8h, {x1:v}.16b, {w5:v}.16b",
                "saddw {a0:v}.4s, {a0:v}.4s, {l:v}.4h",
                "saddw2 {a1:v}.4s, {a1:v}.4s, {l:v}.8h",
                "saddw {a2:v}.4s, {a2:v}.4s, {h:v}.4h",
                "saddw2 {a3:v}.4s, {a3:v}.4s, {h:v}.8h",
                "ldr {x0:q}, [{at}, {o6}]",
                "ldr {x1:q}, [{at}, {o7}]",
                "smull {l:v}.8h, {x0:v}.8b, {w6:v}.8b",
                "smull2 {h:v}.8h, {x0:v}.16b, {w6:v}.16b",
                "smlal {l:v}.8h, {x1:v}.8b, {w7:v}.8b",
                "smlal2 {h:v}.8h, {x1:v}.16b, {w7:v}.16b",
                "saddw {a0:v}.4s, {a0:v}.4s, {l:v}.4h",
                "saddw2 {a1:v}.4s, {a1:v}.4s, {l:v}.8h",
                "saddw {a2:v}.4s, {a2:v}.4s, {h:v}.4h",
                "saddw2 {a3:v}.4s, {a3:v}.4s, {h:v}.8h",
                "ldr {x0:q}, [{at}, {o8}]",
                "smull {l:v}.8h, {x0:v}.8b, {w8:v}.8b",
                "smull2 {h:v}.8h, {x0:v}.16b, {w8:v}.16b",
                "saddw {a0:v}.4s, {a0:v}.4s, {l:v}.4h",
                "saddw2 {a1:v}.4s, {a1:v}.4s, {l:v}.8h",
                "saddw {a2:v}.4s, {a2:v}.4s, {h:v}.4h",
                "saddw2 {a3:v}.4s, {a3:v}.4s, {h:v}.8h",
                // `out16::<true>`.
                "sqrdmulh {a0:v}.4s, {a0:v}.4s, {m0:v}.4s",
                "sqrdmulh {a1:v}.4s, {a1:v}.4s, {m1:v}.4s",
                "sqrdmulh {a2:v}.4s, {a2:v}.4s, {m2:v}.4s",
                "sqrdmulh {a3:v}.4s, {a3:v}.4s, {m3:v}.4s",
                "ssra {a0:v}.4s, {a0:v}.4s, #31",
                "ssra {a1:v}.4s, {a1:v}.4s, #31",
                "ssra {a2:v}.4s, {a2:v}.4s, #31",
                "ssra {a3:v}.4s, {a3:v}.4s, #31",
                "srshl {a0:v}.4s, {a0:v}.4s, {r0:v}.4s",
                "srshl {a1:v}.4s, {a1:v}.4s, {r1:v}.4s",
                "srshl {a2:v}.4s, {a2:v}.4s, {r2:v}.4s",
                "srshl {a3:v}.4s, {a3:v}.4s, {r3:v}.4s",
                "sqxtn {l:v}.4h, {a0:v}.4s",
                "sqxtn2 {l:v}.8h, {a1:v}.4s",
                "sqxtn {h:v}.4h, {a2:v}.4s",
                "sqxtn2 {h:v}.8h, {a3:v}.4s",
                "sqadd {l:v}.8h, {l:v}.8h, {zp:v}.8h",
                "sqadd {h:v}.8h, {h:v}.8h, {zp:v}.8h",
                "sqxtn {x0:v}.8b, {l:v}.8h",
                "sqxtn2 {x0:v}.16b, {h:v}.8h",
                "smax {x0:v}.16b, {x0:v}.16b, {lo:v}.16b",
                "smin {x0:v}.16b, {x0:v}.16b, {hi:v}.16b",
                "str {x0:q}, [{dst}], #16",
                at = in(reg) at,
                bp = in(reg) bp,
                dst = inout(reg) dst,
                o1 = in(reg) o1, o2 = in(reg) o2, o3 = in(reg) o3, o4 = in(reg) o4,
                o5 = in(reg) o5, o6 = in(reg) o6, o7 = in(reg) o7, o8 = in(reg) o8,
                w0 = in(vreg) w0, w1 = in(vreg) w1, w2 = in(vreg) w2, w3 = in(vreg) w3,
                w4 = in(vreg) w4, w5 = in(vreg) w5, w6 = in(vreg) w6, w7 = in(vreg) w7,
                w8 = in(vreg) w8,
                m0 = in(vreg) m0, m1 = in(vreg) m1, m2 = in(vreg) m2, m3 = in(vreg) m3,
                r0 = in(vreg) r0, r1 = in(vreg) r1, r2 = in(vreg) r2, r3 = in(vreg) r3,
                zp = in(vreg) zp, lo = in(vreg) lo, hi = in(vreg) hi,
                a0 = out(vreg) _, a1 = out(vreg) _, a2 = out(vreg) _, a3 = out(vreg) _,
                x0 = out(vreg) _, x1 = out(vreg) _, l = out(vreg) _, h = out(vreg) _,
                options(nostack, preserves_flags),
            );
            at = at.add(step);
        }
    }
}

/// [`pixels`] for pairable 3x3 windows, in two passes per output row so that
/// neither keeps more than 32 vectors live: the taps in one asm block per
/// pixel (four i16 pairs and one single tap: `smull`/`smlal` and their `2`
/// forms, `saddw`/`saddw2`: 47 instructions for 144 products, the weights in
/// nine registers across the row), accumulators to a row buffer; then the
/// output stage over the row. (The same code in intrinsics lost the `2`
/// forms and spilled the weights: 38% more instructions under qemu.)
///
/// # Safety
/// As [`pixels`]; `off[0] == 0`; `g.out_w <= MAX_OUT_W`.
#[inline(always)]
unsafe fn pixels3x3<const FAST: bool>(
    g: &ConvGeometry,
    wp: usize,
    base: *const i8,
    obuf: *mut i8,
    w: &[int8x16_t; MAX_TAPS],
    off: &[usize; MAX_TAPS],
    k: &Consts,
) {
    // out_w <= MAX_OUT_W (`applies`): one row of accumulators, the first
    // `out_w` written before they are read.
    let mut row = core::mem::MaybeUninit::<[[int32x4_t; 4]; MAX_OUT_W]>::uninit();
    let row = row.as_mut_ptr() as *mut [int32x4_t; 4];
    let [w0, w1, w2, w3, w4, w5, w6, w7, w8] =
        [w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]];
    let [o1, o2, o3, o4, o5, o6, o7, o8] = [
        off[1], off[2], off[3], off[4], off[5], off[6], off[7], off[8],
    ];
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            let at = base.add((oy * g.stride_h * wp + ox * g.stride_w) * CB);
            let [mut a0, mut a1, mut a2, mut a3] = k.b;
            // SAFETY: the nine loads are the taps of this output pixel,
            // inside the padded buffer (caller contract); registers only
            // otherwise.
            core::arch::asm!(
                "ldr {x0:q}, [{at}]",
                "ldr {x1:q}, [{at}, {o1}]",
                "smull {l:v}.8h, {x0:v}.8b, {w0:v}.8b",
                "smull2 {h:v}.8h, {x0:v}.16b, {w0:v}.16b",
                "smlal {l:v}.8h, {x1:v}.8b, {w1:v}.8b",
                "smlal2 {h:v}.8h, {x1:v}.16b, {w1:v}.16b",
                "saddw {a0:v}.4s, {a0:v}.4s, {l:v}.4h",
                "saddw2 {a1:v}.4s, {a1:v}.4s, {l:v}.8h",
                "saddw {a2:v}.4s, {a2:v}.4s, {h:v}.4h",
                "saddw2 {a3:v}.4s, {a3:v}.4s, {h:v}.8h",
                "ldr {x0:q}, [{at}, {o2}]",
                "ldr {x1:q}, [{at}, {o3}]",
                "smull {l:v}.8h, {x0:v}.8b, {w2:v}.8b",
                "smull2 {h:v}.8h, {x0:v}.16b, {w2:v}.16b",
                "smlal {l:v}.8h, {x1:v}.8b, {w3:v}.8b",
                "smlal2 {h:v}.8h, {x1:v}.16b, {w3:v}.16b",
                "saddw {a0:v}.4s, {a0:v}.4s, {l:v}.4h",
                "saddw2 {a1:v}.4s, {a1:v}.4s, {l:v}.8h",
                "saddw {a2:v}.4s, {a2:v}.4s, {h:v}.4h",
                "saddw2 {a3:v}.4s, {a3:v}.4s, {h:v}.8h",
                "ldr {x0:q}, [{at}, {o4}]",
                "ldr {x1:q}, [{at}, {o5}]",
                "smull {l:v}.8h, {x0:v}.8b, {w4:v}.8b",
                "smull2 {h:v}.8h, {x0:v}.16b, {w4:v}.16b",
                "smlal {l:v}.8h, {x1:v}.8b, {w5:v}.8b",
                "smlal2 {h:v}.8h, {x1:v}.16b, {w5:v}.16b",
                "saddw {a0:v}.4s, {a0:v}.4s, {l:v}.4h",
                "saddw2 {a1:v}.4s, {a1:v}.4s, {l:v}.8h",
                "saddw {a2:v}.4s, {a2:v}.4s, {h:v}.4h",
                "saddw2 {a3:v}.4s, {a3:v}.4s, {h:v}.8h",
                "ldr {x0:q}, [{at}, {o6}]",
                "ldr {x1:q}, [{at}, {o7}]",
                "smull {l:v}.8h, {x0:v}.8b, {w6:v}.8b",
                "smull2 {h:v}.8h, {x0:v}.16b, {w6:v}.16b",
                "smlal {l:v}.8h, {x1:v}.8b, {w7:v}.8b",
                "smlal2 {h:v}.8h, {x1:v}.16b, {w7:v}.16b",
                "saddw {a0:v}.4s, {a0:v}.4s, {l:v}.4h",
                "saddw2 {a1:v}.4s, {a1:v}.4s, {l:v}.8h",
                "saddw {a2:v}.4s, {a2:v}.4s, {h:v}.4h",
                "saddw2 {a3:v}.4s, {a3:v}.4s, {h:v}.8h",
                "ldr {x0:q}, [{at}, {o8}]",
                "smull {l:v}.8h, {x0:v}.8b, {w8:v}.8b",
                "smull2 {h:v}.8h, {x0:v}.16b, {w8:v}.16b",
                "saddw {a0:v}.4s, {a0:v}.4s, {l:v}.4h",
                "saddw2 {a1:v}.4s, {a1:v}.4s, {l:v}.8h",
                "saddw {a2:v}.4s, {a2:v}.4s, {h:v}.4h",
                "saddw2 {a3:v}.4s, {a3:v}.4s, {h:v}.8h",
                at = in(reg) at,
                o1 = in(reg) o1, o2 = in(reg) o2, o3 = in(reg) o3, o4 = in(reg) o4,
                o5 = in(reg) o5, o6 = in(reg) o6, o7 = in(reg) o7, o8 = in(reg) o8,
                w0 = in(vreg) w0, w1 = in(vreg) w1, w2 = in(vreg) w2, w3 = in(vreg) w3,
                w4 = in(vreg) w4, w5 = in(vreg) w5, w6 = in(vreg) w6, w7 = in(vreg) w7,
                w8 = in(vreg) w8,
                a0 = inout(vreg) a0, a1 = inout(vreg) a1, a2 = inout(vreg) a2, a3 = inout(vreg) a3,
                x0 = out(vreg) _, x1 = out(vreg) _, l = out(vreg) _, h = out(vreg) _,
                options(nostack, readonly, preserves_flags),
            );
            row.add(ox).write([a0, a1, a2, a3]);
        }
        for ox in 0..g.out_w {
            let acc = &*row.add(ox);
            vst1q_s8(obuf.add((oy * g.out_w + ox) * CB), out16::<FAST>(acc, k));
        }
    }
}

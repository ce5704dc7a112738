//! Depthwise `qs8_conv2d` on AVX2, vectorised along the output width.
//!
//! Eight adjacent outputs of one row share a vector of i32 accumulators. For
//! each tap, `x - in_zp` (in [-255, 255], so exact in i16) is multiplied by the
//! weight with `vpmaddwd` against `[w, 0]` pairs: for stride 1 the inputs are
//! sign-extended to i32 lanes (the high i16 half meets the 0 weight); for
//! stride 2 sixteen inputs are sign-extended to i16 and the pairs drop the odd
//! ones, which is exactly the stride-2 subsampling. Outputs whose taps leave
//! the image (the borders), the width remainder and other strides take the
//! scalar path, which is the reference's accumulation for one output.

use core::arch::x86_64::*;

use super::requant::{output_stage, pack8, RqV};
use crate::reference::{self, ConvGeometry, QConvParams};
use crate::requant::{clamp_i8, requantize, Requant};

/// AVX2 depthwise [`reference::qs8_conv2d`]: the reference contract plus
/// `groups == in_c == out_c`. Other geometries (and strides above 2, or an
/// input zero point outside the int8 range) run the reference.
pub fn qs8_dwconv2d__avx2(
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    bias: &[i32],
    rq: &[Requant],
    output: &mut [i8],
) {
    let depthwise = g.is_valid() && g.groups == g.in_c && g.groups == g.out_c;
    if !super::has_avx2() || !depthwise || !(-128..=127).contains(&q.in_zp) {
        return reference::qs8_conv2d(g, q, input, weights, bias, rq, output);
    }
    assert!(
        input.len() >= g.input_len()
            && weights.len() >= g.weight_len()
            && bias.len() >= g.out_c
            && rq.len() >= g.out_c
            && output.len() >= g.output_len(),
        "qs8_dwconv2d: buffers do not match the geometry"
    );
    assert!(
        g.output_len() == 0 || q.act_min <= q.act_max,
        "qs8_dwconv2d: act_min > act_max"
    );
    // SAFETY: AVX2 is available and the lengths were checked above; the vector
    // loads stay inside one input row (see `vector_ok`).
    // SAFETY: AVX2 is present (checked above); buffer sizes checked above.
    if g.stride_w <= 2 && padded_dims(g).is_some() {
        unsafe { dwconv_padded(g, q, input, weights, bias, rq, output) }
    } else {
        unsafe { dwconv(g, q, input, weights, bias, rq, output) }
    }
}

/// Largest padded plane handled on the stack (covers 56x56 and smaller maps,
/// where border outputs would otherwise dominate).
const PADDED_MAX: usize = 96 * 96;

/// Rows and row length of a plane padded with `in_zp` so that every tap of
/// every output, with the width rounded up to 8 outputs, reads inside it.
fn padded_dims(g: &ConvGeometry) -> Option<(usize, usize)> {
    let load = if g.stride_w == 1 { 8 } else { 16 };
    let out_w8 = g.out_w.div_ceil(8) * 8;
    let pw = ((out_w8 - 8) * g.stride_w + (g.kw - 1) * g.dil_w + load).max(g.pad_left + g.in_w);
    let ph = ((g.out_h.max(1) - 1) * g.stride_h + (g.kh - 1) * g.dil_h + 1).max(g.pad_top + g.in_h);
    (pw * ph <= PADDED_MAX && g.out_w > 0).then_some((ph, pw))
}

/// Small planes: copy each channel into a zero-point-padded stack plane, then
/// every output (borders included) takes the vector path; padding taps hold
/// `in_zp` and so contribute `(in_zp - in_zp) * w = 0`, exactly like the
/// reference, which skips them.
#[target_feature(enable = "avx2")]
unsafe fn dwconv_padded(
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    bias: &[i32],
    rq: &[Requant],
    output: &mut [i8],
) {
    let Some((ph, pw)) = padded_dims(g) else {
        return;
    };
    let mut plane = [0i8; PADDED_MAX];
    let pad = &mut plane[..ph * pw];
    let in_plane = g.in_h * g.in_w;
    let taps = g.kh * g.kw;
    let zp32 = _mm256_set1_epi32(q.in_zp);
    let zp16 = _mm256_set1_epi16(q.in_zp as i16);
    let ozp = _mm256_set1_epi32(q.out_zp);
    let lo = _mm256_set1_epi32(q.act_min as i32);
    let hi = _mm256_set1_epi32(q.act_max as i32);
    for c in 0..g.out_c {
        pad.fill(q.in_zp as i8);
        for y in 0..g.in_h {
            let src = &input[c * in_plane + y * g.in_w..c * in_plane + (y + 1) * g.in_w];
            let dst = (y + g.pad_top) * pw + g.pad_left;
            pad[dst..dst + g.in_w].copy_from_slice(src);
        }
        let w = &weights[c * taps..(c + 1) * taps];
        let r = RqV::splat(rq[c]);
        for oy in 0..g.out_h {
            let orow = &mut output[(c * g.out_h + oy) * g.out_w..(c * g.out_h + oy + 1) * g.out_w];
            let mut ox = 0;
            while ox < g.out_w {
                let mut acc = _mm256_set1_epi32(bias[c]);
                for ky in 0..g.kh {
                    let row = &pad[(oy * g.stride_h + ky * g.dil_h) * pw..];
                    for kx in 0..g.kw {
                        let wv = _mm256_set1_epi32(w[ky * g.kw + kx] as i16 as u16 as i32);
                        let ix = ox * g.stride_w + kx * g.dil_w;
                        let prod = if g.stride_w == 1 {
                            let src = row[ix..ix + 8].as_ptr();
                            // SAFETY: 8 readable bytes (slice bound above).
                            let x = _mm256_cvtepi8_epi32(unsafe {
                                _mm_loadl_epi64(src as *const __m128i)
                            });
                            _mm256_madd_epi16(_mm256_sub_epi32(x, zp32), wv)
                        } else {
                            let src = row[ix..ix + 16].as_ptr();
                            // SAFETY: 16 readable bytes (slice bound above).
                            let x = _mm256_cvtepi8_epi16(unsafe {
                                _mm_loadu_si128(src as *const __m128i)
                            });
                            _mm256_madd_epi16(_mm256_sub_epi16(x, zp16), wv)
                        };
                        acc = _mm256_add_epi32(acc, prod);
                    }
                }
                let v = pack8(output_stage(acc, &r, ozp, lo, hi));
                let n = (g.out_w - ox).min(8);
                if n == 8 {
                    // SAFETY: 8 writable bytes at orow[ox..ox + 8].
                    unsafe { _mm_storel_epi64(orow[ox..ox + 8].as_mut_ptr() as *mut __m128i, v) };
                } else {
                    let mut tmp = [0i8; 16];
                    // SAFETY: tmp has 16 writable bytes.
                    unsafe { _mm_storeu_si128(tmp.as_mut_ptr() as *mut __m128i, v) };
                    orow[ox..ox + n].copy_from_slice(&tmp[..n]);
                }
                ox += 8;
            }
        }
    }
}

#[target_feature(enable = "avx2")]
unsafe fn dwconv(
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    bias: &[i32],
    rq: &[Requant],
    output: &mut [i8],
) {
    let plane = g.in_h * g.in_w;
    let taps = g.kh * g.kw;
    // Bytes one vector load reads from an input row.
    let load = if g.stride_w == 1 { 8 } else { 16 };
    let vector = g.stride_w <= 2;
    // First output column whose leftmost tap is in the image.
    let ox_lo = g.pad_left.div_ceil(g.stride_w);
    // A block of 8 outputs at `ox` is vectorisable when every tap's load stays
    // inside the row: the leftmost tap starts at or after column 0 and the
    // rightmost tap's load ends at or before `in_w`.
    let vector_ok = |ox: usize| {
        vector
            && ox >= ox_lo
            && ox + 8 <= g.out_w
            && ox * g.stride_w + (g.kw - 1) * g.dil_w + load <= g.in_w + g.pad_left
    };
    let zp32 = _mm256_set1_epi32(q.in_zp);
    let zp16 = _mm256_set1_epi16(q.in_zp as i16);
    let ozp = _mm256_set1_epi32(q.out_zp);
    let lo = _mm256_set1_epi32(q.act_min as i32);
    let hi = _mm256_set1_epi32(q.act_max as i32);
    for c in 0..g.out_c {
        let inp = &input[c * plane..(c + 1) * plane];
        let w = &weights[c * taps..(c + 1) * taps];
        let r = RqV::splat(rq[c]);
        for oy in 0..g.out_h {
            let orow = &mut output[(c * g.out_h + oy) * g.out_w..(c * g.out_h + oy + 1) * g.out_w];
            let mut ox = 0;
            while ox < g.out_w {
                if !vector_ok(ox) {
                    orow[ox] = scalar_one(g, q, inp, w, bias[c], rq[c], oy, ox);
                    ox += 1;
                    continue;
                }
                let mut acc = _mm256_set1_epi32(bias[c]);
                for ky in 0..g.kh {
                    let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
                    if iy < 0 || iy >= g.in_h as isize {
                        continue;
                    }
                    let row = &inp[iy as usize * g.in_w..(iy as usize + 1) * g.in_w];
                    for kx in 0..g.kw {
                        // `[w, 0]` i16 pairs: the high half of each i32 lane is ignored.
                        let wv = _mm256_set1_epi32(w[ky * g.kw + kx] as i16 as u16 as i32);
                        // In range by `vector_ok`: ix >= 0 and ix + load <= in_w.
                        let ix = ox * g.stride_w + kx * g.dil_w - g.pad_left;
                        let src = row[ix..ix + load].as_ptr();
                        let prod = if g.stride_w == 1 {
                            // SAFETY: 8 bytes at `src` are in `row`.
                            let x = _mm256_cvtepi8_epi32(unsafe {
                                _mm_loadl_epi64(src as *const __m128i)
                            });
                            _mm256_madd_epi16(_mm256_sub_epi32(x, zp32), wv)
                        } else {
                            // SAFETY: 16 bytes at `src` are in `row`.
                            let x = _mm256_cvtepi8_epi16(unsafe {
                                _mm_loadu_si128(src as *const __m128i)
                            });
                            _mm256_madd_epi16(_mm256_sub_epi16(x, zp16), wv)
                        };
                        acc = _mm256_add_epi32(acc, prod);
                    }
                }
                let v = pack8(output_stage(acc, &r, ozp, lo, hi));
                let dst = &mut orow[ox..ox + 8];
                // SAFETY: `dst` is 8 bytes.
                unsafe { _mm_storel_epi64(dst.as_mut_ptr() as *mut __m128i, v) };
                ox += 8;
            }
        }
    }
}

/// One output of channel `c` (`inp`, `w` are its plane and taps), exactly as
/// the reference computes it.
#[allow(clippy::too_many_arguments)]
#[inline]
fn scalar_one(
    g: &ConvGeometry,
    q: &QConvParams,
    inp: &[i8],
    w: &[i8],
    bias: i32,
    rq: Requant,
    oy: usize,
    ox: usize,
) -> i8 {
    let mut acc = bias;
    for ky in 0..g.kh {
        let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
        if iy < 0 || iy >= g.in_h as isize {
            continue;
        }
        for kx in 0..g.kw {
            let ix = (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_left as isize;
            if ix < 0 || ix >= g.in_w as isize {
                continue;
            }
            let x = inp[iy as usize * g.in_w + ix as usize] as i32;
            acc += w[ky * g.kw + kx] as i32 * (x - q.in_zp);
        }
    }
    clamp_i8(requantize(acc, rq) + q.out_zp, q.act_min, q.act_max)
}

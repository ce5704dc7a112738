//! Depthwise `qs8_conv2d` on AVX2. Sixteen channels and more take the
//! channel-block path of `dwconv_hwc.rs` where it applies; the planar paths
//! here, vectorised along the output width, take the rest.
//!
//! Strides 1 and 2 take [`dwconv_padded`]: strips of output rows read an
//! i16 copy of the rows they need, with zero borders, and taps go in pairs.
//! Other strides (and rows too wide for a strip) take [`dwconv`]:
//! eight adjacent outputs of one row share a vector of i32 accumulators. For
//! each tap, `x - in_zp` (in [-255, 255], so exact in i16) is multiplied by the
//! weight with `vpmaddwd` against `[w, 0]` pairs: for stride 1 the inputs are
//! sign-extended to i32 lanes (the high i16 half meets the 0 weight); for
//! stride 2 sixteen inputs are sign-extended to i16 and the pairs drop the odd
//! ones, which is exactly the stride-2 subsampling. Outputs whose taps leave
//! the image (the borders), the width remainder and other strides take the
//! scalar path, which is the reference's accumulation for one output.

use core::arch::x86_64::*;

use super::dwconv_hwc;
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
    dwconv2d(g, q, input, weights, bias, rq, output, false)
}

/// [`qs8_dwconv2d__avx2`] whose channel-block path is built with AVX-512
/// F/BW/VL (`dwconv_hwc::dwconv_hwc_avx512`: the same code with 32 vector
/// registers); same contract, same output. Runs the AVX2 kernel on CPUs
/// without AVX-512 F/BW/VL/VNNI.
pub fn qs8_dwconv2d__avx512vnni(
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    bias: &[i32],
    rq: &[Requant],
    output: &mut [i8],
) {
    dwconv2d(
        g,
        q,
        input,
        weights,
        bias,
        rq,
        output,
        super::has_avx512vnni(),
    )
}

/// Both wrappers; `wide`: AVX-512 F/BW/VL are present.
#[allow(clippy::too_many_arguments)]
fn dwconv2d(
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    bias: &[i32],
    rq: &[Requant],
    output: &mut [i8],
    wide: bool,
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
    if g.output_len() == 0 {
        return;
    }
    // The HWC path wherever it applies: it measured 1.04x (24 channels of
    // 176x176, stride 2) to 3.2x (960 of 7x7) faster than the planar paths
    // on every mobilenet_v2 and FastestDet layer (`tests::dw_paths_speed`).
    // The planar paths keep fewer than 16 channels and rows too wide for
    // its stack ring.
    // SAFETY (all three): AVX2 is present and the buffer lengths were
    // checked above; `dwconv_hwc` also needs `applies(g)` and both zero
    // points in the int8 range, checked here (and its AVX-512 build the
    // features `wide` promises); `dwconv`'s vector loads stay inside one
    // input row (see `vector_ok`).
    if (-128..=127).contains(&q.out_zp) && dwconv_hwc::applies(g) {
        unsafe {
            if wide {
                dwconv_hwc::dwconv_hwc_avx512(g, q, input, weights, bias, rq, output)
            } else {
                dwconv_hwc::dwconv_hwc(g, q, input, weights, bias, rq, output)
            }
        }
    } else if padded_dims(g).is_some() {
        unsafe { dwconv_padded(g, q, input, weights, bias, rq, output) }
    } else {
        unsafe { dwconv(g, q, input, weights, bias, rq, output) }
    }
}

/// The padded strip plane (in i16 elements) on the stack: 35 KiB, a whole
/// 112x112 map plus borders, or strips of larger ones.
const PADDED_MAX: usize = 132 * 132;

/// Most tap pairs per channel the padded path precomputes (a 7x7 kernel
/// needs 28).
const MAX_PAIRS: usize = 32;

/// Outputs per vector block: 16 for stride 1, 8 for stride 2.
fn block(g: &ConvGeometry) -> usize {
    if g.stride_w == 1 {
        16
    } else {
        8
    }
}

/// Row length of the i16 plane the padded path needs, and how many output
/// rows one strip of the plane holds, or `None` when the geometry is not one
/// it handles (stride 1 with any dilation, or stride 2 without horizontal
/// dilation) or not even one output row fits. Every load of every block, the
/// width rounded up to a whole block, stays inside the plane.
fn padded_dims(g: &ConvGeometry) -> Option<(usize, usize)> {
    let ok = g.stride_w == 1 || (g.stride_w == 2 && g.dil_w == 1);
    if !ok || g.out_w == 0 || g.out_h == 0 || g.kh * g.kw.div_ceil(2) > MAX_PAIRS {
        return None;
    }
    let ow = g.out_w.div_ceil(block(g)) * block(g);
    // Stride 1: loads of 16 at `ox + kx * dil_w`; stride 2: loads of 16 at
    // `2 ox + kx` (kx <= kw - 1, rounded to the pair start).
    let need = if g.stride_w == 1 {
        ow + (g.kw - 1) * g.dil_w
    } else {
        2 * ow + g.kw - 1
    };
    let pw = need.max(g.pad_left + g.in_w);
    let span = (g.kh - 1) * g.dil_h + 1;
    let rows = PADDED_MAX / pw;
    if rows < span {
        return None;
    }
    let strip = ((rows - span) / g.stride_h + 1).min(g.out_h);
    Some((pw, strip))
}

/// Plane rows strip `oy0..oy0 + n` reads.
fn strip_rows(g: &ConvGeometry, n: usize) -> usize {
    (n - 1) * g.stride_h + (g.kh - 1) * g.dil_h + 1
}

/// `[lo, hi]` as one i16 pair in an i32 (low half first, as `vpmaddwd` reads it).
fn pair(lo: i8, hi: i8) -> i32 {
    (lo as i16 as u16 as u32 | (hi as i16 as u16 as u32) << 16) as i32
}

/// Planes that fit on the stack: each channel is copied once into an i16
/// plane holding `x - in_zp` (exact: within [-255, 255]) with zero borders,
/// so every output, borders included, takes the vector path. Taps go in
/// pairs through `vpmaddwd` (`x0 * w0 + x1 * w1` exactly in i32; each product
/// is at most 255 * 128 in magnitude):
/// - stride 1: the pair of adjacent taps `kx, kx + 1` of sixteen outputs is
///   two loads interleaved by `vpunpck{l,h}wd`, which splits the outputs into
///   lanes {0-3, 8-11} and {4-7, 12-15}; `vpackssdw` restores the order;
/// - stride 2: the i16 pair at `2 ox + kx` is already `(x[2 ox + kx],
///   x[2 ox + kx + 1])`, the taps `kx, kx + 1` of output `ox`: one load and
///   one `vpmaddwd` cover two taps of eight outputs.
///
/// An odd last tap pairs with a zero weight. Border taps read zeros, which
/// contribute nothing, exactly like the reference, which skips them.
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
    let Some((pw, strip)) = padded_dims(g) else {
        return;
    };
    // Zeroed once: columns outside the image are never written. Only the
    // rows a strip uses are zeroed: the whole 34 kB would cost more than
    // the convolution itself on small maps.
    let used = pw * strip_rows(g, strip);
    let mut buf = core::mem::MaybeUninit::<[i16; PADDED_MAX]>::uninit();
    // SAFETY: `padded_dims` sizes `strip` so that `used <= PADDED_MAX`; the
    // first `used` elements are initialized (zeroed) before the slice is made.
    let plane: &mut [i16] = unsafe {
        let p = buf.as_mut_ptr() as *mut i16;
        core::ptr::write_bytes(p, 0, used);
        core::slice::from_raw_parts_mut(p, used)
    };
    let in_plane = g.in_h * g.in_w;
    let taps = g.kh * g.kw;
    let npk = g.kw.div_ceil(2);
    let zp16 = _mm256_set1_epi16(q.in_zp as i16);
    let ozp = _mm256_set1_epi32(q.out_zp);
    let lo = _mm256_set1_epi32(q.act_min as i32);
    let hi = _mm256_set1_epi32(q.act_max as i32);
    let mut wp = [_mm256_setzero_si256(); MAX_PAIRS];
    for c in 0..g.out_c {
        let w = &weights[c * taps..(c + 1) * taps];
        for ky in 0..g.kh {
            for p in 0..npk {
                let kx = 2 * p;
                let w1 = if kx + 1 < g.kw {
                    w[ky * g.kw + kx + 1]
                } else {
                    0
                };
                wp[ky * npk + p] = _mm256_set1_epi32(pair(w[ky * g.kw + kx], w1));
            }
        }
        let st = Stage {
            r: RqV::splat(rq[c]),
            bias: _mm256_set1_epi32(bias[c]),
            ozp,
            lo,
            hi,
        };
        let chan = &input[c * in_plane..(c + 1) * in_plane];
        let mut oy0 = 0;
        while oy0 < g.out_h {
            let n = strip.min(g.out_h - oy0);
            let ph = strip_rows(g, n);
            // Plane row r is padded-image row oy0 * stride_h + r.
            for r in 0..ph {
                let dst = &mut plane[r * pw + g.pad_left..][..g.in_w];
                let y = (oy0 * g.stride_h + r) as isize - g.pad_top as isize;
                if y < 0 || y >= g.in_h as isize {
                    dst.fill(0);
                    continue;
                }
                let src = &chan[y as usize * g.in_w..(y as usize + 1) * g.in_w];
                let mut x = 0;
                while x + 16 <= g.in_w {
                    // SAFETY: 16 bytes read from `src`, 32 written to `dst` (in bounds).
                    let v = _mm256_cvtepi8_epi16(unsafe {
                        _mm_loadu_si128(src[x..x + 16].as_ptr() as *const __m128i)
                    });
                    let d = dst[x..x + 16].as_mut_ptr() as *mut __m256i;
                    unsafe { _mm256_storeu_si256(d, _mm256_sub_epi16(v, zp16)) };
                    x += 16;
                }
                for (d, &v) in dst[x..].iter_mut().zip(&src[x..]) {
                    *d = v as i16 - q.in_zp as i16;
                }
            }
            let out = &mut output[(c * g.out_h + oy0) * g.out_w..(c * g.out_h + oy0 + n) * g.out_w];
            let pad = &plane[..ph * pw];
            // Constant kernel sizes let the compiler unroll the tap loops.
            // SAFETY (all arms): AVX2 present; `pad` holds the `strip_rows`
            // rows of length `pw` that `padded_dims` sized for `n` output
            // rows; `wp` holds `kh * ceil(kw / 2)` pairs.
            unsafe {
                match (g.kh, g.kw, g.stride_w) {
                    (3, 3, 1) => channel_s1(g, pad, pw, &wp, &st, out, 3, 3),
                    (3, 3, _) => channel_s2(g, pad, pw, &wp, &st, out, 3, 3),
                    (5, 5, 1) => channel_s1(g, pad, pw, &wp, &st, out, 5, 5),
                    (5, 5, _) => channel_s2(g, pad, pw, &wp, &st, out, 5, 5),
                    (kh, kw, 1) => channel_s1(g, pad, pw, &wp, &st, out, kh, kw),
                    (kh, kw, _) => channel_s2(g, pad, pw, &wp, &st, out, kh, kw),
                }
            }
            oy0 += n;
        }
    }
}

/// Output-stage constants of one channel.
struct Stage {
    r: RqV,
    bias: __m256i,
    ozp: __m256i,
    lo: __m256i,
    hi: __m256i,
}

/// Stride 1: blocks of sixteen outputs, taps in adjacent pairs.
///
/// Safety: AVX2; `pad` is `padded_dims(g)`'s plane (row length `pw`), so 16
/// values at column `ox + kx * dil_w` of every tap row are inside it for
/// every block start `ox < out_w`; `wp` holds `kh * ceil(kw / 2)` pairs;
/// `out` is whole output rows of the channel, row 0 reading plane row 0.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn channel_s1(
    g: &ConvGeometry,
    pad: &[i16],
    pw: usize,
    wp: &[__m256i; MAX_PAIRS],
    st: &Stage,
    out: &mut [i8],
    kh: usize,
    kw: usize,
) {
    let npk = kw.div_ceil(2);
    let base = pad.as_ptr();
    for oy in 0..out.len() / g.out_w {
        let orow = &mut out[oy * g.out_w..(oy + 1) * g.out_w];
        let mut ox = 0;
        while ox < g.out_w {
            let (mut a0, mut a1) = (st.bias, _mm256_setzero_si256());
            for ky in 0..kh {
                let row = base.add((oy * g.stride_h + ky * g.dil_h) * pw + ox);
                let ld = |kx: usize| _mm256_loadu_si256(row.add(kx * g.dil_w) as *const __m256i);
                for p in 0..npk {
                    let kx = 2 * p;
                    let x0 = ld(kx);
                    let x1 = if kx + 1 < kw {
                        ld(kx + 1)
                    } else {
                        _mm256_setzero_si256()
                    };
                    let wv = wp[ky * npk + p];
                    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), wv));
                    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), wv));
                }
            }
            // a0: outputs {0-3, 8-11}; a1 (bias added here): {4-7, 12-15}.
            let o0 = output_stage(a0, &st.r, st.ozp, st.lo, st.hi);
            let o1 = output_stage(_mm256_add_epi32(a1, st.bias), &st.r, st.ozp, st.lo, st.hi);
            let h = _mm256_packs_epi32(o0, o1); // outputs 0..7 | 8..15 as i16
            let b = _mm256_packs_epi16(h, h);
            let v = _mm_unpacklo_epi64(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b));
            let n = (g.out_w - ox).min(16);
            if n == 16 {
                _mm_storeu_si128(orow[ox..ox + 16].as_mut_ptr() as *mut __m128i, v);
            } else {
                let mut tmp = [0i8; 16];
                _mm_storeu_si128(tmp.as_mut_ptr() as *mut __m128i, v);
                orow[ox..ox + n].copy_from_slice(&tmp[..n]);
            }
            ox += 16;
        }
    }
}

/// Stride 2 (no horizontal dilation): blocks of eight outputs; the i16 pair at
/// `2 ox + kx` is taps `kx, kx + 1` of output `ox`.
///
/// Safety: as [`channel_s1`], with 16 values at column `2 ox + kx` inside.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn channel_s2(
    g: &ConvGeometry,
    pad: &[i16],
    pw: usize,
    wp: &[__m256i; MAX_PAIRS],
    st: &Stage,
    out: &mut [i8],
    kh: usize,
    kw: usize,
) {
    let npk = kw.div_ceil(2);
    let base = pad.as_ptr();
    for oy in 0..out.len() / g.out_w {
        let orow = &mut out[oy * g.out_w..(oy + 1) * g.out_w];
        let mut ox = 0;
        while ox < g.out_w {
            let mut acc = st.bias;
            for ky in 0..kh {
                let row = base.add((oy * g.stride_h + ky * g.dil_h) * pw + 2 * ox);
                for p in 0..npk {
                    let x = _mm256_loadu_si256(row.add(2 * p) as *const __m256i);
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, wp[ky * npk + p]));
                }
            }
            let v = pack8(output_stage(acc, &st.r, st.ozp, st.lo, st.hi));
            let n = (g.out_w - ox).min(8);
            if n == 8 {
                _mm_storel_epi64(orow[ox..ox + 8].as_mut_ptr() as *mut __m128i, v);
            } else {
                let mut tmp = [0i8; 16];
                _mm_storeu_si128(tmp.as_mut_ptr() as *mut __m128i, v);
                orow[ox..ox + n].copy_from_slice(&tmp[..n]);
            }
            ox += 8;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-layer timing of the HWC and planar paths on image-backbone
    /// depthwise layers (mobilenet_v2 at 224, FastestDet at 352), the data
    /// behind the path choice in [`qs8_dwconv2d__avx2`]; also checks the two
    /// paths agree. Run with
    /// `cargo test --release -p strix-kernels --lib dw_paths_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; prints a table"]
    fn dw_paths_speed() {
        if !super::super::has_avx2() {
            eprintln!("SKIP dw_paths_speed: no avx2");
            return;
        }
        // (channels, in size, kernel, stride)
        let layers = [
            (32usize, 112usize, 3usize, 1usize),
            (96, 112, 3, 2),
            (144, 56, 3, 1),
            (144, 56, 3, 2),
            (192, 28, 3, 1),
            (192, 28, 3, 2),
            (384, 14, 3, 1),
            (576, 14, 3, 1),
            (576, 14, 3, 2),
            (960, 7, 3, 1),
            (24, 176, 3, 2),
            (48, 88, 3, 2),
            (48, 44, 3, 1),
            (96, 44, 3, 2),
            (96, 22, 3, 1),
            (192, 22, 3, 2),
            (192, 11, 3, 1),
            (96, 22, 5, 1),
            (96, 44, 5, 1),
            (32, 112, 5, 1),
        ];
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for (c, n, k, st) in layers {
            let p = k / 2;
            let o = (n + 2 * p - k) / st + 1;
            let g = ConvGeometry {
                in_c: c,
                in_h: n,
                in_w: n,
                out_c: c,
                out_h: o,
                out_w: o,
                kh: k,
                kw: k,
                stride_h: st,
                stride_w: st,
                dil_h: 1,
                dil_w: 1,
                pad_top: p,
                pad_left: p,
                groups: c,
            };
            let input: Vec<i8> = (0..g.input_len()).map(|_| rnd() as i8).collect();
            let w: Vec<i8> = (0..g.weight_len()).map(|_| rnd() as i8).collect();
            let bias: Vec<i32> = (0..c).map(|_| (rnd() % 2000) as i32 - 1000).collect();
            let rq: Vec<Requant> = (0..c)
                .map(|_| crate::requant::quantize_multiplier(0.0005 + (rnd() % 100) as f64 * 1e-5))
                .collect();
            let q = QConvParams {
                in_zp: -3,
                out_zp: 5,
                act_min: -128,
                act_max: 127,
            };
            let mut a = vec![0i8; g.output_len()];
            let mut b = vec![0i8; g.output_len()];
            let time = |f: &mut dyn FnMut()| {
                let mut best = f64::MAX;
                for _ in 0..7 {
                    let t = std::time::Instant::now();
                    for _ in 0..20 {
                        f();
                    }
                    best = best.min(t.elapsed().as_secs_f64() / 20.0);
                }
                best * 1e6
            };
            // SAFETY (both): AVX2 checked above; buffers sized by `g`; zero
            // points in range; `applies` checked before the HWC call.
            let planar = time(&mut || unsafe {
                if padded_dims(&g).is_some() {
                    dwconv_padded(&g, &q, &input, &w, &bias, &rq, &mut a)
                } else {
                    dwconv(&g, &q, &input, &w, &bias, &rq, &mut a)
                }
            });
            assert!(dwconv_hwc::applies(&g), "{g:?}");
            let hwc = time(&mut || unsafe {
                dwconv_hwc::dwconv_hwc(&g, &q, &input, &w, &bias, &rq, &mut b)
            });
            assert_eq!(a, b, "{g:?}");
            println!(
                "c={c:4} {n:3}x{n:<3} k={k} s={st}: planar {planar:8.1} us, hwc {hwc:8.1} us ({:.2}x)",
                planar / hwc
            );
        }
    }
}

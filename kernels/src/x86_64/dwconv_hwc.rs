//! Depthwise convolution across channels on AVX2: sixteen channels per
//! output pixel, on an HWC copy of a 16-channel block.
//!
//! The planar kernel (`dwconv.rs`) vectorises along output rows: a plane a
//! few pixels wide (the 14x14 and 7x7 ends of image backbones) fills a
//! fraction of each 16-output vector and pays its per-channel costs (the
//! padded plane, the constants) for a handful of outputs. Here a block of 16
//! channels is transposed (16x16 bytes), one padded input row at a time, into
//! a row of pixel vectors (16 channels each, zero-point padded), and the row
//! is stored as *tap pairs*: entry `x` holds, channel by channel, the i16
//! pair `(in[x], in[x + dil_w])`, sign-extended. Taps `kx, kx + 1` of output
//! `ox` are then one `vpmaddwd` of entry `ox * stride_w + kx * dil_w` by the
//! per-channel weight pairs `(w[kx], w[kx + 1])` (an odd last tap pairs with
//! a zero weight): no shuffle in the tap loop, and stride and dilation are
//! only an address. A ring of `(kh - 1) * dil_h + 1` such rows serves
//! successive output rows; the outputs (16 bytes per pixel) are transposed
//! back into the channel planes.
//!
//! Exactness: the input zero point is folded into the bias
//! (`bias - in_zp * sum(w)`, wrapping) and the padding is the zero point, so
//! a tap is `x * w` of two int8 values; `vpmaddwd` sums two such products
//! exactly in i32 (|sum| <= 2^15), and i32 addition is associative modulo
//! 2^32, so the final accumulator is the reference's (which the reference's
//! overflow bound keeps in i32). The output stage is `super::requant`'s
//! lane by lane with per-channel multipliers; the zero point is added with
//! i16 saturation, which cannot change a value that the int8 clamp keeps.

use core::arch::x86_64::*;

use super::requant::{requantize_v, RqV};
use crate::reference::{ConvGeometry, QConvParams};
use crate::requant::Requant;

/// The 16x16 byte transpose of 16 row vectors `$r` (per 128-bit lane): four
/// rounds of unpacks (bytes, words, dwords, qwords); `d[i]` byte `j` is
/// `$r[j]` byte `i`.
macro_rules! transpose_core {
    ($r:expr, $lo8:ident, $hi8:ident, $lo16:ident, $hi16:ident, $lo32:ident, $hi32:ident,
     $lo64:ident, $hi64:ident) => {{
        // Plain loops over arrays (not `core::array::from_fn`, whose
        // closure, compiled apart from this AVX2 code, was called per
        // element).
        let r = $r;
        let mut a = r;
        // a[2k], a[2k + 1]: columns 0..8, 8..16 of rows 2k, 2k + 1 (word per column).
        for k in 0..8 {
            a[2 * k] = $lo8(r[2 * k], r[2 * k + 1]);
            a[2 * k + 1] = $hi8(r[2 * k], r[2 * k + 1]);
        }
        // b[4q + j]: columns 4j..4j + 4 of rows 4q..4q + 4 (dword per column).
        let mut b = r;
        for q in 0..4 {
            b[4 * q] = $lo16(a[4 * q], a[4 * q + 2]);
            b[4 * q + 1] = $hi16(a[4 * q], a[4 * q + 2]);
            b[4 * q + 2] = $lo16(a[4 * q + 1], a[4 * q + 3]);
            b[4 * q + 3] = $hi16(a[4 * q + 1], a[4 * q + 3]);
        }
        // c[8o + m]: columns 2m, 2m + 1 of rows 8o..8o + 8 (qword per column).
        let mut c = r;
        for o in 0..2 {
            for j in 0..4 {
                c[8 * o + 2 * j] = $lo32(b[8 * o + j], b[8 * o + 4 + j]);
                c[8 * o + 2 * j + 1] = $hi32(b[8 * o + j], b[8 * o + 4 + j]);
            }
        }
        let mut d = r;
        for m in 0..8 {
            d[2 * m] = $lo64(c[m], c[8 + m]);
            d[2 * m + 1] = $hi64(c[m], c[8 + m]);
        }
        d
    }};
}

/// Channels per block (one output pixel's vector pair).
const CB: usize = 16;
/// Most weight pairs per channel (`kh * ceil(kw / 2)`; a 7x7 kernel has 28).
const MAX_PAIRS: usize = 32;
/// Bytes of the ring of pair rows (64 bytes per padded pixel).
const RING_BYTES: usize = 40 * 1024;
/// Pixel vectors of the transposed input row (padding included).
const TB_PIX: usize = 768;
/// Output pixels buffered before the transpose back into the planes.
const OBUF_PIX: usize = 512;

/// Padded input columns the taps reach.
fn padded_w(g: &ConvGeometry) -> usize {
    (g.out_w - 1) * g.stride_w + (g.kw - 1) * g.dil_w + 1
}

/// Pair entries kept per padded row: with an even stride every tap pair
/// starts at an even column, so only those are stored (entry `x` at `x / 2`).
fn entries(g: &ConvGeometry) -> usize {
    if g.stride_w.is_multiple_of(2) {
        padded_w(g).div_ceil(2)
    } else {
        padded_w(g)
    }
}

/// Padded input rows one output row reads.
fn span(g: &ConvGeometry) -> usize {
    (g.kh - 1) * g.dil_h + 1
}

/// Pixels of the transposed row: the pair entries read `dil_w` past the
/// padded width, and the image row is written whole after the left padding.
fn tb_w(g: &ConvGeometry) -> usize {
    (padded_w(g) + g.dil_w).max(g.pad_left + g.in_w)
}

/// Whether valid depthwise `g` fits this path: at least one whole block of
/// 16 channels (a remainder is a last block overlapping the previous one),
/// at most [`MAX_PAIRS`] weight pairs, and buffers that fit the stack.
pub(super) fn applies(g: &ConvGeometry) -> bool {
    g.out_c >= CB
        && g.out_w > 0
        && g.out_h > 0
        && g.kh * g.kw.div_ceil(2) <= MAX_PAIRS
        && span(g) * entries(g) * 64 <= RING_BYTES
        && tb_w(g) <= TB_PIX
        && g.out_w <= OBUF_PIX
}

/// Depthwise `g` on every channel.
///
/// # Safety
/// AVX2; `g` valid depthwise with `applies(g)`; `input`, `weights`, `bias`,
/// `rq`, `output` hold what `g` needs (checked by the caller); `q.in_zp` and
/// `q.out_zp` in the int8 range; `q.act_min <= q.act_max`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dwconv_hwc(
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    bias: &[i32],
    rq: &[Requant],
    output: &mut [i8],
) {
    body::<false>(g, q, input, weights, bias, rq, output)
}

/// [`dwconv_hwc`] compiled with AVX-512 F/BW/VL as well: 32 vector
/// registers (with 16, about a fifth of the AVX2 build's instructions were
/// spills and reloads), and output rows of blocks whose requantization
/// takes the fast form in zmm ([`out_row_512`]: one vector per pixel's 16
/// channels, half the instructions of the ymm pair).
///
/// # Safety
/// As [`dwconv_hwc`], and AVX-512 F/BW/VL.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn dwconv_hwc_avx512(
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    bias: &[i32],
    rq: &[Requant],
    output: &mut [i8],
) {
    body::<true>(g, q, input, weights, bias, rq, output)
}

/// The code of [`dwconv_hwc`], inlined into each target-feature entry;
/// `WIDE`: the entry enables AVX-512 F/BW/VL.
///
/// # Safety
/// As [`dwconv_hwc`].
#[inline(always)]
unsafe fn body<const WIDE: bool>(
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    bias: &[i32],
    rq: &[Requant],
    output: &mut [i8],
) {
    // Uninitialised: every element read is written first (the transposed
    // row's padding below, its interior by each staged row; ring rows are
    // staged before an output row reads them; outputs before the flush).
    let mut ring = core::mem::MaybeUninit::<[__m256i; RING_BYTES / 32]>::uninit();
    let mut tb = core::mem::MaybeUninit::<[__m128i; TB_PIX]>::uninit();
    let mut obuf = core::mem::MaybeUninit::<[__m128i; OBUF_PIX]>::uninit();
    let (ring, tb, obuf) = (
        ring.as_mut_ptr() as *mut __m256i,
        tb.as_mut_ptr() as *mut __m128i,
        obuf.as_mut_ptr() as *mut __m128i,
    );
    // The padding columns of the transposed row hold the zero point in every
    // channel; staged rows overwrite only the image columns.
    let zp8 = _mm_set1_epi8(q.in_zp as i8);
    for x in (0..g.pad_left).chain(g.pad_left + g.in_w..tb_w(g)) {
        _mm_storeu_si128(tb.add(x), zp8);
    }
    let mut c0 = 0;
    loop {
        // A last partial block overlaps the previous one: its channels are
        // recomputed to the same bytes.
        let c = c0.min(g.out_c - CB);
        block::<WIDE>(g, q, input, weights, bias, rq, output, c, ring, tb, obuf);
        if c + CB >= g.out_c {
            break;
        }
        c0 += CB;
    }
}

/// Output stage constants of a block; index 0: channels 0..8, 1: 8..16.
struct Consts {
    bias: [__m256i; 2],
    /// Every lane has `-31 <= shift <= 0` and `mult != i32::MIN`.
    fast: [Fast; 2],
    general: [RqV; 2],
    ozp: __m256i,
    lo: __m256i,
    hi: __m256i,
}

/// Per-lane form of `super::requant::RqRow`.
#[derive(Clone, Copy)]
struct Fast {
    mult: __m256i,
    /// `mult` of the odd lanes in the low dwords (for `vpmuldq`).
    mult_odd: __m256i,
    mask: __m256i,
    half: __m256i,
    right: __m256i,
}

/// `requantize` lane by lane for lanes with `-31 <= shift <= 0` and
/// `mult != i32::MIN`: `requantize_v` without the left shift and the
/// `MIN * MIN` saturation, which cannot fire there (as
/// `super::requant::requantize_row`, with per-lane shifts).
#[inline(always)]
unsafe fn requantize_fast(x: __m256i, r: &Fast) -> __m256i {
    let nudge = _mm256_set1_epi64x(1 << 30);
    let even = _mm256_add_epi64(_mm256_mul_epi32(x, r.mult), nudge);
    let odd = _mm256_add_epi64(
        // `vpshufd` (the shuffle port) rather than a shift (the multiply
        // ports): `vpmuldq` reads the low dword of each qword.
        _mm256_mul_epi32(_mm256_shuffle_epi32::<0b11_11_01_01>(x), r.mult_odd),
        nudge,
    );
    let hm = _mm256_blend_epi32::<0b1010_1010>(
        _mm256_srli_epi64::<31>(even),
        _mm256_slli_epi64::<1>(odd),
    );
    // Rounding divide by 2^right, half away from zero.
    let rem = _mm256_and_si256(hm, r.mask);
    let threshold = _mm256_sub_epi32(r.half, _mm256_srai_epi32::<31>(hm));
    let up = _mm256_cmpgt_epi32(rem, threshold);
    _mm256_sub_epi32(_mm256_srav_epi32(hm, r.right), up)
}

/// Accumulators of one pixel (channels 0..8, 8..16) to i16 with the output
/// zero point, saturated: `[0..4, 8..12 | 4..8, 12..16]`.
#[inline(always)]
unsafe fn out16<const FAST: bool>(a: __m256i, b: __m256i, k: &Consts) -> __m256i {
    let (ra, rb) = if FAST {
        (
            requantize_fast(a, &k.fast[0]),
            requantize_fast(b, &k.fast[1]),
        )
    } else {
        (
            requantize_v(a, &k.general[0]),
            requantize_v(b, &k.general[1]),
        )
    };
    // Saturating to i16 and adding the zero point with saturation keeps
    // every value the int8 clamp keeps, and sends the others past the same
    // bound (|out_zp| <= 128 < 2^15 - 127).
    _mm256_adds_epi16(_mm256_packs_epi32(ra, rb), k.ozp)
}

/// Two pixels' [`out16`] halves to 32 output bytes (pixel 0 then pixel 1,
/// channels in order), clamped to the activation bounds.
#[inline(always)]
unsafe fn pack2(h0: __m256i, h1: __m256i, k: &Consts) -> __m256i {
    // Dwords: p0 0..4, p0 8..12, p1 0..4, p1 8..12 | p0 4..8, p0 12..16, p1 4..8, p1 12..16.
    let b = _mm256_packs_epi16(h0, h1);
    let v = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_min_epi8(_mm256_max_epi8(v, k.lo), k.hi)
}

/// Channels `c0..c0 + 16` of `g`.
///
/// # Safety
/// As [`dwconv_hwc`], and `c0 + 16 <= g.out_c`; `ring`, `tb`, `obuf` are the
/// buffers of [`dwconv_hwc`], `tb`'s padding columns holding the zero point.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn block<const WIDE: bool>(
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    bias: &[i32],
    rq: &[Requant],
    output: &mut [i8],
    c0: usize,
    ring: *mut __m256i,
    tb: *mut __m128i,
    obuf: *mut __m128i,
) {
    let taps = g.kh * g.kw;
    let npk = g.kw.div_ceil(2);
    let wp = padded_w(g);
    let sp = span(g);

    // Weight pairs per (ky, pair), and the zero point folded into the bias.
    // The block's `16 x taps` weights (contiguous, channel-major) are copied
    // out and transposed 16 x 16 into tap vectors (16 channels each); a pair
    // is then the same interleave as the input's pair entries.
    // In 16-byte vectors, plus one zero vector for the transposes' last
    // reads (no libc call: this runs per block).
    // Uninitialised: the first `taps + 1` vectors are written here, and
    // the transposes read no further.
    let mut wl = core::mem::MaybeUninit::<[__m128i; 2 * MAX_PAIRS + 1]>::uninit();
    let wl = wl.as_mut_ptr() as *mut __m128i;
    let wsrc = weights.as_ptr().add(c0 * taps) as *const __m128i;
    for i in 0..taps {
        _mm_storeu_si128(wl.add(i), _mm_loadu_si128(wsrc.add(i)));
    }
    _mm_storeu_si128(wl.add(taps), _mm_setzero_si128());
    let wl = wl as *const i8;
    // Uninitialised (zeroing these per block was a libc call): the
    // transposes write tap vectors `0..taps` (and up to 15 more), and only
    // those are read; `wv` likewise below.
    let mut wt = core::mem::MaybeUninit::<[__m128i; 2 * MAX_PAIRS + CB]>::uninit();
    let wt = wt.as_mut_ptr() as *mut __m128i;
    for t0 in (0..taps).step_by(16) {
        // Reads end at 15 * taps + t0 + 16 <= 16 * taps + 16 bytes of `wl`.
        transpose16(wl.add(t0), taps, wt.add(t0) as *mut i8, CB);
    }
    let mut wv = core::mem::MaybeUninit::<[[__m256i; 2]; MAX_PAIRS]>::uninit();
    let wv = wv.as_mut_ptr() as *mut [__m256i; 2];
    for ky in 0..g.kh {
        for p in 0..npk {
            let t = ky * g.kw + 2 * p;
            let w0 = *wt.add(t);
            let w1 = if 2 * p + 1 < g.kw {
                *wt.add(t + 1)
            } else {
                _mm_setzero_si128()
            };
            *wv.add(ky * npk + p) = [
                _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(w0, w1)),
                _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(w0, w1)),
            ];
        }
    }
    // Channel sums in i16 (|sum| <= 64 * 128), widened; `bias - zp * sum`
    // wraps like the scalar `wrapping_` forms.
    let mut sum = _mm256_setzero_si256();
    for t in 0..taps {
        sum = _mm256_add_epi16(sum, _mm256_cvtepi8_epi16(*wt.add(t)));
    }
    let zp = _mm256_set1_epi32(q.in_zp);
    let sums = [
        _mm256_cvtepi16_epi32(_mm256_castsi256_si128(sum)),
        _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(sum)),
    ];
    let mut bias_v = sums;
    for (h, v) in bias_v.iter_mut().enumerate() {
        let b = _mm256_loadu_si256(bias.as_ptr().add(c0 + 8 * h) as *const __m256i);
        *v = _mm256_sub_epi32(b, _mm256_mullo_epi32(zp, sums[h]));
    }
    let r = &rq[c0..c0 + CB];
    let half_rq = |h: usize| -> [Requant; 8] { core::array::from_fn(|i| r[8 * h + i]) };
    let fast_ok = r
        .iter()
        .all(|r| (-31..=0).contains(&r.shift) && r.mult != i32::MIN);
    let fast = |h: usize| -> Fast {
        let rr = half_rq(h);
        let m = rr.map(|x| x.mult);
        let right = rr.map(|x| (-x.shift).clamp(0, 31));
        let mask = right.map(|s| ((1u64 << s) - 1) as u32 as i32);
        let half = mask.map(|m| ((m as u32) >> 1) as i32);
        let ld = |a: &[i32; 8]| _mm256_loadu_si256(a.as_ptr() as *const __m256i);
        let mult = ld(&m);
        Fast {
            mult,
            // The odd multipliers duplicated, not `mult` shifted down: from
            // the shift's zero high dwords LLVM rebuilt the signed multiply
            // out of three unsigned ones.
            mult_odd: ld(&core::array::from_fn(|i| m[i | 1])),
            mask: ld(&mask),
            half: ld(&half),
            right: ld(&right),
        }
    };
    let k = Consts {
        bias: bias_v,
        fast: [fast(0), fast(1)],
        general: [RqV::lanes(half_rq(0)), RqV::lanes(half_rq(1))],
        ozp: _mm256_set1_epi16(q.out_zp as i16),
        lo: _mm256_set1_epi8(q.act_min),
        hi: _mm256_set1_epi8(q.act_max),
    };
    // Only read by `out_row_512`, i.e. when WIDE and `fast_ok`.
    let wide = WideConsts::new(&bias_v, r, q);

    let ne = entries(g);
    let slot = |r: usize| ring.add((r % sp) * 2 * ne);
    let even = g.stride_w.is_multiple_of(2);
    let po = g.out_h * g.out_w;
    let flush_rows = OBUF_PIX / g.out_w;
    let mut next = 0; // next padded row to stage
    let mut oy_flush = 0; // first output row in `obuf`
    let mut rows = [ring as *const __m256i; MAX_PAIRS];
    for oy in 0..g.out_h {
        let top = oy * g.stride_h;
        next = next.max(top);
        while next < top + sp {
            stage_row(g, q.in_zp as i8, input, c0, next, wp, tb, slot(next), even);
            next += 1;
        }
        for (ky, row) in rows.iter_mut().take(g.kh).enumerate() {
            *row = slot(top + ky * g.dil_h);
        }
        let dst = obuf.add((oy - oy_flush) * g.out_w);
        let rows = &rows;
        let wv = wv as *const [__m256i; 2];
        match (g.kh, g.kw, fast_ok) {
            (3, 3, true) if WIDE => out_row_512(g, rows, 3, 3, wv, &wide, dst),
            (5, 5, true) if WIDE => out_row_512(g, rows, 5, 5, wv, &wide, dst),
            (kh, kw, true) if WIDE => out_row_512(g, rows, kh, kw, wv, &wide, dst),
            (3, 3, true) => out_row::<true>(g, rows, 3, 3, wv, &k, dst),
            (3, 3, false) => out_row::<false>(g, rows, 3, 3, wv, &k, dst),
            (5, 5, true) => out_row::<true>(g, rows, 5, 5, wv, &k, dst),
            (kh, kw, true) => out_row::<true>(g, rows, kh, kw, wv, &k, dst),
            (kh, kw, false) => out_row::<false>(g, rows, kh, kw, wv, &k, dst),
        }
        if oy + 1 - oy_flush == flush_rows || oy + 1 == g.out_h {
            let (p0, p1) = (oy_flush * g.out_w, (oy + 1) * g.out_w);
            flush(obuf, output.as_mut_ptr().add(c0 * po), po, p0, p1);
            oy_flush = oy + 1;
        }
    }
}

/// Stages padded row `r` of channels `c0..c0 + 16` as pair entries into
/// `prow` (entry `x` at vector `2 x`: channels 0..8, then 8..16; when
/// `even`, only the even entries, entry `x` at `2 (x / 2)`).
///
/// # Safety
/// As [`block`]; `prow` has `2 * entries(g)` writable vectors.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn stage_row(
    g: &ConvGeometry,
    zp: i8,
    input: &[i8],
    c0: usize,
    r: usize,
    wp: usize,
    tb: *mut __m128i,
    prow: *mut __m256i,
    even: bool,
) {
    let iy = r as isize - g.pad_top as isize;
    if iy < 0 || iy >= g.in_h as isize {
        let z = _mm256_set1_epi16(zp as i16);
        for i in 0..2 * entries(g) {
            _mm256_storeu_si256(prow.add(i), z);
        }
        return;
    }
    let plane = g.in_h * g.in_w;
    let at = c0 * plane + iy as usize * g.in_w;
    let src = input.as_ptr().add(at);
    let dst = tb.add(g.pad_left) as *mut i8;
    let mut ix = 0;
    while ix + 32 <= g.in_w {
        transpose16x2(src.add(ix), plane, dst.add(ix * CB));
        ix += 32;
    }
    while ix < g.in_w {
        let n = (g.in_w - ix).min(16);
        if n == 16 {
            transpose16(src.add(ix), plane, dst.add(ix * CB), CB);
        } else {
            // Every byte written by the transpose before it is read.
            let mut t = core::mem::MaybeUninit::<[i8; 256]>::uninit();
            let t = t.as_mut_ptr() as *mut i8;
            if at + 15 * plane + ix + 16 <= input.len() {
                // The 16-byte loads of every channel's row stay in `input`
                // (bytes past the row are transposed and dropped).
                transpose16(src.add(ix), plane, t, CB);
            } else {
                let mut rows = [0i8; 256];
                for c in 0..CB {
                    core::ptr::copy_nonoverlapping(
                        src.add(c * plane + ix),
                        rows.as_mut_ptr().add(c * 16),
                        n,
                    );
                }
                transpose16(rows.as_ptr(), 16, t, CB);
            }
            // Pixel by pixel: a `copy_nonoverlapping` of `n * 16` bytes is
            // a libc call per row on narrow planes.
            for j in 0..n {
                let v = _mm_loadu_si128(t.add(j * CB) as *const __m128i);
                _mm_storeu_si128(dst.add((ix + j) * CB) as *mut __m128i, v);
            }
        }
        ix += n;
    }
    let step = if even { 2 } else { 1 };
    let mut x = 0;
    let mut e = prow;
    while x < wp {
        let t0 = _mm_loadu_si128(tb.add(x));
        let t1 = _mm_loadu_si128(tb.add(x + g.dil_w));
        _mm256_storeu_si256(e, _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(t0, t1)));
        _mm256_storeu_si256(e.add(1), _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(t0, t1)));
        e = e.add(2);
        x += step;
    }
}

/// The entry steps of a staged row: between output columns, and between a
/// tap pair's taps. With an even stride (`entries`) column `x` is entry
/// `x / 2`.
#[inline(always)]
fn entry_steps(g: &ConvGeometry) -> (usize, usize) {
    if g.stride_w.is_multiple_of(2) {
        (g.stride_w / 2, g.dil_w)
    } else {
        (g.stride_w, 2 * g.dil_w)
    }
}

/// One output row: `out_w` pixels of 16 bytes to `dst`, two pixels at a time.
///
/// # Safety
/// `rows[ky]` is the staged pair row of padded row `oy * stride_h + ky *
/// dil_h` (all entries the taps read written), `wv` points to `kh * ceil(kw /
/// 2)` pairs, `dst` has `out_w` writable vectors.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn out_row<const FAST: bool>(
    g: &ConvGeometry,
    rows: &[*const __m256i; MAX_PAIRS],
    kh: usize,
    kw: usize,
    wv: *const [__m256i; 2],
    k: &Consts,
    dst: *mut __m128i,
) {
    let npk = kw.div_ceil(2);
    let (s, dw) = entry_steps(g);
    let mut ox = 0;
    while ox + 2 <= g.out_w {
        let [mut a0, mut b0] = k.bias;
        let [mut a1, mut b1] = k.bias;
        for (ky, &row) in rows.iter().enumerate().take(kh) {
            for p in 0..npk {
                let x0 = 2 * (ox * s + p * dw);
                let x1 = x0 + 2 * s;
                let w = &*wv.add(ky * npk + p);
                let ld = |i: usize| _mm256_loadu_si256(row.add(i));
                a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(ld(x0), w[0]));
                b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(ld(x0 + 1), w[1]));
                a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(ld(x1), w[0]));
                b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(ld(x1 + 1), w[1]));
            }
        }
        let v = pack2(out16::<FAST>(a0, b0, k), out16::<FAST>(a1, b1, k), k);
        _mm256_storeu_si256(dst.add(ox) as *mut __m256i, v);
        ox += 2;
    }
    if ox < g.out_w {
        let [mut a0, mut b0] = k.bias;
        for (ky, &row) in rows.iter().enumerate().take(kh) {
            for p in 0..npk {
                let x0 = 2 * (ox * s + p * dw);
                let w = &*wv.add(ky * npk + p);
                let ld = |i: usize| _mm256_loadu_si256(row.add(i));
                a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(ld(x0), w[0]));
                b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(ld(x0 + 1), w[1]));
            }
        }
        let h = out16::<FAST>(a0, b0, k);
        let v = pack2(h, h, k);
        _mm_storeu_si128(dst.add(ox), _mm256_castsi256_si128(v));
    }
}

/// Output stage constants of a block in zmm form, lane `i` channel `c0 +
/// i`: the form of `gemm_4x16c4_avx512vnni::requant_row` (proof there)
/// with per-lane constants. `e`/`o`: the even/odd lanes, one per qword.
#[derive(Clone, Copy)]
struct WideConsts {
    bias: [i32; CB],
    /// Multipliers; `mult_o` holds lane `2j + 1`'s in dword `2j`.
    mult: [i32; CB],
    mult_o: [i32; CB],
    /// `2^30 + [s > 0] 2^(s + 30)` for `s = -shift`.
    base_e: [i64; CB / 2],
    base_o: [i64; CB / 2],
    /// `[s > 0] 2^31`, subtracted where `x m < -2^30`.
    fix_e: [i64; CB / 2],
    fix_o: [i64; CB / 2],
    /// `31 + s`.
    count_e: [i64; CB / 2],
    count_o: [i64; CB / 2],
    zp: i32,
    lo: i8,
    hi: i8,
}

impl WideConsts {
    /// From the block's folded bias (`bias_v`: channels 0..8, 8..16) and
    /// requantization; lanes outside the fast domain (`-31 <= shift <= 0`,
    /// `mult != i32::MIN`) get meaningless constants: the caller uses this
    /// only when every lane is inside it.
    #[inline(always)]
    unsafe fn new(bias_v: &[__m256i; 2], r: &[Requant], q: &QConvParams) -> WideConsts {
        let mut bias = [0i32; CB];
        _mm256_storeu_si256(bias.as_mut_ptr() as *mut __m256i, bias_v[0]);
        _mm256_storeu_si256(bias.as_mut_ptr().add(8) as *mut __m256i, bias_v[1]);
        let mut w = WideConsts {
            bias,
            mult: [0; CB],
            mult_o: [0; CB],
            base_e: [0; CB / 2],
            base_o: [0; CB / 2],
            fix_e: [0; CB / 2],
            fix_o: [0; CB / 2],
            count_e: [0; CB / 2],
            count_o: [0; CB / 2],
            zp: q.out_zp,
            lo: q.act_min,
            hi: q.act_max,
        };
        for (i, r) in r.iter().enumerate().take(CB) {
            let sh = (-r.shift).clamp(0, 31) as i64;
            let base = (1i64 << 30) + if sh > 0 { 1i64 << (sh + 30) } else { 0 };
            let fix = if sh > 0 { 1i64 << 31 } else { 0 };
            w.mult[i] = r.mult;
            if i % 2 == 0 {
                (w.base_e[i / 2], w.fix_e[i / 2], w.count_e[i / 2]) = (base, fix, 31 + sh);
            } else {
                w.mult_o[i - 1] = r.mult;
                (w.base_o[i / 2], w.fix_o[i / 2], w.count_o[i / 2]) = (base, fix, 31 + sh);
            }
        }
        w
    }
}

/// [`WideConsts`] in registers.
struct ZmmConsts {
    bias: __m512i,
    mult: __m512i,
    mult_o: __m512i,
    base_e: __m512i,
    base_o: __m512i,
    fix_e: __m512i,
    fix_o: __m512i,
    count_e: __m512i,
    count_o: __m512i,
    limit: __m512i,
    zp: __m512i,
    lo: __m128i,
    hi: __m128i,
}

impl ZmmConsts {
    /// # Safety
    /// AVX-512 F.
    #[inline(always)]
    unsafe fn load(k: &WideConsts) -> ZmmConsts {
        let ld32 = |p: *const i32| _mm512_loadu_si512(p as *const _);
        let ld64 = |p: *const i64| _mm512_loadu_si512(p as *const _);
        ZmmConsts {
            bias: ld32(k.bias.as_ptr()),
            mult: ld32(k.mult.as_ptr()),
            mult_o: ld32(k.mult_o.as_ptr()),
            base_e: ld64(k.base_e.as_ptr()),
            base_o: ld64(k.base_o.as_ptr()),
            fix_e: ld64(k.fix_e.as_ptr()),
            fix_o: ld64(k.fix_o.as_ptr()),
            count_e: ld64(k.count_e.as_ptr()),
            count_o: ld64(k.count_o.as_ptr()),
            limit: _mm512_set1_epi64(-(1i64 << 30)),
            zp: _mm512_set1_epi32(k.zp),
            lo: _mm_set1_epi8(k.lo),
            hi: _mm_set1_epi8(k.hi),
        }
    }
}

/// One pixel's 16 accumulators to its 16 output bytes:
/// `clamp(requantize(acc) + zp)` lane by lane.
///
/// # Safety
/// AVX-512 F/BW/VL; every lane of `c` in the fast domain.
#[inline(always)]
unsafe fn out16_512(acc: __m512i, c: &ZmmConsts) -> __m128i {
    let pe = _mm512_mul_epi32(acc, c.mult);
    let po = _mm512_mul_epi32(_mm512_srli_epi64::<32>(acc), c.mult_o);
    let te = _mm512_add_epi64(pe, c.base_e);
    let te = _mm512_mask_sub_epi64(te, _mm512_cmplt_epi64_mask(pe, c.limit), te, c.fix_e);
    let to = _mm512_add_epi64(po, c.base_o);
    let to = _mm512_mask_sub_epi64(to, _mm512_cmplt_epi64_mask(po, c.limit), to, c.fix_o);
    let he = _mm512_srav_epi64(te, c.count_e);
    let ho = _mm512_srav_epi64(to, c.count_o);
    let y = _mm512_mask_blend_epi32(0xaaaa, he, _mm512_slli_epi64::<32>(ho));
    // Wrapping `+ zp` as the reference's i32 add; `vpmovsdb`'s int8
    // saturation is subsumed by the clamp to the int8 bounds.
    let v = _mm512_cvtsepi32_epi8(_mm512_add_epi32(y, c.zp));
    _mm_min_epi8(_mm_max_epi8(v, c.lo), c.hi)
}

/// [`out_row`] for blocks whose every channel takes the fast
/// requantization, one zmm per pixel: entry `x` of a pair row (its two ymm,
/// channels 0..8 then 8..16) is one 64-byte vector, as is a weight pair.
///
/// # Safety
/// As [`out_row`]; AVX-512 F/BW/VL; every lane of `k` in the fast domain.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
unsafe fn out_row_512(
    g: &ConvGeometry,
    rows: &[*const __m256i; MAX_PAIRS],
    kh: usize,
    kw: usize,
    wv: *const [__m256i; 2],
    k: &WideConsts,
    dst: *mut __m128i,
) {
    let npk = kw.div_ceil(2);
    let (s, dw) = entry_steps(g);
    let c = ZmmConsts::load(k);
    let bias = c.bias;
    let wv = wv as *const __m512i;
    let out = |acc: __m512i| out16_512(acc, &c);
    let mut ox = 0;
    while ox + 2 <= g.out_w {
        let (mut a0, mut a1) = (bias, bias);
        for (ky, &row) in rows.iter().enumerate().take(kh) {
            for p in 0..npk {
                let x0 = 2 * (ox * s + p * dw);
                let x1 = x0 + 2 * s;
                let w = _mm512_loadu_si512(wv.add(ky * npk + p) as *const _);
                let ld = |i: usize| _mm512_loadu_si512(row.add(i) as *const _);
                a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(ld(x0), w));
                a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(ld(x1), w));
            }
        }
        _mm_storeu_si128(dst.add(ox), out(a0));
        _mm_storeu_si128(dst.add(ox + 1), out(a1));
        ox += 2;
    }
    if ox < g.out_w {
        let mut a0 = bias;
        for (ky, &row) in rows.iter().enumerate().take(kh) {
            for p in 0..npk {
                let x0 = 2 * (ox * s + p * dw);
                let w = _mm512_loadu_si512(wv.add(ky * npk + p) as *const _);
                let ld = |i: usize| _mm512_loadu_si512(row.add(i) as *const _);
                a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(ld(x0), w));
            }
        }
        _mm_storeu_si128(dst.add(ox), out(a0));
    }
}

/// Output pixels `p0..p1` of the block (in `obuf` from index 0) transposed
/// into the 16 channel planes at `dst0` (`po` bytes apart).
///
/// # Safety
/// `obuf` holds `p1 - p0` written pixel vectors; `dst0` is the block's first
/// plane, each of the 16 planes `po >= p1` bytes long.
#[inline(always)]
unsafe fn flush(obuf: *const __m128i, dst0: *mut i8, po: usize, p0: usize, p1: usize) {
    let src = obuf as *const i8;
    let mut p = p0;
    while p + 32 <= p1 {
        // Pixel vectors in, channel rows out: the same 16x16 transpose.
        transpose16x2_out(src.add((p - p0) * CB), dst0.add(p), po);
        p += 32;
    }
    while p < p1 {
        let n = (p1 - p).min(16);
        if n == 16 {
            transpose16(src.add((p - p0) * CB), CB, dst0.add(p), po);
        } else {
            let mut a = [_mm_setzero_si128(); 16];
            for (j, v) in a.iter_mut().enumerate().take(n) {
                *v = _mm_loadu_si128(src.add((p - p0 + j) * CB) as *const __m128i);
            }
            let a = a.as_ptr() as *const i8;
            let mut t = core::mem::MaybeUninit::<[i8; 256]>::uninit();
            let t = t.as_mut_ptr() as *mut i8;
            transpose16(a, 16, t, 16);
            for c in 0..CB {
                copy_short(t.add(c * 16), dst0.add(c * po + p), n);
            }
        }
        p += n;
    }
}

/// Copies `n < 16` bytes with at most two overlapping stores of 8, 4 or 2
/// bytes (or one byte), all inside `dst..dst + n`: no libc call.
///
/// # Safety
/// `n` readable bytes at `src`, `n` writable at `dst`.
#[inline(always)]
unsafe fn copy_short(src: *const i8, dst: *mut i8, n: usize) {
    if n >= 8 {
        let lo = _mm_loadl_epi64(src as *const __m128i);
        let hi = _mm_loadl_epi64(src.add(n - 8) as *const __m128i);
        _mm_storel_epi64(dst as *mut __m128i, lo);
        _mm_storel_epi64(dst.add(n - 8) as *mut __m128i, hi);
    } else if n >= 4 {
        (dst as *mut i32).write_unaligned((src as *const i32).read_unaligned());
        let t = (src.add(n - 4) as *const i32).read_unaligned();
        (dst.add(n - 4) as *mut i32).write_unaligned(t);
    } else {
        for j in 0..n {
            *dst.add(j) = *src.add(j);
        }
    }
}

/// The 16x16 byte transpose: `dst[i * ds + j] = src[j * ss + i]`.
///
/// # Safety
/// 16 readable bytes at `src + j * ss` and 16 writable at `dst + i * ds`
/// for `i, j < 16`.
#[inline(always)]
unsafe fn transpose16(src: *const i8, ss: usize, dst: *mut i8, ds: usize) {
    let mut r = [_mm_setzero_si128(); 16];
    for (j, v) in r.iter_mut().enumerate() {
        *v = _mm_loadu_si128(src.add(j * ss) as *const __m128i);
    }
    let d = transpose_core!(
        r,
        _mm_unpacklo_epi8,
        _mm_unpackhi_epi8,
        _mm_unpacklo_epi16,
        _mm_unpackhi_epi16,
        _mm_unpacklo_epi32,
        _mm_unpackhi_epi32,
        _mm_unpacklo_epi64,
        _mm_unpackhi_epi64
    );
    for (i, v) in d.iter().enumerate() {
        _mm_storeu_si128(dst.add(i * ds) as *mut __m128i, *v);
    }
}

/// Two 16x16 transposes side by side: rows `j` of 32 bytes at `src + j * ss`
/// (pixels 0..32 of channel `j`) to 32 pixel vectors of 16 bytes at `dst`.
///
/// # Safety
/// 32 readable bytes at `src + j * ss` for `j < 16`; 512 writable at `dst`.
#[inline(always)]
unsafe fn transpose16x2(src: *const i8, ss: usize, dst: *mut i8) {
    let mut r = [_mm256_setzero_si256(); 16];
    for (j, v) in r.iter_mut().enumerate() {
        *v = _mm256_loadu_si256(src.add(j * ss) as *const __m256i);
    }
    let d = transpose_core!(
        r,
        _mm256_unpacklo_epi8,
        _mm256_unpackhi_epi8,
        _mm256_unpacklo_epi16,
        _mm256_unpackhi_epi16,
        _mm256_unpacklo_epi32,
        _mm256_unpackhi_epi32,
        _mm256_unpacklo_epi64,
        _mm256_unpackhi_epi64
    );
    // d[i] = [pixel i | pixel 16 + i].
    for (i, v) in d.iter().enumerate() {
        _mm_storeu_si128(dst.add(i * CB) as *mut __m128i, _mm256_castsi256_si128(*v));
        _mm_storeu_si128(
            dst.add((16 + i) * CB) as *mut __m128i,
            _mm256_extracti128_si256::<1>(*v),
        );
    }
}

/// The inverse of [`transpose16x2`]: 32 pixel vectors of 16 bytes at `src`
/// to 16 channel rows of 32 bytes at `dst + j * ds`.
///
/// # Safety
/// 512 readable bytes at `src`; 32 writable at `dst + j * ds` for `j < 16`.
#[inline(always)]
unsafe fn transpose16x2_out(src: *const i8, dst: *mut i8, ds: usize) {
    // Row j: [pixel j | pixel 16 + j]; the transpose of each 128-bit half
    // gives channel i's pixels 0..16 | 16..32.
    let mut r = [_mm256_setzero_si256(); 16];
    for (j, v) in r.iter_mut().enumerate() {
        let lo = _mm_loadu_si128(src.add(j * CB) as *const __m128i);
        let hi = _mm_loadu_si128(src.add((16 + j) * CB) as *const __m128i);
        *v = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi);
    }
    let d = transpose_core!(
        r,
        _mm256_unpacklo_epi8,
        _mm256_unpackhi_epi8,
        _mm256_unpacklo_epi16,
        _mm256_unpackhi_epi16,
        _mm256_unpacklo_epi32,
        _mm256_unpackhi_epi32,
        _mm256_unpacklo_epi64,
        _mm256_unpackhi_epi64
    );
    for (i, v) in d.iter().enumerate() {
        _mm256_storeu_si256(dst.add(i * ds) as *mut __m256i, *v);
    }
}

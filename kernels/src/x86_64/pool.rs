//! `qs8_maxpool2d` and `qs8_avgpool2d` on AVX2, vectorised along the output
//! width for strides 1 and 2 (sixteen outputs per step, i16 lanes).
//!
//! Max pooling with stride 1 (rows up to about 2000 outputs) runs
//! separably instead ([`max_s1`]): column maxima into a padded row, then
//! row maxima, every output a lane, narrow planes included.
//!
//! Stride 1 loads 16 inputs per tap; stride 2 loads 32 and keeps the even
//! bytes (shift left then arithmetic right by 8 within each i16 lane), which
//! yields the 16 subsampled inputs in order. Outputs whose window leaves the
//! row (the borders), the width remainder and other strides take the scalar
//! path, which is the reference's computation for one output.

use core::arch::x86_64::*;

use crate::reference::{self, PoolGeometry};

/// AVX2 [`reference::qs8_maxpool2d`]; same contract, same output.
pub fn qs8_maxpool2d__avx2(g: &PoolGeometry, input: &[i8], output: &mut [i8]) {
    if !super::has_avx2() || !g.is_valid() {
        return reference::qs8_maxpool2d(g, input, output);
    }
    check(g, input, output);
    // SAFETY: AVX2 is available; lengths checked; loads stay inside one row.
    unsafe { pool(g, None, input, output) }
}

/// AVX2 [`reference::qs8_avgpool2d`]; same contract, same output.
pub fn qs8_avgpool2d__avx2(g: &PoolGeometry, zp: i32, input: &[i8], output: &mut [i8]) {
    if !super::has_avx2() || !g.is_valid() {
        return reference::qs8_avgpool2d(g, zp, input, output);
    }
    check(g, input, output);
    // SAFETY: as in `qs8_maxpool2d__avx2`.
    unsafe { pool(g, Some(zp), input, output) }
}

fn check(g: &PoolGeometry, input: &[i8], output: &[i8]) {
    assert!(
        input.len() >= g.input_len() && output.len() >= g.output_len(),
        "qs8 pool: buffers do not match the geometry"
    );
}

/// In-image window `[y0, y1) x [x0, x1)` of output (oy, ox) and the average
/// divisor: a copy of the reference's `PoolGeometry::window`.
#[inline]
fn window(g: &PoolGeometry, oy: usize, ox: usize) -> (usize, usize, usize, usize, usize) {
    let y = (oy * g.stride_h) as isize - g.pad_top as isize;
    let x = (ox * g.stride_w) as isize - g.pad_left as isize;
    let y0 = y.max(0) as usize;
    let x0 = x.max(0) as usize;
    let y1 = ((y + g.kh as isize).max(0) as usize).min(g.in_h);
    let x1 = ((x + g.kw as isize).max(0) as usize).min(g.in_w);
    let count = if g.count_include_pad {
        let ye = ((y + g.kh as isize) as usize).min(g.in_h + g.pad_top);
        let xe = ((x + g.kw as isize) as usize).min(g.in_w + g.pad_left);
        (ye as isize - y).max(1) as usize * (xe as isize - x).max(1) as usize
    } else {
        (y1.saturating_sub(y0) * x1.saturating_sub(x0)).max(1)
    };
    (y0, y1, x0, x1, count)
}

/// One output exactly as the reference: max (`zp == None`) or average.
#[inline]
fn scalar_one(g: &PoolGeometry, zp: Option<i32>, inp: &[i8], oy: usize, ox: usize) -> i8 {
    let (y0, y1, x0, x1, count) = window(g, oy, ox);
    match zp {
        None => {
            let mut m = i8::MIN;
            for yy in y0..y1 {
                for xx in x0..x1 {
                    m = m.max(inp[yy * g.in_w + xx]);
                }
            }
            m
        }
        Some(zp) => {
            let mut sum: i32 = 0;
            for yy in y0..y1 {
                for xx in x0..x1 {
                    sum += inp[yy * g.in_w + xx] as i32 - zp;
                }
            }
            let n = count as i32;
            let q = if sum >= 0 {
                (sum + n / 2) / n
            } else {
                (sum - n / 2) / n
            };
            (q + zp).clamp(-128, 127) as i8
        }
    }
}

/// Bytes of [`max_s1`]'s padded row (its windows' columns plus slack for
/// 32-byte loads).
const ROW_BUF: usize = 2048;

/// Max pooling with `stride_w == 1`, separably: per output row, the max of
/// the window's input rows (clipped as the reference clips them) into a row
/// padded with -128, then the max of `kw` shifted loads of that row. Exact:
/// max is associative, and -128 is the reference's start value, so padding
/// never changes a window's max (a window with no input gives -128 in
/// both). Every output column, narrow planes included, is a vector lane;
/// the generic path runs outputs whose window leaves the row one by one.
///
/// Safety: AVX2; `check` passed; `g.stride_w == 1` and `g.out_w + g.kw +
/// 64 <= ROW_BUF`.
#[inline(always)]
unsafe fn max_s1(g: &PoolGeometry, input: &[i8], output: &mut [i8]) {
    let plane = g.in_h * g.in_w;
    // Padded columns the windows read: x is image column x - pad_left.
    let wp = g.out_w - 1 + g.kw;
    // Image columns inside them (the rest of the row is never read).
    let cols = g.in_w.min(wp.saturating_sub(g.pad_left));
    // -128 outside the image columns for the whole call; those are
    // rewritten per row.
    let mut buf = [i8::MIN; ROW_BUF];
    let b = buf.as_mut_ptr().add(g.pad_left);
    for c in 0..g.channels {
        let inp = input.as_ptr().add(c * plane);
        for oy in 0..g.out_h {
            let (y0, y1, _, _, _) = window(g, oy, 0);
            // Column maxima of rows y0..y1 (at least one row: the window
            // meets the image, else every column is -128).
            let mut x = 0;
            while x + 32 <= cols {
                let mut m = _mm256_set1_epi8(i8::MIN);
                for yy in y0..y1 {
                    let v = _mm256_loadu_si256(inp.add(yy * g.in_w + x) as *const __m256i);
                    m = _mm256_max_epi8(m, v);
                }
                _mm256_storeu_si256(b.add(x) as *mut __m256i, m);
                x += 32;
            }
            while x + 16 <= cols {
                let mut m = _mm_set1_epi8(i8::MIN);
                for yy in y0..y1 {
                    let v = _mm_loadu_si128(inp.add(yy * g.in_w + x) as *const __m128i);
                    m = _mm_max_epi8(m, v);
                }
                _mm_storeu_si128(b.add(x) as *mut __m128i, m);
                x += 16;
            }
            while x < cols {
                let mut m = i8::MIN;
                for yy in y0..y1 {
                    m = m.max(*inp.add(yy * g.in_w + x));
                }
                *b.add(x) = m;
                x += 1;
            }
            // Row maxima over kw columns; loads reach ox + 31 + kw - 1 <
            // out_w + kw + 31 <= ROW_BUF.
            let orow = output.as_mut_ptr().add((c * g.out_h + oy) * g.out_w);
            let mut ox = 0;
            while ox < g.out_w {
                let mut m = _mm256_loadu_si256(buf.as_ptr().add(ox) as *const __m256i);
                for kx in 1..g.kw {
                    let v = _mm256_loadu_si256(buf.as_ptr().add(ox + kx) as *const __m256i);
                    m = _mm256_max_epi8(m, v);
                }
                let n = (g.out_w - ox).min(32);
                if n == 32 {
                    _mm256_storeu_si256(orow.add(ox) as *mut __m256i, m);
                } else {
                    let mut t = [0i8; 32];
                    _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, m);
                    for (j, &v) in t.iter().enumerate().take(n) {
                        *orow.add(ox + j) = v;
                    }
                }
                ox += n;
            }
        }
    }
}

/// Average pooling of each whole plane (one window, no padding: `count`
/// is the plane's size either way), the sum by `vpsadbw`: with `u = x ^
/// 0x80 = x + 128` as unsigned bytes, `sum(x - zp) = sum(u) - (128 + zp)
/// n`, exact in i64 and then in the reference's i32 (`n <=
/// QS8_AVGPOOL_MAX_TAPS`, `|x - zp| <= 255`). The division and rounding are
/// [`scalar_one`]'s.
///
/// Safety: AVX2; `check` passed; `g` is a global pool as tested in `pool`.
#[inline(always)]
unsafe fn global_avg(g: &PoolGeometry, zp: i32, input: &[i8], output: &mut [i8]) {
    let n = g.in_h * g.in_w;
    let flip = _mm256_set1_epi8(i8::MIN);
    for (c, o) in output.iter_mut().enumerate().take(g.channels) {
        let p = input.as_ptr().add(c * n);
        let mut acc = _mm256_setzero_si256();
        let mut i = 0;
        while i + 32 <= n {
            let v = _mm256_xor_si256(_mm256_loadu_si256(p.add(i) as *const __m256i), flip);
            acc = _mm256_add_epi64(acc, _mm256_sad_epu8(v, _mm256_setzero_si256()));
            i += 32;
        }
        let mut lanes = [0u64; 4];
        _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc);
        let mut u: u64 = lanes.iter().sum();
        while i < n {
            u += (*p.add(i) as u8 ^ 0x80) as u64;
            i += 1;
        }
        let sum = (u as i64 - (128 + zp as i64) * n as i64) as i32;
        let n = n as i32;
        let q = if sum >= 0 {
            (sum + n / 2) / n
        } else {
            (sum - n / 2) / n
        };
        *o = (q + zp).clamp(-128, 127) as i8;
    }
}

/// Safety: AVX2; `check` passed.
#[target_feature(enable = "avx2")]
unsafe fn pool(g: &PoolGeometry, zp: Option<i32>, input: &[i8], output: &mut [i8]) {
    if zp.is_none() && g.stride_w == 1 && g.out_w + g.kw + 64 <= ROW_BUF {
        return max_s1(g, input, output);
    }
    if let Some(z) = zp {
        let global = g.out_h == 1
            && g.out_w == 1
            && g.kh == g.in_h
            && g.kw == g.in_w
            && g.pad_top == 0
            && g.pad_left == 0;
        if global && (-128..=127).contains(&z) {
            return global_avg(g, z, input, output);
        }
    }
    let plane = g.in_h * g.in_w;
    // Bytes one vector load reads from an input row.
    let load = if g.stride_w == 1 { 16 } else { 32 };
    // i16 sums stay exact while |x - zp| <= 255 and the window has <= 128 taps.
    let vector = g.stride_w <= 2
        && match zp {
            None => true,
            Some(z) => (-128..=127).contains(&z) && g.kh * g.kw <= 128,
        };
    let ox_lo = g.pad_left.div_ceil(g.stride_w);
    // Sixteen outputs at `ox` whose windows and loads stay inside the row.
    let vector_ok = |ox: usize| {
        vector
            && ox >= ox_lo
            && ox + 16 <= g.out_w
            && ox * g.stride_w + g.kw - 1 + load <= g.in_w + g.pad_left
    };
    let zp16 = _mm256_set1_epi16(zp.unwrap_or(0) as i16);
    for c in 0..g.channels {
        let inp = &input[c * plane..(c + 1) * plane];
        for oy in 0..g.out_h {
            let orow = &mut output[(c * g.out_h + oy) * g.out_w..(c * g.out_h + oy + 1) * g.out_w];
            let mut ox = 0;
            while ox < g.out_w {
                if !vector_ok(ox) {
                    orow[ox] = scalar_one(g, zp, inp, oy, ox);
                    ox += 1;
                    continue;
                }
                // Interior columns: rows are the only clipping, so one divisor.
                let (y0, y1, _, _, count) = window(g, oy, ox);
                let mut acc = if zp.is_some() {
                    _mm256_setzero_si256()
                } else {
                    _mm256_set1_epi16(i8::MIN as i16)
                };
                for yy in y0..y1 {
                    let row = &inp[yy * g.in_w..(yy + 1) * g.in_w];
                    for kx in 0..g.kw {
                        // In range by `vector_ok`: ix + load <= in_w.
                        let ix = ox * g.stride_w + kx - g.pad_left;
                        let src = row[ix..ix + load].as_ptr();
                        let x = if g.stride_w == 1 {
                            // SAFETY: 16 bytes at `src` are in `row`.
                            _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(src as *const __m128i) })
                        } else {
                            // SAFETY: 32 bytes at `src` are in `row`.
                            let v = unsafe { _mm256_loadu_si256(src as *const __m256i) };
                            _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(v))
                        };
                        acc = match zp {
                            None => _mm256_max_epi16(acc, x),
                            Some(_) => _mm256_add_epi16(acc, _mm256_sub_epi16(x, zp16)),
                        };
                    }
                }
                let dst = &mut orow[ox..ox + 16];
                let bytes = match zp {
                    // In int8 range already: packing does not saturate.
                    None => _mm256_permute4x64_epi64::<0b1000>(_mm256_packs_epi16(acc, acc)),
                    Some(z) => {
                        let lo =
                            average8(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc)), count, z);
                        let hi = average8(
                            _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(acc)),
                            count,
                            z,
                        );
                        // [lo0..3 hi0..3 | lo4..7 hi4..7] as i16, then bytes; reorder the dwords.
                        let w = _mm256_packs_epi32(lo, hi);
                        let b = _mm256_packs_epi16(w, w);
                        _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0))
                    }
                };
                // SAFETY: `dst` is 16 bytes.
                unsafe {
                    _mm_storeu_si128(
                        dst.as_mut_ptr() as *mut __m128i,
                        _mm256_castsi256_si128(bytes),
                    )
                };
                ox += 16;
            }
        }
    }
}

/// `clamp(zp + round_half_away(sum / n), -128, 127)` per lane.
///
/// The reference's `(sum +- n/2) / n` truncates; here the division is in f32,
/// which is exact for it: numerator and divisor are integers below 2^22, so a
/// non-integer quotient is at least `1/n` from the next integer while the f32
/// rounding error is below `2^22/n * 2^-24`, and truncation cannot change.
#[inline]
#[target_feature(enable = "avx2")]
fn average8(sum: __m256i, n: usize, zp: i32) -> __m256i {
    let half = _mm256_set1_epi32(n as i32 / 2);
    // +n/2 for sum > 0, -n/2 for sum < 0, 0 for sum == 0 (where either gives 0).
    let num = _mm256_add_epi32(sum, _mm256_sign_epi32(half, sum));
    let q = _mm256_cvttps_epi32(_mm256_div_ps(
        _mm256_cvtepi32_ps(num),
        _mm256_set1_ps(n as f32),
    ));
    let v = _mm256_add_epi32(q, _mm256_set1_epi32(zp));
    _mm256_min_epi32(
        _mm256_max_epi32(v, _mm256_set1_epi32(-128)),
        _mm256_set1_epi32(127),
    )
}

//! `qs8_gemm_nt` and `qs8_gemm_nt_f32out` on AVX2.
//!
//! Both operands are k-contiguous rows, read in place. The inner loop takes 16
//! k at a time: each row is sign-extended to i16 (`vpmovsxbw`) and pairs of
//! products are summed exactly into i32 lanes by `vpmaddwd` (never `vpmaddubsw`,
//! which saturates its i16 sums). A register tile is `MR` rows of `a` by `NR`
//! rows of `b`; the k tail (k % 16) is zero-padded through stack buffers, and
//! the m / n edges use smaller tiles. A 4x2 tile reduces to one vector holding
//! its eight dot products, which goes through the vector output stage.
//!
//! When `n >= 8` and `k <= PK_KMAX` (every conv tile the driver makes), the
//! packed path runs instead: `b` is packed on the stack as i16 pairs in groups
//! of eight columns, rows of `a` are widened to i16 pairs, and a 4-row by
//! 16-column tile broadcasts one pair of `a` against each vector of eight
//! columns (`vpmaddwd` again). Each accumulator then already holds eight
//! consecutive outputs of one row, so there is no horizontal reduction and the
//! stores are contiguous when `cs == 1`; this is what makes small `k` fast.

use core::arch::x86_64::*;

use core::mem::MaybeUninit;

use super::requant::{output_stage, pack8, RqV};
use crate::reference::{self, QOut};
use crate::requant::{clamp_i8, requantize, Requant};

/// Rows of `a` per tile.
const MR: usize = 4;
/// Rows of `b` per tile.
const NR: usize = 2;

/// AVX2 [`reference::qs8_gemm_nt`]; same contract, same output.
#[allow(clippy::too_many_arguments)]
pub fn qs8_gemm_nt__avx2(
    m: usize,
    n: usize,
    k: usize,
    a: &[i8],
    b: &[i8],
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: &mut [i8],
    rs: usize,
    cs: usize,
) {
    if !super::has_avx2() {
        return reference::qs8_gemm_nt(m, n, k, a, b, bias, rq, q, out, rs, cs);
    }
    check_contract(m, n, k, a, b, bias.len(), rq.len(), out.len(), rs, cs);
    // The reference's `clamp` panics on these; keep that behaviour.
    assert!(
        m == 0 || n == 0 || q.act_min <= q.act_max,
        "qs8_gemm_nt: act_min > act_max"
    );
    // SAFETY: AVX2 is available (checked above) and `check_contract` proved
    // every row of `a` and `b` and every output index in bounds.
    unsafe { gemm(m, n, k, a, b, bias, Out::I8 { rq, q, out }, rs, cs) }
}

/// AVX2 [`reference::qs8_gemm_nt_f32out`]; same contract, same output.
#[allow(clippy::too_many_arguments)]
pub fn qs8_gemm_nt_f32out__avx2(
    m: usize,
    n: usize,
    k: usize,
    a: &[i8],
    b: &[i8],
    bias: &[i32],
    scale: &[f32],
    act_min: f32,
    act_max: f32,
    out: &mut [f32],
    rs: usize,
    cs: usize,
) {
    if !super::has_avx2() {
        return reference::qs8_gemm_nt_f32out(
            m, n, k, a, b, bias, scale, act_min, act_max, out, rs, cs,
        );
    }
    check_contract(m, n, k, a, b, bias.len(), scale.len(), out.len(), rs, cs);
    // The reference's `f32::clamp` panics on these; keep that behaviour.
    assert!(
        m == 0 || n == 0 || act_min <= act_max,
        "qs8_gemm_nt_f32out: act_min > act_max or NaN bound"
    );
    // SAFETY: as in `qs8_gemm_nt__avx2`.
    unsafe {
        gemm(
            m,
            n,
            k,
            a,
            b,
            bias,
            Out::F32 {
                scale,
                lo: act_min,
                hi: act_max,
                out,
            },
            rs,
            cs,
        )
    }
}

/// Panics unless every access the vector code makes is in bounds.
#[allow(clippy::too_many_arguments)]
fn check_contract(
    m: usize,
    n: usize,
    k: usize,
    a: &[i8],
    b: &[i8],
    bias_len: usize,
    rq_len: usize,
    out_len: usize,
    rs: usize,
    cs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let in_bounds = m.checked_mul(k).is_some_and(|l| l <= a.len())
        && n.checked_mul(k).is_some_and(|l| l <= b.len())
        && bias_len >= m
        && rq_len >= m
        && (m - 1)
            .checked_mul(rs)
            .and_then(|r| (n - 1).checked_mul(cs).and_then(|c| r.checked_add(c)))
            .is_some_and(|last| last < out_len);
    assert!(
        in_bounds,
        "qs8_gemm_nt: buffers do not match m={m} n={n} k={k} rs={rs} cs={cs}"
    );
}

/// Where the accumulators go.
enum Out<'a> {
    I8 {
        rq: &'a [Requant],
        q: &'a QOut,
        out: &'a mut [i8],
    },
    F32 {
        scale: &'a [f32],
        lo: f32,
        hi: f32,
        out: &'a mut [f32],
    },
}

/// Per-row-block constants of the output stage, hoisted out of the column loop.
/// Lane `l` of a 4x2 tile is row `l / 2`, column `l % 2`.
enum Stage {
    I8 {
        bias: __m256i,
        rq: RqV,
        zp: __m256i,
        lo: __m256i,
        hi: __m256i,
    },
    F32 {
        bias: __m256i,
        scale: __m256,
        lo: __m256,
        hi: __m256,
    },
}

/// The driver. Safety: AVX2 available and `check_contract` passed.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[i8],
    b: &[i8],
    bias: &[i32],
    mut o: Out,
    rs: usize,
    cs: usize,
) {
    if n >= 8 && k <= PK_KMAX {
        // SAFETY: the caller's guarantees are the packed path's.
        unsafe { gemm_packed(m, n, k, a, b, bias, &mut o, rs, cs) };
        return;
    }
    let ap = a.as_ptr();
    let bp = b.as_ptr();
    let mut i = 0;
    while i + MR <= m {
        let pair = |x: [i32; 4]| _mm256_setr_epi32(x[0], x[0], x[1], x[1], x[2], x[2], x[3], x[3]);
        let vbias = pair([bias[i], bias[i + 1], bias[i + 2], bias[i + 3]]);
        let stage = match &o {
            Out::I8 { rq, q, .. } => {
                let r = [rq[i], rq[i + 1], rq[i + 2], rq[i + 3]];
                Stage::I8 {
                    bias: vbias,
                    rq: RqV::lanes([r[0], r[0], r[1], r[1], r[2], r[2], r[3], r[3]]),
                    zp: _mm256_set1_epi32(q.out_zp),
                    lo: _mm256_set1_epi32(q.act_min as i32),
                    hi: _mm256_set1_epi32(q.act_max as i32),
                }
            }
            Out::F32 { scale, lo, hi, .. } => {
                let s = [scale[i], scale[i + 1], scale[i + 2], scale[i + 3]];
                Stage::F32 {
                    bias: vbias,
                    scale: _mm256_setr_ps(s[0], s[0], s[1], s[1], s[2], s[2], s[3], s[3]),
                    lo: _mm256_set1_ps(*lo),
                    hi: _mm256_set1_ps(*hi),
                }
            }
        };
        let mut j = 0;
        while j + NR <= n {
            // SAFETY: rows i..i+4 of `a` and j..j+2 of `b` are in bounds.
            let acc = unsafe { dot_tile::<MR, NR>(ap.add(i * k), bp.add(j * k), k) };
            emit_4x2(&stage, &mut o, reduce_4x2(&acc), i, j, rs, cs);
            j += NR;
        }
        while j < n {
            // SAFETY: rows i..i+4 of `a` and row j of `b` are in bounds.
            let acc = unsafe { dot_tile::<MR, 1>(ap.add(i * k), bp.add(j * k), k) };
            for (r, row) in acc.iter().enumerate() {
                store1(&mut o, bias, i + r, j, hsum(row[0]), rs, cs);
            }
            j += 1;
        }
        i += MR;
    }
    while i < m {
        for j in 0..n {
            // SAFETY: row i of `a` and row j of `b` are in bounds.
            let acc = unsafe { dot_tile::<1, 1>(ap.add(i * k), bp.add(j * k), k) };
            store1(&mut o, bias, i, j, hsum(acc[0][0]), rs, cs);
        }
        i += 1;
    }
}

/// Output stage of a 4x2 tile at rows `i..i+4`, columns `j..j+2` (lane
/// `2r + c` of `sums`).
#[inline]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn emit_4x2(stage: &Stage, o: &mut Out, sums: __m256i, i: usize, j: usize, rs: usize, cs: usize) {
    let mut lanes = [0i32; 8];
    let mut flanes = [0f32; 8];
    match stage {
        Stage::I8 {
            bias,
            rq,
            zp,
            lo,
            hi,
        } => {
            let v = output_stage(_mm256_add_epi32(sums, *bias), rq, *zp, *lo, *hi);
            // SAFETY: `lanes` holds 8 i32.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, v) };
        }
        Stage::F32 {
            bias,
            scale,
            lo,
            hi,
        } => {
            let x = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(sums, *bias)), *scale);
            // `max(lo, x)` / `min(hi, x)` return `x` when it is NaN, like `f32::clamp`.
            let v = _mm256_min_ps(*hi, _mm256_max_ps(*lo, x));
            // SAFETY: `flanes` holds 8 f32.
            unsafe { _mm256_storeu_ps(flanes.as_mut_ptr(), v) };
        }
    }
    for (l, (&v, &f)) in lanes.iter().zip(&flanes).enumerate() {
        let idx = (i + l / 2) * rs + (j + l % 2) * cs;
        match o {
            Out::I8 { out, .. } => out[idx] = v as i8,
            Out::F32 { out, .. } => out[idx] = f,
        }
    }
}

/// The reference's output expression for one element.
#[inline]
fn store1(o: &mut Out, bias: &[i32], i: usize, j: usize, dot: i32, rs: usize, cs: usize) {
    let acc = bias[i].wrapping_add(dot);
    match o {
        Out::I8 { rq, q, out } => {
            out[i * rs + j * cs] = clamp_i8(
                requantize(acc, rq[i]).wrapping_add(q.out_zp),
                q.act_min,
                q.act_max,
            )
        }
        Out::F32 { scale, lo, hi, out } => {
            out[i * rs + j * cs] = (acc as f32 * scale[i]).clamp(*lo, *hi)
        }
    }
}

/// `acc[r][c]` holds eight partial sums of `a[r] . b[c]`.
///
/// Safety: `a` points at `R` rows and `b` at `C` rows of `k` readable bytes.
#[inline]
#[target_feature(enable = "avx2")]
// `acc[r][c]` indexed by both loop variables reads clearest as index loops.
#[allow(clippy::needless_range_loop)]
unsafe fn dot_tile<const R: usize, const C: usize>(
    a: *const i8,
    b: *const i8,
    k: usize,
) -> [[__m256i; C]; R] {
    let mut acc = [[_mm256_setzero_si256(); C]; R];
    let mut kk = 0;
    while kk + 16 <= k {
        let mut va = [_mm256_setzero_si256(); R];
        for (r, v) in va.iter_mut().enumerate() {
            // SAFETY: kk + 16 <= k, inside row r.
            *v = _mm256_cvtepi8_epi16(unsafe {
                _mm_loadu_si128(a.add(r * k + kk) as *const __m128i)
            });
        }
        for c in 0..C {
            // SAFETY: as above, row c of `b`.
            let vb = _mm256_cvtepi8_epi16(unsafe {
                _mm_loadu_si128(b.add(c * k + kk) as *const __m128i)
            });
            for r in 0..R {
                acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(va[r], vb));
            }
        }
        kk += 16;
    }
    if kk < k {
        // The tail through zero-padded copies: zero products add nothing.
        let rem = k - kk;
        let mut va = [_mm256_setzero_si256(); R];
        for (r, v) in va.iter_mut().enumerate() {
            let mut buf = [0i8; 16];
            // SAFETY: `rem` bytes remain in row r; `buf` has 16 >= rem.
            unsafe { core::ptr::copy_nonoverlapping(a.add(r * k + kk), buf.as_mut_ptr(), rem) };
            // SAFETY: `buf` is 16 bytes.
            *v = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(buf.as_ptr() as *const __m128i) });
        }
        for c in 0..C {
            let mut buf = [0i8; 16];
            // SAFETY: as above, row c of `b`.
            unsafe { core::ptr::copy_nonoverlapping(b.add(c * k + kk), buf.as_mut_ptr(), rem) };
            // SAFETY: `buf` is 16 bytes.
            let vb =
                _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(buf.as_ptr() as *const __m128i) });
            for r in 0..R {
                acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(va[r], vb));
            }
        }
    }
    acc
}

/// The eight dot products of a 4x2 tile, lane `2r + c` = row r, column c.
#[inline]
#[target_feature(enable = "avx2")]
fn reduce_4x2(acc: &[[__m256i; 2]; 4]) -> __m256i {
    let h0 = _mm256_hadd_epi32(acc[0][0], acc[0][1]);
    let h1 = _mm256_hadd_epi32(acc[1][0], acc[1][1]);
    let h2 = _mm256_hadd_epi32(acc[2][0], acc[2][1]);
    let h3 = _mm256_hadd_epi32(acc[3][0], acc[3][1]);
    // Per 128-bit half: [r0c0 r0c1 r1c0 r1c1] and [r2c0 r2c1 r3c0 r3c1].
    let g0 = _mm256_hadd_epi32(h0, h1);
    let g1 = _mm256_hadd_epi32(h2, h3);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(g0, g1),
        _mm256_permute2x128_si256::<0x31>(g0, g1),
    )
}

/// Sum of the eight i32 lanes (wrapping, like the reference's release build).
#[inline]
#[target_feature(enable = "avx2")]
fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Largest `k` the packed path takes (bounds its stack buffers).
const PK_KMAX: usize = 1024;
/// Packed `b` panel, in i16 pairs (32 KiB).
const PK_BBUF: usize = 8192;
/// Widened rows of `a`, in i16 pairs.
const PK_ABUF: usize = PK_MR * PK_KMAX / 2;
/// Rows of `a` per packed-path tile.
const PK_MR: usize = 4;

/// The packed path, for `n >= 8`: columns of `b` are packed in groups of eight
/// as i16 pairs (dword `8p + c` of a group = `b[c][2p], b[c][2p + 1]`), rows of
/// `a` are widened to i16 pairs, and a tile broadcasts one pair of `a` against a
/// vector of eight columns. The accumulators then hold eight consecutive outputs
/// of one row each: no horizontal reduction.
///
/// Safety: AVX2 available, `check_contract` passed, `n >= 8`, `k <= PK_KMAX`.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_packed(
    m: usize,
    n: usize,
    k: usize,
    a: &[i8],
    b: &[i8],
    bias: &[i32],
    o: &mut Out,
    rs: usize,
    cs: usize,
) {
    let kh = k.div_ceil(2);
    let gstride = kh * 8;
    // At least two groups: gstride <= 4 * PK_KMAX = PK_BBUF / 2.
    let chunk_groups = (PK_BBUF / gstride).min(n.div_ceil(8));
    let mut bbuf = MaybeUninit::<[i32; PK_BBUF]>::uninit();
    let mut abuf = MaybeUninit::<[i32; PK_ABUF]>::uninit();
    let bpk = bbuf.as_mut_ptr() as *mut i32;
    let apk = abuf.as_mut_ptr() as *mut i32;
    let mut j0 = 0;
    while j0 < n {
        let ncols = (chunk_groups * 8).min(n - j0);
        let ng = ncols.div_ceil(8);
        for g in 0..ng {
            let c0 = j0 + g * 8;
            // SAFETY: columns c0..c0+valid of `b` are in bounds; group g ends at
            // (g + 1) * gstride <= chunk_groups * gstride <= PK_BBUF.
            unsafe {
                pack_b_group(
                    b.as_ptr().add(c0 * k),
                    (n - c0).min(8),
                    k,
                    bpk.add(g * gstride),
                )
            };
        }
        let blk = Blk {
            j0,
            ncols,
            ng,
            kh,
            k,
            rs,
            cs,
        };
        let mut i = 0;
        // SAFETY (all four): rows i..i+R of `a` are in bounds, `apk` holds
        // PK_MR * kh dwords, `bpk` holds the packed groups written above.
        while i + PK_MR <= m {
            unsafe { rows::<PK_MR>(&blk, i, a, apk, bpk, bias, o) };
            i += PK_MR;
        }
        match m - i {
            3 => unsafe { rows::<3>(&blk, i, a, apk, bpk, bias, o) },
            2 => unsafe { rows::<2>(&blk, i, a, apk, bpk, bias, o) },
            1 => unsafe { rows::<1>(&blk, i, a, apk, bpk, bias, o) },
            _ => {}
        }
        j0 += ncols;
    }
}

/// Geometry of one packed column chunk.
struct Blk {
    j0: usize,
    ncols: usize,
    ng: usize,
    kh: usize,
    k: usize,
    rs: usize,
    cs: usize,
}

/// Packs up to eight columns (rows of `b`, `valid` of them real, the rest
/// zero) as i16 pairs: `dst[8p + c] = b[c][2p] | b[c][2p + 1] << 16`.
///
/// Safety: `b` points at `valid <= 8` rows of `k` bytes; `dst` has room for
/// `8 * ceil(k / 2)` dwords.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn pack_b_group(b: *const i8, valid: usize, k: usize, dst: *mut i32) {
    let mut kk = 0;
    while kk + 16 <= k {
        let mut r = [_mm256_setzero_si256(); 8];
        for (c, v) in r.iter_mut().enumerate().take(valid) {
            // SAFETY: kk + 16 <= k, inside row c.
            *v = _mm256_cvtepi8_epi16(unsafe {
                _mm_loadu_si128(b.add(c * k + kk) as *const __m128i)
            });
        }
        // 8x8 dword transpose: row c, element p -> vector p, lane c.
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        let p = [
            _mm256_permute2x128_si256::<0x20>(u0, u4),
            _mm256_permute2x128_si256::<0x20>(u1, u5),
            _mm256_permute2x128_si256::<0x20>(u2, u6),
            _mm256_permute2x128_si256::<0x20>(u3, u7),
            _mm256_permute2x128_si256::<0x31>(u0, u4),
            _mm256_permute2x128_si256::<0x31>(u1, u5),
            _mm256_permute2x128_si256::<0x31>(u2, u6),
            _mm256_permute2x128_si256::<0x31>(u3, u7),
        ];
        for (q, v) in p.iter().enumerate() {
            // SAFETY: pair kk/2 + q < ceil(k / 2).
            unsafe { _mm256_storeu_si256(dst.add((kk / 2 + q) * 8) as *mut __m256i, *v) };
        }
        kk += 16;
    }
    for pi in kk / 2..k.div_ceil(2) {
        for c in 0..8 {
            let v = if c < valid {
                // SAFETY: 2 * pi < k, and 2 * pi + 1 is read only when < k.
                unsafe { pair(b.add(c * k), 2 * pi, k) }
            } else {
                0
            };
            // SAFETY: pi < ceil(k / 2).
            unsafe { *dst.add(pi * 8 + c) = v };
        }
    }
}

/// `row[x] | row[x + 1] << 16` as i16s, `row[x + 1]` taken as 0 at `x + 1 == k`.
///
/// Safety: `x < k` and `row` has `k` readable bytes.
#[inline]
unsafe fn pair(row: *const i8, x: usize, k: usize) -> i32 {
    // SAFETY: x < k.
    let lo = unsafe { *row.add(x) } as i16 as u16 as u32;
    let hi = if x + 1 < k {
        // SAFETY: x + 1 < k.
        (unsafe { *row.add(x + 1) }) as i16 as u16 as u32
    } else {
        0
    };
    (lo | hi << 16) as i32
}

/// One block of `R` rows of `a` against the packed chunk.
///
/// Safety: rows `i..i + R` of `a` hold `k` bytes each, `apk` has room for
/// `R * kh` dwords, `bpk` holds `ng` packed groups.
#[inline]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows<const R: usize>(
    blk: &Blk,
    i: usize,
    a: &[i8],
    apk: *mut i32,
    bpk: *const i32,
    bias: &[i32],
    o: &mut Out,
) {
    let (k, kh) = (blk.k, blk.kh);
    for r in 0..R {
        let row = a[(i + r) * k..(i + r + 1) * k].as_ptr();
        let dst = apk.wrapping_add(r * kh);
        let mut kk = 0;
        while kk + 16 <= k {
            // SAFETY: kk + 16 <= k, and dword kk/2 + 8 <= kh of row r of `apk`.
            unsafe {
                let v = _mm256_cvtepi8_epi16(_mm_loadu_si128(row.add(kk) as *const __m128i));
                _mm256_storeu_si256(dst.add(kk / 2) as *mut __m256i, v);
            }
            kk += 16;
        }
        for pi in kk / 2..kh {
            // SAFETY: 2 * pi < k; pi < kh.
            unsafe { *dst.add(pi) = pair(row, 2 * pi, k) };
        }
    }
    let stages: [RowStage; R] = core::array::from_fn(|r| RowStage::new(o, bias, i + r));
    let gstride = kh * 8;
    let mut g = 0;
    while g + 2 <= blk.ng {
        // SAFETY: groups g, g + 1 are packed; `apk` rows are written above.
        let acc = unsafe { vtile::<R, 2>(apk, bpk.add(g * gstride), kh) };
        for (r, accr) in acc.iter().enumerate() {
            for (gg, v) in accr.iter().enumerate() {
                emit_row(blk, &stages[r], o, *v, i + r, g + gg);
            }
        }
        g += 2;
    }
    if g < blk.ng {
        // SAFETY: group g is packed.
        let acc = unsafe { vtile::<R, 1>(apk, bpk.add(g * gstride), kh) };
        for (r, accr) in acc.iter().enumerate() {
            emit_row(blk, &stages[r], o, accr[0], i + r, g);
        }
    }
}

/// `acc[r][g]` lane `c` = `a[r] . b[8g + c]`.
///
/// Safety: `apk` holds `R` rows of `kh` dwords, `bpk` `G` groups of `8 * kh`.
#[inline]
#[target_feature(enable = "avx2")]
#[allow(clippy::needless_range_loop)]
unsafe fn vtile<const R: usize, const G: usize>(
    apk: *const i32,
    bpk: *const i32,
    kh: usize,
) -> [[__m256i; G]; R] {
    let mut acc = [[_mm256_setzero_si256(); G]; R];
    for p in 0..kh {
        let mut vb = [_mm256_setzero_si256(); G];
        for g in 0..G {
            // SAFETY: p < kh, inside group g.
            vb[g] = unsafe { _mm256_loadu_si256(bpk.add(g * kh * 8 + p * 8) as *const __m256i) };
        }
        for r in 0..R {
            // SAFETY: p < kh, inside row r.
            let va = _mm256_set1_epi32(unsafe { *apk.add(r * kh + p) });
            for g in 0..G {
                acc[r][g] = _mm256_add_epi32(acc[r][g], _mm256_madd_epi16(va, vb[g]));
            }
        }
    }
    acc
}

/// Output-stage constants of one row, all lanes alike.
enum RowStage {
    I8 {
        bias: __m256i,
        rq: RqV,
        zp: __m256i,
        lo: __m256i,
        hi: __m256i,
    },
    F32 {
        bias: __m256i,
        scale: __m256,
        lo: __m256,
        hi: __m256,
    },
}

impl RowStage {
    #[inline]
    #[target_feature(enable = "avx2")]
    fn new(o: &Out, bias: &[i32], i: usize) -> RowStage {
        let vbias = _mm256_set1_epi32(bias[i]);
        match o {
            Out::I8 { rq, q, .. } => RowStage::I8 {
                bias: vbias,
                rq: RqV::splat(rq[i]),
                zp: _mm256_set1_epi32(q.out_zp),
                lo: _mm256_set1_epi32(q.act_min as i32),
                hi: _mm256_set1_epi32(q.act_max as i32),
            },
            Out::F32 { scale, lo, hi, .. } => RowStage::F32 {
                bias: vbias,
                scale: _mm256_set1_ps(scale[i]),
                lo: _mm256_set1_ps(*lo),
                hi: _mm256_set1_ps(*hi),
            },
        }
    }
}

/// Output stage and store of the eight columns of group `g` of row `i`.
#[inline]
#[target_feature(enable = "avx2")]
fn emit_row(blk: &Blk, st: &RowStage, o: &mut Out, sums: __m256i, i: usize, g: usize) {
    let j = blk.j0 + g * 8;
    let valid = (blk.ncols - g * 8).min(8);
    let base = i * blk.rs + j * blk.cs;
    match (st, o) {
        (
            RowStage::I8 {
                bias,
                rq,
                zp,
                lo,
                hi,
            },
            Out::I8 { out, .. },
        ) => {
            let v = output_stage(_mm256_add_epi32(sums, *bias), rq, *zp, *lo, *hi);
            if blk.cs == 1 && valid == 8 {
                let dst = &mut out[base..base + 8];
                // SAFETY: `dst` is 8 bytes.
                unsafe { _mm_storel_epi64(dst.as_mut_ptr() as *mut __m128i, pack8(v)) };
            } else {
                let mut lanes = [0i32; 8];
                // SAFETY: `lanes` holds 8 i32.
                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, v) };
                for (c, &x) in lanes.iter().enumerate().take(valid) {
                    out[base + c * blk.cs] = x as i8;
                }
            }
        }
        (
            RowStage::F32 {
                bias,
                scale,
                lo,
                hi,
            },
            Out::F32 { out, .. },
        ) => {
            let x = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(sums, *bias)), *scale);
            // `max(lo, x)` / `min(hi, x)` return `x` when it is NaN, like `f32::clamp`.
            let v = _mm256_min_ps(*hi, _mm256_max_ps(*lo, x));
            if blk.cs == 1 && valid == 8 {
                let dst = &mut out[base..base + 8];
                // SAFETY: `dst` is 8 f32.
                unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) };
            } else {
                let mut lanes = [0f32; 8];
                // SAFETY: `lanes` holds 8 f32.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
                for (c, &x) in lanes.iter().enumerate().take(valid) {
                    out[base + c * blk.cs] = x;
                }
            }
        }
        _ => unreachable!("stage and output kinds match"),
    }
}

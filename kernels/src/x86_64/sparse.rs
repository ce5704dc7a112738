//! `qs8_gemm_nt_sparse` on AVX2.
//!
//! `b` is packed into the caller's scratch exactly like the dense packed path
//! (groups of eight columns as i16 pairs, dword `8p + c` of a group =
//! `b[c][2p], b[c][2p + 1]`), padded to whole 4-blocks of `k`. A 1x4 weight
//! block is then two i16 pairs: each is broadcast and `vpmaddwd`-ed against
//! the matching packed vector of every group in a tile of up to eight groups
//! (64 columns: the driver's whole conv tile), so a stored block costs 2
//! multiply-adds per 8 outputs and a skipped block costs nothing. Eight
//! groups per block visit (rather than four) halve the per-block overhead
//! (loading, widening and broadcasting the weights, the loop itself); eight
//! accumulators, two weight pairs and two products fit the 16 ymm registers.
//! Accumulators hold eight consecutive outputs of one row.
//!
//! **Output stage.** At high sparsity the accumulation is a small part of the
//! work and requantization dominates (for 96->24 channels at 80% zero
//! blocks, the old kernel spent about 70% of its time on what it also spends
//! with every block zero: packing, requantize and store). Each
//! accumulator is one row, so the requantization constants are scalars:
//! rows whose multiplier is below 1 take [`requantize_row`] (no saturating
//! left shift, constants precomputed once per row), others the general
//! [`requantize_v`]. Four vectors of one row are then packed to 32 bytes
//! together, and the activation clamp runs on those bytes: `vpackss*`
//! saturates to [-128, 127] and `[act_min, act_max]` lies inside it, so
//! clamping the saturated byte equals clamping the i32.
//!
//! Column tiles are the outer loop and rows the inner one, so a tile's packed
//! panel (`64 * k * 2` bytes) stays in cache while every row walks its blocks.

use core::arch::x86_64::*;

use super::gemm::pack_b_group;
use super::requant::{pack8, requantize_row, requantize_v, RqRow, RqV};
use crate::reference::{self, sparse_scratch_len, QOut, SparseWeights, SPARSE_SCRATCH_ALIGN};
use crate::requant::Requant;

/// AVX2 [`reference::qs8_gemm_nt_sparse`]; same contract, same output.
#[allow(clippy::too_many_arguments)]
pub fn qs8_gemm_nt_sparse__avx2(
    n: usize,
    a: &SparseWeights,
    b: &[i8],
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: &mut [i8],
    rs: usize,
    cs: usize,
    scratch: &mut [i8],
) {
    if !super::has_avx2() {
        return reference::qs8_gemm_nt_sparse(n, a, b, bias, rq, q, out, rs, cs, scratch);
    }
    let (m, k) = (a.m(), a.k());
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        n.checked_mul(k).is_some_and(|l| l <= b.len()) && bias.len() >= m && rq.len() >= m,
        "qs8_gemm_nt_sparse: buffers do not match m={m} n={n} k={k}"
    );
    assert!(
        scratch.len() >= sparse_scratch_len(n, k),
        "qs8_gemm_nt_sparse: scratch shorter than sparse_scratch_len"
    );
    // The reference's `clamp` panics on these; keep that behaviour.
    assert!(
        q.act_min <= q.act_max,
        "qs8_gemm_nt_sparse: act_min > act_max"
    );
    let align = scratch.as_ptr().align_offset(SPARSE_SCRATCH_ALIGN);
    assert!(align < SPARSE_SCRATCH_ALIGN, "unalignable scratch");
    // SAFETY: AVX2 is available; rows 0..n of `b` are in bounds (checked);
    // `scratch[align..]` holds the packed panel (`sparse_scratch_len` includes
    // the alignment slack) and is 4-byte aligned; block indices of a
    // `SparseWeights` are below `k_blocks()` (checked at construction).
    unsafe {
        let panel = scratch.as_mut_ptr().add(align) as *mut i32;
        gemm(n, a, b, bias, rq, q, out, rs, cs, panel)
    }
}

/// Safety: see the wrapper.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    n: usize,
    a: &SparseWeights,
    b: &[i8],
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: &mut [i8],
    rs: usize,
    cs: usize,
    panel: *mut i32,
) {
    let k = a.k();
    // Pairs per packed column group, padded to whole blocks (2 pairs each).
    let kp = a.k_blocks() * 2;
    let gstride = kp * 8;
    let ng = n.div_ceil(8);
    for g in 0..ng {
        let c0 = g * 8;
        // SAFETY: columns c0..c0+valid of `b` are in bounds; the group's
        // `gstride` dwords are inside the panel (ng * gstride dwords).
        unsafe {
            let dst = panel.add(g * gstride);
            pack_b_group(b.as_ptr().add(c0 * k), (n - c0).min(8), k, dst);
            // The pair past ceil(k / 2), present when k % 4 is 1 or 2.
            for p in k.div_ceil(2)..kp {
                _mm256_storeu_si256(dst.add(p * 8) as *mut __m256i, _mm256_setzero_si256());
            }
        }
    }
    let mut st = St {
        n,
        kp,
        q,
        out,
        rs,
        cs,
    };
    let mut g = 0;
    // SAFETY (each call): groups g..g+G are packed above.
    while g + 8 <= ng {
        unsafe { tile::<8>(a, g, panel, bias, rq, &mut st) };
        g += 8;
    }
    if g + 4 <= ng {
        unsafe { tile::<4>(a, g, panel, bias, rq, &mut st) };
        g += 4;
    }
    if g + 2 <= ng {
        unsafe { tile::<2>(a, g, panel, bias, rq, &mut st) };
        g += 2;
    }
    if g < ng {
        unsafe { tile::<1>(a, g, panel, bias, rq, &mut st) };
    }
}

/// The output side and panel geometry.
struct St<'a> {
    n: usize,
    kp: usize,
    q: &'a QOut,
    out: &'a mut [i8],
    rs: usize,
    cs: usize,
}

/// Every row of `a` against packed groups `g0..g0 + G`.
///
/// Safety: AVX2; the groups are packed in `panel`; block indices < kp / 2.
#[inline]
#[target_feature(enable = "avx2")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<const G: usize>(
    a: &SparseWeights,
    g0: usize,
    panel: *const i32,
    bias: &[i32],
    rq: &[Requant],
    st: &mut St,
) {
    let kp = st.kp;
    let gstride = kp * 8;
    let base = panel.wrapping_add(g0 * gstride);
    let zp = _mm256_set1_epi32(st.q.out_zp);
    let lo = _mm256_set1_epi8(st.q.act_min);
    let hi = _mm256_set1_epi8(st.q.act_max);
    for i in 0..a.m() {
        let (blocks, values) = a.row(i);
        // The bias starts the sum: i32 addition is associative.
        let mut acc = [_mm256_set1_epi32(bias[i]); G];
        for (&c, w) in blocks.iter().zip(values.chunks_exact(4)) {
            let w4 = i32::from_le_bytes([w[0] as u8, w[1] as u8, w[2] as u8, w[3] as u8]);
            let w16 = _mm_cvtepi8_epi16(_mm_cvtsi32_si128(w4));
            let p0 = _mm256_broadcastd_epi32(w16);
            let p1 = _mm256_broadcastd_epi32(_mm_srli_si128::<4>(w16));
            // SAFETY: c < kp / 2, so pairs 2c, 2c + 1 are inside each group.
            let bp = unsafe { base.add(c as usize * 16) };
            for g in 0..G {
                // SAFETY: as above, group g0 + g.
                let (v0, v1) = unsafe {
                    (
                        _mm256_loadu_si256(bp.add(g * gstride) as *const __m256i),
                        _mm256_loadu_si256(bp.add(g * gstride + 8) as *const __m256i),
                    )
                };
                let s = _mm256_add_epi32(_mm256_madd_epi16(p0, v0), _mm256_madd_epi16(p1, v1));
                acc[g] = _mm256_add_epi32(acc[g], s);
            }
        }
        // requantize + out_zp, not yet clamped (the clamp is on the bytes).
        let mut v = acc;
        match RqRow::new(rq[i]) {
            Some(r) => {
                for x in v.iter_mut() {
                    *x = _mm256_add_epi32(requantize_row(*x, &r), zp);
                }
            }
            None => {
                let r = RqV::splat(rq[i]);
                for x in v.iter_mut() {
                    *x = _mm256_add_epi32(requantize_v(*x, &r), zp);
                }
            }
        }
        let j0 = g0 * 8;
        let at = i * st.rs + j0 * st.cs;
        let mut g = 0;
        if st.cs == 1 {
            // Whole quads of groups: 32 contiguous outputs per store.
            while g + 4 <= G && j0 + (g + 4) * 8 <= st.n {
                let x = pack32(v[g], v[g + 1], v[g + 2], v[g + 3]);
                let x = _mm256_min_epi8(_mm256_max_epi8(x, lo), hi);
                let dst = &mut st.out[at + g * 8..at + g * 8 + 32];
                // SAFETY: `dst` is 32 bytes.
                unsafe { _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, x) };
                g += 4;
            }
        }
        for g in g..G {
            let j = j0 + g * 8;
            let valid = (st.n - j).min(8);
            let x = pack8(v[g]);
            let x = _mm_min_epi8(
                _mm_max_epi8(x, _mm256_castsi256_si128(lo)),
                _mm256_castsi256_si128(hi),
            );
            let at = at + g * 8 * st.cs;
            if st.cs == 1 && valid == 8 {
                let dst = &mut st.out[at..at + 8];
                // SAFETY: `dst` is 8 bytes.
                unsafe { _mm_storel_epi64(dst.as_mut_ptr() as *mut __m128i, x) };
            } else {
                let mut lanes = [0i8; 16];
                // SAFETY: `lanes` holds 16 bytes.
                unsafe { _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, x) };
                for (c, &b) in lanes.iter().enumerate().take(valid) {
                    st.out[at + c * st.cs] = b;
                }
            }
        }
    }
}

/// Four vectors of eight i32 (columns `0..8`, `8..16`, `16..24`, `24..32`)
/// as 32 bytes in column order, each saturated to the int8 range.
#[inline]
#[target_feature(enable = "avx2")]
fn pack32(v0: __m256i, v1: __m256i, v2: __m256i, v3: __m256i) -> __m256i {
    // Per 128-bit half h (lanes 4h..4h + 4 of each vector), as i16:
    // [v0 v1] and [v2 v3]; then as bytes: [v0 v1 v2 v3], four lanes each.
    let a = _mm256_packs_epi32(v0, v1);
    let b = _mm256_packs_epi32(v2, v3);
    let c = _mm256_packs_epi16(a, b);
    // Dword d of half h holds lanes 4h..4h + 4 of v_d: interleave the halves.
    _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

//! `qs8_vadd`, `qs8_vmul` and `qs8_requantize_copy` on AVX2, eight elements
//! per step through the vector requantization.
//!
//! The binary ops vectorise the common case of three equal shapes (no
//! broadcast; the data are then plain contiguous arrays) and run the reference
//! for any broadcast.

use core::arch::x86_64::*;

use super::requant::{output_stage, pack8, requantize_row, requantize_v, RqRow, RqV};
use crate::reference::{self, QAddParams, QMulParams, QADD_LEFT_SHIFT};
use crate::requant::{clamp_i8, requantize, Requant};
use crate::shape::Dims;

/// AVX2 [`reference::qs8_vadd`]; same contract, same output.
pub fn qs8_vadd__avx2(
    p: &QAddParams,
    a: &[i8],
    ad: &Dims,
    b: &[i8],
    bd: &Dims,
    out: &mut [i8],
    od: &Dims,
) {
    let Some(len) = same_shape(ad, bd, od) else {
        return reference::qs8_vadd(p, a, ad, b, bd, out, od);
    };
    if !super::has_avx2() {
        return reference::qs8_vadd(p, a, ad, b, bd, out, od);
    }
    let (a, b, out) = (&a[..len], &b[..len], &mut out[..len]);
    assert!(
        len == 0 || p.act_min <= p.act_max,
        "qs8_vadd: act_min > act_max"
    );
    // SAFETY: AVX2 is available; the three slices have length `len`.
    unsafe { vadd(p, a, b, out) }
}

/// AVX2 [`reference::qs8_vmul`]; same contract, same output.
pub fn qs8_vmul__avx2(
    p: &QMulParams,
    a: &[i8],
    ad: &Dims,
    b: &[i8],
    bd: &Dims,
    out: &mut [i8],
    od: &Dims,
) {
    let Some(len) = same_shape(ad, bd, od) else {
        return reference::qs8_vmul(p, a, ad, b, bd, out, od);
    };
    if !super::has_avx2() {
        return reference::qs8_vmul(p, a, ad, b, bd, out, od);
    }
    let (a, b, out) = (&a[..len], &b[..len], &mut out[..len]);
    assert!(
        len == 0 || p.act_min <= p.act_max,
        "qs8_vmul: act_min > act_max"
    );
    // SAFETY: AVX2 is available; the three slices have length `len`.
    unsafe { vmul(p, a, b, out) }
}

/// AVX2 [`reference::qs8_requantize_copy`]; same contract, same output
/// (`min(input.len(), output.len())` elements).
pub fn qs8_requantize_copy__avx2(
    input: &[i8],
    in_zp: i32,
    rq: Requant,
    out_zp: i32,
    output: &mut [i8],
) {
    if !super::has_avx2() {
        return reference::qs8_requantize_copy(input, in_zp, rq, out_zp, output);
    }
    let len = input.len().min(output.len());
    // SAFETY: AVX2 is available; both slices have length `len`.
    unsafe { requantize_copy(&input[..len], in_zp, rq, out_zp, &mut output[..len]) }
}

/// The element count when no operand broadcasts.
fn same_shape(ad: &Dims, bd: &Dims, od: &Dims) -> Option<usize> {
    (ad == od && bd == od).then(|| od.count())
}

/// Eight int8 at `p` sign-extended to i32. Safety: 8 readable bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load8(p: *const i8) -> __m256i {
    // SAFETY: the caller guarantees 8 bytes.
    _mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64(p as *const __m128i) })
}

/// Stores the low 8 bytes of `v`. Safety: 8 writable bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store8(p: *mut i8, v: __m128i) {
    // SAFETY: the caller guarantees 8 bytes.
    unsafe { _mm_storel_epi64(p as *mut __m128i, v) }
}

/// Safety: AVX2; equal lengths.
#[target_feature(enable = "avx2")]
unsafe fn vadd(p: &QAddParams, a: &[i8], b: &[i8], out: &mut [i8]) {
    // All three multipliers below 1 (the usual case): the short row form of
    // the requantization, less than half the instructions of the general one.
    if let (Some(ra), Some(rb), Some(ro)) =
        (RqRow::new(p.a_rq), RqRow::new(p.b_rq), RqRow::new(p.out_rq))
    {
        // SAFETY: as this function's.
        return unsafe { vadd_row(p, (ra, rb, ro), a, b, out) };
    }
    // Opaque (see `vadd_row`).
    let (ra, rb, ro) =
        core::hint::black_box((RqV::splat(p.a_rq), RqV::splat(p.b_rq), RqV::splat(p.out_rq)));
    let (za, zb, zo) = (
        _mm256_set1_epi32(p.a_zp),
        _mm256_set1_epi32(p.b_zp),
        _mm256_set1_epi32(p.out_zp),
    );
    let (lo, hi) = (
        _mm256_set1_epi32(p.act_min as i32),
        _mm256_set1_epi32(p.act_max as i32),
    );
    let n8 = a.len() / 8 * 8;
    for i in (0..n8).step_by(8) {
        // SAFETY: i + 8 <= len for all three slices.
        let (x, y) = unsafe { (load8(a.as_ptr().add(i)), load8(b.as_ptr().add(i))) };
        let x = requantize_v(
            _mm256_slli_epi32::<QADD_LEFT_SHIFT>(_mm256_sub_epi32(x, za)),
            &ra,
        );
        let y = requantize_v(
            _mm256_slli_epi32::<QADD_LEFT_SHIFT>(_mm256_sub_epi32(y, zb)),
            &rb,
        );
        let v = output_stage(_mm256_add_epi32(x, y), &ro, zo, lo, hi);
        // SAFETY: as above.
        unsafe { store8(out.as_mut_ptr().add(i), pack8(v)) };
    }
    for i in n8..a.len() {
        let x = requantize((a[i] as i32 - p.a_zp) << QADD_LEFT_SHIFT, p.a_rq);
        let y = requantize((b[i] as i32 - p.b_zp) << QADD_LEFT_SHIFT, p.b_rq);
        out[i] = clamp_i8(requantize(x + y, p.out_rq) + p.out_zp, p.act_min, p.act_max);
    }
}

/// [`vadd`] with the three requantizations in the row form.
///
/// Safety: AVX2; equal lengths; `r` made from `p`'s `a_rq`, `b_rq`, `out_rq`.
#[target_feature(enable = "avx2")]
unsafe fn vadd_row(p: &QAddParams, r: (RqRow, RqRow, RqRow), a: &[i8], b: &[i8], out: &mut [i8]) {
    // Opaque constants: seeing the splatted multipliers, LLVM turned each
    // `vpmuldq` into three `vpmuludq` and shifts (a generic 64-bit multiply).
    let (ra, rb, ro) = core::hint::black_box(r);
    let (za, zb) = (_mm256_set1_epi32(p.a_zp), _mm256_set1_epi32(p.b_zp));
    let zo = _mm256_set1_epi32(p.out_zp);
    let (lo, hi) = (
        _mm256_set1_epi32(p.act_min as i32),
        _mm256_set1_epi32(p.act_max as i32),
    );
    let n8 = a.len() / 8 * 8;
    for i in (0..n8).step_by(8) {
        // SAFETY: i + 8 <= len for all three slices.
        let (x, y) = unsafe { (load8(a.as_ptr().add(i)), load8(b.as_ptr().add(i))) };
        let x = requantize_row(
            _mm256_slli_epi32::<QADD_LEFT_SHIFT>(_mm256_sub_epi32(x, za)),
            &ra,
        );
        let y = requantize_row(
            _mm256_slli_epi32::<QADD_LEFT_SHIFT>(_mm256_sub_epi32(y, zb)),
            &rb,
        );
        let v = _mm256_add_epi32(requantize_row(_mm256_add_epi32(x, y), &ro), zo);
        let v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
        // SAFETY: as above.
        unsafe { store8(out.as_mut_ptr().add(i), pack8(v)) };
    }
    for i in n8..a.len() {
        let x = requantize((a[i] as i32 - p.a_zp) << QADD_LEFT_SHIFT, p.a_rq);
        let y = requantize((b[i] as i32 - p.b_zp) << QADD_LEFT_SHIFT, p.b_rq);
        out[i] = clamp_i8(requantize(x + y, p.out_rq) + p.out_zp, p.act_min, p.act_max);
    }
}

/// Safety: AVX2; equal lengths.
#[target_feature(enable = "avx2")]
unsafe fn vmul(p: &QMulParams, a: &[i8], b: &[i8], out: &mut [i8]) {
    let r = RqV::splat(p.rq);
    let (za, zb, zo) = (
        _mm256_set1_epi32(p.a_zp),
        _mm256_set1_epi32(p.b_zp),
        _mm256_set1_epi32(p.out_zp),
    );
    let (lo, hi) = (
        _mm256_set1_epi32(p.act_min as i32),
        _mm256_set1_epi32(p.act_max as i32),
    );
    let n8 = a.len() / 8 * 8;
    for i in (0..n8).step_by(8) {
        // SAFETY: i + 8 <= len for all three slices.
        let (x, y) = unsafe { (load8(a.as_ptr().add(i)), load8(b.as_ptr().add(i))) };
        let prod = _mm256_mullo_epi32(_mm256_sub_epi32(x, za), _mm256_sub_epi32(y, zb));
        let v = output_stage(prod, &r, zo, lo, hi);
        // SAFETY: as above.
        unsafe { store8(out.as_mut_ptr().add(i), pack8(v)) };
    }
    for i in n8..a.len() {
        let prod = (a[i] as i32 - p.a_zp) * (b[i] as i32 - p.b_zp);
        out[i] = clamp_i8(requantize(prod, p.rq) + p.out_zp, p.act_min, p.act_max);
    }
}

/// Safety: AVX2; equal lengths.
#[target_feature(enable = "avx2")]
unsafe fn requantize_copy(input: &[i8], in_zp: i32, rq: Requant, out_zp: i32, output: &mut [i8]) {
    let r = RqV::splat(rq);
    let (zi, zo) = (_mm256_set1_epi32(in_zp), _mm256_set1_epi32(out_zp));
    let (lo, hi) = (_mm256_set1_epi32(-128), _mm256_set1_epi32(127));
    let n8 = input.len() / 8 * 8;
    for i in (0..n8).step_by(8) {
        // SAFETY: i + 8 <= len for both slices.
        let x = unsafe { load8(input.as_ptr().add(i)) };
        let v = output_stage(_mm256_sub_epi32(x, zi), &r, zo, lo, hi);
        // SAFETY: as above.
        unsafe { store8(output.as_mut_ptr().add(i), pack8(v)) };
    }
    for i in n8..input.len() {
        output[i] = (requantize(input[i] as i32 - in_zp, rq) + out_zp).clamp(-128, 127) as i8;
    }
}

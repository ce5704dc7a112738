//! [`reference::qs8_lut`] with AVX-512 VBMI: `vpermi2b` looks 64 bytes up
//! in a 128-byte half of the table at once, so a 256-entry table is two
//! lookups and a blend on the index's top bit (the reference runs a byte at
//! a time); and [`reference::qs8_quantize`] built for zmm.

use core::arch::x86_64::*;

use crate::reference;

/// [`reference::qs8_lut`] on AVX-512 (F, BW, VBMI); same contract, same
/// output. Runs the reference on CPUs without them (the `avx512vnni` row
/// does not imply VBMI).
pub fn qs8_lut__avx512vnni(table: &[i8; 256], input: &[i8], output: &mut [i8]) {
    if !(super::has_avx512vnni() && std::is_x86_feature_detected!("avx512vbmi")) {
        return reference::qs8_lut(table, input, output);
    }
    // The reference's `zip`: the shorter of the two.
    let n = input.len().min(output.len());
    // SAFETY: features checked; `n` bytes of each slice.
    unsafe { lut(table, input.as_ptr(), output.as_mut_ptr(), n) }
}

/// # Safety
/// AVX-512 F/BW/VBMI; `n` readable bytes at `src`, `n` writable at `dst`.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn lut(table: &[i8; 256], src: *const i8, dst: *mut i8, n: usize) {
    let t = table.as_ptr();
    let ld = |o: usize| _mm512_loadu_si512(t.add(o) as *const _);
    let (t0, t1, t2, t3) = (ld(0), ld(64), ld(128), ld(192));
    let flip = _mm512_set1_epi8(i8::MIN);
    // Entry `x + 128` is `x ^ 0x80` as an unsigned byte: bits 0..7 pick
    // within a 128-byte half, bit 7 the half.
    let look = |x: __m512i| {
        let i = _mm512_xor_si512(x, flip);
        let lo = _mm512_permutex2var_epi8(t0, i, t1);
        let hi = _mm512_permutex2var_epi8(t2, i, t3);
        _mm512_mask_blend_epi8(_mm512_movepi8_mask(i), lo, hi)
    };
    let mut i = 0;
    while i + 64 <= n {
        let v = look(_mm512_loadu_si512(src.add(i) as *const _));
        _mm512_storeu_si512(dst.add(i) as *mut _, v);
        i += 64;
    }
    if i < n {
        // Masked-off bytes are neither read nor written.
        let k = (1u64 << (n - i)) - 1;
        let v = look(_mm512_maskz_loadu_epi8(k, src.add(i)));
        _mm512_mask_storeu_epi8(dst.add(i), k, v);
    }
}

/// [`reference::qs8_quantize`] compiled for AVX-512 F/BW/VL: the same
/// source (each element is [`reference::quantize_one`]: IEEE operations and
/// a truncation, which vectorising does not change), 16 elements per
/// vector where the baseline build had SSE2's four. Same contract, same
/// output; runs the reference on CPUs without AVX-512 F/BW/VL/VNNI.
pub fn qs8_quantize__avx512vnni(input: &[f32], scale: f32, zp: i32, output: &mut [i8]) {
    if !super::has_avx512vnni() {
        return reference::qs8_quantize(input, scale, zp, output);
    }
    // SAFETY: features checked.
    unsafe { quantize(input, scale, zp, output) }
}

/// # Safety
/// AVX-512 F/BW/VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn quantize(input: &[f32], scale: f32, zp: i32, output: &mut [i8]) {
    // The reference's loop, verbatim.
    let inv = 1.0 / scale;
    for (o, &x) in output.iter_mut().zip(input) {
        *o = reference::quantize_one(x, inv, zp);
    }
}

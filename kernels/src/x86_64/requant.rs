//! Eight-lane [`crate::requant::requantize`] and the int8 output stage.

use core::arch::x86_64::*;

use crate::requant::Requant;

/// Per-lane requantization parameters in the form the vector code needs.
#[derive(Clone, Copy)]
pub(super) struct RqV {
    pub mult: __m256i,
    /// `max(shift, 0)`.
    pub left: __m256i,
    /// `max(-shift, 0)`.
    pub right: __m256i,
}

impl RqV {
    /// The same parameters in all eight lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub fn splat(r: Requant) -> RqV {
        RqV {
            mult: _mm256_set1_epi32(r.mult),
            left: _mm256_set1_epi32(r.shift.max(0)),
            right: _mm256_set1_epi32((-r.shift).max(0)),
        }
    }

    /// Lane `l` takes `r[l]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub fn lanes(r: [Requant; 8]) -> RqV {
        let m = r.map(|x| x.mult);
        let l = r.map(|x| x.shift.max(0));
        let s = r.map(|x| (-x.shift).max(0));
        RqV {
            mult: _mm256_setr_epi32(m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]),
            left: _mm256_setr_epi32(l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]),
            right: _mm256_setr_epi32(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        }
    }
}

/// `requantize(x[l], r[l])` for each lane, bit-exact with the scalar version
/// for shifts in [-31, 30] (the range `quantize_multiplier` produces).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn requantize_v(x: __m256i, r: &RqV) -> __m256i {
    let zero = _mm256_setzero_si256();
    // Saturating left shift: the i64 shift then clamp of the scalar code. The
    // shift lost bits exactly when shifting back does not restore `x`.
    let sh = _mm256_sllv_epi32(x, r.left);
    let exact = _mm256_cmpeq_epi32(_mm256_srav_epi32(sh, r.left), x);
    // i32::MAX for x >= 0, i32::MIN for x < 0.
    let sat = _mm256_xor_si256(_mm256_set1_epi32(i32::MAX), _mm256_srai_epi32(x, 31));
    let a = _mm256_blendv_epi8(sat, sh, exact);

    // Saturating rounding doubling high multiply. The scalar
    // `(ab + nudge) / 2^31` (nudge 2^30 or 1 - 2^30, division truncating toward
    // zero) equals `floor((ab + 2^30) / 2^31)` for both signs of `ab`, which is
    // one 64-bit add and shift; bits 31..62 of the sum are the i32 result.
    let nudge = _mm256_set1_epi64x(1 << 30);
    let even = _mm256_add_epi64(_mm256_mul_epi32(a, r.mult), nudge);
    let odd = _mm256_add_epi64(
        // `vpshufd`, not a 64-bit shift: from a shift's zero high dwords LLVM
        // rebuilds the signed `vpmuldq` out of three `vpmuludq`.
        _mm256_mul_epi32(
            _mm256_shuffle_epi32::<0b11_11_01_01>(a),
            _mm256_shuffle_epi32::<0b11_11_01_01>(r.mult),
        ),
        nudge,
    );
    // Even results land in the low dword of each qword, odd ones in the high.
    let hm = _mm256_blend_epi32::<0b1010_1010>(
        _mm256_srli_epi64::<31>(even),
        _mm256_slli_epi64::<1>(odd),
    );
    let min = _mm256_set1_epi32(i32::MIN);
    let both_min = _mm256_and_si256(_mm256_cmpeq_epi32(a, min), _mm256_cmpeq_epi32(r.mult, min));
    let hm = _mm256_blendv_epi8(hm, _mm256_set1_epi32(i32::MAX), both_min);

    // Rounding divide by 2^right, half away from zero.
    let one = _mm256_set1_epi32(1);
    let mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, r.right), one);
    let rem = _mm256_and_si256(hm, mask);
    let neg = _mm256_cmpgt_epi32(zero, hm); // -1 where hm < 0
    let threshold = _mm256_sub_epi32(_mm256_srli_epi32::<1>(mask), neg);
    let up = _mm256_cmpgt_epi32(rem, threshold); // -1 where rounding up
    _mm256_sub_epi32(_mm256_srav_epi32(hm, r.right), up)
}

/// One `Requant` for all eight lanes, precomputed for [`requantize_row`]:
/// only for `shift <= 0` and `mult != i32::MIN` ([`RqRow::new`] checks), where
/// the saturating left shift and the `MIN * MIN` saturation of
/// [`requantize_v`] are no-ops. That is every multiplier below 1 from
/// `quantize_multiplier` (most layers), and it makes the output stage about
/// half as long, which matters where the accumulation is cheap (sparse rows).
#[derive(Clone, Copy)]
pub(super) struct RqRow {
    mult: __m256i,
    /// `2^right - 1`: the bits the rounding divide drops.
    mask: __m256i,
    /// `mask >> 1`.
    half: __m256i,
    /// `right` as the shift count of `vpsrad`.
    right: __m128i,
}

impl RqRow {
    /// `None` when `r` needs the general [`requantize_v`].
    #[inline]
    #[target_feature(enable = "avx2")]
    pub fn new(r: Requant) -> Option<RqRow> {
        if r.shift > 0 || r.shift < -31 || r.mult == i32::MIN {
            return None;
        }
        let right = -r.shift;
        let mask = ((1u64 << right) - 1) as u32 as i32;
        Some(RqRow {
            mult: _mm256_set1_epi32(r.mult),
            mask: _mm256_set1_epi32(mask),
            half: _mm256_set1_epi32(((mask as u32) >> 1) as i32),
            right: _mm_cvtsi32_si128(right),
        })
    }
}

/// [`requantize_v`] for a row whose constants passed [`RqRow::new`]: the same
/// high multiply and rounding divide, without the two steps that cannot fire.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn requantize_row(x: __m256i, r: &RqRow) -> __m256i {
    // shift <= 0: `x` is the left-shifted value. mult != MIN: no saturation.
    // `r.mult` holds the multiplier in every dword, so it is also the odd
    // lanes' operand without a shift.
    let nudge = _mm256_set1_epi64x(1 << 30);
    let even = _mm256_add_epi64(_mm256_mul_epi32(x, r.mult), nudge);
    // `vpshufd`, not a shift (see `requantize_v`).
    let odd = _mm256_add_epi64(
        _mm256_mul_epi32(_mm256_shuffle_epi32::<0b11_11_01_01>(x), r.mult),
        nudge,
    );
    let hm = _mm256_blend_epi32::<0b1010_1010>(
        _mm256_srli_epi64::<31>(even),
        _mm256_slli_epi64::<1>(odd),
    );
    // Rounding divide by 2^right, half away from zero (as in `requantize_v`).
    let rem = _mm256_and_si256(hm, r.mask);
    let neg = _mm256_srai_epi32::<31>(hm); // -1 where hm < 0
    let threshold = _mm256_sub_epi32(r.half, neg);
    let up = _mm256_cmpgt_epi32(rem, threshold);
    _mm256_sub_epi32(_mm256_sra_epi32(hm, r.right), up)
}

/// `clamp(requantize(acc, r) + zp, lo, hi)` per lane (i32 lanes in int8 range).
/// The `+ zp` wraps where the scalar `i32` add would overflow (release semantics;
/// outside every kernel's contract).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn output_stage(
    acc: __m256i,
    r: &RqV,
    zp: __m256i,
    lo: __m256i,
    hi: __m256i,
) -> __m256i {
    let v = _mm256_add_epi32(requantize_v(acc, r), zp);
    _mm256_min_epi32(_mm256_max_epi32(v, lo), hi)
}

/// Packs eight i32 lanes into the low 8 bytes, in order, each saturated to the
/// int8 range (`vpackss*`): lanes already in range are copied.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn pack8(v: __m256i) -> __m128i {
    let w = _mm256_packs_epi32(v, v); // [v0..3 v0..3 | v4..7 v4..7] as i16
    let b = _mm256_packs_epi16(w, w); // bytes 0..3 of each half: v0..3 | v4..7
    _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requant::{quantize_multiplier, requantize};

    #[test]
    fn requantize_v_matches_scalar() {
        if !std::is_x86_feature_detected!("avx2") {
            eprintln!("SKIP requantize_v: no avx2");
            return;
        }
        let mut rqs = vec![
            Requant {
                mult: i32::MIN,
                shift: 0,
            },
            Requant {
                mult: i32::MAX,
                shift: 30,
            },
            Requant {
                mult: 1 << 30,
                shift: -31,
            },
            Requant { mult: 0, shift: 0 },
        ];
        for e in -40..40 {
            rqs.push(quantize_multiplier(1.37f64 * 2f64.powi(e)));
            rqs.push(quantize_multiplier(2f64.powi(e)));
        }
        let mut s = 0x1234_5678_9abc_def0u64;
        let mut xs: Vec<i32> = vec![
            0,
            1,
            -1,
            2,
            -2,
            3,
            -3,
            i32::MIN,
            i32::MAX,
            i32::MIN + 1,
            1 << 30,
            -(1 << 30),
        ];
        for _ in 0..4000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let sh = (s >> 59) as u32;
            xs.push(((s >> 8) as i32) >> sh);
        }
        // Inputs whose product with an odd multiplier lands on each side of every
        // rounding boundary of the high multiply (`a * mult = 2^30 + d mod 2^31`):
        // random inputs almost never hit these.
        let mut odd_rqs = vec![];
        for mult in [
            (1 << 30) + 1,
            (1 << 30) + 12345,
            i32::MAX,
            0x5fff_ffff,
            0x4000_0003,
        ] {
            // Inverse of an odd number mod 2^32 by Newton's iteration.
            let mut inv = mult as u32;
            for _ in 0..5 {
                inv = inv.wrapping_mul(2u32.wrapping_sub((mult as u32).wrapping_mul(inv)));
            }
            for d in -2i64..=2 {
                let a = ((1i64 << 30) + d) as u32 as u64 * inv as u64 % (1 << 31);
                for shift in [0, -1, -7, -31] {
                    odd_rqs.push((
                        Requant { mult, shift },
                        [a as i32, (a as i64 - (1 << 31)) as i32],
                    ));
                }
            }
        }
        for (r, pair) in &odd_rqs {
            let x = [
                pair[0],
                pair[1],
                -pair[0],
                pair[0] / 3,
                0,
                1,
                -1,
                pair[1] / 5,
            ];
            let mut got = [0i32; 8];
            // SAFETY: AVX2 was detected above; `x` and `got` hold 8 i32.
            unsafe {
                let v = requantize_v(
                    _mm256_loadu_si256(x.as_ptr() as *const __m256i),
                    &RqV::splat(*r),
                );
                _mm256_storeu_si256(got.as_mut_ptr() as *mut __m256i, v);
            }
            for l in 0..8 {
                assert_eq!(got[l], requantize(x[l], *r), "x={} r={r:?}", x[l]);
            }
        }
        for r in &rqs {
            for chunk in xs.chunks_exact(8) {
                let x: [i32; 8] = chunk.try_into().unwrap();
                let mut got = [0i32; 8];
                // SAFETY: AVX2 was detected above; `got` holds 8 i32.
                unsafe {
                    let v = requantize_v(
                        _mm256_loadu_si256(x.as_ptr() as *const __m256i),
                        &RqV::splat(*r),
                    );
                    _mm256_storeu_si256(got.as_mut_ptr() as *mut __m256i, v);
                }
                for l in 0..8 {
                    assert_eq!(got[l], requantize(x[l], *r), "x={} r={r:?}", x[l]);
                }
            }
        }
        // The row form on every case it accepts (multipliers below 1, and the
        // odd ones at the rounding boundaries).
        let mut row_cases = 0;
        let odd = odd_rqs.iter().map(|(r, p)| {
            let x = vec![p[0], p[1], -p[0], p[0] / 3, 0, 1, -1, p[1] / 5];
            (*r, x)
        });
        for (r, xs) in rqs.iter().map(|r| (*r, xs.clone())).chain(odd) {
            // SAFETY: AVX2 was detected above.
            let Some(row) = (unsafe { RqRow::new(r) }) else {
                continue;
            };
            for chunk in xs.chunks(8) {
                let mut x = [0i32; 8];
                x[..chunk.len()].copy_from_slice(chunk);
                let mut got = [0i32; 8];
                // SAFETY: AVX2 was detected above; `x` and `got` hold 8 i32.
                unsafe {
                    let v = requantize_row(_mm256_loadu_si256(x.as_ptr() as *const __m256i), &row);
                    _mm256_storeu_si256(got.as_mut_ptr() as *mut __m256i, v);
                }
                for l in 0..8 {
                    assert_eq!(got[l], requantize(x[l], r), "row x={} r={r:?}", x[l]);
                }
                row_cases += 1;
            }
        }
        assert!(row_cases > 1000, "the row form was hardly tested");
    }
}

//! Fixed-point requantization (gemmlowp / TFLite `MultiplyByQuantizedMultiplier`).
//!
//! A real multiplier `m` in (0, 2^31) is stored as a Q31 `mult` in [2^30, 2^31)
//! and a power-of-two `shift` (positive = left), so that
//! `m ~= mult * 2^(shift - 31)`. Rounding follows TFLite's reference exactly:
//! the doubling high multiply rounds exact halves towards +infinity (its
//! nudge is `2^30` for positive and `1 - 2^30` for negative products, then
//! the division truncates), and the final power-of-two division rounds half
//! away from zero. SIMD paths reproduce both (NEON's `sqrdmulh` plus fix-ups).

/// Per-channel requantization parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(C)]
pub struct Requant {
    pub mult: i32,
    pub shift: i32,
}

/// Splits a positive real multiplier into Q31 mantissa and exponent.
///
/// Contract: `real` finite and >= 0; returns `mult = 0` for `real == 0` or values
/// below 2^-31 (the product then rounds to zero anyway). Exponents are clamped to
/// [-31, 30] so that `requantize` never shifts out of range.
pub fn quantize_multiplier(real: f64) -> Requant {
    if real.is_nan() || real <= 0.0 {
        return Requant { mult: 0, shift: 0 };
    }
    if !real.is_finite() {
        return Requant {
            mult: i32::MAX,
            shift: 30,
        };
    }
    // real = q * 2^e with q in [0.5, 1).
    let (q, mut e) = libm::frexp(real);
    let mut m = libm::round(q * (1u64 << 31) as f64) as i64;
    if m == 1 << 31 {
        m /= 2;
        e += 1;
    }
    if e < -31 {
        return Requant { mult: 0, shift: 0 };
    }
    if e > 30 {
        return Requant {
            mult: i32::MAX,
            shift: 30,
        };
    }
    Requant {
        mult: m as i32,
        shift: e,
    }
}

/// `round(a * b / 2^31)` (exact halves round towards +infinity, TFLite's
/// `SaturatingRoundingDoublingHighMul`), saturating the single overflow case
/// `i32::MIN * i32::MIN`.
#[inline(always)]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// Arithmetic right shift by `exponent` rounding half away from zero.
#[inline(always)]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    debug_assert!((0..=31).contains(&exponent));
    let mask: i64 = (1i64 << exponent) - 1;
    let remainder = (x as i64) & mask;
    let threshold = (mask >> 1) + if x < 0 { 1 } else { 0 };
    ((x as i64 >> exponent) + if remainder > threshold { 1 } else { 0 }) as i32
}

/// `x * mult * 2^(shift-31)`, TFLite `MultiplyByQuantizedMultiplier`.
///
/// Overflow: for `shift > 0` the left shift saturates like TFLite's 32-bit
/// implementation would wrap; callers keep `|x| < 2^(31-shift)` (true for all
/// Strix ops: accumulators are bounded per kernel and multipliers are < 1 except
/// in elementwise ops, whose inputs are < 2^21).
#[inline(always)]
pub fn requantize(x: i32, r: Requant) -> i32 {
    let left = if r.shift > 0 { r.shift } else { 0 };
    let right = if r.shift > 0 { 0 } else { -r.shift };
    let shifted = (x as i64) << left;
    let shifted = shifted.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(shifted, r.mult),
        right,
    )
}

/// Saturates to the int8 range `[lo, hi]` (activation bounds fused into the op).
#[inline(always)]
pub fn clamp_i8(x: i32, lo: i8, hi: i8) -> i8 {
    x.clamp(lo as i32, hi as i32) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplier_roundtrip() {
        for &m in &[
            1e-6, 0.001, 0.1234, 0.5, 0.75, 0.999999, 1.0, 1.5, 3.0, 1000.0,
        ] {
            let r = quantize_multiplier(m);
            let back = r.mult as f64 * 2f64.powi(r.shift - 31);
            assert!((back - m).abs() / m < 1e-9, "{m} -> {r:?} -> {back}");
        }
        assert_eq!(quantize_multiplier(0.0).mult, 0);
        assert_eq!(quantize_multiplier(f64::NAN).mult, 0);
    }

    #[test]
    fn requantize_matches_real_rounding() {
        // The doubling high multiply rounds exact halves towards +infinity
        // (TFLite semantics) ...
        let half = quantize_multiplier(0.5);
        assert_eq!(
            half,
            Requant {
                mult: 1 << 30,
                shift: 0
            }
        );
        assert_eq!(requantize(3, half), 2);
        assert_eq!(requantize(-3, half), -1);
        assert_eq!(requantize(5, half), 3);
        assert_eq!(requantize(-5, half), -2);
        // ... while the final shift rounds half away from zero.
        let quarter = quantize_multiplier(0.25);
        assert_eq!(
            quarter,
            Requant {
                mult: 1 << 30,
                shift: -1
            }
        );
        assert_eq!(requantize(6, quarter), 2);
        assert_eq!(requantize(-6, quarter), -2);
        let r = quantize_multiplier(0.0123);
        for x in [-100000, -12345, -1, 0, 1, 777, 99999] {
            let exact = x as f64 * 0.0123;
            assert!((requantize(x, r) as f64 - exact).abs() <= 0.5 + 1e-6);
        }
    }

    #[test]
    fn rdpot_edges() {
        assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
        assert_eq!(rounding_divide_by_pot(-7, 0), -7);
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
    }
}

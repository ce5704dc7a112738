//! Four-lane [`crate::requant::requantize`] and the int8 output stage on
//! Advanced SIMD, shared by the non-gemm aarch64 kernels.
//!
//! `sqshl` is the saturating left shift (the scalar i64 shift then clamp),
//! `sqrdmulh` is `saturating_rounding_doubling_high_mul` (both compute
//! `floor((a * b + 2^30) / 2^31)` and saturate only `MIN * MIN`), and
//! `sqadd` of the sign fixup then `srshl` is `rounding_divide_by_pot` (round
//! half away from zero; gemmlowp's NEON formulation). Bit-exact for shifts in
//! [-31, 30], the range `quantize_multiplier` produces.

use core::arch::aarch64::*;

use crate::requant::Requant;

/// One [`Requant`] splatted to four lanes.
#[derive(Clone, Copy)]
pub(super) struct RqV {
    mult: int32x4_t,
    /// `max(shift, 0)`.
    left: int32x4_t,
    /// `-max(-shift, 0)` (`srshl` by a negative amount shifts right).
    right: int32x4_t,
    /// `shift > 0`: skip the (no-op) left shift otherwise.
    has_left: bool,
    /// `shift < 0`: the sign fix-up is `x >> 31` (see `requant4`).
    has_right: bool,
}

impl RqV {
    #[inline(always)]
    pub fn splat(r: Requant) -> RqV {
        // SAFETY: Advanced SIMD is baseline on aarch64.
        unsafe {
            RqV {
                mult: vdupq_n_s32(r.mult),
                left: vdupq_n_s32(r.shift.max(0)),
                right: vdupq_n_s32(-(-r.shift).max(0)),
                has_left: r.shift > 0,
                has_right: r.shift < 0,
            }
        }
    }
}

/// `requantize(x[l], r)` per lane.
#[inline(always)]
pub(super) fn requant4(x: int32x4_t, r: &RqV) -> int32x4_t {
    // SAFETY: Advanced SIMD is baseline on aarch64; register-only operations.
    unsafe {
        let x = if r.has_left { vqshlq_s32(x, r.left) } else { x };
        let x = vqrdmulhq_s32(x, r.mult);
        // -1 where x < 0 and the shift is non-zero: turns srshl's
        // "half up" into "half away from zero". With a right shift that
        // is `x >> 31`, added by one `ssra` (`sqrdmulh` never returns
        // `i32::MIN`, so the plain add cannot wrap where `sqadd` would
        // saturate); without one, `srshl` by 0 is the identity.
        if r.has_right {
            vrshlq_s32(vsraq_n_s32::<31>(x, x), r.right)
        } else {
            x
        }
    }
}

/// Output zero point and activation bounds in the form the packers need.
#[derive(Clone, Copy)]
pub(super) struct OutQ {
    zp: int16x8_t,
    lo: int8x16_t,
    hi: int8x16_t,
}

impl OutQ {
    /// Contract: `zp` in the int8 range (callers check and otherwise run the
    /// reference) and `lo <= hi`.
    #[inline(always)]
    pub fn new(zp: i32, lo: i8, hi: i8) -> OutQ {
        debug_assert!((-128..=127).contains(&zp));
        // SAFETY: Advanced SIMD is baseline on aarch64.
        unsafe {
            OutQ {
                zp: vdupq_n_s16(zp as i16),
                lo: vdupq_n_s8(lo),
                hi: vdupq_n_s8(hi),
            }
        }
    }
}

/// `clamp(v + zp, lo, hi)` for eight i32 values already requantized (`a`:
/// lanes 0..4, `b`: 4..8), as int8.
///
/// Exact with the scalar `clamp_i8(v + zp, lo, hi)` (while `v + zp` does not
/// overflow i32, the reference's own bound): the saturating narrowings and
/// the saturating i16 add clamp to ranges that contain `[lo, hi]`; a value
/// saturated to i16 stays beyond the int8 range after adding an int8 `zp`, so
/// the final clamp gives the same bound either way.
#[inline(always)]
fn narrow8(a: int32x4_t, b: int32x4_t, o: &OutQ) -> int16x8_t {
    // SAFETY: Advanced SIMD is baseline on aarch64; register-only operations.
    unsafe { vqaddq_s16(vqmovn_high_s32(vqmovn_s32(a), b), o.zp) }
}

/// Sixteen requantized outputs (`acc[0]` lanes 0..4, ...) packed to int8.
#[inline(always)]
pub(super) fn pack16(acc: [int32x4_t; 4], r: &RqV, o: &OutQ) -> int8x16_t {
    let lo = narrow8(requant4(acc[0], r), requant4(acc[1], r), o);
    let hi = narrow8(requant4(acc[2], r), requant4(acc[3], r), o);
    // SAFETY: Advanced SIMD is baseline on aarch64; register-only operations.
    unsafe {
        let v = vqmovn_high_s16(vqmovn_s16(lo), hi);
        vminq_s8(vmaxq_s8(v, o.lo), o.hi)
    }
}

/// Eight requantized outputs packed to int8.
#[inline(always)]
pub(super) fn pack8(acc: [int32x4_t; 2], r: &RqV, o: &OutQ) -> int8x8_t {
    let v = narrow8(requant4(acc[0], r), requant4(acc[1], r), o);
    // SAFETY: Advanced SIMD is baseline on aarch64; register-only operations.
    unsafe { vmin_s8(vmax_s8(vqmovn_s16(v), vget_low_s8(o.lo)), vget_low_s8(o.hi)) }
}

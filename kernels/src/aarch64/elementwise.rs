//! `qs8_vadd`, `qs8_vmul` and `qs8_requantize_copy` on baseline aarch64
//! Advanced SIMD, sixteen elements per step through the bit-exact vector
//! requantization of [`super::requant`].
//!
//! The binary ops vectorise the common case of three equal shapes (plain
//! contiguous arrays) and run the reference for any broadcast. `x - zp` is
//! formed exactly in i16 (`ssubl`, |x - zp| <= 255), so zero points must be
//! in the int8 range (always true for Strix models; otherwise the reference
//! runs). A length that is not a multiple of 16 ends with one block that
//! overlaps the previous one (outputs are recomputed with identical values);
//! arrays shorter than 16 go through zero-padded stack copies.

use core::arch::aarch64::*;

use super::requant::{pack16, requant4, OutQ, RqV};
use crate::reference::{self, QAddParams, QMulParams, QADD_LEFT_SHIFT};
use crate::requant::Requant;
use crate::shape::Dims;

/// Whether every zero point is an int8 value.
fn int8_zps(zps: &[i32]) -> bool {
    zps.iter().all(|z| (-128..=127).contains(z))
}

/// The element count when no operand broadcasts.
fn same_shape(ad: &Dims, bd: &Dims, od: &Dims) -> Option<usize> {
    (ad == od && bd == od).then(|| od.count())
}

/// Runs `block(a, b, out)` on 16-element blocks covering `len` elements:
/// whole blocks, then one ending at `len`; below 16 elements, once on
/// zero-padded copies.
///
/// # Safety
/// `a` and `b` hold `len` readable bytes, `out` `len` writable ones; `block`
/// reads 16 bytes at each input pointer and writes 16 at the output one.
#[inline(always)]
unsafe fn blocks16(
    len: usize,
    a: *const i8,
    b: *const i8,
    out: *mut i8,
    mut block: impl FnMut(*const i8, *const i8, *mut i8),
) {
    if len < 16 {
        let (mut ta, mut tb, mut to) = ([0i8; 16], [0i8; 16], [0i8; 16]);
        core::ptr::copy_nonoverlapping(a, ta.as_mut_ptr(), len);
        core::ptr::copy_nonoverlapping(b, tb.as_mut_ptr(), len);
        block(ta.as_ptr(), tb.as_ptr(), to.as_mut_ptr());
        core::ptr::copy_nonoverlapping(to.as_ptr(), out, len);
        return;
    }
    let mut i = 0;
    while i + 16 <= len {
        block(a.add(i), b.add(i), out.add(i));
        i += 16;
    }
    if i < len {
        let i = len - 16;
        block(a.add(i), b.add(i), out.add(i));
    }
}

/// Sixteen `x - zp` as two i16x8 vectors (exact for int8 `zp`).
#[inline(always)]
unsafe fn centred(p: *const i8, zp: int8x16_t) -> [int16x8_t; 2] {
    let x = vld1q_s8(p);
    [
        vsubl_s8(vget_low_s8(x), vget_low_s8(zp)),
        vsubl_high_s8(x, zp),
    ]
}

/// Advanced SIMD [`reference::qs8_vadd`]; same contract, same output. Runs on
/// every aarch64 CPU.
#[allow(non_snake_case)]
pub fn qs8_vadd__neon(
    p: &QAddParams,
    a: &[i8],
    ad: &Dims,
    b: &[i8],
    bd: &Dims,
    out: &mut [i8],
    od: &Dims,
) {
    let len = match same_shape(ad, bd, od) {
        Some(len) if int8_zps(&[p.a_zp, p.b_zp, p.out_zp]) => len,
        _ => return reference::qs8_vadd(p, a, ad, b, bd, out, od),
    };
    let (a, b, out) = (&a[..len], &b[..len], &mut out[..len]);
    if len == 0 {
        return;
    }
    assert!(p.act_min <= p.act_max, "qs8_vadd: act_min > act_max");
    let (ra, rb, ro) = (RqV::splat(p.a_rq), RqV::splat(p.b_rq), RqV::splat(p.out_rq));
    let o = OutQ::new(p.out_zp, p.act_min, p.act_max);
    // SAFETY: Advanced SIMD is baseline; the three slices hold `len` bytes.
    unsafe {
        let (za, zb) = (vdupq_n_s8(p.a_zp as i8), vdupq_n_s8(p.b_zp as i8));
        // `(x - zp) << 20` as `((x - zp) << 4)` in i16 (|.| <= 4080), then
        // `sshll #16` to i32.
        const _: () = assert!(QADD_LEFT_SHIFT == 20);
        let widen = |v: int16x8_t| {
            let v = vshlq_n_s16::<4>(v);
            [
                vshll_n_s16::<16>(vget_low_s16(v)),
                vshll_high_n_s16::<16>(v),
            ]
        };
        blocks16(
            len,
            a.as_ptr(),
            b.as_ptr(),
            out.as_mut_ptr(),
            |pa, pb, po| {
                let xa = centred(pa, za);
                let xb = centred(pb, zb);
                let mut sum = [vdupq_n_s32(0); 4];
                for h in 0..2 {
                    let [a0, a1] = widen(xa[h]);
                    let [b0, b1] = widen(xb[h]);
                    sum[2 * h] = vaddq_s32(requant4(a0, &ra), requant4(b0, &rb));
                    sum[2 * h + 1] = vaddq_s32(requant4(a1, &ra), requant4(b1, &rb));
                }
                vst1q_s8(po, pack16(sum, &ro, &o));
            },
        );
    }
}

/// Advanced SIMD [`reference::qs8_vmul`]; same contract, same output. Runs on
/// every aarch64 CPU.
#[allow(non_snake_case)]
pub fn qs8_vmul__neon(
    p: &QMulParams,
    a: &[i8],
    ad: &Dims,
    b: &[i8],
    bd: &Dims,
    out: &mut [i8],
    od: &Dims,
) {
    let len = match same_shape(ad, bd, od) {
        Some(len) if int8_zps(&[p.a_zp, p.b_zp, p.out_zp]) => len,
        _ => return reference::qs8_vmul(p, a, ad, b, bd, out, od),
    };
    let (a, b, out) = (&a[..len], &b[..len], &mut out[..len]);
    if len == 0 {
        return;
    }
    assert!(p.act_min <= p.act_max, "qs8_vmul: act_min > act_max");
    let r = RqV::splat(p.rq);
    let o = OutQ::new(p.out_zp, p.act_min, p.act_max);
    // SAFETY: Advanced SIMD is baseline; the three slices hold `len` bytes.
    unsafe {
        let (za, zb) = (vdupq_n_s8(p.a_zp as i8), vdupq_n_s8(p.b_zp as i8));
        blocks16(
            len,
            a.as_ptr(),
            b.as_ptr(),
            out.as_mut_ptr(),
            |pa, pb, po| {
                let xa = centred(pa, za);
                let xb = centred(pb, zb);
                // Exact i16 x i16 -> i32 products (|p| <= 65025).
                let prod = [
                    vmull_s16(vget_low_s16(xa[0]), vget_low_s16(xb[0])),
                    vmull_high_s16(xa[0], xb[0]),
                    vmull_s16(vget_low_s16(xa[1]), vget_low_s16(xb[1])),
                    vmull_high_s16(xa[1], xb[1]),
                ];
                vst1q_s8(po, pack16(prod, &r, &o));
            },
        );
    }
}

/// Advanced SIMD [`reference::qs8_requantize_copy`]; same contract, same
/// output (`min(input.len(), output.len())` elements). Runs on every aarch64
/// CPU.
#[allow(non_snake_case)]
pub fn qs8_requantize_copy__neon(
    input: &[i8],
    in_zp: i32,
    rq: Requant,
    out_zp: i32,
    output: &mut [i8],
) {
    if !int8_zps(&[in_zp, out_zp]) {
        return reference::qs8_requantize_copy(input, in_zp, rq, out_zp, output);
    }
    let len = input.len().min(output.len());
    if len == 0 {
        return;
    }
    let r = RqV::splat(rq);
    let o = OutQ::new(out_zp, -128, 127);
    // SAFETY: Advanced SIMD is baseline; both slices hold at least `len`
    // bytes (the unused second input pointer is `input` again).
    unsafe {
        let zi = vdupq_n_s8(in_zp as i8);
        let p = input.as_ptr();
        blocks16(len, p, p, output.as_mut_ptr(), |pi, _, po| {
            let x = centred(pi, zi);
            let v = [
                vmovl_s16(vget_low_s16(x[0])),
                vmovl_high_s16(x[0]),
                vmovl_s16(vget_low_s16(x[1])),
                vmovl_high_s16(x[1]),
            ];
            vst1q_s8(po, pack16(v, &r, &o));
        });
    }
}

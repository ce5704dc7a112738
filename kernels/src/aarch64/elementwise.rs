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

/// [`crate::reference::qs8_lut`] with `tbl`/`tbx`: the table as four 64-byte
/// quarters; per 16 bytes one `tbl` of the first quarter on `x ^ 0x80` (the
/// table index) and three `tbx` of the others on the index minus 64, 128 and
/// 192 (lanes out of a quarter's range keep what an earlier quarter wrote:
/// XNNPACK's `x8-lut` NEON form). Tails go through a 16-byte buffer.
#[allow(non_snake_case)]
pub fn qs8_lut__neon(table: &[i8; 256], input: &[i8], output: &mut [i8]) {
    let n = input.len().min(output.len());
    // SAFETY: NEON is baseline on aarch64; loads read `table` (256 bytes) and
    // 16-byte blocks of `input` below `n` (or the local buffer); stores write
    // 16-byte blocks of `output` below `n` (or the local buffer).
    unsafe {
        let t = table.as_ptr();
        let q = |i: usize| {
            int8x16x4_t(
                vld1q_s8(t.add(64 * i)),
                vld1q_s8(t.add(64 * i + 16)),
                vld1q_s8(t.add(64 * i + 32)),
                vld1q_s8(t.add(64 * i + 48)),
            )
        };
        let (t0, t1, t2, t3) = (q(0), q(1), q(2), q(3));
        let (bias, step) = (vdupq_n_u8(0x80), vdupq_n_u8(64));
        let f = |x: int8x16_t| {
            let i0 = veorq_u8(vreinterpretq_u8_s8(x), bias);
            let i1 = vsubq_u8(i0, step);
            let i2 = vsubq_u8(i1, step);
            let i3 = vsubq_u8(i2, step);
            let r = vqtbl4q_s8(t0, i0);
            let r = vqtbx4q_s8(r, t1, i1);
            let r = vqtbx4q_s8(r, t2, i2);
            vqtbx4q_s8(r, t3, i3)
        };
        let mut i = 0;
        while i + 16 <= n {
            vst1q_s8(
                output.as_mut_ptr().add(i),
                f(vld1q_s8(input.as_ptr().add(i))),
            );
            i += 16;
        }
        if i < n {
            let mut buf = [0i8; 16];
            buf[..n - i].copy_from_slice(&input[i..n]);
            let v = f(vld1q_s8(buf.as_ptr()));
            vst1q_s8(buf.as_mut_ptr(), v);
            output[i..n].copy_from_slice(&buf[..n - i]);
        }
    }
}

/// [`crate::reference::qs8_quantize`] on Advanced SIMD, 16 values per step:
/// `fmul` by the same `1 / scale`, `fcvtas` (round half away from zero; NaN
/// to 0, out-of-range values saturate, which the final clamp maps where the
/// reference's clamp to +-1e6 does), `sqadd` of the zero point and
/// saturating narrows (the clamp to the int8 range). Zero points outside the
/// int8 range run the reference; tails go through a 16-value buffer.
#[allow(non_snake_case)]
pub fn qs8_quantize__neon(input: &[f32], scale: f32, zp: i32, output: &mut [i8]) {
    if !(-128..=127).contains(&zp) {
        return reference::qs8_quantize(input, scale, zp, output);
    }
    let inv = 1.0 / scale;
    let n = input.len().min(output.len());
    // SAFETY: NEON is baseline on aarch64; loads read 16 floats of `input`
    // below `n` (or the local buffer), stores write 16 bytes of `output`
    // below `n` (or the local buffer).
    unsafe {
        let (vinv, vzp) = (vdupq_n_f32(inv), vdupq_n_s32(zp));
        let f = |p: *const f32| {
            let q = |i: usize| {
                vqaddq_s32(
                    vcvtaq_s32_f32(vmulq_f32(vld1q_f32(p.add(4 * i)), vinv)),
                    vzp,
                )
            };
            let lo = vqmovn_high_s32(vqmovn_s32(q(0)), q(1));
            let hi = vqmovn_high_s32(vqmovn_s32(q(2)), q(3));
            vqmovn_high_s16(vqmovn_s16(lo), hi)
        };
        let mut i = 0;
        while i + 16 <= n {
            vst1q_s8(output.as_mut_ptr().add(i), f(input.as_ptr().add(i)));
            i += 16;
        }
        if i < n {
            let mut buf = [0f32; 16];
            buf[..n - i].copy_from_slice(&input[i..n]);
            let mut out = [0i8; 16];
            vst1q_s8(out.as_mut_ptr(), f(buf.as_ptr()));
            output[i..n].copy_from_slice(&out[..n - i]);
        }
    }
}

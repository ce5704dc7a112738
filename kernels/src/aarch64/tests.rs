//! Bit-exactness of the aarch64 gemm paths against the reference.

use super::*;
use crate::Isa;

use crate::arm_shared::gemm_check;
use gemm_check::{available_or_skip, check_gemm, check_required_isa};

#[test]
fn detection_matches_strix_require_isa() {
    check_required_isa(&[Isa::Neon, Isa::Dotprod, Isa::I8mm]);
}

#[test]
fn gemm_nt_neon_matches_reference() {
    if available_or_skip("qs8_gemm_nt__neon", Isa::Neon) {
        check_gemm(
            "qs8_gemm_nt__neon",
            qs8_gemm_nt__neon,
            qs8_gemm_nt_f32out__neon,
        );
    }
}

#[test]
fn gemm_nt_dotprod_matches_reference() {
    if available_or_skip("qs8_gemm_nt__dotprod", Isa::Dotprod) {
        check_gemm(
            "qs8_gemm_nt__dotprod",
            qs8_gemm_nt__dotprod,
            qs8_gemm_nt_f32out__dotprod,
        );
    }
}

#[test]
fn gemm_nt_i8mm_matches_reference() {
    if available_or_skip("qs8_gemm_nt__i8mm", Isa::I8mm) {
        check_gemm(
            "qs8_gemm_nt__i8mm",
            qs8_gemm_nt__i8mm,
            qs8_gemm_nt_f32out__i8mm,
        );
    }
}

/// The vector output stage (`put_row4`) against the scalar one (`put`, the
/// reference's expression) over the whole parameter space of `requantize`.
#[test]
fn vector_requant_matches_scalar() {
    use crate::arm_shared::sink::{I8Sink, Sink};
    use crate::reference::QOut;
    let mut rng = gemm_check::Rng::new(99);
    let special = [
        i32::MIN,
        i32::MIN + 1,
        -(1 << 30),
        -65536,
        -32768,
        -1,
        0,
        1,
        32767,
        1 << 30,
        i32::MAX,
    ];
    let mults = [
        0,
        1,
        1 << 30,
        (1 << 30) + 1,
        i32::MAX - 1,
        i32::MAX,
        i32::MIN,
        -1,
    ];
    for it in 0..40_000u32 {
        let shift = (it % 62) as i32 - 31;
        let mult = if it % 3 == 0 {
            mults[(it / 3) as usize % mults.len()]
        } else {
            rng.next() as i32
        };
        let lo = rng.range(-128, 127) as i8;
        let hi = rng.range(lo as i64, 127) as i8;
        let q = QOut {
            out_zp: rng.range(-128, 127) as i32,
            act_min: lo,
            act_max: hi,
        };
        let rq = [Requant { mult, shift }];
        let acc: [i32; 4] = core::array::from_fn(|_| match rng.range(0, 2) {
            0 => special[rng.range(0, special.len() as i64 - 1) as usize],
            1 => (rng.next() as i32) >> rng.range(0, 31),
            _ => rng.next() as i32,
        });
        // Outside `requantize`'s contract `requantize(acc) + out_zp` may overflow
        // (a debug-build panic in the reference): not an output to compare.
        if acc.iter().any(|&x| {
            crate::requant::requantize(x, rq[0])
                .checked_add(q.out_zp)
                .is_none()
        }) {
            continue;
        }
        let (mut want, mut got) = ([0i8; 4], [0i8; 4]);
        let mut s = I8Sink {
            rq: &rq,
            q: &q,
            out: &mut want,
            rs: 0,
            cs: 1,
        };
        for (c, v) in acc.into_iter().enumerate() {
            s.put(0, c, v);
        }
        let mut s = I8Sink {
            rq: &rq,
            q: &q,
            out: &mut got,
            rs: 0,
            cs: 1,
        };
        s.put_row4(0, 0, acc);
        assert_eq!(got, want, "acc={acc:?} mult={mult} shift={shift} q={q:?}");
    }
}

/// The output stage of the non-gemm kernels (`requant::pack16`: vector
/// requantization, saturating narrowing, i16 zero-point add, int8 clamp)
/// against the reference expression over the whole parameter space of
/// `requantize` and every int8 zero point.
#[test]
fn pack16_matches_scalar() {
    use super::requant::{pack16, OutQ, RqV};
    use crate::requant::{clamp_i8, requantize};
    use core::arch::aarch64::*;
    let mut rng = gemm_check::Rng::new(7);
    let special = [
        i32::MIN,
        i32::MIN + 1,
        -(1 << 30),
        -65536,
        -32769,
        -32768,
        -129,
        -1,
        0,
        1,
        128,
        32767,
        32768,
        1 << 30,
        i32::MAX,
    ];
    for it in 0..20_000u32 {
        let shift = (it % 62) as i32 - 31;
        let mult = match it % 4 {
            0 => [0, 1, 1 << 30, (1 << 30) + 1, i32::MAX, i32::MIN, -1][(it / 4) as usize % 7],
            _ => rng.next() as i32,
        };
        let r = Requant { mult, shift };
        let lo = rng.range(-128, 127) as i8;
        let hi = rng.range(lo as i64, 127) as i8;
        let zp = rng.range(-128, 127) as i32;
        let acc: [i32; 16] = core::array::from_fn(|_| match rng.range(0, 2) {
            0 => special[rng.range(0, special.len() as i64 - 1) as usize],
            1 => (rng.next() as i32) >> rng.range(0, 31),
            _ => rng.next() as i32,
        });
        // `requantize(x) + zp` overflowing i32 is outside the reference contract.
        if acc
            .iter()
            .any(|&x| requantize(x, r).checked_add(zp).is_none())
        {
            continue;
        }
        let want = acc.map(|x| clamp_i8(requantize(x, r) + zp, lo, hi));
        let mut got = [0i8; 16];
        // SAFETY: Advanced SIMD is baseline; `acc` holds 16 i32, `got` 16 bytes.
        unsafe {
            let v = core::array::from_fn(|i| vld1q_s32(acc.as_ptr().add(4 * i)));
            vst1q_s8(
                got.as_mut_ptr(),
                pack16(v, &RqV::splat(r), &OutQ::new(zp, lo, hi)),
            );
        }
        assert_eq!(got, want, "acc={acc:?} r={r:?} zp={zp} lo={lo} hi={hi}");
    }
}

//! aarch64 paths: the int8 NT gemm ([`crate::reference::qs8_gemm_nt`]) in
//! three instruction sets, and baseline Advanced SIMD versions of the other
//! table ops (`dwconv`, `elementwise`, `pool`: depthwise convolution, add /
//! mul / requantize-copy, max / average pooling, sharing the bit-exact
//! output stage of `requant` and the zero-point-padded row ring of
//! [`crate::arm_shared::dwrows`]; installed in all three aarch64 rows).
//!
//! Gemm: three instruction sets, each a safe `pub fn` with exactly the reference's
//! signature, so that the kernel table can install them:
//!
//! * `__neon`: baseline ARMv8-A Advanced SIMD, `smull`/`smull2` then `sadalp`
//!   (products are widened to i32 after every single int8 product pair, so
//!   `-128 * -128` cannot overflow an i16 lane, unlike `smull` + `smlal`);
//! * `__dotprod`: `sdot` (FEAT_DotProd), through `asm!` since the intrinsic is
//!   unstable;
//! * `__i8mm`: `smmla` (FEAT_I8MM), a 2x8 by 8x2 int8 block product per
//!   instruction, through `asm!`.
//!
//! All paths read `a` and `b` in place (no packing, no allocation): k tails are
//! zero-padded into stack buffers, m/n edges use smaller register tiles. The i32
//! accumulator is the reference's exactly (integer sums are associative), and
//! the output stage is the reference's expression per output, so results are
//! bit-identical for every input within the reference contract.
//!
//! **Features.** `__neon` runs on every aarch64 CPU (Advanced SIMD is
//! mandatory in the aarch64 ABIs). The `__dotprod` and `__i8mm` wrappers are
//! meant to be installed only where [`crate::Isa::Dotprod`] /
//! [`crate::Isa::I8mm`] `.available()`; to stay sound when called anyway (the
//! kernel table's row contract), each re-checks its feature (with `std`, a
//! cached `is_aarch64_feature_detected!`; without, the compile-time target
//! features) and otherwise runs the bit-identical `__neon` path.

mod dotprod;
mod dwconv;
mod dwconv_hwc;
mod elementwise;
mod gemm_4x16c4;
mod i8mm;
mod neon;
mod pool;
mod requant;
mod sparse;

pub(crate) use crate::arm_shared::sink::Sink;
use crate::arm_shared::sink::{check_inputs, F32Sink, I8Sink};
use crate::reference::QOut;
use crate::requant::Requant;

pub use dwconv::qs8_dwconv2d__neon;
pub use elementwise::{
    qs8_lut__neon, qs8_quantize__neon, qs8_requantize_copy__neon, qs8_vadd__neon, qs8_vmul__neon,
};
pub use gemm_4x16c4::{
    qs8_gemm_4x16c4__dotprod, qs8_gemm_4x16c4__neon, qs8_gemm_4x16c4_f32out__dotprod,
    qs8_gemm_4x16c4_f32out__neon,
};
pub use pool::{qs8_avgpool2d__neon, qs8_maxpool2d__neon};
pub use sparse::{qs8_gemm_nt_sparse__dotprod, qs8_gemm_nt_sparse__neon};

/// Whether the CPU implements FEAT_DotProd.
#[inline(always)]
pub(crate) fn has_dotprod() -> bool {
    #[cfg(feature = "std")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(target_feature = "dotprod")
    }
}

/// Whether the CPU implements FEAT_I8MM.
#[inline(always)]
fn has_i8mm() -> bool {
    #[cfg(feature = "std")]
    {
        std::arch::is_aarch64_feature_detected!("i8mm")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(target_feature = "i8mm")
    }
}

/// Register tile height/width for `rem` remaining rows/columns: 4, 2 or 1.
#[inline(always)]
pub(crate) fn pick(rem: usize) -> usize {
    if rem >= 4 {
        4
    } else if rem >= 2 {
        2
    } else {
        1
    }
}

/// Calls `$tile::<MR, NR, _>($args)` for the runtime `(mr, nr)` in {4, 2, 1}^2.
/// The reduction tail `off..k` (`0 < k - off < 16`) of tile rows `ap` of
/// `a` and `bp` of `b`, as one 16-byte vector per row whose lane products
/// sum to the tail's. Rows of 8 bytes or more are read by loads that stay
/// inside each row (the last 16 bytes, or the first and last 8) and the
/// lanes that repeat bytes already summed are zeroed in `b`'s vectors only (a
/// zero product adds nothing); shorter rows are copied into zeroed buffers.
///
/// # Safety
/// Every pointer in `ap` and `bp` addresses a readable row of `k` bytes.
#[inline(always)]
pub(crate) unsafe fn tail<const MR: usize, const NR: usize>(
    ap: &[*const i8; MR],
    bp: &[*const i8; NR],
    k: usize,
    off: usize,
) -> (
    [core::arch::aarch64::int8x16_t; MR],
    [core::arch::aarch64::int8x16_t; NR],
) {
    use core::arch::aarch64::*;
    let rem = k - off;
    if k < 8 {
        let mut abuf = [[0i8; 16]; MR];
        let mut bbuf = [[0i8; 16]; NR];
        for r in 0..MR {
            core::ptr::copy_nonoverlapping(ap[r].add(off), abuf[r].as_mut_ptr(), rem);
        }
        for c in 0..NR {
            core::ptr::copy_nonoverlapping(bp[c].add(off), bbuf[c].as_mut_ptr(), rem);
        }
        return (
            core::array::from_fn(|r| vld1q_s8(abuf[r].as_ptr())),
            core::array::from_fn(|c| vld1q_s8(bbuf[c].as_ptr())),
        );
    }
    let lanes = vld1q_s8([0i8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15].as_ptr());
    let mask = vreinterpretq_s8_u8(if k >= 16 {
        // Lanes 16 - rem.. are the new bytes.
        vcgeq_s8(lanes, vdupq_n_s8((16 - rem) as i8))
    } else {
        // Lanes 0..8 are bytes 0..8; lanes 8.. are bytes k - 8.., new from
        // lane 24 - k on.
        vorrq_u8(
            vcltq_s8(lanes, vdupq_n_s8(8)),
            vcgeq_s8(lanes, vdupq_n_s8((24 - k) as i8)),
        )
    });
    let load = |p: *const i8| {
        if k >= 16 {
            vld1q_s8(p.add(k - 16))
        } else {
            vcombine_s8(vld1_s8(p), vld1_s8(p.add(k - 8)))
        }
    };
    (
        core::array::from_fn(|r| load(ap[r])),
        core::array::from_fn(|c| vandq_s8(load(bp[c]), mask)),
    )
}

macro_rules! dispatch_tile {
    ($tile:ident, $mr:expr, $nr:expr, $($arg:expr),* $(,)?) => {
        match ($mr, $nr) {
            (4, 4) => $tile::<4, 4, _>($($arg),*),
            (4, 2) => $tile::<4, 2, _>($($arg),*),
            (4, _) => $tile::<4, 1, _>($($arg),*),
            (2, 4) => $tile::<2, 4, _>($($arg),*),
            (2, 2) => $tile::<2, 2, _>($($arg),*),
            (2, _) => $tile::<2, 1, _>($($arg),*),
            (_, 4) => $tile::<1, 4, _>($($arg),*),
            (_, 2) => $tile::<1, 2, _>($($arg),*),
            (_, _) => $tile::<1, 1, _>($($arg),*),
        }
    };
}
pub(crate) use dispatch_tile;

/// [`crate::reference::qs8_gemm_nt`] on baseline aarch64 Advanced SIMD.
///
/// Same contract and bit-identical results as the reference. Runs on every
/// aarch64 CPU.
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_nt__neon(
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
    check_inputs(m, n, k, a, b, bias, rq.len());
    let mut sink = I8Sink { rq, q, out, rs, cs };
    // SAFETY: `check_inputs` guarantees rows 0..m of `a` and 0..n of `b` (k bytes
    // each) are in bounds, and `bias.len() >= m`; NEON is baseline on aarch64.
    unsafe { neon::gemm(m, n, k, a.as_ptr(), b.as_ptr(), bias, &mut sink) }
}

/// [`crate::reference::qs8_gemm_nt_f32out`] on baseline aarch64 Advanced SIMD.
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_nt_f32out__neon(
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
    check_inputs(m, n, k, a, b, bias, scale.len());
    let mut sink = F32Sink {
        scale,
        lo: act_min,
        hi: act_max,
        out,
        rs,
        cs,
    };
    // SAFETY: as in `qs8_gemm_nt__neon`.
    unsafe { neon::gemm(m, n, k, a.as_ptr(), b.as_ptr(), bias, &mut sink) }
}

/// [`crate::reference::qs8_gemm_nt`] with `sdot` (FEAT_DotProd).
///
/// Same contract and bit-identical results as the reference. Install where
/// [`crate::Isa::Dotprod`]`.available()`; elsewhere it runs `__neon`.
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_nt__dotprod(
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
    if !has_dotprod() {
        return qs8_gemm_nt__neon(m, n, k, a, b, bias, rq, q, out, rs, cs);
    }
    check_inputs(m, n, k, a, b, bias, rq.len());
    let mut sink = I8Sink { rq, q, out, rs, cs };
    // SAFETY: bounds as in `qs8_gemm_nt__neon`; `has_dotprod()` checked above.
    unsafe { dotprod::gemm(m, n, k, a.as_ptr(), b.as_ptr(), bias, &mut sink) }
}

/// [`crate::reference::qs8_gemm_nt_f32out`] with `sdot`; `__neon` on CPUs
/// without FEAT_DotProd.
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_nt_f32out__dotprod(
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
    if !has_dotprod() {
        return qs8_gemm_nt_f32out__neon(m, n, k, a, b, bias, scale, act_min, act_max, out, rs, cs);
    }
    check_inputs(m, n, k, a, b, bias, scale.len());
    let mut sink = F32Sink {
        scale,
        lo: act_min,
        hi: act_max,
        out,
        rs,
        cs,
    };
    // SAFETY: as in `qs8_gemm_nt__dotprod`.
    unsafe { dotprod::gemm(m, n, k, a.as_ptr(), b.as_ptr(), bias, &mut sink) }
}

/// [`crate::reference::qs8_gemm_nt`] with `smmla` (FEAT_I8MM).
///
/// Same contract and bit-identical results as the reference. Install where
/// [`crate::Isa::I8mm`]`.available()`; elsewhere it runs `__neon`.
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_nt__i8mm(
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
    if !has_i8mm() {
        return qs8_gemm_nt__neon(m, n, k, a, b, bias, rq, q, out, rs, cs);
    }
    check_inputs(m, n, k, a, b, bias, rq.len());
    let mut sink = I8Sink { rq, q, out, rs, cs };
    // SAFETY: bounds as in `qs8_gemm_nt__neon`; `has_i8mm()` checked above.
    unsafe { i8mm::gemm(m, n, k, a.as_ptr(), b.as_ptr(), bias, &mut sink) }
}

/// [`crate::reference::qs8_gemm_nt_f32out`] with `smmla`; `__neon` on CPUs
/// without FEAT_I8MM.
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_nt_f32out__i8mm(
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
    if !has_i8mm() {
        return qs8_gemm_nt_f32out__neon(m, n, k, a, b, bias, scale, act_min, act_max, out, rs, cs);
    }
    check_inputs(m, n, k, a, b, bias, scale.len());
    let mut sink = F32Sink {
        scale,
        lo: act_min,
        hi: act_max,
        out,
        rs,
        cs,
    };
    // SAFETY: as in `qs8_gemm_nt__i8mm`.
    unsafe { i8mm::gemm(m, n, k, a.as_ptr(), b.as_ptr(), bias, &mut sink) }
}

#[cfg(test)]
pub(crate) mod tests;

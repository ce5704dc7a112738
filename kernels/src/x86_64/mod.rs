//! x86_64 AVX2 paths, and the AVX-VNNI and AVX-512 VNNI packed gemms.
//!
//! Every public function here is a safe wrapper with exactly the signature of
//! its reference: it checks the contract that the vector code relies on for
//! memory safety (slice lengths, with a panic like the reference's indexing
//! would raise), re-checks `is_x86_feature_detected!("avx2")` (falling back to
//! the reference, so a wrapper is sound on any x86_64 CPU), then calls an
//! `unsafe` `#[target_feature(enable = "avx2")]` inner function. The VNNI
//! kernels re-check their features and fall back to the next path down
//! (AVX-512 VNNI to AVX-VNNI to AVX2).
//!
//! Bit-exactness: integer accumulation is exact in both (the reference's
//! overflow bounds keep every i32 sum in range, and i32 addition is
//! associative), and the output stage is the reference's, lane by lane
//! ([`requant::requantize_v`] reproduces [`crate::requant::requantize`]).

// Kernel names follow the crate's naming grammar (`qs8_gemm_nt__avx2`).
#![allow(non_snake_case)]

mod dwconv;
mod dwconv_hwc;
mod elementwise;
mod gemm;
mod gemm_4x16c4;
mod gemm_4x16c4_avx512vnni;
mod gemm_4x16c4_vnni;
mod lut;
mod pool;
mod requant;
mod sparse;

pub use dwconv::{qs8_dwconv2d__avx2, qs8_dwconv2d__avx512vnni};
pub use elementwise::{qs8_requantize_copy__avx2, qs8_vadd__avx2, qs8_vmul__avx2};
pub use gemm::{qs8_gemm_nt__avx2, qs8_gemm_nt_f32out__avx2};
pub use gemm_4x16c4::qs8_gemm_4x16c4__avx2;
pub use gemm_4x16c4_avx512vnni::qs8_gemm_4x16c4__avx512vnni;
pub use gemm_4x16c4_vnni::qs8_gemm_4x16c4__avxvnni;
pub use lut::{qs8_lut__avx512vnni, qs8_quantize__avx512vnni};
pub use pool::{qs8_avgpool2d__avx2, qs8_maxpool2d__avx2};
pub use sparse::qs8_gemm_nt_sparse__avx2;

/// Whether the AVX2 code may run (cached by std: one relaxed atomic load).
#[inline(always)]
fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
}

/// Whether the AVX-VNNI code (VEX `vpdpbusd` on ymm, with AVX2) may run.
#[inline(always)]
fn has_avxvnni() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("avxvnni")
}

/// Whether the AVX-512 VNNI code (zmm `vpdpbusd`, byte masks, ymm/xmm EVEX
/// forms) may run.
#[inline(always)]
fn has_avx512vnni() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512vnni")
}

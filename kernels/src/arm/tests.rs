//! Bit-exactness of the ARMv7 NEON gemm against the reference.

use super::*;
use crate::Isa;

use crate::arm_shared::gemm_check::{available_or_skip, check_gemm, check_required_isa};

#[test]
fn detection_matches_strix_require_isa() {
    check_required_isa(&[Isa::Armv7Neon]);
}

#[test]
fn gemm_nt_armv7neon_matches_reference() {
    if available_or_skip("qs8_gemm_nt__armv7neon", Isa::Armv7Neon) {
        check_gemm(
            "qs8_gemm_nt__armv7neon",
            qs8_gemm_nt__armv7neon,
            qs8_gemm_nt_f32out__armv7neon,
        );
    }
}

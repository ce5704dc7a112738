//! Strix kernels: every op's integer semantics.
//!
//! The scalar code in [`reference`] **is** the specification of Strix's int8
//! arithmetic: any optimised path must produce bit-identical int8 outputs.
//!
//! Naming grammar (after XNNPACK): `<datatype>_<op>[_<variant>]`, where the
//! datatype is `qs8` (int8 activations, int8 symmetric per-channel weights,
//! int32 bias) or `f32`. Optimised versions append `__<isa>` (e.g.
//! `qs8_gemm__avx2`); the reference has no suffix.
//!
//! Kernels never allocate: callers pass every buffer, sized as documented.
#![cfg_attr(not(feature = "std"), no_std)]

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "arm")]
pub mod arm;
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
mod arm_shared;
pub mod driver;
pub mod isa;
pub mod reference;
pub mod requant;
pub mod shape;
pub mod table;

// AVX2 paths. Needs `std` for run-time feature detection (`is_x86_feature_detected!`),
// which every safe wrapper re-checks before entering `#[target_feature]` code.
#[cfg(all(target_arch = "x86_64", feature = "std"))]
mod x86_64;

pub use isa::Isa;
pub use requant::{quantize_multiplier, requantize, Requant};

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

pub mod isa;
pub mod reference;
pub mod requant;
pub mod shape;

pub use isa::Isa;
pub use requant::{quantize_multiplier, requantize, Requant};

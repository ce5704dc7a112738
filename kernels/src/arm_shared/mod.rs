//! Code shared by the two ARM paths, aarch64 ([`crate::aarch64`]) and 32-bit
//! ARMv7 ([`crate::arm`]): the gemm output stages and input checks (`sink`),
//! the zero-point-padded row ring of the depthwise and pooling kernels
//! (`dwrows`), and the gemm tests' bit-exactness harness (`gemm_check`).
//!
//! Plain Rust with no architecture intrinsics, except where a `#[cfg]` adds an
//! aarch64-only fast form (`sink`'s vector requantization), so each ARM path
//! compiles the same source.

pub(crate) mod dwrows;
#[cfg(test)]
pub(crate) mod gemm_check;
pub(crate) mod sink;

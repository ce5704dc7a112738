//! Kernel selection for the heavy int8 ops. Today every path is the scalar
//! reference; optimised paths plug in here, chosen once per CPU.

pub use strix_kernels::reference::{qs8_conv2d, qs8_gemm};

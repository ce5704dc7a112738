//! Scalar reference kernels: the definition of every op's arithmetic.
//!
//! Each `qs8_*` kernel documents its overflow bound: the inputs for which no
//! intermediate can overflow `i32`. The compiler only emits ops within them.

mod conv;
mod elementwise;
mod gemm;
mod lstm;
mod lut;
mod movement;
mod packed;
mod pool;
mod resize;
mod softmax;
mod sparse;

pub use conv::{
    f32_conv2d, f32_conv2d_im2col, f32_im2col_len, qs8_conv2d, qs8_conv2d_f32out, qs8_dwconv2d,
    ConvGeometry, QConvParams,
};
pub use elementwise::{
    f32_binary, qs8_vadd, qs8_vmul, BinaryOp, QAddParams, QMulParams, QADD_LEFT_SHIFT,
};
pub use gemm::{
    f32_gemm, qs8_gemm, qs8_gemm_f32out, qs8_gemm_nt, qs8_gemm_nt_f32out, QGemmParams, QOut,
};
pub use lstm::{f32_lstm, LstmGeometry};
pub use lut::{build_lut, f32_dequantize, f32_unary, qs8_lut, qs8_quantize, quantize_one, UnaryOp};
pub use movement::{concat, gather, pad_constant, qs8_requantize_copy, slice, transpose};
pub use packed::{
    pack_a_4c4, packed_a_len, pairable_4c4, panel_len, qs8_gemm_4x16c4, qs8_gemm_4x16c4_f32out,
    unpack_a_4c4, PACK_MR, PACK_NR,
};
pub use pool::{f32_pool2d, qs8_avgpool2d, qs8_maxpool2d, PoolGeometry, QS8_AVGPOOL_MAX_TAPS};
pub use resize::{f32_resize, qs8_resize, CoordMode, ResizeGeometry, ResizeKind};
pub use softmax::{f32_reduce_mean, f32_softmax};
#[cfg(feature = "std")]
pub use sparse::{pack_sparse, SparseOwned};
pub use sparse::{
    qs8_gemm_nt_sparse, sparse_scratch_len, zero_block_fraction, SparseError, SparseWeights,
    SPARSE_BLOCK, SPARSE_SCRATCH_ALIGN,
};

/// f32 dot product with eight independent partial sums, so the compiler can
/// keep them in vector registers (a single running sum would serialise every
/// addition). Lengths beyond the shorter slice are ignored.
#[inline]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

//! The ops, one module per op family. Each module keeps its ops' three
//! phases side by side, as tflite-micro keeps an op's Init/Prepare/Eval in
//! one kernel file:
//!
//! - **validate**, at load, on the untrusted graph: every size, index and
//!   overflow bound `run` relies on, with checked arithmetic, so that `run`
//!   can neither panic nor read out of bounds;
//! - **prepare**, once per model and kernel path: data computed from the
//!   constants (zero-point-folded biases) and the scratch a session must
//!   allocate ([`Prep`]);
//! - **run**, every inference: the kernels on the session's arena, with no
//!   allocation and no locks.
//!
//! The serialised [`Op`] enum (`graph.rs`) stays the file format and the
//! registry: [`validate`], [`prepare`] and [`run`] below delegate each
//! variant to its module in one line. The one aliasing rule (a Reshape may
//! share its input's buffer) is [`reshape::may_alias_input`]; the planner,
//! the overlap check and the executor all ask it.
//!
//! Adding an op: see "Adding an op" in the crate README.

mod ctx;

mod binary;
mod concat;
mod conv;
mod dequantize;
mod gather;
mod gemm;
mod layer_norm;
mod lstm;
mod lut;
mod pad;
mod pool;
mod qadd;
mod qconv;
mod qconv_sparse;
mod qgemm;
mod qmul;
mod quantize;
mod reduce_mean;
pub(crate) mod reshape;
mod resize;
mod slice;
mod softmax;
mod transpose;
mod unary;

#[cfg(test)]
pub(crate) mod test_graph;

pub(crate) use ctx::{run_node, Ctx, Res};
use ctx::{Out, Run};

use crate::graph::{Graph, Node, Op};
use crate::par::Workers;
use strix_kernels::driver::PackedConv;
use strix_kernels::table::KernelSet;

/// The op's short name (for `inspect` and errors).
pub(crate) fn name(op: &Op) -> &'static str {
    match op {
        Op::Conv { .. } => conv::NAME,
        Op::QConv { .. } => qconv::NAME,
        Op::QConvSparse { .. } => qconv_sparse::NAME,
        Op::QConvF32 { .. } => qconv::F32OUT_NAME,
        Op::Gemm { .. } => gemm::NAME,
        Op::QGemm { .. } => qgemm::NAME,
        Op::QGemmF32 { .. } => qgemm::F32OUT_NAME,
        Op::MaxPool { .. } => pool::MAX_NAME,
        Op::AvgPool { .. } => pool::AVG_NAME,
        Op::Binary { .. } => binary::NAME,
        Op::QAdd { .. } => qadd::NAME,
        Op::QMul { .. } => qmul::NAME,
        Op::Unary { .. } => unary::NAME,
        Op::Lut => lut::NAME,
        Op::Softmax { .. } => softmax::NAME,
        Op::ReduceMean { .. } => reduce_mean::NAME,
        Op::Concat { .. } => concat::NAME,
        Op::Transpose { .. } => transpose::NAME,
        Op::Reshape => reshape::NAME,
        Op::Slice { .. } => slice::NAME,
        Op::Gather { .. } => gather::NAME,
        Op::Pad { .. } => pad::NAME,
        Op::Lstm { .. } => lstm::NAME,
        Op::Resize { .. } => resize::NAME,
        Op::LayerNorm { .. } => layer_norm::NAME,
        Op::Quantize => quantize::NAME,
        Op::Dequantize => dequantize::NAME,
    }
}

/// Multiply-accumulates of `op` over `batch` (the output's leading
/// dimension): the dense work, 0 for ops that do not multiply-accumulate.
pub(crate) fn macs(op: &Op, batch: usize) -> u64 {
    match op {
        Op::Conv { geom, .. }
        | Op::QConv { geom, .. }
        | Op::QConvSparse { geom, .. }
        | Op::QConvF32 { geom, .. } => conv::macs(geom, batch),
        Op::Gemm { m, n, k, batch, .. } => gemm::macs((*batch, *m, *n, *k)),
        Op::QGemm { m, n, k, .. } | Op::QGemmF32 { m, n, k, .. } => gemm::macs((1, *m, *n, *k)),
        Op::Lstm { geom } => lstm::macs(geom),
        Op::MaxPool { .. }
        | Op::AvgPool { .. }
        | Op::Binary { .. }
        | Op::QAdd { .. }
        | Op::QMul { .. }
        | Op::Unary { .. }
        | Op::Lut
        | Op::Softmax { .. }
        | Op::ReduceMean { .. }
        | Op::Concat { .. }
        | Op::Transpose { .. }
        | Op::Reshape
        | Op::Slice { .. }
        | Op::Gather { .. }
        | Op::Pad { .. }
        | Op::Resize { .. }
        | Op::LayerNorm { .. }
        | Op::Quantize
        | Op::Dequantize => 0,
    }
}

/// Multiply-accumulates of node `n` of `g` as executed: a sparse conv
/// counts only its stored blocks.
pub(crate) fn executed_macs(g: &Graph, n: &Node) -> u64 {
    let batch = g
        .tensors
        .get(n.output)
        .and_then(|t| t.shape.first())
        .copied()
        .unwrap_or(1)
        .max(1);
    match &n.op {
        Op::QConvSparse { geom, .. } => qconv_sparse::executed_macs(g, n, geom, batch),
        op => macs(op, batch),
    }
}

/// Checks node `cx.n` against its tensors and constants (the graph-level
/// checks of `validate::validate` come first).
pub(crate) fn validate(cx: &Ctx) -> Res {
    match &cx.n.op {
        Op::Conv {
            geom,
            act_min,
            act_max,
        } => conv::validate(cx, geom, *act_min, *act_max),
        Op::QConv { geom, q } => qconv::validate(cx, geom, q),
        Op::QConvSparse { geom, q } => qconv_sparse::validate(cx, geom, q),
        Op::QConvF32 {
            geom,
            in_zp,
            act_min,
            act_max,
        } => qconv::validate_f32out(cx, geom, *in_zp, *act_min, *act_max),
        Op::Gemm {
            m,
            n,
            k,
            batch,
            act_min,
            act_max,
        } => gemm::validate(cx, (*batch, *m, *n, *k), *act_min, *act_max),
        Op::QGemm { m, n, k, q } => qgemm::validate(cx, (*m, *n, *k), q),
        Op::QGemmF32 {
            m,
            n,
            k,
            in_zp,
            act_min,
            act_max,
        } => qgemm::validate_f32out(cx, (*m, *n, *k), *in_zp, *act_min, *act_max),
        Op::MaxPool { geom } => pool::validate(cx, geom, false),
        Op::AvgPool { geom } => pool::validate(cx, geom, true),
        Op::Binary { .. } => binary::validate(cx),
        Op::QAdd { p } => qadd::validate(cx, p),
        Op::QMul { p } => qmul::validate(cx, p),
        Op::Unary { .. } => unary::validate(cx),
        Op::Lut => lut::validate(cx),
        Op::Softmax { outer, axis, inner } => softmax::validate(cx, *outer, *axis, *inner),
        Op::ReduceMean { outer, axis, inner } => reduce_mean::validate(cx, *outer, *axis, *inner),
        Op::Concat { axis, requant } => concat::validate(cx, *axis, requant),
        Op::Transpose { perm } => transpose::validate(cx, perm),
        Op::Reshape => reshape::validate(cx),
        Op::Slice { starts, steps } => slice::validate(cx, starts, steps),
        Op::Gather { axis, indices } => gather::validate(cx, *axis, indices),
        Op::Pad { before, value } => pad::validate(cx, before, *value),
        Op::Lstm { geom } => lstm::validate(cx, geom),
        Op::Resize { geom } => resize::validate(cx, geom),
        Op::LayerNorm {
            outer,
            inner,
            epsilon,
        } => layer_norm::validate(cx, *outer, *inner, *epsilon),
        Op::Quantize => quantize::validate(cx),
        Op::Dequantize => dequantize::validate(cx),
    }
}

/// What prepare computes for one node, once per model and kernel path.
#[derive(Debug, Default)]
pub(crate) struct Prep {
    /// The zero-point-folded bias the gemm drivers take; `None` when the
    /// node runs a kernel that takes the plain bias.
    pub folded: Option<Vec<i32>>,
    /// The weights packed for `ks.gemm_4x16c4` and the plan of the input
    /// panels, when the kernel path runs this conv packed.
    pub packed: Option<PackedConv>,
    /// im2row scratch bytes each thread needs.
    pub scratch: usize,
    /// Gemm output-tile elements each worker thread needs.
    pub tile: usize,
    /// f32 scratch elements (used on the calling thread).
    pub scratch_f32: usize,
}

/// Prepares validated node `cx.n`.
pub(crate) fn prepare(cx: &Ctx, ks: &KernelSet) -> Prep {
    match &cx.n.op {
        Op::Conv { geom, .. } => conv::prepare(geom),
        Op::QConv { geom, q } => qconv::prepare(cx, ks, geom, q.in_zp),
        Op::QConvSparse { geom, q } => qconv_sparse::prepare(cx, geom, q),
        Op::QConvF32 { geom, in_zp, .. } => qconv::prepare_f32out(cx, ks, geom, *in_zp),
        Op::QGemm { k, q, .. } => qgemm::prepare(cx, *k, q.in_zp),
        Op::QGemmF32 { k, in_zp, .. } => qgemm::prepare(cx, *k, *in_zp),
        // These run from the graph alone.
        Op::Gemm { .. }
        | Op::MaxPool { .. }
        | Op::AvgPool { .. }
        | Op::Binary { .. }
        | Op::QAdd { .. }
        | Op::QMul { .. }
        | Op::Unary { .. }
        | Op::Lut
        | Op::Softmax { .. }
        | Op::ReduceMean { .. }
        | Op::Concat { .. }
        | Op::Transpose { .. }
        | Op::Reshape
        | Op::Slice { .. }
        | Op::Gather { .. }
        | Op::Pad { .. }
        | Op::Lstm { .. }
        | Op::Resize { .. }
        | Op::LayerNorm { .. }
        | Op::Quantize
        | Op::Dequantize => Prep::default(),
    }
}

/// Runs validated, prepared node `r.n` into `out`. No allocation, no locks.
fn run(r: &Run, out: Out, wk: &mut Workers) -> Res {
    match &r.n.op {
        Op::Conv {
            geom,
            act_min,
            act_max,
        } => conv::run(r, wk, geom, (*act_min, *act_max), out.f32()?),
        Op::QConv { geom, q } => qconv::run(r, wk, geom, q, out.i8()?),
        Op::QConvSparse { geom, q } => qconv_sparse::run(r, wk, geom, q, out.i8()?),
        Op::QConvF32 {
            geom,
            in_zp,
            act_min,
            act_max,
        } => qconv::run_f32out(r, wk, geom, *in_zp, (*act_min, *act_max), out.f32()?),
        Op::Gemm {
            m,
            n,
            k,
            batch,
            act_min,
            act_max,
        } => gemm::run(r, (*batch, *m, *n, *k), (*act_min, *act_max), out.f32()?),
        Op::QGemm { m, n, k, q } => qgemm::run(r, wk, (*m, *n, *k), q, out.i8()?),
        Op::QGemmF32 {
            m,
            n,
            k,
            in_zp,
            act_min,
            act_max,
        } => qgemm::run_f32out(r, (*m, *n, *k), *in_zp, (*act_min, *act_max), out.f32()?),
        Op::MaxPool { geom } => pool::run_max(r, geom, out),
        Op::AvgPool { geom } => pool::run_avg(r, geom, out),
        Op::Binary { kind } => binary::run(r, *kind, out.f32()?),
        Op::QAdd { p } => qadd::run(r, p, out.i8()?),
        Op::QMul { p } => qmul::run(r, p, out.i8()?),
        Op::Unary { kind } => unary::run(r, *kind, out.f32()?),
        Op::Lut => lut::run(r, out.i8()?),
        Op::Softmax { outer, axis, inner } => softmax::run(r, (*outer, *axis, *inner), out.f32()?),
        Op::ReduceMean { outer, axis, inner } => {
            reduce_mean::run(r, (*outer, *axis, *inner), out.f32()?)
        }
        Op::Concat { axis, requant } => concat::run(r, *axis, requant, out),
        Op::Transpose { perm } => transpose::run(r, perm, out),
        Op::Reshape => reshape::run(r, out),
        Op::Slice { starts, steps } => slice::run(r, starts, steps, out),
        Op::Gather { axis, indices } => gather::run(r, *axis, indices, out),
        Op::Pad { before, value } => pad::run(r, before, *value, out),
        Op::Lstm { geom } => lstm::run(r, geom, out.f32()?),
        Op::Resize { geom } => resize::run(r, geom, out),
        Op::LayerNorm {
            outer,
            inner,
            epsilon,
        } => layer_norm::run(r, (*outer, *inner, *epsilon), out.f32()?),
        Op::Quantize => quantize::run(r, out.i8()?),
        Op::Dequantize => dequantize::run(r, out.f32()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strix_kernels::reference::ConvGeometry;

    fn conv(side: usize) -> Op {
        Op::Conv {
            geom: ConvGeometry {
                in_c: 4,
                in_h: side,
                in_w: side,
                out_c: 8,
                out_h: side,
                out_w: side,
                kh: 3,
                kw: 3,
                stride_h: 1,
                stride_w: 1,
                dil_h: 1,
                dil_w: 1,
                pad_top: 1,
                pad_left: 1,
                groups: 1,
            },
            act_min: f32::NEG_INFINITY,
            act_max: f32::INFINITY,
        }
    }

    #[test]
    fn macs_count_the_dense_work_and_saturate() {
        // 8 x 5 x 5 outputs, each 4 x 3 x 3 products, over a batch of 2.
        assert_eq!(conv(5).macs(2), 2 * 8 * 25 * 36);
        assert_eq!(conv(5).name(), "Conv");
        // 8 * 2^60 * 36 products overflow u64 (and usize on every target).
        assert_eq!(conv(1 << 30).macs(1), u64::MAX);
        let gemm = Op::QGemm {
            m: usize::MAX,
            n: 2,
            k: 2,
            q: strix_kernels::reference::QGemmParams {
                in_zp: 0,
                out_zp: 0,
                act_min: -128,
                act_max: 127,
            },
        };
        assert_eq!(gemm.macs(1), u64::MAX);
        assert_eq!(gemm.name(), "QGemm");
    }
}

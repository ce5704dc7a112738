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

use crate::graph::Op;
use crate::par::Workers;
use strix_kernels::driver::PackedConv;
use strix_kernels::table::KernelSet;

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
        Op::Quantize => quantize::run(r, out.i8()?),
        Op::Dequantize => dequantize::run(r, out.f32()?),
    }
}

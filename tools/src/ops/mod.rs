//! The compiler's ops, one module per ONNX operator family. Each module
//! holds everything the compiler knows about its op, side by side:
//!
//! - **import**: ONNX attributes and inputs -> IR nodes ([`OnnxOp::import`]),
//!   with the validation errors naming the node, and the evaluation of a node
//!   whose inputs are all constants ([`OnnxOp::fold`]);
//! - **lowering**: the IR op -> the runtime's f32 op and, where the op has
//!   one, its int8 form and the precision rules ([`IrOp`]);
//! - **pruning**: how output channels flow through the op and how the op is
//!   rewritten when they shrink ([`IrOp::flow`], [`IrOp::prune`]);
//! - rewrites that belong to the op (SiLU fusion beside the activations,
//!   BatchNorm folding into Conv beside BatchNorm).
//!
//! Two tables register them: [`registry`] maps ONNX operator names to their
//! import and fold functions (as tract's `register_all_ops` does), [`ir`]
//! maps each IR op ([`COp`] variant) to its module. Both live here and
//! nowhere else; CONTRIBUTING.md lists the steps to add an op.

pub(crate) mod activation;
pub(crate) mod batchnorm;
pub(crate) mod concat;
pub(crate) mod constant;
pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod gather;
pub(crate) mod gemm;
pub(crate) mod identity;
pub(crate) mod layer_norm;
pub(crate) mod lstm;
pub(crate) mod pad;
pub(crate) mod pool;
pub(crate) mod reduce;
pub(crate) mod reshape;
pub(crate) mod resize;
pub(crate) mod slice;
pub(crate) mod softmax;
pub(crate) mod split;
pub(crate) mod transpose;

use crate::ir::{CGraph, CNode, COp, HostData, HostTensor};
use crate::lower::{int8_same_quant, Int8Cx, Int8Node};
use crate::onnx::{Attrs, Importer};
use crate::prune::graph::{Chan, Flow, Kept, Prune};
use anyhow::{bail, Result};
use strix_runtime::graph::{DType, Op};
use tract_onnx::pb;

/// The fields of `$n.op`, which [`ir`] guarantees match `$pat` in the
/// module it dispatches to.
macro_rules! fields {
    ($n:expr, $pat:pat => $out:expr) => {
        match &$n.op {
            $pat => $out,
            other => unreachable!("ops::ir dispatched {} here", other.name()),
        }
    };
}
pub(crate) use fields;

/// Translates an ONNX node with at least one non-constant input into IR
/// nodes (or an alias of its input) and binds its outputs in the importer.
pub(crate) type ImportFn = fn(&mut Importer, &pb::NodeProto, &Attrs) -> Result<()>;

/// Evaluates an ONNX node whose inputs are all constants; returns its
/// outputs in order (shape arithmetic, weight reshapes, ...).
pub(crate) type FoldFn = fn(&Importer, &pb::NodeProto, &Attrs) -> Result<Vec<HostTensor>>;

/// One ONNX operator: what the importer does with a node of this type.
pub(crate) struct OnnxOp {
    /// The `op_type` (default domain).
    pub name: &'static str,
    /// The inputs the operator cannot do without at an opset (ONNX's required
    /// inputs): the importer refuses a node with fewer before calling
    /// `import` or `fold`, which may then index them.
    pub min_inputs: fn(i64) -> usize,
    /// Translation of a node with a non-constant input; `None`: the
    /// operator is only supported on constants.
    pub import: Option<ImportFn>,
    /// Constant folding; `None`: the operator is never folded.
    pub fold: Option<FoldFn>,
}

impl OnnxOp {
    /// An operator with one required input (see [`OnnxOp::inputs`]).
    pub(crate) const fn new(
        name: &'static str,
        import: Option<ImportFn>,
        fold: Option<FoldFn>,
    ) -> Self {
        OnnxOp {
            name,
            min_inputs: |_| 1,
            import,
            fold,
        }
    }
    /// `self` with `min_inputs(opset)` required inputs.
    pub(crate) const fn inputs(self, min_inputs: fn(i64) -> usize) -> Self {
        OnnxOp { min_inputs, ..self }
    }
}

/// The ONNX operators of every op module, one line per module: the one table
/// the importer dispatches through.
pub(crate) fn registry() -> &'static [&'static [OnnxOp]] {
    &[
        activation::ONNX,
        batchnorm::ONNX,
        concat::ONNX,
        constant::ONNX,
        conv::ONNX,
        elementwise::ONNX,
        gather::ONNX,
        gemm::ONNX,
        identity::ONNX,
        layer_norm::ONNX,
        lstm::ONNX,
        pad::ONNX,
        pool::ONNX,
        reduce::ONNX,
        reshape::ONNX,
        resize::ONNX,
        slice::ONNX,
        softmax::ONNX,
        split::ONNX,
        transpose::ONNX,
    ]
}

/// The registered operator `op_type`, if any.
pub(crate) fn onnx_op(op_type: &str) -> Option<&'static OnnxOp> {
    registry()
        .iter()
        .flat_map(|m| m.iter())
        .find(|d| d.name == op_type)
}

/// The compiler side of one IR op ([`COp`] variant) after import: its
/// lowering to runtime ops and its channel-flow rule for pruning. The
/// defaults describe an op that only runs in f32 and stops channel flow
/// (pruning leaves the producers feeding it alone).
pub(crate) trait IrOp: Sync {
    /// The IR op's name (`COp::name`: errors, reports).
    fn name(&self) -> &'static str;
    /// The runtime op computing `n` in f32.
    fn f32_op(&self, n: &CNode) -> Op;
    /// Multiply-accumulates of `n` per inference (0 by default: the op does
    /// not multiply-accumulate).
    fn macs(&self, _cg: &CGraph, _n: &CNode) -> u64 {
        0
    }
    /// `n` as a layer: an op with a weight matrix whose output channels
    /// pruning can cut and whose weights sparsity zeroes (`None` by default).
    fn layer(&self, _cg: &CGraph, _n: &CNode) -> Option<Layer> {
        None
    }

    /// Whether the op's int8 form is its f32 runtime op run on the int8
    /// codes of its first input, the output keeping that input's
    /// quantization (data movement, max and average pooling, resizing). The
    /// precision defaults below follow from it: such an op runs int8 exactly
    /// when its first input is int8, precision planning sees through it, and
    /// its int8 form is [`int8_same_quant`]. `false` by default.
    fn keeps_quant(&self) -> bool {
        false
    }
    /// Whether `n` runs in int8, given the dtypes chosen for the values so
    /// far (`prec`, indexed by value; `None`: constants).
    fn wants_int8(&self, _cg: &CGraph, n: &CNode, prec: &[Option<DType>]) -> bool {
        self.keeps_quant() && is_i8(prec, n.inputs[0])
    }
    /// Whether `n` only moves or maps values elementwise: a chain of such ops
    /// from an int8 conv to f32 consumers is better run in f32 after an
    /// f32-output conv.
    fn transparent(&self, _cg: &CGraph, _n: &CNode) -> bool {
        self.keeps_quant()
    }
    /// Whether `n` runs in f32 whatever its inputs are.
    fn f32_only(&self, _cg: &CGraph, _n: &CNode) -> bool {
        !self.keeps_quant()
    }
    /// Whether the op has an int8 form with an f32 output (int8 arithmetic
    /// without output rounding), chosen when only f32 ops read the result.
    fn has_f32_output(&self) -> bool {
        false
    }
    /// The int8 form of `n` (called when [`IrOp::wants_int8`] held, or
    /// with `cx.f32_output` for [`IrOp::has_f32_output`] ops).
    fn int8(&self, cx: &mut Int8Cx, n: &CNode) -> Result<Int8Node> {
        if self.keeps_quant() {
            return int8_same_quant(cx, n, self.f32_op(n));
        }
        bail!("internal: {} chosen for int8", n.op.name())
    }
    /// The input slots of `n` holding constant weights that can be stored as
    /// f16 when the node stays f32 (biases never are).
    fn f16_weight_slots(&self) -> &'static [usize] {
        &[]
    }

    /// Channel flow for pruning: the channels `n`'s output carries given
    /// those of its inputs (`ins`, by input slot), tying or poisoning
    /// producers in `cx` (see [`crate::prune::graph`]).
    fn flow(&self, cx: &mut Flow, _ni: usize, _n: &CNode, ins: &[Option<Chan>]) -> Option<Chan> {
        cx.poison_all(ins);
        None
    }
    /// Pruning: rewrites node `ni` (a clone of it is `n`) whose first input
    /// keeps the channels `k0` and whose own output channels may be cut
    /// (`cx.output_keep(ni)`); returns the channels its output keeps.
    fn prune(&self, _cx: &mut Prune, _ni: usize, _n: &CNode, _k0: Kept) -> Kept {
        None
    }
}

/// A layer's weights (a conv's or a gemm's), as pruning, dead-channel removal
/// and block sparsity see them: `out` output channels, each reading `inp`
/// input channels through `taps` weights each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layer {
    pub out: usize,
    /// Input channels of the whole layer (all groups).
    pub inp: usize,
    pub taps: usize,
    pub groups: usize,
    /// Gemm layout: weights `[inp, out]` (output channel last) and a
    /// channel-last input. Otherwise conv layout: weights `[out, inp /
    /// groups, taps]` and an NCHW input (channel axis 1).
    pub chan_last: bool,
    /// The weights (input slot 1) are a constant.
    pub const_w: bool,
}

impl Layer {
    /// Index in the weights of output `o`, input channel `i`, tap `t`, for
    /// an ungrouped layer.
    pub fn at(&self, o: usize, i: usize, t: usize) -> usize {
        if self.chan_last {
            i * self.out + o
        } else {
            (o * self.inp + i) * self.taps + t
        }
    }
    /// Weights per output channel of an ungrouped layer (its reduction).
    pub fn reduction(&self) -> usize {
        self.inp * self.taps
    }
    /// The channel axis of the layer's input and output activations, of
    /// rank `rank`.
    pub fn chan_axis(&self, rank: usize) -> usize {
        if self.chan_last {
            rank - 1
        } else {
            1
        }
    }
}

/// [`IrOp::layer`] of node `n`.
pub(crate) fn layer(cg: &CGraph, n: &CNode) -> Option<Layer> {
    ir(&n.op).layer(cg, n)
}

/// [`Layer`] of node `n` when its weights are a constant (the layers whose
/// weights pruning rewrites).
pub(crate) fn const_layer(cg: &CGraph, n: &CNode) -> Option<Layer> {
    layer(cg, n).filter(|l| l.const_w)
}

/// The module of each IR op, one line per op: the one table lowering and
/// pruning dispatch through (a new [`COp`] variant does not compile until it
/// is listed here).
pub(crate) fn ir(op: &COp) -> &'static dyn IrOp {
    match op {
        COp::Conv { .. } => &conv::Conv,
        COp::Gemm { .. } => &gemm::Gemm,
        COp::MaxPool { .. } => &pool::MaxPool,
        COp::AvgPool { .. } => &pool::AvgPool,
        COp::Binary(_) => &elementwise::Binary,
        COp::Unary(_) => &activation::Unary,
        COp::Softmax { .. } => &softmax::Softmax,
        COp::ReduceMean { .. } => &reduce::ReduceMean,
        COp::Concat { .. } => &concat::Concat,
        COp::Transpose { .. } => &transpose::Transpose,
        COp::Reshape => &reshape::Reshape,
        COp::Slice { .. } => &slice::Slice,
        COp::Gather { .. } => &gather::Gather,
        COp::Pad { .. } => &pad::Pad,
        COp::Resize { .. } => &resize::Resize,
        COp::Lstm { .. } => &lstm::Lstm,
        COp::LayerNorm { .. } => &layer_norm::LayerNorm,
    }
}

/// Whether value `v` was chosen int8 (for [`IrOp::wants_int8`]).
pub(crate) fn is_i8(prec: &[Option<DType>], v: usize) -> bool {
    prec[v] == Some(DType::I8)
}

/// Whether value `v` is a one-element constant.
pub(crate) fn scalar_const(cg: &CGraph, v: usize) -> bool {
    cg.values[v].konst.as_ref().is_some_and(|t| t.len() == 1)
}

/// The error of a constant node no fold handles (the same words for an
/// unregistered operator and a registered one refusing its inputs).
pub(crate) fn cannot_fold(imp: &Importer, n: &pb::NodeProto) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot fold constant operator {} (opset {})",
        n.op_type,
        imp.opset
    )
}

/// `axis` (negative: from the end) as an index into a shape of rank `rank`.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    // Every caller indexes the shape with the result: a scalar has no axis.
    if a < 0 || a as usize >= rank {
        bail!("axis {axis} out of range for rank {rank}");
    }
    Ok(a as usize)
}

/// Like [`norm_axis`] but `rank` itself is accepted (a position between
/// axes, e.g. Flatten's), as the constant folds have always done.
pub(crate) fn norm_axis_upto(axis: i64, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize > rank {
        bail!("axis {axis} out of range for rank {rank}");
    }
    Ok(a as usize)
}

/// `t`'s elements picked by `f(shape, output index)`, as a tensor of `shape`
/// with `n` elements (the constant folds of data-movement ops).
pub(crate) fn map_data(
    t: &HostTensor,
    f: impl Fn(&[usize], usize) -> usize,
    shape: Vec<usize>,
    n: usize,
) -> HostTensor {
    let idx: Vec<usize> = (0..n).map(|i| f(&t.shape, i)).collect();
    match &t.data {
        HostData::F32(v) => HostTensor::f32(shape, idx.iter().map(|&i| v[i]).collect()),
        HostData::I64(v) => HostTensor::i64(shape, idx.iter().map(|&i| v[i]).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_onnx_operator_is_registered_once() {
        let mut names: Vec<&str> = registry()
            .iter()
            .flat_map(|m| m.iter())
            .map(|d| d.name)
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "an operator is registered twice");
        for d in registry().iter().flat_map(|m| m.iter()) {
            assert!(
                d.import.is_some() || d.fold.is_some(),
                "{} does nothing",
                d.name
            );
        }
    }
}

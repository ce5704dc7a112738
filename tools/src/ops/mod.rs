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

use crate::ir::{HostData, HostTensor};
use crate::onnx::{Attrs, Importer};
use anyhow::{bail, Result};
use tract_onnx::pb;

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
    /// An operator with `min_inputs` required inputs at every opset.
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
    /// `self` needing `min_inputs` inputs (at every opset).
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

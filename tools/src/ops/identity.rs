//! Identity, Dropout (inference: identity) and Cast to float: aliases of
//! their input, no IR node.

use super::OnnxOp;
use crate::ir::HostTensor;
use crate::onnx::{Attrs, Importer};
use anyhow::{bail, Result};
use tract_onnx::pb::{self, tensor_proto::DataType};

pub(crate) const ONNX: &[OnnxOp] = &[
    OnnxOp::new("Identity", Some(alias), Some(fold_identity)),
    OnnxOp::new("Dropout", Some(alias), Some(fold_identity)),
    OnnxOp::new("Cast", Some(cast), Some(fold_cast)),
];

fn alias(imp: &mut Importer, n: &pb::NodeProto, _: &Attrs) -> Result<()> {
    let v = imp.value(&n.input[0])?;
    imp.alias(n, v);
    Ok(())
}

fn cast(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let to = a.int("to", 1);
    if to != DataType::Float as i64 {
        bail!("Cast of an activation to type {to} is not supported (only to float)");
    }
    alias(imp, n, a)
}

fn fold_identity(imp: &Importer, n: &pb::NodeProto, _: &Attrs) -> Result<Vec<HostTensor>> {
    Ok(vec![imp.konst(&n.input[0])?.clone()])
}

fn fold_cast(imp: &Importer, n: &pb::NodeProto, a: &Attrs) -> Result<Vec<HostTensor>> {
    let t = imp.konst(&n.input[0])?;
    let to = a.int("to", 1);
    // 1 float, 10 f16, 11 double; everything else integer-like.
    Ok(vec![if matches!(to, 1 | 10 | 11) {
        HostTensor::f32(t.shape.clone(), t.as_f32())
    } else {
        HostTensor::i64(t.shape.clone(), t.as_i64())
    }])
}

//! Operators evaluated at import: Constant, Shape (of any tensor: shapes are
//! static), and ConstantOfShape, Range and Expand on constants. They never
//! reach the IR.

use super::OnnxOp;
use crate::ir::{HostData, HostTensor};
use crate::onnx::{tensor_from_proto, Attrs, Importer};
use anyhow::{bail, Result};
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] = &[
    OnnxOp::new("Constant", Some(bind_constant), Some(constant)).inputs(|_| 0),
    OnnxOp::new("Shape", Some(bind_shape), Some(shape)),
    OnnxOp::new("ConstantOfShape", None, Some(constant_of_shape)),
    OnnxOp::new("Range", None, Some(range)).inputs(|_| 3),
    OnnxOp::new("Expand", None, Some(expand)).inputs(|_| 2),
];

fn constant(_: &Importer, _: &pb::NodeProto, a: &Attrs) -> Result<Vec<HostTensor>> {
    let t = if let Some(t) = a.tensor("value") {
        tensor_from_proto(t)?
    } else if let Some(v) = a.get("value_float") {
        HostTensor::f32(vec![], vec![v.f])
    } else if let Some(v) = a.get("value_int") {
        HostTensor::i64(vec![], vec![v.i])
    } else if let Some(v) = a.get("value_ints") {
        HostTensor::i64(vec![v.ints.len()], v.ints.clone())
    } else if let Some(v) = a.get("value_floats") {
        HostTensor::f32(vec![v.floats.len()], v.floats.clone())
    } else {
        bail!("Constant without a supported value attribute")
    };
    Ok(vec![t])
}

/// A Constant node that (against the standard) lists an activation input:
/// the input is ignored, as it always was.
fn bind_constant(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let t = constant(imp, n, a)?.remove(0);
    imp.bind_const(&n.output[0], t);
    Ok(())
}

/// The (static) shape of the input, sliced by `start`/`end`.
fn shape(imp: &Importer, n: &pb::NodeProto, a: &Attrs) -> Result<Vec<HostTensor>> {
    let s = imp.shape(&n.input[0])?;
    let r = s.len() as i64;
    let start = a.int("start", 0);
    let end = a.int("end", r);
    let clampi = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
    let v: Vec<i64> = s[clampi(start)..clampi(end).max(clampi(start))]
        .iter()
        .map(|&d| d as i64)
        .collect();
    Ok(vec![HostTensor::i64(vec![v.len()], v)])
}

fn bind_shape(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let t = shape(imp, n, a)?.remove(0);
    imp.bind_const(&n.output[0], t);
    Ok(())
}

fn constant_of_shape(imp: &Importer, n: &pb::NodeProto, a: &Attrs) -> Result<Vec<HostTensor>> {
    let shape: Vec<usize> = imp
        .konst(&n.input[0])?
        .as_i64()
        .iter()
        .map(|&d| d.max(0) as usize)
        .collect();
    let n_el: usize = shape.iter().product();
    let value = match a.tensor("value") {
        Some(t) => tensor_from_proto(t)?,
        None => HostTensor::f32(vec![1], vec![0.0]),
    };
    Ok(vec![match value.data {
        HostData::F32(v) => HostTensor::f32(shape, vec![v.first().copied().unwrap_or(0.0); n_el]),
        HostData::I64(v) => HostTensor::i64(shape, vec![v.first().copied().unwrap_or(0); n_el]),
    }])
}

fn expand(imp: &Importer, n: &pb::NodeProto, _: &Attrs) -> Result<Vec<HostTensor>> {
    let t = imp.konst(&n.input[0])?;
    let target: Vec<usize> = imp
        .konst(&n.input[1])?
        .as_i64()
        .iter()
        .map(|&d| d.max(0) as usize)
        .collect();
    let ones = HostTensor {
        shape: target,
        data: if t.is_i64() {
            HostData::I64(vec![])
        } else {
            HostData::F32(vec![])
        },
    };
    let ones = match ones.data {
        HostData::I64(_) => {
            HostTensor::i64(ones.shape.clone(), vec![0; ones.shape.iter().product()])
        }
        HostData::F32(_) => {
            HostTensor::f32(ones.shape.clone(), vec![0.0; ones.shape.iter().product()])
        }
    };
    Ok(vec![super::elementwise::broadcast_apply(t, &ones, "Add")?])
}

fn range(imp: &Importer, n: &pb::NodeProto, _: &Attrs) -> Result<Vec<HostTensor>> {
    let inp = |i: usize| imp.konst(&n.input[i]);
    let (s, l, d) = (inp(0)?, inp(1)?, inp(2)?);
    if s.is_i64() {
        let (s, l, d) = (s.as_i64()[0], l.as_i64()[0], d.as_i64()[0]);
        if d == 0 {
            bail!("Range delta 0");
        }
        let v: Vec<i64> = (0..)
            .map(|i| s + i * d)
            .take_while(|&x| if d > 0 { x < l } else { x > l })
            .take(1 << 24)
            .collect();
        Ok(vec![HostTensor::i64(vec![v.len()], v)])
    } else {
        let (s, l, d) = (s.as_f32()[0], l.as_f32()[0], d.as_f32()[0]);
        let cnt = ((l - s) / d).ceil().max(0.0) as usize;
        Ok(vec![HostTensor::f32(
            vec![cnt],
            (0..cnt).map(|i| s + i as f32 * d).collect(),
        )])
    }
}

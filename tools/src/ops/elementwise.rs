//! Elementwise functions of two inputs (`COp::Binary`, numpy broadcast):
//! Add, Sub, Mul, Div, Pow, Max, Min, PRelu (and Equal, Less, Greater on
//! constants only). Int8: a lookup table when one operand is a scalar
//! constant, `QAdd`/`QMul` for two int8 activations. Pruning: channels flow
//! through; two channel-carrying operands tie their producers into a group.

use super::{cannot_fold, OnnxOp};
use crate::ir::{COp, HostData, HostTensor};
use crate::onnx::{Attrs, Importer};
use anyhow::{anyhow, bail, Result};
use strix_kernels::reference::BinaryOp;
use tract_onnx::pb;

const TWO: fn(i64) -> usize = |_| 2;

pub(crate) const ONNX: &[OnnxOp] = &[
    OnnxOp::new(
        "Add",
        Some(|i, n, _| binary(i, n, BinaryOp::Add)),
        Some(fold),
    )
    .inputs(TWO),
    OnnxOp::new(
        "Sub",
        Some(|i, n, _| binary(i, n, BinaryOp::Sub)),
        Some(fold),
    )
    .inputs(TWO),
    OnnxOp::new(
        "Mul",
        Some(|i, n, _| binary(i, n, BinaryOp::Mul)),
        Some(fold),
    )
    .inputs(TWO),
    OnnxOp::new(
        "Div",
        Some(|i, n, _| binary(i, n, BinaryOp::Div)),
        Some(fold),
    )
    .inputs(TWO),
    OnnxOp::new(
        "Pow",
        Some(|i, n, _| binary(i, n, BinaryOp::Pow)),
        Some(fold),
    )
    .inputs(TWO),
    OnnxOp::new(
        "Max",
        Some(|i, n, _| variadic(i, n, BinaryOp::Max)),
        Some(fold),
    ),
    OnnxOp::new(
        "Min",
        Some(|i, n, _| variadic(i, n, BinaryOp::Min)),
        Some(fold),
    ),
    OnnxOp::new("PRelu", Some(|i, n, _| binary(i, n, BinaryOp::Prelu)), None).inputs(TWO),
    OnnxOp::new("Equal", None, Some(fold)).inputs(TWO),
    OnnxOp::new("Less", None, Some(fold)).inputs(TWO),
    OnnxOp::new("Greater", None, Some(fold)).inputs(TWO),
];

/// Max/Min take any number of inputs in ONNX; two are supported.
fn variadic(imp: &mut Importer, n: &pb::NodeProto, op: BinaryOp) -> Result<()> {
    if n.input.len() != 2 {
        bail!("unsupported operator {} (opset {})", n.op_type, imp.opset);
    }
    binary(imp, n, op)
}

pub(crate) fn binary(imp: &mut Importer, n: &pb::NodeProto, op: BinaryOp) -> Result<()> {
    let (x, y) = (imp.value(&n.input[0])?, imp.value(&n.input[1])?);
    let out = broadcast(&imp.g.values[x].shape, &imp.g.values[y].shape)?;
    for v in [x, y] {
        if let Some(k) = &imp.g.values[v].konst {
            if k.is_i64() {
                let f = HostTensor::f32(k.shape.clone(), k.as_f32());
                imp.g.values[v].konst = Some(f);
            }
        }
    }
    imp.emit(n, COp::Binary(op), vec![x, y], out)?;
    Ok(())
}

/// Numpy broadcast of two shapes.
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            if da == db || db == 1 {
                Ok(da)
            } else if da == 1 {
                Ok(db)
            } else {
                bail!("shapes {a:?} and {b:?} do not broadcast")
            }
        })
        .collect()
}

fn bin_i64(op: &str, x: i64, y: i64) -> Result<i64> {
    Ok(match op {
        "Add" => x.wrapping_add(y),
        "Sub" => x.wrapping_sub(y),
        "Mul" => x.wrapping_mul(y),
        "Div" => {
            if y == 0 {
                bail!("integer division by zero while folding")
            }
            x / y
        }
        "Max" => x.max(y),
        "Min" => x.min(y),
        "Equal" => (x == y) as i64,
        "Less" => (x < y) as i64,
        "Greater" => (x > y) as i64,
        _ => bail!("cannot fold {op}"),
    })
}

fn bin_f32(op: &str, x: f32, y: f32) -> Result<f32> {
    Ok(match op {
        "Add" => x + y,
        "Sub" => x - y,
        "Mul" => x * y,
        "Div" => x / y,
        "Pow" => x.powf(y),
        "Max" => x.max(y),
        "Min" => x.min(y),
        "Equal" => (x == y) as i64 as f32,
        "Less" => (x < y) as i64 as f32,
        "Greater" => (x > y) as i64 as f32,
        _ => bail!("cannot fold {op}"),
    })
}

/// `op` on `a` and `b` broadcast against each other (i64 when both are).
pub(crate) fn broadcast_apply(a: &HostTensor, b: &HostTensor, op: &str) -> Result<HostTensor> {
    let r = a.shape.len().max(b.shape.len());
    let out_shape: Vec<usize> = (0..r)
        .map(|i| {
            let da = if i + a.shape.len() >= r {
                a.shape[i + a.shape.len() - r]
            } else {
                1
            };
            let db = if i + b.shape.len() >= r {
                b.shape[i + b.shape.len() - r]
            } else {
                1
            };
            if da == db || db == 1 {
                Ok(da)
            } else if da == 1 {
                Ok(db)
            } else {
                Err(anyhow!("cannot broadcast {:?} and {:?}", a.shape, b.shape))
            }
        })
        .collect::<Result<_>>()?;
    if r > strix_kernels::shape::MAX_RANK {
        bail!("rank {r} too large to fold");
    }
    let (ad, bd, od) = (
        strix_kernels::shape::Dims::new(&a.shape),
        strix_kernels::shape::Dims::new(&b.shape),
        strix_kernels::shape::Dims::new(&out_shape),
    );
    let n: usize = out_shape.iter().product();
    let mut err = None;
    let data = if a.is_i64() && b.is_i64() {
        let (x, y) = (a.as_i64(), b.as_i64());
        let mut o = vec![0i64; n];
        strix_kernels::shape::for_each_broadcast(&ad, &bd, &od, |oi, i, j| {
            match bin_i64(op, x[i], y[j]) {
                Ok(v) => o[oi] = v,
                Err(e) => err = Some(e),
            }
        });
        HostData::I64(o)
    } else {
        let (x, y) = (a.as_f32(), b.as_f32());
        let mut o = vec![0f32; n];
        strix_kernels::shape::for_each_broadcast(&ad, &bd, &od, |oi, i, j| {
            match bin_f32(op, x[i], y[j]) {
                Ok(v) => o[oi] = v,
                Err(e) => err = Some(e),
            }
        });
        HostData::F32(o)
    };
    if let Some(e) = err {
        return Err(e);
    }
    Ok(HostTensor {
        shape: out_shape,
        data,
    })
}

fn fold(imp: &Importer, n: &pb::NodeProto, _: &Attrs) -> Result<Vec<HostTensor>> {
    if n.input.len() != 2 {
        return Err(cannot_fold(imp, n));
    }
    let (a, b) = (imp.konst(&n.input[0])?, imp.konst(&n.input[1])?);
    Ok(vec![broadcast_apply(a, b, &n.op_type)?])
}

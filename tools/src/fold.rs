//! Constant folding at import: evaluates nodes whose inputs are all constants
//! (shape arithmetic, weight reshapes) on host tensors.

use crate::ir::{HostData, HostTensor};
use crate::onnx::{NodeAttrs, OnnxImporter};
use anyhow::{anyhow, bail, Result};
use tract_onnx::pb;

fn norm(axis: i64, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize > rank {
        bail!("axis {axis} out of range for rank {rank}");
    }
    Ok(a as usize)
}

/// Target shape of Reshape / Flatten / Squeeze / Unsqueeze on `s`.
pub(crate) fn reshape_target(
    imp: &OnnxImporter,
    n: &pb::NodeProto,
    a: &NodeAttrs,
    s: &[usize],
) -> Result<Vec<usize>> {
    let total: usize = s.iter().product();
    match n.op_type.as_str() {
        "Reshape" => {
            let spec = imp
                .konst_of(&n.input[1])
                .map_err(|_| anyhow!("Reshape with a non-constant shape"))?
                .as_i64();
            let allow_zero = a.int("allowzero", 0) != 0;
            let mut out: Vec<usize> = Vec::with_capacity(spec.len());
            let mut infer = None;
            for (i, &d) in spec.iter().enumerate() {
                match d {
                    -1i64 => {
                        if infer.replace(i).is_some() {
                            bail!("Reshape shape {spec:?} has two -1");
                        }
                        out.push(1);
                    }
                    0 if !allow_zero => out.push(
                        *s.get(i)
                            .ok_or_else(|| anyhow!("Reshape 0 beyond input rank"))?,
                    ),
                    d if d >= 0 => out.push(d as usize),
                    _ => bail!("Reshape shape {spec:?} is invalid"),
                }
            }
            if let Some(i) = infer {
                let known: usize = out.iter().product();
                if known == 0 || !total.is_multiple_of(known) {
                    bail!("cannot reshape {s:?} to {spec:?}");
                }
                out[i] = total / known;
            }
            if out.iter().product::<usize>() != total {
                bail!("cannot reshape {s:?} ({total} elements) to {out:?}");
            }
            Ok(out)
        }
        "Flatten" => {
            let axis = norm(a.int("axis", 1), s.len())?;
            Ok(vec![s[..axis].iter().product(), s[axis..].iter().product()])
        }
        "Squeeze" => {
            let axes = if imp.opset() >= 13 {
                imp.opt_konst_of(n, 1)?.map(|t| t.as_i64())
            } else {
                a.ints("axes")
            };
            let axes: Vec<usize> = match axes {
                Some(v) => v.iter().map(|&x| norm(x, s.len())).collect::<Result<_>>()?,
                None => (0..s.len()).filter(|&i| s[i] == 1).collect(),
            };
            if axes.iter().any(|&i| i >= s.len() || s[i] != 1) {
                bail!("Squeeze of non-unit axes {axes:?} of {s:?}");
            }
            Ok((0..s.len())
                .filter(|i| !axes.contains(i))
                .map(|i| s[i])
                .collect())
        }
        "Unsqueeze" => {
            let axes = if imp.opset() >= 13 {
                imp.opt_konst_of(n, 1)?.map(|t| t.as_i64())
            } else {
                a.ints("axes")
            };
            let axes = axes.ok_or_else(|| anyhow!("Unsqueeze without axes"))?;
            let r = s.len() + axes.len();
            let mut axes: Vec<usize> = axes
                .iter()
                .map(|&x| {
                    let y = if x < 0 { x + r as i64 } else { x };
                    usize::try_from(y)
                        .ok()
                        .filter(|&y| y < r)
                        .ok_or_else(|| anyhow!("Unsqueeze axis {x} out of range"))
                })
                .collect::<Result<_>>()?;
            axes.sort();
            let mut out = Vec::with_capacity(r);
            let mut it = s.iter();
            for i in 0..r {
                if axes.contains(&i) {
                    out.push(1);
                } else {
                    out.push(
                        *it.next()
                            .ok_or_else(|| anyhow!("Unsqueeze axes out of range"))?,
                    );
                }
            }
            Ok(out)
        }
        _ => unreachable!(),
    }
}

/// Per-axis start, step and output shape of an ONNX Slice on shape `s`.
pub(crate) fn slice_params(
    imp: &OnnxImporter,
    n: &pb::NodeProto,
    a: &NodeAttrs,
    s: &[usize],
) -> Result<(Vec<usize>, Vec<isize>, Vec<usize>)> {
    let r = s.len();
    let (starts, ends, axes, steps) = if imp.opset() < 10 {
        (
            a.ints("starts").unwrap_or_default(),
            a.ints("ends").unwrap_or_default(),
            a.ints("axes"),
            None,
        )
    } else {
        let get = |i| imp.opt_konst_of(n, i).map(|t| t.map(|t| t.as_i64()));
        (
            get(1)?.unwrap_or_default(),
            get(2)?.unwrap_or_default(),
            get(3)?,
            get(4)?,
        )
    };
    let axes: Vec<usize> = match axes {
        Some(v) => v
            .iter()
            .map(|&x| norm(x, r.saturating_sub(1)).or_else(|_| norm(x, r)))
            .collect::<Result<_>>()?,
        None => (0..starts.len()).collect(),
    };
    let mut st = vec![0usize; r];
    let mut sp = vec![1isize; r];
    let mut out = s.to_vec();
    for (i, &ax) in axes.iter().enumerate() {
        if ax >= r {
            bail!("Slice axis {ax} out of range");
        }
        let d = s[ax] as i64;
        let step = steps.as_ref().map(|v| v[i]).unwrap_or(1);
        if step == 0 {
            bail!("Slice step 0");
        }
        let fix = |v: i64| if v < 0 { v + d } else { v };
        let (mut b, mut e) = (fix(starts[i]), fix(ends[i]));
        let len = if step > 0 {
            b = b.clamp(0, d);
            e = e.clamp(0, d);
            if e > b {
                (e - b + step - 1) / step
            } else {
                0
            }
        } else {
            b = b.clamp(-1, d - 1);
            e = e.clamp(-1, d - 1);
            if b > e {
                (b - e + (-step) - 1) / (-step)
            } else {
                0
            }
        };
        st[ax] = b.max(0) as usize;
        sp[ax] = step as isize;
        out[ax] = len as usize;
    }
    Ok((st, sp, out))
}

pub(crate) fn split_sizes(
    imp: &OnnxImporter,
    n: &pb::NodeProto,
    a: &NodeAttrs,
    dim: usize,
) -> Result<Vec<usize>> {
    let explicit = if imp.opset() >= 13 {
        imp.opt_konst_of(n, 1)?.map(|t| t.as_i64())
    } else {
        a.ints("split")
    };
    let sizes: Vec<usize> = match explicit {
        Some(v) => v.iter().map(|&x| x.max(0) as usize).collect(),
        None => {
            let k = n.output.len();
            let chunk = dim.div_ceil(k);
            (0..k)
                .map(|i| chunk.min(dim.saturating_sub(i * chunk)))
                .collect()
        }
    };
    if sizes.iter().sum::<usize>() != dim || sizes.len() != n.output.len() {
        bail!("Split sizes {sizes:?} do not cover {dim}");
    }
    Ok(sizes)
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

fn broadcast_apply(a: &HostTensor, b: &HostTensor, op: &str) -> Result<HostTensor> {
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

fn map_data(
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

/// Evaluates a node with constant inputs; returns its outputs.
pub(crate) fn eval(imp: &OnnxImporter, n: &pb::NodeProto) -> Result<Vec<HostTensor>> {
    let a = NodeAttrs(n);
    let inp = |i: usize| imp.konst_of(&n.input[i]);
    let op = n.op_type.as_str();
    let one = |t: HostTensor| Ok(vec![t]);
    match op {
        "Identity" | "Dropout" => one(inp(0)?.clone()),
        "Cast" => {
            let t = inp(0)?;
            let to = a.int("to", 1);
            // 1 float, 10 f16, 11 double; everything else integer-like.
            if matches!(to, 1 | 10 | 11) {
                one(HostTensor::f32(t.shape.clone(), t.as_f32()))
            } else {
                one(HostTensor::i64(t.shape.clone(), t.as_i64()))
            }
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Equal" | "Less" | "Greater"
            if n.input.len() == 2 =>
        {
            one(broadcast_apply(inp(0)?, inp(1)?, op)?)
        }
        "Sqrt" | "Neg" | "Floor" | "Ceil" | "Exp" | "Relu" | "Sigmoid" | "Abs" | "Reciprocal" => {
            let t = inp(0)?;
            if t.is_i64() && matches!(op, "Neg" | "Abs" | "Relu") {
                let v = t.as_i64();
                let f = |x: i64| match op {
                    "Neg" => -x,
                    "Abs" => x.abs(),
                    _ => x.max(0),
                };
                return one(HostTensor::i64(
                    t.shape.clone(),
                    v.into_iter().map(f).collect(),
                ));
            }
            let f = |x: f32| match op {
                "Sqrt" => x.sqrt(),
                "Neg" => -x,
                "Floor" => x.floor(),
                "Ceil" => x.ceil(),
                "Exp" => x.exp(),
                "Relu" => x.max(0.0),
                "Sigmoid" => 1.0 / (1.0 + (-x).exp()),
                "Abs" => x.abs(),
                _ => 1.0 / x,
            };
            one(HostTensor::f32(
                t.shape.clone(),
                t.as_f32().into_iter().map(f).collect(),
            ))
        }
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
            let t = inp(0)?;
            let shape = reshape_target(imp, n, &a, &t.shape)?;
            one(HostTensor {
                shape,
                data: t.data.clone(),
            })
        }
        "Concat" => {
            let ts: Vec<&HostTensor> = (0..n.input.len()).map(inp).collect::<Result<_>>()?;
            let r = ts[0].shape.len().max(1);
            let axis = norm(a.int("axis", 0), r - 1)
                .or_else(|_| norm(a.int("axis", 0), r))?
                .min(r - 1);
            let any_f = ts.iter().any(|t| !t.is_i64());
            let mut shape = ts[0].shape.clone();
            if shape.is_empty() {
                shape = vec![1];
            }
            shape[axis] = ts
                .iter()
                .map(|t| t.shape.get(axis).copied().unwrap_or(1))
                .sum();
            let outer: usize = shape[..axis].iter().product();
            let (mut fv, mut iv) = (vec![], vec![]);
            for b in 0..outer {
                for t in &ts {
                    let chunk = t.len() / outer.max(1);
                    if any_f {
                        fv.extend_from_slice(&t.as_f32()[b * chunk..(b + 1) * chunk]);
                    } else {
                        iv.extend_from_slice(&t.as_i64()[b * chunk..(b + 1) * chunk]);
                    }
                }
            }
            one(if any_f {
                HostTensor::f32(shape, fv)
            } else {
                HostTensor::i64(shape, iv)
            })
        }
        "Gather" => {
            let (t, idx) = (inp(0)?, inp(1)?);
            let r = t.shape.len();
            let axis = norm(a.int("axis", 0), r.saturating_sub(1))?;
            let dim = t.shape[axis];
            let ids: Vec<usize> = idx
                .as_i64()
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + dim as i64 } else { i };
                    usize::try_from(j)
                        .ok()
                        .filter(|&j| j < dim)
                        .ok_or_else(|| anyhow!("Gather index {i} out of range"))
                })
                .collect::<Result<_>>()?;
            let outer: usize = t.shape[..axis].iter().product();
            let inner: usize = t.shape[axis + 1..].iter().product();
            let mut shape: Vec<usize> = t.shape[..axis].to_vec();
            shape.extend(&idx.shape);
            shape.extend(&t.shape[axis + 1..]);
            let total = outer * ids.len() * inner;
            one(map_data(
                t,
                |_, o| {
                    let b = o / (ids.len() * inner);
                    let rem = o % (ids.len() * inner);
                    (b * dim + ids[rem / inner]) * inner + rem % inner
                },
                shape,
                total,
            ))
        }
        "Slice" => {
            let t = inp(0)?;
            let (starts, steps, out) = slice_params(imp, n, &a, &t.shape)?;
            let total: usize = out.iter().product();
            let mut strides = vec![1usize; t.shape.len()];
            for i in (0..t.shape.len().saturating_sub(1)).rev() {
                strides[i] = strides[i + 1] * t.shape[i + 1];
            }
            let outc = out.clone();
            one(map_data(
                t,
                move |_, mut o| {
                    let mut off = 0isize;
                    for d in (0..outc.len()).rev() {
                        let i = o % outc[d];
                        o /= outc[d];
                        off += (starts[d] as isize + i as isize * steps[d]) * strides[d] as isize;
                    }
                    off as usize
                },
                out,
                total,
            ))
        }
        "Transpose" => {
            let t = inp(0)?;
            let r = t.shape.len();
            let perm: Vec<usize> = match a.ints("perm") {
                Some(p) => p.iter().map(|&x| norm(x, r - 1)).collect::<Result<_>>()?,
                None => (0..r).rev().collect(),
            };
            let out: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
            let total = t.len();
            let mut strides = vec![1usize; r];
            for i in (0..r.saturating_sub(1)).rev() {
                strides[i] = strides[i + 1] * t.shape[i + 1];
            }
            let outc = out.clone();
            one(map_data(
                t,
                move |_, mut o| {
                    let mut off = 0;
                    for d in (0..r).rev() {
                        off += (o % outc[d]) * strides[perm[d]];
                        o /= outc[d];
                    }
                    off
                },
                out,
                total,
            ))
        }
        "ConstantOfShape" => {
            let shape: Vec<usize> = inp(0)?
                .as_i64()
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect();
            let n_el: usize = shape.iter().product();
            let value = match a.tensor("value") {
                Some(t) => crate::onnx::tensor_from_proto(t)?,
                None => HostTensor::f32(vec![1], vec![0.0]),
            };
            one(match value.data {
                HostData::F32(v) => {
                    HostTensor::f32(shape, vec![v.first().copied().unwrap_or(0.0); n_el])
                }
                HostData::I64(v) => {
                    HostTensor::i64(shape, vec![v.first().copied().unwrap_or(0); n_el])
                }
            })
        }
        "Expand" => {
            let t = inp(0)?;
            let target: Vec<usize> = inp(1)?
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
            one(broadcast_apply(t, &ones, "Add")?)
        }
        "Range" => {
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
                one(HostTensor::i64(vec![v.len()], v))
            } else {
                let (s, l, d) = (s.as_f32()[0], l.as_f32()[0], d.as_f32()[0]);
                let cnt = ((l - s) / d).ceil().max(0.0) as usize;
                one(HostTensor::f32(
                    vec![cnt],
                    (0..cnt).map(|i| s + i as f32 * d).collect(),
                ))
            }
        }
        _ => bail!("cannot fold constant operator {op} (opset {})", imp.opset()),
    }
}

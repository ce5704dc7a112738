//! Validation of an untrusted [`Graph`] against its constants, so that
//! execution can neither panic nor read out of bounds. Every check here
//! mirrors an index computation in `exec.rs`.

use crate::error::{Error, Result};
use crate::graph::{Consts, DType, Graph, Node, Op, Storage, Tensor};
use strix_kernels::driver::fold_bias_sparse;
use strix_kernels::reference::{ConvGeometry, SparseWeights};
use strix_kernels::shape::{broadcast_shape, MAX_RANK};

/// Largest reduction the int8 kernels accept (their documented overflow bound).
pub const MAX_QS8_REDUCTION: usize = 33_000;

pub fn validate(g: &Graph, c: &Consts) -> Result<()> {
    let nt = g.tensors.len();
    // The compiler never writes infinities or NaNs (it refuses weights beyond
    // the f16 range), so one here is corruption, not a model.
    if let Some(i) = c.f16.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "f16 constant {i} is {} (f16 weights must be finite)",
            c.f16[i]
        )));
    }
    // Element counts must not overflow and must fit their storage.
    for (i, t) in g.tensors.iter().enumerate() {
        if t.shape.len() > MAX_RANK {
            return Err(Error::Invalid(format!(
                "tensor {i} '{}' has rank {} > {MAX_RANK}",
                t.name,
                t.shape.len()
            )));
        }
        let len = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&l| l < (1 << 31))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "tensor {i} '{}' is too large: {:?}",
                    t.name, t.shape
                ))
            })?;
        let (cap, what) = match (t.storage, t.dtype) {
            (Storage::Arena { .. }, DType::I8) => (g.arena_i8, "int8 arena"),
            (Storage::Arena { .. }, DType::F32) => (g.arena_f32, "f32 arena"),
            (Storage::Arena { .. }, DType::I32) => {
                return Err(Error::Invalid(format!(
                    "tensor {i} '{}': int32 activations are not supported",
                    t.name
                )))
            }
            (Storage::Const { .. }, DType::I8) => (c.i8.len(), "int8 constants"),
            (Storage::Const { .. }, DType::I32) => (c.i32.len(), "int32 constants"),
            (Storage::Const { .. }, DType::F32) => (c.f32.len(), "f32 constants"),
            (Storage::ConstF16 { .. }, DType::F32) => (c.f16.len(), "f16 constants"),
            (Storage::ConstF16 { .. }, d) => {
                return Err(Error::Invalid(format!(
                    "tensor {i} '{}' is {d:?} but stored as f16 (only f32 tensors may be)",
                    t.name
                )))
            }
        };
        let off = match t.storage {
            Storage::Arena { offset }
            | Storage::Const { offset }
            | Storage::ConstF16 { offset } => offset,
        };
        if off.checked_add(len).is_none_or(|end| end > cap) {
            return Err(Error::Invalid(format!(
                "tensor {i} '{}' ({len} elements at {off}) lies outside the {what} ({cap} elements)",
                t.name
            )));
        }
        if let Some(q) = t.quant {
            if !(q.scale.is_finite() && q.scale > 0.0 && (-128..=127).contains(&q.zero_point)) {
                return Err(Error::Invalid(format!(
                    "tensor {i} '{}' has bad quantization {q:?}",
                    t.name
                )));
            }
        }
        if t.dtype == DType::I8 && matches!(t.storage, Storage::Arena { .. }) && t.quant.is_none() {
            return Err(Error::Invalid(format!(
                "int8 tensor {i} '{}' has no quantization",
                t.name
            )));
        }
    }
    if g.arena_i8 > (1 << 31) || g.arena_f32 > (1 << 29) {
        return Err(Error::Invalid(format!(
            "arena of {} bytes is too large",
            g.arena_bytes()
        )));
    }
    let mut defined = vec![false; nt];
    for (i, t) in g.tensors.iter().enumerate() {
        defined[i] = t.storage.is_const();
    }
    for &i in &g.inputs {
        let t = g
            .tensors
            .get(i)
            .ok_or_else(|| Error::Invalid(format!("graph input {i} does not exist")))?;
        if t.dtype != DType::F32 || !matches!(t.storage, Storage::Arena { .. }) {
            return Err(Error::Invalid(format!(
                "graph input '{}' must be an f32 activation",
                t.name
            )));
        }
        defined[i] = true;
    }
    for n in &g.nodes {
        let bad = |msg: String| Error::InvalidNode {
            node: n.name.clone(),
            op: n.op.name(),
            msg,
        };
        for &i in n.inputs.iter().chain(std::iter::once(&n.output)) {
            if i >= nt {
                return Err(bad(format!("tensor index {i} out of range")));
            }
        }
        for &i in &n.inputs {
            if !defined[i] {
                return Err(bad(format!(
                    "reads tensor '{}' before it is computed",
                    g.tensors[i].name
                )));
            }
        }
        let out = &g.tensors[n.output];
        if !matches!(out.storage, Storage::Arena { .. }) || defined[n.output] {
            return Err(bad(format!(
                "output '{}' must be a fresh activation",
                out.name
            )));
        }
        check_overlap(g, n).map_err(bad)?;
        check_node(g, c, n).map_err(bad)?;
        defined[n.output] = true;
    }
    for &o in &g.outputs {
        if !defined.get(o).copied().unwrap_or(false) || g.tensors[o].dtype == DType::I32 {
            return Err(Error::Invalid(format!(
                "graph output {o} is never computed"
            )));
        }
    }
    Ok(())
}

fn range(t: &Tensor) -> Option<(DType, usize, usize)> {
    match t.storage {
        Storage::Arena { offset } => Some((t.dtype, offset, offset + t.len())),
        Storage::Const { .. } | Storage::ConstF16 { .. } => None,
    }
}

/// A node may not write over its own inputs (a Reshape may alias exactly).
fn check_overlap(g: &Graph, n: &Node) -> std::result::Result<(), String> {
    let Some((dt, s, e)) = range(&g.tensors[n.output]) else {
        return Ok(());
    };
    for &i in &n.inputs {
        if let Some((dt2, s2, e2)) = range(&g.tensors[i]) {
            let exact_alias = matches!(n.op, Op::Reshape) && s == s2 && e == e2;
            if dt == dt2 && s2 < e && s < e2 && !exact_alias && s < e {
                return Err(format!(
                    "output overlaps input '{}' in the arena",
                    g.tensors[i].name
                ));
            }
        }
    }
    Ok(())
}

fn want(cond: bool, msg: impl FnOnce() -> String) -> std::result::Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

fn conv_ok(geom: &ConvGeometry, x: &Tensor, out: &Tensor) -> std::result::Result<usize, String> {
    want(geom.is_valid(), || format!("invalid geometry {geom:?}"))?;
    // 1-D convs keep their `[N, C, W]` shape (height 1 in the geometry).
    let one_d = x.shape.len() == 3 && out.shape.len() == 3 && geom.in_h == 1 && geom.out_h == 1;
    want(
        one_d || (x.shape.len() == 4 && out.shape.len() == 4),
        || "conv tensors must be 4-D (or 3-D with height 1)".into(),
    )?;
    let batch = x.shape[0];
    want(out.shape[0] == batch, || "batch mismatch".into())?;
    want(x.len() == batch * geom.input_len(), || {
        format!("input {:?} does not match geometry", x.shape)
    })?;
    want(out.len() == batch * geom.output_len(), || {
        format!("output {:?} does not match geometry", out.shape)
    })?;
    Ok(batch)
}

fn check_node(g: &Graph, c: &Consts, n: &Node) -> std::result::Result<(), String> {
    let t = |k: usize| &g.tensors[n.inputs[k]];
    let out = &g.tensors[n.output];
    let arity = |lo: usize, hi: usize| {
        want(n.inputs.len() >= lo && n.inputs.len() <= hi, || {
            format!("expects {lo}..={hi} inputs, has {}", n.inputs.len())
        })
    };
    let dtypes = |k: usize, d: DType| {
        want(t(k).dtype == d, || {
            format!("input {k} must be {d:?}, is {:?}", t(k).dtype)
        })
    };
    let is_const = |k: usize| t(k).storage.is_const();
    let out_dt = |d: DType| {
        want(out.dtype == d, || {
            format!("output must be {d:?}, is {:?}", out.dtype)
        })
    };
    let rq_ok = |k: usize, count: usize| -> std::result::Result<(), String> {
        want(
            is_const(k) && t(k).dtype == DType::I32 && t(k).len() == 2 * count,
            || "requantization table has the wrong size".into(),
        )?;
        let Storage::Const { offset } = t(k).storage else {
            return Err("requantization must be constant".into());
        };
        let table = &c.i32[offset..offset + 2 * count];
        want(
            table.chunks(2).all(|p| {
                rq_sane(strix_kernels::Requant {
                    mult: p[0],
                    shift: p[1],
                })
            }),
            || "requantization multiplier out of range".into(),
        )?;
        bias_ok(c, t(k - 1))
    };
    match &n.op {
        Op::Conv {
            geom,
            act_min,
            act_max,
        } => {
            arity(3, 3)?;
            for k in 0..3 {
                dtypes(k, DType::F32)?;
            }
            out_dt(DType::F32)?;
            conv_ok(geom, t(0), out)?;
            want(
                t(1).len() == geom.weight_len() && t(2).len() == geom.out_c,
                || "weights/bias size".into(),
            )?;
            want(!act_min.is_nan() && !act_max.is_nan(), || {
                "NaN activation bounds".into()
            })?;
        }
        Op::QConv { geom, q } => {
            arity(4, 4)?;
            dtypes(0, DType::I8)?;
            dtypes(1, DType::I8)?;
            dtypes(2, DType::I32)?;
            out_dt(DType::I8)?;
            conv_ok(geom, t(0), out)?;
            want(is_const(1) && t(1).len() == geom.weight_len(), || {
                "weights size".into()
            })?;
            want(is_const(2) && t(2).len() == geom.out_c, || {
                "bias size".into()
            })?;
            rq_ok(3, geom.out_c)?;
            want(geom.k() <= MAX_QS8_REDUCTION, || {
                format!("reduction {} exceeds the int8 bound", geom.k())
            })?;
            want(
                zp_ok(q.in_zp) && zp_ok(q.out_zp) && q.act_min <= q.act_max,
                || "bad zero point".into(),
            )?;
        }
        Op::QConvSparse { geom, q } => {
            arity(6, 6)?;
            dtypes(0, DType::I8)?;
            dtypes(1, DType::I8)?;
            dtypes(2, DType::I32)?;
            dtypes(3, DType::I32)?;
            dtypes(4, DType::I32)?;
            out_dt(DType::I8)?;
            conv_ok(geom, t(0), out)?;
            want(geom.groups == 1, || {
                format!("sparse conv must be ungrouped, has {} groups", geom.groups)
            })?;
            want((1..=4).all(is_const), || {
                "sparse weights, blocks, row_ptr and bias must be constants".into()
            })?;
            let konst = |k: usize| match t(k).storage {
                Storage::Const { offset } => offset..offset + t(k).len(),
                // int8/int32 dtypes checked above: never stored as f16.
                Storage::Arena { .. } | Storage::ConstF16 { .. } => 0..0,
            };
            let sw = SparseWeights::new(
                geom.out_c,
                geom.k(),
                &c.i32[konst(3)],
                &c.i32[konst(2)],
                &c.i8[konst(1)],
            )
            .map_err(|e| format!("sparse weights: {e}"))?;
            want(t(4).len() == geom.out_c, || "bias size".into())?;
            rq_ok(5, geom.out_c)?;
            want(geom.k() <= MAX_QS8_REDUCTION, || {
                format!("reduction {} exceeds the int8 bound", geom.k())
            })?;
            want(
                zp_ok(q.in_zp) && zp_ok(q.out_zp) && q.act_min <= q.act_max,
                || "bad zero point".into(),
            )?;
            want(
                fold_bias_sparse(&sw, &c.i32[konst(4)], q.in_zp).is_some(),
                || "bias with the folded input zero point exceeds the int8 bound".into(),
            )?;
        }
        Op::QConvF32 {
            geom,
            in_zp,
            act_min,
            act_max,
        } => {
            arity(4, 4)?;
            dtypes(0, DType::I8)?;
            dtypes(1, DType::I8)?;
            dtypes(2, DType::I32)?;
            dtypes(3, DType::F32)?;
            out_dt(DType::F32)?;
            conv_ok(geom, t(0), out)?;
            want(is_const(1) && t(1).len() == geom.weight_len(), || {
                "weights size".into()
            })?;
            want(
                is_const(2) && t(2).len() == geom.out_c && t(3).len() == geom.out_c,
                || "bias/scale size".into(),
            )?;
            want(geom.k() <= MAX_QS8_REDUCTION, || {
                format!("reduction {} exceeds the int8 bound", geom.k())
            })?;
            want(
                zp_ok(*in_zp) && !act_min.is_nan() && !act_max.is_nan(),
                || "bad parameters".into(),
            )?;
            bias_ok(c, t(2))?;
        }
        Op::QGemmF32 {
            m,
            n: nn,
            k,
            in_zp,
            act_min,
            act_max,
        } => {
            arity(4, 4)?;
            dtypes(0, DType::I8)?;
            dtypes(1, DType::I8)?;
            dtypes(2, DType::I32)?;
            dtypes(3, DType::F32)?;
            out_dt(DType::F32)?;
            want(t(0).len() == m * k && out.len() == m * nn, || {
                "input/output size".into()
            })?;
            want(is_const(1) && t(1).len() == nn * k, || {
                "weights size".into()
            })?;
            want(
                is_const(2) && t(2).len() == *nn && t(3).len() == *nn,
                || "bias/scale size".into(),
            )?;
            want(*k <= MAX_QS8_REDUCTION, || {
                "reduction exceeds the int8 bound".into()
            })?;
            want(
                zp_ok(*in_zp) && !act_min.is_nan() && !act_max.is_nan(),
                || "bad parameters".into(),
            )?;
            bias_ok(c, t(2))?;
        }
        Op::Gemm {
            m,
            n: nn,
            k,
            batch,
            act_min,
            act_max,
        } => {
            arity(2, 3)?;
            out_dt(DType::F32)?;
            dtypes(0, DType::F32)?;
            dtypes(1, DType::F32)?;
            let (m, nn, k, b) = (*m, *nn, *k, *batch);
            want(t(0).len() == b * m * k, || {
                format!("input has {} elements, expected {b}x{m}x{k}", t(0).len())
            })?;
            want(t(1).len() == k * nn || t(1).len() == b * k * nn, || {
                "weights size".into()
            })?;
            if n.inputs.len() == 3 {
                dtypes(2, DType::F32)?;
                want(t(2).len() == nn, || "bias size".into())?;
            }
            want(out.len() == b * m * nn, || "output size".into())?;
            want(!act_min.is_nan() && !act_max.is_nan(), || {
                "NaN activation bounds".into()
            })?;
        }
        Op::QGemm { m, n: nn, k, q } => {
            arity(4, 4)?;
            dtypes(0, DType::I8)?;
            dtypes(1, DType::I8)?;
            dtypes(2, DType::I32)?;
            out_dt(DType::I8)?;
            want(t(0).len() == m * k && out.len() == m * nn, || {
                "input/output size".into()
            })?;
            want(is_const(1) && t(1).len() == nn * k, || {
                "weights size".into()
            })?;
            want(is_const(2) && t(2).len() == *nn, || "bias size".into())?;
            rq_ok(3, *nn)?;
            want(*k <= MAX_QS8_REDUCTION, || {
                "reduction exceeds the int8 bound".into()
            })?;
            want(zp_ok(q.in_zp) && zp_ok(q.out_zp), || {
                "bad zero point".into()
            })?;
        }
        Op::MaxPool { geom } | Op::AvgPool { geom } => {
            arity(1, 1)?;
            want(geom.is_valid(), || "invalid geometry".into())?;
            want(t(0).dtype == out.dtype && out.dtype != DType::I32, || {
                "dtype mismatch".into()
            })?;
            want(
                t(0).len() == geom.input_len() && out.len() == geom.output_len(),
                || "size mismatch".into(),
            )?;
            if out.dtype == DType::I8 {
                want(t(0).quant == out.quant, || {
                    "int8 pooling must keep quantization".into()
                })?;
            }
        }
        Op::Binary { .. } | Op::QAdd { .. } | Op::QMul { .. } => {
            arity(2, 2)?;
            let d = if matches!(n.op, Op::Binary { .. }) {
                DType::F32
            } else {
                DType::I8
            };
            dtypes(0, d)?;
            dtypes(1, d)?;
            out_dt(d)?;
            let mut shape = [0; MAX_RANK];
            let r = broadcast_shape(&t(0).shape, &t(1).shape, &mut shape).ok_or_else(|| {
                format!(
                    "shapes {:?} and {:?} do not broadcast",
                    t(0).shape,
                    t(1).shape
                )
            })?;
            want(shape[..r] == out.shape[..], || {
                "output shape is not the broadcast shape".into()
            })?;
            if let Op::QAdd { p } = &n.op {
                want(zp_ok(p.a_zp) && zp_ok(p.b_zp) && zp_ok(p.out_zp), || {
                    "bad zero point".into()
                })?;
                want(
                    rq_sane(p.a_rq) && rq_sane(p.b_rq) && rq_sane(p.out_rq),
                    || "bad multiplier".into(),
                )?;
                want(p.a_rq.shift <= 0 && p.b_rq.shift <= 0, || {
                    "input multipliers must be < 1".into()
                })?;
            }
            if let Op::QMul { p } = &n.op {
                want(
                    zp_ok(p.a_zp) && zp_ok(p.b_zp) && zp_ok(p.out_zp) && rq_sane(p.rq),
                    || "bad parameters".into(),
                )?;
                want(p.rq.shift <= 14, || "multiplier too large".into())?;
            }
        }
        Op::Unary { .. } => {
            arity(1, 1)?;
            dtypes(0, DType::F32)?;
            out_dt(DType::F32)?;
            want(t(0).len() == out.len(), || "size mismatch".into())?;
        }
        Op::Lut => {
            arity(2, 2)?;
            dtypes(0, DType::I8)?;
            out_dt(DType::I8)?;
            want(
                is_const(1) && t(1).dtype == DType::I8 && t(1).len() == 256,
                || "table must be 256 int8".into(),
            )?;
            want(t(0).len() == out.len(), || "size mismatch".into())?;
        }
        Op::Softmax { outer, axis, inner } | Op::ReduceMean { outer, axis, inner } => {
            arity(1, 1)?;
            dtypes(0, DType::F32)?;
            out_dt(DType::F32)?;
            let total = outer * axis * inner;
            want(t(0).len() == total && *axis > 0, || "size mismatch".into())?;
            let o = if matches!(n.op, Op::Softmax { .. }) {
                total
            } else {
                outer * inner
            };
            want(out.len() == o, || "output size mismatch".into())?;
        }
        Op::Concat { axis, requant } => {
            arity(1, 4096)?;
            want(requant.len() == n.inputs.len(), || {
                "one requantization per input".into()
            })?;
            let r = out.shape.len();
            want(*axis < r, || "axis out of range".into())?;
            let mut sum = 0;
            for (k, rq) in requant.iter().enumerate() {
                dtypes(k, out.dtype)?;
                let s = &t(k).shape;
                want(s.len() == r, || "rank mismatch".into())?;
                for d in 0..r {
                    want(d == *axis || s[d] == out.shape[d], || {
                        format!("input {k} shape {s:?} vs {:?}", out.shape)
                    })?;
                }
                sum += s[*axis];
                if let Some(rq) = *rq {
                    want(
                        out.dtype == DType::I8 && rq_sane(rq) && rq.shift <= 8,
                        || "bad requantization".into(),
                    )?;
                }
            }
            want(sum == out.shape[*axis], || {
                "concat sizes do not add up".into()
            })?;
        }
        Op::Transpose { perm } => {
            arity(1, 1)?;
            want(t(0).dtype == out.dtype, || "dtype mismatch".into())?;
            let r = t(0).shape.len();
            let mut seen = [false; MAX_RANK];
            want(perm.len() == r && out.shape.len() == r, || {
                "perm rank".into()
            })?;
            for (i, &p) in perm.iter().enumerate() {
                want(p < r && !seen[p], || "not a permutation".into())?;
                seen[p] = true;
                want(out.shape[i] == t(0).shape[p], || "output shape".into())?;
            }
        }
        Op::Reshape => {
            arity(1, 1)?;
            want(t(0).dtype == out.dtype && t(0).len() == out.len(), || {
                "reshape changes size".into()
            })?;
        }
        Op::Slice { starts, steps } => {
            arity(1, 1)?;
            want(t(0).dtype == out.dtype, || "dtype mismatch".into())?;
            let s = &t(0).shape;
            let r = s.len();
            want(
                starts.len() == r && steps.len() == r && out.shape.len() == r,
                || "rank".into(),
            )?;
            for d in 0..r {
                if out.shape[d] == 0 {
                    continue;
                }
                let last = starts[d] as i128 + (out.shape[d] as i128 - 1) * steps[d] as i128;
                want(starts[d] < s[d] && last >= 0 && last < s[d] as i128, || {
                    format!("axis {d} out of range")
                })?;
            }
        }
        Op::Gather { axis, indices } => {
            arity(1, 1)?;
            want(t(0).dtype == out.dtype, || "dtype mismatch".into())?;
            let s = &t(0).shape;
            want(*axis < s.len(), || "axis".into())?;
            want(indices.iter().all(|&i| i < s[*axis]), || {
                "index out of range".into()
            })?;
            let mut expect = s.clone();
            expect[*axis] = indices.len();
            want(out.shape == expect, || "output shape".into())?;
        }
        Op::Pad { before, value } => {
            arity(1, 1)?;
            want(t(0).dtype == out.dtype, || "dtype mismatch".into())?;
            let s = &t(0).shape;
            want(
                before.len() == s.len() && out.shape.len() == s.len() && !s.is_empty(),
                || "rank".into(),
            )?;
            for d in 0..s.len() {
                want(out.shape[d] >= s[d] + before[d], || "padding shape".into())?;
            }
            want(
                value.is_finite() && (out.dtype == DType::F32 || (-128.0..=127.0).contains(value)),
                || "bad pad value".into(),
            )?;
        }
        Op::Lstm { geom } => {
            arity(6, 6)?;
            for k in 0..6 {
                dtypes(k, DType::F32)?;
            }
            out_dt(DType::F32)?;
            // The geometry is untrusted: every size it implies must be computable.
            let mul = |a: usize, b: usize| a.checked_mul(b);
            let sizes = (|| {
                let h4 = mul(4, geom.hidden)?;
                Some((
                    mul(mul(geom.seq, geom.batch)?, geom.input)?,
                    mul(h4, geom.input)?,
                    mul(h4, geom.hidden)?,
                    h4,
                    mul(geom.batch, geom.hidden)?,
                    mul(mul(geom.seq.checked_add(2)?, geom.batch)?, geom.hidden)?,
                ))
            })()
            .ok_or_else(|| format!("geometry {geom:?} overflows"))?;
            let (xl, wl, rl, bl, sl, ol) = sizes;
            want(geom.hidden > 0 && geom.batch > 0 && geom.input > 0, || {
                format!("empty geometry {geom:?}")
            })?;
            want(t(0).len() == xl, || {
                format!(
                    "x has {} elements, geometry {geom:?} needs {xl}",
                    t(0).len()
                )
            })?;
            want(
                t(1).len() == wl && t(2).len() == rl && t(3).len() == bl,
                || "w/r/b sizes do not match the geometry".into(),
            )?;
            want(t(4).len() == sl && t(5).len() == sl, || {
                format!("initial h/c must have {sl} elements")
            })?;
            want(out.len() == ol, || {
                format!("output has {} elements, expected {ol}", out.len())
            })?;
        }
        Op::Resize { geom } => {
            arity(1, 1)?;
            want(t(0).dtype == out.dtype, || "dtype mismatch".into())?;
            want(geom.in_h > 0 && geom.in_w > 0, || "empty input".into())?;
            want(
                t(0).len() == geom.input_len() && out.len() == geom.output_len(),
                || "size mismatch".into(),
            )?;
            if out.dtype == DType::I8 {
                want(t(0).quant == out.quant, || {
                    "int8 resize must keep quantization".into()
                })?;
            }
        }
        Op::Quantize => {
            arity(1, 1)?;
            dtypes(0, DType::F32)?;
            out_dt(DType::I8)?;
            want(t(0).len() == out.len(), || "size mismatch".into())?;
        }
        Op::Dequantize => {
            arity(1, 1)?;
            dtypes(0, DType::I8)?;
            out_dt(DType::F32)?;
            want(t(0).len() == out.len() && t(0).quant.is_some(), || {
                "size/quantization".into()
            })?;
        }
    }
    Ok(())
}

/// Bias must leave room for the accumulation (see the kernels' overflow bound).
fn bias_ok(c: &Consts, t: &Tensor) -> std::result::Result<(), String> {
    let Storage::Const { offset } = t.storage else {
        return Err("bias must be constant".into());
    };
    want(
        c.i32[offset..offset + t.len()]
            .iter()
            .all(|b| b.unsigned_abs() <= 1 << 30),
        || "bias exceeds 2^30".into(),
    )
}

fn zp_ok(z: i32) -> bool {
    (-128..=127).contains(&z)
}

fn rq_sane(r: strix_kernels::Requant) -> bool {
    r.mult >= 0 && (-31..=30).contains(&r.shift)
}

//! Validation of an untrusted [`Graph`] against its constants, so that
//! execution can neither panic nor read out of bounds. Every check here
//! mirrors an index computation in `exec.rs`.
//!
//! Every size computed from the file is computed with checked arithmetic:
//! a plain `usize` product wraps in release builds, so a dimension plus 2^63
//! would otherwise pass as a small size and the kernels would index with the
//! lie. After [`validate`] accepts a graph, every tensor has fewer than
//! [`MAX_ELEMENTS`] elements (so `Tensor::len` and `offset + len` no longer
//! overflow), every loop bound of every op is at most a tensor dimension,
//! and the arenas hold exactly what the tensors need.

use crate::error::{Error, Result};
use crate::graph::{Consts, DType, Graph, Node, Op, Storage, Tensor};
use strix_kernels::driver::fold_bias_sparse;
use strix_kernels::reference::{ConvGeometry, SparseWeights};
use strix_kernels::shape::{broadcast_shape, MAX_RANK};

/// Largest reduction the int8 kernels accept (their documented overflow bound).
pub const MAX_QS8_REDUCTION: usize = 33_000;

/// Every tensor has fewer elements than this, and so does the product of its
/// non-zero dimensions (so a zero-sized tensor cannot carry a 2^62 loop bound).
pub const MAX_ELEMENTS: usize = 1 << 31;

/// Most bytes the two arenas of one session may take together: 2 GiB, and
/// never more than `isize::MAX` (the most a Rust allocation may hold, which
/// on 32-bit targets is 2 GiB - 1).
pub const MAX_ARENA_BYTES: usize = if (isize::MAX as u64) < (1 << 31) {
    isize::MAX as usize
} else {
    1 << 31
};

/// Bound on every index a conv or pool computes along one axis (input plus
/// padding plus window extent): fits `i32`, hence `isize` on every target.
const MAX_AXIS: usize = i32::MAX as usize;

/// Most taps an int8 average-pooling window may have (`qs8_avgpool2d`'s
/// documented bound: sums of `|x - zp| <= 255` stay exact in `i32`).
const MAX_QS8_POOL_TAPS: usize = 1 << 23;

/// The plan's arenas end at their furthest activation rounded up to this many
/// elements (`plan` aligns every offset and size to 16).
const ARENA_ALIGN: usize = 16;

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
        // Also bounded with zeros read as ones: loops over the other
        // dimensions of an empty tensor must stay short too.
        let product = |zero_as_one: bool| {
            t.shape
                .iter()
                .try_fold(1usize, |a, &d| {
                    a.checked_mul(if zero_as_one { d.max(1) } else { d })
                })
                .filter(|&l| l < MAX_ELEMENTS)
        };
        let len = product(false)
            .filter(|_| product(true).is_some())
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
    check_arenas(g)?;
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

/// The arena sizes are derived from the tensors, not trusted: each must be
/// the end of its furthest activation rounded up to [`ARENA_ALIGN`] elements
/// (what `plan` writes), so a file cannot make `Session::new` allocate more
/// than its graph uses; together they must fit [`MAX_ARENA_BYTES`].
/// Contract: every tensor already checked to lie inside its storage.
fn check_arenas(g: &Graph) -> Result<()> {
    let need = |dt: DType| {
        g.tensors
            .iter()
            .filter(|t| t.dtype == dt)
            .filter_map(|t| range(t).map(|(_, _, end)| end))
            .max()
            .unwrap_or(0)
            .next_multiple_of(ARENA_ALIGN)
    };
    for (declared, dt, what) in [
        (g.arena_i8, DType::I8, "arena_i8"),
        (g.arena_f32, DType::F32, "arena_f32"),
    ] {
        let need = need(dt);
        if declared != need {
            return Err(Error::Invalid(format!(
                "{what} declares {declared} elements but its tensors need {need}"
            )));
        }
    }
    let bytes = g
        .arena_f32
        .checked_mul(4)
        .and_then(|b| b.checked_add(g.arena_i8))
        .filter(|&b| b <= MAX_ARENA_BYTES);
    if bytes.is_none() {
        return Err(Error::Invalid(format!(
            "arenas of {} int8 and {} f32 elements exceed {MAX_ARENA_BYTES} bytes",
            g.arena_i8, g.arena_f32
        )));
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

/// `a * b`, or an error naming `what` when it overflows.
fn mul(what: &str, a: usize, b: usize) -> std::result::Result<usize, String> {
    a.checked_mul(b)
        .ok_or_else(|| format!("{what} ({a} x {b}) overflows"))
}

/// One spatial axis of a conv or pool: windows of extent
/// `(kernel - 1) * dilation + 1` every `stride` elements, starting at
/// `-pad`. The declared output length must be the one this implies. The
/// trailing padding is not stored, so "implied" is: at least the windows that
/// fit without trailing padding (ONNX's count with none), and no window
/// starting past the input (trailing padding smaller than the window, which
/// also covers ceil-mode pooling and SAME padding); the leading padding must
/// be smaller than the window too. Then every window overlaps the input and
/// every index the kernels compute along the axis is below [`MAX_AXIS`].
fn axis_ok(
    axis: &str,
    input: usize,
    pad: usize,
    kernel: usize,
    stride: usize,
    dil: usize,
    out: usize,
) -> std::result::Result<(), String> {
    want(input > 0 && kernel > 0 && stride > 0 && dil > 0, || {
        format!("{axis}: input {input}, kernel {kernel}, stride {stride} and dilation {dil} must be non-zero")
    })?;
    // Past the input a stride only matters with one output (and a dilation
    // with a one-tap kernel), but the kernels still multiply by them.
    want(stride <= MAX_AXIS && dil <= MAX_AXIS, || {
        format!("{axis}: stride {stride} or dilation {dil} is too large")
    })?;
    let ext = (kernel - 1)
        .checked_mul(dil)
        .and_then(|e| e.checked_add(1))
        .filter(|&e| e <= MAX_AXIS)
        .ok_or_else(|| format!("{axis}: window of {kernel} taps dilated {dil} is too large"))?;
    want(pad < ext, || {
        format!("{axis}: padding {pad} is not smaller than the window ({ext})")
    })?;
    // pad < ext <= MAX_AXIS and input < MAX_ELEMENTS: no overflow.
    let padded = input + pad;
    want(
        padded.checked_add(ext).is_some_and(|e| e <= MAX_AXIS),
        || format!("{axis}: input {input} with padding {pad} and window {ext} is too large"),
    )?;
    let lo = if padded >= ext {
        (padded - ext) / stride + 1
    } else {
        1
    };
    let hi = (padded - 1) / stride + 1;
    want(lo <= out && out <= hi, || {
        let expect = if lo == hi {
            format!("{lo}")
        } else {
            format!("{lo}..={hi}")
        };
        format!(
            "{axis}: output {out} does not follow from input {input}, padding {pad}, \
             window {ext} and stride {stride} (expected {expect})"
        )
    })
}

/// Geometry and tensors of a conv agree exactly; returns the batch.
fn conv_ok(geom: &ConvGeometry, x: &Tensor, out: &Tensor) -> std::result::Result<usize, String> {
    want(geom.is_valid(), || format!("invalid geometry {geom:?}"))?;
    axis_ok(
        "height",
        geom.in_h,
        geom.pad_top,
        geom.kh,
        geom.stride_h,
        geom.dil_h,
        geom.out_h,
    )?;
    axis_ok(
        "width",
        geom.in_w,
        geom.pad_left,
        geom.kw,
        geom.stride_w,
        geom.dil_w,
        geom.out_w,
    )?;
    // 1-D convs keep their `[N, C, W]` shape (height 1 in the geometry).
    let one_d = x.shape.len() == 3 && out.shape.len() == 3 && geom.in_h == 1 && geom.out_h == 1;
    want(
        one_d || (x.shape.len() == 4 && out.shape.len() == 4),
        || "conv tensors must be 4-D (or 3-D with height 1)".into(),
    )?;
    let batch = x.shape[0];
    let shape = |c: usize, h: usize, w: usize| {
        if one_d {
            vec![batch, c, w]
        } else {
            vec![batch, c, h, w]
        }
    };
    // Whole shapes, not only lengths: every loop bound is then a dimension
    // of a tensor validation has bounded.
    let expect = shape(geom.in_c, geom.in_h, geom.in_w);
    want(x.shape == expect, || {
        format!(
            "input {:?} does not match the geometry ({expect:?})",
            x.shape
        )
    })?;
    let expect = shape(geom.out_c, geom.out_h, geom.out_w);
    want(out.shape == expect, || {
        format!(
            "output {:?} does not match the geometry ({expect:?})",
            out.shape
        )
    })?;
    Ok(batch)
}

/// `geom.weight_len()` and `geom.k()`, checked.
fn conv_sizes(geom: &ConvGeometry) -> std::result::Result<(usize, usize), String> {
    match (geom.checked_weight_len(), geom.checked_k()) {
        (Some(w), Some(k)) => Ok((w, k)),
        _ => Err(format!("weight size of {geom:?} overflows")),
    }
}

/// Activation bounds of an f32 output: ordered, and neither NaN
/// (`f32::clamp` panics on both).
fn act_ok(act_min: f32, act_max: f32) -> std::result::Result<(), String> {
    want(act_min <= act_max, || {
        format!("activation bounds [{act_min}, {act_max}] are NaN or out of order")
    })
}

/// Activation bounds of an int8 output (the kernels assert them ordered).
fn qact_ok(act_min: i8, act_max: i8) -> std::result::Result<(), String> {
    want(act_min <= act_max, || {
        format!("activation bounds [{act_min}, {act_max}] are out of order")
    })
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
        let pairs = mul("requantization table", 2, count)?;
        want(
            is_const(k) && t(k).dtype == DType::I32 && t(k).len() == pairs,
            || "requantization table has the wrong size".into(),
        )?;
        let Storage::Const { offset } = t(k).storage else {
            return Err("requantization must be constant".into());
        };
        let table = &c.i32[offset..offset + pairs];
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
            let (wl, _) = conv_sizes(geom)?;
            want(t(1).len() == wl && t(2).len() == geom.out_c, || {
                "weights/bias size".into()
            })?;
            act_ok(*act_min, *act_max)?;
        }
        Op::QConv { geom, q } => {
            arity(4, 4)?;
            dtypes(0, DType::I8)?;
            dtypes(1, DType::I8)?;
            dtypes(2, DType::I32)?;
            out_dt(DType::I8)?;
            conv_ok(geom, t(0), out)?;
            let (wl, k) = conv_sizes(geom)?;
            want(is_const(1) && t(1).len() == wl, || "weights size".into())?;
            want(is_const(2) && t(2).len() == geom.out_c, || {
                "bias size".into()
            })?;
            rq_ok(3, geom.out_c)?;
            want(k <= MAX_QS8_REDUCTION, || {
                format!("reduction {k} exceeds the int8 bound")
            })?;
            want(zp_ok(q.in_zp) && zp_ok(q.out_zp), || {
                "bad zero point".into()
            })?;
            qact_ok(q.act_min, q.act_max)?;
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
            let (_, k) = conv_sizes(geom)?;
            want(k <= MAX_QS8_REDUCTION, || {
                format!("reduction {k} exceeds the int8 bound")
            })?;
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
                k,
                &c.i32[konst(3)],
                &c.i32[konst(2)],
                &c.i8[konst(1)],
            )
            .map_err(|e| format!("sparse weights: {e}"))?;
            want(t(4).len() == geom.out_c, || "bias size".into())?;
            rq_ok(5, geom.out_c)?;
            want(zp_ok(q.in_zp) && zp_ok(q.out_zp), || {
                "bad zero point".into()
            })?;
            qact_ok(q.act_min, q.act_max)?;
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
            let (wl, k) = conv_sizes(geom)?;
            want(is_const(1) && t(1).len() == wl, || "weights size".into())?;
            want(
                is_const(2) && t(2).len() == geom.out_c && t(3).len() == geom.out_c,
                || "bias/scale size".into(),
            )?;
            want(k <= MAX_QS8_REDUCTION, || {
                format!("reduction {k} exceeds the int8 bound")
            })?;
            want(zp_ok(*in_zp), || "bad zero point".into())?;
            act_ok(*act_min, *act_max)?;
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
            gemm_ok(t(0), t(1), out, 1, *m, *nn, *k)?;
            want(is_const(1), || "weights must be constant".into())?;
            want(
                is_const(2) && t(2).len() == *nn && t(3).len() == *nn,
                || "bias/scale size".into(),
            )?;
            want(*k <= MAX_QS8_REDUCTION, || {
                "reduction exceeds the int8 bound".into()
            })?;
            want(zp_ok(*in_zp), || "bad zero point".into())?;
            act_ok(*act_min, *act_max)?;
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
            gemm_ok(t(0), t(1), out, *batch, *m, *nn, *k)?;
            if n.inputs.len() == 3 {
                dtypes(2, DType::F32)?;
                want(t(2).len() == *nn, || "bias size".into())?;
            }
            act_ok(*act_min, *act_max)?;
        }
        Op::QGemm { m, n: nn, k, q } => {
            arity(4, 4)?;
            dtypes(0, DType::I8)?;
            dtypes(1, DType::I8)?;
            dtypes(2, DType::I32)?;
            out_dt(DType::I8)?;
            gemm_ok(t(0), t(1), out, 1, *m, *nn, *k)?;
            want(is_const(1), || "weights must be constant".into())?;
            want(is_const(2) && t(2).len() == *nn, || "bias size".into())?;
            rq_ok(3, *nn)?;
            want(*k <= MAX_QS8_REDUCTION, || {
                "reduction exceeds the int8 bound".into()
            })?;
            want(zp_ok(q.in_zp) && zp_ok(q.out_zp), || {
                "bad zero point".into()
            })?;
            qact_ok(q.act_min, q.act_max)?;
        }
        Op::MaxPool { geom } | Op::AvgPool { geom } => {
            arity(1, 1)?;
            want(geom.is_valid(), || format!("invalid geometry {geom:?}"))?;
            want(t(0).dtype == out.dtype && out.dtype != DType::I32, || {
                "dtype mismatch".into()
            })?;
            axis_ok(
                "height",
                geom.in_h,
                geom.pad_top,
                geom.kh,
                geom.stride_h,
                1,
                geom.out_h,
            )?;
            axis_ok(
                "width",
                geom.in_w,
                geom.pad_left,
                geom.kw,
                geom.stride_w,
                1,
                geom.out_w,
            )?;
            let (il, ol) = geom
                .checked_input_len()
                .zip(geom.checked_output_len())
                .ok_or_else(|| format!("size of {geom:?} overflows"))?;
            want(t(0).len() == il && out.len() == ol, || {
                format!(
                    "input {:?} / output {:?} do not match the geometry ({il} / {ol} elements)",
                    t(0).shape,
                    out.shape
                )
            })?;
            let taps = mul("pooling window", geom.kh, geom.kw)?;
            if matches!(n.op, Op::AvgPool { .. }) && out.dtype == DType::I8 {
                want(taps <= MAX_QS8_POOL_TAPS, || {
                    format!(
                        "int8 average over {taps} taps exceeds the {MAX_QS8_POOL_TAPS}-tap bound"
                    )
                })?;
            }
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
                qact_ok(p.act_min, p.act_max)?;
            }
            if let Op::QMul { p } = &n.op {
                want(
                    zp_ok(p.a_zp) && zp_ok(p.b_zp) && zp_ok(p.out_zp) && rq_sane(p.rq),
                    || "bad parameters".into(),
                )?;
                want(p.rq.shift <= 14, || "multiplier too large".into())?;
                qact_ok(p.act_min, p.act_max)?;
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
            want(*outer > 0 && *axis > 0 && *inner > 0, || {
                format!("empty extent {outer} x {axis} x {inner}")
            })?;
            let total = mul(
                "outer x axis x inner",
                mul("outer x axis", *outer, *axis)?,
                *inner,
            )?;
            want(t(0).len() == total, || {
                format!("input {:?} is not {outer} x {axis} x {inner}", t(0).shape)
            })?;
            // outer * inner <= total: no overflow once total is known.
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
            let mut sum = 0usize;
            for (k, rq) in requant.iter().enumerate() {
                dtypes(k, out.dtype)?;
                let s = &t(k).shape;
                want(s.len() == r, || "rank mismatch".into())?;
                for d in 0..r {
                    want(d == *axis || s[d] == out.shape[d], || {
                        format!("input {k} shape {s:?} vs {:?}", out.shape)
                    })?;
                }
                sum = s[*axis]
                    .checked_add(sum)
                    .ok_or_else(|| "concat sizes overflow".to_string())?;
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
                want(
                    s[d].checked_add(before[d])
                        .is_some_and(|end| out.shape[d] >= end),
                    || {
                        format!("axis {d}: output {:?} cannot hold input {s:?} after padding {before:?}", out.shape)
                    },
                )?;
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
            want(
                geom.planes > 0
                    && geom.in_h > 0
                    && geom.in_w > 0
                    && geom.out_h > 0
                    && geom.out_w > 0,
                || format!("empty geometry {geom:?}"),
            )?;
            let (il, ol) = geom
                .checked_input_len()
                .zip(geom.checked_output_len())
                .ok_or_else(|| format!("size of {geom:?} overflows"))?;
            want(t(0).len() == il && out.len() == ol, || {
                "size mismatch".into()
            })?;
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

/// Sizes of a (batched) gemm `x [batch, m, k] @ w [k, n]` (or `[n, k]`, or
/// one per batch) into `[batch, m, n]`: every extent non-zero, so each is at
/// most a tensor's length, and every product checked.
fn gemm_ok(
    x: &Tensor,
    w: &Tensor,
    out: &Tensor,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
) -> std::result::Result<(), String> {
    want(batch > 0 && m > 0 && n > 0 && k > 0, || {
        format!("empty extent: batch {batch}, m {m}, n {n}, k {k}")
    })?;
    let xl = mul("batch x m x k", mul("batch x m", batch, m)?, k)?;
    want(x.len() == xl, || {
        format!("input has {} elements, expected {batch}x{m}x{k}", x.len())
    })?;
    let wl = mul("k x n", k, n)?;
    want(
        w.len() == wl || Some(w.len()) == wl.checked_mul(batch),
        || format!("weights have {} elements, expected {k}x{n}", w.len()),
    )?;
    let ol = mul("batch x m x n", mul("batch x m", batch, m)?, n)?;
    want(out.len() == ol, || {
        format!(
            "output has {} elements, expected {batch}x{m}x{n}",
            out.len()
        )
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::{conv, noise, GEOM};
    use crate::Model;

    /// The f32 conv graph of the format tests, mutated, as a loaded file
    /// would give it (written and read back, checksums correct).
    fn load_mutated(f: impl FnOnce(&mut Graph)) -> Result<Model> {
        let (meta, mut g, c) = conv(&noise(GEOM.weight_len(), 3), false);
        f(&mut g);
        Model::from_bytes(&crate::format::write(&meta, &g, &c))
    }

    fn err(f: impl FnOnce(&mut Graph)) -> String {
        load_mutated(f).expect_err("accepted").to_string()
    }

    fn geom(g: &mut Graph) -> &mut ConvGeometry {
        match &mut g.nodes[0].op {
            Op::Conv { geom, .. } => geom,
            op => panic!("{op:?}"),
        }
    }

    #[test]
    fn the_unmutated_conv_loads() {
        load_mutated(|_| {}).unwrap();
    }

    /// A dimension plus 2^62 whose size product wraps back to the true size
    /// (4 * (6 + 2^62) * 6 = 144 mod 2^64) passed the unchecked validation;
    /// the kernels then indexed with the lie.
    #[test]
    fn wrapped_conv_dimensions_are_refused() {
        let wrapped = GEOM
            .in_c
            .wrapping_mul(6 + (1 << 62))
            .wrapping_mul(GEOM.in_w);
        assert_eq!(wrapped, GEOM.in_c * GEOM.in_h * GEOM.in_w);
        let e = err(|g| geom(g).in_h += 1 << 62);
        assert!(
            e.contains("node conv (Conv)") && e.contains("height"),
            "{e}"
        );
        // And through the output, the weights and the reduction.
        let e = err(|g| geom(g).out_w += 1 << 62);
        assert!(e.contains("width"), "{e}");
        let e = err(|g| geom(g).kw += 1 << 62);
        assert!(e.contains("width") && e.contains("too large"), "{e}");
        // out_c * k = 8 * (4 * 3 * (3 + 2^63)) wraps to the true 288.
        let e = err(|g| {
            geom(g).kw = 3 + (1 << 63);
            geom(g).pad_left = 0;
        });
        assert!(e.contains("width"), "{e}");
    }

    /// The output length must follow from input, padding, kernel, stride
    /// and dilation; zero strides and dilations are refused.
    #[test]
    fn inconsistent_conv_geometry_is_refused() {
        // The output width of `x`, with `y`'s shape and the plan to match.
        let out_w = |w: usize, stride: usize| {
            load_mutated(|g| {
                geom(g).stride_w = stride;
                geom(g).out_w = w;
                let y = g.nodes[0].output;
                g.tensors[y].shape[3] = w;
                crate::plan::plan(g, true);
            })
        };
        // 6 wide, kernel 3, leading padding 1, stride 1: 5 windows fit with
        // no trailing padding, 7 with 2 (the most below the window size).
        for w in 5..=7 {
            out_w(w, 1).unwrap();
        }
        for w in [1, 4, 8, 100] {
            let e = out_w(w, 1).unwrap_err().to_string();
            assert!(
                e.contains(&format!("width: output {w} does not follow from input 6"))
                    && e.contains("expected 5..=7"),
                "{e}"
            );
        }
        // Stride 2: (6 + 1 - 3) / 2 + 1 = 3 to (6 + 1 - 1) / 2 + 1 = 4.
        for (w, ok) in [(2, false), (3, true), (4, true), (5, false)] {
            let r = out_w(w, 2);
            assert_eq!(r.is_ok(), ok, "out_w {w}: {:?}", r.err());
        }
        let e = err(|g| geom(g).stride_h = 0);
        assert!(e.contains("invalid geometry"), "{e}");
        let e = err(|g| geom(g).dil_w = 0);
        assert!(e.contains("invalid geometry"), "{e}");
        let e = err(|g| geom(g).pad_top = 3);
        assert!(
            e.contains("padding 3 is not smaller than the window (3)"),
            "{e}"
        );
    }

    /// `f32::clamp` panics on `min > max`; NaN was refused, disorder was not.
    #[test]
    fn disordered_activation_bounds_are_refused() {
        let e = err(|g| {
            g.nodes[0].op = Op::Conv {
                geom: GEOM,
                act_min: 1.0,
                act_max: -1.0,
            }
        });
        assert!(e.contains("activation bounds [1, -1]"), "{e}");
        // NaN cannot come through the JSON of a file (it has no NaN), only
        // from a graph built in memory.
        let (_, mut g, c) = conv(&noise(GEOM.weight_len(), 3), false);
        g.nodes[0].op = Op::Conv {
            geom: GEOM,
            act_min: f32::NAN,
            act_max: 1.0,
        };
        let e = validate(&g, &c).unwrap_err().to_string();
        assert!(e.contains("NaN or out of order"), "{e}");
    }

    /// Arena sizes come from the tensors, not from the file.
    #[test]
    fn arena_sizes_must_be_what_the_tensors_need() {
        let (_, g, _) = conv(&noise(GEOM.weight_len(), 3), false);
        let need = g.arena_f32;
        let e = err(|g| g.arena_f32 = 1 << 29);
        assert!(
            e.contains(&format!(
                "arena_f32 declares 536870912 elements but its tensors need {need}"
            )),
            "{e}"
        );
        let e = err(|g| g.arena_i8 = 1 << 31);
        assert!(e.contains("arena_i8 declares 2147483648"), "{e}");
        let e = err(|g| g.arena_f32 -= 16);
        assert!(e.contains("lies outside the f32 arena"), "{e}");
    }

    /// Two activations ending together past the 2 GiB of arena (each tensor
    /// alone is within the element bound).
    #[test]
    fn arenas_over_the_byte_bound_are_refused() {
        let e = err(|g| {
            let y = g.nodes[0].output;
            g.tensors[y].storage = Storage::Arena { offset: 1 << 29 };
            g.arena_f32 = (1 << 29) + 288;
        });
        assert!(e.contains("exceed 2147483648 bytes"), "{e}");
    }

    #[test]
    fn arena_bytes_saturates() {
        let g = Graph {
            arena_i8: 1,
            arena_f32: usize::MAX / 2,
            ..Default::default()
        };
        assert_eq!(g.arena_bytes(), usize::MAX);
    }

    /// A zero-sized tensor may not carry a huge dimension: loops over its
    /// other dimensions would run 2^40 times doing nothing.
    #[test]
    fn empty_tensors_with_huge_dimensions_are_refused() {
        let e = err(|g| g.tensors[0].shape = vec![0, 1 << 40, 1, 1]);
        assert!(e.contains("tensor 0 'x' is too large"), "{e}");
    }
}

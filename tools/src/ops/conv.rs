//! Conv (1-D and 2-D, grouped, dilated): `COp::Conv` with constant weights
//! and bias, a fused output clamp (Relu/Clip, see [`super::activation`]) and
//! a folded BatchNorm (see [`super::batchnorm`]). Int8: per-output-channel
//! weights, dense or block-sparse (`QConvSparse`), or int8 arithmetic with an
//! f32 output (`QConvF32`) when only f32 ops read the result. Pruning: an
//! ungrouped conv produces prunable channels; a depthwise conv passes them on.

use super::{fields, IrOp, Layer, OnnxOp};
use crate::ir::{Act, CGraph, CNode, COp, HostTensor};
use crate::lower::{
    act_bounds, fin, quantized_weights, requant_table, weight_consts, Int8Cx, Int8Node,
    SPARSE_MIN_ZERO_BLOCKS,
};
use crate::onnx::{Attrs, Importer};
use crate::prune::graph::{is_depthwise, slice_axis, Chan, Flow, Kept, Prune};
use anyhow::{anyhow, bail, Context, Result};
use strix_kernels::reference::{self as k, ConvGeometry, QConvParams};
use strix_runtime::graph::{DType, Op};
use strix_runtime::validate::MAX_QS8_REDUCTION;
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] = &[OnnxOp::new("Conv", Some(import), None).inputs(|_| 2)];

fn import(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let xs = imp.shape(&n.input[0])?;
    let w = imp
        .konst(&n.input[1])
        .context("Conv with non-constant weights is not supported")?
        .clone();
    let (one_d, xs4) = match xs.len() {
        3 => (true, vec![xs[0], xs[1], 1, xs[2]]),
        4 => (false, xs.clone()),
        r => bail!("Conv on a rank-{r} input is not supported (1-D and 2-D only)"),
    };
    if w.shape.len() != xs.len() {
        bail!(
            "Conv weights {:?} do not match the rank of input {xs:?}",
            w.shape
        );
    }
    let ws = if one_d {
        vec![w.shape[0], w.shape[1], 1, w.shape[2]]
    } else {
        w.shape.clone()
    };
    if ws.len() != 4 {
        bail!("Conv weights must be 4-D, got {:?}", w.shape);
    }
    let (kh, kw) = (ws[2], ws[3]);
    if kh == 0 || kw == 0 {
        bail!("Conv weights {:?} have an empty kernel", w.shape);
    }
    let spatial = if one_d { 1 } else { 2 };
    if let Some(k) = a.ints("kernel_shape") {
        let want: Vec<i64> = w.shape[2..].iter().map(|&d| d as i64).collect();
        if k != want {
            bail!(
                "Conv attribute kernel_shape={k:?} differs from the weights {:?}",
                w.shape
            );
        }
    }
    // 1-D attributes apply to the width; the height axis is trivial.
    let to_2d = |v: Vec<usize>, fill: usize| -> Vec<usize> {
        match (one_d, v.as_slice()) {
            (true, [x]) => vec![fill, *x],
            (true, [b, e]) => vec![fill, *b, fill, *e],
            _ => v,
        }
    };
    let strides = to_2d(window_attr(a, "strides", spatial)?, 1);
    let dil = to_2d(window_attr(a, "dilations", spatial)?, 1);
    let pads = to_2d(pads_attr(a, spatial)?, 0);
    let group = match a.int("group", 1) {
        g if g >= 1 => usize::try_from(g)?,
        g => bail!("Conv attribute group={g} must be >= 1"),
    };
    let (ih, iw) = (xs4[2], xs4[3]);
    let auto = a.string("auto_pad", "NOTSET");
    let (pt, pl, oh, ow) = conv_out(&auto, ih, iw, kh, kw, &strides, &dil, &pads)?;
    let geom = ConvGeometry {
        in_c: xs4[1],
        in_h: ih,
        in_w: iw,
        out_c: ws[0],
        out_h: oh,
        out_w: ow,
        kh,
        kw,
        stride_h: strides[0],
        stride_w: strides[1],
        dil_h: dil[0],
        dil_w: dil[1],
        pad_top: pt,
        pad_left: pl,
        groups: group,
    };
    if !geom.is_valid() || ws[1].checked_mul(group) != Some(xs4[1]) {
        bail!(
            "inconsistent Conv: input {xs:?}, weights {:?}, group {group}",
            w.shape
        );
    }
    let bias = match imp.opt_konst(n, 2)? {
        Some(b) if b.shape.iter().product::<usize>() == ws[0] => b.clone(),
        Some(b) => bail!("Conv bias {:?} does not have {} values", b.shape, ws[0]),
        None => HostTensor::f32(vec![ws[0]], vec![0.0; ws[0]]),
    };
    let wv = imp.g.add_value(
        &format!("{}#w", n.output[0]),
        ws.clone(),
        Some(HostTensor::f32(ws, w.as_f32())),
    );
    let bv = imp.g.add_value(
        &format!("{}#b", n.output[0]),
        vec![geom.out_c],
        Some(HostTensor::f32(vec![geom.out_c], bias.as_f32())),
    );
    let x = imp.value(&n.input[0])?;
    let out = if one_d {
        vec![xs[0], geom.out_c, ow]
    } else {
        vec![xs[0], geom.out_c, oh, ow]
    };
    imp.emit(
        n,
        COp::Conv {
            geom,
            act: Act::NONE,
        },
        vec![x, wv, bv],
        out,
    )?;
    Ok(())
}

/// Output size and leading padding of a conv/pool window (ONNX `auto_pad`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_out(
    auto: &str,
    ih: usize,
    iw: usize,
    kh: usize,
    kw: usize,
    s: &[usize],
    d: &[usize],
    pads: &[usize],
) -> Result<(usize, usize, usize, usize)> {
    // Callers pass attributes checked by `window_attr`/`pads_attr`; the
    // arithmetic is checked anyway, so no value can divide by zero or wrap.
    if kh == 0
        || kw == 0
        || s.len() < 2
        || d.len() < 2
        || s[..2].contains(&0)
        || d[..2].contains(&0)
    {
        bail!("window {kh}x{kw}, strides {s:?} and dilations {d:?} must all be >= 1");
    }
    let too_big = || anyhow!("window {kh}x{kw} with dilations {d:?} and pads {pads:?} overflows");
    let span = |k: usize, d: usize| (k - 1).checked_mul(d).and_then(|v| v.checked_add(1));
    let ekh = span(kh, d[0]).ok_or_else(too_big)?;
    let ekw = span(kw, d[1]).ok_or_else(too_big)?;
    match auto {
        "NOTSET" | "" => {
            if pads.len() != 4 {
                bail!("pads {pads:?} must have 4 values");
            }
            let padded = |i: usize, a: usize, b: usize| i.checked_add(a)?.checked_add(b);
            let h = padded(ih, pads[0], pads[2]).ok_or_else(too_big)?;
            let w = padded(iw, pads[1], pads[3]).ok_or_else(too_big)?;
            if h < ekh || w < ekw {
                bail!("window {kh}x{kw} larger than the padded input {h}x{w}");
            }
            // The runtime requires every window to overlap the input (its
            // validation refuses a pad as wide as the window): such windows
            // would read only padding, and average pooling would divide by 0.
            if pads[0] >= ekh || pads[2] >= ekh || pads[1] >= ekw || pads[3] >= ekw {
                bail!(
                    "pads {pads:?} are not all smaller than the {ekh}x{ekw} window \
                     (windows made only of padding are not supported)"
                );
            }
            Ok((pads[0], pads[1], (h - ekh) / s[0] + 1, (w - ekw) / s[1] + 1))
        }
        "VALID" => {
            if ih < ekh || iw < ekw {
                bail!("window larger than the input");
            }
            Ok((0, 0, (ih - ekh) / s[0] + 1, (iw - ekw) / s[1] + 1))
        }
        "SAME_UPPER" | "SAME_LOWER" => {
            if ih == 0 || iw == 0 {
                bail!("empty input {ih}x{iw}");
            }
            let oh = ih.div_ceil(s[0]);
            let ow = iw.div_ceil(s[1]);
            // (o - 1) * s < i, so these cannot overflow beyond i + span.
            let th = ((oh - 1) * s[0])
                .checked_add(ekh)
                .ok_or_else(too_big)?
                .saturating_sub(ih);
            let tw = ((ow - 1) * s[1])
                .checked_add(ekw)
                .ok_or_else(too_big)?
                .saturating_sub(iw);
            let (pt, pl) = if auto == "SAME_UPPER" {
                (th / 2, tw / 2)
            } else {
                (th - th / 2, tw - tw / 2)
            };
            Ok((pt, pl, oh, ow))
        }
        other => bail!("auto_pad '{other}' is not supported"),
    }
}

/// A window attribute (`kernel_shape`, `strides`, `dilations`): one value of
/// at least 1 per spatial axis (1 when absent). Zero strides divided by zero
/// in the output size before (issue 12 L); now they name the attribute.
pub(crate) fn window_attr(a: &Attrs, name: &str, spatial: usize) -> Result<Vec<usize>> {
    let Some(v) = a.ints(name) else {
        return Ok(vec![1; spatial]);
    };
    if v.len() != spatial || v.iter().any(|&x| x < 1) {
        bail!("attribute {name}={v:?} must hold {spatial} value(s), each >= 1");
    }
    // The runtime's bound (validation refuses more), found by fuzzing.
    let max = strix_runtime::validate::MAX_AXIS;
    v.iter()
        .map(|&x| {
            usize::try_from(x)
                .ok()
                .filter(|&x| x <= max)
                .ok_or_else(|| anyhow!("attribute {name}={v:?} is too large (at most {max})"))
        })
        .collect()
}

/// The `pads` attribute: `2 * spatial` non-negative values (zeros when
/// absent), in ONNX order (all begins, then all ends).
pub(crate) fn pads_attr(a: &Attrs, spatial: usize) -> Result<Vec<usize>> {
    let Some(v) = a.ints("pads") else {
        return Ok(vec![0; 2 * spatial]);
    };
    if v.len() != 2 * spatial || v.iter().any(|&x| x < 0) {
        bail!(
            "attribute pads={v:?} must hold {} values, each >= 0",
            2 * spatial
        );
    }
    v.iter()
        .map(|&x| usize::try_from(x).map_err(|_| anyhow!("attribute pads={v:?} is too large")))
        .collect()
}

/// `COp::Conv`.
pub(crate) struct Conv;

impl IrOp for Conv {
    fn name(&self) -> &'static str {
        "Conv"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        let (geom, act) = fields!(n, COp::Conv { geom, act } => (geom, act));
        Op::Conv {
            geom: *geom,
            act_min: fin(act.min),
            act_max: fin(act.max),
        }
    }

    /// The runtime's count (`Op::macs`), over the input's batch.
    fn macs(&self, cg: &CGraph, n: &CNode) -> u64 {
        let batch = cg.values[n.inputs[0]].shape.first().copied().unwrap_or(1);
        self.f32_op(n).macs(batch)
    }

    fn layer(&self, cg: &CGraph, n: &CNode) -> Option<Layer> {
        let geom = fields!(n, COp::Conv { geom, .. } => geom);
        Some(Layer {
            out: geom.out_c,
            inp: geom.in_c,
            taps: geom.kh * geom.kw,
            groups: geom.groups,
            chan_last: false,
            const_w: cg.is_const(n.inputs[1]),
        })
    }

    fn wants_int8(&self, _: &CGraph, n: &CNode, _: &[Option<DType>]) -> bool {
        let geom = fields!(n, COp::Conv { geom, .. } => geom);
        geom.k() <= MAX_QS8_REDUCTION
    }

    fn f32_only(&self, _: &CGraph, _: &CNode) -> bool {
        false
    }

    fn has_f32_output(&self) -> bool {
        true
    }

    fn int8(&self, cx: &mut Int8Cx, n: &CNode) -> Result<Int8Node> {
        let (geom, act) = fields!(n, COp::Conv { geom, act } => (geom, act));
        let cg = cx.cg;
        let ov = &cg.values[n.output];
        let (x, xq) = cx.i8_input(n.inputs[0])?;
        if cx.f32_output {
            let (wt, bt, ws) = weight_consts(&mut cx.b, cg, n, geom.out_c, None, xq.scale);
            let sc: Vec<f32> = ws.iter().map(|&s| s * xq.scale).collect();
            let st =
                cx.b.const_f32(&format!("{}#scale", ov.name), &[geom.out_c], &sc);
            let op = Op::QConvF32 {
                geom: *geom,
                in_zp: xq.zero_point,
                act_min: fin(act.min),
                act_max: fin(act.max),
            };
            return Ok(Int8Node {
                op,
                inputs: vec![x, wt, bt, st],
                quant: None,
            });
        }
        let oq = cx.quant_of(n.output)?;
        let (wq, bq, ws) = quantized_weights(cg, n, geom.out_c, None, xq.scale);
        let (act_min, act_max) = act_bounds(*act, oq);
        let q = QConvParams {
            in_zp: xq.zero_point,
            out_zp: oq.zero_point,
            act_min,
            act_max,
        };
        let sparse = if cx.opts.sparse {
            sparse_weights(geom, &q, &wq, &bq)
        } else {
            None
        };
        let b = &mut cx.b;
        let (wts, op) = match sparse {
            Some(sp) => {
                let vt = b.const_i8(&format!("{}#w", ov.name), &[sp.values.len()], &sp.values);
                let kt = b.const_i32(
                    &format!("{}#blocks", ov.name),
                    &[sp.blocks.len()],
                    &sp.blocks,
                );
                let rp = b.const_i32(
                    &format!("{}#row_ptr", ov.name),
                    &[sp.row_ptr.len()],
                    &sp.row_ptr,
                );
                (vec![vt, kt, rp], Op::QConvSparse { geom: *geom, q })
            }
            None => {
                let wt = b.const_i8(&format!("{}#w", ov.name), &[wq.len()], &wq);
                (vec![wt], Op::QConv { geom: *geom, q })
            }
        };
        let bt = b.const_i32(&format!("{}#b", ov.name), &[geom.out_c], &bq);
        let rt = b.const_i32(
            &format!("{}#rq", ov.name),
            &[geom.out_c, 2],
            &requant_table(xq.scale, &ws, oq.scale),
        );
        let mut inputs = vec![x];
        inputs.extend(wts);
        inputs.extend([bt, rt]);
        Ok(Int8Node {
            op,
            inputs,
            quant: Some(oq),
        })
    }

    fn f16_weight_slots(&self) -> &'static [usize] {
        &[1]
    }

    /// An ungrouped conv with constant weights produces prunable channels
    /// (axis 1); a depthwise one passes its input's on; any other conv
    /// stops them.
    fn flow(&self, cx: &mut Flow, ni: usize, n: &CNode, ins: &[Option<Chan>]) -> Option<Chan> {
        let geom = fields!(n, COp::Conv { geom, .. } => geom);
        let in0 = ins.first().cloned().flatten();
        let konst_ok = |v: usize| cx.g.values[v].konst.is_some();
        let consts = n.inputs.len() == 3 && konst_ok(n.inputs[1]) && konst_ok(n.inputs[2]);
        if is_depthwise(geom) && consts {
            match in0 {
                Some(c) if c.axis == 1 => Some(c),
                c => {
                    cx.poison(&c);
                    None
                }
            }
        } else if geom.groups == 1 && consts {
            if in0.as_ref().is_some_and(|c| c.axis != 1) {
                cx.poison(&in0);
            }
            cx.produces(ni);
            Some(Chan {
                axis: 1,
                segs: vec![(ni, geom.out_c)],
            })
        } else {
            cx.poison(&in0);
            None
        }
    }

    /// Input channels removed: the weights lose those columns (refitted
    /// when `cx` has statistics); output channels removed: the weights
    /// and bias lose those rows. A depthwise conv loses both.
    fn prune(&self, cx: &mut Prune, ni: usize, n: &CNode, k0: Kept) -> Kept {
        let (mut geom, act) = fields!(n, COp::Conv { geom, act } => (*geom, *act));
        let mut out: Kept = None;
        if is_depthwise(&geom) {
            if let Some((axis, ks, orig)) = k0 {
                let w = slice_axis(cx.konst(n.inputs[1]), 0, &ks);
                let b = slice_axis(cx.konst(n.inputs[2]), 0, &ks);
                cx.set_const(ni, 1, w);
                cx.set_const(ni, 2, b);
                geom.in_c = ks.len();
                geom.out_c = ks.len();
                geom.groups = ks.len();
                out = Some((axis, ks, orig));
            }
        } else {
            if let Some((_, ks, _)) = &k0 {
                cx.consumer(ni, ks.clone());
                let w = cx.konst(cx.g.nodes[ni].inputs[1]).clone();
                let b = cx.konst(cx.g.nodes[ni].inputs[2]).as_f32();
                match cx.refit(ni, ks, &w, &b) {
                    Some((nw, nb)) => {
                        let bl = nb.len();
                        cx.set_const(ni, 1, nw);
                        cx.set_const(ni, 2, HostTensor::f32(vec![bl], nb));
                    }
                    None => cx.set_const(ni, 1, slice_axis(&w, 1, ks)),
                }
                geom.in_c = ks.len();
            }
            if let Some(ks) = cx.output_keep(ni) {
                let w = slice_axis(cx.konst(cx.g.nodes[ni].inputs[1]), 0, ks);
                let b = slice_axis(cx.konst(cx.g.nodes[ni].inputs[2]), 0, ks);
                cx.set_const(ni, 1, w);
                cx.set_const(ni, 2, b);
                out = Some((1, ks.to_vec(), geom.out_c));
                geom.out_c = ks.len();
            }
        }
        cx.g.nodes[ni].op = COp::Conv { geom, act };
        out
    }
}

/// The block-sparse form of a conv's quantized weights when the sparse
/// kernels run it faster (ungrouped, at least [`SPARSE_MIN_ZERO_BLOCKS`] zero
/// blocks) and can run it (the folded bias is in range; the dense op would
/// otherwise fall back to the reference conv).
fn sparse_weights(
    geom: &ConvGeometry,
    q: &QConvParams,
    wq: &[i8],
    bq: &[i32],
) -> Option<k::SparseOwned> {
    let kk = geom.k();
    if !strix_kernels::driver::uses_gemm(geom)
        || k::zero_block_fraction(geom.out_c, kk, wq) < SPARSE_MIN_ZERO_BLOCKS
    {
        return None;
    }
    let sp = k::pack_sparse(geom.out_c, kk, wq)?;
    strix_kernels::driver::fold_bias_sparse(&sp.view(), bq, q.in_zp)?;
    Some(sp)
}

//! A decoded TFLite model ([`Model`]) -> the compiler graph ([`CGraph`]),
//! with the file's own int8 quantization pinned ([`crate::lower::Pinned`]).
//!
//! Layout: TFLite is NHWC with OHWI conv weights and 1HWC depthwise weights;
//! Strix's graph is NCHW with OIHW weights. 4-D activations are kept NCHW
//! (weights are transposed), the graph input becomes `[N, C, H, W]` (what
//! `--input-layout nhwc` gives an ONNX model), and where a 4-D tensor meets
//! an op that reads it in TFLite's memory order (RESHAPE, FULLY_CONNECTED,
//! SOFTMAX, a graph output) a Transpose back to NHWC is inserted (a Reshape
//! when one of H*W and C is 1: then both orders are the same memory).
//!
//! Quantization: int8 activations with one scale and zero point each
//! (asymmetric), int8 weights symmetric per output channel (or per tensor),
//! int32 biases of scale `input scale x weight scale`: TFLite's int8 scheme,
//! which Strix's int8 contract represents exactly (the same
//! `MultiplyByQuantizedMultiplier` requantization, see
//! `kernels/src/requant.rs`). Anything else is refused, naming the operator
//! and tensor.

use super::schema::{
    op, op_name, Activation, Model, Options, Padding, Tensor, TensorType, ACTIVATION_NAMES,
};
use crate::ir::{Act, CGraph, CNode, COp, HostTensor};
use crate::lower::PinnedWeights;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashSet;
use strix_kernels::reference::{BinaryOp, ConvGeometry, PoolGeometry, QS8_AVGPOOL_MAX_TAPS};
use strix_runtime::graph::Quant;

/// A TFLite tensor's compiler value, and whether it holds the NCHW
/// transpose of a 4-D NHWC tensor.
#[derive(Clone, Copy)]
struct Placed {
    value: usize,
    nchw: bool,
}

struct Importer<'a> {
    m: &'a Model,
    g: CGraph,
    placed: Vec<Option<Placed>>,
    names: HashSet<String>,
    warnings: Vec<String>,
}

/// The scalar of a per-tensor int8 activation quantization.
fn act_quant(m: &Model, t: usize) -> Result<Quant> {
    let tensor = &m.tensors[t];
    let what = || format!("tensor {t} '{}'", short(&tensor.name));
    if tensor.ttype != TensorType::Int8 {
        bail!(
            "{}: {} activations are not supported (Strix runs int8 activations with one \
             scale and zero point each; TFLite's 16x8, uint8 and float models are not imported)",
            what(),
            tensor.ttype.name()
        );
    }
    let Some(q) = &tensor.quant else {
        bail!(
            "{}: int8 activation without quantization parameters",
            what()
        );
    };
    if q.scale.len() != 1 || q.zero_point.len() > 1 {
        bail!(
            "{}: per-channel activation quantization ({} scales) is not supported",
            what(),
            q.scale.len()
        );
    }
    let zp = q.zero_point.first().copied().unwrap_or(0);
    let scale = q.scale[0];
    if !(scale.is_finite() && scale > 0.0 && (-128..=127).contains(&zp)) {
        bail!(
            "{}: quantization scale {scale} zero point {zp} is not a valid int8 one",
            what()
        );
    }
    Ok(Quant {
        scale,
        zero_point: zp as i32,
    })
}

/// A tensor name without TFLite's `;`-joined list of fused op names.
fn short(name: &str) -> &str {
    name.split(';').next().unwrap_or(name)
}

fn fused(act: Activation, what: &str) -> Result<Act> {
    Ok(match act {
        0 => Act::NONE,
        1 => Act {
            min: 0.0,
            max: f32::INFINITY,
        },
        2 => Act {
            min: -1.0,
            max: 1.0,
        },
        3 => Act { min: 0.0, max: 6.0 },
        a => {
            bail!(
            "{what}: fused activation {} is not supported (NONE, RELU, RELU_N1_TO_1, RELU6 are)",
            ACTIVATION_NAMES.get(a as usize).copied().unwrap_or("unknown")
        )
        }
    })
}

fn positive(v: i32, name: &str, what: &str) -> Result<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&x| (1..=strix_runtime::validate::MAX_AXIS).contains(&x))
        .ok_or_else(|| anyhow!("{what}: {name} {v} must be at least 1"))
}

/// `(pad_top, pad_left, out_h, out_w)` of a conv or pool window over an
/// `ih` x `iw` input with TFLite's padding (SAME pads like ONNX's
/// SAME_UPPER: the odd pixel at the end).
fn window(
    padding: Padding,
    ih: usize,
    iw: usize,
    k: [usize; 2],
    strides: &[usize; 2],
    dil: &[usize; 2],
    what: &str,
) -> Result<(usize, usize, usize, usize)> {
    let auto = match padding {
        Padding::Same => "SAME_UPPER",
        Padding::Valid => "VALID",
    };
    crate::ops::conv::conv_out(auto, ih, iw, k[0], k[1], strides, dil, &[])
        .with_context(|| what.to_string())
}

impl<'a> Importer<'a> {
    fn name(&mut self, base: &str) -> String {
        let mut n = base.to_string();
        let mut i = 1;
        while !self.names.insert(n.clone()) {
            n = format!("{base}#{i}");
            i += 1;
        }
        n
    }

    fn tensor(&self, t: usize) -> &'a Tensor {
        &self.m.tensors[t]
    }

    /// A new activation value pinned to `q`.
    fn act_value(&mut self, base: &str, shape: Vec<usize>, q: Quant) -> usize {
        let name = self.name(base);
        let v = self.g.add_value(&name, shape, None);
        self.g.pinned.act.insert(v, q);
        v
    }

    fn node(&mut self, name: &str, op: COp, inputs: Vec<usize>, output: usize) {
        self.g.nodes.push(CNode {
            name: name.to_string(),
            op,
            inputs,
            output,
        });
    }

    /// The placed value of activation tensor `t` (produced earlier or a
    /// graph input).
    fn input(&self, t: i32, what: &str) -> Result<Placed> {
        let ti = usize::try_from(t).map_err(|_| anyhow!("{what}: a required input is omitted"))?;
        if let Some(p) = self.placed[ti] {
            return Ok(p);
        }
        let tensor = self.tensor(ti);
        if !self.m.data(ti)?.is_empty() {
            bail!(
                "{what}: constant tensor {ti} '{}' as an activation input is not supported",
                short(&tensor.name)
            );
        }
        bail!(
            "{what}: tensor {ti} '{}' is read before any operator produces it",
            short(&tensor.name)
        )
    }

    /// Activation `p` (of tensor `t`) in NCHW order.
    fn nchw(&mut self, p: Placed, t: usize) -> Result<usize> {
        if p.nchw || self.g.values[p.value].shape.len() != 4 {
            return Ok(p.value);
        }
        self.relayout(p.value, t, [0, 3, 1, 2], "nchw")
    }

    /// Activation `p` (of tensor `t`) in TFLite's own (NHWC) memory order.
    fn tfl(&mut self, p: Placed, t: usize) -> Result<usize> {
        if !p.nchw {
            return Ok(p.value);
        }
        self.relayout(p.value, t, [0, 2, 3, 1], "nhwc")
    }

    /// A new value holding 4-D `v` permuted by `perm`, with tensor `t`'s
    /// quantization: a Reshape when only size-1 axes move, else a Transpose.
    fn relayout(&mut self, v: usize, t: usize, perm: [usize; 4], tag: &str) -> Result<usize> {
        let shape = self.g.values[v].shape.clone();
        let q = act_quant(self.m, t)?;
        let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
        let base = format!("{}#{tag}", self.g.values[v].name);
        let out = self.act_value(&base, out_shape, q);
        let name = self.g.values[out].name.clone();
        // The bytes stay where they are when the axes longer than 1 keep
        // their order (e.g. one channel, or a 1x1 map).
        let kept: Vec<usize> = perm.iter().copied().filter(|&a| shape[a] != 1).collect();
        let op = if kept.is_sorted() {
            COp::Reshape
        } else {
            COp::Transpose {
                perm: perm.to_vec(),
            }
        };
        self.node(&name, op, vec![v], out);
        Ok(out)
    }

    /// The output tensor of operator `oi`, checked to be one int8 tensor;
    /// returns its index and quantization.
    fn output(&self, o: &super::schema::Operator, what: &str) -> Result<(usize, Quant)> {
        if o.outputs.len() != 1 {
            bail!("{what}: {} outputs, expected 1", o.outputs.len());
        }
        let t = usize::try_from(o.outputs[0]).map_err(|_| anyhow!("{what}: omitted output"))?;
        if self.placed[t].is_some() {
            bail!("{what}: tensor {t} is produced twice");
        }
        Ok((t, act_quant(self.m, t).with_context(|| what.to_string())?))
    }

    /// Int8 weights (symmetric, per channel along `dim` or per tensor) of
    /// tensor `t` with `channels` output channels: codes and one scale per
    /// channel.
    fn weights(
        &self,
        t: i32,
        dim: usize,
        channels: usize,
        what: &str,
    ) -> Result<(Vec<i8>, Vec<f32>)> {
        let ti = usize::try_from(t).map_err(|_| anyhow!("{what}: weights omitted"))?;
        let tensor = self.tensor(ti);
        let w = format!("{what}: weights tensor {ti} '{}'", short(&tensor.name));
        if tensor.ttype != TensorType::Int8 {
            bail!(
                "{w}: {} weights are not supported (int8 only)",
                tensor.ttype.name()
            );
        }
        let data = self.m.data(ti)?;
        if data.is_empty() {
            bail!("{w}: non-constant weights are not supported");
        }
        let Some(q) = &tensor.quant else {
            bail!("{w}: int8 weights without quantization parameters");
        };
        if q.zero_point.iter().any(|&z| z != 0) {
            bail!(
                "{w}: asymmetric weights (zero points {:?}) are not supported: Strix's int8 \
                 weights are symmetric",
                &q.zero_point[..q.zero_point.len().min(4)]
            );
        }
        let scales = match q.scale.len() {
            1 => vec![q.scale[0]; channels],
            n if n == channels && q.quantized_dimension == dim => q.scale.clone(),
            n => bail!(
                "{w}: {n} scales along axis {} (expected 1, or {channels} along axis {dim})",
                q.quantized_dimension
            ),
        };
        if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            bail!("{w}: weight scale {s} is not positive");
        }
        Ok((data.iter().map(|&b| b as i8).collect(), scales))
    }

    /// The int32 bias of a conv/gemm (zeros when omitted), checked to have
    /// TFLite's scale `in_scale x w_scale` per channel.
    fn bias(&self, t: Option<&i32>, in_scale: f32, ws: &[f32], what: &str) -> Result<Vec<i32>> {
        let Some(&t) = t.filter(|&&t| t >= 0) else {
            return Ok(vec![0; ws.len()]);
        };
        let ti = t as usize;
        let tensor = self.tensor(ti);
        let w = format!("{what}: bias tensor {ti} '{}'", short(&tensor.name));
        if tensor.ttype != TensorType::Int32 {
            bail!(
                "{w}: {} bias is not supported (int32 only)",
                tensor.ttype.name()
            );
        }
        if tensor.len() != ws.len() {
            bail!(
                "{w}: {} values for {} output channels",
                tensor.len(),
                ws.len()
            );
        }
        let data = self.m.data(ti)?;
        if data.is_empty() {
            bail!("{w}: non-constant bias is not supported");
        }
        if let Some(q) = &tensor.quant {
            // TFLite's own check (kernel_util.cc GetQuantizedConvolutionMultipler).
            for (c, &wsc) in ws.iter().enumerate() {
                let want = in_scale as f64 * wsc as f64;
                let got = match q.scale.len() {
                    1 => q.scale[0],
                    n if n == ws.len() => q.scale[c],
                    n => bail!("{w}: {n} scales for {} channels", ws.len()),
                } as f64;
                if (want - got).abs() > 1e-6 * want.min(got) {
                    bail!(
                        "{w}: channel {c} has scale {got}, not input scale x weight scale = {want}"
                    );
                }
            }
        }
        Ok(data
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect())
    }

    /// Clamps int32 biases to Strix's bound of +-2^30 (the runtime's
    /// accumulator overflow margin; TFLite allows any int32). Such biases
    /// come with near-zero weight scales (dead channels whose bias scale
    /// `in x w` is tiny); the clamp moves the channel's output by
    /// `(|b| - 2^30) x in x w / out` quantization steps, recorded as a warning.
    fn clamp_bias(
        &mut self,
        bias: &mut [i32],
        in_scale: f32,
        ws: &[f32],
        out_scale: f32,
        what: &str,
    ) {
        const LIM: i32 = 1 << 30;
        let (mut count, mut worst) = (0, 0f64);
        for (b, &w) in bias.iter_mut().zip(ws) {
            if b.unsigned_abs() > LIM as u32 {
                let steps = (b.unsigned_abs() - LIM as u32) as f64 * in_scale as f64 * w as f64
                    / out_scale as f64;
                worst = worst.max(steps);
                count += 1;
                *b = (*b).clamp(-LIM, LIM);
            }
        }
        if count > 0 {
            self.warnings.push(format!(
                "{what}: {count} of {} biases beyond +-2^30 (Strix's accumulator bound) clamped; \
                 their channels' outputs move by up to {worst:.3} quantization steps",
                bias.len()
            ));
        }
    }

    /// Adds a conv/gemm's constant weights (f32, dequantized, shape `shape`,
    /// with codes `q` in the same layout) and bias, pinned; returns the
    /// weight and bias values.
    #[allow(clippy::too_many_arguments)]
    fn weight_values(
        &mut self,
        base: &str,
        shape: Vec<usize>,
        q: Vec<i8>,
        scales: Vec<f32>,
        bias: Vec<i32>,
        in_scale: f32,
        per: impl Fn(usize) -> usize,
    ) -> (usize, usize) {
        let wf: Vec<f32> = q
            .iter()
            .enumerate()
            .map(|(i, &c)| c as f32 * scales[per(i)])
            .collect();
        let bf: Vec<f32> = bias
            .iter()
            .zip(&scales)
            .map(|(&b, &s)| (b as f64 * in_scale as f64 * s as f64) as f32)
            .collect();
        let wname = self.name(&format!("{base}#w"));
        let wv = self
            .g
            .add_value(&wname, shape.clone(), Some(HostTensor::f32(shape, wf)));
        let bname = self.name(&format!("{base}#b"));
        let n = bias.len();
        let bv = self
            .g
            .add_value(&bname, vec![n], Some(HostTensor::f32(vec![n], bf)));
        self.g
            .pinned
            .weights
            .insert(wv, PinnedWeights { q, scales });
        self.g.pinned.bias.insert(bv, bias);
        (wv, bv)
    }

    fn check_shape(&self, t: usize, want: &[usize], what: &str) -> Result<()> {
        let got = &self.tensor(t).shape;
        if got != want {
            bail!(
                "{what}: output tensor {t} '{}' has shape {got:?}, the operator gives {want:?}",
                short(&self.tensor(t).name)
            );
        }
        Ok(())
    }

    fn operator(&mut self, oi: usize) -> Result<()> {
        let o = &self.m.operators[oi];
        let what = format!("operator {oi} ({})", op_name(o.code));
        let what = what.as_str();
        if let Some(c) = &o.custom {
            bail!("operator {oi}: custom operator '{c}' is not supported");
        }
        let need = |n: usize| -> Result<()> {
            if o.inputs.len() < n {
                bail!("{what}: {} inputs, expected at least {n}", o.inputs.len());
            }
            Ok(())
        };
        match o.code {
            op::CONV_2D | op::DEPTHWISE_CONV_2D => {
                need(2)?;
                let dw = o.code == op::DEPTHWISE_CONV_2D;
                let x_t = o.inputs[0] as usize;
                let xp = self.input(o.inputs[0], what)?;
                let xq = act_quant(self.m, x_t).with_context(|| what.to_string())?;
                let x = self.nchw(xp, x_t)?;
                let xs = self.g.values[x].shape.clone();
                if xs.len() != 4 {
                    bail!("{what}: input of rank {} (4-D NHWC expected)", xs.len());
                }
                let (nb, in_c, ih, iw) = (xs[0], xs[1], xs[2], xs[3]);
                let (padding, sw, sh, act, dw_, dh, mult) = match &o.options {
                    Options::Conv2D {
                        padding,
                        stride_w,
                        stride_h,
                        act,
                        dilation_w,
                        dilation_h,
                    } => (
                        *padding,
                        *stride_w,
                        *stride_h,
                        *act,
                        *dilation_w,
                        *dilation_h,
                        0,
                    ),
                    Options::DepthwiseConv2D {
                        padding,
                        stride_w,
                        stride_h,
                        depth_multiplier,
                        act,
                        dilation_w,
                        dilation_h,
                    } => (
                        *padding,
                        *stride_w,
                        *stride_h,
                        *act,
                        *dilation_w,
                        *dilation_h,
                        *depth_multiplier,
                    ),
                    other => bail!("{what}: unexpected options {other:?}"),
                };
                let wt =
                    usize::try_from(o.inputs[1]).map_err(|_| anyhow!("{what}: weights omitted"))?;
                let ws = self.tensor(wt).shape.clone();
                if ws.len() != 4 {
                    bail!("{what}: weights of shape {ws:?} (4-D expected)");
                }
                let (out_c, kh, kw, groups) = if dw {
                    // [1, KH, KW, C * multiplier]; older files may leave the
                    // multiplier 0 (it follows from the shapes).
                    if ws[0] != 1 || in_c == 0 || !ws[3].is_multiple_of(in_c) {
                        bail!("{what}: depthwise weights {ws:?} do not fit {in_c} input channels");
                    }
                    let m = ws[3] / in_c;
                    if mult != 0 && mult as usize != m {
                        bail!("{what}: depth_multiplier {mult}, but the weights {ws:?} give {m}");
                    }
                    (ws[3], ws[1], ws[2], in_c)
                } else {
                    if ws[3] == 0
                        || !in_c.is_multiple_of(ws[3])
                        || !ws[0].is_multiple_of(in_c / ws[3])
                    {
                        bail!("{what}: weights {ws:?} do not fit {in_c} input channels");
                    }
                    (ws[0], ws[1], ws[2], in_c / ws[3])
                };
                let (wq, scales) =
                    self.weights(o.inputs[1], if dw { 3 } else { 0 }, out_c, what)?;
                let strides = [
                    positive(sh, "stride_h", what)?,
                    positive(sw, "stride_w", what)?,
                ];
                let dil = [
                    positive(dh, "dilation_h", what)?,
                    positive(dw_, "dilation_w", what)?,
                ];
                let (pt, pl, oh, ow) = window(padding, ih, iw, [kh, kw], &strides, &dil, what)?;
                let geom = ConvGeometry {
                    in_c,
                    in_h: ih,
                    in_w: iw,
                    out_c,
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
                    groups,
                };
                if !geom.is_valid() {
                    bail!("{what}: inconsistent geometry {geom:?}");
                }
                let act = fused(act, what)?;
                let mut bias = self.bias(o.inputs.get(2), xq.scale, &scales, what)?;
                let (yt, yq) = self.output(o, what)?;
                self.check_shape(yt, &[nb, oh, ow, out_c], what)?;
                self.clamp_bias(&mut bias, xq.scale, &scales, yq.scale, what);
                // OHWI (conv) or 1HWC (depthwise) -> OIHW.
                let icg = in_c / groups;
                let mut oihw = vec![0i8; wq.len()];
                for oc in 0..out_c {
                    for y in 0..kh {
                        for xx in 0..kw {
                            for ic in 0..icg {
                                let src = if dw {
                                    (y * kw + xx) * out_c + oc
                                } else {
                                    ((oc * kh + y) * kw + xx) * icg + ic
                                };
                                oihw[((oc * icg + ic) * kh + y) * kw + xx] = wq[src];
                            }
                        }
                    }
                }
                let per = kh * kw * icg;
                let base = short(&self.tensor(yt).name).to_string();
                let (wv, bv) = self.weight_values(
                    &base,
                    vec![out_c, icg, kh, kw],
                    oihw,
                    scales,
                    bias,
                    xq.scale,
                    |i| i / per,
                );
                let y = self.act_value(&base, vec![nb, out_c, oh, ow], yq);
                self.node(
                    &format!("{}_{oi}", op_short(o.code)),
                    COp::Conv { geom, act },
                    vec![x, wv, bv],
                    y,
                );
                self.placed[yt] = Some(Placed {
                    value: y,
                    nchw: true,
                });
            }
            op::FULLY_CONNECTED => {
                need(2)?;
                let (act, format, keep) = match &o.options {
                    Options::FullyConnected {
                        act,
                        weights_format,
                        keep_num_dims,
                        ..
                    } => (*act, *weights_format, *keep_num_dims),
                    other => bail!("{what}: unexpected options {other:?}"),
                };
                if format != 0 {
                    bail!("{what}: weights_format {format} (shuffled weights) is not supported");
                }
                let x_t = o.inputs[0] as usize;
                let xp = self.input(o.inputs[0], what)?;
                let xq = act_quant(self.m, x_t).with_context(|| what.to_string())?;
                let x = self.tfl(xp, x_t)?;
                let wt =
                    usize::try_from(o.inputs[1]).map_err(|_| anyhow!("{what}: weights omitted"))?;
                let ws = self.tensor(wt).shape.clone();
                if ws.len() != 2 {
                    bail!("{what}: weights of shape {ws:?} (2-D [out, in] expected)");
                }
                let (nn, kk) = (ws[0], ws[1]);
                let xs = self.g.values[x].shape.clone();
                let total: usize = xs.iter().product();
                if kk == 0 || !total.is_multiple_of(kk) {
                    bail!("{what}: input {xs:?} does not flatten into rows of {kk}");
                }
                let rows = total / kk;
                let (wq, scales) = self.weights(o.inputs[1], 0, nn, what)?;
                let mut bias = self.bias(o.inputs.get(2), xq.scale, &scales, what)?;
                let act = fused(act, what)?;
                let (yt, yq) = self.output(o, what)?;
                self.clamp_bias(&mut bias, xq.scale, &scales, yq.scale, what);
                let want = if keep {
                    let mut s = self.tensor(x_t).shape.clone();
                    if let Some(l) = s.last_mut() {
                        *l = nn;
                    }
                    s
                } else {
                    vec![rows, nn]
                };
                self.check_shape(yt, &want, what)?;
                let x2 = if xs == [rows, kk] {
                    x
                } else {
                    let b = format!("{}#rows", self.g.values[x].name);
                    let v = self.act_value(&b, vec![rows, kk], xq);
                    let name = self.g.values[v].name.clone();
                    self.node(&name, COp::Reshape, vec![x], v);
                    v
                };
                // [n][k] -> the gemm's [k][n].
                let mut kn = vec![0i8; wq.len()];
                for j in 0..nn {
                    for i in 0..kk {
                        kn[i * nn + j] = wq[j * kk + i];
                    }
                }
                let base = short(&self.tensor(yt).name).to_string();
                let (wv, bv) =
                    self.weight_values(&base, vec![kk, nn], kn, scales, bias, xq.scale, |i| i % nn);
                let gemm = COp::Gemm {
                    m: rows,
                    n: nn,
                    k: kk,
                    batch: 1,
                    act,
                };
                let name = format!("{}_{oi}", op_short(o.code));
                let y = if want == [rows, nn] {
                    let y = self.act_value(&base, vec![rows, nn], yq);
                    self.node(&name, gemm, vec![x2, wv, bv], y);
                    y
                } else {
                    let g = self.act_value(&format!("{base}#rows"), vec![rows, nn], yq);
                    self.node(&name, gemm, vec![x2, wv, bv], g);
                    let y = self.act_value(&base, want.clone(), yq);
                    self.node(&format!("{name}#reshape"), COp::Reshape, vec![g], y);
                    y
                };
                self.placed[yt] = Some(Placed {
                    value: y,
                    nchw: false,
                });
            }
            op::AVERAGE_POOL_2D | op::MAX_POOL_2D => {
                need(1)?;
                let Options::Pool2D {
                    padding,
                    stride_w,
                    stride_h,
                    filter_w,
                    filter_h,
                    act,
                } = o.options.clone()
                else {
                    bail!("{what}: unexpected options {:?}", o.options);
                };
                if act != 0 {
                    bail!(
                        "{what}: fused activation {} on a pool is not supported",
                        ACTIVATION_NAMES
                            .get(act as usize)
                            .copied()
                            .unwrap_or("unknown")
                    );
                }
                let x_t = o.inputs[0] as usize;
                let xp = self.input(o.inputs[0], what)?;
                let xq = act_quant(self.m, x_t).with_context(|| what.to_string())?;
                let x = self.nchw(xp, x_t)?;
                let xs = self.g.values[x].shape.clone();
                if xs.len() != 4 {
                    bail!("{what}: input of rank {} (4-D NHWC expected)", xs.len());
                }
                let (yt, yq) = self.output(o, what)?;
                if yq != xq {
                    bail!(
                        "{what}: output quantization {yq:?} differs from the input's {xq:?} \
                         (TFLite's int8 pools keep it; Strix's too)"
                    );
                }
                let k = [
                    positive(filter_h, "filter_height", what)?,
                    positive(filter_w, "filter_width", what)?,
                ];
                let s = [
                    positive(stride_h, "stride_h", what)?,
                    positive(stride_w, "stride_w", what)?,
                ];
                let (pt, pl, oh, ow) = window(padding, xs[2], xs[3], k, &s, &[1, 1], what)?;
                self.check_shape(yt, &[xs[0], oh, ow, xs[1]], what)?;
                let taps = k[0].saturating_mul(k[1]);
                if o.code == op::AVERAGE_POOL_2D && taps > QS8_AVGPOOL_MAX_TAPS {
                    bail!(
                        "{what}: a {}x{} window ({taps} taps) exceeds the int8 average's \
                         {QS8_AVGPOOL_MAX_TAPS}-tap bound",
                        k[0],
                        k[1]
                    );
                }
                let geom = PoolGeometry {
                    channels: xs[0] * xs[1],
                    in_h: xs[2],
                    in_w: xs[3],
                    out_h: oh,
                    out_w: ow,
                    kh: k[0],
                    kw: k[1],
                    stride_h: s[0],
                    stride_w: s[1],
                    pad_top: pt,
                    pad_left: pl,
                    // TFLite averages over the taps inside the image.
                    count_include_pad: false,
                };
                let cop = if o.code == op::MAX_POOL_2D {
                    COp::MaxPool { geom }
                } else {
                    COp::AvgPool { geom }
                };
                let base = short(&self.tensor(yt).name).to_string();
                let y = self.act_value(&base, vec![xs[0], xs[1], oh, ow], yq);
                self.node(&format!("{}_{oi}", op_short(o.code)), cop, vec![x], y);
                self.placed[yt] = Some(Placed {
                    value: y,
                    nchw: true,
                });
            }
            op::RESHAPE => {
                need(1)?;
                let x_t = o.inputs[0] as usize;
                let xp = self.input(o.inputs[0], what)?;
                let xq = act_quant(self.m, x_t).with_context(|| what.to_string())?;
                let x = self.tfl(xp, x_t)?;
                let (yt, yq) = self.output(o, what)?;
                if yq != xq {
                    bail!("{what}: output quantization {yq:?} differs from the input's {xq:?}");
                }
                let want = self.tensor(yt).shape.clone();
                let have: usize = self.g.values[x].shape.iter().product();
                if want.iter().product::<usize>() != have {
                    bail!("{what}: output shape {want:?} does not hold the input's {have} values");
                }
                let base = short(&self.tensor(yt).name).to_string();
                let y = self.act_value(&base, want, yq);
                self.node(
                    &format!("{}_{oi}", op_short(o.code)),
                    COp::Reshape,
                    vec![x],
                    y,
                );
                self.placed[yt] = Some(Placed {
                    value: y,
                    nchw: false,
                });
            }
            op::SOFTMAX => {
                need(1)?;
                let beta = match o.options {
                    Options::Softmax { beta } => beta,
                    _ => bail!("{what}: unexpected options {:?}", o.options),
                };
                if beta != 1.0 {
                    bail!("{what}: beta {beta} is not supported (1 only)");
                }
                let x_t = o.inputs[0] as usize;
                let xp = self.input(o.inputs[0], what)?;
                act_quant(self.m, x_t).with_context(|| what.to_string())?;
                let x = self.tfl(xp, x_t)?;
                let xs = self.g.values[x].shape.clone();
                let (yt, yq) = self.output(o, what)?;
                self.check_shape(yt, &xs, what)?;
                let Some(&axis) = xs.last() else {
                    bail!("{what}: scalar input");
                };
                let outer = xs.iter().product::<usize>() / axis.max(1);
                let base = short(&self.tensor(yt).name).to_string();
                let y = self.act_value(&base, xs, yq);
                self.node(
                    &format!("{}_{oi}", op_short(o.code)),
                    COp::Softmax {
                        outer,
                        axis,
                        inner: 1,
                    },
                    vec![x],
                    y,
                );
                self.placed[yt] = Some(Placed {
                    value: y,
                    nchw: false,
                });
            }
            op::ADD => {
                need(2)?;
                let act = match o.options {
                    Options::Add { act } => act,
                    _ => bail!("{what}: unexpected options {:?}", o.options),
                };
                if act != 0 {
                    bail!(
                        "{what}: fused activation {} on ADD is not supported",
                        ACTIVATION_NAMES
                            .get(act as usize)
                            .copied()
                            .unwrap_or("unknown")
                    );
                }
                let (at, bt) = (o.inputs[0] as usize, o.inputs[1] as usize);
                let (ap, bp) = (
                    self.input(o.inputs[0], what)?,
                    self.input(o.inputs[1], what)?,
                );
                act_quant(self.m, at).with_context(|| what.to_string())?;
                act_quant(self.m, bt).with_context(|| what.to_string())?;
                if self.tensor(at).shape != self.tensor(bt).shape {
                    bail!(
                        "{what}: broadcasting {:?} + {:?} is not supported",
                        self.tensor(at).shape,
                        self.tensor(bt).shape
                    );
                }
                let (a, b, nchw) = if ap.nchw && bp.nchw {
                    (ap.value, bp.value, true)
                } else {
                    (self.tfl(ap, at)?, self.tfl(bp, bt)?, false)
                };
                let (yt, yq) = self.output(o, what)?;
                self.check_shape(yt, &self.tensor(at).shape.clone(), what)?;
                let shape = self.g.values[a].shape.clone();
                let base = short(&self.tensor(yt).name).to_string();
                let y = self.act_value(&base, shape, yq);
                self.node(
                    &format!("{}_{oi}", op_short(o.code)),
                    COp::Binary(BinaryOp::Add),
                    vec![a, b],
                    y,
                );
                self.placed[yt] = Some(Placed { value: y, nchw });
            }
            op::QUANTIZE | op::DEQUANTIZE => {
                need(1)?;
                let x_t =
                    usize::try_from(o.inputs[0]).map_err(|_| anyhow!("{what}: input omitted"))?;
                if o.outputs.len() != 1 || o.outputs[0] < 0 {
                    bail!("{what}: one output expected");
                }
                let y_t = o.outputs[0] as usize;
                let p = self.input(o.inputs[0], what)?;
                let (xty, yty) = (self.tensor(x_t).ttype, self.tensor(y_t).ttype);
                if o.code == op::QUANTIZE {
                    let yq = act_quant(self.m, y_t).with_context(|| what.to_string())?;
                    match xty {
                        // A float graph input quantized at the start: the
                        // graph input itself carries the quantization.
                        TensorType::Float32 if self.g.inputs.contains(&p.value) => {
                            self.g.pinned.act.insert(p.value, yq);
                        }
                        TensorType::Int8 if act_quant(self.m, x_t)? == yq => {}
                        _ => bail!(
                            "{what}: {} -> int8 {yq:?} is not supported (only a float graph input, \
                             or an int8 tensor with the same quantization)",
                            xty.name()
                        ),
                    }
                } else {
                    act_quant(self.m, x_t).with_context(|| what.to_string())?;
                    if yty != TensorType::Float32 || !self.m.outputs.contains(&y_t) {
                        bail!("{what}: only a DEQUANTIZE to a float graph output is supported");
                    }
                }
                self.placed[y_t] = Some(p);
            }
            code => bail!(
                "operator {oi}: {} is not supported by the TFLite importer \
                 (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, AVERAGE_POOL_2D, MAX_POOL_2D, \
                 RESHAPE, SOFTMAX, ADD, QUANTIZE, DEQUANTIZE are)",
                op_name(code)
            ),
        }
        Ok(())
    }
}

fn op_short(code: i32) -> &'static str {
    match code {
        op::CONV_2D => "conv",
        op::DEPTHWISE_CONV_2D => "dwconv",
        op::FULLY_CONNECTED => "fc",
        op::AVERAGE_POOL_2D => "avgpool",
        op::MAX_POOL_2D => "maxpool",
        op::RESHAPE => "reshape",
        op::SOFTMAX => "softmax",
        op::ADD => "add",
        _ => "op",
    }
}

/// Maps subgraph 0 of `m` onto a compiler graph with pinned quantization.
/// The graph input is NCHW (a 4-D NHWC input is transposed, see the module
/// documentation); graph outputs keep TFLite's shape and memory order.
/// Returns the graph and warnings about what could not be kept exactly
/// (biases beyond Strix's bound, see `clamp_bias`).
pub fn import(m: &Model) -> Result<(CGraph, Vec<String>)> {
    if m.inputs.len() != 1 {
        bail!(
            "the model has {} inputs: only one-input models are imported",
            m.inputs.len()
        );
    }
    let mut imp = Importer {
        m,
        g: CGraph::default(),
        placed: vec![None; m.tensors.len()],
        names: HashSet::new(),
        warnings: vec![],
    };
    let it = m.inputs[0];
    let tin = &m.tensors[it];
    let shape = tin.shape.clone();
    if shape.is_empty() || shape.contains(&0) {
        bail!(
            "input tensor {it} '{}' has shape {shape:?}",
            short(&tin.name)
        );
    }
    let (cg_shape, nchw) = if shape.len() == 4 {
        (vec![shape[0], shape[3], shape[1], shape[2]], true)
    } else {
        (shape.clone(), false)
    };
    let name = imp.name(short(&tin.name));
    let v = imp.g.add_value(&name, cg_shape, None);
    match tin.ttype {
        TensorType::Float32 => {} // pinned by the QUANTIZE reading it
        _ => {
            let q = act_quant(m, it).context("the graph input")?;
            imp.g.pinned.act.insert(v, q);
        }
    }
    imp.g.inputs.push(v);
    imp.placed[it] = Some(Placed { value: v, nchw });
    for oi in 0..m.operators.len() {
        imp.operator(oi)?;
    }
    if tin.ttype == TensorType::Float32 && !imp.g.pinned.act.contains_key(&v) {
        bail!("the float graph input is not quantized by a QUANTIZE operator");
    }
    for &ot in &m.outputs {
        let p = imp.placed[ot].ok_or_else(|| {
            anyhow!(
                "graph output tensor {ot} '{}' is produced by no operator",
                short(&m.tensors[ot].name)
            )
        })?;
        let v = if m.tensors[ot].ttype == TensorType::Int8 {
            imp.tfl(p, ot)?
        } else if p.nchw {
            bail!("float 4-D graph output {ot} is not supported");
        } else {
            p.value
        };
        imp.g.outputs.push(v);
    }
    if imp.g.outputs.is_empty() {
        bail!("the model has no outputs");
    }
    Ok((imp.g, imp.warnings))
}

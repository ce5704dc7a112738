//! Lowering the compiler graph to the runtime graph: all-f32 (the reference
//! used for calibration) or int8 with f32 islands where int8 would hurt.
//!
//! This file is the driver: it walks the graph, chooses each node's
//! precision and inserts the conversions between int8 and f32; what a node
//! becomes is up to its op module ([`crate::ops::IrOp`]). The quantization
//! helpers the op modules share are here too.

use crate::calib::{Method, Stats};
use crate::ir::{Act, CGraph, CNode};
use crate::ops;
use anyhow::{bail, Result};
use std::collections::{HashMap, HashSet};
use strix_kernels::quantize_multiplier;
use strix_kernels::reference as k;
use strix_runtime::graph::{Consts, DType, Graph, Node, Op, Quant, Storage, Tensor};

#[derive(Default)]
pub struct Builder {
    pub g: Graph,
    pub c: Consts,
}

impl Builder {
    pub(crate) fn act(
        &mut self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        quant: Option<Quant>,
    ) -> usize {
        self.g.tensors.push(Tensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            dtype,
            quant,
            storage: Storage::Arena { offset: 0 },
        });
        self.g.tensors.len() - 1
    }
    pub(crate) fn const_f32(&mut self, name: &str, shape: &[usize], v: &[f32]) -> usize {
        let offset = self.c.f32.len();
        self.c.f32.extend_from_slice(v);
        self.push_const(name, shape, DType::F32, offset)
    }
    pub(crate) fn const_i8(&mut self, name: &str, shape: &[usize], v: &[i8]) -> usize {
        let offset = self.c.i8.len();
        self.c.i8.extend_from_slice(v);
        self.push_const(name, shape, DType::I8, offset)
    }
    pub(crate) fn const_i32(&mut self, name: &str, shape: &[usize], v: &[i32]) -> usize {
        let offset = self.c.i32.len();
        self.c.i32.extend_from_slice(v);
        self.push_const(name, shape, DType::I32, offset)
    }
    fn push_const(&mut self, name: &str, shape: &[usize], dtype: DType, offset: usize) -> usize {
        self.g.tensors.push(Tensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            dtype,
            quant: None,
            storage: Storage::Const { offset },
        });
        self.g.tensors.len() - 1
    }
    pub(crate) fn node(&mut self, name: &str, op: Op, inputs: Vec<usize>, output: usize) {
        self.g.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs,
            output,
        });
    }
}

/// All-f32 lowering. Returns the graph and, for every compiler value, the
/// runtime tensor holding it.
pub fn lower_f32(cg: &CGraph) -> Result<(Builder, Vec<Option<usize>>)> {
    let mut b = Builder::default();
    let mut map: Vec<Option<usize>> = vec![None; cg.values.len()];
    for &i in &cg.inputs {
        let v = &cg.values[i];
        map[i] = Some(b.act(&v.name, &v.shape, DType::F32, None));
    }
    b.g.inputs = cg.inputs.iter().map(|&i| map[i].unwrap()).collect();
    for n in &cg.nodes {
        let mut ins = Vec::with_capacity(n.inputs.len());
        for &i in &n.inputs {
            if map[i].is_none() {
                let v = &cg.values[i];
                let k = v
                    .konst
                    .as_ref()
                    .expect("non-constant values are produced before use");
                map[i] = Some(b.const_f32(&v.name, &k.shape, &k.as_f32()));
            }
            ins.push(map[i].unwrap());
        }
        let ov = &cg.values[n.output];
        let out = b.act(&ov.name, &ov.shape, DType::F32, None);
        map[n.output] = Some(out);
        b.node(&n.name, ops::ir(&n.op).f32_op(n), ins, out);
    }
    b.g.outputs = cg.outputs.iter().map(|&o| map[o].unwrap()).collect();
    Ok((b, map))
}

/// Infinite bounds become the largest finite ones: same effect, and the graph
/// section (JSON) has no representation for infinity.
pub(crate) fn fin(x: f32) -> f32 {
    x.clamp(f32::MIN, f32::MAX)
}

/// Asymmetric int8 quantization covering `[lo, hi]` (always including 0).
pub fn choose_quant(lo: f32, hi: f32) -> Quant {
    let lo = lo.min(0.0);
    let hi = hi.max(0.0);
    let scale = ((hi - lo) / 255.0).max(1e-8);
    let zp = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i32;
    Quant {
        scale,
        zero_point: zp,
    }
}

pub(crate) fn q_code(x: f32, q: Quant) -> i8 {
    k::quantize_one(x, 1.0 / q.scale, q.zero_point)
}

pub(crate) fn act_bounds(act: Act, q: Quant) -> (i8, i8) {
    let lo = if act.min.is_finite() {
        q_code(act.min, q)
    } else {
        -128
    };
    let hi = if act.max.is_finite() {
        q_code(act.max, q)
    } else {
        127
    };
    (lo, hi)
}

/// Quantization fixed by the model file instead of chosen from calibration
/// statistics: what an already-quantized model (TFLite int8, ONNX QDQ)
/// brings. Keyed by compiler value ([`CGraph::values`] index), carried by
/// [`CGraph::pinned`], and used by [`lower_int8`] exactly: a pinned
/// activation's `(scale, zero_point)` replaces the calibrated one (so no
/// statistics are needed for it), and a conv's or gemm's pinned integer
/// weights and bias replace the quantization of their f32 constants (which
/// hold the dequantized values, for f32 builds and reports).
///
/// Contract (checked by [`Pinned::check`] at the start of [`lower_int8`]):
/// weights are symmetric (zero point 0) per output channel, their codes in
/// the same layout as the f32 constant (a gemm's `[k][n]`), one scale per
/// output channel; a pinned weight comes with a pinned bias (int32, scale =
/// input scale x weight scale, as TFLite and ONNX QDQ define it) and a
/// pinned input. Graph passes that rewrite weights or values must drop or
/// update the pins: the TFLite importer runs none; on ONNX QDQ imports
/// ([`crate::qdq`]) equalization and dead-channel removal do not run and
/// `check-pins` ([`crate::passes::check_pins`]) drops the pins a rewrite
/// invalidated. An op that keeps its input's quantization but whose output
/// is pinned to another runs in f32 ([`pinned_requant_nodes`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pinned {
    /// Activations (and graph inputs) by value.
    pub act: HashMap<usize, Quant>,
    /// Constant weights by value.
    pub weights: HashMap<usize, PinnedWeights>,
    /// Constant biases by value (int32 codes).
    pub bias: HashMap<usize, Vec<i32>>,
}

/// Integer weights of a [`Pinned`] conv or gemm.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PinnedWeights {
    /// The int8 codes, in the layout of the value's f32 constant.
    pub q: Vec<i8>,
    /// One scale per output channel (zero points are 0).
    pub scales: Vec<f32>,
}

impl Pinned {
    pub fn is_empty(&self) -> bool {
        self.act.is_empty() && self.weights.is_empty() && self.bias.is_empty()
    }

    /// Checks the pins against the graph: the pinned weights a conv or gemm
    /// reads have as many codes as its constant has values and one scale
    /// per output channel; a pinned weight comes with a pinned bias and a
    /// pinned input activation, and the reverse. Pins of values no node reads (left by dead-code removal)
    /// are ignored. Errors name the node.
    pub fn check(&self, cg: &CGraph) -> Result<()> {
        use crate::ir::COp;
        for (&v, q) in &self.act {
            let Some(val) = cg.values.get(v) else {
                bail!("pinned quantization for value {v}, which does not exist");
            };
            if !(q.scale.is_finite() && q.scale > 0.0 && (-128..=127).contains(&q.zero_point)) {
                bail!(
                    "'{}': pinned quantization scale {} zero point {} is not a valid int8 one",
                    val.name,
                    q.scale,
                    q.zero_point
                );
            }
        }
        for n in &cg.nodes {
            let rows = match &n.op {
                COp::Conv { geom, .. } => geom.out_c,
                COp::Gemm { n: nn, .. } => *nn,
                _ => continue,
            };
            let (Some(&wv), bv) = (n.inputs.get(1), n.inputs.get(2).copied()) else {
                continue;
            };
            let pw = self.weights.get(&wv);
            let pb = bv.and_then(|b| self.bias.get(&b));
            let (pw, pb) = match (pw, pb) {
                (None, None) => continue,
                (Some(w), Some(b)) => (w, b),
                _ => bail!(
                    "node '{}': its weights and bias must both be pinned or neither",
                    n.name
                ),
            };
            let wlen = cg.values[wv].konst.as_ref().map(|k| k.len());
            if wlen != Some(pw.q.len()) || pw.scales.len() != rows || pb.len() != rows {
                bail!(
                    "node '{}': pinned weights ({} codes, {} scales) and bias ({} values) do not \
                     fit its {:?} weights with {rows} output channels",
                    n.name,
                    pw.q.len(),
                    pw.scales.len(),
                    pb.len(),
                    wlen
                );
            }
            if let Some(s) = pw.scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                bail!("node '{}': pinned weight scale {s} is not positive", n.name);
            }
            if !self.act.contains_key(&n.inputs[0]) {
                bail!(
                    "node '{}': pinned weights need a pinned input quantization",
                    n.name
                );
            }
        }
        Ok(())
    }
}

/// Nodes whose int8 form keeps its input's quantization (pools, reshapes,
/// transposes, slices, gathers, resizes, pads: [`int8_same_quant`]) but
/// whose output the file pins to another one (ONNX QDQ requantizes after a
/// GlobalAveragePool, say): they run in f32 between a dequantization and a
/// quantization at the pin, which rounds once, as the file does.
pub fn pinned_requant_nodes(cg: &CGraph) -> HashSet<usize> {
    use crate::ir::COp;
    cg.nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            matches!(
                n.op,
                COp::MaxPool { .. }
                    | COp::AvgPool { .. }
                    | COp::Reshape
                    | COp::Transpose { .. }
                    | COp::Slice { .. }
                    | COp::Gather { .. }
                    | COp::Resize { .. }
                    | COp::Pad { .. }
            )
        })
        .filter(|(_, n)| match cg.pinned.act.get(&n.output) {
            Some(oq) => cg.pinned.act.get(&n.inputs[0]) != Some(oq),
            None => false,
        })
        .map(|(i, _)| i)
        .collect()
}

/// Symmetric per-output-channel int8 weights: rows of `per` values.
fn quantize_weights(w: &[f32], rows: usize) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / rows.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(rows);
    for r in 0..rows {
        let row = &w[r * per..(r + 1) * per];
        let m = row.iter().fold(0f32, |a, &x| a.max(x.abs()));
        let s = if m > 0.0 { m / 127.0 } else { 1.0 };
        scales.push(s);
        q.extend(
            row.iter()
                .map(|&x| (x / s).round().clamp(-127.0, 127.0) as i8),
        );
    }
    (q, scales)
}

pub(crate) fn requant_table(in_scale: f32, w_scales: &[f32], out_scale: f32) -> Vec<i32> {
    w_scales
        .iter()
        .flat_map(|&ws| {
            let r = quantize_multiplier(in_scale as f64 * ws as f64 / out_scale as f64);
            [r.mult, r.shift]
        })
        .collect()
}

fn bias_i32(b: &[f32], in_scale: f32, w_scales: &[f32]) -> Vec<i32> {
    b.iter()
        .zip(w_scales)
        .map(|(&x, &ws)| {
            (x as f64 / (in_scale as f64 * ws as f64))
                .round()
                .clamp(-(1 << 30) as f64, (1 << 30) as f64) as i32
        })
        .collect()
}

/// Quantizes a conv/gemm node's weights (per output channel) and bias and
/// adds them as constants; returns (weights tensor, bias tensor, weight scales).
/// Gemm weights arrive as `[k][n]` (`kn = Some((k, n))`) and are stored `[n][k]`.
pub(crate) fn weight_consts(
    b: &mut Builder,
    cg: &CGraph,
    n: &CNode,
    rows: usize,
    kn: Option<(usize, usize)>,
    in_scale: f32,
) -> (usize, usize, Vec<f32>) {
    let name = &cg.values[n.output].name;
    let (wq, bq, ws) = quantized_weights(cg, n, rows, kn, in_scale);
    let wt = b.const_i8(&format!("{name}#w"), &[wq.len()], &wq);
    let bt = b.const_i32(&format!("{name}#b"), &[rows], &bq);
    (wt, bt, ws)
}

/// The int8 weights (`[rows][k]`), int32 bias and per-row weight scales of a
/// conv or gemm node (gemm weights `[k][n]` are transposed when `kn` is given).
/// [`Pinned`] weights and bias are used as they are.
pub(crate) fn quantized_weights(
    cg: &CGraph,
    n: &CNode,
    rows: usize,
    kn: Option<(usize, usize)>,
    in_scale: f32,
) -> (Vec<i8>, Vec<i32>, Vec<f32>) {
    if let (Some(pw), Some(pb)) = (
        cg.pinned.weights.get(&n.inputs[1]),
        n.inputs.get(2).and_then(|b| cg.pinned.bias.get(b)),
    ) {
        // Shapes were checked by `Pinned::check` when the lowering began.
        let q = match kn {
            Some((kk, nn)) => {
                let mut t = vec![0i8; kk * nn];
                for i in 0..kk {
                    for j in 0..nn {
                        t[j * kk + i] = pw.q[i * nn + j];
                    }
                }
                t
            }
            None => pw.q.clone(),
        };
        return (q, pb.clone(), pw.scales.clone());
    }
    let mut w = cg.values[n.inputs[1]]
        .konst
        .as_ref()
        .expect("constant weights")
        .as_f32();
    if let Some((kk, nn)) = kn {
        let mut t = vec![0f32; kk * nn];
        for i in 0..kk {
            for j in 0..nn {
                t[j * kk + i] = w[i * nn + j];
            }
        }
        w = t;
    }
    let bias = cg.values[n.inputs[2]]
        .konst
        .as_ref()
        .expect("constant bias")
        .as_f32();
    let (wq, ws) = quantize_weights(&w, rows);
    let bq = bias_i32(&bias, in_scale, &ws);
    (wq, bq, ws)
}

/// Smallest fraction of all-zero 1x4 weight blocks (after quantization) at
/// which an int8 conv is emitted as [`Op::QConvSparse`]. From
/// `kernels/examples/sparse_speed.rs` on AVX2: the sparse conv is ~0.9x the
/// dense one with no zero blocks, 1.0-1.2x at 30%, 1.1-1.5x at 50% and
/// 1.3-2.4x at 80%; the smallest layers (24 output channels, where packing and
/// the output stage weigh most) break even just below 30%, so 35% leaves a
/// margin and a sparse layer is never slower than dense.
pub const SPARSE_MIN_ZERO_BLOCKS: f64 = 0.35;

/// Options of [`lower_int8`].
#[derive(Clone, Debug)]
pub struct Int8Options {
    /// Emit [`Op::QConvSparse`] for ungrouped convs whose quantized weights
    /// have at least [`SPARSE_MIN_ZERO_BLOCKS`] all-zero blocks (models
    /// pruned in blocks, or arriving with zeros from training). Off gives the
    /// dense graph, with bit-identical outputs.
    pub sparse: bool,
    /// Store the constant weights of every layer that stays f32 (conv, gemm,
    /// LSTM; see [`store_weights_f16`]) as f16: half the bytes, outputs within
    /// f16 rounding. `strix convert --f16-weights`; `convert` applies it to
    /// `--fp32` builds too.
    pub f16_weights: bool,
    /// Nodes (indices into `cg.nodes`) additionally kept in f32: the mixed
    /// precision chosen by the pruner.
    pub keep_f32: HashSet<usize>,
    /// Nodes of `keep_f32` that also store their constant weights as f16
    /// (see [`store_weights_f16`]): they still compute in f32, from weights
    /// rounded to half precision, so the file carries 2 bytes per weight
    /// instead of 4.
    pub f16: HashSet<usize>,
    /// Correct each conv's and gemm's bias by the mean int8 error measured
    /// on the calibration samples ([`crate::biascorr`]; `strix convert
    /// --bias-correction`). Off by default: it lifts FastestDet on unseen
    /// photos but moves VWW's person score further from fp32. Read by
    /// [`crate::convert_with`], not by [`lower_int8`], which has no samples.
    pub bias_correction: bool,
    /// Fill small image calibration sets with mirrored and cropped views of
    /// the images ([`crate::augment`]; `strix convert --calib-augment`).
    /// Off by default: alone it costs FastestDet its boxes on its two
    /// calibration photos (map50 1.0 -> 0.69); with `bias_correction` they
    /// stay at 1.0. Read by [`crate::convert_with`], like `bias_correction`.
    pub calib_augment: bool,
}

impl Default for Int8Options {
    fn default() -> Self {
        Int8Options {
            sparse: true,
            f16_weights: false,
            keep_f32: HashSet::new(),
            f16: HashSet::new(),
            bias_correction: false,
            calib_augment: false,
        }
    }
}

/// Chooses each node's precision: int8 where the inputs allow it, except
/// convs/gemms whose results only reach f32 ops (through transparent ops),
/// which keep int8 arithmetic but produce f32 (no output rounding).
/// Returns the value dtypes and the set of such f32-output nodes.
fn plan_precision(
    cg: &CGraph,
    keep_f32: &std::collections::HashSet<usize>,
) -> (Vec<Option<DType>>, std::collections::HashSet<usize>) {
    let mut consumers: Vec<Vec<usize>> = vec![vec![]; cg.values.len()];
    for (i, n) in cg.nodes.iter().enumerate() {
        for &v in &n.inputs {
            consumers[v].push(i);
        }
    }
    let is_output: Vec<bool> = (0..cg.values.len())
        .map(|v| cg.outputs.contains(&v))
        .collect();
    let mut f32out = std::collections::HashSet::new();
    loop {
        let mut prec: Vec<Option<DType>> = vec![None; cg.values.len()];
        for &i in &cg.inputs {
            prec[i] = Some(DType::F32);
        }
        for (i, n) in cg.nodes.iter().enumerate() {
            let int8 = !f32out.contains(&i)
                && !keep_f32.contains(&i)
                && ops::ir(&n.op).wants_int8(cg, n, &prec);
            prec[n.output] = Some(if int8 { DType::I8 } else { DType::F32 });
        }
        fn only_f32_sinks(
            cg: &CGraph,
            v: usize,
            consumers: &[Vec<usize>],
            is_output: &[bool],
            depth: usize,
        ) -> bool {
            if depth > 64 {
                return false;
            }
            let _ = is_output[v];
            consumers[v].iter().all(|&c| {
                let n = &cg.nodes[c];
                let def = ops::ir(&n.op);
                def.f32_only(cg, n)
                    || (def.transparent(cg, n)
                        && only_f32_sinks(cg, n.output, consumers, is_output, depth + 1))
            })
        }
        let mut changed = false;
        for (i, n) in cg.nodes.iter().enumerate() {
            // A pinned output is int8 in the model file: keep its rounding.
            if ops::ir(&n.op).has_f32_output()
                && !cg.pinned.act.contains_key(&n.output)
                && prec[n.output] == Some(DType::I8)
                && !f32out.contains(&i)
                && only_f32_sinks(cg, n.output, &consumers, &is_output, 0)
            {
                f32out.insert(i);
                changed = true;
            }
        }
        if !changed {
            return (prec, f32out);
        }
    }
}

/// Per-layer precision decided by the compiler, for reports.
pub struct Lowered {
    pub builder: Builder,
    /// Runtime tensor of each compiler value in the int8 graph (int8 where it
    /// is int8, else f32), for per-layer error reports.
    pub value_tensor: Vec<Option<usize>>,
}

/// What an op's int8 form ([`crate::ops::IrOp::int8`]) emits for one node:
/// the runtime op and its inputs; the driver adds the output tensor.
pub(crate) struct Int8Node {
    pub op: Op,
    pub inputs: Vec<usize>,
    /// The output's quantization; `None`: the output is f32 (int8
    /// arithmetic ending in f32, see [`Int8Cx::f32_output`]).
    pub quant: Option<Quant>,
}

/// The state of an int8 lowering, handed to each op's int8 form.
pub(crate) struct Int8Cx<'a> {
    pub b: Builder,
    pub cg: &'a CGraph,
    pub opts: &'a Int8Options,
    /// Only f32 ops read the node being lowered: a conv or gemm keeps int8
    /// arithmetic but produces f32 (no output rounding).
    pub f32_output: bool,
    stats: &'a HashMap<usize, Stats>,
    method: Method,
    f32_t: Vec<Option<usize>>,
    i8_t: Vec<Option<usize>>,
    quant: Vec<Option<Quant>>,
}

/// The error of [`lower_int8`] on a value with neither calibration
/// statistics nor a pin: callers with pins try without statistics first.
#[derive(Debug)]
pub struct MissingStats(pub String);

impl std::fmt::Display for MissingStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no calibration statistics for '{}'", self.0)
    }
}

impl std::error::Error for MissingStats {}

impl Int8Cx<'_> {
    /// The int8 quantization of value `v`: pinned by the model file (see
    /// [`Pinned`]), else from its calibration statistics.
    pub fn quant_of(&self, v: usize) -> Result<Quant> {
        if let Some(&q) = self.cg.pinned.act.get(&v) {
            return Ok(q);
        }
        let s = self
            .stats
            .get(&v)
            .ok_or_else(|| MissingStats(self.cg.values[v].name.clone()))?;
        let (lo, hi) = s.range(self.method);
        Ok(choose_quant(lo, hi))
    }

    /// Value `v` as an f32 tensor: a constant, or dequantized on first use.
    pub fn f32_input(&mut self, v: usize) -> usize {
        if let Some(t) = self.f32_t[v] {
            return t;
        }
        let val = &self.cg.values[v];
        let t = if let Some(k) = &val.konst {
            self.b.const_f32(&val.name, &k.shape, &k.as_f32())
        } else {
            let src = self.i8_t[v].expect("produced");
            let t = self
                .b
                .act(&format!("{}#f32", val.name), &val.shape, DType::F32, None);
            self.b.node(
                &format!("{}#dequantize", val.name),
                Op::Dequantize,
                vec![src],
                t,
            );
            t
        };
        self.f32_t[v] = Some(t);
        t
    }

    /// Activation `v` as an int8 tensor and its quantization (quantizing
    /// an f32 one on first use).
    pub fn i8_input(&mut self, v: usize) -> Result<(usize, Quant)> {
        if let Some(t) = self.i8_t[v] {
            return Ok((t, self.quant[v].unwrap()));
        }
        let q = self.quant_of(v)?;
        let src = self.f32_input(v);
        let t = self.b.act(
            &format!("{}#q", self.cg.values[v].name),
            &self.cg.values[v].shape,
            DType::I8,
            Some(q),
        );
        self.b.node(
            &format!("{}#quantize", self.cg.values[v].name),
            Op::Quantize,
            vec![src],
            t,
        );
        self.i8_t[v] = Some(t);
        self.quant[v] = Some(q);
        Ok((t, q))
    }
}

/// The int8 form of an op that moves int8 values as they are (pools,
/// transposes, reshapes, slices, gathers, resizes): `op` on the int8 input,
/// whose quantization the output keeps.
pub(crate) fn int8_same_quant(cx: &mut Int8Cx, n: &CNode, op: Op) -> Result<Int8Node> {
    let (x, xq) = cx.i8_input(n.inputs[0])?;
    Ok(Int8Node {
        op,
        inputs: vec![x],
        quant: Some(xq),
    })
}

/// Int8 lowering with f32 islands: each node runs int8 where its op has an
/// int8 form and its inputs allow it, except the nodes of
/// `opts.keep_f32`; see [`Int8Options`].
///
/// Values with [`Pinned`] quantization (`cg.pinned`) use it instead of
/// statistics, and pinned weights and biases are used as they are.
///
/// Errors: a node of `opts.f16` not in `opts.keep_f32`, not a conv, gemm or
/// LSTM, or without constant weights; weights beyond the f16 range
/// (|w| > 65504); a value without calibration statistics (or pins);
/// pins that do not fit the graph ([`Pinned::check`]).
pub fn lower_int8(
    cg: &CGraph,
    stats: &HashMap<usize, Stats>,
    method: Method,
    opts: &Int8Options,
) -> Result<Lowered> {
    cg.pinned.check(cg)?;
    for &ni in &opts.f16 {
        let Some(n) = cg.nodes.get(ni) else {
            bail!("f16 node {ni} does not exist ({} nodes)", cg.nodes.len());
        };
        if !opts.keep_f32.contains(&ni) {
            bail!(
                "node {ni} '{}' asks for f16 weights but is not kept f32 (f16 must be a subset of keep_f32)",
                n.name
            );
        }
        let weights = ops::ir(&n.op).f16_weight_slots();
        if weights.is_empty() || !weights.iter().all(|&s| cg.is_const(n.inputs[s])) {
            bail!(
                "node {ni} '{}' ({}) has no constant weights to store as f16 \
                 (only convs, gemms and LSTMs with constant weights)",
                n.name,
                n.op.name()
            );
        }
    }
    let nv = cg.values.len();
    let mut cx = Int8Cx {
        b: Builder::default(),
        cg,
        opts,
        f32_output: false,
        stats,
        method,
        f32_t: vec![None; nv],
        i8_t: vec![None; nv],
        quant: vec![None; nv],
    };
    for &i in &cg.inputs {
        let v = &cg.values[i];
        cx.f32_t[i] = Some(cx.b.act(&v.name, &v.shape, DType::F32, None));
    }
    cx.b.g.inputs = cg.inputs.iter().map(|&i| cx.f32_t[i].unwrap()).collect();
    let mut keep_f32 = opts.keep_f32.clone();
    keep_f32.extend(pinned_requant_nodes(cg));
    let (planned, f32out) = plan_precision(cg, &keep_f32);
    // Runtime nodes whose weights are stored as f16 (from `opts.f16`).
    let mut f16_nodes = vec![];
    for (ni, n) in cg.nodes.iter().enumerate() {
        let int8 = planned[n.output] == Some(DType::I8) || f32out.contains(&ni);
        let ov = &cg.values[n.output];
        let def = ops::ir(&n.op);
        if !int8 {
            let ins: Vec<usize> = n.inputs.iter().map(|&v| cx.f32_input(v)).collect();
            let out = cx.b.act(&ov.name, &ov.shape, DType::F32, None);
            if opts.f16.contains(&ni) {
                f16_nodes.push(cx.b.g.nodes.len());
            }
            cx.b.node(&n.name, def.f32_op(n), ins, out);
            cx.f32_t[n.output] = Some(out);
            continue;
        }
        cx.f32_output = f32out.contains(&ni);
        let Int8Node { op, inputs, quant } = def.int8(&mut cx, n)?;
        match quant {
            Some(oq) => {
                let out = cx.b.act(&ov.name, &ov.shape, DType::I8, Some(oq));
                cx.b.node(&n.name, op, inputs, out);
                cx.i8_t[n.output] = Some(out);
                cx.quant[n.output] = Some(oq);
            }
            None => {
                let out = cx.b.act(&ov.name, &ov.shape, DType::F32, None);
                cx.b.node(&n.name, op, inputs, out);
                cx.f32_t[n.output] = Some(out);
            }
        }
    }
    let Int8Cx {
        mut b, f32_t, i8_t, ..
    } = cx;
    // Graph outputs are real values.
    let mut outs = vec![];
    for &o in &cg.outputs {
        let t = if let Some(t) = f32_t[o] {
            t
        } else {
            let src = i8_t[o].unwrap();
            let name = cg.values[o].name.clone();
            b.g.tensors[src].name = format!("{name}#q");
            let t = b.act(&name, &cg.values[o].shape, DType::F32, None);
            b.node(&format!("{name}#dequantize"), Op::Dequantize, vec![src], t);
            t
        };
        outs.push(t);
    }
    b.g.outputs = outs;
    if f16_nodes.len() != opts.f16.len() {
        bail!("internal: a node asking for f16 weights was not lowered to f32");
    }
    if opts.f16_weights {
        f16_nodes = f16_candidates(&b.g);
    }
    store_weights_f16(&mut b, &f16_nodes)?;
    let value_tensor = (0..nv)
        .map(|v| {
            if cg.is_const(v) {
                None
            } else {
                i8_t[v].or(f32_t[v])
            }
        })
        .collect();
    Ok(Lowered {
        builder: b,
        value_tensor,
    })
}

/// The constant weight inputs of a runtime node that can be stored as f16:
/// the weights of f32 convs and gemms, the input and recurrent weights of
/// LSTMs. Biases stay f32 (a few values, and they carry no rounding budget).
fn f16_weight_inputs(g: &Graph, n: &Node) -> Vec<usize> {
    let ks: &[usize] = match n.op {
        Op::Conv { .. } | Op::Gemm { .. } => &[1],
        Op::Lstm { .. } => &[1, 2],
        _ => &[],
    };
    ks.iter()
        .filter_map(|&k| n.inputs.get(k).copied())
        .filter(|&t| {
            let t = &g.tensors[t];
            t.dtype == DType::F32 && matches!(t.storage, Storage::Const { .. })
        })
        .collect()
}

/// Every node of `g` with weights [`store_weights_f16`] can convert (the f32
/// convs, gemms with constant weights and LSTMs).
pub fn f16_candidates(g: &Graph) -> Vec<usize> {
    (0..g.nodes.len())
        .filter(|&i| !f16_weight_inputs(g, &g.nodes[i]).is_empty())
        .collect()
}

/// Moves the constant weights of runtime nodes `nodes` (indices into
/// `b.g.nodes`, each in [`f16_candidates`]) from the f32 pool to the f16
/// pool, rounding to nearest, and compacts the f32 pool. A weight shared by
/// several nodes is converted for all of them. Fails, naming the node, on a
/// weight beyond the f16 range (it would become infinite) or a node with no
/// such weights.
pub fn store_weights_f16(b: &mut Builder, nodes: &[usize]) -> Result<()> {
    if nodes.is_empty() {
        return Ok(()); // leave the pools (and the file) exactly as they were
    }
    let mut convert = vec![false; b.g.tensors.len()];
    for &ni in nodes {
        let Some(n) = b.g.nodes.get(ni) else {
            bail!("runtime node {ni} does not exist");
        };
        let ws = f16_weight_inputs(&b.g, n);
        if ws.is_empty() {
            bail!(
                "node '{}' ({}) has no f32 constant weights to store as f16",
                n.name,
                n.op.name()
            );
        }
        for t in ws {
            let Storage::Const { offset } = b.g.tensors[t].storage else {
                unreachable!("f16_weight_inputs returns constants")
            };
            let v = &b.c.f32[offset..offset + b.g.tensors[t].len()];
            if let Some(x) = v.iter().find(|x| !half::f16::from_f32(**x).is_finite()) {
                bail!(
                    "node '{}': weight {x} of '{}' is beyond the f16 range (|w| <= {}); \
                     keep this layer's weights f32",
                    n.name,
                    b.g.tensors[t].name,
                    half::f16::MAX
                );
            }
            convert[t] = true;
        }
    }
    // Rebuild both pools in tensor order: converted weights leave the f32
    // pool, so the file shrinks by 2 bytes per weight.
    let old = std::mem::take(&mut b.c.f32);
    for (t, tensor) in b.g.tensors.iter_mut().enumerate() {
        let Storage::Const { offset } = tensor.storage else {
            continue;
        };
        if tensor.dtype != DType::F32 {
            continue;
        }
        let v = &old[offset..offset + tensor.len()];
        tensor.storage = if convert[t] {
            let at = b.c.f16.len();
            b.c.f16.extend(v.iter().map(|&x| half::f16::from_f32(x)));
            Storage::ConstF16 { offset: at }
        } else {
            let at = b.c.f32.len();
            b.c.f32.extend_from_slice(v);
            Storage::Const { offset: at }
        };
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ir::{CNode, COp, HostTensor};
    use strix_kernels::reference::ConvGeometry;
    use strix_runtime::Model;

    /// Deterministic values in `[-1, 1)` using every mantissa bit (so f16
    /// rounding is visible). Shared with the other passes' tests.
    pub(crate) fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005) | 1;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// `x [1,4,8,8] -> conv 3x3 (8) -> relu-free conv 1x1 (8) -> y`.
    fn two_convs() -> CGraph {
        let mut g = CGraph::default();
        let x = g.add_value("x", vec![1, 4, 8, 8], None);
        g.inputs.push(x);
        let mut prev = x;
        for (i, (in_c, k)) in [(4, 3), (8, 1)].into_iter().enumerate() {
            let wshape = vec![8, in_c, k, k];
            let wl = 8 * in_c * k * k;
            let w = g.add_value(
                &format!("w{i}"),
                wshape.clone(),
                Some(HostTensor::f32(wshape, noise(wl, i as u64 + 1))),
            );
            let b = g.add_value(
                &format!("b{i}"),
                vec![8],
                Some(HostTensor::f32(vec![8], noise(8, i as u64 + 10))),
            );
            let o = g.add_value(&format!("y{i}"), vec![1, 8, 8, 8], None);
            g.nodes.push(CNode {
                name: format!("conv{i}"),
                op: COp::Conv {
                    geom: ConvGeometry {
                        in_c,
                        in_h: 8,
                        in_w: 8,
                        out_c: 8,
                        out_h: 8,
                        out_w: 8,
                        kh: k,
                        kw: k,
                        stride_h: 1,
                        stride_w: 1,
                        dil_h: 1,
                        dil_w: 1,
                        pad_top: k / 2,
                        pad_left: k / 2,
                        groups: 1,
                    },
                    act: Act::NONE,
                },
                inputs: vec![prev, w, b],
                output: o,
            });
            prev = o;
        }
        g.outputs.push(prev);
        g
    }

    fn samples() -> Vec<Vec<Vec<f32>>> {
        (0..4).map(|s| vec![noise(256, 100 + s)]).collect()
    }

    fn model(l: Lowered) -> Model {
        let mut b = l.builder;
        strix_runtime::plan::plan(&mut b.g, true);
        Model::new(Default::default(), b.g, b.c).unwrap()
    }

    fn run(m: &Model, x: &[f32]) -> Vec<f32> {
        crate::run_values(m, x).unwrap().remove(0).0
    }

    #[test]
    fn f16_weights_of_a_kept_f32_conv() {
        let cg = two_convs();
        let stats = crate::calib::calibrate(&cg, &samples(), Method::Minmax, || {}).unwrap();
        let keep: HashSet<usize> = [0].into();
        let lower = |f16: &HashSet<usize>| {
            let opts = Int8Options {
                keep_f32: keep.clone(),
                f16: f16.clone(),
                ..Default::default()
            };
            model(lower_int8(&cg, &stats, Method::Minmax, &opts).unwrap())
        };
        let (m32, m16) = (lower(&HashSet::new()), lower(&keep));

        // conv0 runs f32 from f16 weights; conv1 stays int8 (with f32
        // output, as it feeds the graph output); the 288 weights
        // left the f32 pool (2 bytes each saved), the bias did not.
        let conv0 = m16.graph.nodes.iter().find(|n| n.name == "conv0").unwrap();
        assert!(matches!(conv0.op, Op::Conv { .. }));
        let w = &m16.graph.tensors[conv0.inputs[1]];
        assert_eq!(w.storage, Storage::ConstF16 { offset: 0 });
        assert!(matches!(
            m16.graph.tensors[conv0.inputs[2]].storage,
            Storage::Const { .. }
        ));
        assert_eq!(m16.consts.f16.len(), 288);
        assert_eq!(m32.consts.f32.len() - m16.consts.f32.len(), 288);
        assert_eq!(m32.consts.bytes() - m16.consts.bytes(), 2 * 288);
        assert_eq!(crate::precision(&m16.graph, conv0), "f32 (f16 weights)");
        let conv1 = m16.graph.nodes.iter().find(|n| n.name == "conv1").unwrap();
        assert!(matches!(conv1.op, Op::QConvF32 { .. }));
        assert_eq!(crate::precision(&m16.graph, conv1), "f32");
        let j = crate::inspect_json(&m16);
        let op0 = j["ops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "conv0");
        assert_eq!(op0.unwrap()["weights_storage"], "f16");
        assert_eq!(j["f16_weights_bytes"], 576);
        assert!(crate::inspect_text(&m16).contains("f32 (f16 weights)"));

        // Outputs: f16 rounding (2^-11 relative) in conv0 moves conv1's
        // int8 input by at most one code here and there: the outputs differ,
        // by far less than 1% of their range.
        let (mut worst, mut range) = (0f32, 0f32);
        for x in samples() {
            let (a, b) = (run(&m32, &x[0]), run(&m16, &x[0]));
            for (p, q) in a.iter().zip(&b) {
                worst = worst.max((p - q).abs());
                range = range.max(p.abs());
            }
        }
        eprintln!("max diff {worst}, output range {range}");
        assert!(worst > 0.0, "f16 weights changed nothing");
        assert!(worst < 0.01 * range, "max diff {worst} vs range {range}");
        assert!(range > 1.0, "outputs are trivial");
    }

    #[test]
    fn f16_requests_outside_the_f32_layers_are_errors() {
        let cg = two_convs();
        let stats = crate::calib::calibrate(&cg, &samples(), Method::Minmax, || {}).unwrap();
        let err = |keep: &[usize], f16: &[usize]| {
            let (keep, f16): (HashSet<usize>, HashSet<usize>) = (
                keep.iter().copied().collect(),
                f16.iter().copied().collect(),
            );
            let opts = Int8Options {
                keep_f32: keep.clone(),
                f16: f16.clone(),
                ..Default::default()
            };
            match lower_int8(&cg, &stats, Method::Minmax, &opts) {
                Ok(_) => panic!("accepted keep {keep:?} f16 {f16:?}"),
                Err(e) => e.to_string(),
            }
        };
        let e = err(&[0], &[1]);
        assert!(
            e.contains("'conv1'") && e.contains("subset of keep_f32"),
            "{e}"
        );
        let e = err(&[0], &[7]);
        assert!(e.contains("f16 node 7 does not exist"), "{e}");
    }

    #[test]
    fn weights_beyond_the_f16_range_are_refused() {
        let mut cg = two_convs();
        let w = cg.nodes[0].inputs[1];
        if let Some(HostTensor {
            data: crate::ir::HostData::F32(v),
            ..
        }) = &mut cg.values[w].konst
        {
            v[5] = 70000.0;
        }
        let (mut b, _) = lower_f32(&cg).unwrap();
        let nodes = f16_candidates(&b.g);
        assert_eq!(nodes, vec![0, 1]);
        let e = store_weights_f16(&mut b, &nodes).unwrap_err().to_string();
        assert!(
            e.contains("'conv0'") && e.contains("70000") && e.contains("f16 range"),
            "{e}"
        );
        // A node without f32 constant weights is refused too.
        let (mut b, _) = lower_f32(&two_convs()).unwrap();
        let e = store_weights_f16(&mut b, &[5]).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn an_fp32_build_with_f16_weights_keeps_every_other_constant() {
        let cg = two_convs();
        let (b32, _) = lower_f32(&cg).unwrap();
        let (mut b16, _) = lower_f32(&cg).unwrap();
        let nodes = f16_candidates(&b16.g);
        store_weights_f16(&mut b16, &nodes).unwrap();
        assert_eq!(b16.c.f32.len(), 16, "only the two biases stay f32");
        assert_eq!(b16.c.f16.len(), 288 + 64);
        let (m32, m16) = (model_of(b32), model_of(b16));
        for x in samples() {
            let (a, b) = (run(&m32, &x[0]), run(&m16, &x[0]));
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(&b)
                .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            // Two layers of 2^-11 relative weight rounding, summed over up
            // to 36 products: far below 1% of the output range.
            assert!(worst > 0.0 && worst < 0.01 * scale, "{worst} vs {scale}");
        }
    }

    /// Pinned quantization overrides calibration exactly: the input's
    /// Quantize, the conv's int8 weights, bias and requantization come from
    /// the pins, and a pinned output keeps its int8 rounding (no f32-output
    /// conv) even though only the graph output reads it.
    #[test]
    fn pins_replace_calibration() {
        let mut cg = two_convs();
        let stats = crate::calib::calibrate(&cg, &samples(), Method::Minmax, || {}).unwrap();
        let (x, w0, b0, y0, y1) = (
            cg.inputs[0],
            cg.nodes[0].inputs[1],
            cg.nodes[0].inputs[2],
            cg.nodes[0].output,
            cg.nodes[1].output,
        );
        let xq = Quant {
            scale: 0.01,
            zero_point: 7,
        };
        let y0q = Quant {
            scale: 0.05,
            zero_point: -3,
        };
        let y1q = Quant {
            scale: 0.2,
            zero_point: 1,
        };
        let codes: Vec<i8> = (0..8 * 4 * 9).map(|i| (i % 251) as i8).collect();
        let scales: Vec<f32> = (0..8).map(|c| 0.001 * (c + 1) as f32).collect();
        let bias: Vec<i32> = (0..8).map(|c| c * 1000 - 3000).collect();
        cg.pinned.act.extend([(x, xq), (y0, y0q), (y1, y1q)]);
        cg.pinned.weights.insert(
            w0,
            PinnedWeights {
                q: codes.clone(),
                scales: scales.clone(),
            },
        );
        cg.pinned.bias.insert(b0, bias.clone());
        let b = lower_int8(&cg, &stats, Method::Minmax, &Default::default())
            .unwrap()
            .builder;
        let g = &b.g;
        let quant = g.nodes.iter().find(|n| n.op == Op::Quantize).unwrap();
        assert_eq!(g.tensors[quant.output].quant, Some(xq));
        let conv0 = g.nodes.iter().find(|n| n.name == "conv0").unwrap();
        let Op::QConv { q, .. } = &conv0.op else {
            panic!("conv0 is {:?}", conv0.op)
        };
        assert_eq!((q.in_zp, q.out_zp), (7, -3));
        assert_eq!(g.tensors[conv0.output].quant, Some(y0q));
        let konst = |t: usize| match g.tensors[t].storage {
            Storage::Const { offset } => offset..offset + g.tensors[t].len(),
            _ => panic!("not a constant"),
        };
        assert_eq!(b.c.i8[konst(conv0.inputs[1])], codes[..]);
        assert_eq!(b.c.i32[konst(conv0.inputs[2])], bias[..]);
        assert_eq!(
            b.c.i32[konst(conv0.inputs[3])],
            requant_table(xq.scale, &scales, y0q.scale)[..]
        );
        // conv1 feeds only the graph output: without a pin it would be a
        // QConvF32; pinned, it rounds to its int8 quantization.
        let conv1 = g.nodes.iter().find(|n| n.name == "conv1").unwrap();
        assert!(matches!(conv1.op, Op::QConv { .. }), "{:?}", conv1.op);
        assert_eq!(g.tensors[conv1.output].quant, Some(y1q));
        // Pins that do not fit are refused, naming the node.
        cg.pinned.weights.get_mut(&w0).unwrap().scales.pop();
        let e = lower_int8(&cg, &stats, Method::Minmax, &Default::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("'conv0'") && e.contains("7 scales"), "{e}");
    }

    fn model_of(mut b: Builder) -> Model {
        strix_runtime::plan::plan(&mut b.g, true);
        Model::new(Default::default(), b.g, b.c).unwrap()
    }
}

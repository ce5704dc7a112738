//! Lowering the compiler graph to the runtime graph: all-f32 (the reference
//! used for calibration) or int8 with f32 islands where int8 would hurt.

use crate::calib::Stats;
use crate::ir::{Act, CGraph, COp, HostTensor};
use anyhow::{bail, Result};
use std::collections::{HashMap, HashSet};
use strix_kernels::reference::{
    self as k, BinaryOp, QAddParams, QConvParams, QGemmParams, QMulParams, UnaryOp,
};
use strix_kernels::{quantize_multiplier, Requant};
use strix_runtime::graph::{Consts, DType, Graph, Node, Op, Quant, Storage, Tensor};
use strix_runtime::validate::MAX_QS8_REDUCTION;

#[derive(Default)]
pub struct Builder {
    pub g: Graph,
    pub c: Consts,
}

impl Builder {
    fn act(&mut self, name: &str, shape: &[usize], dtype: DType, quant: Option<Quant>) -> usize {
        self.g.tensors.push(Tensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            dtype,
            quant,
            storage: Storage::Arena { offset: 0 },
        });
        self.g.tensors.len() - 1
    }
    fn const_f32(&mut self, name: &str, shape: &[usize], v: &[f32]) -> usize {
        let offset = self.c.f32.len();
        self.c.f32.extend_from_slice(v);
        self.push_const(name, shape, DType::F32, offset)
    }
    fn const_i8(&mut self, name: &str, shape: &[usize], v: &[i8]) -> usize {
        let offset = self.c.i8.len();
        self.c.i8.extend_from_slice(v);
        self.push_const(name, shape, DType::I8, offset)
    }
    fn const_i32(&mut self, name: &str, shape: &[usize], v: &[i32]) -> usize {
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
    fn node(&mut self, name: &str, op: Op, inputs: Vec<usize>, output: usize) {
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
        b.node(&n.name, f32_op(&n.op, n.inputs.len()), ins, out);
    }
    b.g.outputs = cg.outputs.iter().map(|&o| map[o].unwrap()).collect();
    Ok((b, map))
}

fn f32_op(op: &COp, n_inputs: usize) -> Op {
    match op {
        COp::Conv { geom, act } => Op::Conv {
            geom: *geom,
            act_min: fin(act.min),
            act_max: fin(act.max),
        },
        COp::Gemm {
            m,
            n,
            k,
            batch,
            act,
        } => Op::Gemm {
            m: *m,
            n: *n,
            k: *k,
            batch: *batch,
            act_min: fin(act.min),
            act_max: fin(act.max),
        },
        COp::MaxPool { geom } => Op::MaxPool { geom: *geom },
        COp::AvgPool { geom } => Op::AvgPool { geom: *geom },
        COp::Binary(kind) => Op::Binary { kind: *kind },
        COp::Unary(kind) => Op::Unary {
            kind: match *kind {
                UnaryOp::Clip { min, max } => UnaryOp::Clip {
                    min: fin(min),
                    max: fin(max),
                },
                k => k,
            },
        },
        COp::Softmax { outer, axis, inner } => Op::Softmax {
            outer: *outer,
            axis: *axis,
            inner: *inner,
        },
        COp::ReduceMean { outer, axis, inner } => Op::ReduceMean {
            outer: *outer,
            axis: *axis,
            inner: *inner,
        },
        COp::Concat { axis } => Op::Concat {
            axis: *axis,
            requant: vec![None; n_inputs],
        },
        COp::Transpose { perm } => Op::Transpose { perm: perm.clone() },
        COp::Reshape => Op::Reshape,
        COp::Slice { starts, steps } => Op::Slice {
            starts: starts.clone(),
            steps: steps.clone(),
        },
        COp::Gather { axis, indices } => Op::Gather {
            axis: *axis,
            indices: indices.clone(),
        },
        COp::Pad { before, value } => Op::Pad {
            before: before.clone(),
            value: *value,
        },
        COp::Resize { geom } => Op::Resize { geom: *geom },
        COp::Lstm { geom } => Op::Lstm { geom: *geom },
    }
}

/// Infinite bounds become the largest finite ones: same effect, and the graph
/// section (JSON) has no representation for infinity.
fn fin(x: f32) -> f32 {
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

fn q_code(x: f32, q: Quant) -> i8 {
    k::quantize_one(x, 1.0 / q.scale, q.zero_point)
}

fn act_bounds(act: Act, q: Quant) -> (i8, i8) {
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

fn requant_table(in_scale: f32, w_scales: &[f32], out_scale: f32) -> Vec<i32> {
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
fn weight_consts(
    b: &mut Builder,
    cg: &CGraph,
    n: &crate::ir::CNode,
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
fn quantized_weights(
    cg: &CGraph,
    n: &crate::ir::CNode,
    rows: usize,
    kn: Option<(usize, usize)>,
    in_scale: f32,
) -> (Vec<i8>, Vec<i32>, Vec<f32>) {
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

/// Options of [`lower_int8_with`].
#[derive(Clone, Copy, Debug)]
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
}

impl Default for Int8Options {
    fn default() -> Self {
        Int8Options {
            sparse: true,
            f16_weights: false,
        }
    }
}

/// The block-sparse form of a conv's quantized weights when the sparse
/// kernels run it faster (ungrouped, at least [`SPARSE_MIN_ZERO_BLOCKS`] zero
/// blocks) and can run it (the folded bias is in range; the dense op would
/// otherwise fall back to the reference conv).
fn sparse_weights(
    geom: &k::ConvGeometry,
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

/// Why a node runs in f32 (shown by `inspect` through the op names).
fn wants_int8(cg: &CGraph, n: &crate::ir::CNode, prec: &[Option<DType>]) -> bool {
    let is_i8 = |v: usize| prec[v] == Some(DType::I8);
    let scalar_const = |v: usize| cg.values[v].konst.as_ref().is_some_and(|t| t.len() == 1);
    match &n.op {
        COp::Conv { geom, .. } => geom.k() <= MAX_QS8_REDUCTION,
        COp::Gemm { k, batch, .. } => {
            n.inputs.len() == 3
                && cg.is_const(n.inputs[1])
                && *k <= MAX_QS8_REDUCTION
                && *batch == 1
        }
        COp::MaxPool { .. }
        | COp::AvgPool { .. }
        | COp::Transpose { .. }
        | COp::Reshape
        | COp::Slice { .. }
        | COp::Gather { .. }
        | COp::Pad { .. }
        | COp::Resize { .. }
        | COp::Unary(_) => is_i8(n.inputs[0]),
        COp::Binary(op) => {
            let (a, b) = (n.inputs[0], n.inputs[1]);
            (is_i8(a) && scalar_const(b))
                || (is_i8(b) && scalar_const(a) && *op != BinaryOp::Prelu)
                || (matches!(op, BinaryOp::Add | BinaryOp::Mul) && is_i8(a) && is_i8(b))
        }
        COp::Concat { .. } => n.inputs.iter().all(|&v| is_i8(v)),
        COp::Softmax { .. } | COp::ReduceMean { .. } | COp::Lstm { .. } => false,
    }
}

/// Ops that only move or map values elementwise: a chain of them from an int8
/// conv to f32 consumers is better run in f32 after an f32-output conv.
fn transparent(cg: &CGraph, n: &crate::ir::CNode) -> bool {
    let scalar_const = |v: usize| cg.values[v].konst.as_ref().is_some_and(|t| t.len() == 1);
    match &n.op {
        COp::Reshape
        | COp::Transpose { .. }
        | COp::Slice { .. }
        | COp::Gather { .. }
        | COp::Concat { .. }
        | COp::Pad { .. }
        | COp::Resize { .. }
        | COp::MaxPool { .. }
        | COp::Unary(_) => true,
        COp::Binary(_) => n.inputs.iter().any(|&v| scalar_const(v)),
        _ => false,
    }
}

/// Ops that run in f32 whatever their inputs are.
fn f32_only(cg: &CGraph, n: &crate::ir::CNode) -> bool {
    let scalar_const = |v: usize| cg.values[v].konst.as_ref().is_some_and(|t| t.len() == 1);
    match &n.op {
        COp::Softmax { .. } | COp::ReduceMean { .. } | COp::Lstm { .. } => true,
        COp::Gemm { .. } => !(n.inputs.len() == 3 && cg.is_const(n.inputs[1])),
        COp::Binary(op) => {
            !n.inputs.iter().any(|&v| scalar_const(v))
                && (!matches!(op, BinaryOp::Add | BinaryOp::Mul)
                    || n.inputs.iter().any(|&v| cg.is_const(v)))
        }
        _ => false,
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
            let int8 = !f32out.contains(&i) && !keep_f32.contains(&i) && wants_int8(cg, n, &prec);
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
                f32_only(cg, n)
                    || (transparent(cg, n)
                        && only_f32_sinks(cg, n.output, consumers, is_output, depth + 1))
            })
        }
        let mut changed = false;
        for (i, n) in cg.nodes.iter().enumerate() {
            if matches!(n.op, COp::Conv { .. } | COp::Gemm { .. })
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

/// Int8 lowering with f32 islands (default [`Int8Options`]).
pub fn lower_int8(
    cg: &CGraph,
    stats: &HashMap<usize, Stats>,
    method: crate::calib::Method,
) -> Result<Lowered> {
    lower_int8_with(cg, stats, method, Int8Options::default())
}

/// Int8 lowering with f32 islands.
pub fn lower_int8_with(
    cg: &CGraph,
    stats: &HashMap<usize, Stats>,
    method: crate::calib::Method,
    opts: Int8Options,
) -> Result<Lowered> {
    lower_int8_impl(cg, stats, method, opts, &HashSet::new(), &HashSet::new())
}

/// Int8 lowering where the nodes in `keep_f32` (indices into `cg.nodes`) are
/// additionally kept in f32 (mixed precision chosen by the pruner).
pub fn lower_int8_mixed(
    cg: &CGraph,
    stats: &HashMap<usize, Stats>,
    method: crate::calib::Method,
    keep_f32: &HashSet<usize>,
) -> Result<Lowered> {
    lower_int8_mixed_f16(cg, stats, method, keep_f32, &HashSet::new())
}

/// [`lower_int8_mixed`] where the nodes in `f16` (indices into `cg.nodes`,
/// a subset of `keep_f32`) also store their constant weights as f16 (see
/// [`store_weights_f16`]): they still compute in f32, from weights rounded to
/// half precision, so the file carries 2 bytes per weight instead of 4.
///
/// Errors: a node of `f16` not in `keep_f32`, not a conv, gemm or LSTM, or
/// without constant weights; weights beyond the f16 range (|w| > 65504).
pub fn lower_int8_mixed_f16(
    cg: &CGraph,
    stats: &HashMap<usize, Stats>,
    method: crate::calib::Method,
    keep_f32: &HashSet<usize>,
    f16: &HashSet<usize>,
) -> Result<Lowered> {
    for &ni in f16 {
        let Some(n) = cg.nodes.get(ni) else {
            bail!("f16 node {ni} does not exist ({} nodes)", cg.nodes.len());
        };
        if !keep_f32.contains(&ni) {
            bail!(
                "node {ni} '{}' asks for f16 weights but is not kept f32 (f16 must be a subset of keep_f32)",
                n.name
            );
        }
        let weights = match n.op {
            COp::Conv { .. } | COp::Gemm { .. } => &n.inputs[1..2],
            COp::Lstm { .. } => &n.inputs[1..3],
            _ => &[],
        };
        if weights.is_empty() || !weights.iter().all(|&v| cg.is_const(v)) {
            bail!(
                "node {ni} '{}' ({}) has no constant weights to store as f16 \
                 (only convs, gemms and LSTMs with constant weights)",
                n.name,
                n.op.name()
            );
        }
    }
    lower_int8_impl(cg, stats, method, Int8Options::default(), keep_f32, f16)
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

fn lower_int8_impl(
    cg: &CGraph,
    stats: &HashMap<usize, Stats>,
    method: crate::calib::Method,
    opts: Int8Options,
    keep_f32: &HashSet<usize>,
    f16: &HashSet<usize>,
) -> Result<Lowered> {
    let mut b = Builder::default();
    let nv = cg.values.len();
    let mut prec: Vec<Option<DType>> = vec![None; nv];
    let mut quant: Vec<Option<Quant>> = vec![None; nv];
    let mut f32_t: Vec<Option<usize>> = vec![None; nv];
    let mut i8_t: Vec<Option<usize>> = vec![None; nv];
    let q_of = |v: usize| -> Result<Quant> {
        let s = stats.get(&v).ok_or_else(|| {
            anyhow::anyhow!("no calibration statistics for '{}'", cg.values[v].name)
        })?;
        let (lo, hi) = s.range(method);
        Ok(choose_quant(lo, hi))
    };
    for &i in &cg.inputs {
        let v = &cg.values[i];
        f32_t[i] = Some(b.act(&v.name, &v.shape, DType::F32, None));
        prec[i] = Some(DType::F32);
    }
    b.g.inputs = cg.inputs.iter().map(|&i| f32_t[i].unwrap()).collect();

    // Materialise value `v` as f32 or int8, inserting conversions as needed.
    fn get_f32(
        b: &mut Builder,
        cg: &CGraph,
        v: usize,
        f32_t: &mut [Option<usize>],
        i8_t: &[Option<usize>],
        quant: &[Option<Quant>],
    ) -> usize {
        if let Some(t) = f32_t[v] {
            return t;
        }
        let val = &cg.values[v];
        let t = if let Some(k) = &val.konst {
            b.const_f32(&val.name, &k.shape, &k.as_f32())
        } else {
            let src = i8_t[v].expect("produced");
            let t = b.act(&format!("{}#f32", val.name), &val.shape, DType::F32, None);
            b.node(
                &format!("{}#dequantize", val.name),
                Op::Dequantize,
                vec![src],
                t,
            );
            let _ = quant;
            t
        };
        f32_t[v] = Some(t);
        t
    }
    let (planned, f32out) = plan_precision(cg, keep_f32);
    // Runtime nodes whose weights are stored as f16 (from `f16`).
    let mut f16_nodes = vec![];
    for (ni, n) in cg.nodes.iter().enumerate() {
        let int8 = planned[n.output] == Some(DType::I8) || f32out.contains(&ni);
        let to_f32 = f32out.contains(&ni);
        let ov = &cg.values[n.output];
        if !int8 {
            let ins: Vec<usize> = n
                .inputs
                .iter()
                .map(|&v| get_f32(&mut b, cg, v, &mut f32_t, &i8_t, &quant))
                .collect();
            let out = b.act(&ov.name, &ov.shape, DType::F32, None);
            if f16.contains(&ni) {
                f16_nodes.push(b.g.nodes.len());
            }
            b.node(&n.name, f32_op(&n.op, n.inputs.len()), ins, out);
            f32_t[n.output] = Some(out);
            prec[n.output] = Some(DType::F32);
            continue;
        }
        // Int8 input of activation v (quantizing an f32 one on first use).
        let mut get_i8 =
            |b: &mut Builder, v: usize, f32_t: &mut Vec<Option<usize>>| -> Result<(usize, Quant)> {
                if let Some(t) = i8_t[v] {
                    return Ok((t, quant[v].unwrap()));
                }
                let q = q_of(v)?;
                let src = get_f32(b, cg, v, f32_t, &i8_t, &quant);
                let t = b.act(
                    &format!("{}#q", cg.values[v].name),
                    &cg.values[v].shape,
                    DType::I8,
                    Some(q),
                );
                b.node(
                    &format!("{}#quantize", cg.values[v].name),
                    Op::Quantize,
                    vec![src],
                    t,
                );
                i8_t[v] = Some(t);
                quant[v] = Some(q);
                Ok((t, q))
            };
        let x0 = n.inputs[0];
        let (op, ins, oq): (Op, Vec<usize>, Quant) = match &n.op {
            COp::Conv { geom, act } if to_f32 => {
                let (x, xq) = get_i8(&mut b, x0, &mut f32_t)?;
                let (wt, bt, ws) = weight_consts(&mut b, cg, n, geom.out_c, None, xq.scale);
                let sc: Vec<f32> = ws.iter().map(|&s| s * xq.scale).collect();
                let st = b.const_f32(&format!("{}#scale", ov.name), &[geom.out_c], &sc);
                let op = Op::QConvF32 {
                    geom: *geom,
                    in_zp: xq.zero_point,
                    act_min: fin(act.min),
                    act_max: fin(act.max),
                };
                let out = b.act(&ov.name, &ov.shape, DType::F32, None);
                b.node(&n.name, op, vec![x, wt, bt, st], out);
                f32_t[n.output] = Some(out);
                prec[n.output] = Some(DType::F32);
                continue;
            }
            COp::Gemm {
                m,
                n: nn,
                k: kk,
                act,
                ..
            } if to_f32 => {
                let (x, xq) = get_i8(&mut b, x0, &mut f32_t)?;
                let (wt, bt, ws) = weight_consts(&mut b, cg, n, *nn, Some((*kk, *nn)), xq.scale);
                let sc: Vec<f32> = ws.iter().map(|&s| s * xq.scale).collect();
                let st = b.const_f32(&format!("{}#scale", ov.name), &[*nn], &sc);
                let op = Op::QGemmF32 {
                    m: *m,
                    n: *nn,
                    k: *kk,
                    in_zp: xq.zero_point,
                    act_min: fin(act.min),
                    act_max: fin(act.max),
                };
                let out = b.act(&ov.name, &ov.shape, DType::F32, None);
                b.node(&n.name, op, vec![x, wt, bt, st], out);
                f32_t[n.output] = Some(out);
                prec[n.output] = Some(DType::F32);
                continue;
            }
            COp::Conv { geom, act } => {
                let (x, xq) = get_i8(&mut b, x0, &mut f32_t)?;
                let oq = q_of(n.output)?;
                let (wq, bq, ws) = quantized_weights(cg, n, geom.out_c, None, xq.scale);
                let (act_min, act_max) = act_bounds(*act, oq);
                let q = QConvParams {
                    in_zp: xq.zero_point,
                    out_zp: oq.zero_point,
                    act_min,
                    act_max,
                };
                let sparse = if opts.sparse {
                    sparse_weights(geom, &q, &wq, &bq)
                } else {
                    None
                };
                let (wts, op) = match sparse {
                    Some(sp) => {
                        let vt =
                            b.const_i8(&format!("{}#w", ov.name), &[sp.values.len()], &sp.values);
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
                let mut ins = vec![x];
                ins.extend(wts);
                ins.extend([bt, rt]);
                (op, ins, oq)
            }
            COp::Gemm {
                m,
                n: nn,
                k: kk,
                act,
                ..
            } => {
                let (x, xq) = get_i8(&mut b, x0, &mut f32_t)?;
                let oq = q_of(n.output)?;
                let (wt, bt, ws) = weight_consts(&mut b, cg, n, *nn, Some((*kk, *nn)), xq.scale);
                let rt = b.const_i32(
                    &format!("{}#rq", ov.name),
                    &[*nn, 2],
                    &requant_table(xq.scale, &ws, oq.scale),
                );
                let (act_min, act_max) = act_bounds(*act, oq);
                let q = QGemmParams {
                    in_zp: xq.zero_point,
                    out_zp: oq.zero_point,
                    act_min,
                    act_max,
                };
                (
                    Op::QGemm {
                        m: *m,
                        n: *nn,
                        k: *kk,
                        q,
                    },
                    vec![x, wt, bt, rt],
                    oq,
                )
            }
            COp::MaxPool { .. }
            | COp::AvgPool { .. }
            | COp::Transpose { .. }
            | COp::Reshape
            | COp::Slice { .. }
            | COp::Gather { .. }
            | COp::Resize { .. } => {
                let (x, xq) = get_i8(&mut b, x0, &mut f32_t)?;
                (f32_op(&n.op, n.inputs.len()), vec![x], xq)
            }
            COp::Pad { before, value } => {
                let (x, xq) = get_i8(&mut b, x0, &mut f32_t)?;
                (
                    Op::Pad {
                        before: before.clone(),
                        value: q_code(*value, xq) as f32,
                    },
                    vec![x],
                    xq,
                )
            }
            COp::Unary(u) => {
                let (x, xq) = get_i8(&mut b, x0, &mut f32_t)?;
                let oq = q_of(n.output)?;
                let table = k::build_lut(*u, xq.scale, xq.zero_point, oq.scale, oq.zero_point);
                let tt = b.const_i8(&format!("{}#lut", ov.name), &[256], &table);
                (Op::Lut, vec![x, tt], oq)
            }
            COp::Binary(op) => {
                let (a, c) = (n.inputs[0], n.inputs[1]);
                let oq = q_of(n.output)?;
                let scalar = |v: usize| cg.values[v].konst.as_ref().and_then(HostTensor::scalar);
                if let Some(cv) = scalar(c).or(scalar(a)) {
                    let const_first = scalar(a).is_some() && scalar(c).is_none();
                    let act_v = if const_first { c } else { a };
                    let (x, xq) = get_i8(&mut b, act_v, &mut f32_t)?;
                    let op = *op;
                    let mut table = [0i8; 256];
                    for (i, e) in table.iter_mut().enumerate() {
                        let xr = (i as i32 - 128 - xq.zero_point) as f32 * xq.scale;
                        let y = if const_first {
                            op.apply(cv, xr)
                        } else {
                            op.apply(xr, cv)
                        };
                        *e = q_code(y, oq);
                    }
                    let tt = b.const_i8(&format!("{}#lut", ov.name), &[256], &table);
                    (Op::Lut, vec![x, tt], oq)
                } else {
                    let (x, xq) = get_i8(&mut b, a, &mut f32_t)?;
                    let (y, yq) = get_i8(&mut b, c, &mut f32_t)?;
                    if *op == BinaryOp::Add {
                        let twice = 2.0 * xq.scale.max(yq.scale) as f64;
                        let p = QAddParams {
                            a_zp: xq.zero_point,
                            b_zp: yq.zero_point,
                            out_zp: oq.zero_point,
                            a_rq: quantize_multiplier(xq.scale as f64 / twice),
                            b_rq: quantize_multiplier(yq.scale as f64 / twice),
                            out_rq: quantize_multiplier(
                                twice / ((1u64 << k::QADD_LEFT_SHIFT) as f64 * oq.scale as f64),
                            ),
                            act_min: -128,
                            act_max: 127,
                        };
                        (Op::QAdd { p }, vec![x, y], oq)
                    } else {
                        let p = QMulParams {
                            a_zp: xq.zero_point,
                            b_zp: yq.zero_point,
                            out_zp: oq.zero_point,
                            rq: quantize_multiplier(
                                xq.scale as f64 * yq.scale as f64 / oq.scale as f64,
                            ),
                            act_min: -128,
                            act_max: 127,
                        };
                        (Op::QMul { p }, vec![x, y], oq)
                    }
                }
            }
            COp::Concat { axis } => {
                let oq = q_of(n.output)?;
                let mut ins = vec![];
                let mut rqs: Vec<Option<Requant>> = vec![];
                for &v in &n.inputs {
                    let (x, xq) = get_i8(&mut b, v, &mut f32_t)?;
                    ins.push(x);
                    rqs.push(if xq == oq {
                        None
                    } else {
                        Some(quantize_multiplier(xq.scale as f64 / oq.scale as f64))
                    });
                }
                (
                    Op::Concat {
                        axis: *axis,
                        requant: rqs,
                    },
                    ins,
                    oq,
                )
            }
            COp::Softmax { .. } | COp::ReduceMean { .. } | COp::Lstm { .. } => {
                bail!("internal: {} chosen for int8", n.op.name())
            }
        };
        let out = b.act(&ov.name, &ov.shape, DType::I8, Some(oq));
        b.node(&n.name, op, ins, out);
        i8_t[n.output] = Some(out);
        quant[n.output] = Some(oq);
        prec[n.output] = Some(DType::I8);
    }
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
    if f16_nodes.len() != f16.len() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::Method;
    use crate::ir::CNode;
    use strix_kernels::reference::ConvGeometry;
    use strix_runtime::Model;

    /// Deterministic values in `[-1, 1)` using every mantissa bit (so f16
    /// rounding is visible).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
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
        let m32 = model(lower_int8_mixed(&cg, &stats, Method::Minmax, &keep).unwrap());
        let m16 = model(lower_int8_mixed_f16(&cg, &stats, Method::Minmax, &keep, &keep).unwrap());

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
            match lower_int8_mixed_f16(&cg, &stats, Method::Minmax, &keep, &f16) {
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

    fn model_of(mut b: Builder) -> Model {
        strix_runtime::plan::plan(&mut b.g, true);
        Model::new(Default::default(), b.g, b.c).unwrap()
    }
}

//! Graph surgery for pruning on the compiler IR: finding groups of output
//! channels that can be removed together, removing them (every consumer is
//! rewritten so the graph genuinely shrinks) and zeroing weight blocks.
//!
//! A *group* is a set of producers (convs with `groups == 1`, gemms with
//! constant weights) whose output channels must be pruned with the same keep
//! list because a residual `Add`/`Mul` (or any elementwise op on two
//! activations) ties them channel by channel. Channels flow through
//! elementwise ops, pools, resize, channel-preserving pads, depthwise convs
//! (which prune their own channels and pass the pruning on), concats along
//! the channel axis (offsets are rewritten) and transposes/reshapes of a pure
//! channel vector (`[1, C, 1, 1] -> [1, C]`, the classifier-head flatten).
//!
//! Conservative by design: a producer is *not* prunable if any value carrying
//! its channels reaches a graph output, a reshape/transpose/slice/gather that
//! mixes the channel axis with others (e.g. a channel shuffle), a softmax or
//! reduction, a grouped (non-depthwise) conv, a concat along another axis,
//! a matmul with an activation operand, or an elementwise op whose other
//! operand cannot be rewritten.
//!
//! Each op's rule lives in its module ([`crate::ops`]): how channels flow
//! through it ([`crate::ops::IrOp::flow`], with the state in [`Flow`]) and
//! how it is rewritten when they shrink ([`crate::ops::IrOp::prune`], with
//! [`Prune`]); this file holds the machinery and the weight surgery.

use crate::ir::{CGraph, CNode, HostTensor};
use crate::ops::{const_layer, layer, Layer};
use std::collections::HashMap;

/// Block shape zeroed by block sparsity: `(output rows, reduction elements)`.
/// One output channel by four consecutive reduction elements (for a conv, the
/// flattened `in_c * kh * kw` axis; for a gemm, `k`): the block the sparse
/// kernels skip, so zeroed blocks become `QConvSparse` at lowering.
pub const SPARSE_BLOCK: (usize, usize) = (1, strix_kernels::reference::SPARSE_BLOCK);

/// Producers whose output channels are pruned together (tied by residuals).
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// Node indices of the conv/gemm producers, in graph order.
    pub producers: Vec<usize>,
    /// Output channels of each producer (equal for all members).
    pub channels: usize,
}

/// Which producer each channel of a value comes from: segments in channel
/// order along `axis`. `FIXED` marks channels that cannot be pruned (e.g.
/// the graph input concatenated with a conv output).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Chan {
    pub(crate) axis: usize,
    pub(crate) segs: Vec<(usize, usize)>,
}

/// The producer of channels that cannot be pruned (see [`Chan`]).
pub(crate) const FIXED: usize = usize::MAX;

struct Uf(Vec<usize>);
impl Uf {
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.0[a.max(b)] = a.min(b);
        }
    }
}

pub(crate) fn is_depthwise(g: &strix_kernels::reference::ConvGeometry) -> bool {
    g.groups > 1 && g.groups == g.in_c && g.groups == g.out_c
}

/// Axis of a vector-shaped tensor (all other dims 1), if unique.
pub(crate) fn vector_axis(shape: &[usize], c: usize) -> Option<usize> {
    let non1: Vec<usize> = (0..shape.len()).filter(|&i| shape[i] != 1).collect();
    match non1.as_slice() {
        [a] if shape[*a] == c => Some(*a),
        _ => None,
    }
}

/// The channel-flow state of [`find_groups`], handed to each op's rule
/// ([`crate::ops::IrOp::flow`]).
pub(crate) struct Flow<'a> {
    pub(crate) g: &'a CGraph,
    uf: Uf,
    poisoned: Vec<bool>,
    is_producer: Vec<bool>,
}

impl Flow<'_> {
    /// The producers of the channels `c` carries cannot be pruned.
    pub(crate) fn poison(&mut self, c: &Option<Chan>) {
        if let Some(c) = c {
            for &(s, _) in &c.segs {
                if s != FIXED {
                    self.poisoned[s] = true;
                }
            }
        }
    }
    /// [`Flow::poison`] for every input.
    pub(crate) fn poison_all(&mut self, cs: &[Option<Chan>]) {
        for c in cs {
            self.poison(c);
        }
    }
    /// Producers `a` and `b` are pruned with the same keep list.
    pub(crate) fn tie(&mut self, a: usize, b: usize) {
        self.uf.union(a, b);
    }
    /// Node `ni` produces prunable output channels.
    pub(crate) fn produces(&mut self, ni: usize) {
        self.is_producer[ni] = true;
    }
}

/// The flow rule of ops that keep NCHW channels on axis 1 (pools, resize):
/// channels on axis 1 pass, others stop.
pub(crate) fn flow_nchw(cx: &mut Flow, ins: &[Option<Chan>]) -> Option<Chan> {
    match ins.first().cloned().flatten() {
        Some(c) if c.axis == 1 => Some(c),
        c => {
            cx.poison(&c);
            None
        }
    }
}

/// The flow rule of transposes and reshapes: channels pass only when input
/// and output are pure channel vectors (`[1, C, 1, 1] -> [1, C]`).
pub(crate) fn flow_vector(cx: &mut Flow, n: &CNode, ins: &[Option<Chan>]) -> Option<Chan> {
    let g = cx.g;
    match ins.first().cloned().flatten() {
        Some(c) => {
            let total: usize = c.segs.iter().map(|s| s.1).sum();
            let ok_in = vector_axis(&g.values[n.inputs[0]].shape, total) == Some(c.axis);
            match vector_axis(&g.values[n.output].shape, total) {
                Some(a) if ok_in && total > 1 => Some(Chan {
                    axis: a,
                    segs: c.segs,
                }),
                _ => {
                    cx.poison(&Some(c));
                    None
                }
            }
        }
        None => None,
    }
}

/// Finds the prunable groups of `g` (see the module docs for the rules;
/// each op's is its [`crate::ops::IrOp::flow`]).
pub fn find_groups(g: &CGraph) -> Vec<Group> {
    let nn = g.nodes.len();
    let mut cx = Flow {
        g,
        uf: Uf((0..nn).collect()),
        poisoned: vec![false; nn],
        is_producer: vec![false; nn],
    };
    let mut chan: Vec<Option<Chan>> = vec![None; g.values.len()];
    for (ni, n) in g.nodes.iter().enumerate() {
        let ins: Vec<Option<Chan>> = n.inputs.iter().map(|&v| chan[v].clone()).collect();
        chan[n.output] = crate::ops::ir(&n.op).flow(&mut cx, ni, n, &ins);
    }
    for &o in &g.outputs {
        cx.poison(&chan[o]);
    }
    let Flow {
        mut uf,
        poisoned,
        is_producer,
        ..
    } = cx;
    // A class is prunable only if none of its members is poisoned.
    let mut bad: HashMap<usize, bool> = HashMap::new();
    for ni in 0..nn {
        if is_producer[ni] {
            let r = uf.find(ni);
            *bad.entry(r).or_default() |= poisoned[ni];
        }
    }
    let mut groups: Vec<Group> = vec![];
    let mut at: HashMap<usize, usize> = HashMap::new();
    let producers: Vec<usize> = (0..nn).filter(|&ni| is_producer[ni]).collect();
    for ni in producers {
        let r = uf.find(ni);
        if bad[&r] {
            continue;
        }
        let c = g.values[g.nodes[ni].output].shape[chan_axis_of_producer(g, ni)];
        if let Some(&gi) = at.get(&r) {
            groups[gi].producers.push(ni);
        } else {
            at.insert(r, groups.len());
            groups.push(Group {
                producers: vec![ni],
                channels: c,
            });
        }
    }
    // A single channel cannot be pruned without deleting the layer.
    groups.retain(|g| g.channels > 1);
    groups
}

/// The channel axis of producer `ni`'s output: its layer's (1 for a conv),
/// else the last.
pub(crate) fn chan_axis_of_producer(g: &CGraph, ni: usize) -> usize {
    let n = &g.nodes[ni];
    let rank = g.values[n.output].shape.len();
    layer(g, n).map_or(rank - 1, |l| l.chan_axis(rank))
}

/// `t` restricted to the indices `keep` along `axis`.
pub fn slice_axis(t: &HostTensor, axis: usize, keep: &[usize]) -> HostTensor {
    let outer: usize = t.shape[..axis].iter().product();
    let inner: usize = t.shape[axis + 1..].iter().product();
    let len = t.shape[axis];
    let mut shape = t.shape.clone();
    shape[axis] = keep.len();
    let src = t.as_f32();
    let mut v = Vec::with_capacity(outer * keep.len() * inner);
    for o in 0..outer {
        for &k in keep {
            let base = (o * len + k) * inner;
            v.extend_from_slice(&src[base..base + inner]);
        }
    }
    HostTensor::f32(shape, v)
}

/// Kept channels of a value: `(axis, kept indices, original length)`.
pub(crate) type Kept = Option<(usize, Vec<usize>, usize)>;

/// Replaces constant input `slot` of node `ni` with `t` (a new value, so a
/// constant shared with another node is never changed behind its back).
fn set_const(g: &mut CGraph, ni: usize, slot: usize, t: HostTensor) {
    let old = g.nodes[ni].inputs[slot];
    let name = format!("{}#pruned", g.values[old].name);
    let v = g.add_value(&name, t.shape.clone(), Some(t));
    g.nodes[ni].inputs[slot] = v;
}

fn konst(g: &CGraph, v: usize) -> &HostTensor {
    g.values[v]
        .konst
        .as_ref()
        .expect("checked constant by find_groups")
}

/// The state of [`apply`], handed to each op's rewrite
/// ([`crate::ops::IrOp::prune`]).
pub(crate) struct Prune<'a> {
    pub(crate) g: &'a mut CGraph,
    kept: Vec<Kept>,
    prod_keep: HashMap<usize, &'a Vec<usize>>,
    comp: Option<&'a Compensation>,
    consumers: HashMap<usize, Vec<usize>>,
}

impl<'a> Prune<'a> {
    /// The channels value `v` keeps (`None`: all, or it carries none).
    pub(crate) fn kept(&self, v: usize) -> Kept {
        self.kept[v].clone()
    }
    /// The output channels producer `ni` keeps, when its group shrinks.
    pub(crate) fn output_keep(&self, ni: usize) -> Option<&'a Vec<usize>> {
        self.prod_keep.get(&ni).copied()
    }
    /// Records that consumer `ni` (an ungrouped conv or a gemm) keeps the
    /// input channels `ks` (returned by [`apply`]).
    pub(crate) fn consumer(&mut self, ni: usize, ks: Vec<usize>) {
        self.consumers.insert(ni, ks);
    }
    /// New weights and bias of consumer `ni` whose input keeps `keep`,
    /// refitted on calibration statistics, if there are any (see
    /// [`Compensation`]).
    pub(crate) fn refit(
        &self,
        ni: usize,
        keep: &[usize],
        w: &HostTensor,
        bias: &[f32],
    ) -> Option<(HostTensor, Vec<f32>)> {
        self.comp.and_then(|c| c.refit(self.g, ni, keep, w, bias))
    }
    /// Replaces constant input `slot` of node `ni` with `t` (a new value).
    pub(crate) fn set_const(&mut self, ni: usize, slot: usize, t: HostTensor) {
        set_const(self.g, ni, slot, t);
    }
    /// The constant value `v`.
    pub(crate) fn konst(&self, v: usize) -> &HostTensor {
        konst(self.g, v)
    }
}

/// The rewrite of transposes and reshapes whose input is a pure channel
/// vector (see [`flow_vector`]): the output's channel axis keeps the same
/// channels.
pub(crate) fn prune_vector(cx: &mut Prune, n: &CNode, k0: Kept) -> Kept {
    let (_, ks, orig) = k0?;
    let a = vector_axis(&cx.g.values[n.output].shape, orig).expect("checked by find_groups");
    Some((a, ks, orig))
}

/// Removes channels: `keep[i]` lists the kept output channels (sorted,
/// non-empty) of every producer in `groups[i]`. Shapes, geometries, weights,
/// biases, concat layouts and broadcast constants are rewritten so the graph
/// is genuinely smaller and computes the same function on the kept channels
/// (each op's rewrite is its [`crate::ops::IrOp::prune`]).
///
/// With `comp`, consumers whose input channels shrink are refitted (see
/// [`Compensation`]); without it they are only sliced.
///
/// Returns, for every ungrouped conv and gemm whose input channels shrank,
/// the kept input channels in the unpruned graph's numbering (what a Gram
/// matrix of the unpruned input is indexed by).
pub fn apply(
    g: &mut CGraph,
    groups: &[Group],
    keep: &[Vec<usize>],
    comp: Option<&Compensation>,
) -> HashMap<usize, Vec<usize>> {
    let mut prod_keep: HashMap<usize, &Vec<usize>> = HashMap::new();
    for (gr, k) in groups.iter().zip(keep) {
        assert!(
            !k.is_empty() && k.len() <= gr.channels,
            "keep list must be non-empty"
        );
        if k.len() < gr.channels {
            for &p in &gr.producers {
                prod_keep.insert(p, k);
            }
        }
    }
    let kept = vec![None; g.values.len()];
    let mut cx = Prune {
        g,
        kept,
        prod_keep,
        comp,
        consumers: HashMap::new(),
    };
    for ni in 0..cx.g.nodes.len() {
        let n = cx.g.nodes[ni].clone();
        let o = n.output;
        let k0 = cx.kept[n.inputs[0]].clone();
        let out = crate::ops::ir(&n.op).prune(&mut cx, ni, &n, k0);
        if let Some((axis, ks, _)) = &out {
            cx.g.values[o].shape[*axis] = ks.len();
        }
        cx.kept[o] = out;
    }
    cx.consumers
}

/// Per-channel importance of a group by weight norm (`p` = 1 or 2): each
/// producer's norms are divided by their mean so tied layers count equally.
pub fn weight_importance(g: &CGraph, gr: &Group, p: u32) -> Vec<f64> {
    let mut imp = vec![0f64; gr.channels];
    for &ni in &gr.producers {
        let n = &g.nodes[ni];
        let w = konst(g, n.inputs[1]);
        let v = w.as_f32();
        let mut norms = vec![0f64; gr.channels];
        match layer(g, n) {
            Some(l) if !l.chan_last => {
                let per = v.len() / gr.channels;
                for (c, nm) in norms.iter_mut().enumerate() {
                    *nm = v[c * per..(c + 1) * per]
                        .iter()
                        .map(|&x| (x.abs() as f64).powi(p as i32))
                        .sum();
                }
            }
            _ => {
                // w[k, n]: channel c is column c.
                for (i, &x) in v.iter().enumerate() {
                    norms[i % gr.channels] += (x.abs() as f64).powi(p as i32);
                }
            }
        }
        add_normalized(&mut imp, &norms);
    }
    imp
}

/// Adds `v / mean(v)` to `acc` (so tied producers contribute equally).
pub fn add_normalized(acc: &mut [f64], v: &[f64]) {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    for (a, &x) in acc.iter_mut().zip(v) {
        *a += if mean > 0.0 { x / mean } else { 0.0 };
    }
}

/// The `keep` channels with the highest importance, sorted by index.
pub fn keep_top(imp: &[f64], keep: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..imp.len()).collect();
    idx.sort_by(|&a, &b| imp[b].total_cmp(&imp[a]).then(a.cmp(&b)));
    let mut k: Vec<usize> = idx[..keep.clamp(1, imp.len())].to_vec();
    k.sort_unstable();
    k
}

/// Zeroes, in every conv (`groups == 1`) and constant-weight gemm, the
/// fraction `ratio(node)` of [`SPARSE_BLOCK`] blocks. When `hess(node, bias)`
/// gives the Hessian of the node's current input (bias input last when
/// `bias`; see [`Compensation::hessian`]), blocks are chosen and the other
/// weights and the bias compensated by [`super::obs::sparse_blocks`];
/// otherwise the blocks with the smallest L1 norm are zeroed. Partial blocks
/// at the end of a reduction row are never zeroed. Returns the number of
/// blocks zeroed.
pub fn zero_blocks(
    g: &mut CGraph,
    ratio: impl Fn(usize) -> f32,
    hess: impl Fn(usize, bool) -> Option<Vec<f64>>,
) -> usize {
    let bk = SPARSE_BLOCK.1;
    let mut zeroed = 0;
    for ni in 0..g.nodes.len() {
        let r = ratio(ni).clamp(0.0, 1.0);
        if r <= 0.0 {
            continue;
        }
        let n = &g.nodes[ni];
        let Some(l) = const_layer(g, n).filter(|l| l.groups == 1) else {
            continue;
        };
        let (rows, red, taps) = (l.out, l.reduction(), l.taps);
        let mut w = konst(g, n.inputs[1]).as_f32();
        // Reduction index `i` = input channel and tap.
        let at = |row: usize, i: usize| l.at(row, i / taps, i % taps);
        let bias_v = n.inputs.get(2).copied().filter(|&b| g.is_const(b));
        // Second-order path: 1x1 convs and gemms (their input Gram is the
        // Hessian of every output row).
        let h = (taps == 1)
            .then(|| hess(ni, bias_v.is_some()))
            .flatten()
            .filter(|h| h.len() == (red + bias_v.is_some() as usize).pow(2));
        if let Some(h) = h {
            let cols = red + bias_v.is_some() as usize;
            let mut m = vec![0f64; rows * cols];
            let bias = bias_v.map(|b| konst(g, b).as_f32());
            for row in 0..rows {
                for i in 0..red {
                    m[row * cols + i] = w[at(row, i)] as f64;
                }
                if let Some(b) = &bias {
                    m[row * cols + red] = b[row] as f64;
                }
            }
            if let Some(nz) = super::obs::sparse_blocks(&mut m, rows, red, cols, &h, r) {
                for row in 0..rows {
                    for i in 0..red {
                        w[at(row, i)] = m[row * cols + i] as f32;
                    }
                }
                zeroed += nz;
                let shape = konst(g, g.nodes[ni].inputs[1]).shape.clone();
                set_const(g, ni, 1, HostTensor::f32(shape, w));
                if let (Some(bv), Some(_)) = (bias_v, bias) {
                    let nb: Vec<f32> = (0..rows).map(|row| m[row * cols + red] as f32).collect();
                    let shape = konst(g, bv).shape.clone();
                    set_const(g, ni, 2, HostTensor::f32(shape, nb));
                }
                continue;
            }
        }
        let mut blocks: Vec<(f32, usize, usize)> = vec![];
        for row in (0..rows).step_by(SPARSE_BLOCK.0) {
            for b in 0..red / bk {
                let mut s = 0f32;
                for rr in row..(row + SPARSE_BLOCK.0).min(rows) {
                    for i in b * bk..(b + 1) * bk {
                        s += w[at(rr, i)].abs();
                    }
                }
                blocks.push((s, row, b));
            }
        }
        let nz = (blocks.len() as f32 * r).floor() as usize;
        if nz == 0 {
            continue;
        }
        blocks.sort_by(|a, b| a.0.total_cmp(&b.0));
        for &(_, row, b) in &blocks[..nz] {
            for rr in row..(row + SPARSE_BLOCK.0).min(rows) {
                for i in b * bk..(b + 1) * bk {
                    w[at(rr, i)] = 0.0;
                }
            }
        }
        zeroed += nz;
        let shape = konst(g, n.inputs[1]).shape.clone();
        set_const(g, ni, 1, HostTensor::f32(shape, w));
    }
    zeroed
}

/// Weight elements of node `ni` (conv/gemm weights; 0 for other ops).
pub fn weight_elems(g: &CGraph, ni: usize) -> usize {
    let n = &g.nodes[ni];
    match const_layer(g, n) {
        Some(_) => g.values[n.inputs[1]].shape.iter().product(),
        None => 0,
    }
}

/// Fraction of the full [`SPARSE_BLOCK`] blocks of an ungrouped conv's
/// constant weights that are all zero, counting a partial block at the end of
/// a reduction row as non-zero (the lowering's count). 0 for other nodes.
pub fn zero_block_fraction(g: &CGraph, ni: usize) -> f64 {
    let n = &g.nodes[ni];
    // Only convs run sparse.
    let Some(l) = const_layer(g, n).filter(|l| l.groups == 1 && !l.chan_last) else {
        return 0.0;
    };
    let w = konst(g, n.inputs[1]).as_f32();
    let (rows, k, bk) = (l.out, l.reduction(), SPARSE_BLOCK.1);
    let per_row = k.div_ceil(bk);
    let mut zero = 0usize;
    for r in 0..rows {
        for b in 0..k / bk {
            if w[r * k + b * bk..r * k + (b + 1) * bk]
                .iter()
                .all(|&v| v == 0.0)
            {
                zero += 1;
            }
        }
    }
    zero as f64 / (rows * per_row).max(1) as f64
}

/// MACs a node costs after lowering: a conv whose zero-block fraction reaches
/// the lowering's sparse threshold runs the sparse kernel, which skips the
/// zero blocks.
pub fn node_effective_macs(g: &CGraph, ni: usize) -> u64 {
    let macs = node_macs(g, ni);
    let z = zero_block_fraction(g, ni);
    if z >= crate::lower::SPARSE_MIN_ZERO_BLOCKS {
        (macs as f64 * (1.0 - z)).round() as u64
    } else {
        macs
    }
}

/// [`node_effective_macs`] over the graph.
pub fn effective_macs(g: &CGraph) -> u64 {
    (0..g.nodes.len())
        .map(|ni| node_effective_macs(g, ni))
        .sum()
}

/// Estimated run cost in MAC-equivalents: [`effective_macs`] plus
/// `per_element` for every element a conv or gemm writes. Each output
/// element costs requantization, an im2row share and memory traffic whatever
/// its reduction length, so on small-channel, large-map layers (a detector's
/// or VWW's first layers) this, not the MACs, is most of the time.
pub fn effective_cost(g: &CGraph, per_element: u64) -> u64 {
    let elems: u64 = g
        .nodes
        .iter()
        .filter(|n| layer(g, n).is_some())
        .map(|n| g.values[n.output].shape.iter().product::<usize>() as u64)
        .sum();
    effective_macs(g) + per_element * elems
}

/// MACs of layer `ni` (as counted by [`CGraph::macs`]); 0 for a node that
/// is not a layer ([`crate::ops::IrOp::layer`]).
pub fn node_macs(g: &CGraph, ni: usize) -> u64 {
    let n = &g.nodes[ni];
    match layer(g, n) {
        Some(_) => crate::ops::ir(&n.op).macs(g, n),
        None => 0,
    }
}

/// Second moments of consumer inputs on calibration data, used to refit a
/// consumer after its input channels are pruned (least-squares
/// reconstruction, He et al. 2017): for kept channels K and removed R,
/// `W_K += W_R G_RK G_KK^-1` with the bias as the weight of a constant-1
/// input, so the consumer's output is the best linear reconstruction of the
/// unpruned one. 1x1 convs and gemms get the full refit; larger kernels get
/// the mean contribution of the removed channels folded into the bias.
/// A consumer node and the kept channels of its input.
type SolveKey = (usize, Vec<usize>);

#[derive(Default)]
pub struct Compensation {
    /// Node index -> row-major `(C+1) x (C+1)` Gram matrix of `[x, 1]`.
    pub gram: HashMap<usize, (usize, Vec<f64>)>,
    cache: std::sync::Mutex<HashMap<SolveKey, std::sync::Arc<Vec<f64>>>>,
}

impl Compensation {
    /// Accumulates, for every conv (`groups == 1`) and constant-weight gemm
    /// in `nodes`, the Gram matrix of its input from `read(value)` (the f32
    /// activation of a value on one sample); call once per sample.
    pub fn accumulate(&mut self, g: &CGraph, read: impl Fn(usize) -> Option<Vec<f32>>) {
        for (ni, n) in g.nodes.iter().enumerate() {
            let x = n.inputs[0];
            if g.inputs.contains(&x) {
                continue; // graph inputs are never pruned
            }
            let Some(l) = const_layer(g, n).filter(|l| l.groups == 1) else {
                continue;
            };
            let (c, chan_last) = (l.inp, l.chan_last);
            let Some(d) = read(x) else { continue };
            let e = self
                .gram
                .entry(ni)
                .or_insert_with(|| (c, vec![0f64; (c + 1) * (c + 1)]));
            let m = c + 1;
            let positions = d.len() / c;
            let inner = if chan_last {
                1
            } else {
                g.values[x].shape[2..].iter().product()
            };
            let mut v = vec![0f64; m];
            for p in 0..positions {
                let (outer, i) = (p / inner.max(1), p % inner.max(1));
                for (ch, vc) in v.iter_mut().enumerate().take(c) {
                    *vc = if chan_last {
                        d[p * c + ch] as f64
                    } else {
                        d[(outer * c + ch) * inner + i] as f64
                    };
                }
                v[c] = 1.0;
                for a in 0..m {
                    let va = v[a];
                    if va == 0.0 {
                        continue;
                    }
                    let row = &mut e.1[a * m..(a + 1) * m];
                    for (r, &vb) in row.iter_mut().zip(&v) {
                        *r += va * vb;
                    }
                }
            }
        }
    }

    /// `M` (row-major `|R| x (|K|+1)`) mapping removed-channel weights onto
    /// the kept channels and the bias, or None without statistics.
    fn solve(&self, ni: usize, keep: &[usize]) -> Option<std::sync::Arc<Vec<f64>>> {
        let key = (ni, keep.to_vec());
        if let Some(m) = self.cache.lock().ok()?.get(&key) {
            return Some(m.clone());
        }
        let (c, gm) = self.gram.get(&ni)?;
        let m = c + 1;
        let mut kk: Vec<usize> = keep.to_vec();
        kk.push(*c);
        let rem: Vec<usize> = (0..*c).filter(|x| !keep.contains(x)).collect();
        let n = kk.len();
        // A = G_KK + ridge, B = G_KR; solve A X = B (X = M^T).
        let mut a = vec![0f64; n * n];
        let mean_diag = (0..*c).map(|i| gm[i * m + i]).sum::<f64>() / (*c).max(1) as f64;
        for (i, &p) in kk.iter().enumerate() {
            for (j, &q) in kk.iter().enumerate() {
                a[i * n + j] = gm[p * m + q];
            }
            a[i * n + i] += 1e-3 * mean_diag.max(1e-12);
        }
        // Cholesky A = L L^T.
        let a = super::obs::cholesky(&a, n)?;
        let mut out = vec![0f64; rem.len() * n];
        for (ri, &r) in rem.iter().enumerate() {
            let mut y: Vec<f64> = kk.iter().map(|&p| gm[p * m + r]).collect();
            for i in 0..n {
                let mut s = y[i];
                for k in 0..i {
                    s -= a[i * n + k] * y[k];
                }
                y[i] = s / a[i * n + i];
            }
            for i in (0..n).rev() {
                let mut s = y[i];
                for k in i + 1..n {
                    s -= a[k * n + i] * y[k];
                }
                y[i] = s / a[i * n + i];
            }
            out[ri * n..(ri + 1) * n].copy_from_slice(&y);
        }
        let out = std::sync::Arc::new(out);
        self.cache.lock().ok()?.insert(key, out.clone());
        Some(out)
    }

    /// New `(weights, bias)` of consumer `ni` whose input keeps `keep`
    /// (original weights `w` in the node's layout, `bias` per output).
    fn refit(
        &self,
        g: &CGraph,
        ni: usize,
        keep: &[usize],
        w: &HostTensor,
        bias: &[f32],
    ) -> Option<(HostTensor, Vec<f32>)> {
        let (c, gm) = self.gram.get(&ni)?;
        let c = *c;
        let rem: Vec<usize> = (0..c).filter(|x| !keep.contains(x)).collect();
        let wv = w.as_f32();
        let mut bias: Vec<f64> = bias.iter().map(|&b| b as f64).collect();
        let l = layer(g, &g.nodes[ni])?;
        if l.taps == 1 {
            // 1x1 convs and gemms: the full least-squares refit.
            let mm = self.solve(ni, keep)?;
            let n = keep.len() + 1;
            let kept = Layer {
                inp: keep.len(),
                ..l
            };
            let mut nw = vec![0f32; l.out * keep.len()];
            for o in 0..l.out {
                for (j, &kc) in keep.iter().enumerate() {
                    let mut s = wv[l.at(o, kc, 0)] as f64;
                    for (ri, &r) in rem.iter().enumerate() {
                        s += wv[l.at(o, r, 0)] as f64 * mm[ri * n + j];
                    }
                    nw[kept.at(o, j, 0)] = s as f32;
                }
                for (ri, &r) in rem.iter().enumerate() {
                    bias[o] += wv[l.at(o, r, 0)] as f64 * mm[ri * n + n - 1];
                }
            }
            let shape = if l.chan_last {
                vec![keep.len(), l.out]
            } else {
                let mut shape = w.shape.clone();
                shape[1] = keep.len();
                shape
            };
            return Some((
                HostTensor::f32(shape, nw),
                bias.iter().map(|&b| b as f32).collect(),
            ));
        }
        // Larger kernels: the mean contribution of the removed channels
        // (padding ignored) moves into the bias.
        let m = c + 1;
        let cnt = gm[c * m + c].max(1.0);
        for (o, b) in bias.iter_mut().enumerate() {
            for &r in &rem {
                let mean = gm[c * m + r] / cnt;
                let at = l.at(o, r, 0);
                let s: f64 = wv[at..at + l.taps].iter().map(|&x| x as f64).sum();
                *b += s * mean;
            }
        }
        Some((
            slice_axis(w, 1, keep),
            bias.iter().map(|&b| b as f32).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Act, COp};
    use strix_kernels::reference::{BinaryOp, ConvGeometry};

    /// Deterministic pseudo-random weights.
    fn rnd(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Adds a conv (`k`x`k`, stride 1, same padding) on `x` ([1, in_c, hw, hw]).
    fn conv(g: &mut CGraph, x: usize, out_c: usize, k: usize, groups: usize, seed: u32) -> usize {
        let (in_c, hw) = (g.values[x].shape[1], g.values[x].shape[2]);
        let wl = out_c * in_c / groups * k * k;
        let w = g.add_value(
            &format!("w{seed}"),
            vec![out_c, in_c / groups, k, k],
            Some(HostTensor::f32(
                vec![out_c, in_c / groups, k, k],
                rnd(wl, seed),
            )),
        );
        let b = g.add_value(
            &format!("b{seed}"),
            vec![out_c],
            Some(HostTensor::f32(vec![out_c], rnd(out_c, seed + 100))),
        );
        let o = g.add_value(&format!("y{seed}"), vec![1, out_c, hw, hw], None);
        let geom = ConvGeometry {
            in_c,
            in_h: hw,
            in_w: hw,
            out_c,
            out_h: hw,
            out_w: hw,
            kh: k,
            kw: k,
            stride_h: 1,
            stride_w: 1,
            dil_h: 1,
            dil_w: 1,
            pad_top: k / 2,
            pad_left: k / 2,
            groups,
        };
        g.nodes.push(crate::ir::CNode {
            name: format!("conv{seed}"),
            op: COp::Conv {
                geom,
                act: Act::NONE,
            },
            inputs: vec![x, w, b],
            output: o,
        });
        o
    }

    fn node(g: &mut CGraph, op: COp, inputs: Vec<usize>, shape: Vec<usize>) -> usize {
        let o = g.add_value(&format!("v{}", g.values.len()), shape, None);
        g.nodes.push(crate::ir::CNode {
            name: format!("n{}", g.nodes.len()),
            op,
            inputs,
            output: o,
        });
        o
    }

    fn input(g: &mut CGraph, c: usize, hw: usize) -> usize {
        let x = g.add_value("x", vec![1, c, hw, hw], None);
        g.inputs.push(x);
        x
    }

    fn run(g: &CGraph, x: &[f32]) -> Vec<f32> {
        let (mut b, _) = crate::lower::lower_f32(g).unwrap();
        strix_runtime::plan::plan(&mut b.g, true);
        let m = strix_runtime::Model::new(Default::default(), b.g, b.c).unwrap();
        crate::run_values(&m, x).unwrap().remove(0).0
    }

    /// Zeroes the output channels of producer `ni` not in `keep` (weights and
    /// bias), so pruning them must not change the graph's function.
    fn silence(g: &mut CGraph, ni: usize, keep: &[usize]) {
        for slot in [1, 2] {
            let v = g.nodes[ni].inputs[slot];
            let t = g.values[v].konst.clone().unwrap();
            let per = t.len() / t.shape[0];
            let mut d = t.as_f32();
            for c in 0..t.shape[0] {
                if !keep.contains(&c) {
                    d[c * per..(c + 1) * per].fill(0.0);
                }
            }
            g.values[v].konst = Some(HostTensor::f32(t.shape.clone(), d));
        }
    }

    /// x -> A -> a; a -> B -> b; s = a + b; s -> C -> output.
    fn residual() -> (CGraph, [usize; 3]) {
        let mut g = CGraph::default();
        let x = input(&mut g, 3, 5);
        let a = conv(&mut g, x, 8, 3, 1, 1);
        let b = conv(&mut g, a, 8, 1, 1, 2);
        let s = node(
            &mut g,
            COp::Binary(BinaryOp::Add),
            vec![a, b],
            vec![1, 8, 5, 5],
        );
        let c = conv(&mut g, s, 4, 1, 1, 3);
        g.outputs.push(c);
        (g, [a, b, s])
    }

    #[test]
    fn residual_add_ties_both_operands_into_one_group() {
        let (mut g, [a, b, s]) = residual();
        let groups = find_groups(&g);
        // A and B are tied by the Add; C feeds the graph output.
        assert_eq!(
            groups,
            vec![Group {
                producers: vec![0, 1],
                channels: 8
            }]
        );
        let keep = vec![0, 2, 5];
        silence(&mut g, 0, &keep);
        silence(&mut g, 1, &keep);
        let x = rnd(75, 9);
        let want = run(&g, &x);
        let macs = g.macs();
        apply(&mut g, &groups, std::slice::from_ref(&keep), None);
        for v in [a, b, s] {
            assert_eq!(g.values[v].shape, vec![1, 3, 5, 5]);
        }
        assert_eq!(g.values[g.nodes[3].inputs[1]].shape, vec![4, 3, 1, 1]);
        assert!(g.macs() < macs);
        let got = run(&g, &x);
        for (p, q) in want.iter().zip(&got) {
            assert!((p - q).abs() < 1e-4, "{p} vs {q}");
        }
    }

    #[test]
    fn concat_offsets_are_rewritten_and_depthwise_passes_through() {
        let mut g = CGraph::default();
        let x = input(&mut g, 3, 4);
        let a = conv(&mut g, x, 4, 1, 1, 1);
        let b = conv(&mut g, x, 6, 3, 1, 2);
        let cat = node(
            &mut g,
            COp::Concat { axis: 1 },
            vec![a, b],
            vec![1, 10, 4, 4],
        );
        let dw = conv(&mut g, cat, 10, 3, 10, 3);
        let out = conv(&mut g, dw, 2, 1, 1, 4);
        g.outputs.push(out);
        let groups = find_groups(&g);
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(groups[0].producers, vec![0]);
        assert_eq!(groups[1].producers, vec![1]);
        let (ka, kb) = (vec![1, 3], vec![0, 5]);
        silence(&mut g, 0, &ka);
        silence(&mut g, 1, &kb);
        // The depthwise bias of removed channels must not leak either.
        let dwb = g.nodes[3].inputs[2];
        let mut d = g.values[dwb].konst.as_ref().unwrap().as_f32();
        for (c, v) in d.iter_mut().enumerate() {
            if ![1, 3, 4, 9].contains(&c) {
                *v = 0.0;
            }
        }
        g.values[dwb].konst = Some(HostTensor::f32(vec![10], d));
        let xv = rnd(48, 5);
        let want = run(&g, &xv);
        apply(&mut g, &groups, &[ka, kb], None);
        assert_eq!(g.values[cat].shape, vec![1, 4, 4, 4]);
        assert_eq!(g.values[dw].shape, vec![1, 4, 4, 4]);
        let COp::Conv { geom, .. } = g.nodes[3].op else {
            panic!()
        };
        assert_eq!((geom.in_c, geom.out_c, geom.groups), (4, 4, 4));
        // The last conv keeps input channels 1, 3 (from A) and 4, 9 (B's 0, 5).
        let w = g.values[g.nodes[4].inputs[1]].konst.clone().unwrap();
        assert_eq!(w.shape, vec![2, 4, 1, 1]);
        let got = run(&g, &xv);
        for (p, q) in want.iter().zip(&got) {
            assert!((p - q).abs() < 1e-4, "{p} vs {q}");
        }
    }

    #[test]
    fn layout_changing_reshape_and_graph_outputs_are_not_pruned() {
        let mut g = CGraph::default();
        let x = input(&mut g, 3, 4);
        let a = conv(&mut g, x, 4, 1, 1, 1);
        // [1,4,4,4] -> [1,64]: the channel axis is mixed with space.
        let r = node(&mut g, COp::Reshape, vec![a], vec![1, 64]);
        g.outputs.push(r);
        assert!(find_groups(&g).is_empty());
        let mut g2 = CGraph::default();
        let x = input(&mut g2, 3, 4);
        let a = conv(&mut g2, x, 4, 1, 1, 1);
        g2.outputs.push(a);
        assert!(find_groups(&g2).is_empty());
    }

    /// x -> A (1x1, 6 channels) -> B (1x1, 2) -> output on 4x3x3 inputs, with
    /// A's channel 5 equal to `f` times its channel 0 (weights and bias).
    fn redundant_pair(f: f32) -> CGraph {
        let mut g = CGraph::default();
        let x = input(&mut g, 4, 3);
        let _a = conv(&mut g, x, 6, 1, 1, 1);
        let a = g.nodes[0].output;
        let out = conv(&mut g, a, 2, 1, 1, 2);
        g.outputs.push(out);
        let wv = g.nodes[0].inputs[1];
        let mut w = g.values[wv].konst.as_ref().unwrap().as_f32();
        for i in 0..4 {
            w[20 + i] = w[i] * f;
        }
        g.values[wv].konst = Some(HostTensor::f32(vec![6, 4, 1, 1], w));
        let bv = g.nodes[0].inputs[2];
        let mut b = g.values[bv].konst.as_ref().unwrap().as_f32();
        b[5] = b[0] * f;
        g.values[bv].konst = Some(HostTensor::f32(vec![6], b));
        g
    }

    /// The Gram statistics of `g`'s consumers on `samples`.
    fn gram_of(g: &CGraph, samples: &[Vec<f32>]) -> Compensation {
        let (m, map) = crate::prune::f32_probe_model(g).unwrap();
        let mut sess = strix_runtime::Session::new(&m);
        let mut comp = Compensation::default();
        for s in samples {
            sess.input_mut(0).unwrap().copy_from_slice(s);
            sess.run().unwrap();
            comp.accumulate(g, |v| match map[v].and_then(|t| sess.tensor(t)) {
                Some(strix_runtime::TensorData::F32(d)) => Some(d.to_vec()),
                _ => None,
            });
        }
        comp
    }

    #[test]
    fn refit_reconstructs_a_linear_consumer() {
        // x -> A (1x1) -> B (1x1) -> output: with a Gram matrix from data,
        // pruning A's channels and refitting B must beat plain slicing.
        // Channel 5 of A is nearly a copy of channel 0 (redundant).
        let g = redundant_pair(0.9);
        let samples: Vec<Vec<f32>> = (0..8).map(|s| rnd(36, 40 + s)).collect();
        let comp = gram_of(&g, &samples);
        let groups = find_groups(&g);
        assert_eq!(groups.len(), 1);
        let keep = vec![vec![0, 1, 2, 3, 4]];
        let err = |g2: &CGraph| -> f32 {
            samples
                .iter()
                .map(|s| {
                    let (p, q) = (run(&g, s), run(g2, s));
                    p.iter().zip(&q).map(|(a, b)| (a - b).powi(2)).sum::<f32>()
                })
                .sum()
        };
        let mut plain = g.clone();
        apply(&mut plain, &groups, &keep, None);
        let mut fitted = g.clone();
        apply(&mut fitted, &groups, &keep, Some(&comp));
        let (ep, ef) = (err(&plain), err(&fitted));
        assert!(ef < 0.05 * ep, "refit error {ef} vs plain {ep}");
    }

    #[test]
    fn obs_ranking_removes_a_redundant_channel_first() {
        // x -> A (1x1, 6 ch) -> B (1x1) -> output, with A's channel 5 exactly
        // twice channel 0: it has the largest L1 norm, but with B refitted it
        // carries no information. OBS must remove it (or channel 0) first and
        // lose almost nothing; L1 removes a unique channel instead.
        let g = redundant_pair(2.0);
        let samples: Vec<Vec<f32>> = (0..16).map(|s| rnd(36, 70 + s)).collect();
        let comp = gram_of(&g, &samples);
        let groups = find_groups(&g);
        let obs = super::super::obs::obs_importance(&g, &groups, 0, &comp).unwrap();
        let l1 = weight_importance(&g, &groups[0], 1);
        let err = |keep: Vec<usize>| -> f32 {
            let mut p = g.clone();
            apply(&mut p, &groups, &[keep], Some(&comp));
            samples
                .iter()
                .map(|s| {
                    let (a, b) = (run(&g, s), run(&p, s));
                    a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f32>()
                })
                .sum()
        };
        let ko = keep_top(&obs, 5);
        assert!(
            !ko.contains(&5) || !ko.contains(&0),
            "obs kept both copies: {obs:?}"
        );
        assert!(keep_top(&l1, 5).contains(&5) && keep_top(&l1, 5).contains(&0));
        let (eo, el) = (err(ko), err(keep_top(&l1, 5)));
        assert!(eo < 0.2 * el, "obs error {eo} vs l1 {el}");
    }

    #[test]
    fn zero_blocks_removes_the_smallest_reduction_blocks() {
        let mut g = CGraph::default();
        let x = input(&mut g, 8, 2);
        let a = conv(&mut g, x, 2, 1, 1, 1);
        g.outputs.push(a);
        // Row 0: blocks with L1 4 and 40; row 1: 0.4 and 400.
        let w = vec![
            1.0, 1.0, 1.0, 1.0, 10.0, 10.0, 10.0, 10.0, 0.1, 0.1, 0.1, 0.1, 100.0, 100.0, 100.0,
            100.0,
        ];
        let wv = g.nodes[0].inputs[1];
        g.values[wv].konst = Some(HostTensor::f32(vec![2, 8, 1, 1], w));
        assert_eq!(zero_blocks(&mut g, |_| 0.5, |_, _| None), 2);
        let got = g.values[g.nodes[0].inputs[1]]
            .konst
            .as_ref()
            .unwrap()
            .as_f32();
        assert_eq!(&got[..4], &[0.0; 4]);
        assert_eq!(&got[8..12], &[0.0; 4]);
        assert_eq!(got[4], 10.0);
        assert_eq!(got[12], 100.0);
        assert_eq!(SPARSE_BLOCK, (1, 4));
        // Half the blocks zero: above the sparse threshold, so the effective
        // MACs are half the dense ones; at a quarter they stay dense.
        assert_eq!(zero_block_fraction(&g, 0), 0.5);
        assert_eq!(node_effective_macs(&g, 0) * 2, node_macs(&g, 0));
        assert_eq!(effective_macs(&g) * 2, node_macs(&g, 0));
        let mut w = got.clone();
        w[0] = 1.0;
        let wv2 = g.nodes[0].inputs[1];
        g.values[wv2].konst = Some(HostTensor::f32(vec![2, 8, 1, 1], w));
        assert_eq!(zero_block_fraction(&g, 0), 0.25);
        assert_eq!(node_effective_macs(&g, 0), node_macs(&g, 0));
        assert_eq!(crate::prune::block_ratios(0.0), Vec::<f32>::new());
        assert_eq!(crate::prune::block_ratios(0.7), vec![0.4, 0.6, 0.7]);
        assert_eq!(crate::prune::block_ratios(0.8), vec![0.4, 0.6, 0.8]);
    }
}

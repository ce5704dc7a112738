//! A model's prepared state: the kernel path chosen once per model, and
//! what each op's prepare (`ops/<op>.rs`) computed from the constants
//! (folded biases) and the scratch sizes, all before `run`.

use crate::graph::{Consts, Graph, Storage};
use crate::ops;
use strix_kernels::driver::PackedConv;
use strix_kernels::table::{kernels_for, KernelSet, SCALAR};
use strix_kernels::Isa;

#[derive(Clone)]
pub struct Prepared {
    pub isa: Isa,
    pub ks: &'static KernelSet,
    /// Per node: the zero-point-folded bias of gemm-driven convs and gemms.
    pub folded: Vec<Option<Vec<i32>>>,
    /// Per node: weights packed for the path's packed gemm and the plan of
    /// its input panels, if it runs one. Where `repacked` names a range, the
    /// packed weights are there in the constant pool and `weights` is empty.
    pub packed: Vec<Option<PackedConv>>,
    /// Per node: the range of `Consts::i8` that holds this conv's weights in
    /// the packed layout instead of the stored one (lean preparation,
    /// [`Prepared::new`]); `None` elsewhere.
    pub repacked: Vec<Option<Repacked>>,
    /// Whether this preparation was lean (see [`Prepared::new`]).
    pub lean: bool,
    /// Staging bytes a session needs for packed convs (shared by threads).
    pub staged: usize,
    /// Scratch bytes a session needs per thread (im2row tiles).
    pub scratch: usize,
    /// Gemm output-tile elements a worker thread needs (`out_c * tile`).
    pub tile: usize,
    /// f32 scratch elements a session needs (im2col of small f32 convs).
    pub scratch_f32: usize,
    /// `Consts::f16` expanded to f32 once, so the f32 kernels read
    /// f16-stored weights like any f32 constant and `run` converts nothing.
    pub f16_as_f32: Vec<f32>,
}

impl Prepared {
    /// Prepares every node of validated graph `g` (each op's `prepare` in
    /// `ops/<op>.rs`) for kernel path `isa`; the scratch sizes are the
    /// largest any node needs.
    ///
    /// `lean`: a packed conv whose weight tensor nothing else reads, and
    /// whose packed layout is exactly as long as the stored one (`out_c` and
    /// `K` multiples of 4), gets its packed weights written over the stored
    /// ones in `c` and keeps no copy (`repacked`), so the model holds those
    /// weights once. `c` then differs from the file for those tensors:
    /// [`Prepared::restore`] turns it back.
    pub fn new(g: &Graph, c: &mut Consts, isa: Isa, lean: bool) -> Self {
        let ks = if isa == Isa::Scalar {
            &SCALAR
        } else {
            kernels_for(isa)
        };
        let readers = if lean { readers(g) } else { Vec::new() };
        let (mut scratch, mut tile, mut scratch_f32, mut staged) = (0, 0, 0, 0);
        let (mut folded, mut packed, mut repacked) = (Vec::new(), Vec::new(), Vec::new());
        for n in &g.nodes {
            let mut p = ops::prepare(&ops::Ctx { g, c, n }, ks);
            scratch = scratch.max(p.scratch);
            tile = tile.max(p.tile);
            scratch_f32 = scratch_f32.max(p.scratch_f32);
            staged = staged.max(p.packed.as_ref().map_or(0, |pc| pc.plan.staged_len));
            // One node at a time, so that no more than one conv's weights
            // exist twice at any moment (the load's peak memory).
            let in_pool = p.packed.as_mut().and_then(|pc| {
                let t = *n.inputs.get(1)?;
                let range = weight_range(g, t)?;
                let (m, k) = conv_mk(&n.op)?;
                let sole = readers.get(t) == Some(&1);
                (sole && pc.weights.len() == range.len()).then(|| {
                    c.i8[range.clone()].copy_from_slice(&pc.weights);
                    pc.weights = Vec::new();
                    Repacked { range, m, k }
                })
            });
            folded.push(p.folded);
            packed.push(p.packed);
            repacked.push(in_pool);
        }
        Prepared {
            isa,
            ks,
            folded,
            packed,
            repacked,
            lean,
            staged,
            scratch,
            tile,
            scratch_f32,
            f16_as_f32: c.f16.iter().map(|v| v.to_f32()).collect(),
        }
    }

    /// Bytes held beside the constants (see [`crate::Model::prepared_bytes`]).
    pub fn bytes(&self) -> usize {
        let packed: usize = self.packed.iter().flatten().map(PackedConv::bytes).sum();
        let folded: usize = self.folded.iter().flatten().map(|f| 4 * f.len()).sum();
        packed + folded + 4 * self.f16_as_f32.len()
    }

    /// The packed weights of node `i`'s conv: its own copy, or its range of
    /// `c` (the pool this preparation was made with).
    pub fn packed_weights<'a>(&'a self, i: usize, c: &'a Consts) -> Option<&'a [i8]> {
        let pc = self.packed.get(i)?.as_ref()?;
        match self.repacked.get(i)? {
            Some(r) => c.i8.get(r.range.clone()),
            None => Some(&pc.weights),
        }
    }

    /// Whether tensor `t` of `g` holds packed, not stored, weights.
    pub fn is_repacked(&self, g: &Graph, t: usize) -> bool {
        let Some(r) = weight_range(g, t) else {
            return false;
        };
        self.repacked.iter().flatten().any(|p| p.range == r)
    }

    /// Writes the stored layout back over every repacked range of `c` (the
    /// pool this preparation was made with): `c` is then the file's again.
    pub fn restore(&self, c: &mut Consts) {
        for r in self.repacked.iter().flatten() {
            let packed = c.i8[r.range.clone()].to_vec();
            strix_kernels::reference::unpack_a_4c4(r.m, r.k, &packed, &mut c.i8[r.range.clone()]);
        }
    }
}

/// A conv's weights held packed in the constant pool: `m` rows of `k`
/// stored, [`strix_kernels::reference::pack_a_4c4`]'s layout now.
#[derive(Clone, Debug)]
pub struct Repacked {
    pub range: std::ops::Range<usize>,
    pub m: usize,
    pub k: usize,
}

/// Rows and row length of the weights of a conv that may run packed.
fn conv_mk(op: &crate::graph::Op) -> Option<(usize, usize)> {
    use crate::graph::Op;
    match op {
        Op::QConv { geom, .. } | Op::QConvF32 { geom, .. } => Some((geom.out_c, geom.k())),
        _ => None,
    }
}

/// The element range of int8 constant tensor `t` in `Consts::i8`.
fn weight_range(g: &Graph, t: usize) -> Option<std::ops::Range<usize>> {
    let t = g.tensors.get(t)?;
    match (t.storage, t.dtype) {
        (Storage::Const { offset }, crate::graph::DType::I8) => {
            Some(offset..offset.checked_add(t.len())?)
        }
        _ => None,
    }
}

/// Per tensor: how many node inputs read it, plus one if it is a graph
/// output.
fn readers(g: &Graph) -> Vec<usize> {
    let mut r = vec![0usize; g.tensors.len()];
    for &t in g
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter())
        .chain(&g.outputs)
    {
        if let Some(v) = r.get_mut(t) {
            *v += 1;
        }
    }
    r
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("isa", &self.isa)
            .field("scratch", &self.scratch)
            .field("scratch_f32", &self.scratch_f32)
            .finish_non_exhaustive()
    }
}

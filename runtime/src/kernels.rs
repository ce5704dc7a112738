//! A model's prepared state: the kernel path chosen once per model, and
//! what each op's prepare (`ops/<op>.rs`) computed from the constants
//! (folded biases) and the scratch sizes, all before `run`.

use crate::graph::{Consts, Graph};
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
    /// its input panels, if it runs one.
    pub packed: Vec<Option<PackedConv>>,
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
    pub fn new(g: &Graph, c: &Consts, isa: Isa) -> Self {
        let ks = if isa == Isa::Scalar {
            &SCALAR
        } else {
            kernels_for(isa)
        };
        let (mut scratch, mut tile, mut scratch_f32, mut staged) = (0, 0, 0, 0);
        let (folded, packed) = g
            .nodes
            .iter()
            .map(|n| {
                let p = ops::prepare(&ops::Ctx { g, c, n }, ks);
                scratch = scratch.max(p.scratch);
                tile = tile.max(p.tile);
                scratch_f32 = scratch_f32.max(p.scratch_f32);
                staged = staged.max(p.packed.as_ref().map_or(0, |pc| pc.plan.staged_len));
                (p.folded, p.packed)
            })
            .unzip();
        Prepared {
            isa,
            ks,
            folded,
            packed,
            staged,
            scratch,
            tile,
            scratch_f32,
            f16_as_f32: c.f16.iter().map(|v| v.to_f32()).collect(),
        }
    }
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

//! Kernel selection and preparation for the heavy int8 ops: the path is
//! chosen once per model (CPU features or `STRIX_ISA`), biases are folded for
//! the gemm drivers, and the scratch size is computed, all before `run`.

use crate::graph::{Consts, Graph, Op, Storage};
use strix_kernels::driver::{
    conv_scratch_len, fold_bias, fold_bias_sparse, sparse_conv_scratch_len, uses_gemm, CONV_TILE,
};
use strix_kernels::reference::{f32_im2col_len, ConvGeometry, SparseWeights};
use strix_kernels::table::{kernels_for, KernelSet, SCALAR};
use strix_kernels::Isa;

#[derive(Clone)]
pub struct Prepared {
    pub isa: Isa,
    pub ks: &'static KernelSet,
    /// Per node: the zero-point-folded bias of gemm-driven convs and gemms.
    pub folded: Vec<Option<Vec<i32>>>,
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
    pub fn new(g: &Graph, c: &Consts, isa: Isa) -> Self {
        let ks = if isa == Isa::Scalar {
            &SCALAR
        } else {
            kernels_for(isa)
        };
        let mut scratch = 0;
        let mut tile = 0;
        let scratch_f32 = g
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Conv { geom, .. } => f32_im2col_len(geom),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let konst = |id: usize| match g.tensors[id].storage {
            Storage::Const { offset } => offset,
            // Only read for int8/int32 inputs, which validation keeps out of
            // the arena and the f16 pool.
            Storage::Arena { .. } | Storage::ConstF16 { .. } => 0,
        };
        let folded = g
            .nodes
            .iter()
            .map(|n| {
                let (k, zp) = match &n.op {
                    Op::QConvSparse { geom, q } => {
                        scratch = scratch.max(sparse_conv_scratch_len(geom));
                        // Threads split sparse convs into the same tiles.
                        tile = tile.max(conv_tile_len(geom));
                        let span = |i: usize| {
                            let t = &g.tensors[n.inputs[i]];
                            konst(n.inputs[i])..konst(n.inputs[i]) + t.len()
                        };
                        // Validated at load; `None` here only for an
                        // unvalidated graph, which `exec` then reports.
                        let sw = SparseWeights::new(
                            geom.out_c,
                            geom.k(),
                            c.i32.get(span(3))?,
                            c.i32.get(span(2))?,
                            c.i8.get(span(1))?,
                        )
                        .ok()?;
                        return fold_bias_sparse(&sw, c.i32.get(span(4))?, q.in_zp);
                    }
                    Op::QConv { geom, q } if uses_gemm(geom) => {
                        scratch = scratch.max(conv_scratch_len(geom));
                        tile = tile.max(conv_tile_len(geom));
                        (geom.k(), q.in_zp)
                    }
                    Op::QConvF32 { geom, in_zp, .. } if uses_gemm(geom) => {
                        scratch = scratch.max(conv_scratch_len(geom));
                        tile = tile.max(conv_tile_len(geom));
                        (geom.k(), *in_zp)
                    }
                    Op::QGemm { k, q, .. } => (*k, q.in_zp),
                    Op::QGemmF32 { k, in_zp, .. } => (*k, *in_zp),
                    _ => return None,
                };
                let (w, b) = (&g.tensors[n.inputs[1]], &g.tensors[n.inputs[2]]);
                let (wo, bo) = (konst(n.inputs[1]), konst(n.inputs[2]));
                fold_bias(&c.i8[wo..wo + w.len()], &c.i32[bo..bo + b.len()], k, zp)
            })
            .collect();
        Prepared {
            isa,
            ks,
            folded,
            scratch,
            tile,
            scratch_f32,
            f16_as_f32: c.f16.iter().map(|v| v.to_f32()).collect(),
        }
    }
}

/// Output values of one pixel tile of `g` (all channels).
fn conv_tile_len(g: &ConvGeometry) -> usize {
    g.out_c * CONV_TILE.min(g.out_h * g.out_w)
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

//! The executor: runs a validated graph over a preallocated arena.
//!
//! `Session::new` allocates the arenas once (prepare); `Session::run` executes
//! every node without allocating or locking (eval).

use crate::error::{try_vec, Error, Result};
use crate::graph::{Consts, DType, Graph, Node, Op, Storage, Tensor};
use crate::model::Model;
use crate::par::{self, Workers};
use strix_kernels::driver as drv;
use strix_kernels::reference as k;
use strix_kernels::shape::Dims;
use strix_kernels::Requant;

/// A borrowed view of a tensor's data.
#[derive(Clone, Copy, Debug)]
pub enum TensorData<'a> {
    F32(&'a [f32]),
    I8(&'a [i8]),
    I32(&'a [i32]),
}

/// One inference context: the arenas of one model. Many sessions may share a
/// model; a session is used by one thread at a time.
pub struct Session<'m> {
    model: &'m Model,
    a8: Vec<i8>,
    a32: Vec<f32>,
    workers: Workers,
}

impl<'m> Session<'m> {
    /// A single-threaded session. Allocates the arenas (the only allocation
    /// of a session's life): exactly what the validated graph's tensors
    /// need, at most `validate::MAX_ARENA_BYTES`.
    ///
    /// Panics (a catchable panic, not an abort) if the system cannot
    /// allocate the arenas; [`Session::with_threads`] returns that as an
    /// error instead.
    pub fn new(model: &'m Model) -> Self {
        Self::with_threads(model, 1).unwrap_or_else(|e| panic!("Session::new: {e}"))
    }

    /// A session whose heavy ops (convolutions, depthwise convolutions, fully
    /// connected layers) run on `threads` threads: the caller plus
    /// `threads - 1` workers started here and stopped when the session drops.
    /// Outputs are bit-identical for every thread count. Fails if the OS
    /// refuses to start a thread or to allocate the arenas and scratch
    /// (reserved fallibly: a refusal is an error, not an abort).
    pub fn with_threads(model: &'m Model, threads: usize) -> Result<Self> {
        let g = &model.graph;
        let workers = Workers::new(&model.prepared, threads)?;
        Ok(Session {
            model,
            a8: try_vec(g.arena_i8, 0, "the int8 arena")?,
            a32: try_vec(g.arena_f32, 0.0, "the f32 arena")?,
            workers,
        })
    }

    /// Threads this session runs on.
    pub fn threads(&self) -> usize {
        self.workers.threads()
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// The f32 buffer of graph input `i`, to be filled before **every**
    /// `run`: the memory plan may reuse an input's buffer for later tensors,
    /// so after a run it no longer holds the input.
    pub fn input_mut(&mut self, i: usize) -> Result<&mut [f32]> {
        let g = &self.model.graph;
        let t = g.inputs.get(i).map(|&id| &g.tensors[id]).ok_or_else(|| {
            Error::Argument(format!(
                "input index {i} out of range ({} inputs)",
                g.inputs.len()
            ))
        })?;
        let Storage::Arena { offset } = t.storage else {
            unreachable_validated()
        };
        Ok(&mut self.a32[offset..offset + t.len()])
    }

    /// Data of any tensor (activations are meaningful after `run`).
    pub fn tensor(&self, id: usize) -> Option<TensorData<'_>> {
        let t = self.model.graph.tensors.get(id)?;
        let c = &self.model.consts;
        let len = t.len();
        Some(match (t.storage, t.dtype) {
            (Storage::Arena { offset }, DType::F32) => {
                TensorData::F32(&self.a32[offset..offset + len])
            }
            (Storage::Arena { offset }, DType::I8) => {
                TensorData::I8(&self.a8[offset..offset + len])
            }
            (Storage::Const { offset }, DType::F32) => {
                TensorData::F32(&c.f32[offset..offset + len])
            }
            (Storage::ConstF16 { offset }, DType::F32) => {
                TensorData::F32(&self.model.prepared.f16_as_f32[offset..offset + len])
            }
            (Storage::Const { offset }, DType::I8) => TensorData::I8(&c.i8[offset..offset + len]),
            (Storage::Const { offset }, DType::I32) => {
                TensorData::I32(&c.i32[offset..offset + len])
            }
            (Storage::Arena { .. }, DType::I32) | (Storage::ConstF16 { .. }, _) => return None,
        })
    }

    /// Output `i` as real values, dequantizing int8 outputs into `out`.
    pub fn output_f32(&self, i: usize, out: &mut Vec<f32>) -> Result<()> {
        let g = &self.model.graph;
        let id = *g
            .outputs
            .get(i)
            .ok_or_else(|| Error::Argument(format!("output index {i} out of range")))?;
        out.clear();
        match self.tensor(id) {
            Some(TensorData::F32(d)) => out.extend_from_slice(d),
            Some(TensorData::I8(d)) => {
                let q = g.tensors[id].quant.unwrap_or(crate::graph::Quant {
                    scale: 1.0,
                    zero_point: 0,
                });
                out.extend(
                    d.iter()
                        .map(|&v| (v as i32 - q.zero_point) as f32 * q.scale),
                );
            }
            _ => return Err(Error::Invalid("output is not an activation".into())),
        }
        Ok(())
    }

    /// Runs every node in order. No allocation, no locks.
    pub fn run(&mut self) -> Result<()> {
        self.run_observed(|_, _| {})
    }

    /// Runs every node, calling `observe(node_index, session)` after each one
    /// (calibration uses it to collect statistics).
    pub fn run_observed(&mut self, mut observe: impl FnMut(usize, &Session<'m>)) -> Result<()> {
        let model = self.model;
        for (i, n) in model.graph.nodes.iter().enumerate() {
            let ctx = Ctx {
                p: &model.prepared,
                node: i,
            };
            run_node(
                &ctx,
                &model.graph,
                &model.consts,
                n,
                &mut self.a8,
                &mut self.a32,
                &mut self.workers,
            )
            .map_err(|msg| Error::InvalidNode {
                node: n.name.clone(),
                op: n.op.name(),
                msg,
            })?;
            observe(i, self);
        }
        Ok(())
    }
}

#[cold]
fn unreachable_validated() -> ! {
    // Graph::validate guarantees graph inputs are f32 arena tensors.
    unreachable!("validated graph")
}

/// The part of an arena outside the output's range, readable while the output
/// range is borrowed mutably.
struct Parts<'a, T> {
    lo: &'a [T],
    hi: &'a [T],
    hole: (usize, usize),
}

impl<'a, T> Parts<'a, T> {
    fn whole(all: &'a [T]) -> Self {
        Parts {
            lo: all,
            hi: &[],
            hole: (usize::MAX, usize::MAX),
        }
    }
    fn get(&self, start: usize, len: usize) -> std::result::Result<&'a [T], String> {
        let end = start + len;
        if end <= self.hole.0 {
            self.lo.get(start..end)
        } else if start >= self.hole.1 {
            self.hi.get(start - self.hole.1..end - self.hole.1)
        } else {
            None
        }
        .ok_or_else(|| "input overlaps output".to_string())
    }
}

struct Src<'a> {
    t: &'a [Tensor],
    c: &'a Consts,
    /// The f16 pool expanded to f32 at load (`Prepared::f16_as_f32`).
    f16: &'a [f32],
    a8: Parts<'a, i8>,
    a32: Parts<'a, f32>,
}

impl<'a> Src<'a> {
    fn f32(&self, id: usize) -> std::result::Result<&'a [f32], String> {
        let t = &self.t[id];
        match (t.storage, t.dtype) {
            (Storage::Arena { offset }, DType::F32) => self.a32.get(offset, t.len()),
            (Storage::Const { offset }, DType::F32) => Ok(&self.c.f32[offset..offset + t.len()]),
            (Storage::ConstF16 { offset }, DType::F32) => Ok(&self.f16[offset..offset + t.len()]),
            _ => Err(format!("tensor '{}' is not f32", t.name)),
        }
    }
    fn i8(&self, id: usize) -> std::result::Result<&'a [i8], String> {
        let t = &self.t[id];
        match (t.storage, t.dtype) {
            (Storage::Arena { offset }, DType::I8) => self.a8.get(offset, t.len()),
            (Storage::Const { offset }, DType::I8) => Ok(&self.c.i8[offset..offset + t.len()]),
            _ => Err(format!("tensor '{}' is not int8", t.name)),
        }
    }
    fn i32(&self, id: usize) -> std::result::Result<&'a [i32], String> {
        let t = &self.t[id];
        match (t.storage, t.dtype) {
            (Storage::Const { offset }, DType::I32) => Ok(&self.c.i32[offset..offset + t.len()]),
            _ => Err(format!("tensor '{}' is not an int32 constant", t.name)),
        }
    }
    fn requant(&self, id: usize) -> std::result::Result<&'a [Requant], String> {
        let raw = self.i32(id)?;
        Ok(as_requant(raw))
    }
}

/// Views `[mult, shift]` pairs as `Requant`s (same layout: two `i32`s).
fn as_requant(raw: &[i32]) -> &[Requant] {
    let n = raw.len() / 2;
    // SAFETY: Requant is a #[repr(C)] pair of i32 with the alignment of i32;
    // the slice covers exactly n pairs.
    unsafe { std::slice::from_raw_parts(raw.as_ptr() as *const Requant, n) }
}

enum Out<'a> {
    F32(&'a mut [f32]),
    I8(&'a mut [i8]),
}

/// What a node needs besides its tensors: the kernel path and prepared data.
struct Ctx<'a> {
    p: &'a crate::kernels::Prepared,
    node: usize,
}

fn run_node(
    ctx: &Ctx,
    g: &Graph,
    c: &Consts,
    n: &Node,
    a8: &mut [i8],
    a32: &mut [f32],
    wk: &mut Workers,
) -> std::result::Result<(), String> {
    let ot = &g.tensors[n.output];
    let Storage::Arena { offset } = ot.storage else {
        return Err("output is not an activation".into());
    };
    let len = ot.len();
    if let Op::Reshape = n.op {
        if g.tensors[n.inputs[0]].storage == ot.storage {
            return Ok(()); // aliased by the memory plan
        }
    }
    match ot.dtype {
        DType::I8 => {
            let (lo, rest) = a8.split_at_mut(offset);
            let (out, hi) = rest.split_at_mut(len);
            let src = Src {
                t: &g.tensors,
                c,
                f16: &ctx.p.f16_as_f32,
                a8: Parts {
                    lo,
                    hi,
                    hole: (offset, offset + len),
                },
                a32: Parts::whole(a32),
            };
            exec(ctx, n, &src, ot, Out::I8(out), wk)
        }
        DType::F32 => {
            let (lo, rest) = a32.split_at_mut(offset);
            let (out, hi) = rest.split_at_mut(len);
            let src = Src {
                t: &g.tensors,
                c,
                f16: &ctx.p.f16_as_f32,
                a8: Parts::whole(a8),
                a32: Parts {
                    lo,
                    hi,
                    hole: (offset, offset + len),
                },
            };
            exec(ctx, n, &src, ot, Out::F32(out), wk)
        }
        DType::I32 => Err("int32 activations are not supported".into()),
    }
}

fn exec(
    ctx: &Ctx,
    n: &Node,
    s: &Src,
    ot: &Tensor,
    out: Out,
    wk: &mut Workers,
) -> std::result::Result<(), String> {
    let inp = |k: usize| n.inputs[k];
    let ks = ctx.p.ks;
    let folded = ctx.p.folded[ctx.node].as_deref();
    let shape = |k: usize| &s.t[n.inputs[k]].shape;
    match (&n.op, out) {
        (
            Op::Conv {
                geom,
                act_min,
                act_max,
            },
            Out::F32(o),
        ) => {
            let (x, w, b) = (s.f32(inp(0))?, s.f32(inp(1))?, s.f32(inp(2))?);
            let (il, ol) = (geom.input_len(), geom.output_len());
            // Small convs (few positions, long reductions) go through im2col:
            // Prepared sized scratch_f32 for every conv that takes it.
            let col = k::f32_im2col_len(geom).and_then(|n| wk.scratch_f32().get_mut(..n));
            match col {
                Some(col) => {
                    for bi in 0..shape(0)[0] {
                        k::f32_conv2d_im2col(
                            geom,
                            &x[bi * il..(bi + 1) * il],
                            w,
                            b,
                            *act_min,
                            *act_max,
                            col,
                            &mut o[bi * ol..(bi + 1) * ol],
                        );
                    }
                }
                None => {
                    for bi in 0..shape(0)[0] {
                        k::f32_conv2d(
                            geom,
                            &x[bi * il..(bi + 1) * il],
                            w,
                            b,
                            *act_min,
                            *act_max,
                            &mut o[bi * ol..(bi + 1) * ol],
                        );
                    }
                }
            }
        }
        (Op::QConv { geom, q }, Out::I8(o)) => {
            let (x, w, b, rq) = (
                s.i8(inp(0))?,
                s.i8(inp(1))?,
                s.i32(inp(2))?,
                s.requant(inp(3))?,
            );
            let (il, ol) = (geom.input_len(), geom.output_len());
            for bi in 0..shape(0)[0] {
                let (xi, oi) = (&x[bi * il..(bi + 1) * il], &mut o[bi * ol..(bi + 1) * ol]);
                match folded {
                    Some(fb) => par::conv_i8(wk, ks, geom, q, xi, w, fb, rq, oi)?,
                    None if drv::is_depthwise(geom) => {
                        par::dwconv(wk, ks, geom, q, xi, w, b, rq, oi)?
                    }
                    None => k::qs8_conv2d(geom, q, xi, w, b, rq, oi),
                }
            }
        }
        (Op::QConvSparse { geom, q }, Out::I8(o)) => {
            let (x, vals, blocks, row_ptr, rq) = (
                s.i8(inp(0))?,
                s.i8(inp(1))?,
                s.i32(inp(2))?,
                s.i32(inp(3))?,
                s.requant(inp(5))?,
            );
            // O(out_c + blocks), no allocation: the view's invariants are
            // what keep the kernels in bounds.
            let w = k::SparseWeights::new(geom.out_c, geom.k(), row_ptr, blocks, vals)
                .map_err(|e| format!("sparse weights: {e}"))?;
            let fb = folded.ok_or("sparse conv: bias folding failed")?;
            let (il, ol) = (geom.input_len(), geom.output_len());
            for bi in 0..shape(0)[0] {
                let (xi, oi) = (&x[bi * il..(bi + 1) * il], &mut o[bi * ol..(bi + 1) * ol]);
                par::conv_sparse(wk, ks, geom, q, xi, &w, fb, rq, oi)?;
            }
        }
        (
            Op::QConvF32 {
                geom,
                in_zp,
                act_min,
                act_max,
            },
            Out::F32(o),
        ) => {
            let (x, w, b, sc) = (s.i8(inp(0))?, s.i8(inp(1))?, s.i32(inp(2))?, s.f32(inp(3))?);
            let (il, ol) = (geom.input_len(), geom.output_len());
            for bi in 0..shape(0)[0] {
                let (xi, oi) = (&x[bi * il..(bi + 1) * il], &mut o[bi * ol..(bi + 1) * ol]);
                match folded {
                    Some(fb) => par::conv_f32(
                        wk,
                        ks,
                        geom,
                        *in_zp,
                        (*act_min, *act_max),
                        xi,
                        w,
                        fb,
                        sc,
                        oi,
                    )?,
                    None => {
                        k::qs8_conv2d_f32out(geom, *in_zp, *act_min, *act_max, xi, w, b, sc, oi)
                    }
                }
            }
        }
        (
            Op::QGemmF32 {
                m,
                n: nn,
                k: kk,
                in_zp,
                act_min,
                act_max,
            },
            Out::F32(o),
        ) => {
            let (x, w, b, sc) = (s.i8(inp(0))?, s.i8(inp(1))?, s.i32(inp(2))?, s.f32(inp(3))?);
            match folded {
                // Rows of the NT gemm are output channels, columns the input rows.
                Some(fb) => (ks.gemm_nt_f32out.run)(
                    *nn, *m, *kk, w, x, fb, sc, *act_min, *act_max, o, 1, *nn,
                ),
                None => {
                    k::qs8_gemm_f32out(*m, *nn, *kk, *in_zp, *act_min, *act_max, x, w, b, sc, o)
                }
            }
        }
        (
            Op::Gemm {
                m,
                n: nn,
                k: kk,
                batch,
                act_min,
                act_max,
            },
            Out::F32(o),
        ) => {
            let (x, w) = (s.f32(inp(0))?, s.f32(inp(1))?);
            let b: &[f32] = if n.inputs.len() == 3 {
                s.f32(inp(2))?
            } else {
                &[]
            };
            let (xl, wl, ol) = (m * kk, kk * nn, m * nn);
            let wb = w.len() > wl;
            for bi in 0..*batch {
                let wsl = if wb { &w[bi * wl..(bi + 1) * wl] } else { w };
                k::f32_gemm(
                    *m,
                    *nn,
                    *kk,
                    &x[bi * xl..(bi + 1) * xl],
                    wsl,
                    b,
                    *act_min,
                    *act_max,
                    &mut o[bi * ol..(bi + 1) * ol],
                );
            }
        }
        (Op::QGemm { m, n: nn, k: kk, q }, Out::I8(o)) => {
            let (x, w, b, rq) = (
                s.i8(inp(0))?,
                s.i8(inp(1))?,
                s.i32(inp(2))?,
                s.requant(inp(3))?,
            );
            match folded {
                Some(fb) => {
                    let qo = k::QOut {
                        out_zp: q.out_zp,
                        act_min: q.act_min,
                        act_max: q.act_max,
                    };
                    par::gemm_i8(wk, ks, (*m, *nn, *kk), w, x, fb, rq, &qo, o)?
                }
                None => k::qs8_gemm(*m, *nn, *kk, q, x, w, b, rq, o),
            }
        }
        (Op::MaxPool { geom }, Out::F32(o)) => k::f32_pool2d(geom, true, s.f32(inp(0))?, o),
        (Op::AvgPool { geom }, Out::F32(o)) => k::f32_pool2d(geom, false, s.f32(inp(0))?, o),
        (Op::MaxPool { geom }, Out::I8(o)) => (ks.maxpool2d.run)(geom, s.i8(inp(0))?, o),
        (Op::AvgPool { geom }, Out::I8(o)) => {
            let zp = s.t[inp(0)].quant.map(|q| q.zero_point).unwrap_or(0);
            (ks.avgpool2d.run)(geom, zp, s.i8(inp(0))?, o)
        }
        (Op::Binary { kind }, Out::F32(o)) => {
            let (ad, bd, od) = (
                Dims::new(shape(0)),
                Dims::new(shape(1)),
                Dims::new(&ot.shape),
            );
            k::f32_binary(*kind, s.f32(inp(0))?, &ad, s.f32(inp(1))?, &bd, o, &od);
        }
        (Op::QAdd { p }, Out::I8(o)) => {
            let (ad, bd, od) = (
                Dims::new(shape(0)),
                Dims::new(shape(1)),
                Dims::new(&ot.shape),
            );
            (ks.vadd.run)(p, s.i8(inp(0))?, &ad, s.i8(inp(1))?, &bd, o, &od);
        }
        (Op::QMul { p }, Out::I8(o)) => {
            let (ad, bd, od) = (
                Dims::new(shape(0)),
                Dims::new(shape(1)),
                Dims::new(&ot.shape),
            );
            (ks.vmul.run)(p, s.i8(inp(0))?, &ad, s.i8(inp(1))?, &bd, o, &od);
        }
        (Op::Unary { kind }, Out::F32(o)) => k::f32_unary(*kind, s.f32(inp(0))?, o),
        (Op::Lut, Out::I8(o)) => {
            let t = s.i8(inp(1))?;
            let table: &[i8; 256] = t
                .try_into()
                .map_err(|_| "table must have 256 entries".to_string())?;
            k::qs8_lut(table, s.i8(inp(0))?, o);
        }
        (Op::Softmax { outer, axis, inner }, Out::F32(o)) => {
            k::f32_softmax(s.f32(inp(0))?, *outer, *axis, *inner, o)
        }
        (Op::ReduceMean { outer, axis, inner }, Out::F32(o)) => {
            k::f32_reduce_mean(s.f32(inp(0))?, *outer, *axis, *inner, o)
        }
        (Op::Concat { axis, requant }, out) => {
            let oshape = &ot.shape;
            let outer: usize = oshape[..*axis].iter().product();
            let inner: usize = oshape[axis + 1..].iter().product();
            let mut off = 0;
            match out {
                Out::F32(o) => {
                    for (kx, &id) in n.inputs.iter().enumerate() {
                        let ax = shape(kx)[*axis];
                        k::concat(s.f32(id)?, outer, ax, inner, oshape[*axis], off, o);
                        off += ax;
                    }
                }
                Out::I8(o) => {
                    let ozp = ot.quant.map(|q| q.zero_point).unwrap_or(0);
                    for (kx, &id) in n.inputs.iter().enumerate() {
                        let ax = shape(kx)[*axis];
                        let x = s.i8(id)?;
                        match requant[kx] {
                            None => k::concat(x, outer, ax, inner, oshape[*axis], off, o),
                            Some(rq) => {
                                let izp = s.t[id].quant.map(|q| q.zero_point).unwrap_or(0);
                                let chunk = ax * inner;
                                for b in 0..outer {
                                    let dst = b * oshape[*axis] * inner + off * inner;
                                    (ks.requantize_copy.run)(
                                        &x[b * chunk..(b + 1) * chunk],
                                        izp,
                                        rq,
                                        ozp,
                                        &mut o[dst..dst + chunk],
                                    );
                                }
                            }
                        }
                        off += ax;
                    }
                }
            }
        }
        (Op::Transpose { perm }, Out::F32(o)) => k::transpose(s.f32(inp(0))?, shape(0), perm, o),
        (Op::Transpose { perm }, Out::I8(o)) => k::transpose(s.i8(inp(0))?, shape(0), perm, o),
        (Op::Reshape, Out::F32(o)) => o.copy_from_slice(s.f32(inp(0))?),
        (Op::Reshape, Out::I8(o)) => o.copy_from_slice(s.i8(inp(0))?),
        (Op::Slice { starts, steps }, Out::F32(o)) => {
            k::slice(s.f32(inp(0))?, shape(0), starts, steps, &ot.shape, o)
        }
        (Op::Slice { starts, steps }, Out::I8(o)) => {
            k::slice(s.i8(inp(0))?, shape(0), starts, steps, &ot.shape, o)
        }
        (Op::Gather { axis, indices }, Out::F32(o)) => {
            k::gather(s.f32(inp(0))?, shape(0), *axis, indices, o)
        }
        (Op::Gather { axis, indices }, Out::I8(o)) => {
            k::gather(s.i8(inp(0))?, shape(0), *axis, indices, o)
        }
        (Op::Pad { before, value }, Out::F32(o)) => {
            k::pad_constant(s.f32(inp(0))?, shape(0), before, &ot.shape, *value, o)
        }
        (Op::Pad { before, value }, Out::I8(o)) => {
            k::pad_constant(s.i8(inp(0))?, shape(0), before, &ot.shape, *value as i8, o)
        }
        (Op::Lstm { geom }, Out::F32(o)) => k::f32_lstm(
            geom,
            s.f32(inp(0))?,
            s.f32(inp(1))?,
            s.f32(inp(2))?,
            s.f32(inp(3))?,
            s.f32(inp(4))?,
            s.f32(inp(5))?,
            o,
        ),
        (Op::Resize { geom }, Out::F32(o)) => k::f32_resize(geom, s.f32(inp(0))?, o),
        (Op::Resize { geom }, Out::I8(o)) => k::qs8_resize(geom, s.i8(inp(0))?, o),
        (Op::Quantize, Out::I8(o)) => {
            let q = ot.quant.ok_or("missing quantization")?;
            k::qs8_quantize(s.f32(inp(0))?, q.scale, q.zero_point, o);
        }
        (Op::Dequantize, Out::F32(o)) => {
            let q = s.t[inp(0)].quant.ok_or("missing quantization")?;
            k::f32_dequantize(s.i8(inp(0))?, q.scale, q.zero_point, o);
        }
        (op, _) => {
            return Err(format!(
                "{} cannot produce a {:?} output",
                op.name(),
                ot.dtype
            ))
        }
    }
    Ok(())
}

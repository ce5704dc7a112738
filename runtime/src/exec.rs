//! The executor: runs a validated graph over a preallocated arena.
//!
//! `Session::new` allocates the arenas once (prepare); `Session::run` executes
//! every node without allocating or locking (eval): each node's `run` is in
//! its op's file, `ops/<op>.rs`.

use crate::error::{try_vec, Error, Result};
use crate::graph::{DType, Storage};
use crate::model::Model;
use crate::ops;
use crate::par::Workers;

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
    /// Where the model's NPU part runs (see [`Session::backend`]).
    backend: crate::npu::Backend,
    #[cfg(feature = "rknpu")]
    npu: Option<crate::npu::rknn::Runner>,
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
        Self::with_npu(model, threads, model.npu_options())
    }

    /// [`Session::with_threads`] with a choice of how the model's NPU part
    /// (if any) runs. The NPU is used when the runtime is built with the
    /// `rknpu` feature, `npu.enabled`, the library loads and `rknn_init`
    /// accepts the blob; otherwise the part's CPU nodes run and
    /// [`Session::backend`] says why. Never an error for a missing NPU.
    pub fn with_npu(
        model: &'m Model,
        threads: usize,
        npu: &crate::npu::NpuOptions,
    ) -> Result<Self> {
        use crate::npu::Backend;
        let g = &model.graph;
        let workers = Workers::new(&model.prepared, threads)?;
        let backend = match (&model.npu, npu.enabled) {
            (None, _) => Backend::Cpu,
            (Some(_), false) => Backend::CpuFallback {
                reason: match &npu.board {
                    Some(b) => format!("board {b} has no NPU"),
                    None => "NPU disabled by the caller".into(),
                },
            },
            (Some(part), true) if npu.board.as_ref().is_some_and(|b| *b != part.board) => {
                Backend::CpuFallback {
                    reason: format!(
                        "the model's NPU part is compiled for {}, this board is {} (convert it with --board {})",
                        part.board,
                        npu.board.as_deref().unwrap_or_default(),
                        npu.board.as_deref().unwrap_or_default()
                    ),
                }
            }
            (Some(_), true) if !cfg!(feature = "rknpu") => Backend::CpuFallback {
                reason: "this runtime was built without the rknpu feature".into(),
            },
            (Some(_), true) => Backend::Cpu, // decided below
        };
        #[cfg(feature = "rknpu")]
        let (backend, runner) = match (&model.npu, backend) {
            (Some(part), Backend::Cpu) => match crate::npu::rknn::Runner::new(part, g, npu) {
                Ok((r, b)) => (b, Some(r)),
                Err(reason) => (Backend::CpuFallback { reason }, None),
            },
            (_, b) => (b, None),
        };
        Ok(Session {
            model,
            a8: try_vec(g.arena_i8, 0, "the int8 arena")?,
            a32: try_vec(g.arena_f32, 0.0, "the f32 arena")?,
            workers,
            backend,
            #[cfg(feature = "rknpu")]
            npu: runner,
        })
    }

    /// Where this session runs the model: all CPU, the NPU part on the NPU,
    /// or the CPU fallback with the reason the NPU is not used.
    pub fn backend(&self) -> &crate::npu::Backend {
        &self.backend
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
            // Packed weights of a lean model are not the tensor's values.
            (Storage::Const { .. }, DType::I8) if self.model.is_repacked(id) => return None,
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
    /// (calibration uses it to collect statistics). When the NPU runs a
    /// range of nodes, `observe` is called once for the range, with the
    /// index of its last node.
    pub fn run_observed(&mut self, mut observe: impl FnMut(usize, &Session<'m>)) -> Result<()> {
        let model = self.model;
        #[cfg(feature = "rknpu")]
        let npu_range = self.npu.as_ref().map(|r| (r.first, r.end));
        for (i, n) in model.graph.nodes.iter().enumerate() {
            #[cfg(feature = "rknpu")]
            if let Some((first, end)) = npu_range {
                if (first + 1..end).contains(&i) {
                    continue;
                }
                if i == first {
                    let r = self.npu.as_mut().expect("runner present with its range");
                    r.run(&mut self.a8, &mut self.a32)
                        .map_err(|msg| Error::InvalidNode {
                            node: format!("nodes {first}..{end}"),
                            op: "Rknn",
                            msg,
                        })?;
                    observe(end - 1, self);
                    continue;
                }
            }
            ops::run_node(
                &model.prepared,
                i,
                &model.graph,
                &model.consts,
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

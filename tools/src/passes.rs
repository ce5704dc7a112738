//! The compiler's passes, in the order they run. `strix convert`:
//!
//! 1. **import** ([`crate::onnx::import`]): each ONNX node through its op
//!    module ([`crate::ops`]); the rewrites that need the ONNX graph happen
//!    there (constant folding, BatchNorm into Conv, Relu/Clip into their
//!    producer, Identity/Dropout/Cast dropped; QDQ pairs become the pinned
//!    quantization of an already-quantized model, [`crate::qdq`]);
//! 2. [`IMPORT_PASSES`] on the imported graph (run by the import itself, so
//!    every caller of [`crate::onnx::import`] gets the same graph);
//! 3. [`GRAPH_PASSES`] (run by `convert`; `convert --prune` runs
//!    `remove-dead-channels` once, then `equalize` on every int8 candidate
//!    it builds);
//! 4. calibration ([`crate::calib::calibrate`], int8 builds);
//! 5. lowering ([`crate::lower::lower_f32`] or [`crate::lower::lower_int8`]):
//!    each node's precision is chosen and it becomes runtime ops through its op
//!    module, weights may be stored as f16;
//! 6. the memory plan (`strix_runtime::plan::plan`).

use crate::ir::CGraph;
use anyhow::{Context, Result};

/// One pass over the compiler graph.
pub struct Pass {
    /// Its name (for reports and `--help` texts).
    pub name: &'static str,
    /// What it does.
    pub doc: &'static str,
    /// Runs it; a pass disabled by `opts` returns at once.
    pub run: fn(&mut CGraph, &PassOptions) -> Result<()>,
}

/// Which optional passes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassOptions {
    /// `remove-dead-channels` runs (off: `--keep-dead-channels`).
    pub remove_dead_channels: bool,
    /// `equalize` runs (int8 builds only; off: `--no-cle`).
    pub equalize: bool,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions {
            remove_dead_channels: true,
            equalize: true,
        }
    }
}

/// Run on every imported graph, in order.
pub const IMPORT_PASSES: &[Pass] = &[
    Pass {
        name: "remove-unused",
        doc: "drops nodes whose outputs nothing reads",
        run: |g, _| {
            g.remove_dead();
            Ok(())
        },
    },
    Pass {
        name: "fuse-silu",
        doc: "Mul(x, Sigmoid(x)) -> one SiLU (one table in int8; ops::activation)",
        run: |g, _| {
            crate::ops::activation::fuse_silu(g);
            Ok(())
        },
    },
    Pass {
        name: "check-pins",
        doc: "drops the file's quantization pins that no longer fit the graph (see \
              lower::Pinned): weights a rewrite changed, values no node reads",
        run: |g, _| {
            check_pins(g);
            Ok(())
        },
    },
];

/// Run by `convert` after the import, in order.
pub const GRAPH_PASSES: &[Pass] = &[
    Pass {
        name: "remove-dead-channels",
        doc: "removes output channels whose weights are all ~0 when the outputs \
              stay the same (prune::dead)",
        run: remove_dead_channels,
    },
    Pass {
        name: "equalize",
        doc: "cross-layer equalization of conv pairs for int8 (equalize)",
        run: |g, opts| {
            // Equalization rescales weights and activations: the file's
            // quantization (pins) would no longer describe them.
            if opts.equalize && g.pinned.is_empty() {
                crate::equalize::equalize(g);
            }
            Ok(())
        },
    },
    Pass {
        name: "check-pins",
        doc: "drops the file's quantization pins that no longer fit the graph",
        run: |g, _| {
            check_pins(g);
            Ok(())
        },
    },
];

/// Runs [`IMPORT_PASSES`] in order; an error names the pass.
pub(crate) fn run_import_passes(g: &mut CGraph) -> Result<()> {
    run(IMPORT_PASSES, g, &PassOptions::default())
}

/// Runs [`GRAPH_PASSES`] in order; an error names the pass.
pub fn run_graph_passes(g: &mut CGraph, opts: &PassOptions) -> Result<()> {
    run(GRAPH_PASSES, g, opts)
}

fn run(passes: &[Pass], g: &mut CGraph, opts: &PassOptions) -> Result<()> {
    for p in passes {
        (p.run)(g, opts).with_context(|| format!("pass {}", p.name))?;
    }
    Ok(())
}

/// Removes channels pruned in training (weights within
/// [`crate::prune::dead::DEAD_REL`] of zero, see [`crate::prune::dead`]) and
/// says so; a no-op on ordinary models.
fn remove_dead_channels(g: &mut CGraph, opts: &PassOptions) -> Result<()> {
    // A model with the file's quantization (pins) keeps its channels: their
    // removal rewrites the pinned weights.
    if !opts.remove_dead_channels || !g.pinned.is_empty() {
        return Ok(());
    }
    let r = crate::prune::dead::remove_dead_channels(g).context("removing dead channels")?;
    if r.channels > 0 {
        eprintln!(
            "removed {} dead channels (weights below 1e-6 of their layer's largest) from {} layers: MACs {} -> {}",
            r.channels, r.layers, r.macs_before, r.macs_after
        );
    }
    Ok(())
}

/// Keeps the file's quantization ([`crate::lower::Pinned`]) true to the
/// graph after rewrites: pinned weights whose codes times scales no longer
/// give the f32 constant (a BatchNorm folded into them, say), and biases no
/// longer within half a step of theirs, are dropped with their partner
/// (Strix quantizes them itself) and said so; pins of values no node reads
/// or produces any more are dropped silently. Pinned activations stay
/// pinned: fusions that keep a value (Relu/Clip into its producer, SiLU)
/// keep its meaning, and its pin is the fused output's.
pub fn check_pins(g: &mut CGraph) {
    use crate::ir::COp;
    if g.pinned.is_empty() {
        return;
    }
    let mut live = vec![false; g.values.len()];
    for n in &g.nodes {
        live[n.output] = true;
        for &i in &n.inputs {
            live[i] = true;
        }
    }
    for &i in &g.inputs {
        live[i] = true;
    }
    g.pinned
        .act
        .retain(|&v, _| live.get(v).copied().unwrap_or(false));
    g.pinned
        .weights
        .retain(|&v, _| live.get(v).copied().unwrap_or(false));
    g.pinned
        .bias
        .retain(|&v, _| live.get(v).copied().unwrap_or(false));
    for n in &g.nodes {
        let (rows, kn) = match n.op {
            COp::Conv { geom, .. } => (geom.out_c, false),
            COp::Gemm { n: nn, .. } => (nn, true),
            _ => continue,
        };
        let (Some(&wv), Some(&bv)) = (n.inputs.get(1), n.inputs.get(2)) else {
            continue;
        };
        let Some(pw) = g.pinned.weights.get(&wv) else {
            continue;
        };
        let (Some(w), Some(b)) = (&g.values[wv].konst, &g.values[bv].konst) else {
            continue;
        };
        let (w, b) = (w.as_f32(), b.as_f32());
        let per = w.len() / rows.max(1);
        let chan = |i: usize| if kn { i % rows } else { i / per.max(1) };
        let fits = pw.q.len() == w.len()
            && pw.scales.len() == rows
            && w.iter()
                .zip(&pw.q)
                .enumerate()
                .all(|(i, (&x, &q))| q as f32 * pw.scales[chan(i)] == x);
        let xs = g.pinned.act.get(&n.inputs[0]).map(|q| q.scale);
        let bias_fits = match (g.pinned.bias.get(&bv), xs) {
            (Some(pb), Some(xs)) => {
                pb.len() == b.len()
                    && pb.iter().zip(&b).enumerate().all(|(c, (&q, &x))| {
                        let s = xs as f64 * pw.scales[c] as f64;
                        (q as f64 - x as f64 / s).abs() <= 0.5 + 1e-6 * (q as f64).abs()
                    })
            }
            _ => false,
        };
        if !(fits && bias_fits) {
            eprintln!(
                "note: node '{}': the file's int8 weights no longer match them after a \
                 graph rewrite; Strix quantizes them itself",
                n.name
            );
            g.pinned.weights.remove(&wv);
            g.pinned.bias.remove(&bv);
        }
    }
}

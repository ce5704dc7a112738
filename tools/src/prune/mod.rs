//! `strix convert --prune`: structured channel pruning (and optional block
//! sparsity) searched within an accuracy budget, with mixed precision for
//! layers whose int8 error alone breaks the budget.
//!
//! Flow: the samples are split into a calibration part (used for quantization
//! statistics, sensitivity and the search) and a held-back part (used only to
//! verify the result). The *reference* is the unpruned int8 model (the
//! budget is "relative to unpruned int8"); the fp32 graph is the reference for
//! the mixed-precision decision. Every candidate is measured as the real int8
//! model: pruned, equalized, recalibrated, lowered and run.
//!
//! 1. Mixed precision: if the unpruned int8 model misses the budget against
//!    fp32 on the calibration part, conv/gemm layers are kept f32 in order of
//!    their per-layer int8 error until it meets it (at most a quarter of them).
//! 2. Sensitivity: each prunable group alone at each ratio.
//! 3. Greedy search: repeatedly take the group step with the most removed cost
//!    (MACs plus a per-output-element share, see [`graph::effective_cost`])
//!    per unit of predicted metric loss; keep it if the combined model is
//!    within budget on the calibration part, else freeze that group.
//! 4. Held-back check: undo accepted steps (last first) until the held-back
//!    part is within budget too.

pub mod dead;
pub mod graph;
pub mod obs;
pub mod report;

use crate::calib::Method;
use crate::ir::CGraph;
use anyhow::{anyhow, bail, Context, Result};
use graph::Group;
use std::collections::HashSet;
use strix_runtime::meta::{Decoder, ModelMeta};
use strix_runtime::postprocess::{decode, map50, Decoded};
use strix_runtime::Model;

/// Limits on the metrics `strix eval` reports, measured against the unpruned
/// int8 model (and, for mixed precision, the fp32 graph).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Budget {
    /// Maximum increase of the fraction of samples whose top-1 class differs
    /// from fp32, over the unpruned int8 model's (classifiers): 0.01 is "at
    /// most 1 point more top-1 disagreement". Measured against the unpruned
    /// int8 model directly, any change flips near-tie samples whichever way,
    /// so the increase over the reference's own disagreement is what counts.
    pub max_top1_disagreement: Option<f64>,
    /// Minimum `map50_vs_fp32` relative to the unpruned int8 model's
    /// (detectors): 0.95 is "the pruned model finds the fp32 model's boxes
    /// at least 95% as well as the unpruned int8 model does". Both are
    /// measured against fp32: against the unpruned int8 boxes directly, the
    /// two models' independent quantization noise alone costs as much as
    /// pruning (FastestDet: mAP 0.96 with nothing pruned, just recalibrated).
    pub min_map50: Option<f64>,
    /// Minimum mean output cosine similarity.
    pub min_cosine: Option<f64>,
}

impl Budget {
    /// Parses `top1=0.01`, `map50=0.95` or `cosine=0.99` (repeatable).
    pub fn parse(items: &[String]) -> Result<Budget> {
        let mut b = Budget::default();
        for it in items {
            let (k, v) = it
                .split_once('=')
                .ok_or_else(|| anyhow!("--prune-budget '{it}': expected KEY=VALUE"))?;
            let v: f64 = v
                .trim()
                .parse()
                .map_err(|_| anyhow!("--prune-budget '{it}': '{v}' is not a number"))?;
            if !(0.0..=1.0).contains(&v) {
                bail!("--prune-budget '{it}': the value must be within [0, 1]");
            }
            match k.trim() {
                "top1" => b.max_top1_disagreement = Some(v),
                "map50" => b.min_map50 = Some(v),
                "cosine" => b.min_cosine = Some(v),
                other => bail!("--prune-budget: unknown metric '{other}' (top1, map50 or cosine)"),
            }
        }
        if b == Budget::default() {
            bail!("--prune needs at least one --prune-budget (top1=, map50= or cosine=)");
        }
        Ok(b)
    }

    /// True when `m` satisfies every limit.
    pub fn within(&self, m: &Metrics) -> bool {
        self.max_top1_disagreement
            .is_none_or(|x| m.top1_drop_vs_fp32.is_some_and(|d| d <= x + 1e-9))
            && self
                .min_map50
                .is_none_or(|x| m.map50_rel_vs_fp32.is_some_and(|a| a >= x - 1e-9))
            && self.min_cosine.is_none_or(|x| m.cosine >= x - 1e-9)
    }

    /// Scalar loss of `m` relative to a perfect match, each metric scaled by
    /// its allowed slack (1.0 = the whole budget); cosine always contributes
    /// a little so ties between equally-safe steps are broken by fidelity.
    fn loss(&self, m: &Metrics) -> f64 {
        let mut l = 1.0 - m.cosine;
        if let (Some(x), Some(d)) = (self.max_top1_disagreement, m.top1_drop_vs_fp32) {
            l += d.max(0.0) / x.max(1e-3);
        }
        if let (Some(x), Some(a)) = (self.min_map50, m.map50_rel_vs_fp32) {
            l += (1.0 - a) / (1.0 - x).max(1e-3);
        }
        if let Some(x) = self.min_cosine {
            l += (1.0 - m.cosine) / (1.0 - x).max(1e-4);
        }
        l
    }
}

/// Metrics of a model's outputs against reference outputs.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Metrics {
    pub cosine: f64,
    pub top1_agreement: Option<f64>,
    pub map50: Option<f64>,
    /// Top-1 disagreement with fp32 minus the unpruned int8 model's.
    pub top1_drop_vs_fp32: Option<f64>,
    /// mAP@0.5 against the fp32 boxes divided by the unpruned int8 model's.
    pub map50_rel_vs_fp32: Option<f64>,
}

/// How channels are ranked within a group.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum, serde::Serialize)]
pub enum Importance {
    /// L1 norm of each output channel's weights.
    L1,
    /// L2 norm of each output channel's weights.
    L2,
    /// Mean absolute activation of the channel on the calibration samples.
    Activation,
    /// Optimal Brain Surgeon: channels are removed one at a time, each the
    /// one whose removal (with the consumers' remaining weights refitted)
    /// adds the least output error on the calibration samples (see
    /// [`obs::obs_importance`]); groups without such statistics use L1.
    Obs,
}

/// Pruning options (`strix convert --prune ...`).
#[derive(Clone, Debug)]
pub struct Options {
    pub budget: Budget,
    pub importance: Importance,
    /// Ratios (fractions of a group's channels removed) tried per group.
    pub ratios: Vec<f32>,
    /// Largest fraction of [`graph::SPARSE_BLOCK`] weight blocks the search
    /// may zero in one conv (0 = no block sparsity). Each ungrouped conv is a
    /// search unit tried at [`block_ratios`] of this maximum.
    pub block: f32,
    /// Fraction of the samples held back for the final check.
    pub holdout: f64,
    /// Choose f32 layers automatically when int8 alone breaks the budget.
    pub mixed_precision: bool,
    /// Store the chosen f32 layers' weights as f16 when the budget still holds.
    pub f16: bool,
    /// At most this many samples feed quantization statistics of candidates.
    pub max_calib_stats: usize,
    /// Refit consumers of pruned channels by least squares on calibration
    /// activations (see [`graph::Compensation`]).
    pub refit: bool,
    /// What the search maximizes per unit of loss: removed MACs plus this
    /// many MAC-equivalents per removed conv/gemm output element (see
    /// [`graph::effective_cost`]); 0 = MACs only.
    pub cost_per_element: u64,
    /// The optional passes, as in [`crate::convert_with`] (dead channels are
    /// removed before the search, equalization runs in every int8 build).
    pub passes: crate::Passes,
}

/// Default [`Options::cost_per_element`], an estimate rather than a fit:
/// the AVX2 and dotprod paths do 16 MACs per `vpmaddwd`/`sdot`, and
/// requantizing, storing and im2row take a few instructions per output
/// element, so one element weighs roughly as much as 32 MACs.
pub const COST_PER_ELEMENT: u64 = 32;

/// At most this many calibration samples feed the input statistics (Gram
/// matrices) used by the refits and the second-order choices.
pub const MAX_GRAM_SAMPLES: usize = 256;

/// Smallest block ratio the search tries: below the lowering's sparse
/// threshold (35% zero blocks, partial blocks counted as non-zero) the
/// kernels stay dense and zeroing would cost accuracy for nothing.
pub const MIN_BLOCK_RATIO: f32 = 0.4;

/// Block ratios the search tries per conv for a maximum `max` (empty for 0).
pub fn block_ratios(max: f32) -> Vec<f32> {
    if max <= 0.0 {
        return vec![];
    }
    let mut r: Vec<f32> = [MIN_BLOCK_RATIO, 0.6, 0.8]
        .into_iter()
        .filter(|&r| r < max)
        .chain([max])
        .collect();
    r.dedup();
    r
}

impl Options {
    pub fn new(budget: Budget) -> Self {
        Options {
            budget,
            importance: Importance::Obs,
            ratios: vec![0.0625, 0.125, 0.1875, 0.25, 0.375, 0.5, 0.625, 0.75],
            block: 0.0,
            holdout: 0.25,
            mixed_precision: true,
            f16: true,
            max_calib_stats: 32,
            refit: true,
            cost_per_element: COST_PER_ELEMENT,
            passes: crate::Passes::default(),
        }
    }
}

type Outs = Vec<(Vec<f32>, Vec<usize>)>;

/// Compares `got` with `want` per sample (indices `idx`).
pub fn metrics(decoder: &Decoder, got: &[Outs], want: &[Outs], idx: &[usize]) -> Result<Metrics> {
    let (mut cos, mut agree, mut maps) = (0f64, 0usize, vec![]);
    let classify = matches!(decoder, Decoder::Classify { .. });
    let detect = matches!(
        decoder,
        Decoder::Fastestdet { .. } | Decoder::Ultraface { .. }
    );
    for &i in idx {
        let (g, w) = (&got[i], &want[i]);
        let c: f64 = g
            .iter()
            .zip(w)
            .map(|(a, b)| crate::eval::cosine(&a.0, &b.0))
            .sum::<f64>()
            / g.len().max(1) as f64;
        cos += c;
        if classify || detect {
            let dec = |o: &Outs| -> Result<Decoded> {
                let v: Vec<(&[f32], &[usize])> = o
                    .iter()
                    .map(|(a, b)| (a.as_slice(), b.as_slice()))
                    .collect();
                decode(decoder, &v).map_err(|e| anyhow!("{e}"))
            };
            match (dec(g)?, dec(w)?) {
                (Decoded::TopK(a), Decoded::TopK(b)) => {
                    agree += (a.first().map(|x| x.0) == b.first().map(|x| x.0)) as usize;
                }
                (Decoded::Detections(a), Decoded::Detections(b)) => maps.push(map50(&a, &b) as f64),
                _ => {}
            }
        }
    }
    let n = idx.len().max(1) as f64;
    Ok(Metrics {
        cosine: cos / n,
        top1_agreement: classify.then(|| agree as f64 / n),
        map50: detect.then(|| maps.iter().sum::<f64>() / maps.len().max(1) as f64),
        top1_drop_vs_fp32: None,
        map50_rel_vs_fp32: None,
    })
}

/// mAP@0.5 of `got` against `fp32` over the samples `idx`, divided by that
/// of `base` (None for non-detectors; 1.0 when `base` finds nothing).
pub fn map50_rel(
    decoder: &Decoder,
    got: &[Outs],
    base: &[Outs],
    fp32: &[Outs],
    idx: &[usize],
) -> Result<Option<f64>> {
    let (Some(a), Some(b)) = (
        metrics(decoder, got, fp32, idx)?.map50,
        metrics(decoder, base, fp32, idx)?.map50,
    ) else {
        return Ok(None);
    };
    Ok(Some(if b > 0.0 { a / b } else { 1.0 }))
}

/// Fills the fp32-relative fields of `m` for `got` (see [`Metrics`]).
fn vs_fp32(
    m: &mut Metrics,
    decoder: &Decoder,
    got: &[Outs],
    base: &[Outs],
    fp32: &[Outs],
    idx: &[usize],
) -> Result<()> {
    m.top1_drop_vs_fp32 = top1_drop(decoder, got, base, fp32, idx)?;
    m.map50_rel_vs_fp32 = map50_rel(decoder, got, base, fp32, idx)?;
    Ok(())
}

/// Fraction of samples `idx` where `got` disagrees with `fp32` on the top-1
/// class, minus the fraction where `base` does (None for non-classifiers).
pub fn top1_drop(
    decoder: &Decoder,
    got: &[Outs],
    base: &[Outs],
    fp32: &[Outs],
    idx: &[usize],
) -> Result<Option<f64>> {
    if !matches!(decoder, Decoder::Classify { .. }) {
        return Ok(None);
    }
    let a = metrics(decoder, got, fp32, idx)?
        .top1_agreement
        .unwrap_or(1.0);
    let b = metrics(decoder, base, fp32, idx)?
        .top1_agreement
        .unwrap_or(1.0);
    Ok(Some(b - a))
}

/// Runs `m` on every sample.
pub fn run_all(m: &Model, samples: &[Vec<f32>]) -> Result<Vec<Outs>> {
    samples.iter().map(|x| crate::run_values(m, x)).collect()
}

/// The int8 model of `cg` (equalized like `convert` does when `cle`,
/// calibrated on `stats_samples`), with the nodes in `keep_f32` left in f32
/// (their weights stored as f16 when `f16`).
#[allow(clippy::too_many_arguments)]
pub fn build_int8(
    cg: &CGraph,
    stats_samples: &[Vec<Vec<f32>>],
    method: Method,
    keep_f32: &HashSet<usize>,
    f16: bool,
    cle: bool,
    meta: &ModelMeta,
) -> Result<Model> {
    let mut cg = cg.clone();
    crate::passes::run_graph_passes(&mut cg, &int8_passes(cle))?;
    let stats = crate::calib::calibrate(&cg, stats_samples, method, || {})?;
    let half: HashSet<usize> = if f16 {
        keep_f32
            .iter()
            .copied()
            .filter(|&ni| cg.nodes[ni].inputs.get(1).is_some_and(|&w| cg.is_const(w)))
            .collect()
    } else {
        HashSet::new()
    };
    let opts = crate::lower::Int8Options {
        keep_f32: keep_f32.clone(),
        f16: half,
        ..Default::default()
    };
    let lowered = crate::lower::lower_int8(&cg, &stats, method, &opts)?;
    let mut b = lowered.builder;
    strix_runtime::plan::plan(&mut b.g, true);
    Model::new(meta.clone(), b.g, b.c).context("the pruned graph failed validation (compiler bug)")
}

/// The graph passes left for an int8 candidate: dead channels were removed
/// before the search, so only `equalize` (like `convert`).
/// The passes of an int8 candidate: dead channels are gone already.
fn int8_passes(equalize: bool) -> crate::passes::PassOptions {
    crate::passes::PassOptions {
        remove_dead_channels: false,
        equalize,
    }
}

/// The all-f32 model of `cg`.
pub fn build_f32(cg: &CGraph, meta: &ModelMeta) -> Result<Model> {
    let (mut b, _) = crate::lower::lower_f32(cg)?;
    strix_runtime::plan::plan(&mut b.g, true);
    Ok(Model::new(meta.clone(), b.g, b.c)?)
}

/// The f32 model of `cg` with every value kept readable after a run (no
/// buffer reuse), and the runtime tensor of each compiler value.
pub(crate) fn f32_probe_model(cg: &CGraph) -> Result<(Model, Vec<Option<usize>>)> {
    let (mut b, map) = crate::lower::lower_f32(cg)?;
    strix_runtime::plan::plan(&mut b.g, false);
    Ok((Model::new(Default::default(), b.g, b.c)?, map))
}

/// Gram matrices of every consumer's input on `samples` (f32 graph).
fn consumer_stats(cg: &CGraph, samples: &[Vec<f32>]) -> Result<graph::Compensation> {
    let (model, map) = f32_probe_model(cg)?;
    let mut sess = strix_runtime::Session::new(&model);
    let mut comp = graph::Compensation::default();
    for x in samples {
        sess.input_mut(0)?.copy_from_slice(x);
        sess.run()?;
        comp.accumulate(cg, |v| match map[v].and_then(|t| sess.tensor(t)) {
            Some(strix_runtime::TensorData::F32(d)) => Some(d.to_vec()),
            _ => None,
        });
    }
    Ok(comp)
}

/// Per-channel mean |activation| of each group's producers on `samples`
/// (normalized per producer and summed, like the weight norms).
fn activation_importance(
    cg: &CGraph,
    groups: &[Group],
    samples: &[Vec<f32>],
) -> Result<Vec<Vec<f64>>> {
    let (model, map) = f32_probe_model(cg)?;
    let mut sess = strix_runtime::Session::new(&model);
    let mut sums: Vec<Vec<Vec<f64>>> = groups
        .iter()
        .map(|g| vec![vec![0f64; g.channels]; g.producers.len()])
        .collect();
    for x in samples {
        sess.input_mut(0)?.copy_from_slice(x);
        sess.run()?;
        for (gi, gr) in groups.iter().enumerate() {
            for (pi, &ni) in gr.producers.iter().enumerate() {
                let v = cg.nodes[ni].output;
                let shape = &cg.values[v].shape;
                let t = map[v].ok_or_else(|| anyhow!("producer output not lowered"))?;
                let Some(strix_runtime::TensorData::F32(d)) = sess.tensor(t) else {
                    bail!("producer output '{}' is not readable", cg.values[v].name);
                };
                let axis = graph::chan_axis_of_producer(cg, ni);
                let inner: usize = shape[axis + 1..].iter().product();
                let c = shape[axis];
                for (i, &val) in d.iter().enumerate() {
                    sums[gi][pi][(i / inner) % c] += val.abs() as f64;
                }
            }
        }
    }
    Ok(sums
        .iter()
        .map(|per| {
            let mut acc = vec![0f64; per[0].len()];
            for p in per {
                graph::add_normalized(&mut acc, p);
            }
            acc
        })
        .collect())
}

/// The result of a pruning run: the chosen graph and everything the report shows.
pub struct Outcome {
    pub graph: CGraph,
    /// The pruned int8 model (calibrated on the calibration part).
    pub model: Model,
    pub keep_f32: HashSet<usize>,
    pub report: report::Report,
}

fn bar(len: u64, msg: &str) -> indicatif::ProgressBar {
    crate::bar(len, msg)
}

/// Searches per-group pruning ratios for `cg` within `opts.budget`.
/// `samples` are preprocessed inputs (at least 2: one is held back).
pub fn search(
    cg: &CGraph,
    samples: &[Vec<f32>],
    method: Method,
    meta: &ModelMeta,
    opts: &Options,
) -> Result<Outcome> {
    let t0 = std::time::Instant::now();
    let classify = matches!(meta.decoder, Decoder::Classify { .. });
    let detect = matches!(
        meta.decoder,
        Decoder::Fastestdet { .. } | Decoder::Ultraface { .. }
    );
    if opts.budget.max_top1_disagreement.is_some() && !classify {
        bail!("--prune-budget top1= needs a classifier (the model's decoder is not 'classify')");
    }
    if opts.budget.min_map50.is_some() && !detect {
        bail!("--prune-budget map50= needs a detector decoder (fastestdet or ultraface)");
    }
    if samples.len() < 2 {
        bail!(
            "--prune needs at least 2 samples (one is held back), got {}",
            samples.len()
        );
    }
    if opts.ratios.iter().any(|r| !(0.0..1.0).contains(r)) || opts.ratios.is_empty() {
        bail!("pruning ratios must be within [0, 1)");
    }
    // Split: every k-th sample is held back.
    let n = samples.len();
    let held_n = ((n as f64 * opts.holdout).round() as usize).clamp(1, n - 1);
    let step = n as f64 / held_n as f64;
    let held: Vec<usize> = (0..held_n)
        .map(|i| ((i as f64 + 1.0) * step).ceil() as usize - 1)
        .map(|i| i.min(n - 1))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let cal: Vec<usize> = (0..n).filter(|i| !held.contains(i)).collect();
    // Statistics come from an evenly strided subset of the calibration part
    // (sample lists are often sorted by class).
    let stride = cal.len().div_ceil(opts.max_calib_stats.max(1)).max(1);
    let stats_idx: Vec<usize> = cal.iter().copied().step_by(stride).collect();
    let stats_samples: Vec<Vec<Vec<f32>>> = stats_idx
        .iter()
        .map(|&i| vec![samples[i].clone()])
        .collect();
    let mut ratios = opts.ratios.clone();
    ratios.sort_by(f32::total_cmp);
    ratios.dedup();

    // References.
    let fp32 = run_all(&build_f32(cg, meta)?, samples)?;
    let mut keep_f32: HashSet<usize> = HashSet::new();
    let mut f16 = false;
    let int8_0 = build_int8(
        cg,
        &stats_samples,
        method,
        &keep_f32,
        f16,
        opts.passes.equalize,
        meta,
    )?;
    let mut reference = run_all(&int8_0, samples)?;
    let mut int8_vs_fp32 = metrics(&meta.decoder, &reference, &fp32, &cal)?;
    vs_fp32(
        &mut int8_vs_fp32,
        &meta.decoder,
        &reference,
        &fp32,
        &fp32,
        &cal,
    )?;
    let mut mixed_vs_fp32 = int8_vs_fp32.clone();
    if opts.mixed_precision && !opts.budget.within(&int8_vs_fp32) {
        let base = (int8_vs_fp32.clone(), reference);
        let (ks, half, m, outs) = choose_f32_layers(
            cg,
            samples,
            &cal,
            &stats_samples,
            method,
            meta,
            opts,
            &fp32,
            base,
        )?;
        keep_f32 = ks;
        f16 = half;
        mixed_vs_fp32 = m;
        reference = outs;
    }

    let groups = graph::find_groups(cg);
    // Input statistics of every conv/gemm: the refit, OBS ranking and
    // second-order block choice all read them.
    // All of the calibration part (up to MAX_GRAM_SAMPLES): the refits fit
    // many weights each, and fitted on a few samples they do not generalize
    // to the held-back part.
    let gstride = cal.len().div_ceil(MAX_GRAM_SAMPLES).max(1);
    let stats_x: Vec<Vec<f32>> = cal
        .iter()
        .step_by(gstride)
        .map(|&i| samples[i].clone())
        .collect();
    let gram = if opts.refit || opts.importance == Importance::Obs || opts.block > 0.0 {
        Some(consumer_stats(cg, &stats_x)?)
    } else {
        None
    };
    let comp = gram.as_ref().filter(|_| opts.refit);
    let cal_x: Vec<Vec<f32>> = cal.iter().map(|&i| samples[i].clone()).collect();
    let importance: Vec<Vec<f64>> = match opts.importance {
        Importance::L1 => groups
            .iter()
            .map(|g| graph::weight_importance(cg, g, 1))
            .collect(),
        Importance::L2 => groups
            .iter()
            .map(|g| graph::weight_importance(cg, g, 2))
            .collect(),
        Importance::Activation => activation_importance(cg, &groups, &cal_x)?,
        Importance::Obs => {
            let gm = gram.as_ref().expect("computed for Obs");
            (0..groups.len())
                .map(|gi| {
                    obs::obs_importance(cg, &groups, gi, gm)
                        .unwrap_or_else(|| graph::weight_importance(cg, &groups[gi], 1))
                })
                .collect()
        }
    };
    // Block-sparsity units: every ungrouped conv with constant weights long
    // enough to hold two blocks, after the channel groups in `state`.
    let bratios = block_ratios(opts.block);
    let block_nodes: Vec<usize> = if bratios.is_empty() {
        vec![]
    } else {
        (0..cg.nodes.len())
            .filter(|&ni| {
                // Ungrouped convs with at least two blocks per row.
                crate::ops::const_layer(cg, &cg.nodes[ni]).is_some_and(|l| {
                    l.groups == 1 && !l.chan_last && l.reduction() >= 2 * graph::SPARSE_BLOCK.1
                })
            })
            .collect()
    };
    let ng = groups.len();
    let nu = ng + block_nodes.len();
    let unit_ratios = |u: usize| -> &[f32] {
        if u < ng {
            &ratios
        } else {
            &bratios
        }
    };
    let keep_for = |gi: usize, ri: Option<usize>| -> Vec<usize> {
        let c = groups[gi].channels;
        let k = match ri {
            None => c,
            Some(r) => ((c as f32 * (1.0 - ratios[r])).round() as usize).clamp(1, c),
        };
        graph::keep_top(&importance[gi], k)
    };
    let make = |state: &[Option<usize>]| -> CGraph {
        let mut g = cg.clone();
        let keep: Vec<Vec<usize>> = (0..ng).map(|gi| keep_for(gi, state[gi])).collect();
        let consumers = graph::apply(&mut g, &groups, &keep, comp);
        // Channel surgery keeps node indices, so block units still name their conv.
        let per_node: std::collections::HashMap<usize, f32> = block_nodes
            .iter()
            .enumerate()
            .filter_map(|(bi, &ni)| state[ng + bi].map(|r| (ni, bratios[r])))
            .collect();
        if !per_node.is_empty() {
            graph::zero_blocks(
                &mut g,
                |ni| per_node.get(&ni).copied().unwrap_or(0.0),
                |ni, bias| {
                    let keep = consumers.get(&ni).map(|k| k.as_slice());
                    gram.as_ref()?.hessian(ni, keep, bias)
                },
            );
        }
        g
    };
    let measure = |state: &[Option<usize>], idx: &[usize]| -> Result<(Metrics, CGraph)> {
        let g = make(state);
        let m = build_int8(
            &g,
            &stats_samples,
            method,
            &keep_f32,
            f16,
            opts.passes.equalize,
            meta,
        )?;
        let outs = run_all_idx(&m, samples, idx)?;
        let mut met = metrics(&meta.decoder, &outs, &reference, idx)?;
        vs_fp32(&mut met, &meta.decoder, &outs, &reference, &fp32, idx)?;
        Ok((met, g))
    };

    // Sensitivity of each group alone.
    // Gains are in estimated cost after lowering (sparse convs skip their
    // zero blocks; see Options::cost_per_element).
    let none: Vec<Option<usize>> = vec![None; nu];
    let base_cost = graph::effective_cost(cg, opts.cost_per_element);
    let n_trials: usize = (0..nu).map(|u| unit_ratios(u).len()).sum();
    let pb = bar(n_trials as u64, "sensitivity");
    let mut sens: Vec<Vec<Metrics>> = vec![];
    let mut gain: Vec<Vec<u64>> = vec![];
    for gi in 0..nu {
        let (mut row, mut grow) = (vec![], vec![]);
        for ri in 0..unit_ratios(gi).len() {
            let mut st = none.clone();
            st[gi] = Some(ri);
            let (m, g) = measure(&st, &cal)?;
            grow.push(base_cost.saturating_sub(graph::effective_cost(&g, opts.cost_per_element)));
            row.push(m);
            pb.inc(1);
        }
        sens.push(row);
        gain.push(grow);
    }
    pb.finish_and_clear();
    let loss_of = |gi: usize, ri: Option<usize>| ri.map_or(0.0, |r| opts.budget.loss(&sens[gi][r]));

    // Greedy search.
    let mut state = none.clone();
    // Next ratio to try per group. A failed step does not freeze the group:
    // measured metrics are noisy (a near-tie sample flips either way), so a
    // larger ratio may still pass. Ratios that break the budget on their own
    // are never tried in combination.
    let mut next_try = vec![0usize; nu];
    let mut accepted: Vec<(usize, Option<usize>)> = vec![];
    let mut steps = vec![];
    let pb = bar(n_trials as u64, "search");
    loop {
        let mut best: Option<(f64, usize, usize)> = None;
        for gi in 0..nu {
            let from = next_try[gi].max(state[gi].map_or(0, |r| r + 1));
            let Some(next) =
                (from..unit_ratios(gi).len()).find(|&r| opts.budget.within(&sens[gi][r]))
            else {
                continue;
            };
            let dg = gain[gi][next].saturating_sub(state[gi].map_or(0, |r| gain[gi][r]));
            let dl = (loss_of(gi, Some(next)) - loss_of(gi, state[gi])).max(0.0);
            let score = dg as f64 / (dl + 1e-4);
            if best.is_none_or(|b| score > b.0) {
                best = Some((score, gi, next));
            }
        }
        let Some((_, gi, next)) = best else { break };
        let prev = state[gi];
        state[gi] = Some(next);
        let (m, g) = measure(&state, &cal)?;
        let ok = opts.budget.within(&m);
        steps.push(report::Step {
            group: gi,
            ratio: unit_ratios(gi)[next],
            macs: graph::effective_macs(&g),
            metric: m,
            accepted: ok,
            phase: "search".into(),
        });
        next_try[gi] = next + 1;
        if ok {
            accepted.push((gi, prev));
        } else {
            state[gi] = prev;
        }
        pb.inc(1);
    }
    pb.finish_and_clear();

    // Held-back check, backing off the last accepted steps until it passes.
    let (mut held_m, mut final_g) = measure(&state, &held)?;
    while !opts.budget.within(&held_m) {
        let Some((gi, prev)) = accepted.pop() else {
            break;
        };
        state[gi] = prev;
        (held_m, final_g) = measure(&state, &held)?;
        steps.push(report::Step {
            group: gi,
            ratio: prev.map_or(0.0, |r| unit_ratios(gi)[r]),
            macs: graph::effective_macs(&final_g),
            metric: held_m.clone(),
            accepted: opts.budget.within(&held_m),
            phase: "back-off".into(),
        });
    }
    let (cal_m, _) = measure(&state, &cal)?;
    let final_model = build_int8(
        &final_g,
        &stats_samples,
        method,
        &keep_f32,
        f16,
        opts.passes.equalize,
        meta,
    )?;
    let final_outs = run_all(&final_model, samples)?;
    let mut vs_fp32_held = metrics(&meta.decoder, &final_outs, &fp32, &held)?;
    vs_fp32(
        &mut vs_fp32_held,
        &meta.decoder,
        &final_outs,
        &fp32,
        &fp32,
        &held,
    )?;
    let mut unpruned_vs_fp32_held = metrics(&meta.decoder, &reference, &fp32, &held)?;
    vs_fp32(
        &mut unpruned_vs_fp32_held,
        &meta.decoder,
        &reference,
        &fp32,
        &fp32,
        &held,
    )?;

    // Predicted metric: single-group losses added (per metric).
    let mut pred = Metrics {
        cosine: 1.0,
        top1_agreement: classify.then_some(1.0),
        map50: detect.then_some(1.0),
        top1_drop_vs_fp32: classify.then_some(0.0),
        map50_rel_vs_fp32: detect.then_some(1.0),
    };
    for gi in 0..nu {
        if let Some(r) = state[gi] {
            let s = &sens[gi][r];
            pred.cosine -= 1.0 - s.cosine;
            if let (Some(p), Some(a)) = (pred.top1_agreement.as_mut(), s.top1_agreement) {
                *p -= 1.0 - a;
            }
            if let (Some(p), Some(a)) = (pred.map50.as_mut(), s.map50) {
                *p -= 1.0 - a;
            }
            if let (Some(p), Some(a)) = (pred.map50_rel_vs_fp32.as_mut(), s.map50_rel_vs_fp32) {
                *p -= 1.0 - a;
            }
            if let (Some(p), Some(d)) = (pred.top1_drop_vs_fp32.as_mut(), s.top1_drop_vs_fp32) {
                *p += d;
            }
        }
    }
    let within = opts.budget.within(&held_m);
    let rep = report::Report::build(report::Inputs {
        before: cg,
        after: &final_g,
        groups: &groups,
        ratios: &ratios,
        state: &state[..ng],
        sens: &sens[..ng],
        blocks: &block_nodes
            .iter()
            .enumerate()
            .map(|(bi, &ni)| report::BlockUnit {
                layer: cg.nodes[ni].name.clone(),
                ratio: state[ng + bi].map_or(0.0, |r| bratios[r]),
                sensitivity: sens[ng + bi].clone(),
            })
            .collect::<Vec<_>>(),
        block_ratios: &bratios,
        steps,
        budget: opts.budget.clone(),
        importance: opts.importance,
        block: opts.block,
        predicted: pred,
        measured_calib: cal_m,
        measured_held: held_m,
        held_within_budget: within,
        int8_vs_fp32,
        mixed_vs_fp32,
        pruned_vs_fp32_held: vs_fp32_held,
        unpruned_vs_fp32_held,
        keep_f32: &keep_f32,
        f16,
        calib_samples: cal.len(),
        held_samples: held.len(),
        seconds: t0.elapsed().as_secs_f64(),
    });
    Ok(Outcome {
        graph: final_g,
        model: final_model,
        keep_f32,
        report: rep,
    })
}

/// Outputs of `m` on the samples `idx` (other entries left empty).
fn run_all_idx(m: &Model, samples: &[Vec<f32>], idx: &[usize]) -> Result<Vec<Outs>> {
    let mut out = vec![vec![]; samples.len()];
    for &i in idx {
        out[i] = crate::run_values(m, &samples[i])?;
    }
    Ok(out)
}

/// Mixed precision: keeps conv/gemm layers in f32, worst per-layer int8
/// error first, until the int8 model meets the budget against fp32 on the
/// calibration part. If a quarter of the layers in f32 still miss it, the
/// model stays all-int8 (f32 layers that do not reach the budget only cost
/// latency) and the report shows the unmet int8-vs-fp32 metric.
#[allow(clippy::too_many_arguments)]
fn choose_f32_layers(
    cg: &CGraph,
    samples: &[Vec<f32>],
    cal: &[usize],
    stats_samples: &[Vec<Vec<f32>>],
    method: Method,
    meta: &ModelMeta,
    opts: &Options,
    fp32: &[Outs],
    base: (Metrics, Vec<Outs>),
) -> Result<(HashSet<usize>, bool, Metrics, Vec<Outs>)> {
    // Per-layer error on the first calibration sample ranks the layers.
    let mut eq = cg.clone();
    crate::passes::run_graph_passes(&mut eq, &int8_passes(opts.passes.equalize))?;
    let stats = crate::calib::calibrate(&eq, stats_samples, method, || {})?;
    let lowered = crate::lower::lower_int8(&eq, &stats, method, &Default::default())?;
    let rows = crate::report::layer_errors(
        &eq,
        &lowered.builder,
        &lowered.value_tensor,
        &samples[cal[0]],
    )?;
    let mut ranked: Vec<(f64, usize)> = vec![];
    for (ni, n) in cg.nodes.iter().enumerate() {
        if crate::ops::layer(cg, n).is_none() {
            continue;
        }
        if let Some(r) = rows.iter().find(|r| r.0 == n.name) {
            ranked.push((1.0 - r.2, ni));
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let cap = (ranked.len() / 4).max(1);
    let mut keep = HashSet::new();
    // f32 layers cost latency: they are kept only if they make the model
    // meet the budget; otherwise the model stays all-int8.
    let mut best = (HashSet::new(), false, base.0, base.1);
    let pb = bar(cap as u64 + 1, "precision");
    let measure = |keep: &HashSet<usize>, f16: bool| -> Result<(Metrics, Vec<Outs>)> {
        let m = build_int8(
            cg,
            stats_samples,
            method,
            keep,
            f16,
            opts.passes.equalize,
            meta,
        )?;
        let outs = run_all(&m, samples)?;
        let mut met = metrics(&meta.decoder, &outs, fp32, cal)?;
        vs_fp32(&mut met, &meta.decoder, &outs, fp32, fp32, cal)?;
        Ok((met, outs))
    };
    for &(_, ni) in ranked.iter().take(cap) {
        keep.insert(ni);
        let (met, outs) = measure(&keep, false)?;
        pb.inc(1);
        if opts.budget.within(&met) {
            best = (keep.clone(), false, met, outs);
            // The same layers with f16 weights: half the bytes, the same
            // f32 arithmetic; kept when it still meets the budget.
            if opts.f16 {
                let (met, outs) = measure(&keep, true)?;
                if opts.budget.within(&met) {
                    best = (keep.clone(), true, met, outs);
                }
            }
            break;
        }
    }
    pb.finish_and_clear();
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map50_budget_is_relative_to_the_unpruned_model_against_fp32() {
        let b = Budget::parse(&["map50=0.95".to_string()]).unwrap();
        let mut m = Metrics {
            cosine: 0.9,
            map50: Some(0.80), // vs the unpruned int8 boxes: not what counts
            map50_rel_vs_fp32: Some(0.96),
            ..Default::default()
        };
        assert!(b.within(&m));
        m.map50_rel_vs_fp32 = Some(0.94);
        assert!(!b.within(&m));
        m.map50_rel_vs_fp32 = None;
        assert!(!b.within(&m), "a detector budget needs the metric");
        let t = Budget::parse(&["top1=0.01".to_string()]).unwrap();
        let d = |x| Metrics {
            top1_drop_vs_fp32: Some(x),
            ..Default::default()
        };
        assert!(t.within(&d(0.01)) && !t.within(&d(0.011)));
        assert!(Budget::parse(&["map50=1.5".to_string()]).is_err());
        assert!(Budget::parse(&["iou=0.5".to_string()]).is_err());
    }

    #[test]
    fn cost_counts_output_elements() {
        // One 1x1 conv 4 -> 6 channels on 3x3: 216 MACs, 54 output elements.
        let mut g = CGraph::default();
        let x = g.add_value("x", vec![1, 4, 3, 3], None);
        g.inputs.push(x);
        let w = g.add_value(
            "w",
            vec![6, 4, 1, 1],
            Some(crate::ir::HostTensor::f32(vec![6, 4, 1, 1], vec![0.5; 24])),
        );
        let b = g.add_value(
            "b",
            vec![6],
            Some(crate::ir::HostTensor::f32(vec![6], vec![0.0; 6])),
        );
        let y = g.add_value("y", vec![1, 6, 3, 3], None);
        let geom = strix_kernels::reference::ConvGeometry {
            in_c: 4,
            in_h: 3,
            in_w: 3,
            out_c: 6,
            out_h: 3,
            out_w: 3,
            kh: 1,
            kw: 1,
            stride_h: 1,
            stride_w: 1,
            dil_h: 1,
            dil_w: 1,
            pad_top: 0,
            pad_left: 0,
            groups: 1,
        };
        g.nodes.push(crate::ir::CNode {
            name: "c".into(),
            op: crate::ir::COp::Conv {
                geom,
                act: crate::ir::Act::NONE,
            },
            inputs: vec![x, w, b],
            output: y,
        });
        g.outputs.push(y);
        assert_eq!(graph::effective_macs(&g), 216);
        assert_eq!(graph::effective_cost(&g, 0), 216);
        assert_eq!(
            graph::effective_cost(&g, COST_PER_ELEMENT),
            216 + 54 * COST_PER_ELEMENT
        );
    }
}

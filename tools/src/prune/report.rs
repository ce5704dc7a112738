//! The pruning report: JSON (serde) and a self-contained HTML page with
//! inline SVG charts (no scripts, fonts or other external resources).

use super::graph::{self, Group};
use super::{Budget, Importance, Metrics};
use crate::ir::CGraph;
use std::collections::HashSet;
use std::fmt::Write as _;

/// One step of the search (or of the held-back back-off).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Step {
    pub group: usize,
    pub ratio: f32,
    pub macs: u64,
    pub metric: Metrics,
    pub accepted: bool,
    pub phase: String,
}

/// One conv/gemm layer before and after.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Layer {
    pub name: String,
    pub op: &'static str,
    /// Group whose output channels this layer produces (if prunable).
    pub group: Option<usize>,
    /// Fraction of output channels removed.
    pub ratio: f32,
    pub out_channels_before: usize,
    pub out_channels_after: usize,
    pub macs_before: u64,
    pub macs_after: u64,
    /// Stored weight bytes (1 per int8 weight, 4 per f32 weight).
    pub weight_bytes_before: usize,
    pub weight_bytes_after: usize,
    pub precision: &'static str,
}

/// A prunable group and its measured sensitivity.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GroupReport {
    pub producers: Vec<String>,
    pub channels: usize,
    pub kept: usize,
    pub ratio: f32,
    /// Metric (vs the unpruned int8 model, calibration part) with only this
    /// group pruned at each of `ratios`.
    pub sensitivity: Vec<Metrics>,
}

/// A conv as a block-sparsity search unit.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BlockUnit {
    pub layer: String,
    /// Chosen fraction of zeroed blocks (0 = dense).
    pub ratio: f32,
    /// Metric (vs the unpruned int8 model, calibration part) with only this
    /// layer's blocks zeroed at each of `block_ratios`.
    pub sensitivity: Vec<Metrics>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub budget: Budget,
    pub importance: Importance,
    pub block_sparsity: f32,
    pub sparse_block: (usize, usize),
    pub ratios: Vec<f32>,
    pub calib_samples: usize,
    pub held_samples: usize,
    pub macs_before: u64,
    pub macs_after: u64,
    pub weight_bytes_before: usize,
    pub weight_bytes_after: usize,
    /// Sum of the single-group metric losses (the search's model).
    pub predicted: Metrics,
    /// The pruned int8 model vs the unpruned int8 model.
    pub measured_calib: Metrics,
    pub measured_held: Metrics,
    pub held_within_budget: bool,
    /// Unpruned all-int8 vs fp32 (calibration part), and after mixed precision.
    pub int8_vs_fp32: Metrics,
    pub mixed_vs_fp32: Metrics,
    /// Held-back part against fp32: the unpruned and the pruned int8 model.
    pub unpruned_vs_fp32_held: Metrics,
    pub pruned_vs_fp32_held: Metrics,
    /// Layers kept in f32 by mixed precision.
    pub f32_layers: Vec<String>,
    /// Their weights are stored as f16 (the arithmetic stays f32).
    pub f32_layers_f16_weights: bool,
    pub layers: Vec<Layer>,
    pub groups: Vec<GroupReport>,
    /// Block ratios tried per conv, and each conv's unit.
    pub block_ratios: Vec<f32>,
    pub block_layers: Vec<BlockUnit>,
    /// Search steps; `group >= groups.len()` is block unit
    /// `group - groups.len()`.
    pub steps: Vec<Step>,
    pub seconds: f64,
}

/// Everything [`Report::build`] needs.
pub struct Inputs<'a> {
    pub before: &'a CGraph,
    pub after: &'a CGraph,
    pub groups: &'a [Group],
    pub ratios: &'a [f32],
    pub state: &'a [Option<usize>],
    pub sens: &'a [Vec<Metrics>],
    pub blocks: &'a [BlockUnit],
    pub block_ratios: &'a [f32],
    pub steps: Vec<Step>,
    pub budget: Budget,
    pub importance: Importance,
    pub block: f32,
    pub predicted: Metrics,
    pub measured_calib: Metrics,
    pub measured_held: Metrics,
    pub held_within_budget: bool,
    pub int8_vs_fp32: Metrics,
    pub mixed_vs_fp32: Metrics,
    pub pruned_vs_fp32_held: Metrics,
    pub unpruned_vs_fp32_held: Metrics,
    pub keep_f32: &'a HashSet<usize>,
    pub f16: bool,
    pub calib_samples: usize,
    pub held_samples: usize,
    pub seconds: f64,
}

fn out_channels(g: &CGraph, ni: usize) -> usize {
    crate::ops::layer(g, &g.nodes[ni]).map_or(0, |l| l.out)
}

impl Report {
    pub fn build(i: Inputs) -> Report {
        let mut layers = vec![];
        let group_of = |ni: usize| i.groups.iter().position(|g| g.producers.contains(&ni));
        for (ni, n) in i.before.nodes.iter().enumerate() {
            if crate::ops::layer(i.before, n).is_none() {
                continue;
            }
            let f32l = i.keep_f32.contains(&ni);
            let bpw = if f32l { 4 } else { 1 };
            let gi = group_of(ni);
            let (cb, ca) = (out_channels(i.before, ni), out_channels(i.after, ni));
            layers.push(Layer {
                name: n.name.clone(),
                op: n.op.name(),
                group: gi,
                ratio: 1.0 - ca as f32 / cb.max(1) as f32,
                out_channels_before: cb,
                out_channels_after: ca,
                macs_before: graph::node_effective_macs(i.before, ni),
                macs_after: graph::node_effective_macs(i.after, ni),
                weight_bytes_before: graph::weight_elems(i.before, ni) * bpw,
                weight_bytes_after: graph::weight_elems(i.after, ni) * bpw,
                precision: if f32l { "f32" } else { "int8" },
            });
        }
        let groups = i
            .groups
            .iter()
            .enumerate()
            .map(|(gi, g)| GroupReport {
                producers: g
                    .producers
                    .iter()
                    .map(|&p| i.before.nodes[p].name.clone())
                    .collect(),
                channels: g.channels,
                kept: out_channels(i.after, g.producers[0]),
                ratio: i.state[gi].map_or(0.0, |r| i.ratios[r]),
                sensitivity: i.sens[gi].clone(),
            })
            .collect();
        let mut f32_layers: Vec<String> = i
            .keep_f32
            .iter()
            .map(|&n| i.before.nodes[n].name.clone())
            .collect();
        f32_layers.sort();
        Report {
            budget: i.budget,
            importance: i.importance,
            block_sparsity: i.block,
            sparse_block: graph::SPARSE_BLOCK,
            ratios: i.ratios.to_vec(),
            calib_samples: i.calib_samples,
            held_samples: i.held_samples,
            macs_before: graph::effective_macs(i.before),
            macs_after: graph::effective_macs(i.after),
            weight_bytes_before: layers.iter().map(|l| l.weight_bytes_before).sum(),
            weight_bytes_after: layers.iter().map(|l| l.weight_bytes_after).sum(),
            predicted: i.predicted,
            measured_calib: i.measured_calib,
            measured_held: i.measured_held,
            held_within_budget: i.held_within_budget,
            int8_vs_fp32: i.int8_vs_fp32,
            mixed_vs_fp32: i.mixed_vs_fp32,
            unpruned_vs_fp32_held: i.unpruned_vs_fp32_held,
            pruned_vs_fp32_held: i.pruned_vs_fp32_held,
            f32_layers,
            f32_layers_f16_weights: i.f16 && !i.keep_f32.is_empty(),
            layers,
            groups,
            block_ratios: i.block_ratios.to_vec(),
            block_layers: i.blocks.to_vec(),
            steps: i.steps,
            seconds: i.seconds,
        }
    }

    /// Fraction of MACs removed.
    pub fn macs_reduction(&self) -> f64 {
        1.0 - self.macs_after as f64 / self.macs_before.max(1) as f64
    }

    /// One-paragraph summary for the terminal.
    pub fn summary(&self) -> String {
        format!(
            "pruned: MACs {} -> {} (-{:.1}%), weights {} -> {} bytes; held-back ({} samples) vs unpruned int8: {}{}{}",
            self.macs_before,
            self.macs_after,
            100.0 * self.macs_reduction(),
            self.weight_bytes_before,
            self.weight_bytes_after,
            self.held_samples,
            fmt_metrics(&self.measured_held),
            if self.held_within_budget { " (within budget)" } else { " (BUDGET NOT MET: nothing could be pruned safely)" },
            if self.f32_layers.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} layers kept f32{}",
                    self.f32_layers.len(),
                    if self.f32_layers_f16_weights { " with f16 weights" } else { "" }
                )
            }
        )
    }

    /// The self-contained HTML page.
    pub fn html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>strix prune report</title>\
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;font-size:13px}}\
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}td.l,th.l{{text-align:left}}\
.ok{{color:#080}}.bad{{color:#b00}}svg text{{font-size:11px}}</style></head><body>"
        );
        let _ = write!(h, "<h1>Pruning report</h1><p>{}</p>", esc(&self.summary()));
        let _ = write!(
            h,
            "<table><tr><th class=l>quantity</th><th>value</th></tr>\
<tr><td class=l>budget</td><td>{}</td></tr>\
<tr><td class=l>importance</td><td>{:?}</td></tr>\
<tr><td class=l>block sparsity ({}x{} blocks)</td><td>{}</td></tr>\
<tr><td class=l>samples (calibration / held back)</td><td>{} / {}</td></tr>\
<tr><td class=l>MACs before / after</td><td>{} / {} (-{:.1}%)</td></tr>\
<tr><td class=l>weight bytes before / after</td><td>{} / {}</td></tr>\
<tr><td class=l>predicted (sum of single-group losses)</td><td>{}</td></tr>\
<tr><td class=l>measured, calibration part</td><td>{}</td></tr>\
<tr><td class=l>measured, held back</td><td class={}>{}</td></tr>\
<tr><td class=l>unpruned int8 vs fp32</td><td>{}</td></tr>\
<tr><td class=l>after mixed precision vs fp32</td><td>{}</td></tr>\
<tr><td class=l>held back vs fp32: unpruned / pruned</td><td>{} / {}</td></tr>\
<tr><td class=l>f32 layers (mixed precision)</td><td>{}</td></tr>\
<tr><td class=l>search time</td><td>{:.1} s</td></tr></table>",
            esc(&serde_json::to_string(&self.budget).unwrap_or_default()),
            self.importance,
            self.sparse_block.0,
            self.sparse_block.1,
            self.block_sparsity,
            self.calib_samples,
            self.held_samples,
            self.macs_before,
            self.macs_after,
            100.0 * self.macs_reduction(),
            self.weight_bytes_before,
            self.weight_bytes_after,
            fmt_metrics(&self.predicted),
            fmt_metrics(&self.measured_calib),
            if self.held_within_budget { "ok" } else { "bad" },
            fmt_metrics(&self.measured_held),
            fmt_metrics(&self.int8_vs_fp32),
            fmt_metrics(&self.mixed_vs_fp32),
            fmt_metrics(&self.unpruned_vs_fp32_held),
            fmt_metrics(&self.pruned_vs_fp32_held),
            if self.f32_layers.is_empty() {
                "none".to_string()
            } else {
                format!(
                    "{}{}",
                    esc(&self.f32_layers.join(", ")),
                    if self.f32_layers_f16_weights {
                        " (weights stored as f16)"
                    } else {
                        ""
                    }
                )
            },
            self.seconds
        );
        h.push_str("<h2>MACs per layer (grey before, blue after)</h2>");
        h.push_str(&self.macs_chart());
        h.push_str(
            "<h2>Sensitivity: loss of each group pruned alone (1 - cosine vs unpruned int8)</h2>",
        );
        h.push_str(&self.sensitivity_chart());
        h.push_str("<h2>Layers</h2><table><tr><th>#</th><th class=l>layer</th><th>op</th><th>group</th><th>precision</th><th>channels</th><th>ratio</th><th>MACs before</th><th>MACs after</th><th>bytes before</th><th>bytes after</th></tr>");
        for (i, l) in self.layers.iter().enumerate() {
            let _ = write!(
                h,
                "<tr><td>{i}</td><td class=l title=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} &rarr; {}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&l.name),
                esc(&short(&l.name)),
                l.op,
                l.group.map_or("-".to_string(), |g| g.to_string()),
                l.precision,
                l.out_channels_before,
                l.out_channels_after,
                l.ratio,
                l.macs_before,
                l.macs_after,
                l.weight_bytes_before,
                l.weight_bytes_after
            );
        }
        if !self.block_layers.is_empty() {
            let _ = write!(
                h,
                "</table><h2>Block sparsity per conv (tried at {:?}; steps name them as group {} + index)</h2><table><tr><th>#</th><th class=l>layer</th><th>zeroed blocks</th><th class=l>alone at each ratio (vs unpruned int8)</th></tr>",
                self.block_ratios,
                self.groups.len()
            );
            for (bi, b) in self.block_layers.iter().enumerate() {
                let sens: Vec<String> = b.sensitivity.iter().map(fmt_metrics).collect();
                let _ = write!(
                    h,
                    "<tr><td>{bi}</td><td class=l>{}</td><td>{:.2}</td><td class=l>{}</td></tr>",
                    esc(&short(&b.layer)),
                    b.ratio,
                    esc(&sens.join(" | "))
                );
            }
        }
        h.push_str("</table><h2>Search steps</h2><table><tr><th>#</th><th>phase</th><th>group</th><th>ratio</th><th>MACs</th><th class=l>metric vs unpruned int8</th><th>accepted</th></tr>");
        for (i, s) in self.steps.iter().enumerate() {
            let _ = write!(
                h,
                "<tr><td>{i}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td class=l>{}</td><td class={}>{}</td></tr>",
                s.phase,
                s.group,
                s.ratio,
                s.macs,
                fmt_metrics(&s.metric),
                if s.accepted { "ok" } else { "bad" },
                s.accepted
            );
        }
        h.push_str("</table></body></html>\n");
        h
    }

    fn macs_chart(&self) -> String {
        let n = self.layers.len().max(1);
        let (w, bar_h, left) = (760.0, 14.0, 60.0);
        let height = n as f64 * (bar_h + 4.0) + 20.0;
        let max = self
            .layers
            .iter()
            .map(|l| l.macs_before)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let mut s =
            format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\">");
        for (i, l) in self.layers.iter().enumerate() {
            let y = 10.0 + i as f64 * (bar_h + 4.0);
            let wb = (w - left - 10.0) * l.macs_before as f64 / max;
            let wa = (w - left - 10.0) * l.macs_after as f64 / max;
            let _ = write!(
                s,
                "<text x=\"0\" y=\"{:.1}\">#{i} {}</text><rect x=\"{left}\" y=\"{y:.1}\" width=\"{wb:.1}\" height=\"{bar_h}\" fill=\"#ccc\"><title>{}: {} MACs</title></rect><rect x=\"{left}\" y=\"{:.1}\" width=\"{wa:.1}\" height=\"{:.1}\" fill=\"#36c\"><title>after: {} MACs</title></rect>",
                y + 11.0,
                l.op,
                esc(&short(&l.name)),
                l.macs_before,
                y + 3.0,
                bar_h - 6.0,
                l.macs_after
            );
        }
        s.push_str("</svg>");
        s
    }

    fn sensitivity_chart(&self) -> String {
        let (w, h, left, bottom) = (760.0, 300.0, 50.0, 30.0);
        let max_loss = self
            .groups
            .iter()
            .flat_map(|g| g.sensitivity.iter().map(|m| 1.0 - m.cosine))
            .fold(1e-6f64, f64::max);
        let max_r = self.ratios.iter().copied().fold(0.01f32, f32::max) as f64;
        let x = |r: f64| left + (w - left - 10.0) * r / max_r;
        let y = |l: f64| h - bottom - (h - bottom - 10.0) * l / max_loss;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\"><line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#000\"/><line x1=\"{left}\" y1=\"10\" x2=\"{left}\" y2=\"{0}\" stroke=\"#000\"/><text x=\"{left}\" y=\"{2}\">ratio 0</text><text x=\"{3}\" y=\"{2}\">{max_r:.2}</text><text x=\"0\" y=\"15\">{max_loss:.2e}</text>",
            h - bottom,
            w - 10.0,
            h - 8.0,
            w - 40.0
        );
        let colors = [
            "#36c", "#c33", "#3a3", "#f90", "#939", "#099", "#663", "#c3c",
        ];
        for (gi, g) in self.groups.iter().enumerate() {
            let mut pts = format!("{:.1},{:.1}", x(0.0), y(0.0));
            for (r, m) in self.ratios.iter().zip(&g.sensitivity) {
                let _ = write!(pts, " {:.1},{:.1}", x(*r as f64), y(1.0 - m.cosine));
            }
            let _ = write!(
                s,
                "<polyline points=\"{pts}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"><title>group {gi} ({} ch, pruned {:.3})</title></polyline>",
                colors[gi % colors.len()],
                g.channels,
                g.ratio
            );
        }
        s.push_str("</svg>");
        s
    }
}

fn fmt_metrics(m: &Metrics) -> String {
    let mut s = format!("cosine {:.5}", m.cosine);
    if let Some(a) = m.top1_agreement {
        let _ = write!(s, ", top-1 agreement {:.2}%", 100.0 * a);
    }
    if let Some(d) = m.top1_drop_vs_fp32 {
        let _ = write!(s, ", top-1 disagreement with fp32 {:+.2} points", 100.0 * d);
    }
    if let Some(a) = m.map50 {
        let _ = write!(s, ", mAP@0.5 {a:.4}");
    }
    if let Some(a) = m.map50_rel_vs_fp32 {
        let _ = write!(s, ", mAP@0.5 vs fp32 relative to unpruned int8 {a:.4}");
    }
    s
}

/// The last path component of a TFLite-style fused name (they are long).
fn short(name: &str) -> String {
    let s = name.rsplit(';').next().unwrap_or(name);
    if s.chars().count() > 48 {
        s.chars().skip(s.chars().count() - 48).collect()
    } else {
        s.to_string()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

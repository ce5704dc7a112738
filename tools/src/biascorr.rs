//! Empirical bias correction (Nagel et al., "Data-Free Quantization Through
//! Weight Equalization and Bias Correction", 2019, section 4.2, measured on
//! the calibration samples instead of derived from BatchNorm statistics).
//!
//! Int8 rounding and clipping do not only add noise: a clipped range, a
//! weight rounded the same way across a channel and a requantization that
//! feeds its error to the next layer shift each output channel's mean. The
//! shifts compound through the network and reach the outputs as a
//! systematic offset (a detector's scores all a little too high, say), which
//! moves results across decision thresholds on data calibration never saw.
//!
//! For every conv and gemm with constant weights, in dependency order, this
//! pass runs the int8 graph (with the corrections made so far) on the
//! calibration samples, measures the mean of fp32-minus-int8 per output
//! channel and adds it to the f32 bias, which the lowering then quantizes
//! into the int32 bias. A layer is corrected after all the layers it reads
//! from, so it only cancels what is left. Layers at the same depth (parallel
//! branches) share one run.

use crate::calib::{Method, Stats};
use crate::ir::{CGraph, COp, HostTensor};
use crate::lower::{lower_f32, lower_int8, Int8Options};
use anyhow::Result;
use std::collections::HashMap;
use strix_runtime::graph::{Quant, Storage};
use strix_runtime::{Model, Session, TensorData};

/// Fewest values per channel (over all samples and positions) for a mean
/// worth correcting: a layer with few positions (a classifier's final gemm on
/// a handful of calibration clips) would be fitted to those samples.
pub const MIN_VALUES_PER_CHANNEL: usize = 1024;

/// At most this many calibration samples (evenly spaced) feed the
/// correction: the pass runs the int8 graph once per layer depth, so its cost
/// grows with samples times depth.
pub const MAX_SAMPLES: usize = 16;

/// The layers corrected: (node index, output channels, channel axis).
fn targets(cg: &CGraph) -> Vec<(usize, usize, usize)> {
    let uses = cg.use_counts();
    cg.nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let (ch, axis) = match &n.op {
                COp::Conv { geom, .. } => (geom.out_c, 1),
                COp::Gemm { n: nn, batch, .. } if *batch <= 1 => {
                    (*nn, cg.values[n.output].shape.len().checked_sub(1)?)
                }
                _ => return None,
            };
            let (&w, &b) = (n.inputs.get(1)?, n.inputs.get(2)?);
            let bk = cg.values[b].konst.as_ref()?;
            // A bias shared with another node is left alone (correcting it
            // for one would move the other).
            (cg.is_const(w) && bk.len() == ch && uses[b] == 1).then_some((i, ch, axis))
        })
        .collect()
}

/// Per-channel sums of `d` (shape `shape`, channels on `axis`).
fn channel_sums(d: &[f32], shape: &[usize], axis: usize, ch: usize, acc: &mut [f64]) -> usize {
    let inner: usize = shape[axis + 1..].iter().product();
    let mut count = 0;
    for (j, chunk) in d.chunks(inner.max(1)).enumerate() {
        let c = j % ch;
        acc[c] += chunk.iter().map(|&x| x as f64).sum::<f64>();
        if c == 0 {
            count += chunk.len();
        }
    }
    count
}

/// Returns `cg` with the biases of its convs and gemms corrected (see the
/// module documentation). Models with pinned quantization are returned
/// unchanged (their integer biases come from the file).
pub fn correct(
    cg: &CGraph,
    stats: &HashMap<usize, Stats>,
    method: Method,
    opts: &Int8Options,
    samples: &[Vec<Vec<f32>>],
) -> Result<CGraph> {
    let mut cg = cg.clone();
    if !cg.pinned.is_empty() || samples.is_empty() {
        return Ok(cg);
    }
    let step = samples.len().div_ceil(MAX_SAMPLES);
    let samples: Vec<&Vec<Vec<f32>>> = samples.iter().step_by(step).collect();
    let targets = targets(&cg);
    if targets.is_empty() {
        return Ok(cg);
    }
    // The graph is lowered once per level: choose the ranges once.
    let stats: HashMap<usize, Stats> = stats
        .iter()
        .map(|(&v, s)| (v, s.resolved(method)))
        .collect();
    let stats = &stats;
    // Depth of every value in corrected layers: a layer's depth is one more
    // than the deepest corrected layer it reads from.
    let mut depth = vec![0usize; cg.values.len()];
    let is_target: HashMap<usize, usize> =
        targets.iter().enumerate().map(|(k, t)| (t.0, k)).collect();
    let mut tdepth = vec![0usize; targets.len()];
    for (i, n) in cg.nodes.iter().enumerate() {
        let d = n.inputs.iter().map(|&v| depth[v]).max().unwrap_or(0);
        depth[n.output] = match is_target.get(&i) {
            Some(&k) => {
                tdepth[k] = d + 1;
                d + 1
            }
            None => d,
        };
    }
    // fp32 per-channel means of every corrected layer's output.
    let (mut fb, fmap) = lower_f32(&cg)?;
    strix_runtime::plan::plan(&mut fb.g, false);
    let fm = Model::new(Default::default(), fb.g, fb.c)?;
    let mut fs = Session::new(&fm);
    let mut want: Vec<Vec<f64>> = targets.iter().map(|t| vec![0.0; t.1]).collect();
    let mut counts = vec![0usize; targets.len()];
    for s in &samples {
        for (i, data) in s.iter().enumerate() {
            fs.input_mut(i)?.copy_from_slice(data);
        }
        fs.run()?;
        for (k, &(ni, ch, axis)) in targets.iter().enumerate() {
            let v = cg.nodes[ni].output;
            let Some(t) = fmap[v] else { continue };
            if let Some(TensorData::F32(d)) = fs.tensor(t) {
                counts[k] += channel_sums(d, &cg.values[v].shape, axis, ch, &mut want[k]);
            }
        }
    }
    drop(fs);
    let max_depth = tdepth.iter().copied().max().unwrap_or(0);
    for level in 1..=max_depth {
        let layer: Vec<usize> = (0..targets.len())
            .filter(|&k| tdepth[k] == level && counts[k] >= MIN_VALUES_PER_CHANNEL)
            .collect();
        if layer.is_empty() {
            continue;
        }
        let lowered = lower_int8(&cg, stats, method, opts)?;
        let mut qb = lowered.builder;
        // Only the nodes up to the last of this level's layers run: what
        // follows cannot change them.
        let wanted: Vec<usize> = layer
            .iter()
            .filter_map(|&k| lowered.value_tensor[cg.nodes[targets[k].0].output])
            .collect();
        let Some(last) = qb.g.nodes.iter().rposition(|n| wanted.contains(&n.output)) else {
            continue;
        };
        qb.g.nodes.truncate(last + 1);
        // Keep the nodes these outputs need; the activations of the others
        // get no place in the arena: shrink them so that they fit anywhere
        // (nothing reads them).
        let mut used = vec![false; qb.g.tensors.len()];
        for &t in qb.g.inputs.iter().chain(&wanted) {
            used[t] = true;
        }
        let mut keep = vec![false; qb.g.nodes.len()];
        for (i, n) in qb.g.nodes.iter().enumerate().rev() {
            if used[n.output] {
                keep[i] = true;
                for &t in &n.inputs {
                    used[t] = true;
                }
            }
        }
        let mut k = keep.iter();
        qb.g.nodes.retain(|_| *k.next().unwrap_or(&false));
        qb.g.outputs = wanted;
        for (t, u) in qb.g.tensors.iter_mut().zip(used) {
            if !u && matches!(t.storage, Storage::Arena { .. }) {
                t.shape = vec![1];
            }
        }
        strix_runtime::plan::plan(&mut qb.g, false);
        let qm = Model::new(Default::default(), qb.g, qb.c)?;
        let mut qs = Session::new(&qm);
        let mut got: Vec<Vec<f64>> = layer.iter().map(|&k| vec![0.0; targets[k].1]).collect();
        let mut buf = vec![];
        for s in &samples {
            for (i, data) in s.iter().enumerate() {
                qs.input_mut(i)?.copy_from_slice(data);
            }
            qs.run()?;
            for (j, &k) in layer.iter().enumerate() {
                let (ni, ch, axis) = targets[k];
                let v = cg.nodes[ni].output;
                let Some(t) = lowered.value_tensor[v] else {
                    continue;
                };
                let d: &[f32] = match qs.tensor(t) {
                    Some(TensorData::F32(d)) => d,
                    Some(TensorData::I8(d)) => {
                        let q = qm.graph.tensors[t].quant.unwrap_or(Quant {
                            scale: 1.0,
                            zero_point: 0,
                        });
                        buf.clear();
                        buf.extend(
                            d.iter()
                                .map(|&c| (c as i32 - q.zero_point) as f32 * q.scale),
                        );
                        &buf
                    }
                    _ => continue,
                };
                channel_sums(d, &cg.values[v].shape, axis, ch, &mut got[j]);
            }
        }
        for (j, &k) in layer.iter().enumerate() {
            let (ni, _, _) = targets[k];
            let bv = cg.nodes[ni].inputs[2];
            let n = counts[k] as f64;
            let konst = cg.values[bv]
                .konst
                .as_ref()
                .expect("targets have constant biases");
            let shape = konst.shape.clone();
            let mut b = konst.as_f32();
            for (c, x) in b.iter_mut().enumerate() {
                *x += ((want[k][c] - got[j][c]) / n) as f32;
            }
            cg.values[bv].konst = Some(HostTensor::f32(shape, b));
        }
    }
    Ok(cg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Act, CNode};
    use crate::lower::tests::noise;
    use strix_kernels::reference::ConvGeometry;

    /// `x [1,4,8,8] -> conv 3x3 (8) + relu -> conv 1x1 (8) -> y`.
    fn two_convs() -> CGraph {
        let mut g = CGraph::default();
        let x = g.add_value("x", vec![1, 4, 8, 8], None);
        g.inputs.push(x);
        let mut prev = x;
        for (i, (in_c, k)) in [(4, 3), (8, 1)].into_iter().enumerate() {
            let ws = vec![8, in_c, k, k];
            let w = g.add_value(
                &format!("w{i}"),
                ws.clone(),
                Some(HostTensor::f32(ws, noise(8 * in_c * k * k, i as u64 + 1))),
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
                    // A ReLU first: its clipped top tail is all on one side.
                    act: if i == 0 {
                        Act {
                            min: 0.0,
                            max: f32::INFINITY,
                        }
                    } else {
                        Act::NONE
                    },
                },
                inputs: vec![prev, w, b],
                output: o,
            });
            prev = o;
        }
        g.outputs.push(prev);
        g
    }

    /// Mean over samples of |per-channel mean of (f32 - int8)| at the output.
    fn output_bias(
        orig: &CGraph,
        q: &CGraph,
        stats: &HashMap<usize, Stats>,
        xs: &[Vec<Vec<f32>>],
    ) -> f64 {
        let run = |m: &Model, x: &[f32]| {
            let mut s = Session::new(m);
            s.input_mut(0).unwrap().copy_from_slice(x);
            s.run().unwrap();
            let mut out = vec![];
            s.output_f32(0, &mut out).unwrap();
            out
        };
        let mut fb = lower_f32(orig).unwrap().0;
        strix_runtime::plan::plan(&mut fb.g, true);
        let fm = Model::new(Default::default(), fb.g, fb.c).unwrap();
        let mut qb = lower_int8(q, stats, Method::Minmax, &Default::default())
            .unwrap()
            .builder;
        strix_runtime::plan::plan(&mut qb.g, true);
        let qm = Model::new(Default::default(), qb.g, qb.c).unwrap();
        let mut diff = [0f64; 8];
        for x in xs {
            let (f, q) = (run(&fm, &x[0]), run(&qm, &x[0]));
            for (i, (a, b)) in f.iter().zip(&q).enumerate() {
                diff[i / 64] += (a - b) as f64 / (64 * xs.len()) as f64;
            }
        }
        diff.iter().map(|d| d.abs()).sum::<f64>() / 8.0
    }

    /// Upper bounds clipped to 60% of what calibration saw make int8 biased
    /// (the clipped top tails are lost); the correction removes most of that
    /// bias on the calibration samples and on others, and leaves the
    /// weights alone.
    #[test]
    fn correction_removes_the_mean_error_of_clipped_ranges() {
        let g = two_convs();
        // 16 samples of 64 positions: enough values per channel to correct.
        let xs: Vec<Vec<Vec<f32>>> = (0..16).map(|s| vec![noise(256, 100 + s)]).collect();
        let held: Vec<Vec<Vec<f32>>> = (0..8).map(|s| vec![noise(256, 500 + s)]).collect();
        let mut stats = crate::calib::calibrate(&g, &xs, Method::Minmax, || {}).unwrap();
        for (v, s) in stats.iter_mut() {
            if !g.inputs.contains(v) {
                s.max *= 0.6;
            }
        }
        let fixed = correct(&g, &stats, Method::Minmax, &Default::default(), &xs).unwrap();
        let (before, after) = (
            output_bias(&g, &g, &stats, &xs),
            output_bias(&g, &fixed, &stats, &xs),
        );
        assert!(
            after < before * 0.3,
            "calibration samples: bias {before} -> {after}"
        );
        let (before, after) = (
            output_bias(&g, &g, &stats, &held),
            output_bias(&g, &fixed, &stats, &held),
        );
        assert!(
            after < before * 0.5,
            "other samples: bias {before} -> {after}"
        );
        for v in [1, 4] {
            assert_eq!(g.values[v].konst, fixed.values[v].konst, "weights changed");
        }
        assert_ne!(g.values[2].konst, fixed.values[2].konst, "bias unchanged");
    }

    /// Models whose quantization comes from the file keep their biases.
    #[test]
    fn pinned_models_are_left_alone() {
        let mut g = two_convs();
        let xs: Vec<Vec<Vec<f32>>> = (0..2).map(|s| vec![noise(256, 100 + s)]).collect();
        let stats = crate::calib::calibrate(&g, &xs, Method::Minmax, || {}).unwrap();
        g.pinned.act.insert(
            0,
            Quant {
                scale: 0.01,
                zero_point: 0,
            },
        );
        let fixed = correct(&g, &stats, Method::Minmax, &Default::default(), &xs).unwrap();
        assert_eq!(g.values[2].konst, fixed.values[2].konst);
    }
}

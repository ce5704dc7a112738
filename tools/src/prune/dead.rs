//! Dead channels: output channels whose weights are all zero, or within
//! [`DEAD_REL`] of it, as models pruned or weight-decayed in training ship
//! them (masks applied or weights decayed to ~1e-30, channels left in
//! place). Such a channel is constant whatever the input, so it is removed
//! structurally like `--prune` does, with its constant folded into the
//! consumers' biases: the model computes the same function with fewer
//! channels, and the consumers of the channel shrink too.
//!
//! Exactness is checked, not assumed. A candidate channel is removed only if
//! every conv/gemm that reads it sees the same value at every position on
//! two different inputs (so depthwise convs, pools and residual adds on the
//! way are covered by measurement), and a kxk consumer only if its window
//! never reads padding (where a constant channel would read zeros). The
//! whole rewrite is then compared with the graph as it arrived on those
//! inputs and undone if any output moved by more than 1e-4 of its range.

use super::graph::{self, Group};
use super::obs::consumers_of;
use crate::ir::{CGraph, COp, HostTensor};
use crate::ops::layer;
use anyhow::Result;
use std::collections::HashMap;

/// What [`remove_dead_channels`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeadReport {
    /// Channels removed, summed over groups.
    pub channels: usize,
    /// Producer layers that lost channels.
    pub layers: usize,
    pub macs_before: u64,
    pub macs_after: u64,
}

/// Largest weight of a channel, relative to its layer's largest, that still
/// counts as dead. Training with weight decay leaves pruned channels at
/// denormal levels rather than exact zeros (VWW: 1e-30 next to 1.0); a
/// channel a million times smaller than its layer's largest contributes far
/// less than one int8 step to its output.
pub const DEAD_REL: f32 = 1e-6;

/// Channels of `gr` whose weights are all within `DEAD_REL` of zero
/// (relative to the producer's largest weight) in every producer.
fn dead_weight_channels(g: &CGraph, gr: &Group) -> Vec<usize> {
    let mut dead = vec![true; gr.channels];
    for &ni in &gr.producers {
        let n = &g.nodes[ni];
        let Some(w) = g.values[n.inputs[1]].konst.as_ref() else {
            return vec![];
        };
        let v = w.as_f32();
        let lim = DEAD_REL * v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let per = v.len() / gr.channels.max(1);
        let chan_last = layer(g, n).is_none_or(|l| l.chan_last);
        for (c, d) in dead.iter_mut().enumerate() {
            let small = if chan_last {
                (0..per).all(|r| v[r * gr.channels + c].abs() <= lim)
            } else {
                v[c * per..(c + 1) * per].iter().all(|x| x.abs() <= lim)
            };
            *d &= small;
        }
    }
    (0..gr.channels).filter(|&c| dead[c]).collect()
}

/// Sets the weights of channels `chans` of every producer of `gr` to 0.
fn zero_channels(g: &mut CGraph, gr: &Group, chans: &[usize]) {
    for &ni in &gr.producers {
        let wv = g.nodes[ni].inputs[1];
        let Some(t) = g.values[wv].konst.clone() else {
            continue;
        };
        let mut v = t.as_f32();
        let per = v.len() / gr.channels.max(1);
        let chan_last = layer(g, &g.nodes[ni]).is_none_or(|l| l.chan_last);
        for &c in chans {
            if chan_last {
                (0..per).for_each(|r| v[r * gr.channels + c] = 0.0);
            } else {
                v[c * per..(c + 1) * per].fill(0.0);
            }
        }
        g.values[wv].konst = Some(HostTensor::f32(t.shape.clone(), v));
    }
}

/// Deterministic inputs in [-1, 1] for the graph's inputs.
fn probe_inputs(g: &CGraph, seed: u32) -> Vec<f32> {
    let n: usize = g.values[g.inputs[0]].shape.iter().product();
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

type Values = HashMap<usize, Vec<f32>>;

/// Runs the f32 graph (lowered once) on each of `xs`; returns, per input,
/// the values `want` and the outputs.
fn run(g: &CGraph, xs: [&[f32]; 2], want: &[usize]) -> Result<[(Values, Vec<Vec<f32>>); 2]> {
    let (model, map) = super::f32_probe_model(g)?;
    let mut sess = strix_runtime::Session::new(&model);
    let mut one = |x: &[f32]| -> Result<(Values, Vec<Vec<f32>>)> {
        sess.input_mut(0)?.copy_from_slice(x);
        sess.run()?;
        let read = |v: usize| match map[v].and_then(|t| sess.tensor(t)) {
            Some(strix_runtime::TensorData::F32(d)) => Some(d.to_vec()),
            _ => None,
        };
        let vals = want
            .iter()
            .filter_map(|&v| read(v).map(|d| (v, d)))
            .collect();
        let outs = g.outputs.iter().filter_map(|&v| read(v)).collect();
        Ok((vals, outs))
    };
    Ok([one(xs[0])?, one(xs[1])?])
}

/// The value of channel `c` of `v` (NCHW for convs, channel-last for gemms)
/// if it is the same at every position.
fn constant_channel(g: &CGraph, ni: usize, d: &[f32], c: usize) -> Option<f32> {
    let n = &g.nodes[ni];
    let shape = &g.values[n.inputs[0]].shape;
    let l = layer(g, n)?;
    let (chans, chan_last) = (l.inp, l.chan_last);
    let inner = if chan_last {
        1
    } else {
        shape[2..].iter().product::<usize>()
    };
    let positions = d.len() / chans.max(1);
    let at = |p: usize| {
        if chan_last {
            d[p * chans + c]
        } else {
            let (outer, i) = (p / inner.max(1), p % inner.max(1));
            d[(outer * chans + c) * inner + i]
        }
    };
    let k = at(0);
    (0..positions).all(|p| at(p) == k).then_some(k)
}

/// True when no output of conv `ni` reads padding.
fn reads_no_padding(g: &CGraph, ni: usize) -> bool {
    let n = &g.nodes[ni];
    let COp::Conv { geom, .. } = &n.op else {
        return true;
    };
    let s = &g.values[n.inputs[0]].shape;
    let span =
        |out: usize, stride: usize, k: usize, dil: usize| (out - 1) * stride + (k - 1) * dil + 1;
    geom.pad_top == 0
        && geom.pad_left == 0
        && span(geom.out_h, geom.stride_h, geom.kh, geom.dil_h) <= s[2]
        && span(geom.out_w, geom.stride_w, geom.kw, geom.dil_w) <= s[3]
}

/// Removes the dead channels of `cg` (see the module docs); returns what was
/// removed. Graphs with several inputs are left alone.
pub fn remove_dead_channels(target: &mut CGraph) -> Result<DeadReport> {
    let cg: &CGraph = target;
    let macs_before = graph::effective_macs(cg);
    let mut rep = DeadReport {
        macs_before,
        macs_after: macs_before,
        ..Default::default()
    };
    if cg.inputs.len() != 1 {
        return Ok(rep);
    }
    let groups = graph::find_groups(cg);
    let cands: Vec<Vec<usize>> = groups
        .iter()
        .map(|gr| dead_weight_channels(cg, gr))
        .collect();
    if cands.iter().all(|c| c.is_empty()) {
        return Ok(rep);
    }
    // The reference outputs come from the graph as it arrived; the analysis
    // runs on a copy whose dead channels are exactly zero.
    let original = cg.clone();
    let mut zeroed = cg.clone();
    for (gr, c) in groups.iter().zip(&cands) {
        zero_channels(&mut zeroed, gr, c);
    }
    let cg = &zeroed;
    let cons: Vec<Vec<(usize, usize)>> = (0..groups.len())
        .map(|gi| {
            if cands[gi].is_empty() {
                vec![]
            } else {
                consumers_of(cg, &groups, gi)
            }
        })
        .collect();
    let want: Vec<usize> = cons
        .iter()
        .flatten()
        .map(|&(ni, _)| cg.nodes[ni].inputs[0])
        .collect();
    let (x0, x1) = (probe_inputs(cg, 1), probe_inputs(cg, 2));
    let [(v0, _), (v1, _)] = run(cg, [&x0, &x1], &want)?;
    let [(_, out0), (_, out1)] = run(&original, [&x0, &x1], &[])?;
    // Per group: removable channels and, per consumer, bias additions.
    let mut keep: Vec<Vec<usize>> = groups.iter().map(|g| (0..g.channels).collect()).collect();
    let mut bias_add: HashMap<usize, Vec<f64>> = HashMap::new();
    for (gi, gr) in groups.iter().enumerate() {
        let mut dead = vec![];
        let mut group_adds: HashMap<usize, Vec<f64>> = HashMap::new();
        // A group cannot vanish: when every channel is dead, one stays.
        let skip = (cands[gi].len() == gr.channels) as usize;
        'chan: for &c in &cands[gi][skip.min(cands[gi].len())..] {
            if cons[gi].is_empty() {
                break;
            }
            let mut adds = vec![];
            for &(ni, off) in &cons[gi] {
                let x = cg.nodes[ni].inputs[0];
                let (Some(d0), Some(d1)) = (v0.get(&x), v1.get(&x)) else {
                    continue 'chan;
                };
                let (Some(k0), Some(k1)) = (
                    constant_channel(cg, ni, d0, off + c),
                    constant_channel(cg, ni, d1, off + c),
                ) else {
                    continue 'chan;
                };
                if k0 != k1 || !k0.is_finite() {
                    continue 'chan;
                }
                let n = &cg.nodes[ni];
                let has_bias = n.inputs.get(2).is_some_and(|&b| cg.is_const(b));
                if k0 != 0.0 && (!has_bias || !reads_no_padding(cg, ni)) {
                    continue 'chan;
                }
                let w = cg.values[n.inputs[1]].konst.as_ref().map(|t| t.as_f32());
                let Some(w) = w else { continue 'chan };
                // Contribution of the constant to each output.
                let Some(l) = layer(cg, n) else {
                    continue 'chan;
                };
                let add: Vec<f64> = (0..l.out)
                    .map(|o| {
                        let at = l.at(o, off + c, 0);
                        w[at..at + l.taps].iter().map(|&v| v as f64).sum::<f64>() * k0 as f64
                    })
                    .collect();
                adds.push((ni, add));
            }
            dead.push(c);
            for (ni, add) in adds {
                let e = group_adds.entry(ni).or_insert_with(|| vec![0.0; add.len()]);
                for (a, b) in e.iter_mut().zip(&add) {
                    *a += b;
                }
            }
        }
        for (ni, add) in group_adds {
            let e = bias_add.entry(ni).or_insert_with(|| vec![0.0; add.len()]);
            for (a, b) in e.iter_mut().zip(&add) {
                *a += b;
            }
        }
        if !dead.is_empty() {
            keep[gi].retain(|c| !dead.contains(c));
            rep.channels += dead.len();
            rep.layers += gr.producers.len();
        }
    }
    if rep.channels == 0 {
        return Ok(rep);
    }
    // Biases first, while every consumer still has all its output rows (a
    // consumer may itself lose dead output channels in the surgery).
    let mut g = cg.clone();
    for (ni, add) in &bias_add {
        let Some(&bv) = g.nodes[*ni].inputs.get(2) else {
            continue;
        };
        let Some(t) = g.values[bv].konst.clone() else {
            continue;
        };
        let nb: Vec<f32> = t
            .as_f32()
            .iter()
            .zip(add)
            .map(|(&b, &a)| (b as f64 + a) as f32)
            .collect();
        let name = format!("{}#dead", g.values[bv].name);
        let v = g.add_value(
            &name,
            t.shape.clone(),
            Some(HostTensor::f32(t.shape.clone(), nb)),
        );
        g.nodes[*ni].inputs[2] = v;
    }
    graph::apply(&mut g, &groups, &keep, None);
    // The rewrite must not change the function.
    let [(_, got0), (_, got1)] = run(&g, [&x0, &x1], &[])?;
    for (got, want) in [(&got0, &out0), (&got1, &out1)] {
        for (a, b) in got.iter().zip(want) {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            let diff = a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            if a.len() != b.len() || diff > 1e-4 * scale {
                return Ok(DeadReport {
                    macs_before,
                    macs_after: macs_before,
                    ..Default::default()
                });
            }
        }
    }
    rep.macs_after = graph::effective_macs(&g);
    *target = g;
    Ok(rep)
}

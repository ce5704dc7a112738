//! Cross-layer equalization (Nagel et al., "Data-Free Quantization", 2019).
//!
//! For two convolutions A -> B where A's output feeds only B, scaling A's
//! output channel c by 1/s_c and B's input channel c by s_c leaves the
//! function unchanged (ReLU is positively homogeneous). Choosing
//! `s_c = sqrt(r1_c / r2_c)` equalizes the weight ranges of both layers, which
//! also evens out the per-channel ranges of A's output: the per-tensor int8
//! quantization of that activation then wastes fewer levels. Depthwise-separable
//! networks (MobileNet, ShuffleNet, DS-CNN) benefit most.

use crate::ir::{CGraph, COp, HostTensor};

/// Equalizes every eligible conv pair; returns how many pairs were rescaled.
pub fn equalize(g: &mut CGraph) -> usize {
    let uses = g.use_counts();
    let prod = g.producer();
    let mut count = 0;
    for bi in 0..g.nodes.len() {
        let COp::Conv { geom: gb, .. } = g.nodes[bi].op else {
            continue;
        };
        if gb.groups != 1 {
            continue;
        }
        let x = g.nodes[bi].inputs[0];
        let Some(ai) = prod[x] else { continue };
        let COp::Conv { geom: ga, act } = g.nodes[ai].op else {
            continue;
        };
        // Only identity or ReLU between the two (positive scaling commutes).
        if uses[x] != 1
            || g.outputs.contains(&x)
            || act.max.is_finite()
            || !(act.min == 0.0 || act.min == f32::NEG_INFINITY)
        {
            continue;
        }
        let (wa_v, ba_v, wb_v) = (
            g.nodes[ai].inputs[1],
            g.nodes[ai].inputs[2],
            g.nodes[bi].inputs[1],
        );
        // Weight tensors shared with other nodes cannot be rescaled for one pair.
        if uses[wa_v] != 1 || uses[ba_v] != 1 || uses[wb_v] != 1 {
            continue;
        }
        let mut wa = g.values[wa_v].konst.as_ref().unwrap().as_f32();
        let mut ba = g.values[ba_v].konst.as_ref().unwrap().as_f32();
        let mut wb = g.values[wb_v].konst.as_ref().unwrap().as_f32();
        let c = ga.out_c;
        let per_a = wa.len() / c;
        let kb = gb.kh * gb.kw;
        for ch in 0..c {
            let r1 = wa[ch * per_a..(ch + 1) * per_a]
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()));
            let mut r2 = 0f32;
            for o in 0..gb.out_c {
                let base = (o * c + ch) * kb;
                r2 = wb[base..base + kb].iter().fold(r2, |m, v| m.max(v.abs()));
            }
            if r1 <= 0.0 || r2 <= 0.0 {
                continue;
            }
            let s = (r1 / r2).sqrt().clamp(1e-4, 1e4);
            wa[ch * per_a..(ch + 1) * per_a]
                .iter_mut()
                .for_each(|v| *v /= s);
            ba[ch] /= s;
            for o in 0..gb.out_c {
                let base = (o * c + ch) * kb;
                wb[base..base + kb].iter_mut().for_each(|v| *v *= s);
            }
        }
        let set = |g: &mut CGraph, v: usize, d: Vec<f32>| {
            let shape = g.values[v].shape.clone();
            g.values[v].konst = Some(HostTensor::f32(shape, d));
        };
        set(g, wa_v, wa);
        set(g, ba_v, ba);
        set(g, wb_v, wb);
        count += 1;
    }
    count
}

//! Memory planning: tensor lifetimes -> offsets in one arena per dtype
//! (greedy by size, as tflite-micro's GreedyMemoryPlanner).

use crate::graph::{DType, Graph, Storage};
use crate::ops::reshape::may_alias_input;

/// Assigns arena offsets to every activation of `g` and sets the arena sizes.
///
/// With `reuse == false` every activation gets its own region (calibration
/// reads every tensor after the run). Otherwise the outputs of ops that may
/// alias their input ([`may_alias_input`]: Reshape) share its buffer.
/// Offsets are aligned to 16 elements so SIMD kernels may use aligned loads.
pub fn plan(g: &mut Graph, reuse: bool) {
    let nt = g.tensors.len();
    // Buffer of each tensor: reshapes share their input's buffer.
    let mut buf: Vec<usize> = (0..nt).collect();
    for n in &g.nodes {
        if may_alias_input(&n.op) && reuse {
            let src = buf[n.inputs[0]];
            if matches!(g.tensors[n.inputs[0]].storage, Storage::Arena { .. }) {
                buf[n.output] = src;
            }
        }
    }
    let act: Vec<bool> = g
        .tensors
        .iter()
        .map(|t| matches!(t.storage, Storage::Arena { .. }))
        .collect();
    let is_act = |i: usize| act[i];
    let never = usize::MAX;
    let mut first = vec![never; nt];
    let mut last = vec![0usize; nt];
    let end = g.nodes.len() + 1;
    let touch = |b: usize, t: usize, first: &mut Vec<usize>, last: &mut Vec<usize>| {
        first[b] = first[b].min(t);
        last[b] = last[b].max(t);
    };
    for &i in &g.inputs {
        touch(buf[i], 0, &mut first, &mut last);
    }
    for (step, n) in g.nodes.iter().enumerate() {
        let t = step + 1;
        for &i in &n.inputs {
            if is_act(i) {
                touch(buf[i], t, &mut first, &mut last);
            }
        }
        touch(buf[n.output], t, &mut first, &mut last);
    }
    for &o in &g.outputs {
        touch(buf[o], end, &mut first, &mut last);
    }
    if !reuse {
        for b in 0..nt {
            if first[b] != never {
                first[b] = 0;
                last[b] = end;
            }
        }
    }
    let mut offsets = vec![0usize; nt];
    let mut sizes = [0usize; 2];
    for (slot, dt) in [DType::I8, DType::F32].into_iter().enumerate() {
        let mut bufs: Vec<usize> = (0..nt)
            .filter(|&b| buf[b] == b && first[b] != never && is_act(b) && g.tensors[b].dtype == dt)
            .collect();
        // Size of a buffer: the largest tensor aliased to it.
        let size_of = |b: usize| {
            (0..nt)
                .filter(|&t| buf[t] == b)
                .map(|t| g.tensors[t].len())
                .max()
                .unwrap_or(0)
        };
        let sizes_b: Vec<usize> = (0..nt)
            .map(|b| if bufs.contains(&b) { size_of(b) } else { 0 })
            .collect();
        bufs.sort_by(|&a, &b| sizes_b[b].cmp(&sizes_b[a]).then(first[a].cmp(&first[b])));
        let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new(); // (start, end, first, last)
        for &b in &bufs {
            let size = sizes_b[b].div_ceil(16) * 16;
            let mut conflicts: Vec<(usize, usize)> = placed
                .iter()
                .filter(|p| p.2 <= last[b] && first[b] <= p.3)
                .map(|p| (p.0, p.1))
                .collect();
            conflicts.sort();
            let mut off = 0;
            for (s, e) in conflicts {
                if off + size <= s {
                    break;
                }
                off = off.max(e);
            }
            placed.push((off, off + size, first[b], last[b]));
            offsets[b] = off;
            sizes[slot] = sizes[slot].max(off + size);
        }
    }
    for t in 0..nt {
        if is_act(t) {
            g.tensors[t].storage = Storage::Arena {
                offset: offsets[buf[t]],
            };
        }
    }
    g.arena_i8 = sizes[0];
    g.arena_f32 = sizes[1];
}

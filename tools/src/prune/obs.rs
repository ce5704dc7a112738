//! Pruning choices from second-order information: which channels to remove
//! and which weight blocks to zero, and how to compensate the weights that
//! stay, from the second moments `H = E[x x^T]` of each layer's input on
//! calibration data (the [`Compensation`] Gram matrices).
//!
//! For a linear layer `y = W x`, removing input `p` and updating the other
//! weights optimally raises the output error by `sum_o W[o,p]^2 / Hinv[p,p]`
//! (Optimal Brain Surgeon, Hassibi & Stork 1993). [`obs_importance`] uses
//! that cost to eliminate a group's channels one at a time (each step sees
//! the compensation of the previous ones), and [`sparse_blocks`] applies the
//! sequential column-by-column form of SparseGPT (Frantar & Alistarh 2023) to
//! 1x4 weight blocks. Both only see layers whose input Gram is a channel
//! Gram: 1x1 convs and gemms. Larger kernels are scored by the diagonal of
//! `H` alone (no cross-channel compensation), or fall back to magnitude.

use super::graph::{self, Compensation, Group};
use crate::ir::CGraph;
use std::collections::HashMap;

/// Dampening added to the diagonal, relative to its mean: keeps `H`
/// invertible when channels are dead or collinear (SparseGPT uses 1%).
const DAMP: f64 = 0.01;

/// Lower Cholesky factor `L` (row-major, `a = L L^T`) of the symmetric
/// positive-definite `n x n` matrix `a`; None when it is not positive
/// definite.
pub(crate) fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    for j in 0..n {
        let mut s = a[j * n + j];
        for k in 0..j {
            s -= l[j * n + k] * l[j * n + k];
        }
        if s <= 0.0 || !s.is_finite() {
            return None;
        }
        let d = s.sqrt();
        l[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = s / d;
        }
    }
    Some(l)
}

/// Inverse of the symmetric positive-definite `n x n` matrix `a`.
fn spd_inverse(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let l = cholesky(a, n)?;
    // Linv (lower), then a^-1 = Linv^T Linv.
    let mut li = vec![0f64; n * n];
    for j in 0..n {
        li[j * n + j] = 1.0 / l[j * n + j];
        for i in j + 1..n {
            let mut s = 0.0;
            for k in j..i {
                s -= l[i * n + k] * li[k * n + j];
            }
            li[i * n + j] = s / l[i * n + i];
        }
    }
    let mut inv = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = 0.0;
            for k in i..n {
                s += li[k * n + i] * li[k * n + j];
            }
            inv[i * n + j] = s;
            inv[j * n + i] = s;
        }
    }
    Some(inv)
}

/// `a + DAMP * mean(diag) * I`, in place.
fn damp(a: &mut [f64], n: usize) {
    let mean = (0..n).map(|i| a[i * n + i]).sum::<f64>() / n.max(1) as f64;
    let d = DAMP * mean.max(1e-12);
    for i in 0..n {
        a[i * n + i] += d;
    }
}

impl Compensation {
    /// The Gram matrix of node `ni`'s input restricted to the channels
    /// `keep` (unpruned numbering; None = all), with the constant-1 input
    /// last when `bias`: `(|keep| + bias) ^ 2`, row-major.
    pub fn hessian(&self, ni: usize, keep: Option<&[usize]>, bias: bool) -> Option<Vec<f64>> {
        let (c, gm) = self.gram.get(&ni)?;
        let m = c + 1;
        let mut idx: Vec<usize> = match keep {
            Some(k) => k.to_vec(),
            None => (0..*c).collect(),
        };
        if bias {
            idx.push(*c);
        }
        let n = idx.len();
        let mut h = vec![0f64; n * n];
        for (i, &p) in idx.iter().enumerate() {
            for (j, &q) in idx.iter().enumerate() {
                h[i * n + j] = gm[p * m + q];
            }
        }
        Some(h)
    }
}

/// A consumer of a group's channels, as the OBS elimination sees it.
struct Consumer {
    /// Input index of the group's channel 0 (the group is contiguous).
    off: usize,
    /// Full: weights `out x m` (bias column last) and `Hinv`, updated as
    /// channels go. Diagonal: per input channel cost, fixed.
    kind: Kind,
}

enum Kind {
    Full {
        w: Vec<f64>,
        out: usize,
        m: usize,
        hinv: Vec<f64>,
        norm: f64,
    },
    Diag(Vec<f64>),
}

impl Consumer {
    fn cost(&self, j: usize) -> f64 {
        let p = self.off + j;
        match &self.kind {
            Kind::Full {
                w,
                out,
                m,
                hinv,
                norm,
            } => {
                let d = hinv[p * m + p];
                if d <= 0.0 {
                    return 0.0;
                }
                (0..*out).map(|o| w[o * m + p].powi(2)).sum::<f64>() / d / norm
            }
            Kind::Diag(c) => c[p],
        }
    }

    /// Removes input `off + j`, compensating the remaining weights.
    fn remove(&mut self, j: usize) {
        let p = self.off + j;
        if let Kind::Full {
            w, out, m, hinv, ..
        } = &mut self.kind
        {
            let m = *m;
            let d = hinv[p * m + p];
            if d <= 0.0 {
                return;
            }
            let row: Vec<f64> = hinv[p * m..(p + 1) * m].to_vec();
            for o in 0..*out {
                let f = w[o * m + p] / d;
                if f != 0.0 {
                    for (x, &r) in w[o * m..(o + 1) * m].iter_mut().zip(&row) {
                        *x -= f * r;
                    }
                }
                w[o * m + p] = 0.0;
            }
            for a in 0..m {
                let f = hinv[a * m + p] / d;
                if f != 0.0 {
                    for (x, &r) in hinv[a * m..(a + 1) * m].iter_mut().zip(&row) {
                        *x -= f * r;
                    }
                }
            }
        }
    }
}

/// The input channel of consumer `ni` that each channel of group `gi` feeds,
/// as `(consumer, offset)` (channel `j` is input `offset + j`): found by
/// pruning the group's first and last channel on copies of the graph, so
/// every path [`graph::apply`] follows (depthwise convs, pools, concats with
/// offsets, flattens) is covered by the same code.
pub(crate) fn consumers_of(cg: &CGraph, groups: &[Group], gi: usize) -> Vec<(usize, usize)> {
    let c = groups[gi].channels;
    if c < 2 {
        return vec![];
    }
    let dropped = |skip: usize| -> HashMap<usize, Vec<usize>> {
        let mut keep: Vec<Vec<usize>> = groups.iter().map(|g| (0..g.channels).collect()).collect();
        keep[gi] = (0..c).filter(|&x| x != skip).collect();
        graph::apply(&mut cg.clone(), groups, &keep, None)
    };
    let (first, last) = (dropped(0), dropped(c - 1));
    let missing = |ks: &[usize]| {
        (0..)
            .zip(ks)
            .find(|(i, &k)| *i != k)
            .map_or(ks.len(), |x| x.0)
    };
    let mut out = vec![];
    for (&ni, ks) in &first {
        let Some(kl) = last.get(&ni) else { continue };
        let (a, b) = (missing(ks), missing(kl));
        if b == a + c - 1 {
            out.push((ni, a));
        }
    }
    out.sort_unstable();
    out
}

/// Per-channel importance of group `gi` by greedy OBS elimination over its
/// consumers' outputs (higher = removed later = more important), or None
/// when no consumer has input statistics. Each consumer's error is relative
/// to its output energy, so tied consumers count equally.
pub fn obs_importance(
    cg: &CGraph,
    groups: &[Group],
    gi: usize,
    comp: &Compensation,
) -> Option<Vec<f64>> {
    let c = groups[gi].channels;
    let mut cons = vec![];
    for (ni, off) in consumers_of(cg, groups, gi) {
        let n = &cg.nodes[ni];
        let Some(wt) = cg.values[n.inputs[1]].konst.as_ref() else {
            continue;
        };
        let wv = wt.as_f32();
        let bias: Option<Vec<f32>> = n
            .inputs
            .get(2)
            .and_then(|&b| cg.values[b].konst.as_ref())
            .map(|t| t.as_f32());
        let Some(l) = crate::ops::layer(cg, n).filter(|l| l.groups == 1) else {
            continue;
        };
        let (out, inp, taps, col_major) = (l.out, l.inp, l.taps, l.chan_last);
        let Some(mut h) = comp.hessian(ni, None, true) else {
            continue;
        };
        let m = inp + 1;
        damp(&mut h, m);
        if taps > 1 {
            // Diagonal: sum over outputs and taps of w^2 H[p,p].
            let mut cost = vec![0f64; inp];
            for o in 0..out {
                for (p, cp) in cost.iter_mut().enumerate() {
                    let s: f64 = wv[(o * inp + p) * taps..(o * inp + p + 1) * taps]
                        .iter()
                        .map(|&x| (x as f64).powi(2))
                        .sum();
                    *cp += s * h[p * m + p];
                }
            }
            let norm = cost.iter().sum::<f64>().max(1e-30);
            cost.iter_mut().for_each(|x| *x /= norm);
            cons.push(Consumer {
                off,
                kind: Kind::Diag(cost),
            });
            continue;
        }
        let mut w = vec![0f64; out * m];
        for o in 0..out {
            for p in 0..inp {
                w[o * m + p] = if col_major {
                    wv[p * out + o]
                } else {
                    wv[o * inp + p]
                } as f64;
            }
            w[o * m + inp] = bias.as_ref().map_or(0.0, |b| b[o] as f64);
        }
        let mut norm = 0.0;
        for o in 0..out {
            let r = &w[o * m..(o + 1) * m];
            for a in 0..m {
                if r[a] != 0.0 {
                    norm += r[a] * (0..m).map(|b| h[a * m + b] * r[b]).sum::<f64>();
                }
            }
        }
        let Some(hinv) = spd_inverse(&h, m) else {
            continue;
        };
        cons.push(Consumer {
            off,
            kind: Kind::Full {
                w,
                out,
                m,
                hinv,
                norm: norm.max(1e-30),
            },
        });
    }
    if cons.is_empty() {
        return None;
    }
    let mut imp = vec![c as f64; c];
    let mut alive = vec![true; c];
    // The search never keeps fewer than a quarter; the rest keep their order.
    for step in 0..c - 1 {
        let Some((_, j)) = (0..c)
            .filter(|&j| alive[j])
            .map(|j| (cons.iter().map(|x| x.cost(j)).sum::<f64>(), j))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        else {
            break;
        };
        alive[j] = false;
        imp[j] = step as f64;
        for x in &mut cons {
            x.remove(j);
        }
    }
    Some(imp)
}

/// Zeroes the fraction `ratio` of the 1x4 reduction blocks of `w` (row-major
/// `rows x cols`; the first `red` columns are the reduction, any further
/// column is the bias, never zeroed) and compensates the remaining weights
/// of each row, given the Hessian `h` (`cols x cols`) of the row's input.
/// SparseGPT: columns are visited in order; in each chunk of 128 the blocks
/// with the smallest OBS saliency `sum w^2 / U[i,i]^2` (over the whole
/// layer, so rows may differ) are chosen with the weights as updated so far,
/// and each visited column's error is pushed onto the later columns through
/// the upper Cholesky factor `U` of `H^-1`. Partial blocks at the end of a
/// row are never zeroed. Returns the blocks zeroed, or None when `h` is not
/// positive definite (the caller falls back to magnitude).
pub fn sparse_blocks(
    w: &mut [f64],
    rows: usize,
    red: usize,
    cols: usize,
    h: &[f64],
    ratio: f32,
) -> Option<usize> {
    let bk = graph::SPARSE_BLOCK.1;
    let mut h = h.to_vec();
    damp(&mut h, cols);
    let hinv = spd_inverse(&h, cols)?;
    // Hinv = U^T U: row i of U couples column i to the later ones.
    let u = upper_cholesky(&hinv, cols)?;
    let full = red / bk;
    let chunk = 128usize;
    let mut zeroed = 0;
    let mut mask = vec![false; rows * red];
    let mut c0 = 0;
    while c0 < full * bk {
        let c1 = (c0 + chunk).min(full * bk);
        let mut sal: Vec<(f64, usize, usize)> = vec![];
        for r in 0..rows {
            for b in c0 / bk..c1 / bk {
                let s: f64 = (b * bk..(b + 1) * bk)
                    .map(|i| w[r * cols + i].powi(2) / u[i * cols + i].powi(2))
                    .sum();
                sal.push((s, r, b));
            }
        }
        let nz = (sal.len() as f64 * ratio as f64).floor() as usize;
        if nz > 0 {
            sal.sort_by(|a, b| a.0.total_cmp(&b.0));
            for &(_, r, b) in &sal[..nz] {
                for i in b * bk..(b + 1) * bk {
                    mask[r * red + i] = true;
                }
            }
            zeroed += nz;
        }
        for i in c0..c1 {
            let d = u[i * cols + i];
            for r in 0..rows {
                if !mask[r * red + i] {
                    continue;
                }
                let row = &mut w[r * cols..(r + 1) * cols];
                let err = row[i] / d;
                for k in i + 1..cols {
                    row[k] -= err * u[i * cols + k];
                }
                row[i] = 0.0;
            }
        }
        c0 = c1;
    }
    Some(zeroed)
}

/// Upper-triangular `U` with `a = U^T U` (row-major), for symmetric
/// positive-definite `a`.
fn upper_cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut u = vec![0f64; n * n];
    for i in 0..n {
        let mut s = a[i * n + i];
        for k in 0..i {
            s -= u[k * n + i] * u[k * n + i];
        }
        if s <= 0.0 || !s.is_finite() {
            return None;
        }
        let d = s.sqrt();
        u[i * n + i] = d;
        for j in i + 1..n {
            let mut s = a[i * n + j];
            for k in 0..i {
                s -= u[k * n + i] * u[k * n + j];
            }
            u[i * n + j] = s / d;
        }
    }
    Some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1].
    fn rnd(n: usize, seed: u32) -> Vec<f64> {
        let mut s = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 20001) as f64 / 10000.0 - 1.0
            })
            .collect()
    }

    /// Correlated inputs `[x, 1]` (n samples of k features, mean != 0), the
    /// kind of Gram where compensation matters.
    fn inputs(n: usize, k: usize) -> Vec<Vec<f64>> {
        let base = rnd(n * 4, 7);
        let mix = rnd(4 * k, 9);
        let noise = rnd(n * k, 11);
        (0..n)
            .map(|s| {
                let mut v: Vec<f64> = (0..k)
                    .map(|j| {
                        0.5 + (0..4)
                            .map(|t| base[s * 4 + t] * mix[t * k + j])
                            .sum::<f64>()
                            + 0.1 * noise[s * k + j]
                    })
                    .collect();
                v.push(1.0);
                v
            })
            .collect()
    }

    fn gram(xs: &[Vec<f64>]) -> Vec<f64> {
        let m = xs[0].len();
        let mut h = vec![0f64; m * m];
        for x in xs {
            for a in 0..m {
                for b in 0..m {
                    h[a * m + b] += x[a] * x[b];
                }
            }
        }
        h
    }

    fn err(w0: &[f64], w: &[f64], xs: &[Vec<f64>], rows: usize) -> f64 {
        let m = xs[0].len();
        let mut e = 0.0;
        for x in xs {
            for r in 0..rows {
                let d: f64 = (0..m).map(|i| (w0[r * m + i] - w[r * m + i]) * x[i]).sum();
                e += d * d;
            }
        }
        e
    }

    #[test]
    fn sparse_blocks_zeroes_whole_blocks_and_beats_magnitude() {
        let (rows, k, n) = (6, 22, 400); // 22: five full blocks and a partial one
        let xs = inputs(n, k);
        let h = gram(&xs);
        let w0 = rnd(rows * (k + 1), 3);
        let mut w = w0.clone();
        let nz = sparse_blocks(&mut w, rows, k, k + 1, &h, 0.5).unwrap();
        assert_eq!(nz, (rows * 5) / 2);
        let mut zero_blocks = 0;
        for r in 0..rows {
            for b in 0..5 {
                let z = (b * 4..b * 4 + 4)
                    .filter(|&i| w[r * (k + 1) + i] == 0.0)
                    .count();
                assert!(z == 0 || z == 4, "row {r} block {b}: partly zero");
                zero_blocks += (z == 4) as usize;
            }
            // The partial block and the bias are never zeroed.
            assert!(w[r * (k + 1) + 20] != 0.0 && w[r * (k + 1) + k] != 0.0);
        }
        assert_eq!(zero_blocks, nz);
        // Magnitude zeroing of as many blocks, no compensation.
        let mut mag = w0.clone();
        let mut bl: Vec<(f64, usize, usize)> = vec![];
        for r in 0..rows {
            for b in 0..5 {
                let s = (b * 4..b * 4 + 4).map(|i| w0[r * (k + 1) + i].abs()).sum();
                bl.push((s, r, b));
            }
        }
        bl.sort_by(|a, b| a.0.total_cmp(&b.0));
        for &(_, r, b) in &bl[..nz] {
            for i in b * 4..b * 4 + 4 {
                mag[r * (k + 1) + i] = 0.0;
            }
        }
        let (e_obs, e_mag) = (err(&w0, &w, &xs, rows), err(&w0, &mag, &xs, rows));
        assert!(e_obs < 0.5 * e_mag, "obs {e_obs} vs magnitude {e_mag}");
    }

    #[test]
    fn inverse_and_factor_agree() {
        let xs = inputs(50, 9);
        let mut h = gram(&xs);
        damp(&mut h, 10);
        let inv = spd_inverse(&h, 10).unwrap();
        for i in 0..10 {
            for j in 0..10 {
                let s: f64 = (0..10).map(|k| h[i * 10 + k] * inv[k * 10 + j]).sum();
                assert!((s - (i == j) as u8 as f64).abs() < 1e-8, "{i},{j}: {s}");
            }
        }
        let u = upper_cholesky(&inv, 10).unwrap();
        for i in 0..10 {
            for j in 0..10 {
                let s: f64 = (0..10).map(|k| u[k * 10 + i] * u[k * 10 + j]).sum();
                assert!((s - inv[i * 10 + j]).abs() < 1e-9);
            }
        }
        assert!(spd_inverse(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }
}

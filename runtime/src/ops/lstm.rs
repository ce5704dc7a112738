//! `Lstm`: one forward f32 ONNX LSTM layer (gates `i, o, f, c`, sigmoid /
//! tanh / tanh), inputs `[x [seq, batch, input], w [4h, input], r [4h, h],
//! b [4h] (Wb + Rb), h0 [batch, h], c0 [batch, h]]`; the output `[seq + 2,
//! batch, h]` packs `Y`, then `Y_h`, then `Y_c`, so no scratch is needed.

use super::ctx::{macs_of, want, Ctx, Res, Run};
use crate::graph::DType;
use strix_kernels::reference::{self as k, LstmGeometry};

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Lstm";

/// Multiply-accumulates: per step and batch row, the four gates' `[input +
/// hidden] x hidden` products.
pub(crate) fn macs(geom: &LstmGeometry) -> u64 {
    let g = geom;
    macs_of(&[g.seq, g.batch, 4, g.hidden])
        .saturating_mul((g.input as u64).saturating_add(g.hidden as u64))
}

pub(super) fn validate(cx: &Ctx, geom: &LstmGeometry) -> Res {
    cx.arity(6, 6)?;
    for k in 0..6 {
        cx.dtype(k, DType::F32)?;
    }
    cx.out_dtype(DType::F32)?;
    // The geometry is untrusted: every size it implies must be computable.
    let mul = |a: usize, b: usize| a.checked_mul(b);
    let sizes = (|| {
        let h4 = mul(4, geom.hidden)?;
        Some((
            mul(mul(geom.seq, geom.batch)?, geom.input)?,
            mul(h4, geom.input)?,
            mul(h4, geom.hidden)?,
            h4,
            mul(geom.batch, geom.hidden)?,
            mul(mul(geom.seq.checked_add(2)?, geom.batch)?, geom.hidden)?,
        ))
    })()
    .ok_or_else(|| format!("geometry {geom:?} overflows"))?;
    let (xl, wl, rl, bl, sl, ol) = sizes;
    want(geom.hidden > 0 && geom.batch > 0 && geom.input > 0, || {
        format!("empty geometry {geom:?}")
    })?;
    let t = |k: usize| cx.input(k);
    want(t(0).len() == xl, || {
        format!(
            "x has {} elements, geometry {geom:?} needs {xl}",
            t(0).len()
        )
    })?;
    want(
        t(1).len() == wl && t(2).len() == rl && t(3).len() == bl,
        || "w/r/b sizes do not match the geometry".into(),
    )?;
    want(t(4).len() == sl && t(5).len() == sl, || {
        format!("initial h/c must have {sl} elements")
    })?;
    let out = cx.output();
    want(out.len() == ol, || {
        format!("output has {} elements, expected {ol}", out.len())
    })
}

pub(super) fn run(r: &Run, geom: &LstmGeometry, o: &mut [f32]) -> Res {
    k::f32_lstm(
        geom,
        r.f32(0)?,
        r.f32(1)?,
        r.f32(2)?,
        r.f32(3)?,
        r.f32(4)?,
        r.f32(5)?,
        o,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::graph::Op;
    use crate::ops::test_graph::{run, TestGraph};
    use strix_kernels::reference::LstmGeometry;

    /// Two steps of a `batch 2, input 3, hidden 2` LSTM whose initial state
    /// comes in as graph inputs, against the ONNX equations in f64.
    #[test]
    fn lstm_validates_prepares_and_runs() {
        let geom = LstmGeometry {
            seq: 2,
            batch: 2,
            input: 3,
            hidden: 2,
        };
        let (h, n) = (geom.hidden, geom.input);
        let v = |len: usize, s: f32| {
            (0..len)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) * s)
                .collect::<Vec<f32>>()
        };
        let (w, r, b) = (v(4 * h * n, 0.1), v(4 * h * h, 0.2), v(4 * h, 0.05));
        let (x, h0, c0) = (v(2 * 2 * n, 0.3), v(2 * h, 0.15), v(2 * h, 0.25));
        let mut t = TestGraph::new();
        let xi = t.input(&[2, 2, n]);
        let hi = t.input(&[2, h]);
        let ci = t.input(&[2, h]);
        let wi = t.const_f32(&[4 * h, n], &w);
        let ri = t.const_f32(&[4 * h, h], &r);
        let bi = t.const_f32(&[4 * h], &b);
        let y = t.act_f32(&[geom.seq + 2, 2, h]);
        t.node(Op::Lstm { geom }, &[xi, wi, ri, bi, hi, ci], y);
        let got = run(&t.load().unwrap(), &[&x, &h0, &c0]).f32();

        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let (w, r, b) = (f(&w), f(&r), f(&b));
        let (mut hs, mut cs) = (f(&h0), f(&c0));
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let mut want = Vec::new();
        for step in 0..geom.seq {
            let (mut hn, mut cn) = (hs.clone(), cs.clone());
            for bi in 0..2 {
                let xt = &x[(step * 2 + bi) * n..][..n];
                for j in 0..h {
                    let gate = |g: usize| {
                        let row = g * h + j;
                        let wx: f64 = (0..n).map(|q| w[row * n + q] * xt[q] as f64).sum();
                        let rh: f64 = (0..h).map(|q| r[row * h + q] * hs[bi * h + q]).sum();
                        wx + rh + b[row]
                    };
                    let (i, o, fg, c) = (sig(gate(0)), sig(gate(1)), sig(gate(2)), gate(3).tanh());
                    cn[bi * h + j] = fg * cs[bi * h + j] + i * c;
                    hn[bi * h + j] = o * cn[bi * h + j].tanh();
                }
            }
            (hs, cs) = (hn, cn);
            want.extend_from_slice(&hs);
        }
        want.extend_from_slice(&hs);
        want.extend_from_slice(&cs);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }

        let mut bad = t.clone();
        bad.g.tensors[hi].shape = vec![1, h];
        assert!(bad.load_err().contains("initial h/c must have 4 elements"));
    }
}

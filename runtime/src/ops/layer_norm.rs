//! `LayerNorm`: f32 layer normalization (ONNX `LayerNormalization`) of each
//! of the `outer` rows of `inner` elements: `(x - mean) / sqrt(var +
//! epsilon) * scale + bias`, with the row's mean and (biased) variance and
//! per-element `scale` and `bias`. Inputs `[x, scale, bias?]`.

use super::ctx::{mul, want, Ctx, Res, Run};
use crate::graph::DType;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "LayerNorm";

pub(super) fn validate(cx: &Ctx, outer: usize, inner: usize, epsilon: f32) -> Res {
    cx.arity(2, 3)?;
    for k in 0..cx.n.inputs.len() {
        cx.dtype(k, DType::F32)?;
    }
    cx.out_dtype(DType::F32)?;
    want(outer > 0 && inner > 0, || {
        format!("empty extent {outer} x {inner}")
    })?;
    // Zero would divide a constant row by zero; NaN would poison every row.
    want(epsilon.is_finite() && epsilon > 0.0, || {
        format!("epsilon {epsilon} is not a positive number")
    })?;
    let total = mul("outer x inner", outer, inner)?;
    want(cx.input(0).len() == total, || {
        format!("input {:?} is not {outer} x {inner}", cx.input(0).shape)
    })?;
    for k in 1..cx.n.inputs.len() {
        want(cx.input(k).len() == inner, || {
            format!(
                "input {k} {:?} does not have {inner} values",
                cx.input(k).shape
            )
        })?;
    }
    want(cx.output().len() == total, || "output size mismatch".into())
}

pub(super) fn run(r: &Run, (outer, inner, epsilon): (usize, usize, f32), o: &mut [f32]) -> Res {
    let x = r.f32(0)?;
    let scale = r.f32(1)?;
    let bias = if r.n.inputs.len() > 2 {
        Some(r.f32(2)?)
    } else {
        None
    };
    for (xr, or) in x
        .chunks_exact(inner)
        .zip(o.chunks_exact_mut(inner))
        .take(outer)
    {
        // f64 sums: a row of thousands of f32 values keeps its precision.
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / inner as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / inner as f64;
        let inv = 1.0 / (var + epsilon as f64).sqrt();
        for (i, (y, &v)) in or.iter_mut().zip(xr).enumerate() {
            let b = bias.map_or(0.0, |b| b[i]);
            *y = ((v as f64 - mean) * inv) as f32 * scale[i] + b;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::graph::Op;
    use crate::ops::test_graph::{run, TestGraph};

    /// Two rows of four, with scale and bias, against the definition in f64.
    #[test]
    fn layer_norm_validates_prepares_and_runs() {
        let x = [1.0, 2.0, 3.0, 6.0, -4.0, 0.5, 0.5, 100.0];
        let scale = [1.0, 2.0, -0.5, 0.25];
        let bias = [0.0, 1.0, -1.0, 0.5];
        let eps = 1e-5f32;
        let mut t = TestGraph::new();
        let xi = t.input(&[2, 4]);
        let si = t.const_f32(&[4], &scale);
        let bi = t.const_f32(&[4], &bias);
        let y = t.act_f32(&[2, 4]);
        let op = Op::LayerNorm {
            outer: 2,
            inner: 4,
            epsilon: eps,
        };
        t.node(op, &[xi, si, bi], y);
        let got = run(&t.load().unwrap(), &[&x]).f32();
        for r in 0..2 {
            let row: Vec<f64> = x[r * 4..r * 4 + 4].iter().map(|&v| v as f64).collect();
            let mean = row.iter().sum::<f64>() / 4.0;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0;
            for i in 0..4 {
                let want =
                    (row[i] - mean) / (var + eps as f64).sqrt() * scale[i] as f64 + bias[i] as f64;
                let g = got[r * 4 + i] as f64;
                assert!((g - want).abs() < 1e-5, "{got:?}");
            }
        }

        // Without bias.
        let mut nb = t.clone();
        nb.last().inputs.pop();
        let got2 = run(&nb.load().unwrap(), &[&x]).f32();
        for i in 0..8 {
            assert!((got2[i] - (got[i] - bias[i % 4])).abs() < 1e-5, "{got2:?}");
        }

        let mut bad = t.clone();
        bad.last().inputs[1] = bad.const_f32(&[3], &scale[..3]);
        assert!(bad.load_err().contains("does not have 4 values"));
        let mut bad = t.clone();
        let Op::LayerNorm { epsilon, .. } = &mut bad.last().op else {
            unreachable!()
        };
        *epsilon = 0.0;
        assert!(bad.load_err().contains("epsilon 0"));
        let mut bad = t.clone();
        let Op::LayerNorm { inner, .. } = &mut bad.last().op else {
            unreachable!()
        };
        *inner = 8;
        assert!(bad.load_err().contains("is not 2 x 8"));
    }
}

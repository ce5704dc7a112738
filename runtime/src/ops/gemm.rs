//! `Gemm`: f32 `x[m, k] @ w[k, n] + bias` per batch element, inputs `[x, w,
//! bias?]`; `w` may be an activation (a matmul), shared by the batch or one
//! per batch element. Also the size check the int8 gemms share (`qgemm`).

use super::ctx::{act_ok, macs_of, mul, want, Ctx, Res, Run};
use crate::graph::{DType, Tensor};
use strix_kernels::reference as k;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Gemm";

/// Multiply-accumulates of `batch` products `[m, k] @ [k, n]` (the int8
/// gemms, `batch` = 1, count the same way).
pub(crate) fn macs((batch, m, n, k): (usize, usize, usize, usize)) -> u64 {
    macs_of(&[batch, m, n, k])
}

pub(super) fn validate(
    cx: &Ctx,
    (batch, m, n, k): (usize, usize, usize, usize),
    act_min: f32,
    act_max: f32,
) -> Res {
    cx.arity(2, 3)?;
    cx.out_dtype(DType::F32)?;
    cx.dtype(0, DType::F32)?;
    cx.dtype(1, DType::F32)?;
    sizes_ok(cx.input(0), cx.input(1), cx.output(), batch, m, n, k)?;
    if cx.n.inputs.len() == 3 {
        cx.dtype(2, DType::F32)?;
        want(cx.input(2).len() == n, || "bias size".into())?;
    }
    act_ok(act_min, act_max)
}

pub(super) fn run(
    r: &Run,
    (batch, m, n, kk): (usize, usize, usize, usize),
    (act_min, act_max): (f32, f32),
    o: &mut [f32],
) -> Res {
    let (x, w) = (r.f32(0)?, r.f32(1)?);
    let b: &[f32] = if r.n.inputs.len() == 3 {
        r.f32(2)?
    } else {
        &[]
    };
    let (xl, wl, ol) = (m * kk, kk * n, m * n);
    // One weight matrix per batch element, or one for all (validated).
    let wb = w.len() > wl;
    for bi in 0..batch {
        let wsl = if wb { &w[bi * wl..(bi + 1) * wl] } else { w };
        k::f32_gemm(
            m,
            n,
            kk,
            &x[bi * xl..(bi + 1) * xl],
            wsl,
            b,
            act_min,
            act_max,
            &mut o[bi * ol..(bi + 1) * ol],
        );
    }
    Ok(())
}

/// Sizes of a (batched) gemm `x [batch, m, k] @ w [k, n]` (or `[n, k]`, or
/// one per batch) into `[batch, m, n]`: every extent non-zero, so each is at
/// most a tensor's length, and every product checked.
pub(super) fn sizes_ok(
    x: &Tensor,
    w: &Tensor,
    out: &Tensor,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
) -> Res {
    want(batch > 0 && m > 0 && n > 0 && k > 0, || {
        format!("empty extent: batch {batch}, m {m}, n {n}, k {k}")
    })?;
    let xl = mul("batch x m x k", mul("batch x m", batch, m)?, k)?;
    want(x.len() == xl, || {
        format!("input has {} elements, expected {batch}x{m}x{k}", x.len())
    })?;
    let wl = mul("k x n", k, n)?;
    want(
        w.len() == wl || Some(w.len()) == wl.checked_mul(batch),
        || format!("weights have {} elements, expected {k}x{n}", w.len()),
    )?;
    let ol = mul("batch x m x n", mul("batch x m", batch, m)?, n)?;
    want(out.len() == ol, || {
        format!(
            "output has {} elements, expected {batch}x{m}x{n}",
            out.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use crate::graph::Op;
    use crate::ops::test_graph::{assert_varied, run, small_f32, TestGraph};

    /// `x[b, m, k] @ w[k, n] + bias`, with one weight matrix for the batch
    /// and with one per batch element (a matmul of two activations), against
    /// the definition.
    #[test]
    fn gemm_validates_prepares_and_runs() {
        let (batch, m, n, k) = (2, 3, 4, 5);
        for per_batch in [false, true] {
            let mut t = TestGraph::new();
            let x = t.input(&[batch, m, k]);
            let wn = if per_batch { batch * k * n } else { k * n };
            let w = small_f32(wn, 1);
            let bias = small_f32(n, 2);
            let wi = if per_batch {
                t.input(&[batch, k, n])
            } else {
                t.const_f32(&[k, n], &w)
            };
            let bi = t.const_f32(&[n], &bias);
            let y = t.act_f32(&[batch, m, n]);
            let op = Op::Gemm {
                m,
                n,
                k,
                batch,
                act_min: -10.0,
                act_max: f32::MAX,
            };
            t.node(op, &[x, wi, bi], y);
            let model = t.load().unwrap();
            let xs = small_f32(batch * m * k, 3);
            let got = if per_batch {
                run(&model, &[&xs, &w])
            } else {
                run(&model, &[&xs])
            }
            .f32();
            let mut want = vec![0.0; batch * m * n];
            for b in 0..batch {
                let wb = if per_batch { &w[b * k * n..] } else { &w[..] };
                for i in 0..m {
                    for j in 0..n {
                        let dot: f32 = (0..k)
                            .map(|l| xs[(b * m + i) * k + l] * wb[l * n + j])
                            .sum();
                        want[(b * m + i) * n + j] = (dot + bias[j]).max(-10.0);
                    }
                }
            }
            assert_eq!(got, want, "per batch: {per_batch}");
            assert_varied(&got, 10);

            let mut bad = t.clone();
            bad.g.tensors[bi].shape = vec![n - 1];
            assert!(bad.load_err().contains("bias size"));
        }
    }
}

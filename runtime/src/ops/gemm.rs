//! `Gemm`: f32 `x[m, k] @ w[k, n] + bias` per batch element, inputs `[x, w,
//! bias?]`; `w` may be an activation (a matmul), shared by the batch or one
//! per batch element. Also the size check the int8 gemms share (`qgemm`).

use super::ctx::{act_ok, mul, want, Ctx, Res, Run};
use crate::graph::{DType, Tensor};
use strix_kernels::reference as k;

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

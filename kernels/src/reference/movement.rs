//! Data movement, generic over the element type (int8 and f32 share them;
//! quantization passes through unchanged).

use crate::requant::{requantize, Requant};
use crate::shape::MAX_RANK;

/// Permutes axes: `out` has shape `in_shape[perm[i]]`.
/// Contract: `perm` is a permutation of `0..in_shape.len()`, rank <= MAX_RANK.
pub fn transpose<T: Copy>(input: &[T], in_shape: &[usize], perm: &[usize], output: &mut [T]) {
    let rank = in_shape.len();
    let mut in_strides = [0usize; MAX_RANK];
    let mut acc = 1;
    for i in (0..rank).rev() {
        in_strides[i] = acc;
        acc *= in_shape[i];
    }
    let mut out_shape = [1usize; MAX_RANK];
    let mut strides = [0usize; MAX_RANK];
    for i in 0..rank {
        out_shape[i] = in_shape[perm[i]];
        strides[i] = in_strides[perm[i]];
    }
    strided_copy(input, &out_shape[..rank], &strides[..rank], 0, output);
}

/// `output[i...] = input[base + sum(i_k * strides_k)]` over `shape`, row-major.
fn strided_copy<T: Copy>(
    input: &[T],
    shape: &[usize],
    strides: &[usize],
    base: usize,
    output: &mut [T],
) {
    let rank = shape.len();
    if rank == 0 {
        output[0] = input[base];
        return;
    }
    let inner = shape[rank - 1];
    let inner_stride = strides[rank - 1];
    let outer: usize = shape[..rank - 1].iter().product();
    let mut idx = [0usize; MAX_RANK];
    let mut o = 0;
    for _ in 0..outer {
        let mut off = base;
        for k in 0..rank - 1 {
            off += idx[k] * strides[k];
        }
        if inner_stride == 1 {
            output[o..o + inner].copy_from_slice(&input[off..off + inner]);
        } else {
            for j in 0..inner {
                output[o + j] = input[off + j * inner_stride];
            }
        }
        o += inner;
        let mut k = rank - 1;
        while k > 0 {
            k -= 1;
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// Strided slice: for every axis, `starts[i] + j * steps[i]` for `j < out_shape[i]`
/// (steps may be negative). Contract: all indices in range (checked by the caller).
pub fn slice<T: Copy>(
    input: &[T],
    in_shape: &[usize],
    starts: &[usize],
    steps: &[isize],
    out_shape: &[usize],
    output: &mut [T],
) {
    let rank = in_shape.len();
    let mut in_strides = [0isize; MAX_RANK];
    let mut acc = 1isize;
    for i in (0..rank).rev() {
        in_strides[i] = acc;
        acc *= in_shape[i] as isize;
    }
    let mut base = 0isize;
    for i in 0..rank {
        base += starts[i] as isize * in_strides[i];
    }
    let total: usize = out_shape.iter().product();
    // The innermost axes that are copied whole with step 1 form contiguous
    // runs (a channel split is one run per batch): copy those at once.
    let mut run = 1usize;
    let mut inner = rank;
    while inner > 0 && steps[inner - 1] == 1 && out_shape[inner - 1] == in_shape[inner - 1] {
        inner -= 1;
        run *= out_shape[inner];
    }
    if inner > 0 && steps[inner - 1] == 1 {
        // The next axis is sliced with step 1: its kept range is contiguous too.
        inner -= 1;
        run *= out_shape[inner];
    }
    if run > 1 && total > 0 {
        let mut idx = [0usize; MAX_RANK];
        for chunk in output[..total].chunks_exact_mut(run) {
            let mut off = base;
            for k in 0..inner {
                off += idx[k] as isize * steps[k] * in_strides[k];
            }
            chunk.copy_from_slice(&input[off as usize..off as usize + run]);
            let mut k = inner;
            while k > 0 {
                k -= 1;
                idx[k] += 1;
                if idx[k] < out_shape[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
        return;
    }
    let mut idx = [0usize; MAX_RANK];
    for out in output.iter_mut().take(total) {
        let mut off = base;
        for k in 0..rank {
            off += idx[k] as isize * steps[k] * in_strides[k];
        }
        *out = input[off as usize];
        let mut k = rank;
        while k > 0 {
            k -= 1;
            idx[k] += 1;
            if idx[k] < out_shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// Gathers along `axis`: `out[.., j, ..] = in[.., indices[j], ..]`.
/// Contract: indices already normalised to `0..in_shape[axis]`.
pub fn gather<T: Copy>(
    input: &[T],
    in_shape: &[usize],
    axis: usize,
    indices: &[usize],
    output: &mut [T],
) {
    let outer: usize = in_shape[..axis].iter().product();
    let inner: usize = in_shape[axis + 1..].iter().product();
    let dim = in_shape[axis];
    let mut o = 0;
    for b in 0..outer {
        for &ix in indices {
            let src = (b * dim + ix) * inner;
            output[o..o + inner].copy_from_slice(&input[src..src + inner]);
            o += inner;
        }
    }
}

/// Constant padding: `pads_before[i]`/`pads_after[i]` elements per axis.
pub fn pad_constant<T: Copy>(
    input: &[T],
    in_shape: &[usize],
    pads_before: &[usize],
    out_shape: &[usize],
    value: T,
    output: &mut [T],
) {
    output.fill(value);
    let rank = in_shape.len();
    if input.is_empty() {
        return;
    }
    let mut out_strides = [0usize; MAX_RANK];
    let mut acc = 1;
    for i in (0..rank).rev() {
        out_strides[i] = acc;
        acc *= out_shape[i];
    }
    let inner = in_shape[rank - 1];
    let outer: usize = in_shape[..rank - 1].iter().product();
    let mut idx = [0usize; MAX_RANK];
    let mut src = 0;
    for _ in 0..outer {
        let mut off = pads_before[rank - 1];
        for k in 0..rank - 1 {
            off += (idx[k] + pads_before[k]) * out_strides[k];
        }
        output[off..off + inner].copy_from_slice(&input[src..src + inner]);
        src += inner;
        let mut k = rank - 1;
        while k > 0 {
            k -= 1;
            idx[k] += 1;
            if idx[k] < in_shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// Copies one input of a concatenation into its place: the output is viewed as
/// `[outer][out_axis * inner]` and this input fills columns
/// `[offset * inner, (offset + in_axis) * inner)`.
pub fn concat<T: Copy>(
    input: &[T],
    outer: usize,
    in_axis: usize,
    inner: usize,
    out_axis: usize,
    offset: usize,
    output: &mut [T],
) {
    let chunk = in_axis * inner;
    for b in 0..outer {
        let dst = b * out_axis * inner + offset * inner;
        output[dst..dst + chunk].copy_from_slice(&input[b * chunk..(b + 1) * chunk]);
    }
}

/// int8 -> int8 change of quantization: `out = zo + requantize(x - zi, rq)`.
/// Used by concat when an input's quantization differs from the output's.
pub fn qs8_requantize_copy(input: &[i8], in_zp: i32, rq: Requant, out_zp: i32, output: &mut [i8]) {
    for (o, &x) in output.iter_mut().zip(input) {
        *o = (requantize(x as i32 - in_zp, rq) + out_zp).clamp(-128, 127) as i8;
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    /// `slice` (whose contiguous-run path handles most real slices) against
    /// its definition, on random shapes, ranges and steps.
    #[test]
    fn slice_matches_definition() {
        let mut seed = 0x2545_f491u32;
        let mut rnd = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as usize % n
        };
        for case in 0..500 {
            let rank = 1 + rnd(4);
            let in_shape: Vec<usize> = (0..rank).map(|_| 1 + rnd(6)).collect();
            let (mut starts, mut steps, mut out_shape) = (vec![], vec![], vec![]);
            for &d in &in_shape {
                let step: isize = [1, 1, 1, 2, -1][rnd(5)];
                let start = rnd(d);
                let max = if step > 0 {
                    (d - start).div_ceil(step as usize)
                } else {
                    start + 1
                };
                // Often the whole axis, to exercise the contiguous runs.
                let (start, n) = if step == 1 && rnd(2) == 0 {
                    (0, d)
                } else {
                    (start, 1 + rnd(max))
                };
                starts.push(start);
                steps.push(step);
                out_shape.push(n);
            }
            let input: Vec<i32> = (0..in_shape.iter().product::<usize>() as i32).collect();
            let total: usize = out_shape.iter().product();
            let mut got = vec![-1; total];
            slice(&input, &in_shape, &starts, &steps, &out_shape, &mut got);
            for (o, &g) in got.iter().enumerate() {
                let (mut rem, mut off, mut stride) = (o, 0isize, 1isize);
                let mut coord = vec![0usize; rank];
                for k in (0..rank).rev() {
                    coord[k] = rem % out_shape[k];
                    rem /= out_shape[k];
                }
                for k in (0..rank).rev() {
                    off += (starts[k] as isize + coord[k] as isize * steps[k]) * stride;
                    stride *= in_shape[k] as isize;
                }
                assert_eq!(
                    g, input[off as usize],
                    "case {case}: {in_shape:?} {starts:?} {steps:?} {out_shape:?} at {o}"
                );
            }
        }
    }
}

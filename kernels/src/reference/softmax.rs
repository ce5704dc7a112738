//! Reductions along one axis of a tensor viewed as `[outer][axis][inner]`.

/// Numerically stable softmax along the middle axis.
pub fn f32_softmax(input: &[f32], outer: usize, axis: usize, inner: usize, output: &mut [f32]) {
    for b in 0..outer {
        for i in 0..inner {
            let at = |k: usize| b * axis * inner + k * inner + i;
            let mut mx = f32::NEG_INFINITY;
            for k in 0..axis {
                mx = mx.max(input[at(k)]);
            }
            let mut sum = 0.0;
            for k in 0..axis {
                let e = libm::expf(input[at(k)] - mx);
                output[at(k)] = e;
                sum += e;
            }
            let inv = 1.0 / sum;
            for k in 0..axis {
                output[at(k)] *= inv;
            }
        }
    }
}

/// Mean along the middle axis; output is `[outer][inner]`.
pub fn f32_reduce_mean(input: &[f32], outer: usize, axis: usize, inner: usize, output: &mut [f32]) {
    for b in 0..outer {
        for i in 0..inner {
            let mut s = 0.0;
            for k in 0..axis {
                s += input[b * axis * inner + k * inner + i];
            }
            output[b * inner + i] = s / axis as f32;
        }
    }
}

//! f32 LSTM with ONNX semantics (forward direction, default activations).

/// Sizes of one LSTM layer (a single forward direction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LstmGeometry {
    /// Time steps in the input.
    pub seq: usize,
    pub batch: usize,
    /// Features per time step.
    pub input: usize,
    /// Hidden units.
    pub hidden: usize,
}

impl LstmGeometry {
    /// Elements of `x` (`[seq, batch, input]`).
    pub fn input_len(&self) -> usize {
        self.seq * self.batch * self.input
    }
    /// Elements of the output (`[seq + 2, batch, hidden]`: Y, then Y_h, then Y_c).
    pub fn output_len(&self) -> usize {
        (self.seq + 2) * self.batch * self.hidden
    }
    /// Elements of `w` (`[4 * hidden, input]`).
    pub fn w_len(&self) -> usize {
        4 * self.hidden * self.input
    }
    /// Elements of `r` (`[4 * hidden, hidden]`).
    pub fn r_len(&self) -> usize {
        4 * self.hidden * self.hidden
    }
    /// Elements of one state tensor (`[batch, hidden]`).
    pub fn state_len(&self) -> usize {
        self.batch * self.hidden
    }
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-x))
}

use super::dot_f32 as dot;

/// One forward LSTM layer as ONNX defines it (gate order `i, o, f, c`;
/// `f = sigmoid`, `g = h = tanh`; no peepholes, no clip, no coupled gates):
///
/// ```text
/// i = sigmoid(W_i x + R_i h + b_i)      o = sigmoid(W_o x + R_o h + b_o)
/// f = sigmoid(W_f x + R_f h + b_f)      c~ = tanh(W_c x + R_c h + b_c)
/// c' = f * c + i * c~                   h' = o * tanh(c')
/// ```
///
/// * `x`: `[seq, batch, input]`; `w`: `[4 * hidden, input]` (rows `i, o, f, c`);
///   `r`: `[4 * hidden, hidden]`; `b`: `[4 * hidden]`, the sum of ONNX's `Wb`
///   and `Rb` halves; `h0`, `c0`: `[batch, hidden]` initial state.
/// * `out`: `[seq + 2, batch, hidden]`: rows `0..seq` are ONNX's `Y` (the hidden
///   state after each step), row `seq` is `Y_h` (the last hidden state) and row
///   `seq + 1` is `Y_c` (the last cell state). With `seq == 0` the state passes
///   through unchanged.
///
/// Needs no scratch: each hidden unit's four gates are computed from the
/// previous step's hidden state (`h0` or the previous `Y` row, never the row
/// being written) and the cell state is updated in place in the `Y_c` row.
///
/// # Panics
/// If a slice is shorter than `geom` says (the runtime validates sizes first).
#[allow(clippy::too_many_arguments)]
pub fn f32_lstm(
    geom: &LstmGeometry,
    x: &[f32],
    w: &[f32],
    r: &[f32],
    b: &[f32],
    h0: &[f32],
    c0: &[f32],
    out: &mut [f32],
) {
    let LstmGeometry {
        seq,
        batch,
        input,
        hidden,
    } = *geom;
    let sl = geom.state_len();
    let (y, tail) = out[..geom.output_len()].split_at_mut(seq * sl);
    let (yh, yc) = tail.split_at_mut(sl);
    yc.copy_from_slice(&c0[..sl]);
    for t in 0..seq {
        let (done, rest) = y.split_at_mut(t * sl);
        let h_prev: &[f32] = if t == 0 {
            &h0[..sl]
        } else {
            &done[(t - 1) * sl..]
        };
        let h_new = &mut rest[..sl];
        for bi in 0..batch {
            let xt = &x[(t * batch + bi) * input..][..input];
            let hp = &h_prev[bi * hidden..][..hidden];
            for j in 0..hidden {
                let gate = |g: usize| {
                    let row = g * hidden + j;
                    dot(&w[row * input..][..input], xt)
                        + dot(&r[row * hidden..][..hidden], hp)
                        + b[row]
                };
                let (gi, go, gf, gc) = (
                    sigmoid(gate(0)),
                    sigmoid(gate(1)),
                    sigmoid(gate(2)),
                    libm::tanhf(gate(3)),
                );
                let c = &mut yc[bi * hidden + j];
                *c = gf * *c + gi * gc;
                h_new[bi * hidden + j] = go * libm::tanhf(*c);
            }
        }
    }
    if seq == 0 {
        yh.copy_from_slice(&h0[..sl]);
    } else {
        yh.copy_from_slice(&y[(seq - 1) * sl..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed single step: one input, one hidden unit.
    #[test]
    fn one_unit_one_step() {
        let g = LstmGeometry {
            seq: 1,
            batch: 1,
            input: 1,
            hidden: 1,
        };
        // Gates i, o, f, c with weights 1, 2, 3, 4 on x, 0.5 on h, bias 0.1.
        let (w, r, b) = ([1.0, 2.0, 3.0, 4.0], [0.5; 4], [0.1; 4]);
        let (x, h0, c0) = ([0.3f32], [0.2f32], [-0.4f32]);
        let mut out = [0f32; 3];
        f32_lstm(&g, &x, &w, &r, &b, &h0, &c0, &mut out);
        let pre = |k: f32| k * 0.3 + 0.5 * 0.2 + 0.1;
        let s = |v: f32| 1.0 / (1.0 + (-v).exp());
        let c = s(pre(3.0)) * -0.4 + s(pre(1.0)) * pre(4.0).tanh();
        let h = s(pre(2.0)) * c.tanh();
        assert!((out[0] - h).abs() < 1e-6, "{out:?} vs h {h}");
        assert_eq!(out[1], out[0], "Y_h is the last Y row");
        assert!((out[2] - c).abs() < 1e-6, "{out:?} vs c {c}");
    }

    /// Two steps in one call equal two one-step calls with the state fed back.
    #[test]
    fn steps_compose() {
        let g2 = LstmGeometry {
            seq: 2,
            batch: 2,
            input: 3,
            hidden: 2,
        };
        let g1 = LstmGeometry { seq: 1, ..g2 };
        let v = |n: usize, k: f32| (0..n).map(|i| (i as f32 * k).sin()).collect::<Vec<_>>();
        let (x, w, r, b) = (v(12, 0.7), v(24, 1.3), v(16, 0.9), v(8, 2.1));
        let (h0, c0) = (v(4, 0.5), v(4, 1.7));
        let mut both = vec![0f32; g2.output_len()];
        f32_lstm(&g2, &x, &w, &r, &b, &h0, &c0, &mut both);
        let mut s1 = vec![0f32; g1.output_len()];
        f32_lstm(&g1, &x[..6], &w, &r, &b, &h0, &c0, &mut s1);
        let mut s2 = vec![0f32; g1.output_len()];
        f32_lstm(&g1, &x[6..], &w, &r, &b, &s1[4..8], &s1[8..12], &mut s2);
        assert_eq!(&both[..4], &s1[..4], "Y row 0");
        assert_eq!(&both[4..8], &s2[..4], "Y row 1");
        assert_eq!(&both[8..], &s2[4..], "Y_h and Y_c");
    }
}

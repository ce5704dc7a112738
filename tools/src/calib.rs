//! Calibration: run the f32 graph on real samples and record, for every
//! activation, its range and a histogram; choose int8 ranges from them.

use crate::ir::CGraph;
use crate::lower::lower_f32;
use anyhow::Result;
use std::collections::HashMap;
use strix_runtime::{graph::Storage, Model, Session, TensorData};

const BINS: usize = 2048;

/// How an activation's int8 range is chosen.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum Method {
    /// The observed minimum and maximum.
    Minmax,
    /// The 0.01% and 99.99% quantiles (clips rare outliers).
    Percentile,
    /// The clipping range minimising the expected squared quantization error.
    Mse,
}

#[derive(Clone, Debug)]
pub struct Stats {
    pub min: f32,
    pub max: f32,
    hist: Vec<u64>,
    /// Histogram range (the min/max of the first pass).
    lo: f32,
    hi: f32,
}

impl Stats {
    fn new() -> Self {
        Stats {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            hist: vec![],
            lo: 0.0,
            hi: 0.0,
        }
    }
    fn bin_width(&self) -> f32 {
        (self.hi - self.lo) / BINS as f32
    }
    fn quantile(&self, p: f64) -> f32 {
        let total: u64 = self.hist.iter().sum();
        if total == 0 {
            return if p < 0.5 { self.min } else { self.max };
        }
        let target = (p * total as f64) as u64;
        let mut acc = 0;
        for (i, &c) in self.hist.iter().enumerate() {
            acc += c;
            if acc > target {
                return self.lo + (i as f32 + if p < 0.5 { 0.0 } else { 1.0 }) * self.bin_width();
            }
        }
        self.max
    }
    /// Expected squared error of int8 quantization over `[lo, hi]`.
    fn mse(&self, lo: f32, hi: f32) -> f64 {
        let q = crate::lower::choose_quant(lo, hi);
        let w = self.bin_width();
        let mut err = 0f64;
        for (i, &c) in self.hist.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let x = self.lo + (i as f32 + 0.5) * w;
            let code = ((x / q.scale).round() + q.zero_point as f32).clamp(-128.0, 127.0);
            let back = (code - q.zero_point as f32) * q.scale;
            err += c as f64 * ((x - back) as f64).powi(2);
        }
        err
    }
    /// These statistics reduced to the range `m` chooses: every method then
    /// gives that range, at no cost (the MSE search runs once, here).
    pub fn resolved(&self, m: Method) -> Stats {
        let (min, max) = self.range(m);
        Stats {
            min,
            max,
            hist: vec![],
            lo: min,
            hi: max,
        }
    }
    /// The real range to quantize.
    pub fn range(&self, m: Method) -> (f32, f32) {
        if self.hist.is_empty()
            || m == Method::Minmax
            || self.max.partial_cmp(&self.min) != Some(std::cmp::Ordering::Greater)
        {
            return (self.min.min(0.0), self.max.max(0.0));
        }
        match m {
            Method::Percentile => (
                self.quantile(1e-4).min(0.0),
                self.quantile(1.0 - 1e-4).max(0.0),
            ),
            _ => {
                let (mut best, mut best_err) = ((self.min, self.max), f64::INFINITY);
                let fracs: Vec<f32> = (0..24).map(|i| 1.0 - i as f32 * 0.03).collect();
                for &fl in &fracs {
                    for &fh in &fracs {
                        let (lo, hi) = (self.min.min(0.0) * fl, self.max.max(0.0) * fh);
                        let e = self.mse(lo, hi);
                        if e < best_err {
                            best_err = e;
                            best = (lo, hi);
                        }
                    }
                }
                best
            }
        }
    }
}

/// Runs `samples` (one input vector per graph input) through the f32 graph and
/// returns per-value statistics. `tick` is called once per sample per pass.
pub fn calibrate(
    cg: &CGraph,
    samples: &[Vec<Vec<f32>>],
    method: Method,
    mut tick: impl FnMut(),
) -> Result<HashMap<usize, Stats>> {
    let (mut b, map) = lower_f32(cg)?;
    strix_runtime::plan::plan(&mut b.g, false);
    let model = Model::new(Default::default(), b.g, b.c)?;
    let mut sess = Session::new(&model);
    let mut stats: HashMap<usize, Stats> = HashMap::new();
    let acts: Vec<(usize, usize)> = map
        .iter()
        .enumerate()
        .filter_map(|(v, t)| {
            t.filter(|&t| matches!(model.graph.tensors[t].storage, Storage::Arena { .. }))
                .map(|t| (v, t))
        })
        .collect();
    let passes = if method == Method::Minmax { 1 } else { 2 };
    for pass in 0..passes {
        for s in samples {
            for (i, data) in s.iter().enumerate() {
                let buf = sess.input_mut(i)?;
                if buf.len() != data.len() {
                    anyhow::bail!(
                        "sample input {i} has {} values, the model expects {}",
                        data.len(),
                        buf.len()
                    );
                }
                buf.copy_from_slice(data);
            }
            sess.run()?;
            for &(v, t) in &acts {
                let Some(TensorData::F32(d)) = sess.tensor(t) else {
                    continue;
                };
                let st = stats.entry(v).or_insert_with(Stats::new);
                if pass == 0 {
                    for &x in d {
                        if x.is_finite() {
                            st.min = st.min.min(x);
                            st.max = st.max.max(x);
                        }
                    }
                } else {
                    if st.hist.is_empty() {
                        st.hist = vec![0; BINS];
                        st.lo = st.min.min(0.0);
                        st.hi = st.max.max(0.0).max(st.lo + 1e-12);
                    }
                    let w = st.bin_width();
                    for &x in d {
                        if x.is_finite() {
                            let i = (((x - st.lo) / w) as usize).min(BINS - 1);
                            st.hist[i] += 1;
                        }
                    }
                }
            }
            tick();
        }
    }
    for st in stats.values_mut() {
        if !st.min.is_finite() {
            st.min = 0.0;
            st.max = 0.0;
        }
    }
    Ok(stats)
}

//! Per-layer error of the int8 graph against the f32 graph on one sample.

use crate::ir::{CGraph, COp};
use crate::lower::{lower_f32, Builder};
use anyhow::Result;
use strix_runtime::graph::Quant;
use strix_runtime::{Model, Session, TensorData};

/// One row per compiler value: (node name, op, cosine int8 vs f32, max abs error / f32 range).
pub fn layer_errors(
    cg: &CGraph,
    int8: &Builder,
    value_tensor: &[Option<usize>],
    x: &[f32],
) -> Result<Vec<(String, &'static str, f64, f64)>> {
    let (mut fb, fmap) = lower_f32(cg)?;
    strix_runtime::plan::plan(&mut fb.g, false);
    let fm = Model::new(Default::default(), fb.g, fb.c)?;
    let mut qb = Builder {
        g: int8.g.clone(),
        c: int8.c.clone(),
    };
    strix_runtime::plan::plan(&mut qb.g, false);
    let qm = Model::new(Default::default(), qb.g, qb.c)?;
    let (mut fs, mut qs) = (Session::new(&fm), Session::new(&qm));
    fs.input_mut(0)?.copy_from_slice(x);
    qs.input_mut(0)?.copy_from_slice(x);
    fs.run()?;
    qs.run()?;
    let mut rows = vec![];
    for n in &cg.nodes {
        let v = n.output;
        let (Some(ft), Some(qt)) = (fmap[v], value_tensor[v]) else {
            continue;
        };
        let Some(TensorData::F32(want)) = fs.tensor(ft) else {
            continue;
        };
        let got: Vec<f32> = match qs.tensor(qt) {
            Some(TensorData::F32(d)) => d.to_vec(),
            Some(TensorData::I8(d)) => {
                let q = qm.graph.tensors[qt].quant.unwrap_or(Quant {
                    scale: 1.0,
                    zero_point: 0,
                });
                d.iter()
                    .map(|&c| (c as i32 - q.zero_point) as f32 * q.scale)
                    .collect()
            }
            _ => continue,
        };
        let cos = crate::eval::cosine(want, &got);
        let range = want.iter().fold(0f32, |a, &b| a.max(b.abs())).max(1e-12);
        let err = want
            .iter()
            .zip(&got)
            .fold(0f32, |a, (&p, &q)| a.max((p - q).abs()))
            / range;
        let op = match &n.op {
            COp::Conv { .. } => "Conv",
            o => o.name(),
        };
        rows.push((n.name.clone(), op, cos, err as f64));
    }
    Ok(rows)
}

//! `strix eval`: the int8 `.strix` model against the fp32 ONNX model run by
//! tract, on the same preprocessed samples.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use strix_runtime::meta::Decoder;
use strix_runtime::postprocess::{decode, map50, Decoded};
use strix_runtime::Model;
use tract_onnx::prelude::*;

/// The fp32 reference: tract running the original ONNX file.
pub struct Reference {
    plan: std::sync::Arc<TypedRunnableModel>,
}

impl Reference {
    pub fn new(onnx: &Path, input_shape: &[usize]) -> Result<Self> {
        let proto = crate::onnx::load_proto(onnx)?;
        let graph = proto.graph.as_ref().ok_or_else(|| anyhow!("no graph"))?;
        let inits: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|i| i.name.as_str()).collect();
        let names: Vec<String> = graph
            .input
            .iter()
            .map(|i| i.name.clone())
            .filter(|n| !inits.contains(n.as_str()))
            .collect();
        let model = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .map_err(|e| anyhow!("tract cannot load {}: {e}", onnx.display()))?
            .with_input_names(&names)
            .map_err(|e| anyhow!("{e}"))?
            .with_input_fact(0, f32::fact(input_shape).into())
            .map_err(|e| anyhow!("{e}"))?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| anyhow!("tract cannot optimise {}: {e}", onnx.display()))?;
        Ok(Reference { plan })
    }

    pub fn run(&self, shape: &[usize], x: &[f32]) -> Result<Vec<(Vec<f32>, Vec<usize>)>> {
        self.run_inputs(&[(shape, x)])
    }

    /// Runs with every graph input given, in the model's input order (e.g.
    /// audio and recurrent state); returns every output.
    pub fn run_inputs(&self, inputs: &[(&[usize], &[f32])]) -> Result<Vec<(Vec<f32>, Vec<usize>)>> {
        let ts = inputs
            .iter()
            .map(|(shape, x)| {
                Tensor::from_shape(shape, x)
                    .map(|t| t.into())
                    .map_err(|e| anyhow!("{e}"))
            })
            .collect::<Result<TVec<TValue>>>()?;
        let out = self.plan.run(ts).map_err(|e| anyhow!("tract run: {e}"))?;
        out.iter()
            .map(|v| {
                let v = v.cast_to::<f32>().map_err(|e| anyhow!("{e}"))?;
                let arr = v.to_plain_array_view::<f32>().map_err(|e| anyhow!("{e}"))?;
                Ok((arr.iter().copied().collect(), v.shape().to_vec()))
            })
            .collect()
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 && bb == 0.0 {
        1.0
    } else {
        ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
    }
}

#[derive(Debug, serde::Serialize)]
pub struct EvalReport {
    pub samples: usize,
    /// Mean cosine similarity per output, int8 vs fp32.
    pub cosine: Vec<f64>,
    pub cosine_min: Vec<f64>,
    pub top1_agreement: Option<f64>,
    pub map50_vs_fp32: Option<f64>,
    pub per_sample: Vec<serde_json::Value>,
}

pub fn evaluate(onnx: &Path, m: &Model, samples: &[PathBuf]) -> Result<EvalReport> {
    let g = &m.graph;
    let shape = g.tensors[g.inputs[0]].shape.clone();
    let reference = Reference::new(onnx, &shape)?;
    let nout = g.outputs.len();
    let (mut cos_sum, mut cos_min) = (vec![0f64; nout], vec![f64::INFINITY; nout]);
    let (mut agree, mut maps) = (0usize, vec![]);
    let mut per_sample = vec![];
    for p in samples {
        let x = crate::media::load_input(p, &m.meta.input, &shape)?;
        let want = reference.run(&shape, &x)?;
        let got = crate::run_values(m, &x)?;
        if want.len() != got.len() {
            bail!(
                "fp32 model has {} outputs, .strix has {}",
                want.len(),
                got.len()
            );
        }
        let mut cs = vec![];
        for i in 0..nout {
            if want[i].0.len() != got[i].0.len() {
                bail!(
                    "output {i}: fp32 has {} values, .strix {}",
                    want[i].0.len(),
                    got[i].0.len()
                );
            }
            let c = cosine(&want[i].0, &got[i].0);
            cos_sum[i] += c;
            cos_min[i] = cos_min[i].min(c);
            cs.push(c);
        }
        let dec = |o: &Vec<(Vec<f32>, Vec<usize>)>| -> Result<Decoded> {
            let v: Vec<(&[f32], &[usize])> = o
                .iter()
                .map(|(a, b)| (a.as_slice(), b.as_slice()))
                .collect();
            decode(&m.meta.decoder, &v).map_err(|e| anyhow!("{e}"))
        };
        let mut entry = serde_json::json!({ "sample": p.display().to_string(), "cosine": cs });
        match (dec(&want).context("decoding fp32")?, dec(&got)?) {
            (Decoded::TopK(a), Decoded::TopK(b)) => {
                let same = a.first().map(|x| x.0) == b.first().map(|x| x.0);
                agree += same as usize;
                entry["top1_fp32"] = serde_json::json!(a.first());
                entry["top1_int8"] = serde_json::json!(b.first());
            }
            (Decoded::Detections(a), Decoded::Detections(b)) => {
                let v = map50(&b, &a) as f64;
                maps.push(v);
                entry["map50"] = serde_json::json!(v);
                entry["detections_fp32"] = serde_json::json!(a.len());
                entry["detections_int8"] = serde_json::json!(b.len());
            }
            _ => {}
        }
        per_sample.push(entry);
    }
    let n = samples.len().max(1) as f64;
    let classify = matches!(m.meta.decoder, Decoder::Classify { .. });
    let detect = matches!(
        m.meta.decoder,
        Decoder::Fastestdet { .. } | Decoder::Ultraface { .. }
    );
    Ok(EvalReport {
        samples: samples.len(),
        cosine: cos_sum.iter().map(|c| c / n).collect(),
        cosine_min: cos_min,
        top1_agreement: classify.then(|| agree as f64 / n),
        map50_vs_fp32: detect.then(|| maps.iter().sum::<f64>() / maps.len().max(1) as f64),
        per_sample,
    })
}

/// `strix eval`: [`evaluate`] of the model at `model`, prepared as `load` says.
pub fn eval_cmd(
    onnx: &Path,
    model: &Path,
    samples: &[PathBuf],
    json: bool,
    load: &strix_runtime::LoadOptions,
) -> Result<()> {
    let m = Model::load_with(model, load)?;
    let r = evaluate(onnx, &m, samples)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("samples: {}", r.samples);
        for (i, (c, mn)) in r.cosine.iter().zip(&r.cosine_min).enumerate() {
            println!("output {i}: cosine mean {c:.5}, min {mn:.5}");
        }
        if let Some(a) = r.top1_agreement {
            println!("top-1 agreement with fp32: {:.1}%", 100.0 * a);
        }
        if let Some(m) = r.map50_vs_fp32 {
            println!("mAP@0.5 vs fp32 boxes: {m:.4}");
        }
    }
    Ok(())
}

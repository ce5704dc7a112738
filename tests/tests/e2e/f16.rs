//! f16 weight storage on the real models: `--fp32 --f16-weights` builds of
//! KWS and VWW, and an int8 KWS whose two largest layers stay f32 with f16
//! weights (what the pruner's mixed precision asks for), are smaller files
//! whose outputs stay within f16 rounding of the f32-weight builds.

use std::collections::HashSet;
use strix_runtime::graph::{Op, Storage};
use strix_runtime::Model;
use strix_tests::{case, scratch, Case};
use strix_tools::calib::Method;
use strix_tools::ir::COp;
use strix_tools::lower::{self, Int8Options};

fn inputs(c: &Case, m: &Model) -> Vec<Vec<f32>> {
    let shape = &m.graph.tensors[m.graph.inputs[0]].shape;
    c.samples
        .iter()
        .map(|p| strix_tools::media::load_input(p, &m.meta.input, shape).unwrap())
        .collect()
}

/// (max |a - b| over every output of every sample, max |a|).
fn compare(a: &Model, b: &Model, xs: &[Vec<f32>]) -> (f32, f32) {
    let (mut diff, mut range) = (0f32, 0f32);
    for x in xs {
        let (ya, yb) = (
            strix_tools::run_values(a, x).unwrap(),
            strix_tools::run_values(b, x).unwrap(),
        );
        for ((va, _), (vb, _)) in ya.iter().zip(&yb) {
            for (p, q) in va.iter().zip(vb) {
                diff = diff.max((p - q).abs());
                range = range.max(p.abs());
            }
        }
    }
    (diff, range)
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

#[test]
fn fp32_builds_with_f16_weights_are_smaller_and_agree() {
    for name in ["kws", "vww"] {
        let dir = scratch("f16-fp32");
        let c = case(name);
        let build = |f16: bool| {
            let out = dir.join(format!("{name}-{f16}.strix"));
            let opts = Int8Options {
                f16_weights: f16,
                ..Default::default()
            };
            let m =
                strix_tools::convert_with(&c.onnx, &[], &out, None, Method::Mse, true, false, opts)
                    .unwrap();
            (m, std::fs::metadata(&out).unwrap().len())
        };
        let ((m32, n32), (m16, n16)) = (build(false), build(true));
        // Every conv and gemm with constant weights stores them as f16, and
        // inspect says so.
        let j = strix_tools::inspect_json(&m16);
        let mut f16_ops = 0;
        for (n, o) in m16.graph.nodes.iter().zip(j["ops"].as_array().unwrap()) {
            // The two builds have the same nodes and tensors.
            let weighted = matches!(n.op, Op::Conv { .. } | Op::Gemm { .. })
                && matches!(
                    m32.graph.tensors[n.inputs[1]].storage,
                    Storage::Const { .. }
                );
            if weighted {
                assert!(matches!(
                    m16.graph.tensors[n.inputs[1]].storage,
                    Storage::ConstF16 { .. }
                ));
                assert_eq!(o["precision"], "f32 (f16 weights)", "{name}: {}", n.name);
                f16_ops += 1;
            } else {
                assert_eq!(o["precision"], "f32", "{name}: {}", n.name);
            }
        }
        assert!(
            f16_ops >= 5,
            "{name}: only {f16_ops} layers with f16 weights"
        );
        assert_eq!(
            j["weights_bytes"].as_u64().unwrap() as usize,
            m32.consts.bytes() - 2 * m16.consts.f16.len()
        );
        let xs = inputs(&c, &m32);
        let (diff, range) = compare(&m32, &m16, &xs);
        eprintln!(
            "{name} --fp32: {n32} bytes, with --f16-weights {n16} bytes; \
             max abs output diff {diff:e} (outputs up to {range})"
        );
        assert!(n16 < n32, "{name}: {n16} >= {n32} bytes");
        // Softmax scores: f16 weights (2^-11 relative) move them by far less
        // than 1%, and never change the top class.
        assert!(diff > 0.0 && diff < 0.01, "{name}: max diff {diff}");
        for x in &xs {
            let (a, b) = (
                strix_tools::run_values(&m32, x).unwrap(),
                strix_tools::run_values(&m16, x).unwrap(),
            );
            assert_eq!(argmax(&a[0].0), argmax(&b[0].0), "{name}: top-1 changed");
        }
    }
}

#[test]
fn int8_kws_with_two_f32_layers_in_f16() {
    let c = case("kws");
    let meta = strix_tools::config::load(None, &c.onnx).unwrap();
    let mut cg = strix_tools::onnx::import(&c.onnx).unwrap();
    strix_tools::equalize::equalize(&mut cg);
    let shape = cg.values[cg.inputs[0]].shape.clone();
    let samples: Vec<Vec<Vec<f32>>> = c
        .calib
        .iter()
        .map(|p| vec![strix_tools::media::load_input(p, &meta.input, &shape).unwrap()])
        .collect();
    let stats = strix_tools::calib::calibrate(&cg, &samples, Method::Mse, || {}).unwrap();
    // The two layers with the most weights.
    let mut layers: Vec<(usize, usize)> = cg
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.op, COp::Conv { .. } | COp::Gemm { .. }))
        .map(|(i, n)| (cg.values[n.inputs[1]].shape.iter().product(), i))
        .collect();
    layers.sort_unstable_by(|a, b| b.cmp(a));
    let keep: HashSet<usize> = layers[..2].iter().map(|&(_, i)| i).collect();
    let weights: usize = layers[..2].iter().map(|&(w, _)| w).sum();
    let model = |f16: &HashSet<usize>| {
        let opts = Int8Options {
            keep_f32: keep.clone(),
            f16: f16.clone(),
            ..Default::default()
        };
        let l = lower::lower_int8(&cg, &stats, Method::Mse, &opts).unwrap();
        let mut b = l.builder;
        strix_runtime::plan::plan(&mut b.g, true);
        Model::new(meta.clone(), b.g, b.c).unwrap()
    };
    let m32 = model(&HashSet::new());
    let m16 = model(&keep);
    // Without f16 weights, the kept layers store their weights as f32.
    assert_eq!(m32.consts.f16.len(), 0);
    for &i in &keep {
        let n = m16
            .graph
            .nodes
            .iter()
            .find(|n| n.name == cg.nodes[i].name)
            .unwrap();
        assert_eq!(strix_tools::precision(&m16.graph, n), "f32 (f16 weights)");
    }
    let (n32, n16) = (m32.to_bytes().len(), m16.to_bytes().len());
    let xs: Vec<Vec<f32>> = samples.into_iter().map(|mut s| s.remove(0)).collect();
    let (diff, _) = compare(&m32, &m16, &xs);
    eprintln!(
        "int8 KWS, {} f32 layers ({weights} weights): {n32} bytes, with f16 weights {n16} bytes; \
         max abs output diff {diff:e}",
        keep.len()
    );
    assert_eq!(m32.consts.bytes() - m16.consts.bytes(), 2 * weights);
    assert!(n16 < n32, "{n16} >= {n32}");
    assert!(diff < 0.01, "max diff {diff}");
}

/// Per-chunk speech probabilities of the Silero VAD over `audio`, the state
/// carried between 512-sample chunks (64 samples of context, as in vad.rs).
fn vad_stream(m: &Model, audio: &[f32]) -> Vec<f32> {
    let mut s = strix_runtime::Session::new(m);
    let mut state = vec![0f32; 256];
    let mut x = vec![0f32; 576];
    let (mut p, mut out) = (vec![], vec![]);
    for chunk in audio.chunks_exact(512) {
        x.copy_within(512.., 0);
        x[64..].copy_from_slice(chunk);
        s.input_mut(0).unwrap().copy_from_slice(&x);
        s.input_mut(1).unwrap().copy_from_slice(&state);
        s.run().unwrap();
        s.output_f32(0, &mut out).unwrap();
        p.push(out[0]);
        s.output_f32(1, &mut state).unwrap();
    }
    p
}

#[test]
fn vad_lstm_with_f16_weights_streams_like_f32() {
    let dir = scratch("f16-vad");
    let onnx = strix_tests::models().join("vad/silero_vad_16k_static.onnx");
    let build = |f16: bool| {
        let out = dir.join(format!("vad-{f16}.strix"));
        let opts = Int8Options {
            f16_weights: f16,
            ..Default::default()
        };
        let m = strix_tools::convert_with(&onnx, &[], &out, None, Method::Mse, true, false, opts)
            .unwrap();
        (m, std::fs::metadata(&out).unwrap().len())
    };
    let ((m32, n32), (m16, n16)) = (build(false), build(true));
    let lstm = m16
        .graph
        .nodes
        .iter()
        .find(|n| n.op.name() == "Lstm")
        .unwrap();
    assert_eq!(
        strix_tools::precision(&m16.graph, lstm),
        "f32 (f16 weights)"
    );
    let audio =
        strix_runtime::audio::read_wav_mono_16k(&strix_tests::models().join("vad/speech_60s.wav"))
            .unwrap();
    let (a, b) = (vad_stream(&m32, &audio), vad_stream(&m16, &audio));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    let flips = a
        .iter()
        .zip(&b)
        .filter(|(p, q)| (**p > 0.5) != (**q > 0.5))
        .count();
    eprintln!(
        "VAD --fp32: {n32} bytes, with --f16-weights {n16} bytes; {} chunks, \
         max |prob diff| {diff:e}, {flips} speech decisions changed",
        a.len()
    );
    assert!(n16 < n32);
    assert!(diff > 0.0 && diff < 0.02, "max prob diff {diff}");
    assert!(
        flips * 200 <= a.len(),
        "{flips} of {} decisions changed",
        a.len()
    );
}

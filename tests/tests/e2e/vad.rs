//! Silero VAD (conv front end + LSTM) compiled to an f32 `.strix` agrees with
//! tract on 60 s of real speech streamed in 512-sample chunks, the recurrent
//! state carried from each chunk to the next by the caller, and tells speech
//! from silence.

use strix_runtime::audio::read_wav_mono_16k;
use strix_runtime::{Model, Session};
use strix_tests::{models, scratch};
use strix_tools::calib::Method;
use strix_tools::eval::Reference;

const CONTEXT: usize = 64;
const CHUNK: usize = 512;
const STATE: [usize; 3] = [2, 1, 128];
const INPUT: [usize; 2] = [1, CONTEXT + CHUNK];

/// Streams `audio` through both engines from a zero state; returns the
/// per-chunk probabilities (strix, tract) and the largest state difference.
fn stream(m: &Model, reference: &Reference, audio: &[f32]) -> (Vec<f32>, Vec<f32>, f32) {
    let mut s = Session::new(m);
    let state_len: usize = STATE.iter().product();
    let (mut st_strix, mut st_tract) = (vec![0f32; state_len], vec![0f32; state_len]);
    let mut x = vec![0f32; CONTEXT + CHUNK];
    let (mut got, mut want, mut state_diff) = (vec![], vec![], 0f32);
    let (mut p, mut st) = (Vec::new(), Vec::new());
    for chunk in audio.chunks_exact(CHUNK) {
        // The model sees the previous chunk's last 64 samples before the new ones.
        x.copy_within(CHUNK.., 0);
        x[CONTEXT..].copy_from_slice(chunk);
        let r = reference
            .run_inputs(&[(&INPUT, &x), (&STATE, &st_tract)])
            .unwrap();
        s.input_mut(0).unwrap().copy_from_slice(&x);
        s.input_mut(1).unwrap().copy_from_slice(&st_strix);
        s.run().unwrap();
        s.output_f32(0, &mut p).unwrap();
        s.output_f32(1, &mut st).unwrap();
        assert_eq!((p.len(), st.len()), (1, state_len));
        assert_eq!(r[1].0.len(), state_len);
        got.push(p[0]);
        want.push(r[0].0[0]);
        for (a, b) in st.iter().zip(&r[1].0) {
            state_diff = state_diff.max((a - b).abs());
        }
        // Each engine carries its own state: differences would accumulate.
        st_strix.copy_from_slice(&st);
        st_tract.copy_from_slice(&r[1].0);
    }
    (got, want, state_diff)
}

#[test]
fn vad_matches_tract_streaming_and_tells_speech_from_silence() {
    let dir = scratch("vad");
    let onnx = models().join("vad/silero_vad_16k_static.onnx");
    let out = dir.join("vad.strix");
    strix_tools::convert(&onnx, &[], &out, None, Method::Mse, true, false)
        .unwrap_or_else(|e| panic!("converting the VAD: {e:#}"));
    let m = Model::load(&out).unwrap();
    let g = &m.graph;
    let shape = |id: usize| g.tensors[id].shape.clone();
    assert_eq!(g.inputs.len(), 2, "audio and state inputs");
    assert_eq!(shape(g.inputs[0]), INPUT);
    assert_eq!(shape(g.inputs[1]), STATE);
    assert_eq!(shape(g.outputs[1]), STATE);
    assert!(
        g.nodes.iter().any(|n| n.op.name() == "Lstm"),
        "the LSTM runs as one op"
    );
    let reference = Reference::new(&onnx, &INPUT).unwrap();

    let speech = read_wav_mono_16k(&models().join("vad/speech_60s.wav")).unwrap();
    assert!(speech.len() >= 59 * 16_000, "60 s file");
    let (got, want, state_diff) = stream(&m, &reference, &speech);
    let max_diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let frac = |v: &[f32]| v.iter().filter(|&&p| p > 0.5).count() as f64 / v.len() as f64;
    eprintln!(
        "VAD over {} chunks: max |strix - tract| = {max_diff:.3e} (state {state_diff:.3e}); \
         speech chunks strix {:.3}, tract {:.3}",
        got.len(),
        frac(&got),
        frac(&want)
    );
    assert!(
        max_diff < 1e-4,
        "probability differs from tract by {max_diff}"
    );
    assert!(
        state_diff < 1e-3,
        "state differs from tract by {state_diff}"
    );
    // The reference figure for this file is 77% of chunks above 0.5.
    assert!(
        (0.65..0.9).contains(&frac(&got)),
        "speech fraction {}",
        frac(&got)
    );
    // The first speech segment starts at 0.03 s: the first 2 s are speech.
    let first = &got[..2 * 16_000 / CHUNK];
    assert!(frac(first) > 0.8, "first 2 s: {first:?}");

    // Silence (digital zeros, then faint hiss at -60 dBFS) is not speech.
    let mut seed = 0x2545f491u32;
    let silence: Vec<f32> = (0..3 * 16_000)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            if i < 16_000 {
                0.0
            } else {
                (seed as f32 / u32::MAX as f32 - 0.5) * 2e-3
            }
        })
        .collect();
    let (got, want, _) = stream(&m, &reference, &silence);
    let worst = got.iter().copied().fold(0f32, f32::max);
    assert!(worst < 0.2, "silence scored up to {worst}");
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-4, "silence: {a} vs tract {b}");
    }
}

/// The VAD's ONNX file with its LSTM node changed by `f`, converted (f32).
fn convert_mutated_lstm(f: impl Fn(&mut tract_onnx::pb::NodeProto)) -> String {
    use prost::Message;
    let dir = scratch("vad-bad");
    let mut proto =
        strix_tools::onnx::load_proto(&models().join("vad/silero_vad_16k_static.onnx")).unwrap();
    let g = proto.graph.as_mut().unwrap();
    let lstm = g.node.iter_mut().find(|n| n.op_type == "LSTM").unwrap();
    f(lstm);
    let path = dir.join("bad.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    let e = strix_tools::convert(
        &path,
        &[],
        &dir.join("bad.strix"),
        None,
        Method::Mse,
        true,
        false,
    )
    .expect_err("an unsupported LSTM must not convert");
    format!("{e:#}")
}

#[test]
fn unsupported_lstm_variants_are_named() {
    use tract_onnx::pb::{attribute_proto::AttributeType, AttributeProto};
    let string_attr = |name: &str, v: &str| AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    };
    type Mutation = Box<dyn Fn(&mut tract_onnx::pb::NodeProto)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "direction",
            Box::new(move |n| n.attribute.push(string_attr("direction", "reverse"))),
        ),
        (
            "clip",
            Box::new(|n| {
                n.attribute.push(AttributeProto {
                    name: "clip".into(),
                    r#type: AttributeType::Float as i32,
                    f: 3.0,
                    ..Default::default()
                })
            }),
        ),
        (
            "activations",
            Box::new(|n| {
                n.attribute.push(AttributeProto {
                    name: "activations".into(),
                    r#type: AttributeType::Strings as i32,
                    strings: vec![b"Relu".to_vec(), b"Tanh".to_vec(), b"Tanh".to_vec()],
                    ..Default::default()
                })
            }),
        ),
        ("sequence_lens", Box::new(|n| n.input[4] = "state".into())),
    ];
    for (what, f) in cases {
        let msg = convert_mutated_lstm(f);
        assert!(
            msg.contains(what) && msg.contains("LSTM") && msg.contains("decoder/rnn/LSTM"),
            "{what}: {msg}"
        );
    }
}

#[test]
fn vad_needs_fp32_and_a_consistent_lstm() {
    let dir = scratch("vad-int8");
    let onnx = models().join("vad/silero_vad_16k_static.onnx");
    let wav = models().join("vad/speech_60s.wav");
    // Two inputs: int8 calibration is refused with a pointer to --fp32.
    let e = strix_tools::convert(
        &onnx,
        &[wav],
        &dir.join("q.strix"),
        None,
        Method::Mse,
        false,
        false,
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("--fp32"), "{e:#}");
    // A .strix whose LSTM geometry disagrees with its tensors is rejected at load.
    let out = dir.join("vad.strix");
    let m = strix_tools::convert(&onnx, &[], &out, None, Method::Mse, true, false).unwrap();
    for bump in [
        |g: &mut strix_kernels::reference::LstmGeometry| g.hidden += 1,
        |g: &mut strix_kernels::reference::LstmGeometry| g.seq = usize::MAX / 2,
        |g: &mut strix_kernels::reference::LstmGeometry| g.input = 0,
    ] {
        let mut bad = m.clone();
        for n in &mut bad.graph.nodes {
            if let strix_runtime::graph::Op::Lstm { geom } = &mut n.op {
                bump(geom);
            }
        }
        let bytes = strix_runtime::format::write(&bad.meta, &bad.graph, &bad.consts);
        let Err(e) = Model::from_bytes(&bytes) else {
            panic!("inconsistent LSTM accepted");
        };
        assert!(e.to_string().contains("Lstm"), "{e}");
    }
}

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
    assert!(max_diff < 1e-4, "probability differs from tract by {max_diff}");
    assert!(state_diff < 1e-3, "state differs from tract by {state_diff}");
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

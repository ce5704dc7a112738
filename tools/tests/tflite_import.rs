//! TFLite import on the authors' int8 files (MLPerf Tiny VWW and KWS DS-CNN):
//! Strix's int8 outputs against LiteRT's on the same int8 inputs, and
//! malformed files giving errors, not panics.
//!
//! The expectations in `tests/data/tflite/*.json` come from
//! `scripts/tflite-reference.sh` (LiteRT's reference kernels and its default
//! XNNPACK resolver, run on the int8 inputs this file writes with
//! `STRIX_TFLITE_REF_DIR=dir cargo test --release -p strix-tools --test
//! tflite_import -- --ignored write_reference_inputs`). Each case records a
//! hash of its int8 input, so a change in Strix's preprocessing is caught
//! here instead of silently comparing different inputs.

mod common;
use common::{fnv1a, lower_pinned};

use std::path::{Path, PathBuf};
use strix_kernels::reference::quantize_one;
use strix_runtime::Model;
use strix_tools::tflite;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("strix-tflite-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Case {
    /// `vww` or `kws`.
    key: &'static str,
    model: PathBuf,
    /// (name, sample file) pairs; person.bmp needs decoding (see below).
    samples: Vec<(&'static str, PathBuf)>,
    /// The label each sample must get (where it is known: the "no" clip is
    /// "go" for the fp32 ONNX model and for LiteRT alike on Strix's MFCC
    /// features; every sample must get LiteRT's label in any case).
    want: Vec<Option<&'static str>>,
}

fn cases() -> Vec<Case> {
    let m = models();
    vec![
        Case {
            key: "vww",
            model: m.join("vww/vww_96_int8.tflite"),
            samples: vec![
                ("person", m.join("vww/person.bmp")),
                ("no_person", m.join("vww/no_person.bmp")),
            ],
            want: vec![Some("person"), Some("no_person")],
        },
        Case {
            key: "kws",
            model: m.join("kws/kws_dscnn_int8_reference.tflite"),
            samples: ["yes", "no", "silence", "noise"]
                .into_iter()
                .map(|w| (w, m.join(format!("kws/{w}_1000ms.wav"))))
                .collect(),
            want: vec![Some("yes"), None, Some("_silence_"), Some("_unknown_")],
        },
    ]
}

/// The VWW samples decoded as models/SOURCES.md says (`person.bmp` stores
/// int8 bit patterns: grey = byte ^ 0x80), as RGB PNGs: what a user feeds
/// `strix run`.
fn sample_file(name: &str, path: &Path, dir: &Path) -> PathBuf {
    if path.extension().is_some_and(|e| e == "wav") {
        return path.to_path_buf();
    }
    let img = image::open(path).unwrap().to_luma8();
    let (w, h) = img.dimensions();
    let mut rgb = image::RgbImage::new(w, h);
    for (x, y, p) in img.enumerate_pixels() {
        let g = if name == "person" { p[0] ^ 0x80 } else { p[0] };
        rgb.put_pixel(x, y, image::Rgb([g, g, g]));
    }
    let out = dir.join(format!("{name}.png"));
    rgb.save(&out).unwrap();
    out
}

fn compile(c: &Case, dir: &Path) -> Model {
    tflite::convert(
        &c.model,
        &dir.join(format!("{}.strix", c.key)),
        None,
        &Default::default(),
        &Default::default(),
    )
    .unwrap()
}

/// The f32 input Strix computes for each sample (its own preprocessing:
/// the model TOML beside the file), in the `.strix` input's NCHW order.
fn inputs(c: &Case, m: &Model, dir: &Path) -> Vec<(String, Vec<f32>)> {
    let shape = m.graph.tensors[m.graph.inputs[0]].shape.clone();
    c.samples
        .iter()
        .map(|(name, p)| {
            let f = sample_file(name, p, dir);
            let x = strix_tools::media::load_input(&f, &m.meta.input, &shape).unwrap();
            (name.to_string(), x)
        })
        .collect()
}

/// The file's input quantization, and the int8 codes Strix's Quantize op
/// makes of `x` (NCHW), reordered to TFLite's NHWC.
fn int8_input(c: &Case, m: &Model, x: &[f32]) -> (Vec<i8>, Vec<usize>) {
    let t = &m.graph.tensors[m.graph.inputs[0]];
    // The input Quantize node is the graph input's only reader.
    let q = m
        .graph
        .nodes
        .iter()
        .find(|n| n.inputs.contains(&m.graph.inputs[0]))
        .map(|n| m.graph.tensors[n.output].quant.unwrap())
        .unwrap();
    let codes: Vec<i8> = x
        .iter()
        .map(|&v| quantize_one(v, 1.0 / q.scale, q.zero_point))
        .collect();
    let s = &t.shape;
    assert_eq!(s.len(), 4, "{}", c.key);
    let (n, ch, h, w) = (s[0], s[1], s[2], s[3]);
    let mut nhwc = vec![0i8; codes.len()];
    for b in 0..n {
        for k in 0..ch {
            for y in 0..h {
                for xx in 0..w {
                    nhwc[((b * h + y) * w + xx) * ch + k] = codes[((b * ch + k) * h + y) * w + xx];
                }
            }
        }
    }
    (nhwc, vec![n, h, w, ch])
}

/// Writes each case's int8 input (NHWC, as f32 codes) for
/// `scripts/tflite-reference.py`; run by `scripts/tflite-reference.sh`.
#[test]
#[ignore = "writes the reference inputs; run by scripts/tflite-reference.sh"]
fn write_reference_inputs() {
    let out = PathBuf::from(std::env::var("STRIX_TFLITE_REF_DIR").expect("STRIX_TFLITE_REF_DIR"));
    let dir = scratch("ref");
    for c in cases() {
        let m = compile(&c, &dir);
        let d = out.join(c.key);
        std::fs::create_dir_all(&d).unwrap();
        for (name, x) in inputs(&c, &m, &dir) {
            let (codes, shape) = int8_input(&c, &m, &x);
            let f: Vec<f32> = codes.iter().map(|&v| v as f32).collect();
            strix_tools::media::write_npy(&d.join(format!("{name}.npy")), &shape, &f).unwrap();
            std::fs::write(d.join(format!("{name}.fnv1a")), fnv1a(&codes)).unwrap();
        }
    }
}

/// The expected int8 codes of one case and kernel set.
struct Expect {
    logits: Vec<i32>,
    output: Vec<i32>,
}

fn expectations(key: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/tflite/{key}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn codes(v: &serde_json::Value) -> Vec<i32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as i32)
        .collect()
}

/// Real values -> codes of `q` (exact for values that are dequantized codes).
fn requantize(v: &[f32], scale: f32, zp: i32) -> Vec<i32> {
    v.iter()
        .map(|&x| quantize_one(x, 1.0 / scale, zp) as i32)
        .collect()
}

/// Strix's int8 outputs against LiteRT's reference kernels: the logits
/// (the FULLY_CONNECTED output, int8 in both) bit for bit, the softmax
/// (f32 in Strix, int8 in TFLite) within one step of TFLite's 1/256 grid;
/// the labels right; the counts printed (`--nocapture`) for the README.
#[test]
fn outputs_match_litert() {
    let dir = scratch("cmp");
    let mut report = vec![];
    for c in cases() {
        let m = compile(&c, &dir);
        // A second build whose output is the logits: the graph cut before
        // the softmax (the FULLY_CONNECTED output keeps its pinned int8).
        let (mut cg, _) = tflite::load(&c.model).unwrap();
        let sm = cg
            .nodes
            .iter()
            .position(|n| n.name.starts_with("softmax"))
            .unwrap();
        let logit_v = cg.nodes[sm].inputs[0];
        let lq = cg.pinned.act[&logit_v];
        cg.outputs = vec![logit_v];
        cg.remove_dead();
        let ml = lower_pinned(&cg, m.meta.clone());

        let exp = expectations(c.key);
        let out_q = &exp["output_quant"];
        let (oscale, ozp) = (
            out_q["scale"].as_f64().unwrap() as f32,
            out_q["zero_point"].as_i64().unwrap() as i32,
        );
        for (((name, x), want), e) in inputs(&c, &m, &dir)
            .into_iter()
            .zip(&c.want)
            .zip(exp["cases"].as_array().unwrap())
        {
            assert_eq!(e["name"], name.as_str());
            let (q, _) = int8_input(&c, &m, &x);
            assert_eq!(
                e["input_fnv1a"].as_str().unwrap(),
                fnv1a(&q),
                "{}/{name}: Strix's int8 input differs from the one LiteRT ran on",
                c.key
            );
            let probs = strix_tools::run_values(&m, &x).unwrap().remove(0).0;
            let logits = strix_tools::run_values(&ml, &x).unwrap().remove(0).0;
            let logits = requantize(&logits, lq.scale, lq.zero_point);
            let out = requantize(&probs, oscale, ozp);
            let best = (0..probs.len())
                .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
                .unwrap();
            if let Some(want) = want {
                assert_eq!(m.meta.labels[best], *want, "{}/{name}: {probs:?}", c.key);
            }
            let lite = codes(&e["reference"]["output"]);
            let lite_best = (0..lite.len()).max_by_key(|&i| lite[i]).unwrap();
            assert_eq!(
                best, lite_best,
                "{}/{name}: Strix {probs:?}, LiteRT {lite:?}",
                c.key
            );
            for kernels in ["reference", "xnnpack"] {
                let ex = Expect {
                    // XNNPACK's intermediate tensors are not readable.
                    logits: match &e[kernels]["logits"] {
                        serde_json::Value::Null => logits.clone(),
                        l => codes(l),
                    },
                    output: codes(&e[kernels]["output"]),
                };
                let diff = |a: &[i32], b: &[i32]| -> (usize, usize, i32) {
                    assert_eq!(a.len(), b.len());
                    let d: Vec<i32> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
                    (
                        d.iter().filter(|&&v| v == 0).count(),
                        d.iter().filter(|&&v| v == 1).count(),
                        d.into_iter().max().unwrap_or(0),
                    )
                };
                let (le, l1, lmax) = diff(&logits, &ex.logits);
                let (oe, o1, omax) = diff(&out, &ex.output);
                let logit_note = if e[kernels]["logits"].is_null() {
                    "logits n/a".to_string()
                } else {
                    format!(
                        "logits {le}/{} equal, {l1} off by 1 (max {lmax})",
                        logits.len()
                    )
                };
                report.push(format!(
                    "{}/{name} vs LiteRT {kernels}: {logit_note}; \
                     softmax {oe}/{} equal, {o1} off by 1 (max {omax})",
                    c.key,
                    out.len()
                ));
                if kernels == "reference" {
                    assert_eq!(
                        logits, ex.logits,
                        "{}/{name}: logits differ from LiteRT's reference kernels",
                        c.key
                    );
                }
                // The softmax is f32 in Strix (TFLite's int8 softmax uses
                // its own exp table): one step from the reference kernels.
                // XNNPACK's softmax is itself up to 5 steps from them:
                // Strix must be no farther from it than they are, plus one.
                let lite_ref = codes(&e["reference"]["output"]);
                let within = out
                    .iter()
                    .zip(&ex.output)
                    .zip(&lite_ref)
                    .all(|((s, x), r)| {
                        (s - x).abs()
                            <= if kernels == "reference" {
                                1
                            } else {
                                (r - x).abs() + 1
                            }
                    });
                assert!(
                    within && lmax <= 1,
                    "{}/{name} vs {kernels}: {out:?} / {:?}, logits {logits:?} / {:?}",
                    c.key,
                    ex.output,
                    ex.logits
                );
            }
        }
    }
    for r in &report {
        eprintln!("{r}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Truncated and byte-flipped copies of both files give errors (or, for
/// flips in weight data, a model), never a panic.
#[test]
fn malformed_files_are_errors_not_panics() {
    for c in cases() {
        let bytes = std::fs::read(&c.model).unwrap();
        let parse = |b: &[u8]| -> Result<(), String> {
            let m = tflite::Model::parse(b).map_err(|e| e.to_string())?;
            tflite::import::import(&m)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        parse(&bytes).unwrap();
        // Every truncation at a coarse stride, plus the first 64 bytes.
        let mut errors = 0;
        let mut cuts: Vec<usize> = (0..64).collect();
        cuts.extend((64..bytes.len()).step_by(bytes.len() / 200 + 1));
        for &cut in &cuts {
            let r = std::panic::catch_unwind(|| parse(&bytes[..cut]));
            match r {
                Err(_) => panic!("{}: truncation at {cut} panicked", c.key),
                Ok(Err(e)) => {
                    assert!(!e.is_empty());
                    errors += 1;
                }
                Ok(Ok(())) => {}
            }
        }
        assert!(errors > cuts.len() / 2, "{}: {errors} errors", c.key);
        // Byte flips: deterministic positions over the whole file, with
        // several patterns (the header and tables sit at both ends).
        let mut s: u64 = 0x9e3779b97f4a7c15;
        let mut flipped_errors = 0;
        for i in 0..3000 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let at = if i < 1000 {
                i % 512 // the root table and vtables
            } else {
                (s >> 33) as usize % bytes.len()
            };
            let mut b = bytes.clone();
            b[at] ^= [0xff, 0x80, 0x01, 0x7f][i % 4];
            match std::panic::catch_unwind(|| parse(&b)) {
                Err(_) => panic!("{}: flipping byte {at} panicked", c.key),
                Ok(Err(_)) => flipped_errors += 1,
                Ok(Ok(())) => {}
            }
        }
        eprintln!(
            "{}: {errors}/{} truncations and {flipped_errors}/3000 byte flips refused",
            c.key,
            cuts.len()
        );
        assert!(flipped_errors > 0);
        // The messages say what is wrong.
        let e = parse(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(
            e.contains("past the end") || e.contains("outside the file"),
            "{e}"
        );
        let mut b = bytes.clone();
        b[4..8].copy_from_slice(b"XXXX");
        assert!(parse(&b).unwrap_err().contains("TFL3"));
    }
}

/// What the int8 contract cannot represent is refused, naming the operator
/// (index and code) or the tensor: each case edits the decoded KWS model.
#[test]
fn unsupported_features_are_refused_by_name() {
    use tflite::schema::{Options, TensorType};
    let bytes = std::fs::read(models().join("kws/kws_dscnn_int8_reference.tflite")).unwrap();
    let base = tflite::Model::parse(&bytes).unwrap();
    let refuse = |edit: &dyn Fn(&mut tflite::Model), want: &[&str]| {
        let mut m = base.clone();
        edit(&mut m);
        let e = match tflite::import::import(&m) {
            Ok(_) => panic!("accepted; wanted {want:?}"),
            Err(e) => format!("{e:#}"),
        };
        for w in want {
            assert!(e.contains(w), "{e:?} lacks {w:?}");
        }
    };
    // An operator outside the mapped set: code, name and index.
    refuse(
        &|m| m.operators[3].code = 18,
        &["operator 3", "MUL (code 18)", "not supported"],
    );
    refuse(&|m| m.operators[5].code = 200, &["operator 5", "code 200"]);
    // uint8 / int16 activations.
    refuse(
        &|m| m.tensors[0].ttype = TensorType::Uint8,
        &["tensor 0", "uint8 activations"],
    );
    refuse(
        &|m| m.tensors[22].ttype = TensorType::Int16,
        &["tensor 22", "int16 activations"],
    );
    // Per-channel activation quantization.
    refuse(
        &|m| {
            let q = m.tensors[23].quant.as_mut().unwrap();
            q.scale = vec![q.scale[0]; 64];
            q.zero_point = vec![-128; 64];
            q.quantized_dimension = 3;
        },
        &["tensor 23", "per-channel activation"],
    );
    // Asymmetric weights.
    refuse(
        &|m| m.tensors[18].quant.as_mut().unwrap().zero_point[7] = 3,
        &[
            "operator 2 (CONV_2D",
            "weights tensor 18",
            "asymmetric weights",
        ],
    );
    // A fused activation outside NONE/RELU/RELU_N1_TO_1/RELU6.
    refuse(
        &|m| {
            if let Options::Conv2D { act, .. } = &mut m.operators[4].options {
                *act = 4;
            }
        },
        &["operator 4 (CONV_2D", "fused activation TANH"],
    );
    // A bias whose scale is not input x weight scale.
    refuse(
        &|m| m.tensors[6].quant.as_mut().unwrap().scale[0] *= 2.0,
        &["bias tensor 6", "not input scale x weight scale"],
    );
    // A pool that changes the quantization.
    refuse(
        &|m| m.tensors[31].quant.as_mut().unwrap().zero_point[0] = -100,
        &["operator 9 (AVERAGE_POOL_2D", "differs from the input's"],
    );
    // Softmax beta.
    refuse(
        &|m| m.operators[12].options = Options::Softmax { beta: 0.5 },
        &["operator 12 (SOFTMAX", "beta 0.5"],
    );
}

/// Found by the `tflite_import` fuzz target after 818,658 executions (session
/// 8): an AVERAGE_POOL_2D whose window (3409152x130) exceeds the int8
/// average's exact-sum bound imported, then failed the runtime's validation
/// as a "compiler bug". The importer now refuses it, naming the bound.
#[test]
fn an_average_pool_window_past_the_int8_bound_is_refused() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tflite/avgpool-window-past-bound.tflite");
    let bytes = std::fs::read(p).unwrap();
    let m = tflite::Model::parse(&bytes).unwrap();
    let e = match tflite::import::import(&m) {
        Ok(_) => panic!("accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("AVERAGE_POOL_2D") && e.contains("8388608-tap bound"),
        "{e}"
    );
}

/// The lowering checks the pins against the graph: a pinned weight without
/// its pinned bias is refused, naming the node.
#[test]
fn incomplete_pins_are_refused() {
    let (mut cg, _) = tflite::load(&models().join("kws/kws_dscnn_int8_reference.tflite")).unwrap();
    let n = cg
        .nodes
        .iter()
        .find(|n| n.name == "conv_2")
        .unwrap()
        .clone();
    cg.pinned.bias.remove(&n.inputs[2]);
    let e = strix_tools::lower::lower_int8(
        &cg,
        &Default::default(),
        strix_tools::calib::Method::Minmax,
        &Default::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("'conv_2'") && e.contains("both be pinned"),
        "{e}"
    );
}

fn strix() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_strix"))
}

fn top1(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    j["top_k"][0]["label"].as_str().unwrap().to_string()
}

/// `strix convert x.tflite -o x.strix` (the TOML beside the file gives
/// the preprocessing and labels), then `strix run` on the samples.
#[test]
fn cli_converts_and_runs_tflite() {
    let dir = scratch("cli");
    for c in cases() {
        let out = dir.join(format!("{}.strix", c.key));
        let o = strix()
            .arg("convert")
            .arg(&c.model)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (name, path) = &c.samples[0];
        let f = sample_file(name, path, &dir);
        let label = top1(&strix().arg("run").arg(&out).arg(&f).output().unwrap());
        assert_eq!(Some(label.as_str()), c.want[0], "{}", c.key);
    }
    // --fp32: an f32 build from the dequantized weights, same label.
    let c = &cases()[0];
    let out = dir.join("vww-fp32.strix");
    let o = strix()
        .arg("convert")
        .arg(&c.model)
        .arg("--fp32")
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = sample_file("person", &c.samples[0].1, &dir);
    assert_eq!(
        top1(&strix().arg("run").arg(&out).arg(&f).output().unwrap()),
        "person"
    );
    // No calibration for a TFLite model; the help says what is supported.
    let c = &cases()[1];
    let o = strix()
        .arg("convert")
        .arg(&c.model)
        .arg("-o")
        .arg(dir.join("x.strix"))
        .arg("--calib")
        .arg(&c.samples[0].1)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("own quantization"), "{e}");
    let h = strix().args(["convert", "--help"]).output().unwrap();
    let h = String::from_utf8_lossy(&h.stdout);
    assert!(
        h.contains("TFLite") && h.contains("DEPTHWISE_CONV_2D"),
        "{h}"
    );
    // An ONNX model still needs --calib (or --fp32).
    let o = strix()
        .arg("convert")
        .arg(models().join("kws/kws_dscnn_f32.onnx"))
        .arg("-o")
        .arg(dir.join("y.strix"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("--calib"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The synthetic model of `scripts/tflite-synthetic.py` (MAX_POOL_2D, ADD,
/// AVERAGE_POOL_2D with partial SAME windows, asymmetric SAME padding,
/// dilation, depth multiplier 2, per-tensor weights, and a flatten of an
/// NHWC tensor with H, W > 1 before FULLY_CONNECTED) against LiteRT's
/// reference kernels on four random int8 inputs, every activation tensor
/// compared: bit-exact up to the average pool; there, Strix rounds
/// `sum(x - zp) / n` half away from zero where TFLite rounds `sum(x) / n`,
/// so the two differ by one exactly where TFLite's sum is an exact half
/// (an even tap count) and its sign differs from Strix's: checked element
/// by element from LiteRT's own input to the pool. After it, one step.
#[test]
fn synthetic_model_matches_litert() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tflite");
    let exp = expectations("synthetic");
    let s: Vec<usize> = exp["input_shape_nhwc"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let q = |k: &str| {
        (
            exp[k]["scale"].as_f64().unwrap() as f32,
            exp[k]["zero_point"].as_i64().unwrap() as i32,
        )
    };
    let (is, iz) = q("input_quant");
    let (h, w, ch) = (s[1], s[2], s[3]);
    // Every activation value as a graph output (in TFLite's NHWC order).
    let (mut cg, _) = tflite::load(&data.join("synthetic.tflite")).unwrap();
    let names = [
        "conv0", "dw1", "maxpool2", "conv3", "conv4", "add5", "avgpool6", "flatten", "output",
    ];
    cg.outputs = names
        .iter()
        .map(|n| cg.values.iter().position(|v| v.name == *n).unwrap())
        .collect();
    let quants: Vec<_> = cg.outputs.iter().map(|v| cg.pinned.act[v]).collect();
    let shapes: Vec<Vec<usize>> = cg
        .outputs
        .iter()
        .map(|&v| cg.values[v].shape.clone())
        .collect();
    let m = lower_pinned(&cg, Default::default());
    let (mut halves, mut out_equal, mut out_total) = (0, 0, 0);
    for e in exp["cases"].as_array().unwrap() {
        let codes_in = codes(&e["input"]);
        // NHWC codes -> the NCHW real values Strix's Quantize maps back
        // to the same codes.
        let mut x = vec![0f32; codes_in.len()];
        for y in 0..h {
            for xx in 0..w {
                for k in 0..ch {
                    x[(k * h + y) * w + xx] = (codes_in[(y * w + xx) * ch + k] - iz) as f32 * is;
                }
            }
        }
        let outs = strix_tools::run_values(&m, &x).unwrap();
        let lite = &e["reference"]["tensors"];
        let mut after_pool = false;
        for (i, name) in names.iter().enumerate() {
            let mut got = requantize(&outs[i].0, quants[i].scale, quants[i].zero_point);
            if shapes[i].len() == 4 {
                // NCHW -> NHWC
                let (c, hh, ww) = (shapes[i][1], shapes[i][2], shapes[i][3]);
                let mut t = vec![0; got.len()];
                for k in 0..c {
                    for y in 0..hh {
                        for xx in 0..ww {
                            t[(y * ww + xx) * c + k] = got[(k * hh + y) * ww + xx];
                        }
                    }
                }
                got = t;
            }
            let want = codes(&lite[*name]);
            let case = format!("synthetic/{}/{name}", e["name"].as_str().unwrap());
            if *name == "avgpool6" {
                // 2x2 SAME stride 1 on 3x3x8: taps (y..=y+1, x..=x+1) in the image.
                let a = codes(&lite["add5"]);
                let zp = quants[i].zero_point;
                for (j, (&g, &t)) in got.iter().zip(&want).enumerate() {
                    let (y, xx, k) = (j / 24, (j / 8) % 3, j % 8);
                    let (mut sum, mut n) = (0, 0);
                    for yy in y..(y + 2).min(3) {
                        for xi in xx..(xx + 2).min(3) {
                            sum += a[(yy * 3 + xi) * 8 + k];
                            n += 1;
                        }
                    }
                    let half = n % 2 == 0 && sum.rem_euclid(n) == n / 2;
                    let crosses = (sum < 0) != (sum - n * zp < 0);
                    if g != t {
                        assert!(
                            (g - t).abs() == 1 && half && crosses,
                            "{case}[{j}]: Strix {g}, LiteRT {t} (sum {sum} over {n} taps)"
                        );
                        halves += 1;
                        after_pool = true;
                    }
                }
            } else if after_pool {
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .max()
                    .unwrap();
                assert!(worst <= 1, "{case}: {got:?} vs {want:?}");
            } else {
                assert_eq!(got, want, "{case}");
            }
            if *name == "output" {
                out_total += got.len();
                out_equal += got.iter().zip(&want).filter(|(a, b)| a == b).count();
                let xnn = codes(&e["xnnpack"]["output"]);
                let worst = got
                    .iter()
                    .zip(&xnn)
                    .map(|(a, b)| (a - b).abs())
                    .max()
                    .unwrap();
                assert!(worst <= 1, "{case} vs XNNPACK: {got:?} vs {xnn:?}");
            }
        }
    }
    eprintln!(
        "synthetic: every tensor bit-exact before the average pool; {halves} average-pool \
         elements (of 288) at exact halves differ by one; outputs {out_equal}/{out_total} equal"
    );
    // The CLI path compiles it too (no TOML: a raw input).
    let dir = scratch("synthetic");
    tflite::convert(
        &data.join("synthetic.tflite"),
        &dir.join("synthetic.strix"),
        None,
        &Default::default(),
        &Default::default(),
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

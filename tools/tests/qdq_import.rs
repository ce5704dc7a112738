//! ONNX QDQ import (already-quantized models keep the file's quantization,
//! see `strix_tools::qdq`): the mappings pinned exactly on hand-made tiny
//! graphs, malformed QDQ refused, graph passes keeping pins true, and the
//! real `bench/*.int8.onnx` files (scripts/quantize_for_ort.py) against ONNX
//! Runtime's int8 outputs.
//!
//! The expectations in `tests/data/qdq/*.json` come from
//! `scripts/qdq-reference.sh` (ONNX Runtime's CPU provider on the inputs this
//! file writes with `STRIX_QDQ_REF_DIR=dir cargo test --release -p
//! strix-tools --test qdq_import -- --ignored write_reference_inputs`); each
//! case records a hash of its int8 input codes. The bench models live
//! outside the repository (`$STRIX_BENCH_MODELS`, default
//! /work/shared/models/bench): the tests that need them say so and pass
//! when they are absent.

mod common;
use common::{fnv1a, lower_pinned};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use strix_kernels::reference::quantize_one;
use strix_runtime::graph::Quant;
use strix_runtime::Model;
use strix_tools::calib::Method;
use tract_onnx::pb::{self, tensor_proto::DataType};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("strix-qdq-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/qdq")
}

fn bench() -> PathBuf {
    std::env::var_os("STRIX_BENCH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/models/bench"))
}

// ---------------------------------------------------------------- tiny graphs

fn tensor(name: &str, dt: DataType, dims: &[i64], ints: &[i32], floats: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        data_type: dt as i32,
        dims: dims.to_vec(),
        int32_data: ints.to_vec(),
        float_data: floats.to_vec(),
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    ins: &[&str],
    outs: &[&str],
    attrs: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use tract_onnx::pb::tensor_shape_proto::{dimension::Value as Dim, Dimension};
    use tract_onnx::pb::type_proto::{Tensor as TensorType, Value as TypeValue};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(TypeValue::TensorType(TensorType {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Dim::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    out_dims: &[i64],
) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: "qdq".into(),
            node: nodes,
            initializer: inits,
            input: vec![value_info("x", &[1, 2, 4, 4])],
            output: vec![value_info("y", out_dims)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The file's numbers of the tiny conv graph.
const X_SCALE: f32 = 0.05;
const X_ZP_U8: i32 = 10;
const W_CODES: [i32; 6] = [5, -7, 127, 3, -128, 0]; // [3, 2, 1, 1]
const W_SCALES: [f32; 3] = [0.01, 0.02, 0.005];
const B_CODES: [i32; 3] = [100, -2000, 7];
const Y_SCALE: f32 = 0.1;
const Y_ZP_I8: i32 = -3;

/// x (f32) -> Q/DQ uint8 -> Conv 1x1 (int8 weights per output channel,
/// int32 bias at scale x*w) -> Q/DQ int8 -> y: the graph `quantize_static`
/// makes. `edit` changes it before it is returned (for the malformed cases).
fn conv_graph(
    edit: impl FnOnce(&mut Vec<pb::NodeProto>, &mut Vec<pb::TensorProto>),
) -> pb::ModelProto {
    let bscales: Vec<f32> = W_SCALES.iter().map(|w| w * X_SCALE).collect();
    let mut inits = vec![
        tensor("xs", DataType::Float, &[], &[], &[X_SCALE]),
        tensor("xz", DataType::Uint8, &[], &[X_ZP_U8], &[]),
        tensor("wq", DataType::Int8, &[3, 2, 1, 1], &W_CODES, &[]),
        tensor("ws", DataType::Float, &[3], &[], &W_SCALES),
        tensor("wz", DataType::Int8, &[3], &[0, 0, 0], &[]),
        tensor("bq", DataType::Int32, &[3], &B_CODES, &[]),
        tensor("bs", DataType::Float, &[3], &[], &bscales),
        tensor("bz", DataType::Int32, &[3], &[0, 0, 0], &[]),
        tensor("ys", DataType::Float, &[], &[], &[Y_SCALE]),
        tensor("yz", DataType::Int8, &[], &[Y_ZP_I8], &[]),
    ];
    let mut nodes = vec![
        node("QuantizeLinear", "x_q", &["x", "xs", "xz"], &["xq"], vec![]),
        node(
            "DequantizeLinear",
            "x_dq",
            &["xq", "xs", "xz"],
            &["xd"],
            vec![],
        ),
        node(
            "DequantizeLinear",
            "w_dq",
            &["wq", "ws", "wz"],
            &["wd"],
            vec![int_attr("axis", 0)],
        ),
        node(
            "DequantizeLinear",
            "b_dq",
            &["bq", "bs", "bz"],
            &["bd"],
            vec![int_attr("axis", 0)],
        ),
        node("Conv", "conv", &["xd", "wd", "bd"], &["c"], vec![]),
        node("QuantizeLinear", "c_q", &["c", "ys", "yz"], &["cq"], vec![]),
        node(
            "DequantizeLinear",
            "c_dq",
            &["cq", "ys", "yz"],
            &["y"],
            vec![],
        ),
    ];
    edit(&mut nodes, &mut inits);
    model(nodes, inits, &[1, 3, 4, 4])
}

fn import(m: &pb::ModelProto) -> anyhow::Result<strix_tools::ir::CGraph> {
    strix_tools::onnx::import_proto(m, Path::new("tiny.onnx"))
}

/// The mapping, exactly: uint8 activations become int8 with their zero
/// point minus 128 and the same scale, int8 ones stay; per-channel int8 weights keep
/// their codes and scales; the int32 bias keeps its codes; the f32
/// constants hold the dequantized values; the Conv clamps to the output
/// pin's representable range; and no calibration is needed.
#[test]
fn tiny_conv_pins_the_file_quantization() {
    let cg = import(&conv_graph(|_, _| {})).unwrap();
    let x = cg.inputs[0];
    assert_eq!(
        cg.pinned.act[&x],
        Quant {
            scale: X_SCALE,
            zero_point: X_ZP_U8 - 128
        }
    );
    let conv = &cg.nodes[0];
    assert_eq!(cg.nodes.len(), 1, "the Q/DQ pairs vanish");
    assert_eq!(
        cg.values[conv.output].name, "y",
        "the graph output keeps its name"
    );
    assert_eq!(
        cg.pinned.act[&conv.output],
        Quant {
            scale: Y_SCALE,
            zero_point: Y_ZP_I8
        }
    );
    let pw = &cg.pinned.weights[&conv.inputs[1]];
    assert_eq!(pw.q, W_CODES.iter().map(|&c| c as i8).collect::<Vec<_>>());
    assert_eq!(pw.scales, W_SCALES.to_vec());
    assert_eq!(cg.pinned.bias[&conv.inputs[2]], B_CODES.to_vec());
    let wf = cg.values[conv.inputs[1]].konst.as_ref().unwrap().as_f32();
    let want: Vec<f32> = W_CODES
        .iter()
        .enumerate()
        .map(|(i, &c)| c as f32 * W_SCALES[i / 2])
        .collect();
    assert_eq!(wf, want);
    let strix_tools::ir::COp::Conv { act, .. } = conv.op else {
        panic!("{:?}", conv.op)
    };
    assert_eq!(act.min, (-128 - Y_ZP_I8) as f32 * Y_SCALE);
    assert_eq!(act.max, (127 - Y_ZP_I8) as f32 * Y_SCALE);

    // Lowered without statistics: the int8 conv computes, per output, the
    // integer arithmetic the file defines (within one step of the float
    // rounding of the requantization).
    let m = lower_pinned(&cg, Default::default());
    let xcodes: Vec<i32> = (0..32).map(|i| i * 37 % 256).collect(); // uint8
    let xf: Vec<f32> = xcodes
        .iter()
        .map(|&c| (c - X_ZP_U8) as f32 * X_SCALE)
        .collect();
    let y = strix_tools::run_values(&m, &xf).unwrap().remove(0).0;
    let mut exact = 0;
    for oc in 0..3 {
        for p in 0..16 {
            let acc: i64 = (0..2)
                .map(|ic| (xcodes[ic * 16 + p] - X_ZP_U8) as i64 * W_CODES[oc * 2 + ic] as i64)
                .sum::<i64>()
                + B_CODES[oc] as i64;
            let real = acc as f64 * X_SCALE as f64 * W_SCALES[oc] as f64;
            let want = ((real / Y_SCALE as f64).round() as i64 + Y_ZP_I8 as i64).clamp(-128, 127);
            let got = quantize_one(y[oc * 16 + p], 1.0 / Y_SCALE, Y_ZP_I8) as i64;
            assert!(
                (got - want).abs() <= 1,
                "channel {oc} pixel {p}: {got} vs {want}"
            );
            exact += (got == want) as usize;
        }
    }
    assert!(exact >= 46, "{exact}/48 exact");
}

/// Per-tensor weight scales and an int8 (not uint8) input pair.
#[test]
fn tiny_conv_per_tensor_weights_int8_input() {
    let cg = import(&conv_graph(|_, inits| {
        for t in inits.iter_mut() {
            match t.name.as_str() {
                "ws" => *t = tensor("ws", DataType::Float, &[], &[], &[0.01]),
                "wz" => *t = tensor("wz", DataType::Int8, &[], &[0], &[]),
                "bs" => *t = tensor("bs", DataType::Float, &[], &[], &[0.01 * X_SCALE]),
                "bz" => *t = tensor("bz", DataType::Int32, &[], &[0], &[]),
                "xz" => *t = tensor("xz", DataType::Int8, &[], &[-20], &[]),
                _ => {}
            }
        }
    }))
    .unwrap();
    assert_eq!(
        cg.pinned.act[&cg.inputs[0]],
        Quant {
            scale: X_SCALE,
            zero_point: -20
        }
    );
    let conv = &cg.nodes[0];
    assert_eq!(cg.pinned.weights[&conv.inputs[1]].scales, vec![0.01; 3]);
    assert_eq!(cg.pinned.bias[&conv.inputs[2]], B_CODES.to_vec());
}

/// Edits a tiny graph's nodes and initializers.
type Edit = Box<dyn FnOnce(&mut Vec<pb::NodeProto>, &mut Vec<pb::TensorProto>)>;

fn import_err(edit: impl FnOnce(&mut Vec<pb::NodeProto>, &mut Vec<pb::TensorProto>)) -> String {
    format!("{:#}", import(&conv_graph(edit)).unwrap_err())
}

fn set_init(inits: &mut [pb::TensorProto], t: pb::TensorProto) {
    let i = inits.iter().position(|x| x.name == t.name).unwrap();
    inits[i] = t;
}

/// Malformed QDQ is refused, naming the node and the problem.
#[test]
fn malformed_qdq_is_refused() {
    let cases: Vec<(&str, Edit, &[&str])> = vec![
        (
            "zero scale",
            Box::new(|_, i| set_init(i, tensor("xs", DataType::Float, &[], &[], &[0.0]))),
            &["x_q", "scale 0 is not a positive"],
        ),
        (
            "zero point out of range",
            Box::new(|_, i| set_init(i, tensor("yz", DataType::Int8, &[], &[200], &[]))),
            &["c_q", "zero point 200 is outside the I8 range"],
        ),
        (
            "missing initializer",
            Box::new(|_, i| i.retain(|t| t.name != "ws")),
            &["w_dq", "unknown value 'ws'"],
        ),
        (
            "pair with two quantizations",
            Box::new(|n, i| {
                i.push(tensor("xs2", DataType::Float, &[], &[], &[0.07]));
                n[1].input[1] = "xs2".into();
            }),
            &["x_dq", "differs from that of QuantizeLinear 'x_q'"],
        ),
        (
            "a value quantized twice differently",
            Box::new(|n, _| {
                n.insert(
                    2,
                    node(
                        "QuantizeLinear",
                        "x_q2",
                        &["x", "ys", "yz"],
                        &["xq2"],
                        vec![],
                    ),
                );
                n.insert(
                    3,
                    node(
                        "DequantizeLinear",
                        "x_dq2",
                        &["xq2", "ys", "yz"],
                        &["xd2"],
                        vec![],
                    ),
                );
            }),
            &["x_dq2", "'x' is quantized twice differently", "by 'x_dq'"],
        ),
        (
            "int16 activations",
            Box::new(|_, i| set_init(i, tensor("yz", DataType::Int16, &[], &[0], &[]))),
            &["c_q", "Int16", "int8 and uint8"],
        ),
        (
            "per-channel activation",
            Box::new(|_, i| {
                set_init(
                    i,
                    tensor("ys", DataType::Float, &[3], &[], &[0.1, 0.2, 0.3]),
                );
                set_init(i, tensor("yz", DataType::Int8, &[3], &[0, 0, 0], &[]));
            }),
            &["c_q", "per-channel quantization of an activation"],
        ),
        (
            "quantized tensor read raw",
            Box::new(|n, _| n[4].input[0] = "xq".into()),
            &["x_q", "read by Conv"],
        ),
        (
            "dequantize of no quantize",
            Box::new(|n, _| {
                n.remove(0);
                n[0].input[0] = "x".into();
            }),
            &["x_dq", "which no QuantizeLinear produced"],
        ),
    ];
    for (what, edit, want) in cases {
        let e = import_err(edit);
        for w in want {
            assert!(e.contains(w), "{what}: {e:?} lacks {w:?}");
        }
    }
}

/// Asymmetric weights cannot be pinned (Strix's weights are symmetric):
/// the pin is dropped, the activations stay pinned, and Strix quantizes
/// the (dequantized) weights itself.
#[test]
fn asymmetric_weights_drop_their_pin() {
    let cg = import(&conv_graph(|_, i| {
        set_init(i, tensor("wz", DataType::Int8, &[3], &[0, 1, 0], &[]))
    }))
    .unwrap();
    assert!(cg.pinned.weights.is_empty() && cg.pinned.bias.is_empty());
    assert_eq!(cg.pinned.act.len(), 2);
    strix_tools::lower::lower_int8(&cg, &HashMap::new(), Method::Minmax, &Default::default())
        .unwrap();
}

/// A BatchNormalization folded into a pinned conv rewrites its weights: the
/// pins no longer describe them and are dropped (check-pins), while the
/// activation pins stay; a Relu fused into the conv keeps the value, whose
/// pin is the Relu output's.
#[test]
fn passes_keep_pins_true() {
    let bn = |n: &mut Vec<pb::NodeProto>, i: &mut Vec<pb::TensorProto>| {
        for (name, v) in [
            ("g", [2.0f32, 1.0, 0.5]),
            ("be", [0.1, 0.0, -0.1]),
            ("mu", [0.0; 3]),
            ("var", [1.0; 3]),
        ] {
            i.push(tensor(name, DataType::Float, &[3], &[], &v));
        }
        n[4].output[0] = "c0".into();
        n.insert(
            5,
            node(
                "BatchNormalization",
                "bn",
                &["c0", "g", "be", "mu", "var"],
                &["c"],
                vec![],
            ),
        );
    };
    let cg = import(&conv_graph(bn)).unwrap();
    assert_eq!(cg.nodes.len(), 1, "BatchNorm folds into the conv");
    assert!(cg.pinned.weights.is_empty(), "{:?}", cg.pinned.weights);
    assert_eq!(cg.pinned.act.len(), 2);

    let relu = |n: &mut Vec<pb::NodeProto>, _: &mut Vec<pb::TensorProto>| {
        n[4].output[0] = "c0".into();
        n.insert(5, node("Relu", "relu", &["c0"], &["c"], vec![]));
    };
    let cg = import(&conv_graph(relu)).unwrap();
    assert_eq!(cg.nodes.len(), 1, "Relu fuses into the conv");
    let conv = &cg.nodes[0];
    assert_eq!(cg.pinned.act[&conv.output].scale, Y_SCALE);
    assert_eq!(cg.pinned.weights.len(), 1);
    let strix_tools::ir::COp::Conv { act, .. } = conv.op else {
        panic!()
    };
    assert_eq!(act.min, 0.0);
}

// ------------------------------------------------------- the bench models

struct Case {
    key: &'static str,
    images: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        key: "mobilenet_v2",
        images: &[
            "astronaut.png",
            "camera.png",
            "faces_1.jpg",
            "faces_13.jpg",
            "fastestdet_0.jpg",
            "fastestdet_3.jpg",
        ],
    },
    Case {
        key: "yolov8n",
        images: &["fastestdet_0.jpg", "faces_1.jpg"],
    },
    Case {
        key: "fastestdet",
        images: &[
            "astronaut.png",
            "camera.png",
            "faces_1.jpg",
            "faces_13.jpg",
            "fastestdet_0.jpg",
            "fastestdet_3.jpg",
        ],
    },
];

/// The QDQ file: in the repo (tests/data/qdq, small ones) or among the
/// bench models.
fn onnx_of(key: &str) -> Option<PathBuf> {
    let kept = data().join(format!("{key}.int8.onnx"));
    if kept.exists() {
        return Some(kept);
    }
    let p = bench().join(format!("{key}.int8.onnx"));
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} is absent (set STRIX_BENCH_MODELS)",
            p.display()
        );
        None
    }
}

/// `strix convert` without --calib: the file's quantization.
fn compile(key: &str, onnx: &Path, dir: &Path) -> Model {
    strix_tools::convert_with(
        onnx,
        &[],
        &dir.join(format!("{key}.strix")),
        Some(&data().join(format!("{key}.toml"))),
        Method::Mse,
        false,
        false,
        strix_tools::ConvertOptions::default(),
    )
    .unwrap()
}

/// The input's pinned quantization (the graph input's Quantize reader).
fn input_quant(m: &Model) -> Quant {
    m.graph
        .nodes
        .iter()
        .find(|n| n.inputs.contains(&m.graph.inputs[0]))
        .map(|n| m.graph.tensors[n.output].quant.unwrap())
        .unwrap()
}

/// Strix's preprocessing of each image, snapped to the input grid (so ORT's
/// QuantizeLinear makes the same codes as Strix's Quantize), with the codes.
fn inputs(c: &Case, m: &Model) -> Vec<(String, Vec<f32>, Vec<i8>)> {
    let shape = m.graph.tensors[m.graph.inputs[0]].shape.clone();
    let q = input_quant(m);
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/images");
    c.images
        .iter()
        .map(|img| {
            let x =
                strix_tools::media::load_input(&images.join(img), &m.meta.input, &shape).unwrap();
            let codes: Vec<i8> = x
                .iter()
                .map(|&v| quantize_one(v, 1.0 / q.scale, q.zero_point))
                .collect();
            let snapped = codes
                .iter()
                .map(|&c| (c as i32 - q.zero_point) as f32 * q.scale)
                .collect();
            let name = img.split('.').next().unwrap().to_string();
            (name, snapped, codes)
        })
        .collect()
}

/// Writes each case's input for `scripts/qdq-reference.py`; run by
/// `scripts/qdq-reference.sh`.
#[test]
#[ignore = "writes the reference inputs; run by scripts/qdq-reference.sh"]
fn write_reference_inputs() {
    let out = PathBuf::from(std::env::var("STRIX_QDQ_REF_DIR").expect("STRIX_QDQ_REF_DIR"));
    let dir = scratch("ref");
    for c in CASES {
        let onnx = onnx_of(c.key).expect("the bench models");
        let m = compile(c.key, &onnx, &dir);
        let d = out.join(c.key);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("model.txt"), onnx.display().to_string()).unwrap();
        let shape = m.graph.tensors[m.graph.inputs[0]].shape.clone();
        for (name, x, codes) in inputs(c, &m) {
            strix_tools::media::write_npy(&d.join(format!("{name}.npy")), &shape, &x).unwrap();
            std::fs::write(d.join(format!("{name}.fnv1a")), fnv1a(&codes)).unwrap();
        }
    }
}

/// Per case: ORT's output codes (uint8, every `stride`-th), and Strix's.
struct Compared {
    name: String,
    ort: Vec<i32>,
    strix: Vec<i32>,
    /// The fp32 model's output on the same grid (unclipped), if recorded.
    fp32: Option<Vec<i32>>,
    scale: f32,
    zp: i32,
    /// One early layer: (ORT's codes, Strix's), every `stride`-th.
    layer: Option<(Vec<i32>, Vec<i32>)>,
}

impl Compared {
    /// Per element, how many steps Strix's code is from ORT's; with the
    /// counts of equal codes and of codes within one step.
    fn steps_apart(&self) -> (Vec<i32>, usize, usize) {
        let d: Vec<i32> = self
            .ort
            .iter()
            .zip(&self.strix)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let e = d.iter().filter(|&&x| x == 0).count();
        let o = d.iter().filter(|&&x| x <= 1).count();
        (d, e, o)
    }
}

fn hex_u8(hex: &str) -> Vec<i32> {
    (0..hex.len() / 2)
        .map(|i| i32::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn hex_i16(hex: &str) -> Vec<i32> {
    (0..hex.len() / 4)
        .map(|i| u16::from_str_radix(&hex[4 * i..4 * i + 4], 16).unwrap() as i16 as i32)
        .collect()
}

/// `m` cut after value `name`, whose int8 codes it outputs (dequantized),
/// and that value's quantization.
fn cut_at(onnx: &Path, m: &Model, name: &str) -> (Model, Quant) {
    let mut cg = strix_tools::onnx::import(onnx).unwrap();
    let v = cg.values.iter().position(|v| v.name == name).unwrap();
    cg.outputs = vec![v];
    cg.remove_dead();
    let q = cg.pinned.act[&v];
    (lower_pinned(&cg, m.meta.clone()), q)
}

fn compare(c: &Case) -> Option<Vec<Compared>> {
    let onnx = onnx_of(c.key)?;
    let dir = scratch(c.key);
    let m = compile(c.key, &onnx, &dir);
    let exp: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data().join(format!("{}.json", c.key))).unwrap(),
    )
    .unwrap();
    let oq = &exp["output_quant_uint8"];
    let (scale, zp) = (
        oq["scale"].as_f64().unwrap() as f32,
        oq["zero_point"].as_i64().unwrap() as i32,
    );
    let stride = exp["stride"].as_u64().unwrap() as usize;
    let mut out = vec![];
    for (name, x, codes) in inputs(c, &m) {
        let e = exp["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{}/{name}: no expectation", c.key));
        assert_eq!(
            e["input_fnv1a"].as_str().unwrap(),
            fnv1a(&codes),
            "{}/{name}: Strix's int8 input differs from the one ORT ran on",
            c.key
        );
        let y = strix_tools::run_values(&m, &x).unwrap().remove(0).0;
        assert_eq!(y.len(), e["len"].as_u64().unwrap() as usize);
        let ort = hex_u8(e["codes_hex"].as_str().unwrap());
        let fp32 = e["fp32_codes_i16_hex"].as_str().map(hex_i16);
        let layer = e.get("layer").map(|l| {
            let (cut, q) = cut_at(&onnx, &m, l["name"].as_str().unwrap());
            let ls = l["stride"].as_u64().unwrap() as usize;
            let y = strix_tools::run_values(&cut, &x).unwrap().remove(0).0;
            let strix = y
                .iter()
                .step_by(ls)
                .map(|&v| quantize_one(v, 1.0 / q.scale, q.zero_point) as i32 + 128)
                .collect();
            (hex_u8(l["codes_hex"].as_str().unwrap()), strix)
        });
        // Strix's output is a dequantized int8 code of the same scale and
        // zero point - 128: back to the file's uint8 codes.
        let strix: Vec<i32> = y
            .iter()
            .step_by(stride)
            .map(|&v| quantize_one(v, 1.0 / scale, zp - 128) as i32 + 128)
            .collect();
        assert_eq!(strix.len(), ort.len());
        out.push(Compared {
            name,
            ort,
            strix,
            fp32,
            scale,
            zp,
            layer,
        });
    }
    Some(out)
}

fn argmax(v: &[i32]) -> usize {
    // First maximum, as numpy's argmax.
    let m = *v.iter().max().unwrap();
    v.iter().position(|&x| x == m).unwrap()
}

fn cosine(a: &[i32], b: &[i32], zp: i32) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = ((x - zp) as f64, (y - zp) as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
}

/// MobileNetV2 as `quantize_static` made it, converted without --calib
/// (the file's scales), against ORT's int8 on six photos. Layer by layer
/// Strix computes what the file defines: its first conv (fed the same
/// codes) matches ORT's codes on > 99% of elements and within one step on
/// all. The logits are further apart: Strix requantizes as TFLite does
/// (fixed point, rounding twice: a value within 2^-(shift+1) below a half
/// rounds up), ORT in float, and the off-by-one codes this leaves on ~0.5%
/// of each layer's elements compound through 52 convolutions (ORT's own
/// optimized and unoptimized runs of this file agree within one step on
/// only 39-64% of the logits). So the logits are held to their cosine with
/// ORT's, to Strix being as close to the fp32 model as ORT's int8 is, and
/// to the top-1 where ORT's margin is clear. The figures print with
/// `--nocapture`.
#[test]
fn mobilenet_v2_matches_onnxruntime() {
    let c = &CASES[0];
    let Some(cmp) = compare(c) else { return };
    let (mut n, mut eq, mut one, mut top1) = (0, 0, 0, 0);
    for r in &cmp {
        let (d, e, o) = r.steps_apart();
        let (best_o, best_s) = (argmax(&r.ort), argmax(&r.strix));
        let mut sorted = r.ort.clone();
        sorted.sort_unstable();
        let margin = sorted[sorted.len() - 1] - sorted[sorted.len() - 2];
        let cos = cosine(&r.ort, &r.strix, r.zp);
        let fp32 = r.fp32.as_ref().unwrap();
        let (cos_sf, cos_of) = (cosine(&r.strix, fp32, r.zp), cosine(&r.ort, fp32, r.zp));
        println!(
            "{}/{}: {e}/{} equal, {o} within 1 step of {} (max {}), cosine {cos:.4} vs ORT int8; \
             vs fp32: Strix {cos_sf:.4}, ORT int8 {cos_of:.4}; top-1 ORT {best_o} Strix {best_s} \
             (ORT's margin {margin} steps)",
            c.key,
            r.name,
            d.len(),
            r.scale,
            d.iter().max().unwrap(),
        );
        assert!(cos > 0.98, "{}: cosine {cos}", r.name);
        assert!(
            cos_sf > cos_of - 0.005,
            "{}: Strix {cos_sf} vs ORT {cos_of}",
            r.name
        );
        if margin > 10 {
            assert_eq!(best_o, best_s, "{}: clear top-1", r.name);
        }
        if let Some((lo, ls)) = &r.layer {
            let d: Vec<i32> = lo.iter().zip(ls).map(|(a, b)| (a - b).abs()).collect();
            let e = d.iter().filter(|&&x| x == 0).count();
            println!(
                "{}/{}: first conv {e}/{} codes equal, max difference {}",
                c.key,
                r.name,
                d.len(),
                d.iter().max().unwrap()
            );
            assert!(
                e * 100 >= 99 * d.len() && d.iter().all(|&x| x <= 1),
                "{}: first conv",
                r.name
            );
        }
        n += d.len();
        eq += e;
        one += o;
        top1 += (best_o == best_s) as usize;
    }
    println!(
        "{}: logits {:.1}% equal, {:.1}% within one step, top-1 agrees on {top1}/{}",
        c.key,
        100.0 * eq as f64 / n as f64,
        100.0 * one as f64 / n as f64,
        cmp.len()
    );
}

/// YOLOv8n imports and runs on the file's quantization; its output (every
/// 42nd element) against ORT's int8: cosine printed, bounded below.
#[test]
fn yolov8n_tracks_onnxruntime() {
    let c = &CASES[1];
    let Some(cmp) = compare(c) else { return };
    for r in &cmp {
        let zp = r.zp;
        let d: Vec<i32> = r
            .ort
            .iter()
            .zip(&r.strix)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let cos = cosine(&r.ort, &r.strix, zp);
        let fp = r
            .fp32
            .as_ref()
            .map(|f| (cosine(&r.strix, f, zp), cosine(&r.ort, f, zp)));
        println!(
            "{}/{}: cosine {cos:.5} vs ORT int8 (vs fp32: Strix, ORT int8 {fp:.5?}), {}/{} equal, \
             {} within 1 step",
            c.key,
            r.name,
            d.iter().filter(|&&x| x == 0).count(),
            d.len(),
            d.iter().filter(|&&x| x <= 1).count()
        );
        assert!(cos > 0.99, "{}/{}: cosine {cos}", c.key, r.name);
    }
}

/// FastestDet as `quantize_static` made it (tests/data/qdq/fastestdet.int8.onnx,
/// kept in the repo), converted without --calib, against ORT's int8 on six
/// photos: issue 16's bar, most output codes within one quantization step of
/// ORT's (measured 2026-12-07: 97.5% within one step, 93.1% equal). The
/// rest sit in the box-size channels (3 and 4 of 85), where a code off by
/// one upstream (TFLite's fixed-point requantization against ORT's float
/// one, see `mobilenet_v2_matches_onnxruntime`) grows to tens of steps: ORT's
/// own optimized and unoptimized runs of this file differ there the same way
/// (97.8-100% within one step, up to 49 steps apart), hence the cosine bound
/// of 0.95 and not 0.99. The figures print with `--nocapture`.
#[test]
fn fastestdet_matches_onnxruntime_within_one_step() {
    let c = CASES.iter().find(|c| c.key == "fastestdet").unwrap();
    let Some(cmp) = compare(c) else { return };
    let (mut n, mut eq, mut one) = (0, 0, 0);
    for r in &cmp {
        let (d, e, o) = r.steps_apart();
        let cos = cosine(&r.ort, &r.strix, r.zp);
        println!(
            "{}/{}: {e}/{} equal, {o} within 1 step (max {}), cosine {cos:.5} vs ORT int8",
            c.key,
            r.name,
            d.len(),
            d.iter().max().unwrap()
        );
        n += d.len();
        eq += e;
        one += o;
    }
    println!(
        "{}: outputs {:.1}% equal, {:.1}% within one step",
        c.key,
        100.0 * eq as f64 / n as f64,
        100.0 * one as f64 / n as f64
    );
    assert!(one * 100 >= n * 95, "{}: {one}/{n} within one step", c.key);
}

/// The real file's pins are the file's numbers: the input's uint8 pair maps
/// to zero point - 128, the first conv's per-channel weight scales are the
/// initializer's, and `convert` with --calib samples of a fully pinned model
/// ignores them (identical output), while --recalibrate calibrates.
#[test]
fn mobilenet_v2_keeps_its_scales() {
    let Some(onnx) = onnx_of("mobilenet_v2") else {
        return;
    };
    let cg = strix_tools::onnx::import(&onnx).unwrap();
    let proto = strix_tools::onnx::load_proto(&onnx).unwrap();
    let init = |name: &str| {
        let t = proto
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .find(|t| t.name == name)
            .unwrap();
        strix_tools::onnx::tensor_from_proto(t).unwrap()
    };
    assert_eq!(
        cg.pinned.act[&cg.inputs[0]],
        Quant {
            scale: init("input_scale").as_f32()[0],
            zero_point: init("input_zero_point").as_i64()[0] as i32 - 128
        }
    );
    let conv0 = &cg.nodes[0];
    assert_eq!(
        cg.pinned.weights[&conv0.inputs[1]].scales,
        init("onnx::Conv_538_scale").as_f32()
    );
    let codes: Vec<i8> = init("onnx::Conv_538_quantized")
        .as_i64()
        .iter()
        .map(|&c| c as i8)
        .collect();
    assert_eq!(cg.pinned.weights[&conv0.inputs[1]].q, codes);
    // Every conv and the gemm are pinned, and every activation they read.
    let weighted = cg
        .nodes
        .iter()
        .filter(|n| {
            matches!(
                n.op,
                strix_tools::ir::COp::Conv { .. } | strix_tools::ir::COp::Gemm { .. }
            )
        })
        .count();
    assert_eq!(cg.pinned.weights.len(), weighted);
    assert_eq!(weighted, 53);
    // Equalization leaves a pinned graph alone. (The pins' clamps already
    // keep it off these convs: lift them, so that only the rule is tested;
    // the control without pins shows it would rescale.)
    let mut unclamped = cg.clone();
    for n in &mut unclamped.nodes {
        if let strix_tools::ir::COp::Conv { act, .. } = &mut n.op {
            *act = strix_tools::ir::Act::NONE;
        }
    }
    let passes = |mut g: strix_tools::ir::CGraph| {
        strix_tools::passes::run_graph_passes(&mut g, &Default::default()).unwrap();
        g
    };
    let consts = |g: &strix_tools::ir::CGraph| -> Vec<_> {
        g.values.iter().map(|v| v.konst.clone()).collect()
    };
    let after = passes(unclamped.clone());
    assert!(after.pinned == cg.pinned, "the pins changed");
    assert!(
        consts(&after) == consts(&unclamped),
        "a pinned graph was rescaled"
    );
    let mut unpinned = unclamped.clone();
    unpinned.pinned = Default::default();
    assert!(
        consts(&passes(unpinned)) != consts(&unclamped),
        "control: CLE rescales"
    );

    let dir = scratch("calib");
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/images");
    let calib = vec![images.join("astronaut.png"), images.join("camera.png")];
    let toml = data().join("mobilenet_v2.toml");
    let build = |calib: &[PathBuf], recalibrate: bool, out: &str| {
        let p = dir.join(out);
        strix_tools::convert_with(
            &onnx,
            calib,
            &p,
            Some(&toml),
            Method::Mse,
            false,
            false,
            strix_tools::ConvertOptions {
                recalibrate,
                ..Default::default()
            },
        )
        .unwrap();
        std::fs::read(p).unwrap()
    };
    let plain = build(&[], false, "a.strix");
    assert_eq!(
        plain,
        build(&calib, false, "b.strix"),
        "--calib changes nothing"
    );
    let re = build(&calib, true, "c.strix");
    assert_ne!(plain, re, "--recalibrate calibrates");
    let m = Model::load(dir.join("c.strix")).unwrap();
    assert_ne!(input_quant(&m).scale, init("input_scale").as_f32()[0]);
}

/// Debug aid: Strix's int8 values named by `STRIX_QDQ_DUMP` (comma
/// separated) for the first mobilenet input, dequantized, as
/// `STRIX_QDQ_REF_DIR/dump/<i>.npy`.
#[test]
#[ignore = "debug aid"]
fn dump_values() {
    let out = PathBuf::from(std::env::var("STRIX_QDQ_REF_DIR").unwrap()).join("dump");
    std::fs::create_dir_all(&out).unwrap();
    let names: Vec<String> = std::env::var("STRIX_QDQ_DUMP")
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    let onnx = onnx_of("mobilenet_v2").unwrap();
    let dir = scratch("dump");
    let m = compile("mobilenet_v2", &onnx, &dir);
    let (_, x, _) = inputs(&CASES[0], &m).remove(0);
    let mut cg = strix_tools::onnx::import(&onnx).unwrap();
    cg.outputs = names
        .iter()
        .map(|n| {
            cg.values
                .iter()
                .position(|v| &v.name == n)
                .unwrap_or_else(|| panic!("{n}"))
        })
        .collect();
    cg.remove_dead();
    let mm = lower_pinned(&cg, m.meta.clone());
    for (i, (y, shape)) in strix_tools::run_values(&mm, &x)
        .unwrap()
        .into_iter()
        .enumerate()
    {
        strix_tools::media::write_npy(&out.join(format!("{i}.npy")), &shape, &y).unwrap();
    }
}

/// A model that quantizes only some tensors needs --calib for the others,
/// and says which; with samples it converts (pins kept where given).
#[test]
fn partial_pins_need_calibration() {
    use prost::Message;
    // Conv -> Add(c, c) -> Q/DQ -> y: the conv's output (read by the int8
    // add) has no pair.
    let m = conv_graph(|n, _| {
        n.truncate(5);
        n.push(node("Add", "add", &["c", "c"], &["a"], vec![]));
        n.push(node(
            "QuantizeLinear",
            "a_q",
            &["a", "ys", "yz"],
            &["aq"],
            vec![],
        ));
        n.push(node(
            "DequantizeLinear",
            "a_dq",
            &["aq", "ys", "yz"],
            &["y"],
            vec![],
        ));
    });
    let dir = scratch("partial");
    let onnx = dir.join("partial.onnx");
    std::fs::write(&onnx, m.encode_to_vec()).unwrap();
    let npy = dir.join("x.npy");
    let x: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.1).collect();
    strix_tools::media::write_npy(&npy, &[1, 2, 4, 4], &x).unwrap();
    let build = |calib: &[PathBuf]| {
        strix_tools::convert_with(
            &onnx,
            calib,
            &dir.join("p.strix"),
            None,
            Method::Minmax,
            false,
            false,
            strix_tools::ConvertOptions::default(),
        )
    };
    let e = format!("{:#}", build(&[]).unwrap_err());
    assert!(e.contains("need calibration samples (--calib): c"), "{e}");
    let m = build(&[npy]).unwrap();
    assert_eq!(input_quant(&m).scale, X_SCALE, "the input keeps its pin");
}

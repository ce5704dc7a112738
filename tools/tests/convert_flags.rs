//! `strix convert` as a new user runs it, through the binary: a detector
//! converted with flags only (no model TOML anywhere), and a model exported
//! with dynamic height and width pinned with `--input-shape`. Both on the
//! shipped FastestDet (`models/fastestdet`).

use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tract_onnx::pb;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn models() -> PathBuf {
    root().join("models")
}

/// The calibration pictures of the e2e tests (`tests/src/lib.rs`).
fn calib() -> Vec<PathBuf> {
    [
        "fastestdet_0.jpg",
        "fastestdet_3.jpg",
        "astronaut.png",
        "camera.png",
        "faces_1.jpg",
        "faces_13.jpg",
    ]
    .iter()
    .map(|n| models().join("images").join(n))
    .collect()
}

/// A fresh folder per test under the target dir.
fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("convert-flags-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn strix(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strix"));
    for a in args {
        c.arg(a);
    }
    c.output().expect("running strix")
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "strix failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn err(o: Output) -> String {
    assert!(!o.status.success(), "strix succeeded where it must fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `strix convert ONNX --calib <pictures> -o OUT EXTRA...`
fn convert(onnx: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strix"));
    c.arg("convert").arg(onnx).arg("--calib").args(calib());
    c.arg("-o").arg(out).args(extra);
    c.output().expect("running strix")
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

/// FastestDet with its TOML hidden (the .onnx alone in a folder), converted
/// with flags only, gives the very file the shipped TOML gives; the TOML
/// convert saves gives it again; without flags the error names them.
#[test]
fn detector_converts_from_flags_alone() {
    let dir = scratch("flags");
    let onnx = dir.join("FastestDet.onnx");
    std::fs::copy(models().join("fastestdet/FastestDet.onnx"), &onnx).unwrap();
    let with_toml = dir.join("toml.strix");
    ok(convert(
        &models().join("fastestdet/FastestDet.onnx"),
        &with_toml,
        &[],
    ));

    let e = err(convert(&onnx, &dir.join("none.strix"), &[]));
    assert!(
        e.contains("not described as an image") && e.contains("--color") && e.contains("--std"),
        "{e}"
    );

    let labels = models().join("fastestdet/coco.names");
    let saved = dir.join("saved.toml");
    let flags = dir.join("flags.strix");
    let o = ok(convert(
        &onnx,
        &flags,
        &[
            "--name",
            "fastestdet",
            "--color",
            "bgr",
            "--mean",
            "0",
            "--std",
            "255",
            "--resize",
            "stretch",
            "--decoder",
            "fastestdet",
            "--labels",
            labels.to_str().unwrap(),
            "--save-config",
            saved.to_str().unwrap(),
        ],
    ));
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrote the model TOML"));
    assert_eq!(
        std::fs::read(&flags).unwrap(),
        std::fs::read(&with_toml).unwrap(),
        "flags-only .strix differs from the TOML's"
    );
    let toml = std::fs::read_to_string(&saved).unwrap();
    assert!(
        toml.contains("color = \"bgr\"") && toml.contains("scale = [0.003921569"),
        "{toml}"
    );
    let again = dir.join("again.strix");
    ok(convert(
        &onnx,
        &again,
        &["--config", saved.to_str().unwrap()],
    ));
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&with_toml).unwrap()
    );

    // The metadata a user sees, and the detections the shipped sample gives
    // (4 persons and a bat with the fp32 model, models/SOURCES).
    let meta = json(&ok(strix(&[&"inspect", &flags, &"--json"])));
    assert_eq!(meta["decoder"]["kind"], "fastestdet");
    assert_eq!(meta["input_spec"]["color"], "bgr");
    assert_eq!(meta["labels"], 80);
    let sample = models().join("images/fastestdet_0.jpg");
    let run = json(&ok(strix(&[&"run", &flags, &sample])));
    let persons = run["detections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["label"] == "person")
        .count();
    assert!(persons >= 3, "{run}");
}

/// Flags that contradict each other or the model are errors naming the flag.
#[test]
fn conflicting_flags_are_named() {
    let dir = scratch("conflicts");
    let fd = models().join("fastestdet/FastestDet.onnx");
    let out = dir.join("x.strix");
    for (extra, want) in [
        (&["--scale", "0.1", "--std", "10"][..], "--std"),
        (&["--top-k", "3"][..], "--top-k is for --decoder classify"),
        (
            &["--decoder", "classify", "--nms-iou", "0.5"],
            "--nms-iou is for",
        ),
        (&["--mean", "1,2"], "--mean 1,2: give one value or three"),
        (&["--std", "0"], "--std 0: every value must be above 0"),
        (
            &["--score-threshold", "2"],
            "--score-threshold 2: must be within",
        ),
        (&["--color", "purple"], "--color"),
        (
            &["--labels", "/nonexistent/labels.txt"],
            "--labels /nonexistent",
        ),
        (
            &["--input-shape", "input.1=1,4,352,352"],
            "dimension 1 is fixed to 3",
        ),
        (&["--input-shape", "input.1=1,3,352"], "gives 3 dimensions"),
        (
            &["--input-shape", "input.1=1,3,0,352"],
            "dimension 0 is not allowed",
        ),
        (
            &["--input-shape", "image=1,3,352,352"],
            "no input 'image'; its inputs: 'input.1' [1, 3, 352, 352]",
        ),
        (
            &["--input-layout", "nhwc"],
            "has 352 channels in its last axis",
        ),
    ] {
        let e = err(convert(&fd, &out, extra));
        assert!(e.contains(want), "{extra:?}: {e}");
    }
    // An audio model's TOML and image flags.
    let kws = models().join("kws/kws_dscnn_f32.onnx");
    let e = err(strix(&[
        &"convert", &kws, &"--fp32", &"-o", &out, &"--color", &"rgb",
    ]));
    assert!(
        e.contains("kws_dscnn_f32.toml says [input] kind = \"audio\""),
        "{e}"
    );
}

/// FastestDet with its input dims made symbolic (`[batch, 3, height, width]`,
/// intermediate shapes dropped), as a dynamic-shape export declares them.
fn dynamic_fastestdet(dst: &Path) {
    use pb::tensor_shape_proto::dimension::Value as D;
    use pb::type_proto::Value as TV;
    let mut m =
        strix_tools::onnx::load_proto(&models().join("fastestdet/FastestDet.onnx")).unwrap();
    let g = m.graph.as_mut().unwrap();
    g.value_info.clear();
    let inp = g.input.iter_mut().find(|i| i.name == "input.1").unwrap();
    let Some(TV::TensorType(tt)) = inp.r#type.as_mut().unwrap().value.as_mut() else {
        panic!("input.1 is not a tensor")
    };
    for (d, p) in tt
        .shape
        .as_mut()
        .unwrap()
        .dim
        .iter_mut()
        .zip(["batch", "", "height", "width"])
    {
        if !p.is_empty() {
            d.value = Some(D::DimParam(p.into()));
        }
    }
    std::fs::write(dst, m.encode_to_vec()).unwrap();
}

/// A dynamic-shape model converts with `--input-shape` and runs: pinned at
/// the exported size it gives the static model's file byte for byte, and
/// agrees with fp32 (tract on the same dynamic ONNX, pinned alike). This
/// export baked 352x352 into its channel-shuffle Reshapes, so another size
/// is refused at the node that cannot follow, not miscompiled.
#[test]
fn dynamic_model_converts_with_input_shape() {
    let dir = scratch("dynamic");
    let onnx = dir.join("FastestDet.onnx");
    dynamic_fastestdet(&onnx);
    for f in ["FastestDet.toml", "coco.names"] {
        std::fs::copy(models().join("fastestdet").join(f), dir.join(f)).unwrap();
    }
    let e = err(convert(&onnx, &dir.join("x.strix"), &[]));
    assert!(
        e.contains("'input.1' [batch, 3, height, width] has a dynamic dimension 2")
            && e.contains("--input-shape input.1=1,3,HEIGHT,WIDTH"),
        "{e}"
    );

    let stat = dir.join("static.strix");
    ok(convert(
        &models().join("fastestdet/FastestDet.onnx"),
        &stat,
        &[],
    ));
    let pinned = dir.join("352.strix");
    ok(convert(
        &onnx,
        &pinned,
        &["--input-shape", "input.1=1,3,352,352"],
    ));
    assert_eq!(
        std::fs::read(&pinned).unwrap(),
        std::fs::read(&stat).unwrap()
    );
    let samples = [
        models().join("images/fastestdet_0.jpg"),
        models().join("images/fastestdet_3.jpg"),
    ];
    let ev = json(&ok(strix(&[
        &"eval",
        &onnx,
        &pinned,
        &"--samples",
        &samples[0],
        &samples[1],
        &"--json",
    ])));
    let map = ev["map50_vs_fp32"].as_f64().unwrap();
    assert!(
        map >= 0.95,
        "pinned dynamic model vs fp32: map50 {map} ({ev})"
    );

    let e = err(convert(
        &onnx,
        &dir.join("y.strix"),
        &["--input-shape", "input.1=1,3,256,416"],
    ));
    assert!(
        e.contains("node 'Reshape_13'") && e.contains("cannot reshape"),
        "{e}"
    );
}

/// VWW as a TensorFlow export declares it: input `input_1` [1, 96, 96, 3]
/// read by Transpose(0, 3, 1, 2) (what tf2onnx emits before the first conv).
fn nhwc_vww(dst: &Path) {
    use pb::tensor_shape_proto::dimension::Value as D;
    use pb::type_proto::Value as TV;
    let mut m = strix_tools::onnx::load_proto(&models().join("vww/vww_96_float.onnx")).unwrap();
    let g = m.graph.as_mut().unwrap();
    for n in g.node.iter_mut() {
        for i in n.input.iter_mut().filter(|i| *i == "input_1") {
            *i = "input_1_nchw".into();
        }
    }
    let inp = g.input.iter_mut().find(|i| i.name == "input_1").unwrap();
    let Some(TV::TensorType(tt)) = inp.r#type.as_mut().unwrap().value.as_mut() else {
        panic!("input_1 is not a tensor")
    };
    for (d, v) in tt
        .shape
        .as_mut()
        .unwrap()
        .dim
        .iter_mut()
        .zip([1, 96, 96, 3])
    {
        d.value = Some(D::DimValue(v));
    }
    g.node.insert(
        0,
        pb::NodeProto {
            name: "to_nchw".into(),
            op_type: "Transpose".into(),
            input: vec!["input_1".into()],
            output: vec!["input_1_nchw".into()],
            attribute: vec![pb::AttributeProto {
                name: "perm".into(),
                r#type: pb::attribute_proto::AttributeType::Ints as i32,
                ints: vec![0, 3, 1, 2],
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    std::fs::write(dst, m.encode_to_vec()).unwrap();
}

/// `--input-layout nhwc`: pictures reach an NHWC model, whose leading
/// transpose then cancels out: the same file as the NCHW model's.
#[test]
fn nhwc_model_converts_with_input_layout() {
    let dir = scratch("nhwc");
    let onnx = dir.join("vww_96_float.onnx");
    nhwc_vww(&onnx);
    std::fs::copy(
        models().join("vww/vww_96_float.toml"),
        dir.join("vww_96_float.toml"),
    )
    .unwrap();
    let e = err(convert(&onnx, &dir.join("x.strix"), &[]));
    assert!(
        e.contains("[1, 96, 96, 3] looks NHWC") && e.contains("--input-layout nhwc"),
        "{e}"
    );
    let nchw = dir.join("nchw.strix");
    ok(convert(&models().join("vww/vww_96_float.onnx"), &nchw, &[]));
    let nhwc = dir.join("nhwc.strix");
    ok(convert(&onnx, &nhwc, &["--input-layout", "nhwc"]));
    assert_eq!(std::fs::read(&nhwc).unwrap(), std::fs::read(&nchw).unwrap());
}

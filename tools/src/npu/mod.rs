//! `strix convert --board`: the Rockchip NPU part of a model, compiled by
//! Rockchip's own compiler (rknn-toolkit2, run as a Python subprocess) and
//! stored as the `.strix` file's `RKNN` section (see `strix_runtime::npu`).
//!
//! Partition: the longest prefix of the compiled Strix graph whose ops the
//! board's NPU generation supports (Rockchip's RKNN-Toolkit2 operator
//! support list; see [`supported`]) becomes the NPU part; the rest (and the
//! decoders, which run in the runtime's post-processing) stays on the CPU.
//! The prefix's nodes also stay in the graph as the CPU fallback.
//!
//! What the toolkit gets: the original fp32 ONNX file cut at the prefix's
//! output tensors (`load_onnx(outputs=...)`), Strix's own preprocessed
//! calibration samples (the same float32 tensors Strix calibrates on, as
//! `.npy`), mean 0 / std 1 (Strix preprocesses), and the board. The toolkit
//! chooses its own int8 scales from those samples; at the boundary the
//! runtime converts the NPU's float outputs into Strix's scales, so the CPU
//! ops after the cut see tensors in the scales they were compiled for.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use strix_kernels::reference::UnaryOp;
use strix_runtime::graph::{DType, Graph, Op};
use strix_runtime::npu::{boundary, NpuPart, BOARDS};
use strix_runtime::Model;

const CONVERT_PY: &str = include_str!("rknn_convert.py");
const TORCH_STUB: &str = include_str!("torch_stub.py");

/// The toolkit version the scripts were written and measured against.
pub const TOOLKIT: &str = "rknn-toolkit2 2.5.0";

/// How to install the toolkit (for error messages).
pub const INSTALL_HINT: &str =
    "install it with `scripts/lib/rknn-toolkit.sh` (a Python 3.11 venv in \
~/.cache/strix/rknn-venv: `pip install --no-deps rknn-toolkit2==2.5.0` plus numpy==1.26.4 \
protobuf==4.25.4 onnx==1.16.1 onnxruntime==1.20.1 opencv-python-headless==4.11.0.86 scipy tqdm; \
torch is not needed), or point --rknn-python (or STRIX_RKNN_PYTHON) at a Python that has it";

/// Whether the board's NPU runs `op` (RKNN-Toolkit2's ONNX operator support
/// list, rknpu2 generation: RK3588/RK3566/RV1106). Strix's int8 forms of an
/// ONNX op count as that op. Not on the list, so CPU: LSTM on RV1106 (the
/// list gives LSTM batch 1 for RK3588/RK3566 only; not verified against the
/// RV1106 document), f32 islands are allowed (the toolkit quantizes them).
pub fn supported(op: &Op, board: &str) -> bool {
    match op {
        Op::Conv { .. }
        | Op::QConv { .. }
        | Op::QConvSparse { .. }
        | Op::QConvF32 { .. }
        | Op::Gemm { .. }
        | Op::QGemm { .. }
        | Op::QGemmF32 { .. }
        | Op::MaxPool { .. }
        | Op::AvgPool { .. }
        | Op::Binary { .. }
        | Op::QAdd { .. }
        | Op::QMul { .. }
        | Op::Softmax { .. }
        | Op::ReduceMean { .. }
        | Op::Concat { .. }
        | Op::Transpose { .. }
        | Op::Reshape
        | Op::Slice { .. }
        | Op::Gather { .. }
        | Op::Pad { .. }
        | Op::Resize { .. }
        | Op::Quantize
        | Op::Dequantize
        | Op::Lut => true,
        Op::Unary { kind } => !matches!(kind, UnaryOp::Abs | UnaryOp::Neg | UnaryOp::Sqrt),
        Op::Lstm { .. } => board != "rv1106",
        // Not verified against the toolkit's list: kept on the CPU.
        Op::LayerNorm { .. } => false,
    }
}

/// The NPU prefix of `g` for `board`: its end (exclusive node index), the
/// tensors it reads and the tensors it produces for the CPU part.
pub fn partition(g: &Graph, board: &str) -> Result<(usize, Vec<usize>, Vec<usize>)> {
    if !BOARDS.contains(&board) {
        bail!("--board {board}: expected one of {}", BOARDS.join(", "));
    }
    let end = g
        .nodes
        .iter()
        .position(|n| !supported(&n.op, board))
        .unwrap_or(g.nodes.len());
    if end == 0 {
        bail!(
            "the first op ({} {:?}) does not run on the {board} NPU: nothing to compile",
            g.nodes[0].op.name(),
            g.nodes[0].name
        );
    }
    let (ins, outs) = boundary(g, 0, end);
    let mut graph_ins = g.inputs.clone();
    graph_ins.sort_unstable();
    if ins != graph_ins || ins.iter().any(|&t| g.tensors[t].dtype != DType::F32) {
        bail!("the NPU part of the graph does not start at its f32 inputs (unsupported layout)");
    }
    Ok((end, g.inputs.clone(), outs))
}

/// Checks that `python` imports rknn-toolkit2 (with the torch stand-in).
pub fn check_toolkit(python: &Path) -> Result<()> {
    let dir = TempDir::new("check")?;
    let out = Command::new(python)
        .env("PYTHONPATH", dir.path())
        .args(["-c", "from rknn.api import RKNN"])
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => bail!(
            "{TOOLKIT} (PyPI package rknn-toolkit2) is not importable by {}: {}\n{INSTALL_HINT}",
            python.display(),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => bail!(
            "cannot run {} ({e}); the NPU compiler is {TOOLKIT} (PyPI package rknn-toolkit2): \
             {INSTALL_HINT}",
            python.display()
        ),
    }
}

/// What [`compile`] made.
pub struct Compiled {
    pub part: NpuPart,
    /// Simulator outputs per `simulate` sample, per NPU output (float32, flat).
    pub simulated: Vec<Vec<Vec<f32>>>,
}

/// Compiles the NPU prefix of `model` (compiled from `onnx`) for `board`
/// with the toolkit in `python`; `calib` are preprocessed input tensors
/// (one input), `simulate` samples to run through the toolkit's simulator.
///
/// When the toolkit refuses the whole supported prefix (its graph rewrites
/// meet a pattern they cannot handle without torch, or a bug of theirs),
/// the longest shorter prefix it compiles is searched for among the cuts
/// whose boundary tensors the ONNX file names (a binary search: a pattern
/// the toolkit refuses inside a prefix is inside every longer one), each
/// try reported on stderr; the rest runs on the CPU. With no such prefix,
/// the toolkit's error for the whole part.
pub fn compile(
    model: &Model,
    onnx: &Path,
    board: &str,
    python: &Path,
    calib: &[Vec<f32>],
    simulate: &[Vec<f32>],
) -> Result<Compiled> {
    let g = &model.graph;
    let (end, _, _) = partition(g, board)?;
    let whole = match compile_prefix(model, onnx, board, python, end, calib, simulate) {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    let last = whole.to_string();
    let last = last.lines().last().unwrap_or("");
    let named = onnx_tensor_names(onnx)?;
    let cuts: Vec<usize> = (1..end)
        .filter(|&e| {
            let (_, outs) = boundary(g, 0, e);
            !outs.is_empty() && outs.iter().all(|&t| named.contains(&g.tensors[t].name))
        })
        .collect();
    eprintln!(
        "{board} NPU: {TOOLKIT} refused nodes 0..{end} ({last}); searching the {} shorter \
         cuts for the longest part it compiles",
        cuts.len()
    );
    let (mut lo, mut hi, mut best) = (0, cuts.len(), None);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match compile_prefix(model, onnx, board, python, cuts[mid], calib, simulate) {
            Ok(c) => {
                eprintln!("  nodes 0..{}: compiled", cuts[mid]);
                best = Some(c);
                lo = mid + 1;
            }
            Err(e) => {
                let e = e.to_string();
                eprintln!(
                    "  nodes 0..{}: refused ({})",
                    cuts[mid],
                    e.lines().last().unwrap_or("")
                );
                hi = mid;
            }
        }
    }
    best.ok_or(whole)
}

/// Every tensor name the ONNX file defines (graph inputs, initializers,
/// node outputs): the names the toolkit can cut its graph at.
fn onnx_tensor_names(onnx: &Path) -> Result<std::collections::HashSet<String>> {
    let proto = crate::onnx::load_proto(onnx)?;
    let g = proto.graph.unwrap_or_default();
    Ok(g.input
        .iter()
        .map(|v| v.name.clone())
        .chain(g.initializer.iter().map(|t| t.name.clone()))
        .chain(g.node.iter().flat_map(|n| n.output.iter().cloned()))
        .collect())
}

/// [`compile`] for the prefix of `end` nodes (one toolkit run).
fn compile_prefix(
    model: &Model,
    onnx: &Path,
    board: &str,
    python: &Path,
    end: usize,
    calib: &[Vec<f32>],
    simulate: &[Vec<f32>],
) -> Result<Compiled> {
    let g = &model.graph;
    let (ins, outs) = boundary(g, 0, end);
    if ins.len() != 1 {
        bail!(
            "the NPU compiler path takes one-input models ({} inputs)",
            ins.len()
        );
    }
    if calib.is_empty() {
        bail!("the NPU part needs calibration samples");
    }
    // Output order: the graph's own outputs order when the whole graph is
    // NPU (the ONNX outputs), else the boundary order; names are ONNX names.
    let outputs: Vec<usize> = if end == g.nodes.len() {
        g.outputs.clone()
    } else {
        outs.clone()
    };
    let dir = TempDir::new("convert")?;
    let in_t = &g.tensors[ins[0]];
    let write = |name: &str, x: &[f32]| -> Result<PathBuf> {
        let p = dir.path().join(name);
        crate::media::write_npy(&p, &in_t.shape, x)?;
        Ok(p)
    };
    let mut list = String::new();
    for (i, x) in calib.iter().enumerate() {
        list.push_str(&write(&format!("calib_{i}.npy"), x)?.display().to_string());
        list.push('\n');
    }
    let dataset = dir.path().join("dataset.txt");
    std::fs::write(&dataset, list)?;
    let sims: Vec<Vec<String>> = simulate
        .iter()
        .enumerate()
        .map(|(i, x)| {
            Ok(vec![write(&format!("sim_in_{i}.npy"), x)?
                .display()
                .to_string()])
        })
        .collect::<Result<_>>()?;
    let rknn = dir.path().join("part.rknn");
    let job = serde_json::json!({
        "onnx": onnx,
        "board": board,
        "inputs": [in_t.name],
        "input_shapes": [in_t.shape],
        "outputs": if end == g.nodes.len() { serde_json::Value::Null } else {
            serde_json::json!(outputs.iter().map(|&t| g.tensors[t].name.clone()).collect::<Vec<_>>())
        },
        "dataset": dataset,
        "rknn": rknn,
        "simulate": sims,
        "sim_dir": dir.path(),
    });
    let job_path = dir.path().join("job.json");
    std::fs::write(&job_path, serde_json::to_vec(&job)?)?;
    let script = dir.path().join("rknn_convert.py");
    std::fs::write(&script, CONVERT_PY)?;
    let out = Command::new(python)
        .env("PYTHONPATH", dir.path())
        .arg(&script)
        .arg(&job_path)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(12).collect();
        bail!(
            "{TOOLKIT} failed to compile {} for {board}:\n{}",
            onnx.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let blob = std::fs::read(&rknn).with_context(|| format!("reading {}", rknn.display()))?;
    let mut simulated = vec![];
    for i in 0..simulate.len() {
        let mut per = vec![];
        for j in 0..outputs.len() {
            let p = dir.path().join(format!("sim_{i}_{j}.npy"));
            let v = crate::media::read_npy(&p)
                .with_context(|| format!("simulator output {j} of sample {i}"))?;
            per.push(v);
        }
        simulated.push(per);
    }
    let part = NpuPart {
        board: board.to_string(),
        first_node: 0,
        end_node: end,
        inputs: ins,
        outputs,
        compiler: TOOLKIT.into(),
        blob,
    };
    part.check(g)
        .map_err(|e| anyhow!("the compiled NPU part does not fit the graph: {e}"))?;
    Ok(Compiled { part, simulated })
}

/// `strix convert ... --board B`: checks the toolkit first (so a missing
/// toolkit never leaves a CPU-only file behind), converts as usual, compiles
/// the NPU part and rewrites `out` with it; on any NPU error `out` is removed.
#[allow(clippy::too_many_arguments)]
pub fn convert_for_board(
    onnx: &Path,
    calib: &[PathBuf],
    out: &Path,
    config: Option<&Path>,
    method: crate::calib::Method,
    opts: crate::ConvertOptions,
    board: &str,
    python: &Path,
) -> Result<Model> {
    if !BOARDS.contains(&board) {
        bail!("--board {board}: expected one of {}", BOARDS.join(", "));
    }
    check_toolkit(python)?;
    let model = crate::convert_with(onnx, calib, out, config, method, false, false, opts)?;
    let r = (|| {
        let t = &model.graph.tensors[model.graph.inputs[0]];
        let samples: Vec<Vec<f32>> = calib
            .iter()
            .map(|p| crate::media::load_input(p, &model.meta.input, &t.shape))
            .collect::<Result<_>>()?;
        let c = compile(&model, onnx, board, python, &samples, &[])?;
        let (first, end, bytes) = (c.part.first_node, c.part.end_node, c.part.blob.len());
        let m = model.clone().with_npu_part(c.part)?;
        m.save(out)?;
        eprintln!(
            "{board} NPU: nodes {first}..{end} of {} ({bytes}-byte .rknn blob by {TOOLKIT}); \
             CPU: {} nodes after them; wrote {}",
            m.graph.nodes.len(),
            m.graph.nodes.len() - end,
            out.display()
        );
        Ok(m)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(out);
    }
    r
}

/// A private temporary directory holding the torch stand-in, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "strix-rknn-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("torch"))?;
        std::fs::write(p.join("torch/__init__.py"), TORCH_STUB)?;
        Ok(TempDir(p))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{cosine, Reference};
    use strix_runtime::postprocess::{decode, map50, Decoded};

    /// The toolkit's Python: $STRIX_RKNN_PYTHON or the default venv; `None`
    /// (with a visible SKIP line) when it is not installed.
    fn python() -> Option<PathBuf> {
        let p = std::env::var_os("STRIX_RKNN_PYTHON")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cache/strix/rknn-venv/bin/python"))
            })?;
        match check_toolkit(&p) {
            Ok(()) => Some(p),
            Err(e) => {
                eprintln!(
                    "SKIP (rknn-toolkit2 not installed; scripts/test-npu.sh installs it): {e}"
                );
                None
            }
        }
    }

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    type Outs = Vec<(Vec<f32>, Vec<usize>)>;

    fn decoded(m: &Model, o: &Outs) -> Decoded {
        let v: Vec<(&[f32], &[usize])> = o
            .iter()
            .map(|(a, b)| (a.as_slice(), b.as_slice()))
            .collect();
        decode(&m.meta.decoder, &v).unwrap()
    }

    /// Converts `onnx` for rk3588, runs the toolkit's simulator on `samples`
    /// and returns, per sample, (fp32 tract, Strix CPU int8, simulator) outputs.
    fn simulate(onnx: &str, calib: &[&str], samples: &[&str]) -> Option<(Model, Vec<[Outs; 3]>)> {
        let py = python()?;
        let root = root();
        let onnx = root.join(onnx);
        let calib: Vec<PathBuf> = calib.iter().map(|p| root.join(p)).collect();
        // One file per model: the tests run in parallel threads.
        let stem = onnx.file_stem().unwrap().to_string_lossy().into_owned();
        let out = std::env::temp_dir().join(format!(
            "strix-npu-test-{}-{stem}.strix",
            std::process::id()
        ));
        let m = crate::convert_with(
            &onnx,
            &calib,
            &out,
            None,
            crate::calib::Method::Mse,
            false,
            false,
            crate::ConvertOptions::default(),
        )
        .unwrap();
        let _ = std::fs::remove_file(&out);
        let shape = m.graph.tensors[m.graph.inputs[0]].shape.clone();
        let load = |p: &Path| crate::media::load_input(p, &m.meta.input, &shape).unwrap();
        let calib_x: Vec<Vec<f32>> = calib.iter().map(|p| load(p)).collect();
        let xs: Vec<Vec<f32>> = samples.iter().map(|p| load(&root.join(p))).collect();
        let c = compile(&m, &onnx, "rk3588", &py, &calib_x, &xs).unwrap();
        let tail = (c.part.end_node < m.graph.nodes.len()).then(|| tail(&m, &c.part));
        let reference = Reference::new(&onnx, &shape).unwrap();
        let mut all = vec![];
        for (x, sim) in xs.iter().zip(c.simulated) {
            let fp32 = reference.run(&shape, x).unwrap();
            let int8 = crate::run_values(&m, x).unwrap();
            let sim: Outs = match &tail {
                None => sim
                    .into_iter()
                    .zip(&int8)
                    .map(|(v, (_, s))| {
                        assert_eq!(
                            v.len(),
                            s.iter().product::<usize>(),
                            "simulator output size"
                        );
                        (v, s.clone())
                    })
                    .collect(),
                Some(t) => run_tail(t, &sim),
            };
            all.push([fp32, int8, sim]);
        }
        Some((m, all))
    }

    /// The CPU part after a partial NPU part, as a model whose inputs are
    /// the part's f32 outputs (same tensors, same memory plan).
    fn tail(m: &Model, part: &NpuPart) -> Model {
        let mut g = m.graph.clone();
        g.nodes.drain(..part.end_node);
        g.inputs = part.outputs.clone();
        assert!(
            g.inputs.iter().all(|&t| g.tensors[t].dtype == DType::F32),
            "the test runs the CPU tail from f32 boundary tensors only"
        );
        Model::new(m.meta.clone(), g, m.consts.clone()).unwrap()
    }

    /// Runs [`tail`] on the simulator's outputs of the NPU part.
    fn run_tail(t: &Model, sim: &[Vec<f32>]) -> Outs {
        let mut s = strix_runtime::Session::new(t);
        for (i, v) in sim.iter().enumerate() {
            let x = s.input_mut(i).unwrap();
            assert_eq!(x.len(), v.len(), "simulator output {i} size");
            x.copy_from_slice(v);
        }
        s.run().unwrap();
        (0..t.graph.outputs.len())
            .map(|i| {
                let mut v = vec![];
                s.output_f32(i, &mut v).unwrap();
                (v, t.graph.tensors[t.graph.outputs[i]].shape.clone())
            })
            .collect()
    }

    /// The VWW sample decoded as models/SOURCES.md says (`person.bmp` stores
    /// int8 bit patterns: grey = byte ^ 0x80), as an RGB PNG in the temp dir.
    fn vww_png(name: &str, xor: bool) -> String {
        let img = image::open(root().join("models/vww").join(name))
            .unwrap()
            .to_luma8();
        let mut rgb = image::RgbImage::new(img.width(), img.height());
        for (x, y, p) in img.enumerate_pixels() {
            let g = if xor { p[0] ^ 0x80 } else { p[0] };
            rgb.put_pixel(x, y, image::Rgb([g, g, g]));
        }
        let out = std::env::temp_dir().join(format!(
            "strix-npu-{}-{}",
            std::process::id(),
            name.replace(".bmp", ".png")
        ));
        rgb.save(&out).unwrap();
        out.display().to_string()
    }

    /// Without the toolkit: an error naming the package and how to install
    /// it, and no output file (never a silent CPU-only model). Runs everywhere.
    #[test]
    fn a_missing_toolkit_is_an_error_and_writes_nothing() {
        let root = root();
        let out =
            std::env::temp_dir().join(format!("strix-npu-missing-{}.strix", std::process::id()));
        let _ = std::fs::remove_file(&out);
        let e = convert_for_board(
            &root.join("models/vww/vww_96_float.onnx"),
            &[root.join("models/vww/no_person.bmp")],
            &out,
            None,
            crate::calib::Method::Mse,
            crate::ConvertOptions::default(),
            "rk3588",
            Path::new("/nonexistent/python3.11"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("rknn-toolkit2") && e.contains("scripts/lib/rknn-toolkit.sh"),
            "{e}"
        );
        assert!(!out.exists(), "a CPU-only file was written");
        let e = partition(&Graph::default(), "rk1234")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rk3588, rk3566, rv1106"), "{e}");
    }

    /// VWW: the simulator's class equals fp32's and Strix int8's on both
    /// samples (person, no person).
    #[test]
    fn simulator_vww_top1_matches_fp32_and_strix_int8() {
        let (person, no_person) = (vww_png("person.bmp", true), vww_png("no_person.bmp", false));
        let samples = [person.as_str(), no_person.as_str()];
        let got = simulate("models/vww/vww_96_float.onnx", &samples, &samples);
        for p in samples {
            let _ = std::fs::remove_file(p);
        }
        let Some((m, runs)) = got else {
            return;
        };
        for ((s, want), [fp32, int8, sim]) in samples.iter().zip([1, 0]).zip(&runs) {
            let top = |o: &Outs| match decoded(&m, o) {
                Decoded::TopK(k) => k[0],
                d => panic!("{d:?}"),
            };
            let (f, i, n) = (top(fp32), top(int8), top(sim));
            eprintln!("vww {s}: fp32 {f:?} strix-int8 {i:?} rknn-sim {n:?}");
            assert_eq!(f.0, want, "{s}: fp32 class (sample decoding)");
            assert_eq!(n.0, f.0, "{s}: simulator class vs fp32");
            assert_eq!(n.0, i.0, "{s}: simulator class vs Strix int8");
        }
    }

    /// FastestDet: the simulator's detections against fp32 (mAP@0.5) and Strix int8.
    #[test]
    fn simulator_fastestdet_map50_vs_fp32() {
        let samples = [
            "models/images/fastestdet_0.jpg",
            "models/images/fastestdet_3.jpg",
        ];
        let calib = [
            "models/images/fastestdet_0.jpg",
            "models/images/fastestdet_3.jpg",
            "models/images/camera.png",
            "models/images/astronaut.png",
            "models/images/faces_1.jpg",
            "models/images/faces_13.jpg",
        ];
        detector_map50(
            "fastestdet",
            "models/fastestdet/FastestDet.onnx",
            &calib,
            &samples,
        );
    }

    /// UltraFace RFB-320: the toolkit refuses its whole graph (a rewrite of
    /// the head's reshapes calls torch), so the NPU part is the longest
    /// prefix it compiles and the CPU runs the rest from the simulator's
    /// outputs; the faces against fp32 (mAP@0.5).
    #[test]
    fn simulator_ultraface_map50_vs_fp32() {
        let samples = ["models/images/faces_1.jpg", "models/images/faces_13.jpg"];
        let calib = [
            "models/images/faces_1.jpg",
            "models/images/faces_13.jpg",
            "models/images/astronaut.png",
            "models/images/camera.png",
        ];
        detector_map50(
            "ultraface",
            "models/ultraface/version-RFB-320.onnx",
            &calib,
            &samples,
        );
    }

    /// A detector's simulator detections (plus the CPU tail when the NPU
    /// part is a prefix) against fp32's boxes: mAP@0.5 >= 0.95 per sample.
    fn detector_map50(name: &str, onnx: &str, calib: &[&str], samples: &[&str]) {
        let Some((m, runs)) = simulate(onnx, calib, samples) else {
            return;
        };
        for (s, [fp32, int8, sim]) in samples.iter().zip(&runs) {
            let det = |o: &Outs| match decoded(&m, o) {
                Decoded::Detections(d) => d,
                d => panic!("{d:?}"),
            };
            let (f, i, n) = (det(fp32), det(int8), det(sim));
            let (map_fp32, map_int8) = (map50(&n, &f), map50(&n, &i));
            eprintln!(
                "{name} {s}: detections fp32 {} strix-int8 {} rknn-sim {}; sim map50 vs fp32 \
                 {map_fp32:.3}, vs strix int8 {map_int8:.3}; cosine sim/fp32 {:.4}",
                f.len(),
                i.len(),
                n.len(),
                cosine(&sim[0].0, &fp32[0].0)
            );
            assert!(!f.is_empty());
            assert!(map_fp32 >= 0.95, "{s}: simulator map50 vs fp32 {map_fp32}");
        }
    }
}

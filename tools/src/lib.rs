//! The Strix host tools: ONNX import, calibration, quantization and the
//! `strix` command's subcommands, as a library (tests call it directly).

pub mod augment;
pub mod biascorr;
pub mod calib;
pub mod config;
pub mod equalize;
pub mod eval;
pub mod flags;
pub mod flash;
pub mod ir;
pub mod lower;
pub mod media;
pub mod npu;
pub mod onnx;
mod ops;
pub mod passes;
pub mod prune;
pub mod qdq;
pub mod report;
pub mod sign;
pub mod tflite;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use strix_runtime::graph::{DType, Graph, Node, Op, Storage};
use strix_runtime::postprocess::{decode, Decoded};
use strix_runtime::{LoadOptions, Model, Session};

pub(crate) fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// The optional graph passes of `strix convert` (both on by default; see
/// [`passes`]): turning one off changes how the model is compiled, not what
/// it computes in f32.
pub use passes::PassOptions as Passes;

/// Options of [`convert_with`]: the int8 lowering's, the optional passes and
/// the command line's model description (applied over the model TOML).
/// An [`lower::Int8Options`] converts into one with the default passes.
#[derive(Clone, Debug, Default)]
pub struct ConvertOptions {
    pub int8: lower::Int8Options,
    pub passes: Passes,
    pub overrides: config::Overrides,
    /// Ignore the quantization an already-quantized model (ONNX QDQ) brings
    /// and calibrate on the samples instead (`--recalibrate`).
    pub recalibrate: bool,
}

impl From<lower::Int8Options> for ConvertOptions {
    fn from(int8: lower::Int8Options) -> Self {
        ConvertOptions {
            int8,
            ..Default::default()
        }
    }
}

/// Compiles `onnx` and writes the `.strix` file; returns the model. Default
/// options (sparse convs detected, every pass on; see [`convert_with`]).
pub fn convert(
    onnx_path: &Path,
    calib: &[PathBuf],
    out: &Path,
    config: Option<&Path>,
    method: calib::Method,
    fp32: bool,
    report: bool,
) -> Result<Model> {
    convert_with(
        onnx_path,
        calib,
        out,
        config,
        method,
        fp32,
        report,
        ConvertOptions::default(),
    )
}

/// [`convert`] with explicit options: `opts.int8.sparse = false` never emits
/// block-sparse convs (the `--no-sparse` of `strix convert`);
/// `opts.int8.f16_weights` stores the weights of the layers that stay f32 as
/// f16 (the `--f16-weights`, which also applies to `fp32` builds);
/// `opts.passes` turns optional passes off.
#[allow(clippy::too_many_arguments)]
pub fn convert_with(
    onnx_path: &Path,
    calib: &[PathBuf],
    out: &Path,
    config: Option<&Path>,
    method: calib::Method,
    fp32: bool,
    report: bool,
    opts: impl Into<ConvertOptions>,
) -> Result<Model> {
    let ConvertOptions {
        int8: opts,
        passes,
        overrides,
        recalibrate,
    } = opts.into();
    let resolved = config::resolve(config, onnx_path, &overrides)?;
    let meta = resolved.meta;
    let mut cg = onnx::import_with(onnx_path, &resolved.import)
        .with_context(|| format!("importing {}", onnx_path.display()))?;
    if !cg.pinned.is_empty() && recalibrate {
        eprintln!(
            "note: --recalibrate: ignoring the model's own quantization (QDQ), calibrating on the samples"
        );
        cg.pinned = Default::default();
    }
    crate::passes::run_graph_passes(
        &mut cg,
        &crate::passes::PassOptions {
            equalize: passes.equalize && !fp32,
            ..passes
        },
    )?;
    if cg.inputs.len() != 1 && !fp32 {
        bail!(
            "the model has {} inputs: int8 calibration takes one-input models; \
             convert it with --fp32",
            cg.inputs.len()
        );
    }
    if calib.is_empty() && !fp32 && cg.pinned.is_empty() {
        bail!("int8 conversion needs calibration samples (--calib), or use --fp32");
    }
    if report && calib.is_empty() && !fp32 {
        bail!("--report compares layers on the first --calib sample: give --calib");
    }
    // Samples feed the first input (an f32 build only checks that they load).
    let in_shape = cg.values[cg.inputs[0]].shape.clone();
    flags::check_samples(&meta, calib, &in_shape)?;
    let mut samples: Vec<Vec<Vec<f32>>> = calib
        .iter()
        .map(|p| media::load_input(p, &meta.input, &in_shape).map(|v| vec![v]))
        .collect::<Result<_>>()?;
    if !fp32 && opts.calib_augment {
        // Views of each image after the images themselves: `--report`
        // still compares on the first --calib sample.
        let per = augment::views_per_image(calib.len());
        for p in calib
            .iter()
            .filter(|p| augment::is_image_sample(p, &meta.input))
        {
            for v in augment::views(p, &meta.input, &in_shape, per)? {
                samples.push(vec![v]);
            }
        }
    }
    let mut b = if fp32 {
        let mut b = lower::lower_f32(&cg)?.0;
        if opts.f16_weights {
            let nodes = lower::f16_candidates(&b.g);
            lower::store_weights_f16(&mut b, &nodes)?;
        }
        b
    } else {
        // An already-quantized model needs no calibration when the file
        // quantizes every tensor the int8 graph holds.
        let pinned_only = if cg.pinned.is_empty() {
            None
        } else {
            match lower::lower_int8(&cg, &Default::default(), method, &opts) {
                Ok(l) => Some(l),
                Err(e) if e.downcast_ref::<lower::MissingStats>().is_some() => None,
                Err(e) => return Err(e),
            }
        };
        let lowered =
            match pinned_only {
                Some(l) => {
                    if !calib.is_empty() {
                        eprintln!(
                        "note: the model's own quantization (QDQ) is used; the --calib samples \
                         only feed --report (--recalibrate calibrates on them instead)"
                    );
                    }
                    l
                }
                None => {
                    if calib.is_empty() {
                        let missing = qdq::unpinned(&cg);
                        bail!(
                        "the model quantizes only some tensors: {} have no quantization in the \
                         file and need calibration samples (--calib): {}{}",
                        missing.len(),
                        missing.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
                        if missing.len() > 10 { ", ..." } else { "" }
                    );
                    }
                    let pb = bar(2 * samples.len() as u64, "calibrating");
                    let stats = calib::calibrate(&cg, &samples, method, || pb.inc(1))?;
                    pb.finish_and_clear();
                    if opts.bias_correction {
                        // The f32 graph (`cg`, the report's reference) keeps
                        // the model's own biases.
                        let corrected = biascorr::correct(&cg, &stats, method, &opts, &samples)?;
                        lower::lower_int8(&corrected, &stats, method, &opts)?
                    } else {
                        lower::lower_int8(&cg, &stats, method, &opts)?
                    }
                }
            };
        if report {
            println!(
                "{:<40} {:<10} {:>10} {:>10}",
                "layer", "op", "cosine", "max err"
            );
            for (name, op, cos, err) in
                report::layer_errors(&cg, &lowered.builder, &lowered.value_tensor, &samples[0][0])?
            {
                println!("{name:<40} {op:<10} {cos:>10.5} {err:>10.4}");
            }
        }
        lowered.builder
    };
    strix_runtime::plan::plan(&mut b.g, true);
    let model = Model::new(meta, b.g, b.c)
        .context("the compiled graph failed validation (compiler bug)")?;
    model.save(out)?;
    eprintln!(
        "wrote {} ({} bytes, {} ops, arena {} bytes)",
        out.display(),
        std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
        model.graph.nodes.len(),
        model.graph.arena_bytes()
    );
    Ok(model)
}

/// `strix convert --prune`: compiles `onnx` pruned within `opts.budget` (see
/// [`prune`]); writes the `.strix` file and the JSON/HTML reports if asked.
/// The `calib` samples are split into calibration and held-back parts.
#[allow(clippy::too_many_arguments)]
pub fn convert_pruned(
    onnx_path: &Path,
    calib: &[PathBuf],
    out: &Path,
    config: Option<&Path>,
    method: calib::Method,
    opts: &prune::Options,
    report_json: Option<&Path>,
    report_html: Option<&Path>,
) -> Result<(Model, prune::report::Report)> {
    convert_pruned_with(
        onnx_path,
        calib,
        out,
        config,
        &config::Overrides::default(),
        method,
        opts,
        report_json,
        report_html,
    )
}

/// [`convert_pruned`] with the command line's model description applied
/// over the model TOML.
#[allow(clippy::too_many_arguments)]
pub fn convert_pruned_with(
    onnx_path: &Path,
    calib: &[PathBuf],
    out: &Path,
    config: Option<&Path>,
    overrides: &config::Overrides,
    method: calib::Method,
    opts: &prune::Options,
    report_json: Option<&Path>,
    report_html: Option<&Path>,
) -> Result<(Model, prune::report::Report)> {
    let resolved = config::resolve(config, onnx_path, overrides)?;
    let meta = resolved.meta;
    let mut cg = onnx::import_with(onnx_path, &resolved.import)
        .with_context(|| format!("importing {}", onnx_path.display()))?;
    if cg.inputs.len() != 1 {
        bail!(
            "models with {} inputs are not supported by convert yet (one input)",
            cg.inputs.len()
        );
    }
    if !cg.pinned.is_empty() {
        // Pruning rewrites weights and searches quantizations itself.
        eprintln!(
            "note: --prune: the model's own quantization (QDQ) is dropped; pruned candidates \
             are calibrated on the --calib samples"
        );
        cg.pinned = Default::default();
    }
    // Not `equalize` yet: the search equalizes each int8 candidate itself.
    let pass_opts = crate::passes::PassOptions {
        equalize: false,
        ..opts.passes
    };
    crate::passes::run_graph_passes(&mut cg, &pass_opts)?;
    let in_shape = cg.values[cg.inputs[0]].shape.clone();
    flags::check_samples(&meta, calib, &in_shape)?;
    let samples: Vec<Vec<f32>> = calib
        .iter()
        .map(|p| media::load_input(p, &meta.input, &in_shape))
        .collect::<Result<_>>()?;
    let outcome = prune::search(&cg, &samples, method, &meta, opts)?;
    let model = outcome.model;
    model.save(out)?;
    let rep = outcome.report;
    if let Some(p) = report_json {
        std::fs::write(p, serde_json::to_string_pretty(&rep)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = report_html {
        std::fs::write(p, rep.html()).with_context(|| format!("writing {}", p.display()))?;
    }
    eprintln!("{}", rep.summary());
    eprintln!(
        "wrote {} ({} bytes, {} ops, arena {} bytes)",
        out.display(),
        std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
        model.graph.nodes.len(),
        model.graph.arena_bytes()
    );
    Ok((model, rep))
}

/// How node `n` computes, for `inspect`: `int8`, `f32`, the conversions, and
/// `f32 (f16 weights)` for an f32 layer whose weights are stored as f16.
pub fn precision(g: &Graph, n: &Node) -> &'static str {
    match n.op {
        Op::Quantize => "f32->int8",
        Op::Dequantize => "int8->f32",
        _ if g.tensors[n.output].dtype == DType::I8 => "int8",
        _ if f16_weights(g, n) => "f32 (f16 weights)",
        _ => "f32",
    }
}

/// True when some constant input of `n` is stored as f16.
fn f16_weights(g: &Graph, n: &Node) -> bool {
    n.inputs
        .iter()
        .any(|&i| matches!(g.tensors[i].storage, Storage::ConstF16 { .. }))
}

/// Fraction of zero blocks of a sparse layer storing `stored` of `total` blocks.
fn sparsity(stored: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        1.0 - stored as f64 / total as f64
    }
}

/// What `strix inspect --json` prints: ops with their precision, sizes,
/// MACs and the memory plan. `weights_bytes` counts constants as stored
/// (f16 weights at 2 bytes, also given as `f16_weights_bytes`).
pub fn inspect_json(m: &Model) -> serde_json::Value {
    let g = &m.graph;
    let ops: Vec<serde_json::Value> = g
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let o = &g.tensors[n.output];
            let mut j = serde_json::json!({
                "name": n.name, "op": n.op.name(), "precision": precision(g, n),
                "output_shape": o.shape, "macs": n.op.macs(o.shape.first().copied().unwrap_or(1)),
                "device": if on_npu(m, i) { "npu" } else { "cpu" },
            });
            if f16_weights(g, n) {
                j["weights_storage"] = serde_json::json!("f16");
            }
            if let Some((stored, total)) = n.sparse_blocks(g) {
                j["sparse_blocks"] = serde_json::json!({"stored": stored, "total": total});
                j["sparsity"] = serde_json::json!(sparsity(stored, total));
            }
            j
        })
        .collect();
    let io = |ids: &[usize]| -> Vec<serde_json::Value> {
        ids.iter()
            .map(|&i| serde_json::json!({"name": g.tensors[i].name, "shape": g.tensors[i].shape}))
            .collect()
    };
    serde_json::json!({
        "name": m.meta.name, "ops": ops, "weights_bytes": m.consts.bytes(),
        "f16_weights_bytes": 2 * m.consts.f16.len(), "arena_bytes": g.arena_bytes(),
        "macs": g.macs(), "int8_macs": int8_macs(g), "inputs": io(&g.inputs), "outputs": io(&g.outputs),
        "input_spec": m.meta.input, "decoder": m.meta.decoder, "labels": m.meta.labels.len(),
        "isa": m.isa().name(),
        "npu": m.npu.as_deref().map(|p| serde_json::json!({
            "board": p.board, "nodes": [p.first_node, p.end_node], "blob_bytes": p.blob.len(),
            "compiler": p.compiler, "cpu_fallback": true,
        })),
    })
}

/// Whether node `i` is in the model's NPU part (its CPU fallback stays in the graph).
fn on_npu(m: &Model, i: usize) -> bool {
    m.npu
        .as_deref()
        .is_some_and(|p| (p.first_node..p.end_node).contains(&i))
}

fn int8_macs(g: &Graph) -> u64 {
    g.nodes
        .iter()
        .filter(|n| g.tensors[n.output].dtype == DType::I8)
        .map(|n| n.op.macs(1))
        .sum()
}

/// What `strix inspect` prints: one line per op, then the totals.
pub fn inspect_text(m: &Model) -> String {
    use std::fmt::Write;
    let g = &m.graph;
    let mut s = String::new();
    let _ = writeln!(s, "model {}  ({} ops)", m.meta.name, g.nodes.len());
    if let Some(p) = m.npu.as_deref() {
        let _ = writeln!(
            s,
            "npu: {} runs ops {}..{} ({}-byte blob by {}); their CPU versions stay as the fallback",
            p.board,
            p.first_node,
            p.end_node,
            p.blob.len(),
            p.compiler
        );
    }
    let _ = writeln!(
        s,
        "{:<4} {:<11} {:<17} {:<22} {:>12}  name",
        "#", "op", "precision", "output", "MACs"
    );
    for (i, n) in g.nodes.iter().enumerate() {
        let o = &g.tensors[n.output];
        let sparse = n
            .sparse_blocks(g)
            .map(|(s, t)| {
                format!(
                    "  [sparse: {:.1}% zero 1x4 blocks, {s}/{t} stored]",
                    100.0 * sparsity(s, t)
                )
            })
            .unwrap_or_default();
        let npu = if on_npu(m, i) { "  [npu]" } else { "" };
        let _ = writeln!(
            s,
            "{:<4} {:<11} {:<17} {:<22} {:>12}  {}{sparse}{npu}",
            i,
            n.op.name(),
            precision(g, n),
            format!("{:?}", o.shape),
            n.op.macs(o.shape.first().copied().unwrap_or(1)),
            n.name
        );
    }
    let macs = g.macs().max(1);
    let f16 = if m.consts.f16.is_empty() {
        String::new()
    } else {
        format!(" ({} in f16)", 2 * m.consts.f16.len())
    };
    let _ = writeln!(
        s,
        "weights {} bytes{f16}, arena {} bytes, {} MACs ({:.1}% in int8), kernel path {}",
        m.consts.bytes(),
        g.arena_bytes(),
        g.macs(),
        100.0 * int8_macs(g) as f64 / macs as f64,
        m.isa().name()
    );
    s
}

/// `strix inspect`: the model at `path`, prepared as `load` says (the kernel
/// path it reports).
pub fn inspect(path: &Path, json: bool, load: &LoadOptions) -> Result<()> {
    let m = Model::load_with(path, load)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&inspect_json(&m))?);
    } else {
        print!("{}", inspect_text(&m));
    }
    Ok(())
}

/// Runs one input through a model; returns the f32 outputs and their shapes.
pub fn infer(m: &Model, input: &Path) -> Result<Vec<(Vec<f32>, Vec<usize>)>> {
    let g = &m.graph;
    let shape = g.tensors[g.inputs[0]].shape.clone();
    let x = media::load_input(input, &m.meta.input, &shape)?;
    run_values(m, &x)
}

pub fn run_values(m: &Model, x: &[f32]) -> Result<Vec<(Vec<f32>, Vec<usize>)>> {
    let g = &m.graph;
    let mut s = Session::new(m);
    s.input_mut(0)?.copy_from_slice(x);
    s.run()?;
    let mut outs = vec![];
    for (i, &id) in g.outputs.iter().enumerate() {
        let mut v = vec![];
        s.output_f32(i, &mut v)?;
        outs.push((v, g.tensors[id].shape.clone()));
    }
    Ok(outs)
}

pub fn decoded_json(m: &Model, outs: &[(Vec<f32>, Vec<usize>)]) -> Result<serde_json::Value> {
    let views: Vec<(&[f32], &[usize])> = outs
        .iter()
        .map(|(v, s)| (v.as_slice(), s.as_slice()))
        .collect();
    let label = |c: usize| {
        m.meta
            .labels
            .get(c)
            .cloned()
            .unwrap_or_else(|| c.to_string())
    };
    Ok(
        match decode(&m.meta.decoder, &views).map_err(|e| anyhow::anyhow!("{e}"))? {
            Decoded::Detections(d) => {
                serde_json::json!({ "detections": d.iter().map(|d| serde_json::json!({
            "label": label(d.class as usize), "class": d.class, "score": d.score,
            "box": [d.x0, d.y0, d.x1, d.y1]})).collect::<Vec<_>>() })
            }
            Decoded::TopK(t) => {
                serde_json::json!({ "top_k": t.iter().map(|&(c, s)| serde_json::json!({
            "label": label(c), "class": c, "score": s})).collect::<Vec<_>>() })
            }
            Decoded::Raw => {
                serde_json::json!({ "outputs": m.graph.outputs.iter().zip(outs).map(|(&id, (v, s))| serde_json::json!({
            "name": m.graph.tensors[id].name, "shape": s, "values": v})).collect::<Vec<_>>() })
            }
        },
    )
}

/// `strix run`: one inference of the model at `model` (prepared as `load`
/// says) on `input`.
pub fn run(model: &Path, input: &Path, dump: Option<&Path>, load: &LoadOptions) -> Result<()> {
    let m = Model::load_with(model, load)?;
    let outs = infer(&m, input)?;
    if let Some(dir) = dump {
        std::fs::create_dir_all(dir)?;
        for (&id, (v, s)) in m.graph.outputs.iter().zip(&outs) {
            let name = m.graph.tensors[id].name.replace(['/', ':'], "_");
            media::write_npy(&dir.join(format!("{name}.npy")), s, v)?;
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&decoded_json(&m, &outs)?)?
    );
    Ok(())
}

/// Repository root (for the bundled models), found from the executable or cwd.
fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    if here.join("models").exists() {
        return here;
    }
    PathBuf::from(".")
}

pub fn demo(out: &Path) -> Result<()> {
    let root = repo_root();
    let models = root.join("models");
    std::fs::create_dir_all(out)?;
    let imgs = |names: &[&str]| -> Vec<PathBuf> {
        names
            .iter()
            .map(|n| models.join("images").join(n))
            .collect()
    };
    let cases: Vec<(&str, PathBuf, Vec<PathBuf>, Vec<PathBuf>)> = vec![
        (
            "fastestdet",
            models.join("fastestdet/FastestDet.onnx"),
            imgs(&[
                "fastestdet_0.jpg",
                "fastestdet_3.jpg",
                "astronaut.png",
                "camera.png",
                "faces_1.jpg",
                "faces_13.jpg",
            ]),
            imgs(&["fastestdet_0.jpg", "fastestdet_3.jpg"]),
        ),
        (
            "ultraface-rfb-320",
            models.join("ultraface/version-RFB-320.onnx"),
            imgs(&[
                "faces_1.jpg",
                "faces_13.jpg",
                "astronaut.png",
                "fastestdet_0.jpg",
                "fastestdet_3.jpg",
                "camera.png",
            ]),
            imgs(&["faces_13.jpg"]),
        ),
        (
            "vww",
            models.join("vww/vww_96_float.onnx"),
            imgs(&[
                "astronaut.png",
                "camera.png",
                "faces_1.jpg",
                "faces_13.jpg",
                "fastestdet_0.jpg",
                "fastestdet_3.jpg",
            ]),
            imgs(&["astronaut.png", "camera.png"]),
        ),
        (
            "kws",
            models.join("kws/kws_dscnn_f32.onnx"),
            [
                "yes_1000ms.wav",
                "no_1000ms.wav",
                "silence_1000ms.wav",
                "noise_1000ms.wav",
            ]
            .iter()
            .map(|n| models.join("kws").join(n))
            .collect(),
            vec![models.join("kws/yes_1000ms.wav")],
        ),
    ];
    for (name, onnx_path, calib, inputs) in cases {
        let dst = out.join(format!("{name}.strix"));
        println!(
            "== {name}: convert {} -> {}",
            onnx_path.display(),
            dst.display()
        );
        let m = convert(
            &onnx_path,
            &calib,
            &dst,
            None,
            calib::Method::Mse,
            false,
            false,
        )?;
        let onnx_size = std::fs::metadata(&onnx_path)?.len();
        let strix_size = std::fs::metadata(&dst)?.len();
        println!(
            "   fp32 ONNX {onnx_size} bytes -> .strix {strix_size} bytes ({:.0}%)",
            100.0 * strix_size as f64 / onnx_size as f64
        );
        for input in inputs {
            let outs = infer(&m, &input)?;
            println!(
                "   run {}: {}",
                input.file_name().unwrap().to_string_lossy(),
                serde_json::to_string(&decoded_json(&m, &outs)?)?
            );
        }
    }
    Ok(())
}

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `strix bench`: latency percentiles of `Session::run` on a fixed input.
/// Times `iters` runs of the model at `path` on `threads` threads (default:
/// every core) on the kernel path `load` asks for, and prints median/p90
/// latency, peak RSS, arena bytes and the kernel path.
pub fn bench(
    path: &Path,
    iters: usize,
    warmup: usize,
    threads: Option<usize>,
    json: bool,
    load: &LoadOptions,
) -> Result<()> {
    let m = Model::load_with(path, load)?;
    let threads = threads.unwrap_or_else(strix_runtime::pool::default_threads);
    if threads == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    let mut s = Session::with_threads(&m, threads)?;
    // A deterministic, non-trivial input, written before every run as a real
    // caller does (the memory plan may reuse the input's buffer).
    let x: Vec<f32> = (0..s.input_mut(0)?.len())
        .map(|i| ((i * 7919) % 255) as f32 / 255.0)
        .collect();
    for _ in 0..warmup {
        s.input_mut(0)?.copy_from_slice(&x);
        s.run()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let t = std::time::Instant::now();
        s.input_mut(0)?.copy_from_slice(&x);
        s.run()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let r = serde_json::json!({
        "model": m.meta.name, "iterations": times.len(), "median_ms": pct(0.5), "p90_ms": pct(0.9),
        "min_ms": times[0], "peak_rss_bytes": peak_rss_bytes(), "arena_bytes": m.graph.arena_bytes(),
        "prepared_bytes": m.prepared_bytes(),
        "weights_bytes": m.consts.bytes(), "macs": m.graph.macs(), "isa": m.isa().name(), "threads": threads,
        "backend": s.backend().to_string(),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{}: median {:.3} ms, p90 {:.3} ms over {} runs; peak RSS {} bytes; arena {} bytes; prepared {} bytes; kernel path {}; {} thread(s); backend {}",
            m.meta.name,
            pct(0.5),
            pct(0.9),
            times.len(),
            r["peak_rss_bytes"],
            m.graph.arena_bytes(),
            m.prepared_bytes(),
            m.isa().name(),
            threads,
            s.backend()
        );
    }
    Ok(())
}

//! `strix-peers`: Strix int8 against its peers, measured in the same run.
//!
//! For each model: convert it to int8 `.strix` (calibrated as the end-to-end
//! tests do), then time, interleaved round-robin (one inference of each engine
//! in turn, so machine noise hits all of them alike):
//!
//! - Strix int8 (`Session::run` on a session of 1 and 2 threads),
//! - tract fp32 (tract-onnx's optimized plan; 2 threads through tract-linalg's
//!   rayon executor),
//! - ONNX Runtime fp32 and int8 (QDQ) through the `ort` crate, on the
//!   libonnxruntime named by `ORT_DYLIB_PATH` (the `onnxruntime` pip wheel's),
//!   at 1 and 2 intra-op threads.
//!
//! It prints median and p90 latencies and the ratios Strix/best-ORT and
//! Strix/tract per thread count, and writes them as JSON with `--json FILE`.
//! ORT is skipped, visibly and with the reason, when `ORT_DYLIB_PATH` is unset
//! or the library does not load. `scripts/bench-peers.sh` sets everything up.

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::time::Instant;
use strix_runtime::{Model, Session};
use strix_tools::calib::Method;
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;

#[derive(Parser, Debug)]
#[command(
    name = "strix-peers",
    about = "Strix int8 vs tract fp32 vs ONNX Runtime fp32/int8, interleaved"
)]
struct Args {
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Timed inferences per engine.
    #[arg(long, default_value_t = 40)]
    iters: usize,
    /// Untimed inferences per engine first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Thread counts to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Models to run (comma-separated); default all.
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Working directory: converted models, calibration tensors, ORT int8 models.
    #[arg(long, default_value = "out/peers")]
    out: PathBuf,
    /// Where the benchmark-only models are (mobilenet_v2.*.onnx, yolov8n.*.onnx).
    #[arg(long)]
    bench_dir: Option<PathBuf>,
    /// Let ORT's intra-op workers spin between runs at 2+ threads (off by
    /// default: spinning workers take the cores from the engines interleaved
    /// with ORT, and on a 2-vCPU machine slow ORT itself).
    #[arg(long)]
    ort_spin: bool,
    /// Only write the calibration tensors (`OUT/calib/<model>/*.npy`, what
    /// Strix calibrates on) for scripts/quantize_for_ort.py, then exit.
    #[arg(long)]
    dump_calib: bool,
}

/// One model of the comparison.
struct Spec {
    name: &'static str,
    /// The fp32 ONNX file Strix converts and tract runs.
    onnx: PathBuf,
    /// The fp32 file ORT runs (a cleaned copy when the quantize script made one).
    ort_fp32: PathBuf,
    /// The QDQ int8 file ORT runs.
    ort_int8: PathBuf,
    /// Calibration inputs (images, WAVs or .npy).
    calib: Vec<PathBuf>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// xorshift64*: deterministic inputs without a dependency.
struct Rng(u64);
impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32) / (1u64 << 24) as f32
    }
}

fn specs(args: &Args) -> Result<Vec<Spec>> {
    let root = repo_root();
    let m = root.join("models");
    let out = &args.out;
    let bench = args
        .bench_dir
        .clone()
        .unwrap_or_else(|| root.join("../shared/models/bench"));
    let images: Vec<PathBuf> = [
        "fastestdet_0.jpg",
        "fastestdet_3.jpg",
        "astronaut.png",
        "camera.png",
        "faces_1.jpg",
        "faces_13.jpg",
    ]
    .iter()
    .map(|n| m.join("images").join(n))
    .collect();
    let wavs: Vec<PathBuf> = [
        "yes_1000ms.wav",
        "no_1000ms.wav",
        "silence_1000ms.wav",
        "noise_1000ms.wav",
    ]
    .iter()
    .map(|n| m.join("kws").join(n))
    .collect();
    // The bench models have random weights: only speed matters, so they are
    // calibrated on random inputs in [0, 1] (written once as .npy).
    let random_calib = |name: &str, onnx: &Path| -> Result<Vec<PathBuf>> {
        let cg = strix_tools::onnx::import(onnx)
            .with_context(|| format!("importing {}", onnx.display()))?;
        let shape = cg.values[cg.inputs[0]].shape.clone();
        let dir = out.join("calib").join(name);
        std::fs::create_dir_all(&dir)?;
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        (0..4)
            .map(|i| {
                let p = dir.join(format!("random_{i}.npy"));
                let v: Vec<f32> = (0..shape.iter().product::<usize>())
                    .map(|_| rng.next_f32())
                    .collect();
                strix_tools::media::write_npy(&p, &shape, &v)?;
                Ok(p)
            })
            .collect()
    };
    let ort_fp32 = |name: &str, onnx: &Path| {
        let cleaned = out.join(format!("{name}.fp32.onnx"));
        if cleaned.exists() {
            cleaned
        } else {
            onnx.to_path_buf()
        }
    };
    let all = [
        "mobilenet_v2",
        "yolov8n",
        "fastestdet",
        "ultraface-rfb",
        "kws",
        "vww",
    ];
    let wanted: Vec<&str> = if args.models.is_empty() {
        all.to_vec()
    } else {
        for w in &args.models {
            if !all.contains(&w.as_str()) {
                bail!("unknown model {w} (known: {})", all.join(", "));
            }
        }
        all.iter()
            .copied()
            .filter(|n| args.models.iter().any(|w| w == n))
            .collect()
    };
    let mut v = vec![];
    for name in wanted {
        let spec = match name {
            "mobilenet_v2" | "yolov8n" => {
                let onnx = bench.join(format!("{name}.fp32.onnx"));
                Spec {
                    name,
                    calib: random_calib(name, &onnx)?,
                    ort_fp32: onnx.clone(),
                    ort_int8: bench.join(format!("{name}.int8.onnx")),
                    onnx,
                }
            }
            _ => {
                let (onnx, calib) = match name {
                    "fastestdet" => (m.join("fastestdet/FastestDet.onnx"), images.clone()),
                    "ultraface-rfb" => (m.join("ultraface/version-RFB-320.onnx"), images.clone()),
                    "kws" => (m.join("kws/kws_dscnn_f32.onnx"), wavs.clone()),
                    _ => (m.join("vww/vww_96_float.onnx"), images.clone()),
                };
                Spec {
                    name,
                    ort_fp32: ort_fp32(name, &onnx),
                    ort_int8: out.join(format!("{name}.int8.onnx")),
                    onnx,
                    calib,
                }
            }
        };
        v.push(spec);
    }
    Ok(v)
}

/// Writes the preprocessed calibration tensors of the real models, for ORT's
/// quantizer to calibrate on exactly what Strix calibrates on.
fn dump_calib(args: &Args) -> Result<()> {
    for s in specs(args)? {
        if s.calib
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "npy"))
        {
            continue; // already tensors (the bench models' random inputs)
        }
        let meta = strix_tools::config::load(None, &s.onnx)?;
        let cg = strix_tools::onnx::import(&s.onnx)?;
        let shape = cg.values[cg.inputs[0]].shape.clone();
        let dir = args.out.join("calib").join(s.name);
        std::fs::create_dir_all(&dir)?;
        for (i, p) in s.calib.iter().enumerate() {
            let v = strix_tools::media::load_input(p, &meta.input, &shape)?;
            strix_tools::media::write_npy(&dir.join(format!("{i:02}.npy")), &shape, &v)?;
        }
        println!(
            "{}: {} calibration tensors {:?} -> {}",
            s.name,
            s.calib.len(),
            shape,
            dir.display()
        );
    }
    Ok(())
}

/// An engine under test: one inference per call.
trait Engine {
    fn run(&mut self) -> Result<()>;
    /// One inference, returning every output as f32 (the sanity check).
    fn outputs(&mut self) -> Result<Vec<Vec<f32>>>;
}

/// A session and its input, written before every run as a real caller does
/// (the memory plan may reuse the input's buffer for later tensors).
struct StrixEngine<'m>(Session<'m>, Vec<f32>);
impl Engine for StrixEngine<'_> {
    fn run(&mut self) -> Result<()> {
        self.0
            .input_mut(0)
            .map_err(|e| anyhow!("strix: {e}"))?
            .copy_from_slice(&self.1);
        self.0.run().map_err(|e| anyhow!("strix: {e}"))
    }
    fn outputs(&mut self) -> Result<Vec<Vec<f32>>> {
        self.run()?;
        (0..self.0.model().graph.outputs.len())
            .map(|i| {
                let mut v = vec![];
                self.0
                    .output_f32(i, &mut v)
                    .map_err(|e| anyhow!("strix: {e}"))?;
                Ok(v)
            })
            .collect()
    }
}

struct TractEngine {
    state: TypedSimpleState,
    input: TValue,
    executor: Option<Executor>,
}
impl Engine for TractEngine {
    fn run(&mut self) -> Result<()> {
        let input = self.input.clone();
        let state = &mut self.state;
        let out = match &self.executor {
            Some(ex) => multithread_tract_scope(ex.clone(), || state.run(tvec![input])),
            None => state.run(tvec![input]),
        };
        out.map(drop).map_err(|e| anyhow!("tract: {e}"))
    }
    fn outputs(&mut self) -> Result<Vec<Vec<f32>>> {
        let out = self
            .state
            .run(tvec![self.input.clone()])
            .map_err(|e| anyhow!("tract: {e}"))?;
        out.iter()
            .map(|v| {
                let v = v.cast_to::<f32>().map_err(|e| anyhow!("{e}"))?;
                let a = v.to_plain_array_view::<f32>().map_err(|e| anyhow!("{e}"))?;
                Ok(a.iter().copied().collect())
            })
            .collect()
    }
}

struct OrtEngine {
    session: ort::session::Session,
    input: ort::value::Tensor<f32>,
}
impl Engine for OrtEngine {
    fn run(&mut self) -> Result<()> {
        let out = self
            .session
            .run(ort::inputs![&self.input])
            .map_err(|e| anyhow!("ort: {e}"))?;
        drop(out);
        Ok(())
    }
    fn outputs(&mut self) -> Result<Vec<Vec<f32>>> {
        let out = self
            .session
            .run(ort::inputs![&self.input])
            .map_err(|e| anyhow!("ort: {e}"))?;
        out.values()
            .map(|v| {
                let (_, d) = v
                    .try_extract_tensor::<f32>()
                    .map_err(|e| anyhow!("ort: {e}"))?;
                Ok(d.to_vec())
            })
            .collect()
    }
}

fn tract_engine(onnx: &Path, shape: &[usize], x: &[f32], threads: usize) -> Result<TractEngine> {
    // As `strix_tools::eval::Reference` builds it: the raw protobuf, named
    // inputs, the input fact, then tract's optimized plan.
    let proto = strix_tools::onnx::load_proto(onnx)?;
    let graph = proto.graph.as_ref().ok_or_else(|| anyhow!("no graph"))?;
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|i| i.name.as_str()).collect();
    let names: Vec<String> = graph
        .input
        .iter()
        .map(|i| i.name.clone())
        .filter(|n| !inits.contains(n.as_str()))
        .collect();
    let plan = tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .and_then(|m| m.with_input_names(&names))
        .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| anyhow!("tract cannot load {}: {e}", onnx.display()))?;
    let state = plan.spawn().map_err(|e| anyhow!("tract: {e}"))?;
    let input: Tensor = Tensor::from_shape(shape, x).map_err(|e| anyhow!("{e}"))?;
    Ok(TractEngine {
        state,
        input: input.into_tvalue(),
        executor: (threads > 1).then(|| Executor::multithread(threads)),
    })
}

fn ort_engine(
    env: &ort::environment::Environment,
    onnx: &Path,
    shape: &[usize],
    x: &[f32],
    threads: usize,
    spin: bool,
) -> Result<OrtEngine> {
    use ort::session::builder::GraphOptimizationLevel;
    let e = |e: ort::Error<ort::session::builder::SessionBuilder>| anyhow!("ort: {e}");
    let session = ort::session::Session::builder(env)
        .map_err(|e| anyhow!("ort: {e}"))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(e)?
        .with_intra_threads(threads)
        .map_err(e)?
        .with_inter_threads(1)
        .map_err(e)?
        .with_intra_op_spinning(spin || threads == 1)
        .map_err(e)?
        .commit_from_file(onnx)
        .map_err(|e| anyhow!("ort: loading {}: {e}", onnx.display()))?;
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let input =
        ort::value::Tensor::from_array((dims, x.to_vec())).map_err(|e| anyhow!("ort: {e}"))?;
    Ok(OrtEngine { session, input })
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
struct Stats {
    median_ms: f64,
    p90_ms: f64,
    min_ms: f64,
    runs: usize,
}

fn stats(mut t: Vec<f64>) -> Stats {
    t.sort_by(f64::total_cmp);
    let pct = |p: f64| t[((t.len() - 1) as f64 * p).round() as usize];
    Stats {
        median_ms: pct(0.5),
        p90_ms: pct(0.9),
        min_ms: t[0],
        runs: t.len(),
    }
}

/// Loads ORT, or says why not.
fn ort_env() -> std::result::Result<(ort::environment::Environment, String), String> {
    let path = std::env::var_os("ORT_DYLIB_PATH")
        .ok_or("ORT_DYLIB_PATH is not set (run scripts/bench-peers.sh)")?;
    let path = PathBuf::from(path);
    if !path.exists() {
        return Err(format!("ORT_DYLIB_PATH={} does not exist", path.display()));
    }
    let builder = std::panic::catch_unwind(|| ort::init_from(&path))
        .map_err(|_| format!("loading {} panicked", path.display()))?
        .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    let env = builder
        .with_name("strix-peers")
        .build()
        .map_err(|e| format!("ORT environment: {e}"))?;
    Ok((env, path.display().to_string()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.dump_calib {
        return dump_calib(&args);
    }
    if args.threads.is_empty() || args.threads.contains(&0) {
        bail!("--threads needs counts >= 1");
    }
    std::fs::create_dir_all(&args.out)?;
    // STRIX_ISA forces Strix's kernel path (read here: the libraries read no
    // environment); unset, the best this CPU runs.
    let isa = strix_runtime::Isa::forced(
        std::env::var_os("STRIX_ISA")
            .map(|v| v.to_string_lossy().into_owned())
            .as_deref(),
    )
    .map_err(|e| anyhow!("STRIX_ISA: {e}"))?;
    let ort = ort_env();
    let mut notes: Vec<String> = vec![
        "Strix at N threads: one session of N threads (Session::with_threads)".to_string(),
        "tract at 2+ threads: tract-linalg's rayon executor (multithread-mm)".to_string(),
    ];
    if !args.ort_spin {
        notes.push(
            "ORT at 2+ threads runs with intra-op spinning off (--ort-spin turns it on)".into(),
        );
    }
    match &ort {
        Ok((_, p)) => eprintln!("ONNX Runtime: {p}"),
        Err(why) => {
            eprintln!("SKIP ONNX Runtime: {why}");
            notes.push(format!("ONNX Runtime skipped: {why}"));
        }
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut results = vec![];
    let mut rows = vec![];
    for s in specs(&args)? {
        eprintln!("== {}: converting {}", s.name, s.onnx.display());
        let dst = args.out.join(format!("{}.strix", s.name));
        let t0 = Instant::now();
        let model: Model =
            strix_tools::convert(&s.onnx, &s.calib, &dst, None, Method::Mse, false, false)
                .with_context(|| format!("converting {}", s.name))?;
        let model = match isa {
            Some(isa) => model.with_isa(isa)?,
            None => model,
        };
        let convert_s = t0.elapsed().as_secs_f64();
        let g = &model.graph;
        let shape = g.tensors[g.inputs[0]].shape.clone();
        let x = strix_tools::media::load_input(&s.calib[0], &model.meta.input, &shape)?;

        // The engines, in round-robin order.
        let mut names: Vec<String> = vec![]; // "engine@threads", as `engines`
        let mut engines: Vec<Box<dyn Engine + '_>> = vec![];
        for &t in &args.threads {
            let session = Session::with_threads(&model, t)?;
            engines.push(Box::new(StrixEngine(session, x.clone())));
            names.push(format!("strix_int8@{t}"));
        }
        for &t in &args.threads {
            engines.push(Box::new(tract_engine(&s.onnx, &shape, &x, t)?));
            names.push(format!("tract_fp32@{t}"));
        }
        let mut skipped = vec![];
        if let Ok((env, _)) = &ort {
            for &t in &args.threads {
                for (kind, path) in [("fp32", &s.ort_fp32), ("int8", &s.ort_int8)] {
                    if !path.exists() {
                        let why = format!(
                            "ORT {kind}: {} missing (run scripts/quantize_for_ort.py)",
                            path.display()
                        );
                        if t == args.threads[0] {
                            eprintln!("SKIP {}: {why}", s.name);
                            skipped.push(why);
                        }
                        continue;
                    }
                    match ort_engine(env, path, &shape, &x, t, args.ort_spin) {
                        Ok(e) => {
                            engines.push(Box::new(e));
                            names.push(format!("ort_{kind}@{t}"));
                        }
                        Err(e) => {
                            eprintln!("SKIP {} ORT {kind} at {t} threads: {e:#}", s.name);
                            skipped.push(format!("ORT {kind} at {t} threads: {e:#}"));
                        }
                    }
                }
            }
        }

        // Sanity: every engine's outputs against tract fp32's (cosine, the
        // worst output), so a wrong input or a broken model shows.
        let reference = engines[args.threads.len()].outputs()?;
        let mut agreement = serde_json::Map::new();
        for (e, key) in engines.iter_mut().zip(&names) {
            let got = e.outputs()?;
            let cos = if got.len() == reference.len()
                && got.iter().zip(&reference).all(|(a, b)| a.len() == b.len())
            {
                got.iter()
                    .zip(&reference)
                    .map(|(a, b)| strix_tools::eval::cosine(a, b))
                    .fold(f64::INFINITY, f64::min)
            } else {
                f64::NAN
            };
            agreement.insert(key.clone(), serde_json::json!(cos));
        }
        eprintln!(
            "   output cosine vs tract fp32: {}",
            agreement
                .iter()
                .map(|(k, v)| format!("{k} {:.4}", v.as_f64().unwrap_or(f64::NAN)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for _ in 0..args.warmup {
            for e in engines.iter_mut() {
                e.run()?;
            }
        }
        let mut times = vec![Vec::with_capacity(args.iters); engines.len()];
        for _ in 0..args.iters.max(1) {
            for (e, t) in engines.iter_mut().zip(times.iter_mut()) {
                let t0 = Instant::now();
                e.run()?;
                t.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        drop(engines);
        let st: Vec<Stats> = times.into_iter().map(stats).collect();
        let get = |key: &str| names.iter().position(|n| n == key).map(|i| st[i]);
        let mut per_threads = vec![];
        for &t in &args.threads {
            let strix = get(&format!("strix_int8@{t}")).context("strix series")?;
            let tract = get(&format!("tract_fp32@{t}"));
            let of = get(&format!("ort_fp32@{t}"));
            let oi = get(&format!("ort_int8@{t}"));
            let best = [of, oi]
                .into_iter()
                .flatten()
                .map(|s| s.median_ms)
                .min_by(f64::total_cmp);
            let r_ort = best.map(|b| strix.median_ms / b);
            let r_tract = tract.map(|tr| strix.median_ms / tr.median_ms);
            rows.push((s.name, t, strix, tract, of, oi, r_ort, r_tract));
            per_threads.push(serde_json::json!({
                "threads": t,
                "strix_int8": strix,
                "tract_fp32": tract, "ort_fp32": of, "ort_int8": oi,
                "ort_best_median_ms": best,
                "strix_over_ort_best": r_ort, "strix_over_tract": r_tract,
            }));
        }
        results.push(serde_json::json!({
            "model": s.name, "onnx": s.onnx.display().to_string(),
            "ort_fp32_model": s.ort_fp32.display().to_string(),
            "ort_int8_model": s.ort_int8.display().to_string(),
            "input_shape": shape, "macs": g.macs(), "isa": model.isa().name(),
            "convert_seconds": convert_s, "skipped": skipped, "by_threads": per_threads,
            "cosine_vs_tract_fp32": agreement,
        }));
    }

    let ms = |s: Option<Stats>| {
        s.map(|s| format!("{:7.3} {:7.3}", s.median_ms, s.p90_ms))
            .unwrap_or_else(|| format!("{:>15}", "-"))
    };
    let ratio = |r: Option<f64>| {
        r.map(|r| format!("{r:6.2}"))
            .unwrap_or_else(|| format!("{:>6}", "-"))
    };
    println!(
        "\nlatency in ms (median p90), {} timed runs each, interleaved round-robin; {} CPUs",
        args.iters, cpus
    );
    println!(
        "{:<14} {:>3}  {:>15}  {:>15}  {:>15}  {:>15}  {:>9}  {:>9}",
        "model", "thr", "strix int8", "tract fp32", "ort fp32", "ort int8", "S/ORTbest", "S/tract"
    );
    for (name, t, strix, tract, of, oi, r_ort, r_tract) in &rows {
        println!(
            "{:<14} {:>3}  {}  {}  {}  {}  {:>9}  {:>9}",
            name,
            t,
            ms(Some(*strix)),
            ms(*tract),
            ms(*of),
            ms(*oi),
            ratio(*r_ort),
            ratio(*r_tract)
        );
    }
    for n in &notes {
        println!("note: {n}");
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "tool": "strix-peers", "cpus": cpus, "iterations": args.iters, "warmup": args.warmup,
            "threads": args.threads, "ort_library": ort.as_ref().ok().map(|o| o.1.clone()),
            "ort_skipped": ort.as_ref().err(), "notes": notes, "models": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

//! `strix-icount`: load one model, run it a given number of times on one
//! thread, exit. Nothing else, so that an instruction counter (qemu-user with
//! `/work/shared/tools/qemu-icount`, see `scripts/icount.sh models`) measures
//! the inferences: the per-inference count is
//! `(count(N) - count(0)) / N`, and loading, warm-up and exit cancel out.
//!
//! ```text
//! strix-icount strix MODEL.strix N [--warmup W]
//! strix-icount tract MODEL.onnx  N [--warmup W] [--shape 1,3,224,224]
//! ```
//!
//! Both engines get the same deterministic f32 input (xorshift64* in
//! [0, 1), as strix-peers uses). Strix runs on the kernel path of its
//! run-time detection or `STRIX_ISA`; tract runs its optimized fp32 plan with
//! no multithread executor installed (single-threaded). One line on stderr
//! names the engine, kernel path, input shape and an output checksum (the
//! same for N and 0 when W > 0, and a check that the outputs were computed).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use tract_onnx::pb;
use tract_onnx::prelude::*;

const USAGE: &str = "usage: strix-icount strix MODEL.strix N [--warmup W]\n       \
                     strix-icount tract MODEL.onnx N [--warmup W] [--shape D,D,...]";

/// xorshift64*: the deterministic input generator of strix-peers.
struct Rng(u64);
impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32) / (1u64 << 24) as f32
    }
}

fn input_values(n: usize) -> Vec<f32> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..n).map(|_| rng.next_f32()).collect()
}

struct Args {
    engine: String,
    model: String,
    runs: usize,
    warmup: usize,
    shape: Option<Vec<usize>>,
}

fn parse_count(what: &str, s: &str) -> Result<usize> {
    s.parse()
        .map_err(|_| anyhow!("{what} must be a non-negative integer, got '{s}'"))
}

fn parse_args(argv: &[String]) -> Result<Args> {
    let [engine, model, runs, rest @ ..] = argv else {
        bail!("missing arguments");
    };
    let mut a = Args {
        engine: engine.clone(),
        model: model.clone(),
        runs: parse_count("N", runs)?,
        warmup: 1,
        shape: None,
    };
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--warmup" => a.warmup = parse_count("--warmup", value)?,
            "--shape" => {
                let dims = value
                    .split(',')
                    .map(|d| parse_count("--shape dimension", d.trim()))
                    .collect::<Result<Vec<_>>>()?;
                if dims.is_empty() || dims.contains(&0) {
                    bail!("--shape {value}: every dimension must be at least 1");
                }
                a.shape = Some(dims);
            }
            _ => bail!("unknown option {flag}"),
        }
    }
    if a.shape.is_some() && a.engine != "tract" {
        bail!("--shape applies to tract only (a .strix model fixes its input shape)");
    }
    Ok(a)
}

/// Order-sensitive checksum of output values (bits, so NaN cannot hide).
fn checksum(acc: &mut u64, values: impl Iterator<Item = f32>) {
    for v in values {
        *acc = acc.rotate_left(5) ^ u64::from(v.to_bits());
    }
}

fn run_strix(a: &Args) -> Result<String> {
    // STRIX_ISA forces the kernel path (read here: the runtime reads no
    // environment); unset, run-time detection picks it.
    let isa = strix_runtime::Isa::forced(
        std::env::var_os("STRIX_ISA")
            .map(|v| v.to_string_lossy().into_owned())
            .as_deref(),
    )
    .map_err(|e| anyhow!("STRIX_ISA: {e}"))?;
    let model =
        strix_runtime::Model::load_with(&a.model, &strix_runtime::LoadOptions { isa, lean: true })
            .map_err(|e| anyhow!("strix: loading {}: {e}", a.model))?;
    let mut session = strix_runtime::Session::new(&model);
    let g = &model.graph;
    let shape = g.tensors[g.inputs[0]].shape.clone();
    let x = input_values(shape.iter().product());
    for _ in 0..a.warmup + a.runs {
        // Written before every run, as an application does: the arena
        // planner may give the input's bytes to later tensors.
        session
            .input_mut(0)
            .map_err(|e| anyhow!("strix: {e}"))?
            .copy_from_slice(&x);
        session.run().map_err(|e| anyhow!("strix: {e}"))?;
    }
    let mut sum = 0u64;
    let mut out = Vec::new();
    if a.warmup + a.runs > 0 {
        for i in 0..g.outputs.len() {
            session
                .output_f32(i, &mut out)
                .map_err(|e| anyhow!("strix: {e}"))?;
            checksum(&mut sum, out.iter().copied());
        }
    }
    Ok(format!(
        "engine=strix isa={} input={shape:?} runs={} warmup={} checksum={sum:016x}",
        model.isa().name(),
        a.runs,
        a.warmup
    ))
}

/// The input shape an ONNX model declares for its first real input (graph
/// inputs that are also initializers are weights: old exporters list them).
/// Symbolic or unknown dimensions (a batch axis) become 1.
fn onnx_input(proto: &pb::ModelProto) -> Result<(Vec<String>, Vec<usize>)> {
    let graph = proto.graph.as_ref().ok_or_else(|| anyhow!("no graph"))?;
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|i| i.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .collect();
    let first = inputs
        .first()
        .ok_or_else(|| anyhow!("the model has no input"))?;
    if inputs.len() != 1 {
        bail!(
            "{} inputs: only single-input models are supported",
            inputs.len()
        );
    }
    let dims = match first.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t
            .shape
            .as_ref()
            .ok_or_else(|| anyhow!("input '{}' has no shape: pass --shape", first.name))?
            .dim
            .iter()
            .map(|d| match d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => v as usize,
                _ => 1,
            })
            .collect(),
        None => bail!("input '{}' is not a tensor: pass --shape", first.name),
    };
    Ok((vec![first.name.clone()], dims))
}

fn run_tract(a: &Args) -> Result<String> {
    let path = Path::new(&a.model);
    let proto = tract_onnx::onnx()
        .proto_model_for_path(path)
        .map_err(|e| anyhow!("{}: not a readable ONNX model: {e}", path.display()))?;
    let (names, declared) = onnx_input(&proto).with_context(|| path.display().to_string())?;
    let shape = a.shape.clone().unwrap_or(declared);
    let plan = tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .and_then(|m| m.with_input_names(&names))
        .and_then(|m| m.with_input_fact(0, f32::fact(&shape).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| anyhow!("tract cannot load {}: {e}", path.display()))?;
    let mut state = plan.spawn().map_err(|e| anyhow!("tract: {e}"))?;
    let x = input_values(shape.iter().product());
    let input = Tensor::from_shape(&shape, &x)
        .map_err(|e| anyhow!("{e}"))?
        .into_tvalue();
    let mut sum = 0u64;
    let mut last = None;
    for _ in 0..a.warmup + a.runs {
        last = Some(
            state
                .run(tvec![input.clone()])
                .map_err(|e| anyhow!("tract: {e}"))?,
        );
    }
    for v in last.iter().flatten() {
        let v = v.cast_to::<f32>().map_err(|e| anyhow!("tract: {e}"))?;
        let view = v
            .to_plain_array_view::<f32>()
            .map_err(|e| anyhow!("tract: {e}"))?;
        checksum(&mut sum, view.iter().copied());
    }
    Ok(format!(
        "engine=tract arch={} input={shape:?} runs={} warmup={} checksum={sum:016x}",
        std::env::consts::ARCH,
        a.runs,
        a.warmup
    ))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let result = parse_args(&argv)
        .map_err(|e| anyhow!("{e}\n{USAGE}"))
        .and_then(|a| match a.engine.as_str() {
            "strix" => run_strix(&a),
            "tract" => run_tract(&a),
            other => Err(anyhow!("unknown engine '{other}' (strix|tract)\n{USAGE}")),
        });
    match result {
        Ok(line) => {
            eprintln!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("strix-icount: {e:#}");
            ExitCode::FAILURE
        }
    }
}

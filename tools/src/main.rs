//! `strix`: compile ONNX models to int8 `.strix` files and run, inspect and
//! evaluate them.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use strix_tools::{calib, convert_with, demo, eval, inspect, run};

#[derive(Parser)]
#[command(
    name = "strix",
    version,
    about = "Compile ONNX models to int8 .strix files and run them on small devices.",
    long_about = "Compile ONNX models to int8 .strix files and run them on small devices.\n\n\
Typical flow:\n  strix convert model.onnx --calib images/*.jpg -o model.strix\n  strix inspect model.strix\n  strix run model.strix photo.jpg\n  strix eval model.onnx model.strix --samples images/*.jpg --json"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile an ONNX model to an int8 .strix file, calibrated on real samples.
    ///
    /// Preprocessing, labels and output decoding come from --config (or MODEL.toml
    /// beside the ONNX file) and are stored in the .strix metadata.
    Convert {
        /// The fp32 ONNX model.
        model: PathBuf,
        /// Calibration samples: images (.jpg/.png/.bmp), 16 kHz WAV (.wav) or .npy tensors
        /// (optional with --fp32, which calibrates nothing).
        #[arg(long, num_args = 1.., required_unless_present = "fp32")]
        calib: Vec<PathBuf>,
        /// Output .strix file.
        #[arg(short, long)]
        output: PathBuf,
        /// Model TOML (input preprocessing, labels, decoder).
        #[arg(long)]
        config: Option<PathBuf>,
        /// How activation ranges are chosen from calibration statistics.
        #[arg(long, value_enum, default_value = "mse")]
        method: calib::Method,
        /// Keep every layer in f32 (no quantization): a reference build.
        #[arg(long)]
        fp32: bool,
        /// Print each layer's int8-vs-f32 error on the first calibration sample.
        #[arg(long)]
        report: bool,
        /// Never emit block-sparse convs (also: env STRIX_NO_SPARSE); the
        /// outputs are bit-identical either way.
        #[arg(long)]
        no_sparse: bool,
    },
    /// Show a model's ops, precision per op, sizes and memory plan.
    Inspect {
        model: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Run one inference on an image, WAV or .npy; print JSON (detections, top-k or raw outputs).
    Run {
        model: PathBuf,
        input: PathBuf,
        /// Also write each output tensor to DIR/<name>.npy.
        #[arg(long)]
        dump: Option<PathBuf>,
    },
    /// Compare an int8 .strix model with the fp32 ONNX model (run by tract) on samples.
    Eval {
        onnx: PathBuf,
        model: PathBuf,
        #[arg(long, num_args = 1.., required = true)]
        samples: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Measure latency (median, p90), peak RSS, arena bytes and the kernel path.
    ///
    /// `STRIX_ISA=scalar|avx2|neon|dotprod|i8mm|armv7neon` forces a kernel path.
    Bench {
        model: PathBuf,
        #[arg(long, default_value_t = 50)]
        iterations: usize,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// Threads for the heavy ops (default: every core). Outputs are
        /// identical for every thread count; only the latency changes.
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Convert and run the bundled real models on the bundled media (the README's demo).
    Demo {
        /// Where converted models go.
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Convert {
            model,
            calib,
            output,
            config,
            method,
            fp32,
            report,
            no_sparse,
        } => convert_with(
            &model,
            &calib,
            &output,
            config.as_deref(),
            method,
            fp32,
            report,
            strix_tools::lower::Int8Options {
                sparse: !no_sparse && std::env::var_os("STRIX_NO_SPARSE").is_none(),
            },
        )
        .map(|_| ()),
        Cmd::Inspect { model, json } => inspect(&model, json),
        Cmd::Run { model, input, dump } => run(&model, &input, dump.as_deref()),
        Cmd::Eval {
            onnx,
            model,
            samples,
            json,
        } => eval::eval_cmd(&onnx, &model, &samples, json),
        Cmd::Demo { out } => demo(&out),
        Cmd::Bench {
            model,
            iterations,
            warmup,
            threads,
            json,
        } => strix_tools::bench(&model, iterations, warmup, threads, json),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

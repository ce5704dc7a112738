//! `strix`: compile ONNX models to int8 `.strix` files and run, inspect and
//! evaluate them.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use strix_runtime::{Isa, LoadOptions};
use strix_tools::{calib, convert_with, demo, eval, inspect, run, ConvertOptions, Passes};

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
    /// Compile an ONNX model to an int8 .strix file, calibrated on real samples
    /// (or an int8 .tflite model, with its own quantization: no --calib).
    ///
    /// Preprocessing, labels and output decoding come from --config (or <model>.toml
    /// beside the ONNX file) and/or the model-description flags below, and are
    /// stored in the .strix metadata. A flag overrides the TOML's value; the rest
    /// of the TOML is kept. When flags are given, convert prints the equivalent
    /// TOML (--save-config PATH writes it).
    ///
    /// Examples:
    ///   # a detector with no TOML: BGR, pixel/255, its decoder and labels
    ///   strix convert FastestDet.onnx --calib photos/*.jpg -o fd.strix \
    ///     --color bgr --mean 0 --std 255 --resize stretch \
    ///     --decoder fastestdet --labels coco.names --save-config FastestDet.toml
    ///   # an ImageNet classifier: (pixel - mean) / std per channel, top-5
    ///   strix convert mobilenet.onnx --calib photos/*.jpg -o m.strix --color rgb \
    ///     --mean 123.675,116.28,103.53 --std 58.395,57.12,57.375 --decoder classify
    ///   # a model exported with dynamic height and width
    ///   strix convert pnet.onnx --input-shape input=1,3,240,320 --calib ... -o p.strix
    #[command(verbatim_doc_comment)]
    Convert {
        /// The fp32 ONNX model, or an int8 TFLite model (.tflite, recognised by
        /// its TFL3 identifier): that one keeps the file's own scales, zero
        /// points, int8 weights and int32 biases and needs no --calib.
        /// TFLite operators: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
        /// AVERAGE_POOL_2D, MAX_POOL_2D, RESHAPE, SOFTMAX, ADD, QUANTIZE and
        /// DEQUANTIZE at the edges; int8 activations (per tensor), symmetric
        /// int8 weights (per channel or tensor), fused RELU/RELU6/RELU_N1_TO_1.
        /// Its NHWC image input becomes NCHW, as with --input-layout nhwc.
        /// An already-quantized ONNX model in QDQ form (QuantizeLinear /
        /// DequantizeLinear pairs: onnxruntime quantize_static, QAT exports)
        /// keeps the file's scales, zero points and int8 weights too, and
        /// needs --calib only for tensors the file leaves unquantized.
        model: PathBuf,
        /// Calibration samples: images (.jpg/.png/.bmp), 16 kHz WAV (.wav) or .npy tensors
        /// (optional with --fp32, which calibrates nothing, for .tflite models and for
        /// fully quantized ONNX QDQ models).
        #[arg(long, num_args = 1..)]
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
        /// ONNX QDQ models: ignore the file's quantization and calibrate on
        /// --calib as for an fp32 model (the weights are the dequantized ones).
        #[arg(long)]
        recalibrate: bool,
        /// Print each layer's int8-vs-f32 error on the first calibration sample.
        #[arg(long)]
        report: bool,
        /// Never emit block-sparse convs; the outputs are bit-identical either way.
        #[arg(long)]
        no_sparse: bool,
        /// Keep dead channels. By default, output channels whose weights are all
        /// below 1e-6 of their layer's largest (left by pruning or weight decay in
        /// training) are removed and their constant folded into the next layers,
        /// when the f32 outputs stay the same.
        #[arg(long)]
        keep_dead_channels: bool,
        /// Skip cross-layer equalization (which rescales consecutive layers'
        /// channels, keeping the f32 outputs, so int8 ranges fit better).
        #[arg(long)]
        no_cle: bool,
        /// Empirical bias correction: add to each conv's and gemm's bias the
        /// mean int8 error measured on the --calib samples, layer after
        /// layer (FastestDet on unseen photos: map50_vs_fp32 0.861/0.926 ->
        /// 0.929/0.931; conversion several times slower).
        #[arg(long)]
        bias_correction: bool,
        /// Add mirrored and cropped views of the --calib images to small
        /// calibration sets (fewer than 32 images); use with
        /// --bias-correction (alone it can cost accuracy on the photos).
        #[arg(long)]
        calib_augment: bool,
        /// Store the weights of the layers that stay f32 (all of them with
        /// --fp32) as f16: 2 bytes per weight in the file instead of 4; they
        /// are expanded to f32 at load and outputs change by f16 rounding only.
        /// (With --prune, f16 storage is chosen automatically: see --no-prune-f16.)
        #[arg(long, conflicts_with = "prune")]
        f16_weights: bool,
        /// Structured pruning within --prune-budget: removes whole output channels
        /// of convs/gemms (searched per layer on the calibration samples, checked
        /// on held-back ones) and keeps layers in f32 where int8 alone breaks the budget.
        #[arg(long, requires = "prune_budget")]
        prune: bool,
        /// Accuracy budget vs the unpruned int8 model (repeatable):
        /// top1=MAX_DISAGREEMENT, map50=MIN, cosine=MIN (e.g. top1=0.01).
        #[arg(long, num_args = 1.., requires = "prune")]
        prune_budget: Vec<String>,
        /// How channels are ranked: `obs` removes them one at a time, each the one
        /// whose removal (with the next layers refitted) adds the least output error
        /// on the calibration samples; or weight L1/L2 norm, or mean activation.
        #[arg(long, value_enum, default_value = "obs", requires = "prune")]
        prune_importance: strix_tools::prune::Importance,
        /// Block sparsity: the largest fraction of 1x4 weight blocks (along the
        /// reduction axis) the search may zero in one conv, e.g. 0.8. Each
        /// ungrouped conv is tried at 0.4, 0.6, 0.8 (up to this) and kept within
        /// the budget; zeroed convs run the block-sparse kernels. 0 = off.
        #[arg(long, default_value_t = 0.0, requires = "prune")]
        prune_block: f32,
        /// Fractions of a layer's channels tried by the search (comma-separated).
        #[arg(long, value_delimiter = ',', requires = "prune")]
        prune_ratios: Vec<f32>,
        /// Fraction of the --calib samples held back for the final check.
        #[arg(long, default_value_t = 0.25, requires = "prune")]
        prune_holdout: f64,
        /// Do not keep any layer in f32 (no automatic mixed precision).
        #[arg(long, requires = "prune")]
        no_mixed_precision: bool,
        /// Store the weights of the layers mixed precision keeps in f32 as f32. By
        /// default they are stored as f16 when the budget still holds with f16.
        #[arg(long, requires = "prune")]
        no_prune_f16: bool,
        /// Do not refit the consumers of pruned channels (least squares on calibration data).
        #[arg(long, requires = "prune")]
        no_prune_refit: bool,
        /// Write the pruning report as a self-contained HTML page.
        #[arg(long, requires = "prune")]
        prune_report: Option<PathBuf>,
        /// Write the pruning report as JSON.
        #[arg(long, requires = "prune")]
        prune_json: Option<PathBuf>,
        #[command(flatten)]
        model_flags: Box<strix_tools::flags::ModelFlags>,
        /// Also compile the NPU part for a Rockchip board (rk3588, rk3566, rv1106)
        /// with rknn-toolkit2 and store it in the .strix file (the CPU graph stays
        /// as the fallback). Fails, writing nothing, when the toolkit is missing.
        #[arg(long, conflicts_with_all = ["prune", "fp32"])]
        board: Option<String>,
        /// The Python that has rknn-toolkit2 (default: $STRIX_RKNN_PYTHON, else
        /// ~/.cache/strix/rknn-venv/bin/python, made by scripts/lib/rknn-toolkit.sh).
        #[arg(long, requires = "board")]
        rknn_python: Option<PathBuf>,
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
    ///
    /// Prints, over the samples, each output's cosine similarity to fp32
    /// (mean and worst), and for the model's decoder: top-1 agreement
    /// (classify) or mAP@0.5 taking fp32's boxes as the truth (detectors).
    /// Use samples the model was not calibrated on to see how int8 holds on
    /// new data, e.g.
    ///
    ///   strix eval kws.onnx kws.strix --samples clips/*/*.wav
    Eval {
        /// The fp32 ONNX model the .strix file was converted from.
        onnx: PathBuf,
        /// The converted .strix model.
        model: PathBuf,
        /// Images, WAVs or .npy tensors, preprocessed as the model's
        /// metadata says.
        #[arg(long, num_args = 1.., required = true)]
        samples: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure latency (median, p90), peak RSS, arena bytes and the kernel path.
    ///
    /// `STRIX_ISA=scalar|avx2|avxvnni|avx512vnni|neon|dotprod|i8mm|armv7neon` forces a kernel path
    /// (for run, inspect, eval and bench).
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
    /// Make an ed25519 signing key: KEY (private, mode 0600) and KEY.pub.
    Keygen {
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Sign files: writes FILE.sig (covers the file's SHA-256, name and kind).
    Sign {
        /// Private key from `strix keygen`.
        #[arg(long)]
        key: PathBuf,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check FILE against FILE.sig, or a bundle directory against its MANIFEST.
    Verify {
        /// Public key (KEY.pub).
        #[arg(long = "pub")]
        pubkey: PathBuf,
        file: PathBuf,
    },
    /// Check models against a board, bundle and sign strixd + models + config,
    /// install atomically to a root directory or over SSH, health-check, roll back.
    ///
    /// Checks before anything is written: strixd's architecture vs the board's,
    /// each model's kernel path (metadata `isa`) vs the board's [cpu] features,
    /// and arena + weight bytes of all models vs its [memory] budget_mb.
    /// Installs /usr/share/strix/releases/<id> (strixd, config, models and
    /// their .sig, board file, public key, signed MANIFEST), switches
    /// /usr/share/strix/current to it by rename, links /usr/bin/strixd,
    /// /etc/strix/strixd.toml, /usr/share/strix/{models,boards} into it (once),
    /// installs /etc/strix/strix.pub (once; another key is refused), keeps
    /// state in /var/lib/strix, then runs `strixd --check` (under qemu-<arch>
    /// for a root directory of another architecture) and rolls back when it fails.
    Flash {
        /// Board name (rpi4, rpi5, rk3588, ...) or a board file.
        #[arg(long)]
        board: String,
        /// A directory (a board's root file system, e.g. a mounted SD card)
        /// or ssh://user@host[:port].
        #[arg(long)]
        to: String,
        /// Models to bundle (besides those the config names; a config's
        /// model not found beside it is taken from here by file name).
        #[arg(long, num_args = 1..)]
        model: Vec<PathBuf>,
        /// strixd config to install; its model, board, outbox, snapshot and
        /// key paths are rewritten for the installed layout.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The strixd binary for the board (default:
        /// $CARGO_TARGET_DIR or target, then <board triple>/dist/strixd, as
        /// scripts/build-board.sh BOARD leaves it).
        #[arg(long)]
        strixd: Option<PathBuf>,
        /// Show every step (and, for SSH, every command); change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Private key that signs the bundle (default: $STRIX_KEY).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Time limit of the health check (`strixd --check`), in seconds.
        #[arg(long, default_value_t = 180)]
        health_timeout: u64,
    },
}

/// Checks `strix convert`'s model-description flags, prints their warnings and
/// the model TOML they amount to (writing it to --save-config), and returns
/// them for the conversion.
fn describe_model(
    model: &std::path::Path,
    config: Option<&std::path::Path>,
    flags: &strix_tools::flags::ModelFlags,
) -> anyhow::Result<strix_tools::config::Overrides> {
    use anyhow::Context;
    let overrides = flags.overrides()?;
    for w in flags.warnings(&overrides) {
        eprintln!("warning: {w}");
    }
    if overrides.is_empty() && flags.save_config.is_none() {
        return Ok(overrides);
    }
    let resolved = strix_tools::config::resolve(config, model, &overrides)?;
    let toml = strix_tools::config::to_toml(&resolved)?;
    match &flags.save_config {
        Some(p) => {
            std::fs::write(p, &toml).with_context(|| format!("--save-config {}", p.display()))?;
            eprintln!("wrote the model TOML to {}", p.display());
        }
        None => eprintln!(
            "# the model TOML these flags amount to (keep it with --save-config PATH):\n{toml}"
        ),
    }
    Ok(overrides)
}

fn main() {
    // Like other Unix tools, exit quietly when the reader of stdout goes
    // away (`strix inspect m.strix | head`) instead of panicking in println!.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE, before any thread
    // starts, has no other effect on the process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // The kernel path of the models the commands load: STRIX_ISA, read here
    // (the libraries read no environment).
    let load = match Isa::forced(
        std::env::var_os("STRIX_ISA")
            .map(|v| v.to_string_lossy().into_owned())
            .as_deref(),
    ) {
        Ok(isa) => LoadOptions { isa, lean: false },
        Err(e) => {
            eprintln!("error: STRIX_ISA: {e}");
            std::process::exit(1);
        }
    };
    // `run` and `bench` only run the model: each conv weight held once.
    let runner = LoadOptions { lean: true, ..load };
    let r = match cli.cmd {
        // An int8 .tflite keeps its own quantization (no calibration).
        Cmd::Convert {
            model,
            calib,
            output,
            config,
            fp32,
            report,
            no_sparse,
            f16_weights,
            prune,
            board,
            model_flags,
            ..
        } if strix_tools::tflite::is_tflite_file(&model) => (|| {
            if !calib.is_empty() || prune || board.is_some() || report {
                anyhow::bail!(
                    "{}: a TFLite int8 model is compiled with the file's own quantization; \
                     --calib, --prune, --board and --report do not apply",
                    model.display()
                );
            }
            let overrides = describe_model(&model, config.as_deref(), &model_flags)?;
            let opts = strix_tools::tflite::Options {
                fp32,
                no_sparse,
                f16_weights,
            };
            strix_tools::tflite::convert(&model, &output, config.as_deref(), &overrides, &opts)
                .map(|_| ())
        })(),
        Cmd::Convert {
            ref model,
            ref calib,
            fp32: false,
            prune,
            recalibrate,
            ..
        } if calib.is_empty()
            && (prune || recalibrate || !strix_tools::qdq::is_qdq_file(model).unwrap_or(false)) =>
        {
            Err(anyhow::anyhow!(
                "int8 conversion needs calibration samples (--calib), or use --fp32 \
                 (only an int8 .tflite model or an ONNX QDQ model needs none)"
            ))
        }
        Cmd::Convert {
            model,
            calib,
            output,
            config,
            method,
            fp32,
            report,
            prune,
            prune_budget,
            prune_importance,
            prune_block,
            prune_ratios,
            prune_holdout,
            no_mixed_precision,
            no_prune_f16,
            no_prune_refit,
            prune_report,
            prune_json,
            keep_dead_channels,
            no_cle,
            model_flags,
            ..
        } if prune => (|| {
            let overrides = describe_model(&model, config.as_deref(), &model_flags)?;
            if fp32 {
                anyhow::bail!("--prune compiles to int8; it cannot be combined with --fp32");
            }
            if prune_block != 0.0
                && !(strix_tools::prune::MIN_BLOCK_RATIO..1.0).contains(&prune_block)
            {
                anyhow::bail!(
                    "--prune-block must be 0 (off) or within [{}, 1): below that the sparse kernels stay dense",
                    strix_tools::prune::MIN_BLOCK_RATIO
                );
            }
            if !(0.0..1.0).contains(&prune_holdout) || prune_holdout <= 0.0 {
                anyhow::bail!("--prune-holdout must be within (0, 1)");
            }
            let _ = report;
            let mut opts =
                strix_tools::prune::Options::new(strix_tools::prune::Budget::parse(&prune_budget)?);
            opts.importance = prune_importance;
            opts.block = prune_block;
            opts.holdout = prune_holdout;
            opts.mixed_precision = !no_mixed_precision;
            opts.f16 = !no_prune_f16;
            opts.refit = !no_prune_refit;
            opts.passes = Passes {
                remove_dead_channels: !keep_dead_channels,
                equalize: !no_cle,
            };
            if !prune_ratios.is_empty() {
                opts.ratios = prune_ratios;
            }
            strix_tools::convert_pruned_with(
                &model,
                &calib,
                &output,
                config.as_deref(),
                &overrides,
                method,
                &opts,
                prune_json.as_deref(),
                prune_report.as_deref(),
            )
            .map(|_| ())
        })(),
        Cmd::Convert {
            model,
            calib,
            output,
            config,
            method,
            no_sparse,
            f16_weights,
            keep_dead_channels,
            no_cle,
            bias_correction,
            calib_augment,
            board: Some(board),
            rknn_python,
            model_flags,
            recalibrate,
            ..
        } => describe_model(&model, config.as_deref(), &model_flags).and_then(|overrides| {
            strix_tools::npu::convert_for_board(
                &model,
                &calib,
                &output,
                config.as_deref(),
                method,
                ConvertOptions {
                    int8: strix_tools::lower::Int8Options {
                        sparse: !no_sparse,
                        f16_weights,
                        bias_correction,
                        calib_augment,
                        ..Default::default()
                    },
                    passes: Passes {
                        remove_dead_channels: !keep_dead_channels,
                        equalize: !no_cle,
                    },
                    overrides,
                    recalibrate,
                },
                &board,
                &rknn_python.unwrap_or_else(default_rknn_python),
            )
            .map(|_| ())
        }),
        Cmd::Convert {
            model,
            calib,
            output,
            config,
            method,
            fp32,
            report,
            no_sparse,
            f16_weights,
            keep_dead_channels,
            no_cle,
            bias_correction,
            calib_augment,
            model_flags,
            recalibrate,
            ..
        } => describe_model(&model, config.as_deref(), &model_flags).and_then(|overrides| {
            convert_with(
                &model,
                &calib,
                &output,
                config.as_deref(),
                method,
                fp32,
                report,
                ConvertOptions {
                    int8: strix_tools::lower::Int8Options {
                        sparse: !no_sparse,
                        f16_weights,
                        bias_correction,
                        calib_augment,
                        ..Default::default()
                    },
                    passes: Passes {
                        remove_dead_channels: !keep_dead_channels,
                        equalize: !no_cle,
                    },
                    overrides,
                    recalibrate,
                },
            )
            .map(|_| ())
        }),
        Cmd::Inspect { model, json } => inspect(&model, json, &load),
        Cmd::Run { model, input, dump } => run(&model, &input, dump.as_deref(), &runner),
        Cmd::Eval {
            onnx,
            model,
            samples,
            json,
        } => eval::eval_cmd(&onnx, &model, &samples, json, &load),
        Cmd::Demo { out } => demo(&out),
        Cmd::Keygen { output } => strix_tools::sign::keygen(&output),
        Cmd::Sign { key, files } => strix_tools::sign::sign(&key, &files),
        Cmd::Verify { pubkey, file } => strix_tools::sign::verify(&pubkey, &file),
        Cmd::Flash {
            board,
            to,
            model,
            config,
            strixd,
            dry_run,
            key,
            health_timeout,
        } => (|| {
            let key = key.or_else(|| std::env::var_os("STRIX_KEY").map(PathBuf::from)).ok_or_else(|| {
                anyhow::anyhow!("strix flash signs the bundle: pass --key KEY (make one with `strix keygen -o KEY`) or set STRIX_KEY")
            })?;
            strix_tools::flash::flash(&strix_tools::flash::Options {
                board,
                to,
                models: model,
                config,
                strixd,
                dry_run,
                key,
                health_timeout: std::time::Duration::from_secs(health_timeout),
                // Where scripts/build-board.sh leaves <triple>/dist/strixd.
                target_dir: std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("target")),
            })
            .map(|_| ())
        })(),
        Cmd::Bench {
            model,
            iterations,
            warmup,
            threads,
            json,
        } => strix_tools::bench(&model, iterations, warmup, threads, json, &runner),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// `--rknn-python` when not given: $STRIX_RKNN_PYTHON, else the venv
/// `scripts/lib/rknn-toolkit.sh` makes by default.
fn default_rknn_python() -> PathBuf {
    if let Some(p) = std::env::var_os("STRIX_RKNN_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("strix/rknn-venv/bin/python")
}

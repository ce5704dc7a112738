//! TFLite import: `strix convert model.tflite` compiles an already-quantized
//! int8 TFLite model keeping the file's own scales, zero points, int8
//! weights and int32 biases (no calibration).
//!
//! - [`flatbuf`]: a bounds-checked FlatBuffers reader (own code, no
//!   generated code);
//! - [`schema`]: the parts of TFLite's schema Strix reads (subgraph 0);
//! - [`import`]: operators -> the compiler graph, with the quantization
//!   pinned ([`crate::lower::Pinned`]).
//!
//! Supported: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, AVERAGE_POOL_2D,
//! MAX_POOL_2D, RESHAPE, SOFTMAX, ADD, and QUANTIZE/DEQUANTIZE at the
//! graph's edges; int8 activations (per-tensor, asymmetric), int8 symmetric
//! weights (per channel or per tensor), int32 biases; fused NONE, RELU,
//! RELU_N1_TO_1 and RELU6. Anything else is refused naming the operator
//! (index and code) or tensor.

pub mod flatbuf;
pub mod import;
pub mod schema;

pub use schema::Model;

use crate::ir::CGraph;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// Whether `bytes` start like a TFLite flatbuffer (`TFL3` at offset 4).
pub fn is_tflite(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[4..8] == b"TFL3"
}

/// Whether the file at `path` is a TFLite model: its `TFL3` identifier, or
/// (when it cannot be read) a `.tflite` extension.
pub fn is_tflite_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)) {
        Ok(()) => is_tflite(&head),
        Err(_) => path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tflite")),
    }
}

/// Reads and imports a `.tflite` file (see [`import::import`]); returns the
/// graph and the importer's warnings.
pub fn load(path: &Path) -> Result<(CGraph, Vec<String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let m = Model::parse(&bytes).with_context(|| path.display().to_string())?;
    import::import(&m).with_context(|| format!("importing {}", path.display()))
}

/// Options of [`convert`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// An f32 build from the dequantized weights (a reference, not the file's
    /// arithmetic).
    pub fp32: bool,
    /// Never emit block-sparse convs (outputs are the same either way).
    pub no_sparse: bool,
    /// `--f16-weights`: only meaningful with `fp32` (every layer is int8).
    pub f16_weights: bool,
}

/// `strix convert model.tflite`: compiles the int8 TFLite model at `path`
/// with its own quantization and writes the `.strix` file `out`. The model
/// description (preprocessing, labels, decoder) comes from `config` (or
/// `<model>.toml` beside the file) and `overrides`, as for ONNX models;
/// `--input-shape` does not apply (TFLite shapes are static). A 4-D input
/// is NHWC in the file and NCHW in the `.strix` (images are fed as usual).
pub fn convert(
    path: &Path,
    out: &Path,
    config: Option<&Path>,
    overrides: &crate::config::Overrides,
    opts: &Options,
) -> Result<strix_runtime::Model> {
    let resolved = crate::config::resolve(config, path, overrides)?;
    if !resolved.import.input_shapes.is_empty() {
        bail!("--input-shape / input_shapes: a TFLite model's shapes are fixed in the file");
    }
    let (cg, warnings) = load(path)?;
    for w in &warnings {
        eprintln!("warning: {}: {w}", path.display());
    }
    let mut b = if opts.fp32 {
        let mut b = crate::lower::lower_f32(&cg)?.0;
        if opts.f16_weights {
            let nodes = crate::lower::f16_candidates(&b.g);
            crate::lower::store_weights_f16(&mut b, &nodes)?;
        }
        b
    } else {
        let int8 = crate::lower::Int8Options {
            sparse: !opts.no_sparse,
            ..Default::default()
        };
        // No statistics: every value the int8 graph quantizes is pinned.
        crate::lower::lower_int8(&cg, &HashMap::new(), crate::calib::Method::Minmax, &int8)
            .with_context(|| format!("lowering {}", path.display()))?
            .builder
    };
    strix_runtime::plan::plan(&mut b.g, true);
    let model = strix_runtime::Model::new(resolved.meta, b.g, b.c)
        .context("the compiled graph failed validation (compiler bug)")?;
    model.save(out)?;
    eprintln!(
        "wrote {} ({} bytes, {} ops, arena {} bytes; {})",
        out.display(),
        std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
        model.graph.nodes.len(),
        model.graph.arena_bytes(),
        if opts.fp32 {
            "f32 from the dequantized TFLite weights"
        } else {
            "int8 with the TFLite file's quantization"
        }
    );
    Ok(model)
}

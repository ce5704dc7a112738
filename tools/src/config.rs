//! The model TOML: preprocessing, decoding and labels, stored in `.strix` metadata.
//!
//! ```toml
//! name = "fastestdet"
//! labels_file = "coco.names"        # or: labels = ["person", ...]
//! [input]
//! kind = "image"                    # image | audio | raw
//! color = "bgr"                     # rgb | bgr | gray
//! mean = [0, 0, 0]
//! scale = [0.003921569, 0.003921569, 0.003921569]
//! resize = "stretch"                # stretch | letterbox
//! [decoder]
//! kind = "fastestdet"               # raw | classify | fastestdet | ultraface
//! score_threshold = 0.65
//! nms_iou = 0.45
//! ```

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use strix_runtime::meta::{Decoder, InputSpec, ModelMeta};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: InputSpec,
    #[serde(default)]
    decoder: Decoder,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    labels_file: Option<PathBuf>,
}

/// Reads `path` (or, when `None`, `MODEL.toml` beside the ONNX file if present).
pub fn load(path: Option<&Path>, onnx: &Path) -> Result<ModelMeta> {
    let stem = onnx
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    let implicit = onnx.with_extension("toml");
    let path = match path {
        Some(p) => Some(p.to_path_buf()),
        None if implicit.exists() => Some(implicit),
        None => None,
    };
    let Some(path) = path else {
        return Ok(ModelMeta {
            name: stem,
            ..Default::default()
        });
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: ConfigFile = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut labels = cfg.labels;
    if let Some(lf) = cfg.labels_file {
        let lf = if lf.is_relative() {
            path.parent().unwrap_or(Path::new(".")).join(lf)
        } else {
            lf
        };
        let t = std::fs::read_to_string(&lf)
            .with_context(|| format!("reading labels {}", lf.display()))?;
        labels = t
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
    }
    Ok(ModelMeta {
        name: cfg.name.unwrap_or(stem),
        input: cfg.input,
        decoder: cfg.decoder,
        labels,
    })
}

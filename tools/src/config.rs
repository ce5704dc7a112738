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
//!
//! Two optional keys describe the ONNX file's inputs rather than the
//! `.strix` metadata (see [`crate::onnx::ImportOptions`]):
//!
//! ```toml
//! input_layout = "nhwc"             # nchw (default) | nhwc
//! [input_shapes]                    # pins dynamic dimensions
//! "input" = [1, 3, 240, 320]
//! ```
//!
//! [`resolve`] merges the TOML with the flags of `strix convert`
//! ([`Overrides`]: each flag given replaces the TOML's value) and
//! [`to_toml`] prints the result as a TOML that gives the same model.

use crate::onnx::{ImportOptions, InputLayout};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use strix_runtime::meta::{ColorOrder, Decoder, InputSpec, ModelMeta, ResizeMode};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    input_layout: Option<InputLayout>,
    #[serde(default)]
    input_shapes: BTreeMap<String, Vec<usize>>,
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

/// Reads `path` (or, when `None`, `<model>.toml` beside the ONNX file if present).
pub fn load(path: Option<&Path>, onnx: &Path) -> Result<ModelMeta> {
    Ok(resolve(path, onnx, &Overrides::default())?.meta)
}

/// The decoders of [`Decoder`], by their TOML `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DecoderKind {
    /// The output tensors as they are.
    #[value(alias = "none")]
    Raw,
    /// Top-k classes of the first output.
    #[value(alias = "topk")]
    Classify,
    /// FastestDet's `[1, 5 + C, H, W]` head.
    Fastestdet,
    /// UltraFace's `scores` and `boxes`.
    Ultraface,
}

/// Values given on the command line. Each `Some` (or non-empty) field
/// replaces what the model TOML says; the rest of the TOML is kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// The model's name (default: the TOML's, else the ONNX file's stem).
    pub name: Option<String>,
    /// Channel order of an image input.
    pub color: Option<ColorOrder>,
    /// Per-channel mean subtracted from 0..255 pixels.
    pub mean: Option<[f32; 3]>,
    /// Per-channel factor applied after the mean (`1 / std`).
    pub scale: Option<[f32; 3]>,
    pub resize: Option<ResizeMode>,
    pub labels: Option<Vec<String>>,
    pub decoder: Option<DecoderKind>,
    /// For `classify`.
    pub top_k: Option<usize>,
    /// For the detectors.
    pub score_threshold: Option<f32>,
    /// For the detectors.
    pub nms_iou: Option<f32>,
    pub input_layout: Option<InputLayout>,
    /// Replace the TOML's entry of the same input.
    pub input_shapes: Vec<(String, Vec<usize>)>,
}

impl Overrides {
    /// True when nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == Overrides::default()
    }
    fn image(&self) -> bool {
        self.color.is_some() || self.mean.is_some() || self.scale.is_some() || self.resize.is_some()
    }
}

/// A model's description: its metadata and how to import its ONNX file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolved {
    pub meta: ModelMeta,
    pub import: ImportOptions,
    /// The TOML that was read, if any.
    pub source: Option<PathBuf>,
}

/// Reads the model TOML `path` (or, when `None`, `<model>.toml` beside the
/// ONNX file if present) and applies `o` on top. Errors name the flag and,
/// for a conflict with the TOML, the file.
pub fn resolve(path: Option<&Path>, onnx: &Path, o: &Overrides) -> Result<Resolved> {
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
    let mut r = match &path {
        None => Resolved {
            meta: ModelMeta {
                name: stem,
                ..Default::default()
            },
            ..Default::default()
        },
        Some(path) => read_file(path, stem)?,
    };
    r.source = path;
    apply(&mut r, o)?;
    Ok(r)
}

fn read_file(path: &Path, stem: String) -> Result<Resolved> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: ConfigFile = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut labels = cfg.labels;
    if let Some(lf) = cfg.labels_file {
        let lf = if lf.is_relative() {
            path.parent().unwrap_or(Path::new(".")).join(lf)
        } else {
            lf
        };
        labels = read_labels(&lf)?;
    }
    Ok(Resolved {
        meta: ModelMeta {
            name: cfg.name.unwrap_or(stem),
            input: cfg.input,
            decoder: cfg.decoder,
            labels,
        },
        import: ImportOptions {
            input_shapes: cfg.input_shapes.into_iter().collect(),
            input_layout: cfg.input_layout.unwrap_or_default(),
        },
        source: None,
    })
}

/// Class labels, one per line (surrounding blanks trimmed, empty lines skipped).
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let t = std::fs::read_to_string(path)
        .with_context(|| format!("reading labels {}", path.display()))?;
    Ok(t.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

fn apply(r: &mut Resolved, o: &Overrides) -> Result<()> {
    let from = || match &r.source {
        Some(p) => p.display().to_string(),
        None => "the model TOML".into(),
    };
    if o.image() {
        let (color, mean, scale, resize) = match &r.meta.input {
            InputSpec::Image {
                color,
                mean,
                scale,
                resize,
            } => (*color, *mean, *scale, *resize),
            InputSpec::Raw => (
                ColorOrder::default(),
                [0.0; 3],
                [1.0; 3],
                ResizeMode::default(),
            ),
            InputSpec::Audio { .. } => bail!(
                "--color/--mean/--scale/--std/--resize describe an image input, but {} says \
                 [input] kind = \"audio\"",
                from()
            ),
        };
        let (color, mean, scale, resize) = (
            o.color.unwrap_or(color),
            o.mean.unwrap_or(mean),
            o.scale.unwrap_or(scale),
            o.resize.unwrap_or(resize),
        );
        r.meta.input = InputSpec::Image {
            color,
            mean,
            scale,
            resize,
        };
    }
    if let Some(l) = &o.labels {
        r.meta.labels = l.clone();
    }
    if let Some(n) = &o.name {
        r.meta.name = n.clone();
    }
    if let Some(kind) = o.decoder {
        let same = matches!(
            (kind, &r.meta.decoder),
            (DecoderKind::Raw, Decoder::Raw)
                | (DecoderKind::Classify, Decoder::Classify { .. })
                | (DecoderKind::Fastestdet, Decoder::Fastestdet { .. })
                | (DecoderKind::Ultraface, Decoder::Ultraface { .. })
        );
        if !same {
            // The decoder's defaults, as a TOML with only `kind` gives them.
            let name = format!("{kind:?}").to_lowercase();
            r.meta.decoder = toml::from_str::<Decoder>(&format!("kind = \"{name}\""))
                .map_err(|e| anyhow!("decoder {name}: {e}"))?;
        }
    }
    let dec_name = |d: &Decoder| match d {
        Decoder::Raw => "raw",
        Decoder::Classify { .. } => "classify",
        Decoder::Fastestdet { .. } => "fastestdet",
        Decoder::Ultraface { .. } => "ultraface",
    };
    if let Some(k) = o.top_k {
        match &mut r.meta.decoder {
            Decoder::Classify { top_k } => *top_k = k,
            d => bail!(
                "--top-k is for --decoder classify; the decoder is {}",
                dec_name(d)
            ),
        }
    }
    for (flag, v) in [
        ("--score-threshold", o.score_threshold),
        ("--nms-iou", o.nms_iou),
    ] {
        let Some(v) = v else { continue };
        if !(0.0..=1.0).contains(&v) {
            bail!("{flag} {v}: must be within [0, 1]");
        }
        match &mut r.meta.decoder {
            Decoder::Fastestdet {
                score_threshold,
                nms_iou,
            }
            | Decoder::Ultraface {
                score_threshold,
                nms_iou,
            } => {
                *(if flag == "--nms-iou" {
                    nms_iou
                } else {
                    score_threshold
                }) = v
            }
            d => bail!(
                "{flag} is for --decoder fastestdet or ultraface; the decoder is {}",
                dec_name(d)
            ),
        }
    }
    if let Some(l) = o.input_layout {
        r.import.input_layout = l;
    }
    for (name, shape) in &o.input_shapes {
        match r.import.input_shapes.iter_mut().find(|(n, _)| n == name) {
            Some(e) => e.1 = shape.clone(),
            None => r.import.input_shapes.push((name.clone(), shape.clone())),
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct ConfigOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_layout: Option<InputLayout>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    labels: &'a [String],
    input: &'a InputSpec,
    decoder: &'a Decoder,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    input_shapes: BTreeMap<&'a str, &'a [usize]>,
}

/// The model TOML that [`resolve`] turns into `r` (labels inline): what
/// `strix convert --save-config` writes.
pub fn to_toml(r: &Resolved) -> Result<String> {
    let out = ConfigOut {
        name: &r.meta.name,
        input_layout: (r.import.input_layout != InputLayout::Nchw).then_some(r.import.input_layout),
        labels: &r.meta.labels,
        input: &r.meta.input,
        decoder: &r.meta.decoder,
        input_shapes: r
            .import
            .input_shapes
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice()))
            .collect(),
    };
    let mut v = toml::Value::try_from(&out).context("writing the model TOML")?;
    shortest_floats(&mut v);
    toml::to_string(&v).context("writing the model TOML")
}

/// Every float here was an f32: printed as the shortest decimal that reads
/// back to the same f32 (`0.003921569`, not `0.003921568859368563`).
fn shortest_floats(v: &mut toml::Value) {
    match v {
        toml::Value::Float(f) => {
            if let Ok(s) = format!("{}", *f as f32).parse::<f64>() {
                *f = s;
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(shortest_floats),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| shortest_floats(v)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The printed TOML reads back to the same description, flags included.
    #[test]
    fn printed_toml_reads_back_the_same() {
        let dir = std::env::temp_dir().join(format!("strix-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let onnx = dir.join("m.onnx");
        let o = Overrides {
            color: Some(ColorOrder::Bgr),
            mean: Some([123.675, 116.28, 103.53]),
            scale: Some([1.0 / 58.395, 1.0 / 57.12, 1.0 / 57.375]),
            resize: Some(ResizeMode::Letterbox),
            labels: Some(vec!["a b".into(), "c".into()]),
            decoder: Some(DecoderKind::Ultraface),
            nms_iou: Some(0.5),
            input_layout: Some(InputLayout::Nhwc),
            input_shapes: vec![("in:0".into(), vec![1, 240, 320, 3])],
            ..Default::default()
        };
        let r = resolve(None, &onnx, &o).unwrap();
        assert_eq!(r.meta.name, "m");
        assert!(matches!(
            r.meta.decoder,
            Decoder::Ultraface { nms_iou, score_threshold } if nms_iou == 0.5 && score_threshold == 0.7
        ));
        let text = to_toml(&r).unwrap();
        let saved = dir.join("saved.toml");
        std::fs::write(&saved, &text).unwrap();
        let back = resolve(Some(&saved), &onnx, &Overrides::default()).unwrap();
        assert_eq!((back.meta, back.import), (r.meta, r.import), "{text}");
        // A flag replaces the TOML's value and keeps the rest.
        let o = Overrides {
            score_threshold: Some(0.9),
            ..Default::default()
        };
        let r2 = resolve(Some(&saved), &onnx, &o).unwrap();
        assert!(matches!(
            r2.meta.decoder,
            Decoder::Ultraface { nms_iou, score_threshold } if nms_iou == 0.5 && score_threshold == 0.9
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

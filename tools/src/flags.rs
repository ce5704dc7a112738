//! The model-description flags of `strix convert`: preprocessing, labels,
//! decoder and input shapes given on the command line instead of (or on top
//! of) a model TOML. [`ModelFlags::overrides`] parses and checks them into
//! [`config::Overrides`]; errors name the flag and the value.

use crate::config::{self, DecoderKind, Overrides};
use crate::onnx::InputLayout;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use strix_runtime::meta::{ColorOrder, ResizeMode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    Rgb,
    Bgr,
    /// One luminance channel (replicated when the model has three).
    Gray,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Resize {
    /// Bilinear resize to the model's input size (aspect ratio not kept).
    Stretch,
    /// Keep the aspect ratio, pad with grey (114).
    Letterbox,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// [N, C, H, W] (PyTorch exports).
    Nchw,
    /// [N, H, W, C] (TensorFlow exports): the .strix input becomes [N, C, H, W].
    Nhwc,
}

/// The flags, as `clap` parses them (flattened into `strix convert`).
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Model description (instead of, or on top of, a model TOML)")]
pub struct ModelFlags {
    /// The model's name in the .strix metadata (default: the TOML's `name`,
    /// else the ONNX file's name without extension).
    #[arg(long)]
    pub name: Option<String>,
    /// Pins an input's shape, dynamic dimensions included (repeat for several
    /// inputs), e.g. `--input-shape input=1,3,240,320`. A dimension the model
    /// fixes must be given unchanged.
    #[arg(long, value_name = "NAME=D0,D1,..")]
    pub input_shape: Vec<String>,
    /// Layout of the model's 4-D image input. With nhwc the .strix input is
    /// [N, C, H, W] (a transpose at the model's start, or none when the model
    /// begins by transposing to NCHW).
    #[arg(long, value_enum, value_name = "LAYOUT")]
    pub input_layout: Option<Layout>,
    /// The image input's channel order (makes the input an image).
    #[arg(long, value_enum)]
    pub color: Option<Color>,
    /// Mean subtracted from each 0..255 pixel value: one value or one per
    /// model channel, in the --color order (R,G,B for rgb, B,G,R for bgr),
    /// e.g. 127.5 or 123.675,116.28,103.53.
    #[arg(long, value_name = "M | C0,C1,C2", allow_hyphen_values = true)]
    pub mean: Option<String>,
    /// Factor applied after the mean: input = (pixel - mean) * scale, pixel
    /// in 0..255; one value or one per model channel (e.g. 0.00392157 for pixel/255).
    #[arg(long, value_name = "S | C0,C1,C2", conflicts_with = "std")]
    pub scale: Option<String>,
    /// Divisor applied after the mean: input = (pixel - mean) / std, pixel in
    /// 0..255; one value or one per model channel (e.g. 255, or
    /// 58.395,57.12,57.375). Stored as scale = 1 / std.
    #[arg(long, value_name = "D | C0,C1,C2")]
    pub std: Option<String>,
    /// How a picture of another size is fitted to the model's input size
    /// (the size comes from the model's input shape).
    #[arg(long, value_enum)]
    pub resize: Option<Resize>,
    /// Class labels, one per line (blank lines skipped), stored in the .strix file.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// How `strix run` and strixd turn the outputs into results.
    #[arg(long, value_enum)]
    pub decoder: Option<DecoderKind>,
    /// Classes reported by --decoder classify.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Minimum detection score (--decoder fastestdet / ultraface).
    #[arg(long)]
    pub score_threshold: Option<f32>,
    /// IoU above which non-maximum suppression drops a box (--decoder fastestdet / ultraface).
    #[arg(long)]
    pub nms_iou: Option<f32>,
    /// Write the resulting model TOML to PATH: passing it back with --config
    /// (or saving it as <model>.toml beside the model) gives the same model.
    #[arg(long, value_name = "PATH")]
    pub save_config: Option<PathBuf>,
}

impl ModelFlags {
    /// The checked overrides (everything but `--save-config`).
    pub fn overrides(&self) -> Result<Overrides> {
        let mean = self
            .mean
            .as_deref()
            .map(|s| per_channel("--mean", s))
            .transpose()?;
        let scale = match (&self.scale, &self.std) {
            (Some(s), _) => {
                let v = per_channel("--scale", s)?;
                if v.contains(&0.0) {
                    bail!("--scale {s}: a scale of 0 erases the input");
                }
                Some(v)
            }
            (None, Some(s)) => {
                let v = per_channel("--std", s)?;
                if v.iter().any(|&d| d <= 0.0) {
                    bail!("--std {s}: every value must be above 0");
                }
                // Rounded once, from f64, so `--std 255` is the f32 nearest to 1/255.
                Some(v.map(|d| (1.0 / d as f64) as f32))
            }
            (None, None) => None,
        };
        let labels = match &self.labels {
            Some(p) => {
                let l =
                    config::read_labels(p).with_context(|| format!("--labels {}", p.display()))?;
                if l.is_empty() {
                    bail!("--labels {}: the file has no labels", p.display());
                }
                Some(l)
            }
            None => None,
        };
        let input_shapes = self
            .input_shape
            .iter()
            .map(|s| parse_input_shape(s))
            .collect::<Result<Vec<_>>>()?;
        if self.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            bail!("--name: the name is empty");
        }
        Ok(Overrides {
            name: self.name.clone(),
            color: self.color.map(|c| match c {
                Color::Rgb => ColorOrder::Rgb,
                Color::Bgr => ColorOrder::Bgr,
                Color::Gray => ColorOrder::Gray,
            }),
            mean,
            scale,
            resize: self.resize.map(|r| match r {
                Resize::Stretch => ResizeMode::Stretch,
                Resize::Letterbox => ResizeMode::Letterbox,
            }),
            labels,
            decoder: self.decoder,
            top_k: self.top_k,
            score_threshold: self.score_threshold,
            nms_iou: self.nms_iou,
            input_layout: self.input_layout.map(|l| match l {
                Layout::Nchw => InputLayout::Nchw,
                Layout::Nhwc => InputLayout::Nhwc,
            }),
            input_shapes,
        })
    }

    /// Likely mistakes that are not errors: ImageNet's mean and std in 0..1
    /// units, where these flags take 0..255 pixel values.
    pub fn warnings(&self, o: &Overrides) -> Vec<String> {
        let mut w = vec![];
        let small = |v: &[f32; 3]| v.iter().all(|&x| x > 0.0 && x < 1.0);
        if let Some(m) = &o.mean {
            if small(m) && self.std.is_some() && o.scale.is_some_and(|s| s.iter().all(|&x| x > 1.0))
            {
                w.push(format!(
                    "--mean {} and --std {} look like values for 0..1 inputs; these flags \
                     take 0..255 pixels: multiply both by 255 (e.g. --mean {} --std {})",
                    self.mean.as_deref().unwrap_or(""),
                    self.std.as_deref().unwrap_or(""),
                    join(&m.map(|x| x * 255.0)),
                    join(&o.scale.unwrap_or([1.0; 3]).map(|s| 255.0 / s)),
                ));
            }
        }
        w
    }
}

fn join(v: &[f32; 3]) -> String {
    v.iter()
        .map(|x| format!("{}", (x * 1000.0).round() / 1000.0))
        .collect::<Vec<_>>()
        .join(",")
}

/// `V` or `A,B,C`, finite numbers, as three per-channel values.
fn per_channel(flag: &str, s: &str) -> Result<[f32; 3]> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| {
            x.trim()
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .with_context(|| format!("{flag} {s}: '{}' is not a finite number", x.trim()))
        })
        .collect::<Result<_>>()?;
    match v[..] {
        [a] => Ok([a; 3]),
        [a, b, c] => Ok([a, b, c]),
        _ => bail!(
            "{flag} {s}: give one value or three (one per channel), not {}",
            v.len()
        ),
    }
}

/// `NAME=D0,D1,...` with every dimension a whole number of at least 1. The
/// name is everything before the last `=` (ONNX names often hold `.`, `:`
/// or `/`).
pub fn parse_input_shape(s: &str) -> Result<(String, Vec<usize>)> {
    let Some((name, dims)) = s.rsplit_once('=') else {
        bail!("--input-shape {s}: expected NAME=D0,D1,... (e.g. input=1,3,240,320)");
    };
    if name.is_empty() {
        bail!("--input-shape {s}: the input name is empty");
    }
    let dims = dims
        .split(',')
        .map(|d| match d.trim().parse::<usize>() {
            Ok(0) => bail!("--input-shape {s}: dimension 0 is not allowed (at least 1)"),
            Ok(v) => Ok(v),
            Err(_) => bail!("--input-shape {s}: '{}' is not a whole number", d.trim()),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((name.to_string(), dims))
}

/// Refuses, before any is loaded, calibration samples the model description
/// cannot turn into input `shape`, saying which flags would: pictures for a
/// model with no image preprocessing, and pictures for an NHWC input.
pub fn check_samples(
    meta: &strix_runtime::meta::ModelMeta,
    calib: &[PathBuf],
    shape: &[usize],
) -> Result<()> {
    use strix_runtime::meta::InputSpec;
    let Some(picture) = calib.iter().find(|p| {
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        !matches!(ext.as_str(), "npy" | "wav")
    }) else {
        return Ok(());
    };
    let nhwc = shape.len() == 4 && !matches!(shape[1], 1 | 3) && matches!(shape[3], 1 | 3);
    match &meta.input {
        InputSpec::Raw => bail!(
            "{}: the model's input {shape:?} is not described as an image: no model TOML \
             (--config, or <model>.toml beside the ONNX file) says how to preprocess pictures. \
             Describe it with flags, e.g. `--color rgb --mean 0 --std 255` for pixel/255, or \
             `--color rgb --mean 123.675,116.28,103.53 --std 58.395,57.12,57.375` for \
             ImageNet{}; or calibrate on .npy tensors",
            picture.display(),
            if nhwc {
                ", with --input-layout nhwc"
            } else {
                ""
            }
        ),
        InputSpec::Image { .. } if nhwc => bail!(
            "{}: the model's input {shape:?} looks NHWC (channels last); image inputs are \
             NCHW: add --input-layout nhwc",
            picture.display()
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_values() {
        assert_eq!(per_channel("--mean", "127.5").unwrap(), [127.5; 3]);
        assert_eq!(per_channel("--mean", "1, 2,3").unwrap(), [1.0, 2.0, 3.0]);
        let e = per_channel("--mean", "1,2").unwrap_err().to_string();
        assert!(e.contains("--mean 1,2") && e.contains("not 2"), "{e}");
        let e = format!("{:#}", per_channel("--std", "1,x,3").unwrap_err());
        assert!(e.contains("'x' is not a finite number"), "{e}");
        assert!(per_channel("--std", "inf").is_err());
    }

    #[test]
    fn input_shapes_parse_and_refuse() {
        assert_eq!(
            parse_input_shape("input.1=1,3,352,352").unwrap(),
            ("input.1".to_string(), vec![1, 3, 352, 352])
        );
        for (bad, want) in [
            ("input", "expected NAME=D0"),
            ("=1,3", "name is empty"),
            ("x=1,0,3", "dimension 0 is not allowed"),
            ("x=1,-3", "'-3' is not a whole number"),
            ("x=", "'' is not a whole number"),
        ] {
            let e = parse_input_shape(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn std_becomes_scale_and_conflicts_are_named() {
        let f = ModelFlags {
            std: Some("255".into()),
            mean: Some("0".into()),
            ..Default::default()
        };
        let o = f.overrides().unwrap();
        assert_eq!(o.scale, Some([0.003_921_569; 3]));
        assert_eq!(o.mean, Some([0.0; 3]));
        let f = ModelFlags {
            std: Some("1,0,1".into()),
            ..Default::default()
        };
        assert!(f
            .overrides()
            .unwrap_err()
            .to_string()
            .contains("every value must be above 0"));
        // ImageNet statistics in 0..1 units are flagged, with the fix.
        let f = ModelFlags {
            mean: Some("0.485,0.456,0.406".into()),
            std: Some("0.229,0.224,0.225".into()),
            ..Default::default()
        };
        let w = f.warnings(&f.overrides().unwrap());
        assert!(
            w.len() == 1 && w[0].contains("--mean 123.675,116.28,103.53"),
            "{w:?}"
        );
    }
}

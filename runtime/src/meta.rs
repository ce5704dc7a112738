//! Model metadata carried inside a `.strix` file: how to turn raw media into the
//! model's input tensor and how to turn its outputs into results, so that `run`,
//! `eval`, `strixd` and the C ABI need no side files.

use serde::{Deserialize, Serialize};

/// Everything a pipeline needs besides the graph itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Free-form model name (defaults to the ONNX file stem).
    #[serde(default)]
    pub name: String,
    /// How raw media becomes the first input tensor.
    #[serde(default)]
    pub input: InputSpec,
    /// How outputs become results.
    #[serde(default)]
    pub decoder: Decoder,
    /// Class labels, index = class id.
    #[serde(default)]
    pub labels: Vec<String>,
}

/// Input preprocessing. Images: `value = (pixel - mean[c]) * scale[c]` with
/// `pixel` in 0..=255, after resizing to the model's input size.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputSpec {
    /// The input is given as a raw tensor (`.npy`); nothing to do.
    #[default]
    Raw,
    Image {
        /// Channel order the model expects in its channel axis.
        #[serde(default)]
        color: ColorOrder,
        /// Per-channel mean subtracted from 0..255 pixels.
        #[serde(default)]
        mean: [f32; 3],
        /// Per-channel factor applied after the mean.
        #[serde(default = "one3")]
        scale: [f32; 3],
        /// How an image of another size is fitted.
        #[serde(default)]
        resize: ResizeMode,
    },
    /// 16 kHz mono audio turned into features by a named front end.
    Audio {
        #[serde(default = "sr16k")]
        sample_rate: u32,
        frontend: AudioFrontend,
    },
}

fn one3() -> [f32; 3] {
    [1.0, 1.0, 1.0]
}
fn sr16k() -> u32 {
    16_000
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorOrder {
    #[default]
    Rgb,
    Bgr,
    /// One luminance channel; replicated when the model has three channels.
    Gray,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Plain bilinear resize to the input size (aspect ratio not kept).
    #[default]
    Stretch,
    /// Keep the aspect ratio, pad with grey (114) to the input size.
    Letterbox,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioFrontend {
    /// MLPerf Tiny / TF speech-commands MFCC: 49 frames x 10 coefficients per second.
    KwsMfcc,
    /// Raw samples in chunks (e.g. Silero VAD).
    RawSamples,
}

/// Output decoding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decoder {
    /// Print the output tensors as they are.
    #[default]
    Raw,
    /// First output holds class scores; report the top-k.
    Classify {
        #[serde(default = "top5")]
        top_k: usize,
    },
    /// FastestDet head `[1, 5 + C, H, W]`: per cell obj, tx, ty, tw, th, C class scores.
    Fastestdet {
        #[serde(default = "fd_thr")]
        score_threshold: f32,
        #[serde(default = "fd_iou")]
        nms_iou: f32,
    },
    /// UltraFace: outputs `scores [1, N, 2]` (softmaxed: background, face) and
    /// `boxes [1, N, 4]` corners in 0..1.
    Ultraface {
        #[serde(default = "uf_thr")]
        score_threshold: f32,
        #[serde(default = "uf_iou")]
        nms_iou: f32,
    },
}

fn top5() -> usize {
    5
}
fn fd_thr() -> f32 {
    0.65
}
fn fd_iou() -> f32 {
    0.45
}
fn uf_thr() -> f32 {
    0.7
}
fn uf_iou() -> f32 {
    0.3
}

/// One detection, box corners as fractions of the image (0..1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
    pub score: f32,
    pub class: u32,
}

//! Shared helpers for the end-to-end tests: where the bundled models and media
//! are, and how each model is calibrated.

use std::path::{Path, PathBuf};
use strix_runtime::Model;
use strix_tools::calib::Method;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn models() -> PathBuf {
    root().join("models")
}

pub fn image(name: &str) -> PathBuf {
    models().join("images").join(name)
}

/// A bundled model: its ONNX file, calibration samples and evaluation samples.
pub struct Case {
    pub name: &'static str,
    pub onnx: PathBuf,
    pub calib: Vec<PathBuf>,
    pub samples: Vec<PathBuf>,
}

pub fn all_images() -> Vec<PathBuf> {
    [
        "fastestdet_0.jpg",
        "fastestdet_3.jpg",
        "astronaut.png",
        "camera.png",
        "faces_1.jpg",
        "faces_13.jpg",
    ]
    .iter()
    .map(|n| image(n))
    .collect()
}

pub fn kws_clips() -> Vec<PathBuf> {
    [
        "yes_1000ms.wav",
        "no_1000ms.wav",
        "silence_1000ms.wav",
        "noise_1000ms.wav",
    ]
    .iter()
    .map(|n| models().join("kws").join(n))
    .collect()
}

pub fn case(name: &str) -> Case {
    let m = models();
    match name {
        "fastestdet" => Case {
            name: "fastestdet",
            onnx: m.join("fastestdet/FastestDet.onnx"),
            calib: all_images(),
            samples: vec![image("fastestdet_0.jpg"), image("fastestdet_3.jpg")],
        },
        "ultraface-rfb" => Case {
            name: "ultraface-rfb",
            onnx: m.join("ultraface/version-RFB-320.onnx"),
            calib: all_images(),
            samples: vec![image("faces_1.jpg"), image("faces_13.jpg")],
        },
        "ultraface-slim" => Case {
            name: "ultraface-slim",
            onnx: m.join("ultraface/version-slim-320.onnx"),
            calib: all_images(),
            samples: vec![image("faces_1.jpg"), image("faces_13.jpg")],
        },
        "vww" => Case {
            name: "vww",
            onnx: m.join("vww/vww_96_float.onnx"),
            calib: all_images(),
            samples: all_images(),
        },
        "kws" => Case {
            name: "kws",
            onnx: m.join("kws/kws_dscnn_f32.onnx"),
            calib: kws_clips(),
            samples: kws_clips(),
        },
        other => panic!("unknown case {other}"),
    }
}

/// A fresh scratch directory (unique per call: tests run in parallel threads).
pub fn scratch(tag: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("strix-test-{}-{tag}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Converts a case to int8 (default method) and returns the model and its path.
pub fn convert(c: &Case, dir: &Path) -> (Model, PathBuf) {
    let out = dir.join(format!("{}.strix", c.name));
    let m = strix_tools::convert(&c.onnx, &c.calib, &out, None, Method::Mse, false, false)
        .unwrap_or_else(|e| panic!("converting {}: {e:#}", c.name));
    (m, out)
}

/// Deterministic crops (50-100% of each side, at random places) of `srcs`,
/// `per` each, half of them mirrored, written to `dir` as PNG.
pub fn crops(srcs: &[PathBuf], per: usize, dir: &Path) -> Vec<PathBuf> {
    let mut s: u32 = 12345;
    let mut next = |n: u32| {
        s = s.wrapping_mul(1103515245).wrapping_add(12345);
        (s >> 8) % n.max(1)
    };
    let mut out = vec![];
    for (i, p) in srcs.iter().enumerate() {
        let img = image::open(p).unwrap().to_rgb8();
        let (w, h) = img.dimensions();
        for j in 0..per {
            let f = 50 + next(51); // 50..100% of each side
            let (cw, ch) = (w * f / 100, h * f / 100);
            let (x, y) = (next(w - cw + 1), next(h - ch + 1));
            let mut c = image::imageops::crop_imm(&img, x, y, cw, ch).to_image();
            if next(2) == 1 {
                c = image::imageops::flip_horizontal(&c);
            }
            let path = dir.join(format!("crop_{i}_{j}.png"));
            c.save(&path).unwrap();
            out.push(path);
        }
    }
    out
}

//! Calibration augmentation: views of each calibration image (mirrors and
//! crops, which show objects larger and nearer the borders than the photo
//! does) added to small calibration sets.
//!
//! Why: an int8 activation range is the range calibration saw. With a few
//! photos, a later layer of a detector has only seen objects at the sizes
//! those photos hold; a photo with a larger object drives some channels
//! several times past the calibrated range (FastestDet's last backbone conv:
//! 0.98 on three photos, 9.8 on a fourth), the values clip and the boxes
//! built on them move. Crops enlarge what the photos contain, so the ranges
//! cover more of what unseen photos bring, at the price of a little
//! resolution on the photos themselves. A large calibration set already
//! holds that variety: augmentation fills a set up to
//! [`AUGMENT_UP_TO`] samples and adds nothing beyond it.

use anyhow::{anyhow, Context, Result};
use std::path::Path;
use strix_runtime::meta::InputSpec;
use strix_runtime::preprocess::{decode_image_rgb8, image_to_tensor, Frame, PixelFormat};

/// Calibration sets smaller than this many samples are filled up with
/// augmented views (at most [`VIEWS`]`.len()` per image).
pub const AUGMENT_UP_TO: usize = 32;

/// The views: (crop side as a fraction of the image side, horizontal
/// position of the crop 0..=1, vertical position 0..=1, mirrored). The first
/// ones are added first when a set needs only a few. Fixed (not random) so
/// that a conversion is reproducible.
pub const VIEWS: [(f32, f32, f32, bool); 7] = [
    (1.0, 0.0, 0.0, true),
    (0.6, 0.0, 0.0, false),
    (0.6, 1.0, 1.0, true),
    (0.6, 1.0, 0.0, false),
    (0.6, 0.0, 1.0, true),
    (0.75, 0.5, 0.5, false),
    (0.5, 0.5, 0.5, true),
];

/// How many views each of `n` calibration images gets.
pub fn views_per_image(n: usize) -> usize {
    if n == 0 || n >= AUGMENT_UP_TO {
        return 0;
    }
    (AUGMENT_UP_TO.div_ceil(n) - 1).min(VIEWS.len())
}

/// True when `path` is read as an image for `spec` (not `.npy` or `.wav`).
pub fn is_image_sample(path: &Path, spec: &InputSpec) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(spec, InputSpec::Image { .. }) && ext != "npy" && ext != "wav"
}

/// The first `count` [`VIEWS`] of the image at `path`, each preprocessed
/// as `spec` says into an input of shape `shape` (NCHW).
pub fn views(
    path: &Path,
    spec: &InputSpec,
    shape: &[usize],
    count: usize,
) -> Result<Vec<Vec<f32>>> {
    if shape.len() != 4 {
        anyhow::bail!("image input needs a 4-D NCHW model input, found {shape:?}");
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let img = decode_image_rgb8(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let want: usize = shape.iter().product();
    let mut out = vec![];
    for &(f, px, py, mirror) in VIEWS.iter().take(count) {
        let (cw, ch) = (
            ((w as f32 * f) as usize).max(1),
            ((h as f32 * f) as usize).max(1),
        );
        let (x0, y0) = (
            ((w - cw) as f32 * px).round() as usize,
            ((h - ch) as f32 * py).round() as usize,
        );
        let mut data = Vec::with_capacity(cw * ch * 3);
        for y in y0..y0 + ch {
            for i in 0..cw {
                let x = if mirror { x0 + cw - 1 - i } else { x0 + i };
                let p = (y * w + x) * 3;
                data.extend_from_slice(&src[p..p + 3]);
            }
        }
        let frame = Frame {
            data: &data,
            width: cw,
            height: ch,
            stride: 0,
            format: PixelFormat::Rgb8,
        };
        let mut v = vec![0f32; want];
        image_to_tensor(&frame, spec, shape[1], shape[2], shape[3], &mut v)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sets_fill_up_and_large_ones_stay() {
        assert_eq!(views_per_image(0), 0);
        assert_eq!(views_per_image(1), VIEWS.len());
        assert_eq!(views_per_image(3), VIEWS.len());
        assert_eq!(views_per_image(8), 3);
        assert_eq!(views_per_image(16), 1);
        assert_eq!(views_per_image(31), 1);
        assert_eq!(views_per_image(32), 0);
        assert_eq!(views_per_image(500), 0);
    }

    #[test]
    fn views_are_distinct_inputs_of_the_model_shape() {
        let img = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/images/camera.png");
        let spec = InputSpec::Image {
            color: strix_runtime::meta::ColorOrder::Rgb,
            mean: [0.0; 3],
            scale: [1.0 / 255.0; 3],
            resize: strix_runtime::meta::ResizeMode::Stretch,
        };
        let shape = [1, 3, 32, 32];
        let v = views(&img, &spec, &shape, VIEWS.len()).unwrap();
        assert_eq!(v.len(), VIEWS.len());
        let plain = crate::media::load_input(&img, &spec, &shape).unwrap();
        for (i, a) in v.iter().enumerate() {
            assert_eq!(a.len(), 3 * 32 * 32);
            assert!(a.iter().all(|x| (0.0..=1.0).contains(x)));
            assert_ne!(a, &plain, "view {i} is the image itself");
            for b in &v[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert!(views(&img, &spec, &[1, 3 * 32 * 32], 1).is_err());
        assert!(views(Path::new("/nonexistent.png"), &spec, &shape, 1).is_err());
    }
}

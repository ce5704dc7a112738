//! The image reader of `strix run` (`strix_tools::media::load_input`: decode
//! with the `image` crate, convert to RGB, resize and normalise into an NCHW
//! tensor). The file extension, which picks the decoder, follows the magic
//! bytes (PNG, BMP, else JPEG); the input length picks the colour order and
//! the resize mode, so both preprocessing paths are covered. PNG chunk CRCs
//! are recomputed first, so mutated headers (sizes, bit depths, colour
//! types) and data reach the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strix_runtime::meta::{ColorOrder, InputSpec, ResizeMode};

fuzz_target!(|data: &[u8]| {
    let ext = if data.starts_with(b"\x89PNG") {
        "png"
    } else if data.starts_with(b"BM") {
        "bmp"
    } else {
        "jpg"
    };
    let color = [ColorOrder::Rgb, ColorOrder::Bgr, ColorOrder::Gray][data.len() % 3];
    let resize = [ResizeMode::Stretch, ResizeMode::Letterbox][data.len() / 3 % 2];
    let spec = InputSpec::Image {
        color,
        mean: [0.0; 3],
        scale: [1.0 / 255.0; 3],
        resize,
    };
    let mut bytes = data.to_vec();
    if ext == "png" {
        strix_fuzz::fix_png_crcs(&mut bytes);
    }
    let path = strix_fuzz::scratch_file(ext, &bytes);
    let _ = strix_tools::media::load_input(&path, &spec, &[1, 3, 96, 96]);
});

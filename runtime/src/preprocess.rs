//! Camera frame -> model input tensor: colour conversion, bilinear resize
//! (stretch or letterbox) and per-channel normalisation, in one pass that
//! writes straight into the caller's tensor buffer and allocates nothing.

use thiserror::Error;

use crate::meta::{ColorOrder, Detection, InputSpec, ResizeMode};

/// Grey level (0..=255) of the letterbox padding, as in YOLO-family pipelines.
pub const PAD_VALUE: f32 = 114.0;

/// Memory layout of a [`Frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    /// Packed 8-bit R, G, B.
    Rgb8,
    /// Packed 8-bit B, G, R (OpenCV's native order).
    Bgr8,
    /// One 8-bit grey value per pixel.
    Gray8,
    /// YUV 4:2:0, BT.601 limited range: a `height`-row Y plane, followed by
    /// `ceil(height / 2)` rows of interleaved U, V samples (one pair per 2x2
    /// block, `ceil(width / 2)` pairs per row).
    Nv12,
}

impl PixelFormat {
    /// Bytes per pixel of the packed formats and of the NV12 luma plane.
    fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb8 | PixelFormat::Bgr8 => 3,
            PixelFormat::Gray8 | PixelFormat::Nv12 => 1,
        }
    }
}

/// A borrowed 8-bit image.
///
/// `stride` is the distance in bytes between the starts of consecutive rows
/// (`0` = tightly packed, i.e. `width * bytes_per_pixel`). For NV12 a non-zero
/// stride applies to both planes and the UV plane starts at `stride * height`;
/// with `stride == 0` the Y rows are `width` bytes and the UV rows
/// `2 * ceil(width / 2)` bytes. The last row of each plane need not be padded
/// to the full stride.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub stride: usize,
    pub format: PixelFormat,
}

impl<'a> Frame<'a> {
    /// A tightly packed frame (`stride == 0`).
    pub fn new(data: &'a [u8], width: usize, height: usize, format: PixelFormat) -> Self {
        Frame {
            data,
            width,
            height,
            stride: 0,
            format,
        }
    }

    /// Checks that `data` holds a whole frame of this size, stride and format.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        self.layout().map(|_| ())
    }

    fn layout(&self) -> Result<Layout, PreprocessError> {
        let (width, height, format) = (self.width, self.height, self.format);
        if width == 0 || height == 0 {
            return Err(PreprocessError::EmptyFrame { width, height });
        }
        let overflow = PreprocessError::FrameTooLarge { width, height };
        let row_bytes = width
            .checked_mul(format.bytes_per_pixel())
            .ok_or(overflow.clone())?;
        let stride = if self.stride == 0 {
            row_bytes
        } else {
            self.stride
        };
        if stride < row_bytes {
            return Err(PreprocessError::StrideTooSmall {
                stride,
                format,
                width,
                min: row_bytes,
            });
        }
        let plane_bytes = |rows: usize, stride: usize, row_bytes: usize| {
            (rows - 1)
                .checked_mul(stride)
                .and_then(|b| b.checked_add(row_bytes))
        };
        let (needed, uv_offset, uv_stride) = if format == PixelFormat::Nv12 {
            // Odd widths still carry a whole U, V pair for the last column.
            let uv_row_bytes = width.checked_add(width & 1).ok_or(overflow.clone())?;
            let uv_stride = if self.stride == 0 {
                uv_row_bytes
            } else {
                stride
            };
            if uv_stride < uv_row_bytes {
                return Err(PreprocessError::StrideTooSmall {
                    stride,
                    format,
                    width,
                    min: uv_row_bytes,
                });
            }
            let uv_offset = stride.checked_mul(height).ok_or(overflow.clone())?;
            let uv_rows = height.div_ceil(2);
            let needed = plane_bytes(uv_rows, uv_stride, uv_row_bytes)
                .and_then(|b| b.checked_add(uv_offset))
                .ok_or(overflow)?;
            (needed, uv_offset, uv_stride)
        } else {
            let needed = plane_bytes(height, stride, row_bytes).ok_or(overflow)?;
            (needed, 0, 0)
        };
        if self.data.len() < needed {
            return Err(PreprocessError::BufferTooSmall {
                actual: self.data.len(),
                needed,
                width,
                height,
                stride: self.stride,
                format,
            });
        }
        Ok(Layout {
            stride,
            uv_offset,
            uv_stride,
        })
    }
}

/// Byte offsets of a validated frame.
#[derive(Clone, Copy, Debug)]
struct Layout {
    stride: usize,
    uv_offset: usize,
    uv_stride: usize,
}

/// Where the source image sits inside the model input, in fractions of the
/// model input: source fraction `s` (0..1 of the source width) appears at model
/// fraction `pad_x + s * scale_x`, likewise vertically.
///
/// [`ResizeMode::Stretch`] gives [`Letterbox::IDENTITY`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    pub scale_x: f32,
    pub scale_y: f32,
    pub pad_x: f32,
    pub pad_y: f32,
}

impl Default for Letterbox {
    fn default() -> Self {
        Letterbox::IDENTITY
    }
}

impl Letterbox {
    /// The source fills the whole model input.
    pub const IDENTITY: Letterbox = Letterbox {
        scale_x: 1.0,
        scale_y: 1.0,
        pad_x: 0.0,
        pad_y: 0.0,
    };

    /// Maps a detection in model-input fractions to source-image fractions,
    /// clamped to 0..1 (boxes reaching into the padding are cut at the image
    /// edge). Score and class are kept. A degenerate (non-positive or NaN)
    /// scale yields coordinates clamped to 0, never a panic.
    pub fn to_source(&self, d: &Detection) -> Detection {
        let x = |u: f32| clamp01((u - self.pad_x) / self.scale_x);
        let y = |v: f32| clamp01((v - self.pad_y) / self.scale_y);
        Detection {
            x0: x(d.x0),
            y0: y(d.y0),
            x1: x(d.x1),
            y1: y(d.y1),
            ..*d
        }
    }

    /// Maps a detection in source-image fractions to model-input fractions
    /// (the inverse of [`Letterbox::to_source`] for boxes inside the image).
    pub fn to_model(&self, d: &Detection) -> Detection {
        let x = |s: f32| self.pad_x + s * self.scale_x;
        let y = |s: f32| self.pad_y + s * self.scale_y;
        Detection {
            x0: x(d.x0),
            y0: y(d.y0),
            x1: x(d.x1),
            y1: y(d.y1),
            ..*d
        }
    }
}

/// Clamps to 0..1, sending NaN to 0.
fn clamp01(v: f32) -> f32 {
    if v >= 0.0 {
        v.min(1.0)
    } else {
        0.0
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PreprocessError {
    #[error("input spec is {0}, not an image spec")]
    NotImageSpec(&'static str),
    #[error("frame has zero size ({width}x{height})")]
    EmptyFrame { width: usize, height: usize },
    #[error("frame of {width}x{height} overflows the address space")]
    FrameTooLarge { width: usize, height: usize },
    #[error("stride {stride} is smaller than one {format:?} row of width {width} ({min} bytes)")]
    StrideTooSmall {
        stride: usize,
        format: PixelFormat,
        width: usize,
        min: usize,
    },
    #[error(
        "frame buffer holds {actual} bytes but a {width}x{height} {format:?} frame \
         with stride {stride} needs {needed}"
    )]
    BufferTooSmall {
        actual: usize,
        needed: usize,
        width: usize,
        height: usize,
        stride: usize,
        format: PixelFormat,
    },
    #[error("model input has zero size ({channels}x{height}x{width})")]
    EmptyInput {
        channels: usize,
        height: usize,
        width: usize,
    },
    #[error("model input has {0} channels; image inputs need 1 or 3")]
    UnsupportedChannels(usize),
    #[error(
        "output buffer holds {actual} floats, expected {expected} ({channels}x{height}x{width})"
    )]
    OutputLength {
        actual: usize,
        expected: usize,
        channels: usize,
        height: usize,
        width: usize,
    },
}

/// Converts `frame` into a batch-1 NCHW float tensor of shape
/// `channels x height x width` in `out`, and returns how model-input
/// coordinates map back to the frame.
///
/// * Channels follow `spec.color`: 3-channel models get R,G,B or B,G,R, or the
///   luminance replicated for [`ColorOrder::Gray`]; 1-channel models always get
///   the luminance (`0.299 R + 0.587 G + 0.114 B`). NV12 is converted to RGB
///   with BT.601 limited-range coefficients before resizing.
/// * Resizing is bilinear with OpenCV `INTER_LINEAR` geometry (half-pixel
///   centres, edge clamping, no antialiasing). Values are not rounded to 8 bits
///   in between, so they may differ from `cv2.resize` on `uint8` by up to about
///   half a grey level. [`ResizeMode::Letterbox`] keeps the aspect ratio,
///   centres the image and fills the rest with grey [`PAD_VALUE`].
/// * Finally `value = (pixel - mean[c]) * scale[c]`, `pixel` in 0..=255.
///
/// Allocates nothing; validates every size and never panics. Errors: `spec` is
/// not [`InputSpec::Image`], zero frame or model sizes, `channels` not 1 or 3,
/// `out.len() != channels * height * width`, or a frame buffer too small for
/// its size, stride and format.
pub fn image_to_tensor(
    frame: &Frame,
    spec: &InputSpec,
    channels: usize,
    height: usize,
    width: usize,
    out: &mut [f32],
) -> Result<Letterbox, PreprocessError> {
    let (color, mean, scale, resize) = match spec {
        InputSpec::Image {
            color,
            mean,
            scale,
            resize,
        } => (*color, *mean, *scale, *resize),
        InputSpec::Raw => return Err(PreprocessError::NotImageSpec("raw")),
        InputSpec::Audio { .. } => return Err(PreprocessError::NotImageSpec("audio")),
    };
    if channels == 0 || height == 0 || width == 0 {
        return Err(PreprocessError::EmptyInput {
            channels,
            height,
            width,
        });
    }
    if channels != 1 && channels != 3 {
        return Err(PreprocessError::UnsupportedChannels(channels));
    }
    // channels <= 3, so only height * width can overflow; an overflowing size
    // can never match a real buffer, so report it as a length mismatch.
    let expected = height
        .checked_mul(width)
        .and_then(|p| p.checked_mul(channels))
        .unwrap_or(usize::MAX);
    if out.len() != expected {
        return Err(PreprocessError::OutputLength {
            actual: out.len(),
            expected,
            channels,
            height,
            width,
        });
    }
    let layout = frame.layout()?;

    let (sw, sh) = (frame.width, frame.height);
    let (xa, ya, letterbox) = match resize {
        ResizeMode::Stretch => (
            Axis::new(sw, 0, width),
            Axis::new(sh, 0, height),
            Letterbox::IDENTITY,
        ),
        ResizeMode::Letterbox => {
            let r = (width as f64 / sw as f64).min(height as f64 / sh as f64);
            let cw = ((sw as f64 * r).round() as usize).clamp(1, width);
            let ch = ((sh as f64 * r).round() as usize).clamp(1, height);
            let (px, py) = ((width - cw) / 2, (height - ch) / 2);
            let lb = Letterbox {
                scale_x: (cw as f64 / width as f64) as f32,
                scale_y: (ch as f64 / height as f64) as f32,
                pad_x: (px as f64 / width as f64) as f32,
                pad_y: (py as f64 / height as f64) as f32,
            };
            (Axis::new(sw, px, cw), Axis::new(sh, py, ch), lb)
        }
    };
    let map = match (channels, color) {
        (1, _) | (_, ColorOrder::Gray) => ChannelMap::Luma,
        (_, ColorOrder::Rgb) => ChannelMap::Rgb,
        (_, ColorOrder::Bgr) => ChannelMap::Bgr,
    };
    let job = Job {
        xa,
        ya,
        width,
        height,
        channels,
        map,
        mean,
        scale,
    };
    let data = frame.data;
    match frame.format {
        PixelFormat::Rgb8 => job.run(&Packed::<0, 2> { data, layout }, out),
        PixelFormat::Bgr8 => job.run(&Packed::<2, 0> { data, layout }, out),
        PixelFormat::Gray8 => job.run(&Gray { data, layout }, out),
        PixelFormat::Nv12 => job.run(&Nv12 { data, layout }, out),
    }
    Ok(letterbox)
}

/// A source of RGB pixels at validated coordinates.
trait Sampler {
    /// The three channels are always equal (luminance needs no weighting).
    const GRAY: bool;
    fn rgb(&self, x: usize, y: usize) -> [f32; 3];
}

/// Packed 3-byte pixels with red at byte `R` and blue at byte `B`.
struct Packed<'a, const R: usize, const B: usize> {
    data: &'a [u8],
    layout: Layout,
}

impl<const R: usize, const B: usize> Sampler for Packed<'_, R, B> {
    const GRAY: bool = false;
    #[inline(always)]
    fn rgb(&self, x: usize, y: usize) -> [f32; 3] {
        let o = y * self.layout.stride + x * 3;
        let p = &self.data[o..o + 3];
        [f32::from(p[R]), f32::from(p[1]), f32::from(p[B])]
    }
}

struct Gray<'a> {
    data: &'a [u8],
    layout: Layout,
}

impl Sampler for Gray<'_> {
    const GRAY: bool = true;
    #[inline(always)]
    fn rgb(&self, x: usize, y: usize) -> [f32; 3] {
        let g = f32::from(self.data[y * self.layout.stride + x]);
        [g, g, g]
    }
}

struct Nv12<'a> {
    data: &'a [u8],
    layout: Layout,
}

impl Sampler for Nv12<'_> {
    const GRAY: bool = false;
    #[inline(always)]
    fn rgb(&self, x: usize, y: usize) -> [f32; 3] {
        let l = &self.layout;
        let o = l.uv_offset + (y / 2) * l.uv_stride + (x / 2) * 2;
        yuv_to_rgb(self.data[y * l.stride + x], self.data[o], self.data[o + 1])
    }
}

/// One YUV sample to RGB, unrounded, each channel in `0.0..=255.0`: BT.601
/// limited range (Y in 16..235, U and V in 16..240 around 128, expanded to
/// full range), what cameras, V4L2 YUYV and ffmpeg's `yuv420p` deliver.
///
/// The one YUV conversion of Strix: the NV12 frames of [`image_to_tensor`]
/// and the daemon's YUV sources (through [`yuv_to_rgb8`]) all use it.
#[inline(always)]
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [f32; 3] {
    let u = f32::from(u) - 128.0;
    let v = f32::from(v) - 128.0;
    let c = 1.164_383 * (f32::from(y) - 16.0);
    [
        (c + 1.596_027 * v).clamp(0.0, 255.0),
        (c - 0.391_762 * u - 0.812_968 * v).clamp(0.0, 255.0),
        (c + 2.017_232 * u).clamp(0.0, 255.0),
    ]
}

/// [`yuv_to_rgb`] rounded to the nearest 8-bit value (halves away from
/// zero), for code that keeps RGB8 frames.
#[inline]
pub fn yuv_to_rgb8(y: u8, u: u8, v: u8) -> [u8; 3] {
    // In 0..=255 already, so the cast neither wraps nor saturates.
    yuv_to_rgb(y, u, v).map(|c| c.round() as u8)
}

/// Which model channel gets which colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChannelMap {
    Rgb,
    Bgr,
    /// Luminance in every channel.
    Luma,
}

/// Two source taps and the weight of the second, OpenCV `INTER_LINEAR` style.
#[derive(Clone, Copy, Debug)]
struct Tap {
    i0: usize,
    i1: usize,
    f: f32,
}

/// One axis of the resize: the source of length `src` is stretched onto
/// `len` output pixels starting at `start`; outside that range is padding.
#[derive(Clone, Copy, Debug)]
struct Axis {
    src: usize,
    start: usize,
    len: usize,
    ratio: f64,
}

impl Axis {
    fn new(src: usize, start: usize, len: usize) -> Self {
        Axis {
            src,
            start,
            len,
            ratio: src as f64 / len as f64,
        }
    }

    #[inline(always)]
    fn tap(&self, o: usize) -> Option<Tap> {
        let d = o.checked_sub(self.start).filter(|&d| d < self.len)?;
        // Half-pixel centres; clamping at both ends mirrors OpenCV, which
        // replicates the edge pixel instead of blending with a border.
        let s = ((d as f64 + 0.5) * self.ratio - 0.5).max(0.0);
        let last = self.src - 1;
        let i0 = s.floor() as usize;
        if i0 >= last {
            return Some(Tap {
                i0: last,
                i1: last,
                f: 0.0,
            });
        }
        Some(Tap {
            i0,
            i1: i0 + 1,
            f: (s - i0 as f64) as f32,
        })
    }
}

struct Job {
    xa: Axis,
    ya: Axis,
    width: usize,
    height: usize,
    channels: usize,
    map: ChannelMap,
    mean: [f32; 3],
    scale: [f32; 3],
}

impl Job {
    fn run<S: Sampler>(&self, s: &S, out: &mut [f32]) {
        let plane = self.width * self.height;
        for oy in 0..self.height {
            let ty = self.ya.tap(oy);
            for ox in 0..self.width {
                let rgb = match (self.xa.tap(ox), ty) {
                    (Some(tx), Some(ty)) => {
                        let lerp = |a: [f32; 3], b: [f32; 3], f: f32| {
                            [
                                a[0] + (b[0] - a[0]) * f,
                                a[1] + (b[1] - a[1]) * f,
                                a[2] + (b[2] - a[2]) * f,
                            ]
                        };
                        let top = lerp(s.rgb(tx.i0, ty.i0), s.rgb(tx.i1, ty.i0), tx.f);
                        let bottom = lerp(s.rgb(tx.i0, ty.i1), s.rgb(tx.i1, ty.i1), tx.f);
                        lerp(top, bottom, ty.f)
                    }
                    _ => [PAD_VALUE; 3],
                };
                let px = match self.map {
                    ChannelMap::Rgb => rgb,
                    ChannelMap::Bgr => [rgb[2], rgb[1], rgb[0]],
                    ChannelMap::Luma => {
                        let l = if S::GRAY {
                            rgb[0]
                        } else {
                            0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
                        };
                        [l; 3]
                    }
                };
                let i = oy * self.width + ox;
                for c in 0..self.channels {
                    out[c * plane + i] = (px[c] - self.mean[c]) * self.scale[c];
                }
            }
        }
    }
}

/// Why an encoded image (JPEG, PNG, BMP) was not decoded by
/// [`decode_image_rgb8`]. The caller adds the file name.
#[cfg(feature = "image")]
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The header declares an image above [`crate::limits::MAX_IMAGE_PIXELS`]
    /// or [`crate::limits::MAX_IMAGE_SIDE`]: refused before decoding.
    #[error(
        "image of {width}x{height} pixels ({:.1} Mpx) exceeds the limit of {:.1} Mpx and \
         {} pixels per side",
        f64::from(*width) * f64::from(*height) / 1e6,
        crate::limits::MAX_IMAGE_PIXELS as f64 / 1e6,
        crate::limits::MAX_IMAGE_SIDE
    )]
    TooLarge { width: u32, height: u32 },
    /// Not a readable image of a supported format, or the decoder needed more
    /// than [`crate::limits::MAX_IMAGE_DECODE_BYTES`].
    #[error("cannot decode image: {0}")]
    Decode(#[from] image::ImageError),
}

/// Decodes an encoded image (format guessed from its bytes) to packed RGB8,
/// within [`crate::limits`].
///
/// The header's width and height are read first: an image above
/// [`crate::limits::MAX_IMAGE_PIXELS`] or [`crate::limits::MAX_IMAGE_SIDE`] is
/// refused before any pixel is decoded (a 400 KB PNG can declare
/// 20000x20000 pixels), and the decoder runs with a memory budget of
/// [`crate::limits::MAX_IMAGE_DECODE_BYTES`]. Never panics on malformed
/// input.
#[cfg(feature = "image")]
pub fn decode_image_rgb8(bytes: &[u8]) -> Result<image::RgbImage, DecodeError> {
    use crate::limits;
    use image::ImageDecoder;

    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(image::ImageError::IoError)?;
    let mut budget = image::Limits::default();
    budget.max_alloc = Some(limits::MAX_IMAGE_DECODE_BYTES);
    reader.limits(budget.clone());
    // Builds the decoder from the header only; no pixel is decoded yet.
    let decoder = reader.into_decoder()?;
    let (width, height) = decoder.dimensions();
    if !limits::image_size_ok(width.into(), height.into()) {
        return Err(DecodeError::TooLarge { width, height });
    }
    budget.reserve(decoder.total_bytes())?;
    Ok(image::DynamicImage::from_decoder(decoder)?.into_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(color: ColorOrder, resize: ResizeMode) -> InputSpec {
        InputSpec::Image {
            color,
            mean: [0.0; 3],
            scale: [1.0; 3],
            resize,
        }
    }

    fn plain() -> InputSpec {
        spec(ColorOrder::Rgb, ResizeMode::Stretch)
    }

    fn gray_frame(data: &[u8], w: usize, h: usize) -> Frame<'_> {
        Frame::new(data, w, h, PixelFormat::Gray8)
    }

    fn run(frame: &Frame, spec: &InputSpec, c: usize, h: usize, w: usize) -> (Vec<f32>, Letterbox) {
        let mut out = vec![f32::NAN; c * h * w];
        let lb = image_to_tensor(frame, spec, c, h, w, &mut out).unwrap();
        (out, lb)
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "index {i}: {x} vs {y}\n{a:?}\n{b:?}");
        }
    }

    #[test]
    fn bilinear_upscale_matches_opencv() {
        // cv2.resize(np.float32([[0,100],[200,40]]), (4,4), INTER_LINEAR)
        let src = [0u8, 100, 200, 40];
        let f = gray_frame(&src, 2, 2);
        let (out, lb) = run(&f, &spec(ColorOrder::Gray, ResizeMode::Stretch), 1, 4, 4);
        #[rustfmt::skip]
        let want = [
            0.0, 25.0, 75.0, 100.0,
            50.0, 58.75, 76.25, 85.0,
            150.0, 126.25, 78.75, 55.0,
            200.0, 160.0, 80.0, 40.0,
        ];
        assert_close(&out, &want, 1e-4);
        assert_eq!(lb, Letterbox::IDENTITY);
    }

    #[test]
    fn bilinear_downscale_matches_opencv() {
        // cv2.resize(np.float32([[10,20,30,40,50]]), (3,1)) and (2,1)
        let src = [10u8, 20, 30, 40, 50];
        let f = gray_frame(&src, 5, 1);
        let (out, _) = run(&f, &plain(), 1, 1, 3);
        assert_close(&out, &[13.333_333, 30.0, 46.666_664], 1e-4);
        let (out, _) = run(&f, &plain(), 1, 1, 2);
        assert_close(&out, &[17.5, 42.5], 1e-4);
    }

    #[test]
    fn same_size_is_a_copy() {
        let src: Vec<u8> = (0..12).map(|v| v * 20).collect();
        let f = gray_frame(&src, 4, 3);
        let (out, _) = run(&f, &plain(), 1, 3, 4);
        let want: Vec<f32> = src.iter().map(|&v| f32::from(v)).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn channel_orders_and_normalisation() {
        // One RGB pixel (10, 20, 30) as RGB and as BGR frames.
        let rgb = [10u8, 20, 30];
        let bgr = [30u8, 20, 10];
        let norm = |color| InputSpec::Image {
            color,
            mean: [1.0, 2.0, 3.0],
            scale: [0.5, 0.25, 2.0],
            resize: ResizeMode::Stretch,
        };
        for (data, fmt) in [(&rgb, PixelFormat::Rgb8), (&bgr, PixelFormat::Bgr8)] {
            let f = Frame::new(data, 1, 1, fmt);
            let (out, _) = run(&f, &norm(ColorOrder::Rgb), 3, 1, 1);
            assert_close(
                &out,
                &[(10.0 - 1.0) * 0.5, (20.0 - 2.0) * 0.25, (30.0 - 3.0) * 2.0],
                1e-6,
            );
            let (out, _) = run(&f, &norm(ColorOrder::Bgr), 3, 1, 1);
            assert_close(
                &out,
                &[(30.0 - 1.0) * 0.5, (20.0 - 2.0) * 0.25, (10.0 - 3.0) * 2.0],
                1e-6,
            );
            // Gray into 3 channels: luminance replicated, each channel normalised.
            let l = 0.299 * 10.0 + 0.587 * 20.0 + 0.114 * 30.0;
            let (out, _) = run(&f, &norm(ColorOrder::Gray), 3, 1, 1);
            assert_close(
                &out,
                &[(l - 1.0) * 0.5, (l - 2.0) * 0.25, (l - 3.0) * 2.0],
                1e-4,
            );
            // A 1-channel model always gets luminance, whatever the colour order.
            for c in [ColorOrder::Rgb, ColorOrder::Bgr, ColorOrder::Gray] {
                let (out, _) = run(&f, &norm(c), 1, 1, 1);
                assert_close(&out, &[(l - 1.0) * 0.5], 1e-4);
            }
        }
    }

    #[test]
    fn gray_frame_into_rgb_model_is_replicated_exactly() {
        let f = gray_frame(&[77], 1, 1);
        let (out, _) = run(&f, &plain(), 3, 1, 1);
        assert_eq!(out, [77.0; 3]);
        let (out, _) = run(&f, &spec(ColorOrder::Gray, ResizeMode::Stretch), 1, 1, 1);
        assert_eq!(out, [77.0]);
    }

    #[test]
    fn rgb_resize_keeps_channels_apart() {
        // 2x1 RGB: red then blue; 4x1 output interpolates each channel alone.
        let src = [255u8, 0, 0, 0, 0, 255];
        let f = Frame::new(&src, 2, 1, PixelFormat::Rgb8);
        let (out, _) = run(&f, &plain(), 3, 1, 4);
        #[rustfmt::skip]
        let want = [
            255.0, 191.25, 63.75, 0.0,
            0.0, 0.0, 0.0, 0.0,
            0.0, 63.75, 191.25, 255.0,
        ];
        assert_close(&out, &want, 1e-3);
    }

    #[test]
    fn stride_padding_is_skipped() {
        // 2x2 gray with stride 4: bytes 2, 3 of each row are junk.
        let src = [1u8, 2, 99, 99, 3, 4];
        let f = Frame {
            stride: 4,
            ..gray_frame(&src, 2, 2)
        };
        let (out, _) = run(&f, &plain(), 1, 2, 2);
        assert_eq!(out, [1.0, 2.0, 3.0, 4.0]);
        // Packed RGB with stride 7 (one junk byte per row).
        let src = [1u8, 2, 3, 4, 5, 6, 99, 7, 8, 9, 10, 11, 12];
        let f = Frame {
            stride: 7,
            ..Frame::new(&src, 2, 2, PixelFormat::Rgb8)
        };
        let (out, _) = run(&f, &plain(), 3, 2, 2);
        assert_eq!(
            out,
            [1.0, 4.0, 7.0, 10.0, 2.0, 5.0, 8.0, 11.0, 3.0, 6.0, 9.0, 12.0]
        );
    }

    fn nv12_flat(w: usize, h: usize, y: u8, u: u8, v: u8) -> Vec<u8> {
        let mut d = vec![y; w * h];
        for _ in 0..h.div_ceil(2) * w.div_ceil(2) {
            d.extend_from_slice(&[u, v]);
        }
        d
    }

    #[test]
    fn nv12_flat_colours() {
        // cv2.cvtColor(..., COLOR_YUV2RGB_NV12) gives (254, 0, 0) for Y=81 U=90 V=240.
        let d = nv12_flat(4, 2, 81, 90, 240);
        let f = Frame::new(&d, 4, 2, PixelFormat::Nv12);
        let (out, _) = run(&f, &plain(), 3, 2, 2);
        assert_close(&out[0..4], &[254.4; 4], 0.2);
        assert_close(&out[4..], &[0.0; 8], 0.0);
        // Neutral chroma: grey (Y - 16) * 255 / 219.
        let d = nv12_flat(4, 2, 126, 128, 128);
        let f = Frame::new(&d, 4, 2, PixelFormat::Nv12);
        let (out, _) = run(&f, &spec(ColorOrder::Bgr, ResizeMode::Stretch), 3, 2, 4);
        assert_close(&out, &[128.082_2; 24], 1e-3);
        // Limited-range black and white saturate to 0 and 255.
        for (y, want) in [(16u8, 0.0f32), (235, 255.0), (0, 0.0), (255, 255.0)] {
            let d = nv12_flat(2, 2, y, 128, 128);
            let f = Frame::new(&d, 2, 2, PixelFormat::Nv12);
            let (out, _) = run(&f, &plain(), 1, 1, 1);
            assert_close(&out, &[want], 0.05);
        }
    }

    #[test]
    fn nv12_chroma_is_shared_by_2x2_blocks() {
        // 4x2 frame: left block red, right block blue (same Y); a same-size
        // conversion must not bleed chroma across the block boundary.
        let mut d = vec![81u8; 8];
        d.extend_from_slice(&[90, 240, 240, 110]);
        let f = Frame::new(&d, 4, 2, PixelFormat::Nv12);
        let (out, _) = run(&f, &plain(), 3, 2, 4);
        let r = &out[0..8];
        assert!(r[0] > 250.0 && r[1] > 250.0 && r[4] > 250.0 && r[5] > 250.0);
        assert!(r[2] < 130.0 && r[3] < 130.0 && r[6] < 130.0 && r[7] < 130.0);
    }

    #[test]
    fn nv12_odd_sizes_and_strides() {
        // 3x3: Y plane 9 bytes, UV plane 2 rows of 2 pairs (4 bytes) each.
        let d = nv12_flat(3, 3, 126, 128, 128);
        assert_eq!(d.len(), 9 + 8);
        let f = Frame::new(&d, 3, 3, PixelFormat::Nv12);
        let (out, _) = run(&f, &plain(), 3, 5, 5);
        assert_close(&out, &[128.082_2; 75], 1e-3);
        // The last UV row may end right after its data.
        assert!(Frame::new(&d[..16], 3, 3, PixelFormat::Nv12)
            .validate()
            .is_err());
        // Explicit stride 4 applies to both planes.
        let mut d = vec![0u8; 4 * 3 + 4 * 2];
        for row in 0..3 {
            d[row * 4..row * 4 + 3].fill(126);
        }
        for row in 0..2 {
            d[12 + row * 4..12 + row * 4 + 4].copy_from_slice(&[128, 128, 128, 128]);
        }
        let f = Frame {
            stride: 4,
            ..Frame::new(&d, 3, 3, PixelFormat::Nv12)
        };
        let (out, _) = run(&f, &plain(), 1, 3, 3);
        assert_close(&out, &[128.082_2; 9], 1e-3);
        // Stride 3 fits the Y rows but not the 4-byte UV rows of an odd width.
        let f = Frame {
            stride: 3,
            ..Frame::new(&d, 3, 3, PixelFormat::Nv12)
        };
        assert_eq!(
            f.validate(),
            Err(PreprocessError::StrideTooSmall {
                stride: 3,
                format: PixelFormat::Nv12,
                width: 3,
                min: 4
            })
        );
    }

    #[test]
    fn letterbox_pads_and_centres() {
        // 4x2 source into a 4x4 model: content on rows 1..3, grey rows 0 and 3.
        let src = [10u8, 20, 30, 40, 50, 60, 70, 80];
        let f = gray_frame(&src, 4, 2);
        let s = InputSpec::Image {
            color: ColorOrder::Rgb,
            mean: [14.0; 3],
            scale: [0.5; 3],
            resize: ResizeMode::Letterbox,
        };
        let (out, lb) = run(&f, &s, 3, 4, 4);
        assert_eq!(
            lb,
            Letterbox {
                scale_x: 1.0,
                scale_y: 0.5,
                pad_x: 0.0,
                pad_y: 0.25
            }
        );
        let n = |v: f32| (v - 14.0) * 0.5;
        let mut want = vec![n(114.0); 4];
        want.extend(src.iter().map(|&v| n(f32::from(v))));
        want.extend([n(114.0); 4]);
        for c in 0..3 {
            assert_eq!(&out[c * 16..(c + 1) * 16], &want[..], "channel {c}");
        }
        // A tall source pads left and right; odd padding puts the extra column right.
        let src = [200u8; 2];
        let f = gray_frame(&src, 1, 2);
        let (out, lb) = run(&f, &spec(ColorOrder::Gray, ResizeMode::Letterbox), 1, 2, 4);
        assert_eq!(
            out,
            [114.0, 200.0, 114.0, 114.0, 114.0, 200.0, 114.0, 114.0]
        );
        assert_eq!((lb.pad_x, lb.scale_x), (0.25, 0.25));
        assert_eq!((lb.pad_y, lb.scale_y), (0.0, 1.0));
        // Same aspect ratio: letterbox equals stretch.
        let src: Vec<u8> = (0..16).map(|v| v * 15).collect();
        let f = gray_frame(&src, 4, 4);
        let (a, la) = run(&f, &spec(ColorOrder::Gray, ResizeMode::Letterbox), 1, 3, 3);
        let (b, _) = run(&f, &spec(ColorOrder::Gray, ResizeMode::Stretch), 1, 3, 3);
        assert_eq!(a, b);
        assert_eq!(la, Letterbox::IDENTITY);
    }

    #[test]
    fn letterbox_extreme_aspect_keeps_one_row() {
        let src = [9u8; 1000];
        let f = gray_frame(&src, 1000, 1);
        let (out, lb) = run(&f, &spec(ColorOrder::Gray, ResizeMode::Letterbox), 1, 4, 4);
        assert_eq!(lb.scale_y, 0.25);
        assert_eq!(out.iter().filter(|&&v| v == 9.0).count(), 4);
        assert_eq!(out.iter().filter(|&&v| v == 114.0).count(), 12);
    }

    fn det(x0: f32, y0: f32, x1: f32, y1: f32) -> Detection {
        Detection {
            x0,
            y0,
            x1,
            y1,
            score: 0.9,
            class: 7,
        }
    }

    #[test]
    fn letterbox_mapping_round_trip() {
        // 640x480 source into 320x320: content 320x240 at rows 40..280.
        let lb = Letterbox {
            scale_x: 1.0,
            scale_y: 0.75,
            pad_x: 0.0,
            pad_y: 0.125,
        };
        let src = det(0.1, 0.2, 0.6, 0.9);
        let model = lb.to_model(&src);
        assert_close(
            &[model.x0, model.y0, model.x1, model.y1],
            &[0.1, 0.275, 0.6, 0.8],
            1e-6,
        );
        let back = lb.to_source(&model);
        assert_close(
            &[back.x0, back.y0, back.x1, back.y1],
            &[0.1, 0.2, 0.6, 0.9],
            1e-6,
        );
        assert_eq!((back.score, back.class), (0.9, 7));
        // Boxes reaching into the padding are clamped to the image.
        let d = lb.to_source(&det(-0.1, 0.0, 1.2, 1.0));
        assert_eq!([d.x0, d.y0, d.x1, d.y1], [0.0, 0.0, 1.0, 1.0]);
        // Identity changes nothing inside 0..1.
        assert_eq!(Letterbox::IDENTITY.to_source(&src), src);
        assert_eq!(Letterbox::default(), Letterbox::IDENTITY);
        // Degenerate scales and NaN coordinates clamp instead of panicking.
        let bad = Letterbox {
            scale_x: 0.0,
            scale_y: f32::NAN,
            pad_x: 0.5,
            pad_y: 0.0,
        };
        let d = bad.to_source(&det(f32::NAN, 0.5, 0.5, 0.7));
        for v in [d.x0, d.y0, d.x1, d.y1] {
            assert!((0.0..=1.0).contains(&v));
        }
    }

    #[test]
    fn letterbox_tensor_round_trip_of_a_box() {
        // A white square in a 8x4 frame, letterboxed into 8x8, is found again
        // at the same source fractions.
        let mut src = [0u8; 32];
        for y in 1..3 {
            src[y * 8 + 2..y * 8 + 6].fill(255);
        }
        let f = gray_frame(&src, 8, 4);
        let (out, lb) = run(&f, &spec(ColorOrder::Gray, ResizeMode::Letterbox), 1, 8, 8);
        let (mut x0, mut y0, mut x1, mut y1) = (8, 8, 0, 0);
        for (i, &v) in out.iter().enumerate() {
            if v == 255.0 {
                let (x, y) = (i % 8, i / 8);
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
        let m = det(
            x0 as f32 / 8.0,
            y0 as f32 / 8.0,
            x1 as f32 / 8.0,
            y1 as f32 / 8.0,
        );
        let s = lb.to_source(&m);
        assert_close(&[s.x0, s.y0, s.x1, s.y1], &[0.25, 0.25, 0.75, 0.75], 1e-6);
    }

    #[test]
    fn errors() {
        use PreprocessError as E;
        let src = [0u8; 12];
        let ok = Frame::new(&src, 2, 2, PixelFormat::Rgb8);
        let mut out = vec![0.0f32; 12];
        let call = |f: &Frame, s: &InputSpec, c, h, w, out: &mut [f32]| {
            image_to_tensor(f, s, c, h, w, out)
        };

        assert_eq!(
            call(&ok, &InputSpec::Raw, 3, 2, 2, &mut out),
            Err(E::NotImageSpec("raw"))
        );
        let audio = InputSpec::Audio {
            sample_rate: 16_000,
            frontend: crate::meta::AudioFrontend::KwsMfcc,
        };
        assert_eq!(
            call(&ok, &audio, 3, 2, 2, &mut out),
            Err(E::NotImageSpec("audio"))
        );
        for (c, h, w) in [(0, 2, 2), (3, 0, 2), (3, 2, 0)] {
            assert_eq!(
                call(&ok, &plain(), c, h, w, &mut out),
                Err(E::EmptyInput {
                    channels: c,
                    height: h,
                    width: w
                })
            );
        }
        assert_eq!(
            call(&ok, &plain(), 2, 2, 3, &mut out),
            Err(E::UnsupportedChannels(2))
        );
        assert_eq!(
            call(&ok, &plain(), 4, 1, 3, &mut out),
            Err(E::UnsupportedChannels(4))
        );
        assert_eq!(
            call(&ok, &plain(), 3, 2, 3, &mut out),
            Err(E::OutputLength {
                actual: 12,
                expected: 18,
                channels: 3,
                height: 2,
                width: 3
            })
        );
        // Sizes whose product overflows are a length mismatch, not a panic.
        assert!(matches!(
            call(&ok, &plain(), 3, usize::MAX, 2, &mut out),
            Err(E::OutputLength {
                expected: usize::MAX,
                ..
            })
        ));
        for (w, h) in [(0, 2), (2, 0)] {
            let f = Frame::new(&src, w, h, PixelFormat::Rgb8);
            assert_eq!(
                call(&f, &plain(), 3, 2, 2, &mut out),
                Err(E::EmptyFrame {
                    width: w,
                    height: h
                })
            );
        }
        let f = Frame::new(&src, 2, 3, PixelFormat::Rgb8);
        assert_eq!(
            call(&f, &plain(), 3, 2, 2, &mut out),
            Err(E::BufferTooSmall {
                actual: 12,
                needed: 18,
                width: 2,
                height: 3,
                stride: 0,
                format: PixelFormat::Rgb8
            })
        );
        let f = Frame { stride: 5, ..ok };
        assert_eq!(
            call(&f, &plain(), 3, 2, 2, &mut out),
            Err(E::StrideTooSmall {
                stride: 5,
                format: PixelFormat::Rgb8,
                width: 2,
                min: 6
            })
        );
        // Stride 8: the second row starts at 8 and needs 6 bytes -> 14 > 12.
        let f = Frame { stride: 8, ..ok };
        assert!(matches!(
            call(&f, &plain(), 3, 2, 2, &mut out),
            Err(E::BufferTooSmall { needed: 14, .. })
        ));
        // NV12 2x2 needs 4 luma + 2 chroma bytes.
        let f = Frame::new(&src[..5], 2, 2, PixelFormat::Nv12);
        assert!(matches!(
            call(&f, &plain(), 3, 2, 2, &mut out),
            Err(E::BufferTooSmall { needed: 6, .. })
        ));
        for fmt in [
            PixelFormat::Rgb8,
            PixelFormat::Bgr8,
            PixelFormat::Gray8,
            PixelFormat::Nv12,
        ] {
            let f = Frame::new(&src, usize::MAX, 2, fmt);
            let r = call(&f, &plain(), 3, 2, 2, &mut out);
            assert!(
                matches!(
                    r,
                    Err(E::FrameTooLarge { .. }) | Err(E::BufferTooSmall { .. })
                ),
                "{fmt:?}: {r:?}"
            );
            let f = Frame::new(&src, 2, usize::MAX, fmt);
            assert!(call(&f, &plain(), 3, 2, 2, &mut out).is_err());
        }
        // Messages name the numbers.
        let msg = E::BufferTooSmall {
            actual: 12,
            needed: 18,
            width: 2,
            height: 3,
            stride: 0,
            format: PixelFormat::Rgb8,
        }
        .to_string();
        assert!(
            msg.contains("12 bytes") && msg.contains("needs 18") && msg.contains("2x3 Rgb8"),
            "{msg}"
        );
    }

    #[test]
    fn never_panics_on_small_frames_and_sizes() {
        // Exhaustive small sizes, strides and formats; buffers of every length
        // around the minimum either convert or are rejected.
        let data = [200u8; 64];
        let fmts = [
            PixelFormat::Rgb8,
            PixelFormat::Bgr8,
            PixelFormat::Gray8,
            PixelFormat::Nv12,
        ];
        let mut out = vec![0.0f32; 3 * 5 * 5];
        for fmt in fmts {
            for w in 0..5 {
                for h in 0..5 {
                    for stride in [0, 1, 2, 3, 4, 5, 7, 9, 13] {
                        for len in [0, 1, 5, 9, 12, 17, 24, 40, 64] {
                            let f = Frame {
                                data: &data[..len],
                                width: w,
                                height: h,
                                stride,
                                format: fmt,
                            };
                            for resize in [ResizeMode::Stretch, ResizeMode::Letterbox] {
                                for (c, oh, ow) in [(1, 1, 1), (3, 5, 5), (3, 2, 5), (1, 5, 2)] {
                                    let s = spec(ColorOrder::Bgr, resize);
                                    let o = &mut out[..c * oh * ow];
                                    if image_to_tensor(&f, &s, c, oh, ow, o).is_ok() {
                                        assert!(o.iter().all(|v| v.is_finite()));
                                        assert_eq!(f.validate(), Ok(()));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// A PNG of `width` x `height` 8-bit grey pixels whose IDAT holds the
    /// first `rows` rows (all zero): a whole small image, or the header and a
    /// few bytes of a huge one, built without the pixels in memory.
    #[cfg(feature = "image")]
    fn grey_png(width: u32, height: u32, rows: usize) -> Vec<u8> {
        fn crc32(bytes: &[u8]) -> u32 {
            let mut c = !0u32;
            for &b in bytes {
                c ^= u32::from(b);
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        0xedb8_8320 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
            }
            !c
        }
        fn chunk(out: &mut Vec<u8>, tag: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let start = out.len();
            out.extend_from_slice(tag);
            out.extend_from_slice(data);
            let crc = crc32(&out[start..]);
            out.extend_from_slice(&crc.to_be_bytes());
        }
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey, no interlace
                                                  // Each row: filter type 0, then `width` zero bytes.
        let raw = vec![0u8; rows * (width as usize + 1)];
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        chunk(&mut png, b"IHDR", &ihdr);
        chunk(
            &mut png,
            b"IDAT",
            &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 6),
        );
        chunk(&mut png, b"IEND", &[]);
        png
    }

    /// A 20000x20000 grey PNG of a few hundred bytes (the bomb cost
    /// 1.57 GB and 40 s) is refused from its header, quickly, with its size.
    #[cfg(feature = "image")]
    #[test]
    fn image_bombs_are_refused_before_decoding() {
        let small = decode_image_rgb8(&grey_png(3, 2, 2)).unwrap();
        assert_eq!((small.width(), small.height()), (3, 2));
        assert_eq!(small.as_raw(), &[0u8; 18]);

        for (w, h) in [(20_000, 20_000), (8192, 4097), (16_385, 1), (1, 1 << 30)] {
            let png = grey_png(w, h, 2);
            assert!(png.len() < 1000);
            let start = std::time::Instant::now();
            let err = decode_image_rgb8(&png).unwrap_err();
            assert!(start.elapsed() < std::time::Duration::from_secs(1));
            assert!(
                matches!(err, DecodeError::TooLarge { width, height } if (width, height) == (w, h)),
                "{w}x{h}: {err:?}"
            );
            assert!(
                err.to_string().contains(&format!("{w}x{h} pixels")),
                "{err}"
            );
        }
        assert!(matches!(
            decode_image_rgb8(b"not an image at all"),
            Err(DecodeError::Decode(_))
        ));
    }
}

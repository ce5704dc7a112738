//! V4L2 cameras (`source = "v4l2:/dev/video0"`): frame conversion from the
//! two formats USB (UVC) and most CSI pipelines offer, MJPEG and YUYV 4:2:2,
//! and (feature `v4l2`) capture through the `v4l` crate with mmap buffers.
//!
//! The conversion is plain code on byte buffers, tested with recorded
//! buffers; the device path needs a camera and is not tested in CI.

use std::path::Path;

use strix_runtime::preprocess::yuv_to_rgb8;

use super::source::{decode_image, Image, MediaError};

/// Pixel formats strixd takes from a V4L2 device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    /// Motion JPEG: each buffer is one JPEG (possibly without Huffman tables).
    Mjpeg,
    /// YUYV 4:2:2 (`YUYV`, a.k.a. YUY2): Y0 U Y1 V per two pixels.
    Yuyv,
}

impl PixelFormat {
    /// The V4L2 FourCC.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Yuyv => *b"YUYV",
        }
    }

    /// The format with this FourCC (`JPEG` is taken as MJPEG).
    pub fn from_fourcc(f: &[u8; 4]) -> Option<PixelFormat> {
        match f {
            b"MJPG" | b"JPEG" => Some(PixelFormat::Mjpeg),
            b"YUYV" => Some(PixelFormat::Yuyv),
            _ => None,
        }
    }
}

/// Converts one captured buffer (its `bytesused` bytes) to RGB8.
///
/// `stride` is the bytes per line the driver reports (YUYV rows may be
/// padded; 0 means `2 * width`). `device` names the source in errors.
pub fn convert(
    format: PixelFormat,
    width: usize,
    height: usize,
    stride: usize,
    data: &[u8],
    device: &Path,
) -> Result<Image, MediaError> {
    let bad = |msg: String| MediaError::Bad {
        path: device.display().to_string(),
        msg,
    };
    match format {
        PixelFormat::Mjpeg => {
            let img = match with_default_huffman(data) {
                Some(fixed) => decode_image(&fixed, device)?,
                None => decode_image(data, device)?,
            };
            if (img.width, img.height) != (width, height) {
                return Err(bad(format!(
                    "MJPEG frame is {}x{}, the device format {width}x{height}",
                    img.width, img.height
                )));
            }
            Ok(img)
        }
        PixelFormat::Yuyv => {
            if width == 0 || height == 0 || !width.is_multiple_of(2) {
                return Err(bad(format!(
                    "YUYV frame size {width}x{height} (the width must be even and nonzero)"
                )));
            }
            let stride = if stride == 0 { 2 * width } else { stride };
            if stride < 2 * width {
                return Err(bad(format!(
                    "YUYV stride {stride} is less than 2 x width {width}"
                )));
            }
            let need = stride * (height - 1) + 2 * width;
            if data.len() < need {
                return Err(bad(format!(
                    "short YUYV frame: {} bytes, {width}x{height} with stride {stride} needs {need}",
                    data.len()
                )));
            }
            let mut rgb = vec![0u8; width * height * 3];
            for (row, out) in rgb.chunks_exact_mut(width * 3).enumerate() {
                let line = &data[row * stride..row * stride + 2 * width];
                for (q, px) in line.chunks_exact(4).zip(out.chunks_exact_mut(6)) {
                    // BT.601 limited range, what UVC cameras send for YUYV.
                    let (y0, u, y1, v) = (q[0], q[1], q[2], q[3]);
                    px[..3].copy_from_slice(&yuv_to_rgb8(y0, u, v));
                    px[3..].copy_from_slice(&yuv_to_rgb8(y1, u, v));
                }
            }
            Ok(Image { width, height, rgb })
        }
    }
}

/// The standard Huffman tables of JPEG Annex K.3 as one DHT segment: DC and
/// AC, luminance (class/id 0x00, 0x10) and chrominance (0x01, 0x11). UVC
/// MJPEG frames omit them (the UVC payload spec says to use these).
const DEFAULT_DHT: &[u8] = &[
    0xFF, 0xC4, 0x01, 0xA2, // marker, length 418
    0x00, 0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, //
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, //
    0x01, 0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, //
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, //
    0x10, 0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d, //
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa, //
    0x11, 0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77, //
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

/// A copy of `jpeg` with [`DEFAULT_DHT`] inserted before its scan when it
/// has no Huffman table; `None` when it has one (or is not walkable: the
/// decoder then reports what is wrong).
fn with_default_huffman(jpeg: &[u8]) -> Option<Vec<u8>> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
        match jpeg[i + 1] {
            0xC4 => return None,
            0xDA => {
                let mut out = Vec::with_capacity(jpeg.len() + DEFAULT_DHT.len());
                out.extend_from_slice(&jpeg[..i]);
                out.extend_from_slice(DEFAULT_DHT);
                out.extend_from_slice(&jpeg[i..]);
                return Some(out);
            }
            _ => i += 2 + u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize,
        }
    }
    None
}

#[cfg(feature = "v4l2")]
pub use device::{formats, V4l2Source};

#[cfg(feature = "v4l2")]
mod device {
    use std::path::{Path, PathBuf};
    use std::time::Duration;
    use v4l::buffer::Type;
    use v4l::io::mmap::Stream;
    use v4l::io::traits::CaptureStream;
    use v4l::video::Capture;
    use v4l::{Device, FourCC};

    use super::{convert, PixelFormat};
    use crate::camera::source::{Image, MediaError, Source};

    /// Frames that fail to decode in a row before the source gives up.
    const MAX_BAD_FRAMES: u32 = 30;
    /// A device that delivers no frame for this long has failed.
    const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

    /// A V4L2 capture device streaming through mmap buffers.
    pub struct V4l2Source {
        path: PathBuf,
        // Drops before the device (field order): stops the stream first.
        stream: Stream<'static>,
        _dev: Device,
        format: PixelFormat,
        width: usize,
        height: usize,
        stride: usize,
    }

    // SAFETY: the stream's buffers are memory mappings owned by the stream
    // and used only through `&mut self`; the device handle is a file
    // descriptor. Nothing is shared with another thread.
    unsafe impl Send for V4l2Source {}

    /// The formats a V4L2 capture device offers, each with its discrete
    /// frame sizes (`MJPG 640x480 1280x720`), for `--check`. Opens the
    /// device without streaming.
    pub fn formats(path: &Path) -> Result<Vec<String>, String> {
        let dev = Device::with_path(path).map_err(|e| format!("cannot open: {e}"))?;
        let caps = dev
            .query_caps()
            .map_err(|e| format!("not a V4L2 capture device: {e}"))?;
        let fmts = dev
            .enum_formats()
            .map_err(|e| format!("not a V4L2 capture device: {e}"))?;
        if fmts.is_empty() {
            return Err(format!(
                "{} ({}) offers no capture format",
                caps.card, caps.driver
            ));
        }
        Ok(fmts
            .iter()
            .map(|f| {
                let sizes: Vec<String> = dev
                    .enum_framesizes(f.fourcc)
                    .unwrap_or_default()
                    .iter()
                    .flat_map(|s| match &s.size {
                        v4l::framesize::FrameSizeEnum::Discrete(d) => {
                            vec![format!("{}x{}", d.width, d.height)]
                        }
                        v4l::framesize::FrameSizeEnum::Stepwise(w) => vec![format!(
                            "{}x{}..{}x{}",
                            w.min_width, w.min_height, w.max_width, w.max_height
                        )],
                    })
                    .collect();
                format!("{} {}", f.fourcc, sizes.join(" "))
            })
            .collect())
    }

    impl V4l2Source {
        /// Opens `path`, asks for 640x480 at `fps` in MJPEG, else YUYV,
        /// and starts streaming. Errors name the device and what it offers.
        pub fn open(path: &Path, fps: f32) -> Result<V4l2Source, MediaError> {
            let bad = |msg: String| MediaError::Bad {
                path: path.display().to_string(),
                msg,
            };
            let dev = Device::with_path(path).map_err(|e| bad(format!("cannot open: {e}")))?;
            let offered: Vec<[u8; 4]> = dev
                .enum_formats()
                .map_err(|e| bad(format!("not a V4L2 capture device: {e}")))?
                .iter()
                .map(|d| d.fourcc.repr)
                .collect();
            let want = [PixelFormat::Mjpeg, PixelFormat::Yuyv]
                .into_iter()
                .find(|f| {
                    offered
                        .iter()
                        .any(|o| PixelFormat::from_fourcc(o) == Some(*f))
                })
                .ok_or_else(|| {
                    let names: Vec<String> = offered
                        .iter()
                        .map(|f| String::from_utf8_lossy(f).to_string())
                        .collect();
                    bad(format!(
                        "offers none of MJPG, YUYV (it offers {})",
                        names.join(", ")
                    ))
                })?;
            let mut fmt = dev.format().map_err(|e| bad(format!("format: {e}")))?;
            fmt.width = 640;
            fmt.height = 480;
            fmt.fourcc = FourCC::new(&want.fourcc());
            let fmt = dev
                .set_format(&fmt)
                .map_err(|e| bad(format!("set format: {e}")))?;
            let format = PixelFormat::from_fourcc(&fmt.fourcc.repr)
                .ok_or_else(|| bad(format!("the driver chose format {}", fmt.fourcc)))?;
            // The frame rate is a request; drivers pick the nearest they have.
            let _ = dev.set_params(&v4l::video::capture::Parameters::with_fps(
                fps.round().max(1.0) as u32,
            ));
            let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, 4)
                .map_err(|e| bad(format!("mmap buffers: {e}")))?;
            stream.set_timeout(FRAME_TIMEOUT);
            Ok(V4l2Source {
                path: path.to_path_buf(),
                stream,
                _dev: dev,
                format,
                width: fmt.width as usize,
                height: fmt.height as usize,
                stride: fmt.stride as usize,
            })
        }
    }

    impl Source for V4l2Source {
        fn next_frame(&mut self) -> Result<Option<Image>, MediaError> {
            let mut bad_frames = 0;
            loop {
                let (buf, meta) = self.stream.next().map_err(|e| MediaError::Io {
                    path: self.path.display().to_string(),
                    source: e,
                })?;
                let used = (meta.bytesused as usize).min(buf.len());
                match convert(
                    self.format,
                    self.width,
                    self.height,
                    self.stride,
                    &buf[..used],
                    &self.path,
                ) {
                    Ok(img) => return Ok(Some(img)),
                    // A corrupt transfer spoils one frame; skip it.
                    Err(e) if bad_frames < MAX_BAD_FRAMES => {
                        crate::log_warn!("strixd: camera: skipping a frame: {e}");
                        bad_frames += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_huffman_segment_is_well_formed() {
        // Length field, and each table's 16 counts match its values.
        assert_eq!(DEFAULT_DHT.len() - 2, 0x01A2);
        let mut i = 4;
        let mut classes = Vec::new();
        while i < DEFAULT_DHT.len() {
            classes.push(DEFAULT_DHT[i]);
            let n: usize = DEFAULT_DHT[i + 1..i + 17].iter().map(|&c| c as usize).sum();
            i += 17 + n;
        }
        assert_eq!(i, DEFAULT_DHT.len());
        assert_eq!(classes, [0x00, 0x01, 0x10, 0x11]);
    }

    #[test]
    fn yuyv_gray_and_colour_and_stride() {
        // 4x2, stride 12 (4 bytes of padding per row): row 0 grey levels,
        // row 1 saturated red (Y 81, U 90, V 240 in BT.601 limited range).
        let mut data = vec![0xEEu8; 12 * 2];
        data[..8].copy_from_slice(&[16, 128, 235, 128, 126, 128, 126, 128]);
        data[12..20].copy_from_slice(&[81, 90, 81, 240, 81, 90, 81, 240]);
        let img = convert(PixelFormat::Yuyv, 4, 2, 12, &data, Path::new("t")).unwrap();
        assert_eq!(&img.rgb[..3], &[0, 0, 0]);
        assert_eq!(&img.rgb[3..6], &[255, 255, 255]);
        assert_eq!(&img.rgb[6..9], &[128, 128, 128]);
        let red = &img.rgb[12..15];
        assert!(red[0] > 250 && red[1] < 5 && red[2] < 5, "{red:?}");
        let e = convert(PixelFormat::Yuyv, 4, 2, 12, &data[..15], Path::new("t")).unwrap_err();
        assert!(e.to_string().contains("short YUYV frame"), "{e}");
        let e = convert(PixelFormat::Yuyv, 3, 2, 0, &data, Path::new("t")).unwrap_err();
        assert!(e.to_string().contains("even"), "{e}");
    }

    /// Issue 13: YUYV had its own copy of the YUV conversion. A YUYV frame
    /// whose 2x2 blocks share chroma is an NV12 frame too; its RGB8 pixels
    /// are exactly the rounding of what the runtime's NV12 sampler computes.
    #[test]
    fn yuyv_matches_the_runtime_nv12_sampler() {
        use crate::camera::source::tests::{noise_bytes, runtime_rgb};
        let (w, h, stride) = (20usize, 14usize, 44usize);
        let y = noise_bytes(w * h, 4);
        let uv = noise_bytes(w * h / 2, 5); // one U, V pair per 2x2 block
        let mut yuyv = vec![0xEEu8; stride * h];
        for row in 0..h {
            for pair in 0..w / 2 {
                let c = &uv[((row / 2) * (w / 2) + pair) * 2..][..2];
                let q = &mut yuyv[row * stride + pair * 4..][..4];
                q.copy_from_slice(&[y[row * w + 2 * pair], c[0], y[row * w + 2 * pair + 1], c[1]]);
            }
        }
        let img = convert(PixelFormat::Yuyv, w, h, stride, &yuyv, Path::new("t")).unwrap();
        let mut nv12 = y.clone();
        nv12.extend(&uv);
        let frame = strix_runtime::preprocess::Frame::new(
            &nv12,
            w,
            h,
            strix_runtime::preprocess::PixelFormat::Nv12,
        );
        for (i, (want, got)) in runtime_rgb(&frame)
            .iter()
            .zip(img.rgb.chunks_exact(3))
            .enumerate()
        {
            assert_eq!(got, want.map(|c| c.round() as u8), "pixel {i}: {want:?}");
        }
    }

    #[test]
    fn mjpeg_size_must_match_the_device_format() {
        let img = image::RgbImage::from_pixel(16, 8, image::Rgb([10, 200, 30]));
        let mut jpg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 95)
            .encode_image(&img)
            .unwrap();
        let out = convert(PixelFormat::Mjpeg, 16, 8, 0, &jpg, Path::new("cam")).unwrap();
        assert_eq!((out.width, out.height), (16, 8));
        let e = convert(PixelFormat::Mjpeg, 640, 480, 0, &jpg, Path::new("cam")).unwrap_err();
        assert!(e.to_string().contains("16x8"), "{e}");
        assert!(convert(PixelFormat::Mjpeg, 16, 8, 0, &jpg[..40], Path::new("cam")).is_err());
    }
}

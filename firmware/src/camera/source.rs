//! Camera frame sources: a directory of images, Y4M and MJPEG files read
//! natively, and anything else through an `ffmpeg` child process decoding to
//! raw RGB. Every source yields packed RGB8 images.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use strix_runtime::preprocess::yuv_to_rgb8;

/// A packed RGB8 image.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{path}: {msg}")]
    Bad { path: String, msg: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn bad(path: &Path, msg: impl Into<String>) -> MediaError {
    MediaError::Bad {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> MediaError + '_ {
    move |source| MediaError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Largest frame accepted (pixels), so a corrupt header cannot make us
/// allocate gigabytes: the limit every image reader shares.
const MAX_PIXELS: usize = strix_runtime::limits::MAX_IMAGE_PIXELS;

/// A stream of frames.
pub trait Source: Send {
    /// The next frame, `None` at the end. A decode error of one frame of a
    /// directory is reported and the source goes on.
    fn next_frame(&mut self) -> Result<Option<Image>, MediaError>;
}

/// The device path of a `v4l2:<device>` source.
pub fn v4l2_device(source: &Path) -> Option<&Path> {
    source.to_str()?.strip_prefix("v4l2:").map(Path::new)
}

/// Whether a source is a URL (`rtsp://`, `http://`, ...), read by ffmpeg.
pub fn is_url(source: &Path) -> bool {
    source.to_str().is_some_and(|s| {
        s.split_once("://").is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
        })
    })
}

/// What a camera source is, for `--check`: its kind and, for a V4L2
/// device, the formats and frame sizes it offers.
pub fn describe(path: &Path) -> String {
    if let Some(dev) = v4l2_device(path) {
        #[cfg(feature = "v4l2")]
        return match super::v4l2::formats(dev) {
            Ok(f) => format!("V4L2 device {} (formats: {})", dev.display(), f.join("; ")),
            Err(e) => format!("V4L2 device {} (formats: {e})", dev.display()),
        };
        #[cfg(not(feature = "v4l2"))]
        return format!("V4L2 device {}", dev.display());
    }
    if is_url(path) {
        return format!("URL {} (read by ffmpeg)", path.display());
    }
    if path.is_dir() {
        let n = std::fs::read_dir(path)
            .map(|d| d.filter(|e| e.is_ok()).count())
            .unwrap_or(0);
        return format!("image directory {} ({n} entries)", path.display());
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let kind = match ext.as_str() {
        "y4m" => "Y4M file",
        "mjpeg" | "mjpg" => "MJPEG file",
        "jpg" | "jpeg" | "png" | "bmp" => "image file",
        _ => "video file (read by ffmpeg)",
    };
    format!("{kind} {}", path.display())
}

/// Opens `path` by kind: `v4l2:<device>`, a URL (ffmpeg), a directory,
/// `.y4m`, `.mjpeg`/`.mjpg`, else ffmpeg (frames resampled to `fps`).
/// Headers are checked here, so an unreadable source fails at start-up.
pub fn open(path: &Path, fps: f32) -> Result<Box<dyn Source>, MediaError> {
    if let Some(dev) = v4l2_device(path) {
        #[cfg(feature = "v4l2")]
        return Ok(Box::new(super::v4l2::V4l2Source::open(dev, fps)?));
        #[cfg(not(feature = "v4l2"))]
        return Err(bad(
            dev,
            "this strixd was built without the `v4l2` feature (V4L2 cameras)",
        ));
    }
    if is_url(path) {
        return Ok(Box::new(FfmpegSource::open(path, fps)?));
    }
    if path.is_dir() {
        return Ok(Box::new(DirSource::new(path)?));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "y4m" => Ok(Box::new(Y4mSource::open(path)?)),
        "mjpeg" | "mjpg" => Ok(Box::new(MjpegSource::open(path)?)),
        "jpg" | "jpeg" | "png" | "bmp" => Ok(Box::new(DirSource::single(path)?)),
        _ => Ok(Box::new(FfmpegSource::open(path, fps)?)),
    }
}

/// Decodes an encoded image (JPEG, PNG, BMP) to RGB8, refusing images above
/// the runtime's limits (`strix_runtime::limits`) before decoding them.
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<Image, MediaError> {
    let rgb = strix_runtime::preprocess::decode_image_rgb8(bytes)
        .map_err(|e| bad(path, e.to_string()))?;
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    Ok(Image {
        width: w,
        height: h,
        rgb: rgb.into_raw(),
    })
}

/// Image files of a directory in name order (or one image file).
pub struct DirSource {
    files: std::vec::IntoIter<PathBuf>,
}

impl DirSource {
    pub fn new(dir: &Path) -> Result<Self, MediaError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let e = p
                    .extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or("")
                    .to_ascii_lowercase();
                matches!(e.as_str(), "jpg" | "jpeg" | "png" | "bmp")
            })
            .collect();
        if files.is_empty() {
            return Err(bad(
                dir,
                "directory holds no .jpg, .jpeg, .png or .bmp images",
            ));
        }
        files.sort();
        Ok(DirSource {
            files: files.into_iter(),
        })
    }

    pub fn single(file: &Path) -> Result<Self, MediaError> {
        std::fs::metadata(file).map_err(io(file))?;
        Ok(DirSource {
            files: vec![file.to_path_buf()].into_iter(),
        })
    }
}

impl Source for DirSource {
    fn next_frame(&mut self) -> Result<Option<Image>, MediaError> {
        let Some(p) = self.files.next() else {
            return Ok(None);
        };
        let bytes = std::fs::read(&p).map_err(io(&p))?;
        decode_image(&bytes, &p).map(Some)
    }
}

/// YUV4MPEG2: 4:2:0 (any siting), 4:4:4 and mono, 8-bit.
pub struct Y4mSource {
    path: PathBuf,
    r: BufReader<File>,
    width: usize,
    height: usize,
    chroma: Chroma,
    buf: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Chroma {
    C420,
    C444,
    Mono,
}

impl Y4mSource {
    pub fn open(path: &Path) -> Result<Self, MediaError> {
        let mut r = BufReader::new(File::open(path).map_err(io(path))?);
        let mut header = Vec::new();
        (&mut r)
            .take(1024)
            .read_until(b'\n', &mut header)
            .map_err(io(path))?;
        let header = String::from_utf8_lossy(&header);
        let mut words = header.split_ascii_whitespace();
        if words.next() != Some("YUV4MPEG2") {
            return Err(bad(path, "not a YUV4MPEG2 file (no 'YUV4MPEG2' header)"));
        }
        let (mut w, mut h, mut chroma) = (0usize, 0usize, Chroma::C420);
        for word in words {
            let (tag, val) = word.split_at(1);
            match tag {
                "W" => w = val.parse().unwrap_or(0),
                "H" => h = val.parse().unwrap_or(0),
                "C" => {
                    chroma = match val {
                        v if v.starts_with("420") => Chroma::C420,
                        "444" => Chroma::C444,
                        "mono" => Chroma::Mono,
                        other => {
                            return Err(bad(
                                path,
                                format!("unsupported Y4M colour space C{other} (420, 444, mono)"),
                            ))
                        }
                    }
                }
                _ => {}
            }
        }
        if w == 0 || h == 0 || w.saturating_mul(h) > MAX_PIXELS {
            return Err(bad(path, format!("bad Y4M frame size {w}x{h}")));
        }
        Ok(Y4mSource {
            path: path.to_path_buf(),
            r,
            width: w,
            height: h,
            chroma,
            buf: Vec::new(),
        })
    }

    fn frame_bytes(&self) -> usize {
        let (w, h) = (self.width, self.height);
        match self.chroma {
            Chroma::C420 => w * h + 2 * w.div_ceil(2) * h.div_ceil(2),
            Chroma::C444 => 3 * w * h,
            Chroma::Mono => w * h,
        }
    }
}

impl Source for Y4mSource {
    fn next_frame(&mut self) -> Result<Option<Image>, MediaError> {
        let mut line = Vec::new();
        let n = (&mut self.r)
            .take(1024)
            .read_until(b'\n', &mut line)
            .map_err(io(&self.path))?;
        if n == 0 {
            return Ok(None);
        }
        if !line.starts_with(b"FRAME") {
            return Err(bad(&self.path, "corrupt Y4M stream (expected FRAME)"));
        }
        let len = self.frame_bytes();
        self.buf.resize(len, 0);
        match self.r.read_exact(&mut self.buf) {
            Ok(()) => {}
            // A truncated last frame ends the stream.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io(&self.path)(e)),
        }
        let (w, h) = (self.width, self.height);
        let mut rgb = vec![0u8; w * h * 3];
        let y = &self.buf[..w * h];
        match self.chroma {
            Chroma::Mono => {
                for (px, &l) in rgb.chunks_exact_mut(3).zip(y) {
                    px.fill(l);
                }
            }
            Chroma::C444 | Chroma::C420 => {
                let (cw, sub) = if self.chroma == Chroma::C420 {
                    (w.div_ceil(2), 2)
                } else {
                    (w, 1)
                };
                let ch = if sub == 2 { h.div_ceil(2) } else { h };
                let u = &self.buf[w * h..w * h + cw * ch];
                let v = &self.buf[w * h + cw * ch..];
                for row in 0..h {
                    for col in 0..w {
                        let ci = (row / sub) * cw + col / sub;
                        // BT.601 limited range, what ffmpeg writes for `yuv420p`.
                        let p = yuv_to_rgb8(y[row * w + col], u[ci], v[ci]);
                        rgb[(row * w + col) * 3..][..3].copy_from_slice(&p);
                    }
                }
            }
        }
        Ok(Some(Image {
            width: w,
            height: h,
            rgb,
        }))
    }
}

/// Concatenated JPEG images (`ffmpeg -f mjpeg`, many IP cameras' dumps).
pub struct MjpegSource {
    path: PathBuf,
    r: BufReader<File>,
}

/// Largest single JPEG accepted from an MJPEG stream.
const MAX_JPEG: usize = 64 << 20;

impl MjpegSource {
    pub fn open(path: &Path) -> Result<Self, MediaError> {
        let mut r = BufReader::new(File::open(path).map_err(io(path))?);
        let head = r.fill_buf().map_err(io(path))?;
        if !head.starts_with(&[0xFF, 0xD8]) {
            return Err(bad(
                path,
                "not an MJPEG stream (does not start with a JPEG SOI marker)",
            ));
        }
        Ok(MjpegSource {
            path: path.to_path_buf(),
            r,
        })
    }

    /// Reads one whole JPEG (SOI .. EOI) by walking its marker segments, so
    /// an EXIF thumbnail's own markers inside APP1 are skipped by length.
    fn read_jpeg(&mut self) -> Result<Option<Vec<u8>>, MediaError> {
        let p = self.path.clone();
        let mut out = Vec::new();
        let byte = |r: &mut BufReader<File>| -> Result<Option<u8>, MediaError> {
            let mut b = [0u8];
            match r.read(&mut b).map_err(io(&p))? {
                0 => Ok(None),
                _ => Ok(Some(b[0])),
            }
        };
        // Skip anything between images up to the next SOI.
        let mut prev = 0u8;
        loop {
            let Some(b) = byte(&mut self.r)? else {
                return Ok(None);
            };
            if prev == 0xFF && b == 0xD8 {
                break;
            }
            prev = b;
        }
        out.extend_from_slice(&[0xFF, 0xD8]);
        let eof = |p: &Path| bad(p, "truncated JPEG in MJPEG stream");
        loop {
            // Next marker.
            let Some(mut m) = byte(&mut self.r)? else {
                return Err(eof(&self.path));
            };
            if m != 0xFF {
                return Err(bad(
                    &self.path,
                    "corrupt JPEG in MJPEG stream (expected a marker)",
                ));
            }
            while m == 0xFF {
                m = byte(&mut self.r)?.ok_or_else(|| eof(&self.path))?;
            }
            out.extend_from_slice(&[0xFF, m]);
            match m {
                0xD9 => return Ok(Some(out)),
                0x01 | 0xD0..=0xD7 => continue,
                _ => {}
            }
            let hi = byte(&mut self.r)?.ok_or_else(|| eof(&self.path))?;
            let lo = byte(&mut self.r)?.ok_or_else(|| eof(&self.path))?;
            let len = u16::from_be_bytes([hi, lo]) as usize;
            if len < 2 {
                return Err(bad(&self.path, "corrupt JPEG segment length"));
            }
            out.extend_from_slice(&[hi, lo]);
            let start = out.len();
            out.resize(start + len - 2, 0);
            self.r
                .read_exact(&mut out[start..])
                .map_err(|_| eof(&self.path))?;
            if m == 0xDA {
                // Entropy-coded data: runs until a marker other than a
                // stuffed 0xFF00 or a restart marker.
                loop {
                    let b = byte(&mut self.r)?.ok_or_else(|| eof(&self.path))?;
                    if b != 0xFF {
                        out.push(b);
                        continue;
                    }
                    let mut n = byte(&mut self.r)?.ok_or_else(|| eof(&self.path))?;
                    while n == 0xFF {
                        n = byte(&mut self.r)?.ok_or_else(|| eof(&self.path))?;
                    }
                    if n == 0x00 || (0xD0..=0xD7).contains(&n) {
                        out.extend_from_slice(&[0xFF, n]);
                        continue;
                    }
                    out.extend_from_slice(&[0xFF, n]);
                    if n == 0xD9 {
                        return Ok(Some(out));
                    }
                    // Another segment (progressive JPEG): read its length.
                    let hi = byte(&mut self.r)?.ok_or_else(|| eof(&self.path))?;
                    let lo = byte(&mut self.r)?.ok_or_else(|| eof(&self.path))?;
                    let len = u16::from_be_bytes([hi, lo]) as usize;
                    if len < 2 {
                        return Err(bad(&self.path, "corrupt JPEG segment length"));
                    }
                    out.extend_from_slice(&[hi, lo]);
                    let start = out.len();
                    out.resize(start + len - 2, 0);
                    self.r
                        .read_exact(&mut out[start..])
                        .map_err(|_| eof(&self.path))?;
                    if n != 0xDA {
                        break;
                    }
                }
            }
            if out.len() > MAX_JPEG {
                return Err(bad(&self.path, "JPEG frame over 64 MiB"));
            }
        }
    }
}

impl Source for MjpegSource {
    fn next_frame(&mut self) -> Result<Option<Image>, MediaError> {
        match self.read_jpeg()? {
            None => Ok(None),
            Some(bytes) => decode_image(&bytes, &self.path).map(Some),
        }
    }
}

/// Any format ffmpeg reads, decoded by an `ffmpeg` child to raw RGB24.
pub struct FfmpegSource {
    path: PathBuf,
    child: Child,
    out: ChildStdout,
    width: usize,
    height: usize,
}

impl FfmpegSource {
    /// `path` is a file or a URL ffmpeg reads (`rtsp://`, `http://`, ...).
    pub fn open(path: &Path, fps: f32) -> Result<Self, MediaError> {
        if !is_url(path) {
            std::fs::metadata(path).map_err(io(path))?;
        }
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0"])
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| bad(path, format!("not Y4M/MJPEG/images and ffprobe/ffmpeg is not usable ({e}); install ffmpeg")))?;
        let text = String::from_utf8_lossy(&probe.stdout);
        let mut it = text
            .trim()
            .split(',')
            .map(|v| v.trim().parse::<usize>().unwrap_or(0));
        let (w, h) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        if !probe.status.success() || w == 0 || h == 0 || w.saturating_mul(h) > MAX_PIXELS {
            let why = String::from_utf8_lossy(&probe.stderr).trim().to_string();
            return Err(bad(path, format!("ffprobe finds no video stream ({why})")));
        }
        let mut child = Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-i"])
            .arg(path)
            .args([
                "-vf",
                &format!("fps={fps}"),
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| bad(path, format!("cannot start ffmpeg: {e}")))?;
        let Some(out) = child.stdout.take() else {
            let _ = child.kill();
            return Err(bad(path, "ffmpeg has no stdout"));
        };
        Ok(FfmpegSource {
            path: path.to_path_buf(),
            child,
            out,
            width: w,
            height: h,
        })
    }
}

impl Source for FfmpegSource {
    fn next_frame(&mut self) -> Result<Option<Image>, MediaError> {
        let mut rgb = vec![0u8; self.width * self.height * 3];
        match self.out.read_exact(&mut rgb) {
            Ok(()) => Ok(Some(Image {
                width: self.width,
                height: self.height,
                rgb,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(io(&self.path)(e)),
        }
    }
}

impl Drop for FfmpegSource {
    fn drop(&mut self) {
        // The child is ours: stop it and reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn describe_names_the_kind() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.jpg"), b"x").unwrap();
        assert!(describe(d.path()).starts_with("image directory "));
        assert!(describe(Path::new("c.y4m")).starts_with("Y4M file c.y4m"));
        assert!(describe(Path::new("rtsp://cam/1")).starts_with("URL rtsp://cam/1"));
        assert!(describe(Path::new("c.mkv")).contains("ffmpeg"));
        // Not a capture device: the formats part says why (no camera in CI).
        let v = describe(Path::new("v4l2:/dev/null"));
        assert!(v.starts_with("V4L2 device /dev/null"), "{v}");
        #[cfg(feature = "v4l2")]
        assert!(v.contains("not a V4L2 capture device"), "{v}");
    }

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).unwrap();
    }

    /// Random bytes (xorshift64), reproducible.
    pub(crate) fn noise_bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// What the runtime's model-input path makes of `frame`: the RGB of each
    /// pixel through `image_to_tensor` at the frame's own size (no resize,
    /// no normalisation), as packed `[r, g, b]` floats.
    pub(crate) fn runtime_rgb(frame: &strix_runtime::preprocess::Frame) -> Vec<[f32; 3]> {
        use strix_runtime::meta::{ColorOrder, InputSpec, ResizeMode};
        let (w, h) = (frame.width, frame.height);
        let spec = InputSpec::Image {
            color: ColorOrder::Rgb,
            mean: [0.0; 3],
            scale: [1.0; 3],
            resize: ResizeMode::Stretch,
        };
        let mut t = vec![0f32; 3 * w * h];
        strix_runtime::preprocess::image_to_tensor(frame, &spec, 3, h, w, &mut t).unwrap();
        (0..w * h)
            .map(|p| [t[p], t[w * h + p], t[2 * w * h + p]])
            .collect()
    }

    /// Issue 13: the daemon converted YUV with coefficients of its own (in
    /// two copies), the runtime's NV12 sampler with others, so one frame gave
    /// different pixels by path. Y4M 4:2:0 now goes through the runtime's
    /// conversion: each RGB8 pixel is exactly the rounding of what
    /// `image_to_tensor` computes from the same samples given as NV12.
    #[test]
    fn y4m_420_matches_the_runtime_nv12_sampler() {
        // Odd sizes: the last column and row have chroma blocks of their own.
        let (w, h) = (37usize, 23usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let y = noise_bytes(w * h, 1);
        let u = noise_bytes(cw * ch, 2);
        let v = noise_bytes(cw * ch, 3);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("noise.y4m");
        let mut b = format!("YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\nFRAME\n").into_bytes();
        b.extend(y.iter().chain(&u).chain(&v));
        write(&p, &b);
        let img = open(&p, 10.0).unwrap().next_frame().unwrap().unwrap();

        let mut nv12 = y.clone();
        for (&u, &v) in u.iter().zip(&v) {
            nv12.extend([u, v]);
        }
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

    /// A camera directory holding a 1x1 grey PNG whose IHDR is rewritten to
    /// declare 20000x20000 pixels (issue 12's 400 KB bomb cost strixd
    /// 1.57 GB): the frame is refused, naming the file and its size, and the
    /// source goes on to the next file.
    #[test]
    fn image_bomb_in_camera_dir_is_refused() {
        let mut png = Vec::new();
        image::GrayImage::new(1, 1)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let good = png.clone();
        png[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("a.png"), &png);
        write(&dir.path().join("b.png"), &good);
        let mut src = open(dir.path(), 10.0).unwrap();
        let start = std::time::Instant::now();
        let err = src.next_frame().unwrap_err().to_string();
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert!(
            err.contains("a.png") && err.contains("20000x20000 pixels"),
            "{err}"
        );
        let frame = src.next_frame().unwrap().unwrap();
        assert_eq!((frame.width, frame.height), (1, 1));
    }

    #[test]
    fn source_kinds_by_name() {
        assert!(is_url(Path::new("rtsp://cam.local:554/stream1")));
        assert!(is_url(Path::new("http://127.0.0.1:8080/clip.mp4")));
        assert!(!is_url(Path::new("/data/clip.mp4")));
        assert!(!is_url(Path::new("odd name ://.mp4")));
        assert_eq!(
            v4l2_device(Path::new("v4l2:/dev/video2")),
            Some(Path::new("/dev/video2"))
        );
        assert_eq!(v4l2_device(Path::new("/dev/video2")), None);
    }

    #[test]
    fn y4m_420_gray_frames() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.y4m");
        let mut b = b"YUV4MPEG2 W4 H2 F10:1 Ip A1:1 C420jpeg\n".to_vec();
        for luma in [16u8, 235] {
            b.extend_from_slice(b"FRAME\n");
            b.extend_from_slice(&[luma; 8]);
            b.extend_from_slice(&[128; 4]);
        }
        b.extend_from_slice(b"FRAME\n\x10"); // truncated: ends the stream
        write(&p, &b);
        let mut s = open(&p, 10.0).unwrap();
        let f = s.next_frame().unwrap().unwrap();
        assert_eq!((f.width, f.height), (4, 2));
        assert!(f.rgb.iter().all(|&v| v == 0));
        let f = s.next_frame().unwrap().unwrap();
        assert!(f.rgb.iter().all(|&v| v == 255));
        assert!(s.next_frame().unwrap().is_none());
    }

    #[test]
    fn y4m_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.y4m");
        write(&p, b"hello");
        assert!(open(&p, 10.0).is_err());
        write(&p, b"YUV4MPEG2 W0 H2\n");
        assert!(open(&p, 10.0).is_err());
        write(&p, b"YUV4MPEG2 W99999999 H99999999\n");
        assert!(open(&p, 10.0).is_err());
    }

    fn jpeg(w: u32, h: u32, v: u8) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([v, v, v]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    #[test]
    fn mjpeg_splits_concatenated_jpegs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.mjpeg");
        let mut b = jpeg(16, 8, 10);
        b.extend(jpeg(16, 8, 200));
        b.extend_from_slice(&[0xFF, 0xD8, 0xFF]); // truncated tail
        write(&p, &b);
        let mut s = open(&p, 10.0).unwrap();
        let a = s.next_frame().unwrap().unwrap();
        let c = s.next_frame().unwrap().unwrap();
        assert_eq!((a.width, a.height), (16, 8));
        assert!(a.rgb[0] < 30 && c.rgb[0] > 180);
        assert!(s.next_frame().is_err());
    }

    #[test]
    fn dir_source_in_name_order_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("b.jpg"), &jpeg(8, 8, 200));
        write(&dir.path().join("a.jpg"), &jpeg(8, 8, 10));
        write(&dir.path().join("c.png"), b"not a png");
        let mut s = open(dir.path(), 10.0).unwrap();
        assert!(s.next_frame().unwrap().unwrap().rgb[0] < 30);
        assert!(s.next_frame().unwrap().unwrap().rgb[0] > 180);
        assert!(s.next_frame().is_err());
        assert!(s.next_frame().unwrap().is_none());
        let empty = tempfile::tempdir().unwrap();
        assert!(open(empty.path(), 10.0).is_err());
    }
}

//! Reading samples from disk into model inputs: images, WAV audio and `.npy`.

use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use strix_runtime::audio::{read_wav_mono_16k, KwsMfcc};
use strix_runtime::meta::{AudioFrontend, InputSpec};
use strix_runtime::preprocess::{decode_image_rgb8, image_to_tensor, Frame, PixelFormat};

/// Turns one file into the values of an input of shape `shape`.
pub fn load_input(path: &Path, spec: &InputSpec, shape: &[usize]) -> Result<Vec<f32>> {
    let want: usize = shape.iter().product();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let v = match ext.as_str() {
        "npy" => read_npy(path)?,
        "wav" => {
            let samples = read_wav_mono_16k(path).map_err(|e| anyhow!("{e}"))?;
            match spec {
                InputSpec::Audio {
                    frontend: AudioFrontend::KwsMfcc,
                    ..
                } => {
                    let mut out = vec![0f32; KwsMfcc::OUTPUT_LEN];
                    KwsMfcc::new().compute(&samples, &mut out);
                    out
                }
                InputSpec::Audio {
                    frontend: AudioFrontend::RawSamples,
                    ..
                }
                | InputSpec::Raw => {
                    let mut s = samples;
                    s.resize(want, 0.0);
                    s
                }
                InputSpec::Image { .. } => {
                    bail!("{}: the model takes images, not audio", path.display())
                }
            }
        }
        _ => {
            if !matches!(spec, InputSpec::Image { .. }) {
                bail!(
                    "{}: the model's input is not an image (give a .npy{})",
                    path.display(),
                    if matches!(spec, InputSpec::Audio { .. }) {
                        " or .wav"
                    } else {
                        ""
                    }
                );
            }
            if shape.len() != 4 {
                bail!("image input needs a 4-D NCHW model input, found {shape:?}");
            }
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let img = decode_image_rgb8(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let (w, h) = img.dimensions();
            let frame = Frame {
                data: img.as_raw(),
                width: w as usize,
                height: h as usize,
                stride: 0,
                format: PixelFormat::Rgb8,
            };
            let mut out = vec![0f32; want];
            image_to_tensor(&frame, spec, shape[1], shape[2], shape[3], &mut out)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            out
        }
    };
    if v.len() != want {
        bail!(
            "{}: gives {} values, the model input {shape:?} needs {want}",
            path.display(),
            v.len()
        );
    }
    Ok(v)
}

/// Minimal `.npy` reader: little-endian f32/f64/i64/u8 arrays in C order.
pub fn read_npy(path: &Path) -> Result<Vec<f32>> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bad = |m: &str| anyhow!("{}: not a supported .npy file: {m}", path.display());
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(bad("bad magic"));
    }
    let (hlen, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        if b.len() < 12 {
            return Err(bad("short header"));
        }
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let header = std::str::from_utf8(
        b.get(start..start + hlen)
            .ok_or_else(|| bad("truncated header"))?,
    )
    .map_err(|_| bad("header"))?;
    if header.contains("'fortran_order': True") {
        return Err(bad("Fortran order"));
    }
    let data = &b[start + hlen..];
    let descr = header
        .split("'descr':")
        .nth(1)
        .and_then(|s| s.split('\'').nth(1))
        .ok_or_else(|| bad("no descr"))?;
    let v: Vec<f32> = match descr {
        "<f4" => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        "<f8" => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        "<i8" => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        "|u1" => data.iter().map(|&x| x as f32).collect(),
        "|i1" => data.iter().map(|&x| x as i8 as f32).collect(),
        d => return Err(bad(&format!("dtype {d}"))),
    };
    Ok(v)
}

/// Writes a little-endian f32 `.npy`.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_s}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strix_runtime::meta::{ColorOrder, ResizeMode};

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

    /// A 1x1 grey PNG whose IHDR is rewritten to declare 20000x20000 pixels:
    /// the decompression bomb of issue 12 without its 400 KB of zeros.
    fn bomb_png() -> Vec<u8> {
        let mut png = Vec::new();
        image::GrayImage::new(1, 1)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(&png[12..16], b"IHDR");
        png[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    }

    #[test]
    fn image_bomb_is_refused_naming_file_and_size() {
        let path =
            std::env::temp_dir().join(format!("strix-media-bomb-{}.png", std::process::id()));
        std::fs::write(&path, bomb_png()).unwrap();
        let spec = InputSpec::Image {
            color: ColorOrder::Rgb,
            mean: [0.0; 3],
            scale: [1.0; 3],
            resize: ResizeMode::Stretch,
        };
        let start = std::time::Instant::now();
        let err = load_input(&path, &spec, &[1, 3, 8, 8])
            .unwrap_err()
            .to_string();
        let _ = std::fs::remove_file(&path);
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert!(
            err.contains(&*path.to_string_lossy()) && err.contains("20000x20000 pixels"),
            "{err}"
        );
    }
}

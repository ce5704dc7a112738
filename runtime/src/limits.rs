//! Input limits: the largest (and for sample rates the smallest) media the
//! runtime, the `strix` tool and strixd accept, in one place.
//!
//! A file a few hundred kilobytes long can describe gigabytes of samples or
//! pixels (a 1 Hz WAV resampled to 16 kHz, a 20000x20000 PNG of one colour).
//! Every reader checks the header against these limits *before* it allocates
//! or decodes, and refuses with an error that names the file, its value and
//! the limit. The values are sized for the boards strixd runs on (a few
//! hundred megabytes of RAM shared with the model), not for a workstation.

/// Lowest sample rate (Hz) a WAV file or capture device may have.
///
/// The keyword and voice models take 16 kHz audio, whose band reaches 8 kHz;
/// 8 kHz telephone audio is the lowest rate real recordings use. 4 kHz leaves
/// room below that, while refusing the degenerate rates (1 Hz, 7 Hz) of
/// corrupted or hostile headers: resampling to 16 kHz multiplies the sample
/// count by `16000 / rate`, so this bound caps that growth at 4x.
pub const MIN_SAMPLE_RATE_HZ: u32 = 4_000;

/// Highest sample rate (Hz) a WAV file or capture device may have.
///
/// 384 kHz is the highest rate audio interfaces and DACs offer; anything
/// above it is a corrupted header. The bound keeps the resampler's kernel
/// (its width grows with `rate / 16000`) and the read buffer bounded.
pub const MAX_SAMPLE_RATE_HZ: u32 = 384_000;

/// Longest audio file read, in seconds (as its header declares it).
///
/// WAV files are read whole into memory and resampled to 16 kHz: ten minutes
/// is at most 9.6 M output samples (38 MB of `f32`), whatever the file's rate.
/// The samples read before resampling are bounded by the file itself (at most
/// 4 bytes of `f32` per byte of 8-bit PCM). The longest recording the project
/// uses is 60 s; strixd loops a file source, so a longer test recording gains
/// nothing.
pub const MAX_AUDIO_SECONDS: u32 = 600;

/// Largest image, in pixels (width x height), decoded or read as a frame.
///
/// 2^25 = 33.5 Mpx holds an 8K UHD frame (7680x4320 = 33.2 Mpx) and the
/// stills of common 24-32 Mpx cameras. Decoded to RGB8 that is 100 MB, which
/// is what a 512 MB board can spare beside a model (the models themselves
/// take at most a few hundred thousand pixels, so larger images only cost
/// memory). The `image` crate's own default (512 MiB of decoder memory) lets a
/// 20000x20000 grey PNG of 400 KB through, and its RGB8 copy costs 1.2 GB.
pub const MAX_IMAGE_PIXELS: usize = 1 << 25;

/// Largest image width or height, in pixels.
///
/// Twice the width of 8K video; with [`MAX_IMAGE_PIXELS`] it still allows
/// panoramas (16384x2048). Decoders size per-row buffers by the width, so a
/// long thin image is bounded too.
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// Memory budget of one image decode, in bytes (the decoder's output buffer
/// and its working memory).
///
/// Four bytes per pixel at [`MAX_IMAGE_PIXELS`]: an 8-bit RGBA image of the
/// largest size fits; 16-bit images (8 bytes per RGBA pixel) get half as
/// many pixels. The RGB8 copy made after decoding comes on top.
pub const MAX_IMAGE_DECODE_BYTES: u64 = 4 * MAX_IMAGE_PIXELS as u64;

/// Whether a `width` x `height` image is within [`MAX_IMAGE_SIDE`] and
/// [`MAX_IMAGE_PIXELS`] (computed without overflow).
pub fn image_size_ok(width: u64, height: u64) -> bool {
    width <= u64::from(MAX_IMAGE_SIDE)
        && height <= u64::from(MAX_IMAGE_SIDE)
        && width
            .checked_mul(height)
            .is_some_and(|p| p <= MAX_IMAGE_PIXELS as u64)
}

/// Whether `hz` is within [`MIN_SAMPLE_RATE_HZ`]..=[`MAX_SAMPLE_RATE_HZ`].
pub fn sample_rate_ok(hz: u32) -> bool {
    (MIN_SAMPLE_RATE_HZ..=MAX_SAMPLE_RATE_HZ).contains(&hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_size_bounds() {
        assert!(image_size_ok(7680, 4320));
        assert!(image_size_ok(16_384, 2048));
        assert!(!image_size_ok(16_385, 1));
        assert!(!image_size_ok(8192, 8192));
        assert!(!image_size_ok(20_000, 20_000));
        assert!(!image_size_ok(u64::MAX, u64::MAX));
    }

    #[test]
    fn sample_rate_bounds() {
        assert!(sample_rate_ok(8_000) && sample_rate_ok(16_000) && sample_rate_ok(384_000));
        assert!(!sample_rate_ok(0) && !sample_rate_ok(1) && !sample_rate_ok(3_999));
        assert!(!sample_rate_ok(384_001) && !sample_rate_ok(u32::MAX));
    }
}

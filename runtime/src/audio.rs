//! Audio front ends: the keyword-spotting MFCC features and WAV loading.
//!
//! [`KwsMfcc`] reproduces the feature pipeline the MLPerf Tiny DS-CNN keyword
//! spotter (`kws_dscnn_*`) was trained with (mlcommons/tiny,
//! `benchmark/training/keyword_spotting/get_dataset.py`, built on
//! TensorFlow's `tf.signal`). `tests/scripts/kws_mfcc_reference.py` is an
//! independent numpy version of the same recipe; the tests below compare
//! against values it printed.
//!
//! Two details of that recipe are easy to miss and both change the model's
//! answers, so they are reproduced on purpose:
//! * every clip is divided by its own maximum sample value before the STFT
//!   (`wav / tf.reduce_max(wav)`), so the features do not depend on the input
//!   gain. Without it the fp32 model calls the quiet `silence_1000ms.wav`
//!   `_unknown_`; with it, `_silence_` (0.94).
//! * `tf.signal.mfccs_from_log_mel_spectrograms` is the unnormalised DCT-II
//!   times `1/sqrt(2 * 40)`: every coefficient, the first included, is scaled
//!   by `sqrt(2/40)`. That is the orthonormal DCT-II except for `c0`, which is
//!   `sqrt(2)` times larger than the orthonormal one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::limits;

/// Errors from [`read_wav_mono_16k`]. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file could not be opened or is not a well-formed WAV file
    /// (missing, unreadable, truncated, garbage bytes, zero channels, ...).
    #[error("cannot read WAV file {}: {source}", path.display())]
    Wav {
        path: PathBuf,
        #[source]
        source: hound::Error,
    },
    /// A well-formed WAV file whose sample encoding this loader does not handle.
    #[error("unsupported WAV file {}: {detail}", path.display())]
    Unsupported { path: PathBuf, detail: String },
    /// A well-formed WAV file with no audio in it.
    #[error("WAV file {} contains no audio samples", path.display())]
    Empty { path: PathBuf },
    /// A WAV file whose header declares more audio than
    /// [`limits::MAX_AUDIO_SECONDS`].
    #[error(
        "WAV file {} holds {seconds} s of audio, more than the limit of {} s",
        path.display(),
        limits::MAX_AUDIO_SECONDS
    )]
    TooLong { path: PathBuf, seconds: u64 },
}

/// The MFCC front end of the MLPerf Tiny keyword-spotting model.
///
/// Recipe (all at 16 kHz): take exactly [`Self::CLIP_SAMPLES`] samples (shorter
/// input is zero-padded at the end, longer input truncated); divide by the
/// clip's maximum sample value; 480-sample periodic-Hann frames every 320
/// samples (49 frames, no end padding), each zero-padded to a 512-point real
/// FFT; magnitude spectrum; 40 triangular HTK-mel filters from 20 Hz to
/// 4000 Hz over the 257 bins with the DC bin excluded
/// (`tf.signal.linear_to_mel_weight_matrix`); `ln(mel + 1e-6)`; DCT-II scaled
/// as `tf.signal.mfccs_from_log_mel_spectrograms`; the first 10 coefficients.
///
/// All tables, the FFT plan and the work buffers are made by [`Self::new`], so
/// [`Self::compute`] does not allocate and the value can be reused for every
/// window of a stream.
pub struct KwsMfcc {
    /// Periodic Hann window, `FRAME_LEN` long.
    window: Vec<f32>,
    /// Per mel band: first linear bin with a non-zero weight, and the weights.
    mel_bands: Vec<(usize, Vec<f32>)>,
    /// DCT matrix, `[COEFFS][MEL_BINS]` row-major.
    dct: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
    /// The normalised, padded clip.
    clip: Vec<f32>,
    /// FFT input (also overwritten by the FFT).
    frame: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    fft_scratch: Vec<Complex<f32>>,
    magnitude: Vec<f32>,
    log_mel: Vec<f32>,
}

impl KwsMfcc {
    /// Sample rate the features are defined for, in Hz.
    pub const SAMPLE_RATE: u32 = 16_000;
    /// Samples in one clip (1 s).
    pub const CLIP_SAMPLES: usize = 16_000;
    /// Analysis window length in samples (30 ms).
    pub const FRAME_LEN: usize = 480;
    /// Hop between frames in samples (20 ms).
    pub const FRAME_STEP: usize = 320;
    /// FFT length; frames are zero-padded to it.
    pub const FFT_LEN: usize = 512;
    /// Number of mel filters.
    pub const MEL_BINS: usize = 40;
    /// Frames per clip: `1 + (16000 - 480) / 320`.
    pub const FRAMES: usize = 49;
    /// Cepstral coefficients kept per frame.
    pub const COEFFS: usize = 10;
    /// Length of the output of [`Self::compute`]: `FRAMES * COEFFS`.
    pub const OUTPUT_LEN: usize = Self::FRAMES * Self::COEFFS;

    const SPECTRUM_BINS: usize = Self::FFT_LEN / 2 + 1;
    const LOWER_HZ: f64 = 20.0;
    const UPPER_HZ: f64 = 4000.0;
    const LOG_OFFSET: f32 = 1e-6;

    /// Builds the window, mel and DCT tables, the FFT plan and work buffers.
    pub fn new() -> Self {
        let n = Self::FRAME_LEN as f64;
        let window = (0..Self::FRAME_LEN)
            .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n).cos()) as f32)
            .collect();

        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(Self::FFT_LEN);
        let frame = fft.make_input_vec();
        let spectrum = fft.make_output_vec();
        let fft_scratch = fft.make_scratch_vec();

        Self {
            window,
            mel_bands: mel_bands(),
            dct: dct_matrix(),
            fft,
            clip: vec![0.0; Self::CLIP_SAMPLES],
            frame,
            spectrum,
            fft_scratch,
            magnitude: vec![0.0; Self::SPECTRUM_BINS],
            log_mel: vec![0.0; Self::MEL_BINS],
        }
    }

    /// Computes the features of one clip into `out`, row-major
    /// `[FRAMES][COEFFS]` (frame-major), i.e. the model input `1x1x49x10`.
    ///
    /// `samples` are 16 kHz mono, nominally in `[-1, 1]` (the scale does not
    /// matter: the clip is divided by its maximum). Only the first
    /// [`Self::CLIP_SAMPLES`] are used; fewer are zero-padded, and a clip whose
    /// maximum is 0 (empty, all zero) is left unscaled, giving the features
    /// of silence rather than the NaNs TensorFlow would produce.
    /// Non-finite samples give non-finite features.
    ///
    /// # Panics
    /// If `out.len() != Self::OUTPUT_LEN`.
    pub fn compute(&mut self, samples: &[f32], out: &mut [f32]) {
        assert_eq!(
            out.len(),
            Self::OUTPUT_LEN,
            "KwsMfcc::compute: output buffer must hold {} values",
            Self::OUTPUT_LEN
        );
        let used = &samples[..samples.len().min(Self::CLIP_SAMPLES)];
        // The reference divides by the signed maximum (not the absolute one).
        // A negative peak flips the sign of the clip, which leaves the
        // magnitude spectrum, hence the features, unchanged.
        let peak = used.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let scale_by_peak = peak.is_finite() && peak != 0.0;
        for (dst, &s) in self.clip.iter_mut().zip(used) {
            *dst = if scale_by_peak { s / peak } else { s };
        }
        self.clip[used.len()..].fill(0.0);

        for (f, out_row) in out.chunks_exact_mut(Self::COEFFS).enumerate() {
            let start = f * Self::FRAME_STEP;
            let src = &self.clip[start..start + Self::FRAME_LEN];
            for ((dst, &s), &w) in self.frame.iter_mut().zip(src).zip(&self.window) {
                *dst = s * w;
            }
            self.frame[Self::FRAME_LEN..].fill(0.0);
            self.fft
                .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.fft_scratch)
                .expect("FFT buffers are sized by the plan in KwsMfcc::new");
            for (m, c) in self.magnitude.iter_mut().zip(&self.spectrum) {
                *m = c.norm();
            }
            for (lm, (first, weights)) in self.log_mel.iter_mut().zip(&self.mel_bands) {
                let mags = &self.magnitude[*first..*first + weights.len()];
                let mel: f32 = mags.iter().zip(weights).map(|(m, w)| m * w).sum();
                *lm = (mel + Self::LOG_OFFSET).ln();
            }
            for (o, row) in out_row
                .iter_mut()
                .zip(self.dct.chunks_exact(Self::MEL_BINS))
            {
                *o = row.iter().zip(&self.log_mel).map(|(d, l)| d * l).sum();
            }
        }
    }
}

impl Default for KwsMfcc {
    fn default() -> Self {
        Self::new()
    }
}

/// HTK mel scale, as `tf.signal` uses it.
fn hertz_to_mel(hz: f64) -> f64 {
    1127.0 * (hz / 700.0).ln_1p()
}

/// `tf.signal.linear_to_mel_weight_matrix(40, 257, 16000, 20, 4000)`, stored
/// sparsely: each band keeps only its run of non-zero weights (a triangle is
/// contiguous). The triangles are evaluated in mel space at the bin centre
/// frequencies, and bin 0 (DC) never contributes.
fn mel_bands() -> Vec<(usize, Vec<f32>)> {
    let bins = KwsMfcc::SPECTRUM_BINS;
    let nyquist = f64::from(KwsMfcc::SAMPLE_RATE) / 2.0;
    let lo = hertz_to_mel(KwsMfcc::LOWER_HZ);
    let hi = hertz_to_mel(KwsMfcc::UPPER_HZ);
    let edge = |i: usize| lo + (hi - lo) * i as f64 / (KwsMfcc::MEL_BINS + 1) as f64;
    (0..KwsMfcc::MEL_BINS)
        .map(|band| {
            let (left, centre, right) = (edge(band), edge(band + 1), edge(band + 2));
            let weights: Vec<(usize, f32)> = (1..bins)
                .filter_map(|bin| {
                    let mel = hertz_to_mel(nyquist * bin as f64 / (bins - 1) as f64);
                    let up = (mel - left) / (centre - left);
                    let down = (right - mel) / (right - centre);
                    let w = up.min(down).max(0.0);
                    (w > 0.0).then_some((bin, w as f32))
                })
                .collect();
            // 40 bands over 20..4000 Hz are each wider than one 31.25 Hz bin,
            // so no band is empty; keep the code total anyway.
            let first = weights.first().map_or(1, |&(bin, _)| bin);
            (first, weights.into_iter().map(|(_, w)| w).collect())
        })
        .collect()
}

/// `[COEFFS][MEL_BINS]`: `2 cos(pi k (2n + 1) / 2N) / sqrt(2N)` for every `k`,
/// which is what `tf.signal.mfccs_from_log_mel_spectrograms` applies.
fn dct_matrix() -> Vec<f32> {
    let n_mel = KwsMfcc::MEL_BINS as f64;
    let scale = 2.0 / (2.0 * n_mel).sqrt();
    (0..KwsMfcc::COEFFS)
        .flat_map(|k| {
            (0..KwsMfcc::MEL_BINS).map(move |n| {
                let angle = std::f64::consts::PI * k as f64 * (2 * n + 1) as f64 / (2.0 * n_mel);
                (scale * angle.cos()) as f32
            })
        })
        .collect()
}

/// Reads a WAV file as 16 kHz mono `f32` samples.
///
/// Integer PCM of 8 to 32 bits is scaled by `1 / 2^(bits-1)` (so 16-bit
/// `-32768` is `-1.0`), 32-bit float is taken as is; channels are averaged;
/// other rates are converted with [`resample`]. Every failure is an
/// [`AudioError`] naming the file; malformed input never panics.
///
/// The header is checked against [`crate::limits`] before any sample is read:
/// the sample rate must lie in [`limits::MIN_SAMPLE_RATE_HZ`]..=
/// [`limits::MAX_SAMPLE_RATE_HZ`] and the declared length must not exceed
/// [`limits::MAX_AUDIO_SECONDS`], so the result holds at most
/// `MAX_AUDIO_SECONDS * 16000` samples (plus one for rounding).
pub fn read_wav_mono_16k(path: &Path) -> Result<Vec<f32>, AudioError> {
    let wav_err = |source| AudioError::Wav {
        path: path.to_path_buf(),
        source,
    };
    let unsupported = |detail: String| AudioError::Unsupported {
        path: path.to_path_buf(),
        detail,
    };
    let reader = hound::WavReader::open(path).map_err(wav_err)?;
    let spec = reader.spec();
    // hound already rejects these, but the division and resampling below
    // must never see them.
    if spec.channels == 0 {
        return Err(unsupported("zero channels".into()));
    }
    // A tiny rate would make the resampler produce `16000 / rate` outputs per
    // input sample (a 1 Hz file of 32 KB asks for 256 M samples).
    if !limits::sample_rate_ok(spec.sample_rate) {
        return Err(unsupported(format!(
            "sample rate of {} Hz (accepted: {}..={} Hz)",
            spec.sample_rate,
            limits::MIN_SAMPLE_RATE_HZ,
            limits::MAX_SAMPLE_RATE_HZ
        )));
    }
    // `duration()` is the frame count the header declares; the reader never
    // returns more than that.
    let seconds = u64::from(reader.duration()).div_ceil(u64::from(spec.sample_rate));
    if seconds > u64::from(limits::MAX_AUDIO_SECONDS) {
        return Err(AudioError::TooLong {
            path: path.to_path_buf(),
            seconds,
        });
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(wav_err)?,
        (hound::SampleFormat::Int, bits @ 1..=32) => {
            let scale = 1.0 / f64::from(1u32 << (bits - 1));
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| (f64::from(v) * scale) as f32))
                .collect::<Result<_, _>>()
                .map_err(wav_err)?
        }
        (format, bits) => {
            return Err(unsupported(format!(
                "{bits}-bit {format:?} samples (supported: 8-32-bit integer PCM, 32-bit float)"
            )))
        }
    };
    let channels = usize::from(spec.channels);
    let mono: Vec<f32> = if channels == 1 {
        interleaved
    } else {
        let inv = 1.0 / channels as f32;
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * inv)
            .collect()
    };
    if mono.is_empty() {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    if spec.sample_rate == KwsMfcc::SAMPLE_RATE {
        Ok(mono)
    } else {
        Ok(resample(&mono, spec.sample_rate, KwsMfcc::SAMPLE_RATE))
    }
}

/// Zero crossings of the resampling kernel on each side of its centre.
const SINC_ZERO_CROSSINGS: usize = 32;
/// Kernel table entries per zero crossing (linear interpolation between them
/// is accurate to about 1e-5, well below 16-bit quantisation).
const SINC_OVERSAMPLE: usize = 512;
/// Kaiser window shape: about 80 dB stopband attenuation.
const SINC_KAISER_BETA: f64 = 8.0;
/// Cut-off as a fraction of the lower of the two Nyquist frequencies; the
/// transition band sits just below it, so little aliases back.
const SINC_ROLLOFF: f64 = 0.92;

/// Band-limited resampling of `samples` from `from_hz` to `to_hz`.
///
/// A Kaiser-windowed sinc interpolator (the classic "bandlimited
/// interpolation" of J. O. Smith): each output sample is the sum of the
/// inputs within [`SINC_ZERO_CROSSINGS`] zero crossings weighted by a
/// low-pass kernel whose cut-off is 0.92 of the lower Nyquist frequency, so
/// downsampling filters out what would alias. Works for any pair of rates.
/// Output length is `round(len * to_hz / from_hz)`; the signal is taken as
/// zero outside the input (the first and last ~2 ms fade accordingly). The
/// gain at DC is 1.
///
/// Both rates must lie in [`limits::MIN_SAMPLE_RATE_HZ`]..=
/// [`limits::MAX_SAMPLE_RATE_HZ`] (check them with
/// [`limits::sample_rate_ok`]); a rate outside it, zero included, gives an
/// empty output. So the output is never more than `384000 / 4000 = 96` times
/// the input. Equal rates return a copy.
pub fn resample(samples: &[f32], from_hz: u32, to_hz: u32) -> Vec<f32> {
    if !limits::sample_rate_ok(from_hz) || !limits::sample_rate_ok(to_hz) {
        return Vec::new();
    }
    if from_hz == to_hz {
        return samples.to_vec();
    }
    let (from, to) = (u128::from(from_hz), u128::from(to_hz));
    // In u128 the product cannot overflow; the quotient fits a usize because
    // it is at most 96 times a slice length.
    let Ok(out_len) = usize::try_from((samples.len() as u128 * to + from / 2) / from) else {
        return Vec::new();
    };

    // Kernel in units of zero crossings: table[i] = sinc(x) * kaiser(x / ZC)
    // at x = i / OVERSAMPLE, plus a trailing zero so interpolation at the edge
    // needs no bounds check.
    let table_len = SINC_ZERO_CROSSINGS * SINC_OVERSAMPLE;
    let i0_beta = bessel_i0(SINC_KAISER_BETA);
    let mut table: Vec<f32> = (0..table_len)
        .map(|i| {
            let x = i as f64 / SINC_OVERSAMPLE as f64;
            let sinc = if i == 0 {
                1.0
            } else {
                (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
            };
            let r = x / SINC_ZERO_CROSSINGS as f64;
            let kaiser = bessel_i0(SINC_KAISER_BETA * (1.0 - r * r).sqrt()) / i0_beta;
            (sinc * kaiser) as f32
        })
        .collect();
    table.push(0.0);

    // Cut-off in cycles per input sample; the kernel is 2 fc sinc(2 fc t).
    let fc = 0.5 * SINC_ROLLOFF * (to as f64 / from as f64).min(1.0);
    let crossings_per_sample = 2.0 * fc;
    let half_width = SINC_ZERO_CROSSINGS as f64 / crossings_per_sample;
    let step = from as f64 / to as f64;
    let last = samples.len() as i64 - 1;

    (0..out_len)
        .map(|i| {
            let t = i as f64 * step;
            let lo = ((t - half_width).ceil() as i64).max(0);
            let hi = ((t + half_width).floor() as i64).min(last);
            let mut acc = 0.0f64;
            for j in lo..=hi {
                let pos = (t - j as f64).abs() * crossings_per_sample * SINC_OVERSAMPLE as f64;
                let idx = pos as usize;
                if idx >= table_len {
                    continue;
                }
                let frac = (pos - idx as f64) as f32;
                let w = table[idx] + frac * (table[idx + 1] - table[idx]);
                acc += f64::from(w * samples[j as usize]);
            }
            (acc * crossings_per_sample) as f32
        })
        .collect()
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let (mut sum, mut term, mut k) = (1.0, 1.0, 1.0);
    while term > sum * 1e-16 {
        term *= q / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_wav(name: &str) -> PathBuf {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/kws")).join(name)
    }

    /// A per-test file in the temp dir, removed on drop.
    struct TempFile(PathBuf);
    impl TempFile {
        fn new(name: &str, bytes: &[u8]) -> Self {
            let path = std::env::temp_dir()
                .join(format!("strix-audio-test-{}-{name}", std::process::id()));
            std::fs::write(&path, bytes).unwrap();
            Self(path)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn features(samples: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; KwsMfcc::OUTPUT_LEN];
        KwsMfcc::new().compute(samples, &mut out);
        out
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn write_wav(
        spec: hound::WavSpec,
        write: impl FnOnce(&mut hound::WavWriter<std::io::BufWriter<std::fs::File>>),
        name: &str,
    ) -> TempFile {
        let file = TempFile::new(name, b"");
        let mut w = hound::WavWriter::create(&file.0, spec).unwrap();
        write(&mut w);
        w.finalize().unwrap();
        file
    }

    fn sine(freq: f64, rate: u32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
                    as f32
            })
            .collect()
    }

    #[test]
    fn yes_clip_matches_numpy_reference() {
        // Printed by `python3 tests/scripts/kws_mfcc_reference.py constants
        // models/kws/yes_1000ms.wav` (numpy, float64): (frame, coeff, value).
        const EXPECTED: [(usize, usize, f64); 8] = [
            (0, 0, -34.802663),
            (0, 1, 8.159616),
            (10, 0, -6.685327),
            (20, 0, -30.028053),
            (20, 3, -0.083347),
            (25, 1, -1.383123),
            (30, 5, -0.557747),
            (48, 9, -1.428588),
        ];
        let samples = read_wav_mono_16k(&model_wav("yes_1000ms.wav")).unwrap();
        assert_eq!(samples.len(), 16_000);
        let out = features(&samples);
        for (frame, coeff, want) in EXPECTED {
            let got = out[frame * KwsMfcc::COEFFS + coeff];
            assert!(
                (f64::from(got) - want).abs() < 1e-3,
                "[{frame}][{coeff}]: got {got}, numpy {want}"
            );
        }
    }

    /// Full comparison with the numpy reference, run by hand: dump the
    /// reference with `kws_mfcc_reference.py features WAV --out DIR/NAME.f32`
    /// for the four clips, then `STRIX_KWS_REF_DIR=DIR cargo test -p
    /// strix-runtime audio -- --ignored --nocapture`.
    #[test]
    #[ignore = "needs STRIX_KWS_REF_DIR with numpy dumps"]
    fn all_clips_match_numpy_dumps() {
        let dir = PathBuf::from(std::env::var("STRIX_KWS_REF_DIR").expect("set STRIX_KWS_REF_DIR"));
        for name in ["yes", "no", "silence", "noise"] {
            let bytes = std::fs::read(dir.join(format!("{name}_1000ms.f32"))).unwrap();
            let want: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let samples = read_wav_mono_16k(&model_wav(&format!("{name}_1000ms.wav"))).unwrap();
            let diff = max_abs_diff(&features(&samples), &want);
            println!("{name}_1000ms.wav: max abs diff vs numpy = {diff:.3e}");
            assert!(diff < 1e-3);
        }
    }

    #[test]
    fn empty_and_zero_input_give_silence_features() {
        // All mel energies are 0, so every log-mel is ln(1e-6) and only c0
        // is non-zero: sqrt(2/40) * 40 * ln(1e-6).
        let c0 = (2.0f64 / 40.0).sqrt() * 40.0 * (1e-6f64).ln();
        for input in [&[][..], &[0.0; 100][..], &[0.0; 20_000][..]] {
            let out = features(input);
            for row in out.chunks_exact(KwsMfcc::COEFFS) {
                assert!(
                    (f64::from(row[0]) - c0).abs() < 1e-3,
                    "c0 {} vs {c0}",
                    row[0]
                );
                assert!(row[1..].iter().all(|c| c.abs() < 1e-4), "{row:?}");
            }
        }
    }

    #[test]
    fn long_input_is_truncated_short_input_padded() {
        let samples = read_wav_mono_16k(&model_wav("yes_1000ms.wav")).unwrap();
        let mut longer = samples.clone();
        longer.extend(std::iter::repeat_n(0.9, 5000));
        assert_eq!(features(&samples), features(&longer));

        let mut padded = samples[..12_000].to_vec();
        padded.resize(16_000, 0.0);
        assert_eq!(features(&samples[..12_000]), features(&padded));
    }

    #[test]
    fn features_do_not_depend_on_gain() {
        let samples = read_wav_mono_16k(&model_wav("no_1000ms.wav")).unwrap();
        let quiet: Vec<f32> = samples.iter().map(|s| s * 0.125).collect();
        assert!(max_abs_diff(&features(&samples), &features(&quiet)) < 1e-4);
    }

    #[test]
    fn compute_is_reusable() {
        let yes = read_wav_mono_16k(&model_wav("yes_1000ms.wav")).unwrap();
        let no = read_wav_mono_16k(&model_wav("no_1000ms.wav")).unwrap();
        let mut mfcc = KwsMfcc::new();
        let (mut a, mut b) = (
            vec![0.0; KwsMfcc::OUTPUT_LEN],
            vec![0.0; KwsMfcc::OUTPUT_LEN],
        );
        mfcc.compute(&yes, &mut a);
        mfcc.compute(&no, &mut b);
        mfcc.compute(&yes, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    #[should_panic(expected = "output buffer must hold 490")]
    fn wrong_output_length_panics() {
        KwsMfcc::new().compute(&[0.0; 16_000], &mut [0.0; 10]);
    }

    #[test]
    fn garbage_file_is_an_error_naming_the_path() {
        let file = TempFile::new(
            "garbage.wav",
            b"this is not a RIFF file at all, just bytes\x00\xff",
        );
        let err = read_wav_mono_16k(&file.0).unwrap_err();
        assert!(matches!(err, AudioError::Wav { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&*file.0.to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn empty_and_missing_files_are_errors() {
        let file = TempFile::new("empty.wav", b"");
        assert!(matches!(
            read_wav_mono_16k(&file.0),
            Err(AudioError::Wav { .. })
        ));
        let missing = std::env::temp_dir().join("strix-audio-test-does-not-exist.wav");
        let err = read_wav_mono_16k(&missing).unwrap_err();
        assert!(err.to_string().contains("does-not-exist"), "{err}");
    }

    #[test]
    fn wav_without_samples_is_an_error() {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let file = write_wav(spec, |_| {}, "nosamples.wav");
        let err = read_wav_mono_16k(&file.0).unwrap_err();
        assert!(matches!(err, AudioError::Empty { .. }), "{err:?}");
    }

    #[test]
    fn corrupted_headers_never_panic() {
        // Seeded xorshift mutations of the header and first samples of a real
        // file: every outcome must be Ok or Err, never a panic.
        let original = std::fs::read(model_wav("yes_1000ms.wav")).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..400 {
            let mut bytes = original.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % 64) as usize;
                bytes[at] = next() as u8;
            }
            if round % 5 == 0 {
                bytes.truncate((next() % 200) as usize);
            }
            let file = TempFile::new("mutated.wav", &bytes);
            let _ = read_wav_mono_16k(&file.0);
        }
    }

    #[test]
    fn reads_stereo_24_bit_and_float() {
        let left = sine(440.0, 16_000, 1600);
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 24,
            sample_format: hound::SampleFormat::Int,
        };
        let file = write_wav(
            spec,
            |w| {
                for &s in &left {
                    w.write_sample((s * 8_388_608.0) as i32).unwrap();
                    w.write_sample(0i32).unwrap();
                }
            },
            "stereo24.wav",
        );
        let mono = read_wav_mono_16k(&file.0).unwrap();
        let half: Vec<f32> = left.iter().map(|s| s * 0.5).collect();
        assert!(max_abs_diff(&mono, &half) < 1e-6);

        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let file = write_wav(
            spec,
            |w| left.iter().for_each(|&s| w.write_sample(s).unwrap()),
            "float.wav",
        );
        assert_eq!(read_wav_mono_16k(&file.0).unwrap(), left);
    }

    #[test]
    fn reads_and_resamples_44k1_16_bit() {
        let src = sine(1000.0, 44_100, 44_100);
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let file = write_wav(
            spec,
            |w| {
                src.iter()
                    .for_each(|&s| w.write_sample((s * 32_767.0).round() as i16).unwrap())
            },
            "44k1.wav",
        );
        let got = read_wav_mono_16k(&file.0).unwrap();
        assert_eq!(got.len(), 16_000);
        let want = sine(1000.0, 16_000, 16_000);
        // Away from the zero-padded edges the tone is reproduced.
        assert!(max_abs_diff(&got[200..15_800], &want[200..15_800]) < 1e-4);
    }

    #[test]
    fn resample_upsamples_and_filters_aliases() {
        // 8 kHz -> 16 kHz: a 1 kHz tone stays a 1 kHz tone.
        let up = resample(&sine(1000.0, 8_000, 8_000), 8_000, 16_000);
        assert_eq!(up.len(), 16_000);
        let want = sine(1000.0, 16_000, 16_000);
        assert!(max_abs_diff(&up[200..15_800], &want[200..15_800]) < 1e-4);

        // 48 kHz -> 16 kHz: a 12 kHz tone is above the new Nyquist frequency
        // and must be removed, not folded to 4 kHz.
        let down = resample(&sine(12_000.0, 48_000, 48_000), 48_000, 16_000);
        let rms = (down[200..15_800].iter().map(|s| s * s).sum::<f32>() / 15_600.0).sqrt();
        assert!(rms < 5e-5, "alias rms {rms}");

        // DC gain is one; degenerate rates do not panic.
        let dc = resample(&[0.25; 3000], 22_050, 16_000);
        assert!(dc[200..2000].iter().all(|s| (s - 0.25).abs() < 1e-4));
        assert!(resample(&[1.0; 10], 0, 16_000).is_empty());
        assert!(resample(&[], 44_100, 16_000).is_empty());
    }

    #[test]
    fn resample_refuses_rates_outside_the_limits() {
        // 1 Hz -> 16 kHz would be 16000 outputs per input sample.
        assert!(resample(&[1.0; 1000], 1, 16_000).is_empty());
        assert!(resample(&[1.0; 1000], 16_000, 1).is_empty());
        assert!(resample(&[1.0; 1000], u32::MAX, 16_000).is_empty());
        // The extremes of the range work: 4 kHz -> 384 kHz is 96x.
        assert_eq!(resample(&[0.0; 100], 4_000, 384_000).len(), 9_600);
        assert_eq!(resample(&[0.0; 9_600], 384_000, 4_000).len(), 100);
    }

    /// A 1 Hz WAV (what a fuzzer found: a 32 KB file hung `strix run` and
    /// strixd) is refused from its header, quickly, naming the rate and range.
    #[test]
    fn tiny_sample_rate_is_refused() {
        for rate in [1, 7, 3_999, 384_001] {
            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: rate,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let file = write_wav(
                spec,
                |w| (0..16_000).for_each(|i| w.write_sample((i % 100) as i16).unwrap()),
                &format!("rate{rate}.wav"),
            );
            let start = std::time::Instant::now();
            let err = read_wav_mono_16k(&file.0).unwrap_err();
            assert!(start.elapsed() < std::time::Duration::from_secs(1));
            assert!(matches!(err, AudioError::Unsupported { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("sample rate of {rate} Hz"))
                    && msg.contains("4000..=384000 Hz")
                    && msg.contains(&*file.0.to_string_lossy()),
                "{msg}"
            );
        }
    }

    /// A header declaring more than MAX_AUDIO_SECONDS is refused before the
    /// samples are read; the limit itself is accepted.
    #[test]
    fn overlong_file_is_refused() {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 8,
            sample_format: hound::SampleFormat::Int,
        };
        let limit = (limits::MAX_AUDIO_SECONDS * 16_000) as usize;
        let file = write_wav(
            spec,
            |w| (0..limit).for_each(|_| w.write_sample(0i8).unwrap()),
            "limit.wav",
        );
        assert_eq!(read_wav_mono_16k(&file.0).unwrap().len(), limit);
        let file = write_wav(
            spec,
            |w| (0..=limit).for_each(|_| w.write_sample(0i8).unwrap()),
            "toolong.wav",
        );
        let err = read_wav_mono_16k(&file.0).unwrap_err();
        assert!(
            matches!(err, AudioError::TooLong { seconds: 601, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("limit of 600 s"), "{err}");

        // A small file whose header claims 37 hours of audio.
        let file = write_wav(
            spec,
            |w| (0..1000).for_each(|_| w.write_sample(0i8).unwrap()),
            "liar.wav",
        );
        let mut bytes = std::fs::read(&file.0).unwrap();
        let at = bytes.windows(4).position(|w| w == b"data").unwrap() + 4;
        bytes[at..at + 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        std::fs::write(&file.0, &bytes).unwrap();
        let err = read_wav_mono_16k(&file.0).unwrap_err();
        assert!(matches!(err, AudioError::TooLong { .. }), "{err:?}");
    }
}

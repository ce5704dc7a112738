//! Live audio input: a streaming wrapper around the runtime's band-limited
//! resampler, and (feature `alsa`) capture from an ALSA device through cpal.

/// Streaming resampling with [`strix_runtime::audio::resample`].
///
/// That resampler works on whole buffers and takes the signal as zero outside
/// them. Here the input is cut into blocks of `block` samples (a multiple of
/// the rates' period `from / gcd(from, to)`, so each block maps to a whole
/// number of output samples on the same grid), and each block is resampled
/// with `pad` samples of real context on each side (more than the kernel's
/// half-width), keeping only the block's own outputs. The result equals
/// resampling the whole stream at once (up to float rounding), delayed by
/// `block + pad` input samples. Equal rates pass through unchanged.
pub struct StreamResampler {
    from: u32,
    to: u32,
    block: usize,
    pad: usize,
    /// Pending input; starts with `pad` zeros (the stream's silent past).
    buf: Vec<f32>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl StreamResampler {
    /// `from_hz` and `to_hz` must lie within the runtime's limits
    /// (`strix_runtime::limits::sample_rate_ok`), as `resample` requires.
    pub fn new(from_hz: u32, to_hz: u32) -> StreamResampler {
        use strix_runtime::limits::sample_rate_ok;
        assert!(
            sample_rate_ok(from_hz) && sample_rate_ok(to_hz),
            "sample rates {from_hz} -> {to_hz} Hz are outside the runtime's limits"
        );
        let period = (u64::from(from_hz) / gcd(u64::from(from_hz), u64::from(to_hz))) as usize;
        // The kernel reaches 32 zero crossings each side; a crossing is
        // max(1, from/to) / 0.92 input samples (see `resample`).
        let reach =
            (32.0 * (f64::from(from_hz) / f64::from(to_hz)).max(1.0) / 0.92).ceil() as usize + 4;
        let pad = reach.div_ceil(period) * period;
        // About 50 ms per block (at least one period).
        let block = (from_hz as usize / 20).div_ceil(period).max(1) * period;
        StreamResampler {
            from: from_hz,
            to: to_hz,
            block,
            pad,
            buf: vec![0.0; pad],
        }
    }

    /// Input samples held back before they come out (latency).
    pub fn delay(&self) -> usize {
        if self.from == self.to {
            0
        } else {
            self.block + self.pad
        }
    }

    fn out_len(&self, n: usize) -> usize {
        (n as u64 * u64::from(self.to) / u64::from(self.from)) as usize
    }

    /// Feeds input samples; appends the output samples now complete to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.from == self.to {
            out.extend_from_slice(input);
            return;
        }
        self.buf.extend_from_slice(input);
        let window = self.pad + self.block + self.pad;
        let mut start = 0;
        while self.buf.len() - start >= window {
            let y = strix_runtime::audio::resample(
                &self.buf[start..start + window],
                self.from,
                self.to,
            );
            let skip = self.out_len(self.pad);
            out.extend_from_slice(&y[skip..skip + self.out_len(self.block)]);
            start += self.block;
        }
        self.buf.drain(..start);
    }
}

#[cfg(feature = "alsa")]
pub use alsa_input::AlsaInput;

#[cfg(feature = "alsa")]
mod alsa_input {
    use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
    use cpal::{SampleFormat, SizedSample};
    use crossbeam_channel::{Receiver, Sender};
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use crate::metrics::Metrics;

    /// Audio the hand-off queue holds, seconds (whatever the period size);
    /// a buffer that would overfill it is dropped and counted.
    const QUEUE_SECONDS: usize = 10;

    /// An ALSA capture device, checked at start; [`AlsaInput::start`] opens
    /// the stream (on the calling thread: cpal streams stay where they are
    /// made).
    pub struct AlsaInput {
        /// The ALSA PCM name (`default`, `hw:CARD=1,DEV=0`, `plughw:1,0`, ...).
        pub name: String,
        device: cpal::Device,
        pub rate: u32,
        pub channels: u16,
        format: SampleFormat,
    }

    /// A running capture: mono `f32` buffers at the device rate.
    pub struct Running {
        rx: Receiver<Vec<f32>>,
        /// Samples queued in `rx` (the callback adds, `recv` subtracts).
        queued: Arc<AtomicUsize>,
        _stream: cpal::Stream,
    }

    impl Running {
        /// The next buffer, waiting up to `timeout`.
        pub fn recv(
            &self,
            timeout: std::time::Duration,
        ) -> Result<Vec<f32>, crossbeam_channel::RecvTimeoutError> {
            let b = self.rx.recv_timeout(timeout)?;
            self.queued.fetch_sub(b.len(), Ordering::Relaxed);
            Ok(b)
        }
    }

    fn input_names(host: &cpal::Host) -> String {
        let names: Vec<String> = host
            .input_devices()
            .map(|d| {
                d.filter_map(|d| d.id().ok())
                    .map(|id| id.to_string())
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() {
            "none found".into()
        } else {
            names.join(", ")
        }
    }

    impl AlsaInput {
        /// Finds the capture device `name` and picks its format: `rate` when
        /// given, else 16 kHz when the device offers it (no resampling), else
        /// its default rate; samples i16, i32 or f32, any channel count
        /// (averaged to mono).
        pub fn open(name: &str, rate: Option<u32>) -> Result<AlsaInput, String> {
            let host = cpal::host_from_id(cpal::HostId::Alsa).map_err(|e| format!("ALSA: {e}"))?;
            let id: cpal::DeviceId = format!("alsa:{name}")
                .parse()
                .map_err(|e| format!("ALSA device {name:?}: {e}"))?;
            let device = host.device_by_id(&id).ok_or_else(|| {
                format!(
                    "ALSA capture device {name:?} not found (input devices: {})",
                    input_names(&host)
                )
            })?;
            let ok = |f: SampleFormat| {
                matches!(f, SampleFormat::I16 | SampleFormat::I32 | SampleFormat::F32)
            };
            let ranges: Vec<_> = device
                .supported_input_configs()
                .map_err(|e| format!("ALSA device {name:?}: {e}"))?
                .filter(|r| ok(r.sample_format()))
                .collect();
            let at = |hz: u32| {
                ranges
                    .iter()
                    .filter(|r| r.min_sample_rate() <= hz && hz <= r.max_sample_rate())
                    .min_by_key(|r| (r.channels(), r.sample_format() != SampleFormat::I16))
                    .map(|r| r.with_sample_rate(hz))
            };
            if let Some(hz) = rate {
                let c = at(hz).ok_or_else(|| {
                    let offered: Vec<String> = ranges
                        .iter()
                        .map(|r| format!("{}-{} Hz", r.min_sample_rate(), r.max_sample_rate()))
                        .collect();
                    format!(
                        "ALSA device {name:?} does not capture at speech.capture_rate = {hz} (it offers {})",
                        offered.join(", ")
                    )
                })?;
                return Ok(AlsaInput {
                    name: name.to_string(),
                    device,
                    rate: c.sample_rate(),
                    channels: c.channels(),
                    format: c.sample_format(),
                });
            }
            let chosen = match at(16_000) {
                Some(c) => c,
                None => device
                    .default_input_config()
                    .ok()
                    .filter(|c| ok(c.sample_format()))
                    .ok_or_else(|| {
                        format!("ALSA device {name:?} offers no i16, i32 or f32 capture format")
                    })?,
            };
            // The device's own default rate: the resampler only takes rates
            // within the runtime's limits (a configured rate is checked by
            // the config).
            let rate = chosen.sample_rate();
            if !strix_runtime::limits::sample_rate_ok(rate) {
                return Err(format!(
                    "ALSA device {name:?} captures at {rate} Hz, outside {}..={} Hz",
                    strix_runtime::limits::MIN_SAMPLE_RATE_HZ,
                    strix_runtime::limits::MAX_SAMPLE_RATE_HZ
                ));
            }
            Ok(AlsaInput {
                name: name.to_string(),
                device,
                rate,
                channels: chosen.channels(),
                format: chosen.sample_format(),
            })
        }

        /// Starts capturing. `metrics.audio_overruns` counts lost audio:
        /// ALSA overruns (xruns) reported by cpal, and callback buffers
        /// dropped because the hand-off queue was full. Other stream errors
        /// are logged and counted in `metrics.errors`.
        pub fn start(&self, metrics: Arc<Metrics>) -> Result<Running, String> {
            // Unbounded channel, bounded in samples by `queued`.
            let (tx, rx) = crossbeam_channel::unbounded();
            let queued = Arc::new(AtomicUsize::new(0));
            let config = cpal::StreamConfig {
                channels: self.channels,
                sample_rate: self.rate,
                buffer_size: cpal::BufferSize::Default,
            };
            let name = self.name.clone();
            let m = metrics.clone();
            let on_error = move |e: cpal::Error| {
                if e.kind() == cpal::ErrorKind::Xrun {
                    m.audio_overruns.fetch_add(1, Ordering::Relaxed);
                    crate::log_warn!("strixd: speech: ALSA {name}: overrun (audio lost, counted)");
                } else {
                    m.errors.fetch_add(1, Ordering::Relaxed);
                    crate::log_error!("strixd: speech: ALSA {name}: {e}");
                }
            };
            let gate = (queued.clone(), QUEUE_SECONDS * self.rate as usize);
            let stream = match self.format {
                SampleFormat::I16 => self.build::<i16>(&config, tx, gate, metrics, on_error),
                SampleFormat::I32 => self.build::<i32>(&config, tx, gate, metrics, on_error),
                _ => self.build::<f32>(&config, tx, gate, metrics, on_error),
            }
            .map_err(|e| format!("ALSA device {:?}: {e}", self.name))?;
            stream
                .play()
                .map_err(|e| format!("ALSA device {:?}: {e}", self.name))?;
            Ok(Running {
                rx,
                queued,
                _stream: stream,
            })
        }

        fn build<T>(
            &self,
            config: &cpal::StreamConfig,
            tx: Sender<Vec<f32>>,
            (queued, cap): (Arc<AtomicUsize>, usize),
            metrics: Arc<Metrics>,
            on_error: impl FnMut(cpal::Error) + Send + 'static,
        ) -> Result<cpal::Stream, cpal::Error>
        where
            T: SizedSample + Send + 'static,
            f32: cpal::FromSample<T>,
        {
            let ch = usize::from(self.channels.max(1));
            let inv = 1.0 / ch as f32;
            self.device.build_input_stream::<T, _, _>(
                *config,
                move |data: &[T], _| {
                    let mono: Vec<f32> = data
                        .chunks_exact(ch)
                        .map(|f| {
                            f.iter()
                                .map(|&s| cpal::Sample::to_sample::<f32>(s))
                                .sum::<f32>()
                                * inv
                        })
                        .collect();
                    // The audio callback must not block: a full queue means
                    // analysis is far behind; drop and count.
                    let n = mono.len();
                    if queued.load(Ordering::Relaxed) + n > cap {
                        metrics.audio_overruns.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    queued.fetch_add(n, Ordering::Relaxed);
                    if tx.send(mono).is_err() {
                        queued.fetch_sub(n, Ordering::Relaxed);
                    }
                },
                on_error,
                None,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_equals_whole_buffer_resampling() {
        // A chirp plus noise-like content, 1.3 s.
        for (from, to) in [(48_000u32, 16_000u32), (44_100, 16_000), (8_000, 16_000)] {
            let n = (from as f32 * 1.3) as usize;
            let x: Vec<f32> = (0..n)
                .map(|i| {
                    let t = i as f32 / from as f32;
                    0.5 * (2.0 * std::f32::consts::PI * (200.0 + 1500.0 * t) * t).sin()
                        + 0.2 * ((i * 7919 % 101) as f32 / 50.0 - 1.0)
                })
                .collect();
            let whole = strix_runtime::audio::resample(&x, from, to);
            let mut s = StreamResampler::new(from, to);
            let mut out = Vec::new();
            // Uneven pieces, as an audio callback delivers them.
            let mut i = 0;
            for k in 0.. {
                if i >= n {
                    break;
                }
                let len = [37, 480, 1024, 5][k % 4].min(n - i);
                s.push(&x[i..i + len], &mut out);
                i += len;
            }
            assert!(out.len() + s.delay() * to as usize / from as usize + 2 >= whole.len());
            // Away from the end (which the stream has not seen yet), the two agree.
            let cmp = out.len().min(whole.len());
            assert!(
                cmp > whole.len() / 2,
                "{from}->{to}: {cmp} of {}",
                whole.len()
            );
            let max = (0..cmp)
                .map(|j| (out[j] - whole[j]).abs())
                .fold(0.0f32, f32::max);
            assert!(max < 1e-4, "{from}->{to}: max diff {max}");
        }
    }

    #[test]
    fn equal_rates_pass_through() {
        let mut s = StreamResampler::new(16_000, 16_000);
        let mut out = Vec::new();
        s.push(&[0.1, 0.2, 0.3], &mut out);
        assert_eq!(out, [0.1, 0.2, 0.3]);
        assert_eq!(s.delay(), 0);
    }
}

//! The speech pipeline: 16 kHz audio -> voice activity -> keyword spotting
//! on a sliding 1 s window -> voice start/end and keyword events.
//!
//! Threads: capture (WAV file, paced or not) -> analysis (VAD + KWS), joined by
//! a bounded channel whose sender waits when full: audio is never dropped
//! (each wait is counted in `strix_audio_backpressure_total`). The wait ends
//! on a stop request or when the analysis thread is gone (ended or
//! panicked), never blocking capture forever.
//!
//! Voice activity sits behind the [`Vad`] trait: [`SileroVad`] runs the
//! Silero VAD `.strix` (conv front end + LSTM, state carried between frames);
//! [`EnergyVad`] (energy + zero-crossing rate) is the fallback when no VAD
//! model is configured.

use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender, TrySendError};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strix_runtime::audio::{read_wav_mono_16k, KwsMfcc};
use strix_runtime::meta::{AudioFrontend, Decoder, InputSpec};
use strix_runtime::postprocess::{decode, Decoded};
use strix_runtime::{Model, Session};

use crate::alert::{new_event_id, unix_now, Alert, AlertKind, AlertType};
use crate::camera::Ctx;
use crate::config::{ConfigError, SpeechConfig, VadConfig, VadKind};

pub const SAMPLE_RATE: usize = 16_000;
/// Samples per chunk handed from capture to analysis (100 ms).
const CHUNK: usize = 1600;

/// A voice activity detector over fixed-size frames of 16 kHz audio.
pub trait Vad: Send {
    /// Samples per frame.
    fn frame_len(&self) -> usize;
    /// Probability (0..1) that `frame` (exactly `frame_len` samples) is speech.
    fn speech_probability(&mut self, frame: &[f32]) -> f32;
}

/// Energy + zero-crossing VAD: a 10 ms frame is speech when its energy is
/// above `threshold_db` dBFS and its zero-crossing rate at most `max_zcr`
/// (white noise and hiss cross zero at most samples; voiced speech does not).
/// It cannot tell speech from loud low-frequency noise: that is what the
/// Silero model is for.
pub struct EnergyVad {
    threshold_db: f32,
    max_zcr: f32,
}

impl EnergyVad {
    pub fn new(threshold_db: f32, max_zcr: f32) -> Self {
        EnergyVad {
            threshold_db,
            max_zcr,
        }
    }
}

impl Vad for EnergyVad {
    fn frame_len(&self) -> usize {
        160
    }
    fn speech_probability(&mut self, frame: &[f32]) -> f32 {
        if frame.is_empty() {
            return 0.0;
        }
        let energy = frame.iter().map(|x| x * x).sum::<f32>() / frame.len() as f32;
        let db = 10.0 * (energy + 1e-12).log10();
        let crossings = frame
            .windows(2)
            .filter(|w| (w[0] >= 0.0) != (w[1] >= 0.0))
            .count();
        let zcr = crossings as f32 / (frame.len() - 1).max(1) as f32;
        if db > self.threshold_db && zcr <= self.max_zcr {
            1.0
        } else {
            0.0
        }
    }
}

/// Samples of the previous frame the Silero VAD sees before each new frame
/// (64 at 16 kHz: the model's input is `[1, 64 + frame_len]`).
pub const SILERO_CONTEXT: usize = 64;

/// The Silero VAD model (`silero_vad_16k_static.onnx` converted with
/// `strix convert --fp32`): input 0 `[1, 64 + frame_len]` raw samples (the
/// last 64 samples of the previous frame, then the new frame), input 1 the
/// LSTM state; output 0 the speech probability, output 1 the next state.
/// The detector keeps the context and the state between frames, so frames
/// must be consecutive audio of one stream.
pub struct SileroVad<'m> {
    session: Session<'m>,
    /// Context followed by the current frame.
    input: Vec<f32>,
    state: Vec<f32>,
    out: Vec<f32>,
}

impl<'m> SileroVad<'m> {
    /// Checks `model` ([`check_vad`]) and prepares a session with a zero state.
    pub fn new(model: &'m Model) -> Result<Self, String> {
        let (frame, state_len) = check_vad(model)?;
        Ok(SileroVad {
            session: Session::new(model),
            input: vec![0.0; SILERO_CONTEXT + frame],
            state: vec![0.0; state_len],
            out: Vec::with_capacity(state_len.max(1)),
        })
    }

    /// Forgets the stream: zero context and state.
    pub fn reset(&mut self) {
        self.input.fill(0.0);
        self.state.fill(0.0);
    }

    fn step(&mut self, frame: &[f32]) -> Result<f32, String> {
        let n = self.input.len();
        self.input.copy_within(n - SILERO_CONTEXT.., 0);
        self.input[SILERO_CONTEXT..].copy_from_slice(frame);
        let s = &mut self.session;
        s.input_mut(0)
            .map_err(|e| e.to_string())?
            .copy_from_slice(&self.input);
        s.input_mut(1)
            .map_err(|e| e.to_string())?
            .copy_from_slice(&self.state);
        s.run().map_err(|e| e.to_string())?;
        s.output_f32(1, &mut self.out).map_err(|e| e.to_string())?;
        self.state.copy_from_slice(&self.out);
        s.output_f32(0, &mut self.out).map_err(|e| e.to_string())?;
        Ok(self.out[0])
    }
}

impl Vad for SileroVad<'_> {
    fn frame_len(&self) -> usize {
        self.input.len() - SILERO_CONTEXT
    }
    fn speech_probability(&mut self, frame: &[f32]) -> f32 {
        if frame.len() != self.frame_len() {
            return 0.0;
        }
        // A validated model cannot fail to run; if it ever does, the frame is
        // reported as non-speech rather than stopping the pipeline.
        self.step(frame).unwrap_or_else(|e| {
            crate::log_error!("strixd: vad: {e}");
            0.0
        })
    }
}

/// Checks that `model` has the Silero VAD's interface (raw-sample 16 kHz
/// audio metadata; input 0 `[1, 64 + frame]`; input 1 the state, as large as
/// output 1; output 0 one probability) and returns `(frame_len, state_len)`.
pub fn check_vad(model: &Model) -> Result<(usize, usize), String> {
    match model.meta.input {
        InputSpec::Audio {
            frontend: AudioFrontend::RawSamples,
            sample_rate: 16_000,
        } => {}
        ref other => {
            return Err(format!(
                "the VAD model's input spec is {other:?}; expected audio raw_samples at 16 kHz \
                 (convert with models/vad/silero_vad_16k_static.toml)"
            ))
        }
    }
    let g = &model.graph;
    let len = |id: usize| g.tensors[id].len();
    if g.inputs.len() != 2 || g.outputs.len() != 2 {
        return Err(format!(
            "the VAD model has {} inputs and {} outputs; expected 2 and 2 (audio and state)",
            g.inputs.len(),
            g.outputs.len()
        ));
    }
    let x = &g.tensors[g.inputs[0]].shape;
    if x.len() != 2 || x[0] != 1 || x[1] <= SILERO_CONTEXT {
        return Err(format!(
            "the VAD model's audio input is {x:?}; expected [1, {SILERO_CONTEXT} + frame]"
        ));
    }
    let (state_in, state_out) = (len(g.inputs[1]), len(g.outputs[1]));
    if state_in != state_out || state_in == 0 {
        return Err(format!(
            "the VAD model's state input has {state_in} values but its state output {state_out}"
        ));
    }
    if len(g.outputs[0]) != 1 {
        return Err(format!(
            "the VAD model's first output has {} values; expected one probability",
            len(g.outputs[0])
        ));
    }
    Ok((x[1] - SILERO_CONTEXT, state_in))
}

/// Turns per-frame speech probabilities into voice segments: voice starts
/// after `min_speech` consecutive speech frames (at the first of them) and
/// ends after `hangover` consecutive non-speech frames (at the first of them).
pub struct Segmenter {
    min_speech: usize,
    hangover: usize,
    active: bool,
    run: usize,
    run_start: u64,
}

/// A voice boundary, in samples from the start of the stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum VoiceEdge {
    Start(u64),
    End(u64),
}

impl Segmenter {
    pub fn new(min_speech_frames: usize, hangover_frames: usize) -> Self {
        Segmenter {
            min_speech: min_speech_frames.max(1),
            hangover: hangover_frames.max(1),
            active: false,
            run: 0,
            run_start: 0,
        }
    }

    pub fn active(&self) -> bool {
        self.active
    }

    /// One frame starting at sample `at`, with speech probability `p`.
    pub fn push(&mut self, at: u64, p: f32) -> Option<VoiceEdge> {
        let speech = p >= 0.5;
        if speech != self.active {
            if self.run == 0 {
                self.run_start = at;
            }
            self.run += 1;
            let need = if self.active {
                self.hangover
            } else {
                self.min_speech
            };
            if self.run >= need {
                self.active = speech;
                self.run = 0;
                return Some(if speech {
                    VoiceEdge::Start(self.run_start)
                } else {
                    VoiceEdge::End(self.run_start)
                });
            }
        } else {
            self.run = 0;
        }
        None
    }
}

/// Posterior smoothing, peak picking and refractory logic of the keyword
/// spotter. A keyword is armed when its posterior averaged over `smoothing`
/// windows reaches `threshold`; it fires once its raw posterior stops rising
/// (or after [`PEAK_WINDOWS`] more windows), reporting the centre of the
/// window where the raw posterior peaked: that is where the word sits.
pub struct KeywordDecider {
    /// Class indices that make events.
    keywords: Vec<usize>,
    history: VecDeque<(f64, Vec<f32>)>,
    smoothing: usize,
    threshold: f32,
    refractory: f64,
    last_fire: f64,
    /// Armed keyword, windows since arming, and the plateau's first and
    /// last window centres.
    armed: Option<(Spotted, usize, f64, f64)>,
}

/// Windows an armed keyword waits for its raw posterior to fall.
pub const PEAK_WINDOWS: usize = 10;
/// A window within this of the peak posterior belongs to the peak's plateau.
const PLATEAU: f32 = 0.05;

/// A spotted keyword: class, smoothed posterior, and the centre time
/// (stream seconds) of the window where its raw posterior peaked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spotted {
    pub class: usize,
    pub score: f32,
    pub peak: f32,
    pub time: f64,
}

impl KeywordDecider {
    pub fn new(keywords: Vec<usize>, smoothing: usize, threshold: f32, refractory_s: f64) -> Self {
        KeywordDecider {
            keywords,
            history: VecDeque::new(),
            smoothing: smoothing.max(1),
            threshold,
            refractory: refractory_s,
            last_fire: f64::NEG_INFINITY,
            armed: None,
        }
    }

    /// Forgets the smoothing history (when voice is absent); an armed
    /// keyword fires now.
    pub fn reset(&mut self) -> Option<Spotted> {
        self.history.clear();
        self.armed.take().map(|(mut s, _, a, b)| {
            s.time = (a + b) / 2.0;
            self.fire(s)
        })
    }

    fn fire(&mut self, s: Spotted) -> Spotted {
        self.last_fire = s.time;
        self.history.clear();
        s
    }

    /// Adds one window's posteriors (window centre at `centre` seconds).
    pub fn push(&mut self, centre: f64, probs: Vec<f32>) -> Option<Spotted> {
        if let Some((mut s, n, mut first, mut last)) = self.armed.take() {
            let p = probs.get(s.class).copied().unwrap_or(0.0);
            let n = n + 1;
            if p > s.peak + PLATEAU {
                (first, last) = (centre, centre);
            } else if p >= s.peak - PLATEAU {
                last = centre;
            }
            s.peak = s.peak.max(p);
            self.history.push_back((centre, probs));
            while self.history.len() > self.smoothing {
                self.history.pop_front();
            }
            if p < s.peak - PLATEAU || n >= PEAK_WINDOWS {
                s.time = (first + last) / 2.0;
                return Some(self.fire(s));
            }
            self.armed = Some((s, n, first, last));
            return None;
        }
        self.history.push_back((centre, probs));
        while self.history.len() > self.smoothing {
            self.history.pop_front();
        }
        if self.history.len() < self.smoothing || centre - self.last_fire < self.refractory {
            return None;
        }
        let n = self.history.len() as f32;
        let mut best: Option<Spotted> = None;
        for &k in &self.keywords {
            let mean = self
                .history
                .iter()
                .map(|(_, p)| p.get(k).copied().unwrap_or(0.0))
                .sum::<f32>()
                / n;
            if mean >= self.threshold && best.is_none_or(|b| mean > b.score) {
                let (time, peak) = self
                    .history
                    .iter()
                    .map(|(t, p)| (*t, p.get(k).copied().unwrap_or(0.0)))
                    .fold((centre, f32::MIN), |a, b| if b.1 > a.1 { b } else { a });
                best = Some(Spotted {
                    class: k,
                    score: mean,
                    peak,
                    time,
                });
            }
        }
        if let Some(s) = best {
            // Wait for the posterior to fall to find the whole plateau.
            let near = |p: &Vec<f32>| p.get(s.class).copied().unwrap_or(0.0) >= s.peak - PLATEAU;
            let first = self
                .history
                .iter()
                .find(|(_, p)| near(p))
                .map_or(s.time, |(t, _)| *t);
            let last = self
                .history
                .iter()
                .rev()
                .find(|(_, p)| near(p))
                .map_or(s.time, |(t, _)| *t);
            self.armed = Some((s, 0, first, last));
            return None;
        }
        None
    }
}

/// Checks that `model` is a KWS model (audio `kws_mfcc` input, classify
/// decoder, 490 inputs) and returns the keyword class indices for `cfg`.
pub fn check_kws(cfg: &SpeechConfig, model: &Model) -> Result<Vec<usize>, String> {
    match model.meta.input {
        InputSpec::Audio {
            frontend: AudioFrontend::KwsMfcc,
            sample_rate: 16_000,
        } => {}
        ref other => {
            return Err(format!(
                "the speech model's input spec is {other:?}; expected audio kws_mfcc at 16 kHz"
            ))
        }
    }
    if !matches!(model.meta.decoder, Decoder::Classify { .. }) {
        return Err(format!(
            "the speech model's decoder is {:?}; expected classify",
            model.meta.decoder
        ));
    }
    let g = &model.graph;
    let len: usize = g
        .inputs
        .first()
        .map(|&i| g.tensors[i].shape.iter().product())
        .unwrap_or(0);
    if len != KwsMfcc::OUTPUT_LEN {
        return Err(format!(
            "the speech model takes {len} input values; kws_mfcc gives {}",
            KwsMfcc::OUTPUT_LEN
        ));
    }
    let labels = &model.meta.labels;
    if cfg.keywords.is_empty() {
        return Ok(labels
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.starts_with('_'))
            .map(|(i, _)| i)
            .collect());
    }
    cfg.keywords
        .iter()
        .map(|k| {
            labels.iter().position(|l| l == k).ok_or_else(|| {
                ConfigError {
                    key: "speech.keywords".into(),
                    expected: format!("labels of the model {labels:?}"),
                    found: format!("{k:?}"),
                }
                .to_string()
            })
        })
        .collect()
}

/// Reads the WAV source (16 kHz mono); errors name the file.
pub fn load_audio(path: &Path) -> Result<Vec<f32>, String> {
    read_wav_mono_16k(path).map_err(|e| e.to_string())
}

/// Where the speech pipeline's audio comes from.
pub enum AudioInput {
    /// A WAV file, read whole (16 kHz mono).
    File(Vec<f32>),
    /// Live capture from an ALSA device.
    #[cfg(feature = "alsa")]
    Alsa(crate::capture::AlsaInput),
}

impl AudioInput {
    /// What the input is, for `--check`: the WAV file and its length, or
    /// the ALSA device with its rate and channels.
    pub fn describe(&self, source: &Path) -> String {
        match self {
            AudioInput::File(a) => format!(
                "WAV file {} ({:.1} s at 16 kHz mono after conversion)",
                source.display(),
                a.len() as f64 / SAMPLE_RATE as f64
            ),
            #[cfg(feature = "alsa")]
            AudioInput::Alsa(d) => format!(
                "ALSA device {} ({} Hz, {} channel(s))",
                d.name, d.rate, d.channels
            ),
        }
    }
}

/// Opens the configured source: reads a WAV file, or checks an
/// `alsa:<device>` capture device. Errors name the file or device.
pub fn open_input(cfg: &SpeechConfig) -> Result<AudioInput, String> {
    match cfg.alsa_device() {
        None => load_audio(&cfg.source).map(AudioInput::File),
        #[cfg(feature = "alsa")]
        Some(dev) => crate::capture::AlsaInput::open(dev, cfg.capture_rate).map(AudioInput::Alsa),
        #[cfg(not(feature = "alsa"))]
        Some(dev) => Err(format!(
            "{dev:?}: this strixd was built without the `alsa` feature (live capture)"
        )),
    }
}

struct Chunk {
    /// Sample index of the first sample.
    at: u64,
    samples: Vec<f32>,
}

/// Starts the speech threads; they end when the source ends (or on `stop`).
pub fn start(
    cfg: SpeechConfig,
    model: Arc<Model>,
    vad_model: Option<Arc<Model>>,
    keywords: Vec<usize>,
    audio: AudioInput,
    ctx: Ctx,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let (tx, rx) = bounded::<Chunk>(64);
    // The gauge holds the receiver weakly: when the analysis thread ends
    // (or panics) the channel disconnects and capture stops, instead of a
    // metrics closure keeping it alive and capture waiting on it forever.
    let rx = Arc::new(rx);
    {
        let r = Arc::downgrade(&rx);
        ctx.metrics
            .gauge("strix_queue_depth{queue=\"audio\"}", move || {
                r.upgrade().map_or(0.0, |r| r.len() as f64)
            });
    }
    let c1 = (cfg.clone(), ctx.clone());
    let a = std::thread::Builder::new()
        .name("audio".into())
        .spawn(move || match audio {
            AudioInput::File(a) => capture(c1.0, a, tx, c1.1),
            #[cfg(feature = "alsa")]
            AudioInput::Alsa(dev) => capture_alsa(dev, tx, c1.1),
        })?;
    let b = std::thread::Builder::new()
        .name("speech".into())
        .spawn(move || analyse(cfg, &model, vad_model.as_deref(), keywords, &rx, ctx))?;
    Ok(vec![a, b])
}

fn capture(cfg: SpeechConfig, mut audio: Vec<f32>, tx: Sender<Chunk>, ctx: Ctx) {
    let start = Instant::now();
    let mut at = 0u64;
    loop {
        for piece in audio.chunks(CHUNK) {
            if ctx.stop.load(Ordering::Relaxed) {
                return;
            }
            if cfg.realtime {
                let due = start + Duration::from_secs_f64(at as f64 / SAMPLE_RATE as f64);
                if let Some(w) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(w);
                }
            }
            if !hand_off(&tx, &mut at, piece.to_vec(), &ctx) {
                return;
            }
        }
        if !cfg.looping {
            return;
        }
        match load_audio(&cfg.source) {
            Ok(a) => audio = a,
            Err(e) => {
                crate::log_error!("strixd: speech: {e}");
                return;
            }
        }
    }
}

/// Sends one chunk starting at sample `at` to the analysis thread and
/// advances `at`. Never drops audio: when the queue is full it waits, and
/// counts the wait. `false` when the analysis thread is gone or `stop` is
/// set while waiting (the wait checks it every 100 ms, so a stop request is
/// never stuck behind a full queue).
fn hand_off(tx: &Sender<Chunk>, at: &mut u64, samples: Vec<f32>, ctx: &Ctx) -> bool {
    let n = samples.len() as u64;
    let chunk = Chunk { at: *at, samples };
    *at += n;
    ctx.metrics.audio_samples.fetch_add(n, Ordering::Relaxed);
    let mut chunk = match tx.try_send(chunk) {
        Ok(()) => return true,
        Err(TrySendError::Full(c)) => c,
        Err(TrySendError::Disconnected(_)) => return false,
    };
    ctx.metrics.audio_blocked.fetch_add(1, Ordering::Relaxed);
    loop {
        if ctx.stop.load(Ordering::Relaxed) {
            return false;
        }
        match tx.send_timeout(chunk, Duration::from_millis(100)) {
            Ok(()) => return true,
            Err(SendTimeoutError::Timeout(c)) => chunk = c,
            Err(SendTimeoutError::Disconnected(_)) => return false,
        }
    }
}

/// Live capture: device-rate mono buffers from the ALSA callback, resampled
/// to 16 kHz as they come, in chunks of `CHUNK` samples. Runs until `stop`
/// (or the device fails). `stream_time` counts captured samples, so audio
/// lost to an overrun (counted in `strix_audio_overruns_total`) shifts it.
#[cfg(feature = "alsa")]
fn capture_alsa(dev: crate::capture::AlsaInput, tx: Sender<Chunk>, ctx: Ctx) {
    let running = match dev.start(ctx.metrics.clone()) {
        Ok(r) => r,
        Err(e) => {
            crate::log_error!("strixd: speech: {e}");
            ctx.metrics.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    crate::log_info!(
        "strixd: speech: capturing from ALSA {} ({} Hz, {} channel(s){})",
        dev.name,
        dev.rate,
        dev.channels,
        if dev.rate as usize == SAMPLE_RATE {
            ""
        } else {
            ", resampled to 16 kHz"
        }
    );
    let mut rs = crate::capture::StreamResampler::new(dev.rate, SAMPLE_RATE as u32);
    let mut pending: Vec<f32> = Vec::with_capacity(2 * CHUNK);
    let mut at = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) {
        let buf = match running.recv(Duration::from_millis(100)) {
            Ok(b) => b,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                crate::log_error!(
                    "strixd: speech: ALSA {}: the capture stream ended",
                    dev.name
                );
                return;
            }
        };
        rs.push(&buf, &mut pending);
        let whole = pending.len() / CHUNK * CHUNK;
        for piece in pending[..whole].chunks(CHUNK) {
            if !hand_off(&tx, &mut at, piece.to_vec(), &ctx) {
                return;
            }
        }
        pending.drain(..whole);
    }
}

fn analyse(
    cfg: SpeechConfig,
    model: &Model,
    vad_model: Option<&Model>,
    keywords: Vec<usize>,
    rx: &Receiver<Chunk>,
    ctx: Ctx,
) {
    let kind = cfg.vad.effective_kind();
    let VadConfig {
        threshold_db,
        max_zcr,
        min_speech_ms,
        hangover_ms,
        ..
    } = cfg.vad;
    let mut vad: Box<dyn Vad + '_> = match (kind, vad_model) {
        (VadKind::Silero, Some(m)) => match SileroVad::new(m) {
            Ok(v) => Box::new(v),
            Err(e) => {
                // main checked the model before starting; this is a bug.
                crate::log_error!("strixd: vad: {e}");
                ctx.metrics.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        },
        (VadKind::Silero, None) => {
            crate::log_error!(
                "strixd: vad: speech.vad.kind = \"silero\" but no VAD model was loaded"
            );
            ctx.metrics.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        (VadKind::Energy, _) => Box::new(EnergyVad::new(threshold_db, max_zcr)),
    };
    let flen = vad.frame_len();
    let ms_frames = |ms: u32| (ms as usize * SAMPLE_RATE / 1000).div_ceil(flen);
    let mut seg = Segmenter::new(ms_frames(min_speech_ms), ms_frames(hangover_ms));
    let mut decider = KeywordDecider::new(
        keywords,
        cfg.smoothing,
        cfg.threshold,
        cfg.refractory_ms as f64 / 1000.0,
    );
    let mut mfcc = KwsMfcc::new();
    let mut session = Session::new(model);
    let mut features = vec![0.0f32; KwsMfcc::OUTPUT_LEN];
    let mut out = Vec::new();
    let hop = cfg.hop_ms as usize * SAMPLE_RATE / 1000;
    let n_labels = model.meta.labels.len().max(1);
    let out_shape = model
        .graph
        .outputs
        .first()
        .map(|&i| model.graph.tensors[i].shape.clone())
        .unwrap_or_default();
    // The last second of audio, and frames not yet given to the VAD.
    let mut ring: VecDeque<f32> = VecDeque::from(vec![0.0; KwsMfcc::CLIP_SAMPLES]);
    let mut window = vec![0.0f32; KwsMfcc::CLIP_SAMPLES];
    let mut vad_buf: Vec<f32> = Vec::new();
    let mut vad_at = 0u64;
    let mut total = 0u64;
    let mut since_hop = 0usize;
    // KWS runs while voice is active and for one window after it ended.
    let mut kws_until = 0u64;
    let mut voice: Option<(String, f64, f64)> = None; // id, start unix, start stream s
    let secs = |s: u64| s as f64 / SAMPLE_RATE as f64;
    let send = |a: Alert| ctx.alerts.send(a).is_ok();
    let voice_alert = |id: &str, ty: AlertType, start_unix: f64, t: f64| Alert {
        msg_id: String::new(),
        kind_of_message: ty,
        kind: AlertKind::Voice,
        id: id.to_string(),
        device: ctx.device.clone(),
        source: "mic".into(),
        label: "voice".into(),
        score: 1.0,
        top_score: 1.0,
        bbox: None,
        zones: vec![],
        track_id: None,
        snapshot: None,
        start_time: start_unix,
        end_time: if ty == AlertType::End {
            Some(unix_now())
        } else {
            None
        },
        stream_time: t,
    };
    let keyword_alert = |s: Spotted| Alert {
        msg_id: String::new(),
        kind_of_message: AlertType::New,
        kind: AlertKind::Keyword,
        id: new_event_id(),
        device: ctx.device.clone(),
        source: "mic".into(),
        label: model
            .meta
            .labels
            .get(s.class)
            .cloned()
            .unwrap_or_else(|| s.class.to_string()),
        score: s.score,
        top_score: s.peak,
        bbox: None,
        zones: vec![],
        track_id: None,
        snapshot: None,
        start_time: unix_now(),
        end_time: None,
        stream_time: s.time,
    };
    for chunk in rx {
        debug_assert_eq!(chunk.at, total);
        for &s in &chunk.samples {
            ring.pop_front();
            ring.push_back(s);
            vad_buf.push(s);
            total += 1;
            since_hop += 1;
            if vad_buf.len() == flen {
                let t0 = Instant::now();
                let p = vad.speech_probability(&vad_buf);
                ctx.metrics.observe("vad", t0.elapsed());
                match seg.push(vad_at, p) {
                    Some(VoiceEdge::Start(at)) => {
                        let id = new_event_id();
                        let now = unix_now();
                        if !send(voice_alert(&id, AlertType::New, now, secs(at))) {
                            return;
                        }
                        voice = Some((id, now, secs(at)));
                    }
                    Some(VoiceEdge::End(at)) => {
                        if let Some((id, start, _)) = voice.take() {
                            if !send(voice_alert(&id, AlertType::End, start, secs(at))) {
                                return;
                            }
                        }
                        kws_until = total + KwsMfcc::CLIP_SAMPLES as u64;
                    }
                    None => {}
                }
                vad_at += flen as u64;
                vad_buf.clear();
            }
            if since_hop >= hop {
                since_hop = 0;
                if !(seg.active() || total < kws_until) {
                    if let Some(sp) = decider.reset() {
                        if !send(keyword_alert(sp)) {
                            return;
                        }
                    }
                    continue;
                }
                let t0 = Instant::now();
                for (w, r) in window.iter_mut().zip(ring.iter()) {
                    *w = *r;
                }
                mfcc.compute(&window, &mut features);
                let probs = match session.input_mut(0) {
                    Ok(inp) => {
                        inp.copy_from_slice(&features);
                        session.run().map_err(|e| e.to_string()).and_then(|_| {
                            session.output_f32(0, &mut out).map_err(|e| e.to_string())?;
                            match decode(
                                &Decoder::Classify { top_k: n_labels },
                                &[(&out, &out_shape)],
                            ) {
                                Ok(Decoded::TopK(top)) => {
                                    let mut p = vec![0.0; n_labels];
                                    for (c, v) in top {
                                        if let Some(slot) = p.get_mut(c) {
                                            *slot = v;
                                        }
                                    }
                                    Ok(p)
                                }
                                Ok(_) => Err("not a classifier output".into()),
                                Err(e) => Err(e.to_string()),
                            }
                        })
                    }
                    Err(e) => Err(e.to_string()),
                };
                ctx.metrics.observe("kws", t0.elapsed());
                ctx.metrics.kws_windows.fetch_add(1, Ordering::Relaxed);
                let probs = match probs {
                    Ok(p) => p,
                    Err(e) => {
                        crate::log_error!("strixd: kws: {e}");
                        ctx.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let centre = secs(total) - 0.5;
                if let Some(s) = decider.push(centre, probs) {
                    let label = model
                        .meta
                        .labels
                        .get(s.class)
                        .cloned()
                        .unwrap_or_else(|| s.class.to_string());
                    let now = unix_now();
                    let a = Alert {
                        msg_id: String::new(),
                        kind_of_message: AlertType::New,
                        kind: AlertKind::Keyword,
                        id: new_event_id(),
                        device: ctx.device.clone(),
                        source: "mic".into(),
                        label,
                        score: s.score,
                        top_score: s.peak,
                        bbox: None,
                        zones: vec![],
                        track_id: None,
                        snapshot: None,
                        start_time: now,
                        end_time: None,
                        stream_time: s.time,
                    };
                    if !send(a) {
                        return;
                    }
                }
            }
        }
    }
    if let Some(sp) = decider.reset() {
        send(keyword_alert(sp));
    }
    if let Some((id, start, _)) = voice.take() {
        send(voice_alert(&id, AlertType::End, start, secs(total)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_vad_and_segmenter() {
        let mut v = EnergyVad::new(-40.0, 0.5);
        let silence = vec![0.0001f32; 160];
        let tone: Vec<f32> = (0..160).map(|i| 0.3 * (i as f32 * 0.1).sin()).collect();
        let hiss: Vec<f32> = (0..160)
            .map(|i| if i % 2 == 0 { 0.3 } else { -0.3 })
            .collect();
        assert_eq!(v.speech_probability(&silence), 0.0);
        assert_eq!(v.speech_probability(&tone), 1.0);
        assert_eq!(v.speech_probability(&hiss), 0.0, "high zero-crossing rate");
        let mut s = Segmenter::new(3, 5);
        let mut edges = vec![];
        let pattern = [0, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0];
        for (i, &p) in pattern.iter().enumerate() {
            if let Some(e) = s.push(i as u64 * 160, p as f32) {
                edges.push(e);
            }
        }
        assert_eq!(edges, [VoiceEdge::Start(3 * 160), VoiceEdge::End(11 * 160)]);
    }

    #[test]
    fn decider_smooths_picks_the_plateau_and_is_refractory() {
        let mut d = KeywordDecider::new(vec![1], 3, 0.6, 1.0);
        let p = |v: f32| vec![1.0 - v, v];
        assert!(d.push(0.0, p(0.9)).is_none(), "needs 3 windows");
        assert!(d.push(0.1, p(0.2)).is_none());
        assert!(d.push(0.2, p(0.5)).is_none(), "mean 0.53");
        assert!(d.push(0.3, p(0.95)).is_none(), "mean 0.55");
        assert!(
            d.push(0.4, p(0.97)).is_none(),
            "armed (mean 0.81), still rising"
        );
        assert!(d.push(0.5, p(0.96)).is_none(), "on the plateau");
        let s = d.push(0.6, p(0.6)).unwrap();
        assert_eq!(s.class, 1);
        assert!(
            (s.time - 0.4).abs() < 1e-9,
            "middle of the plateau 0.3..0.5: {}",
            s.time
        );
        for i in 0..5 {
            assert!(
                d.push(0.7 + i as f64 * 0.1, p(0.99)).is_none(),
                "refractory"
            );
        }
        assert!(d.push(1.5, p(0.99)).is_none(), "armed again");
        assert!(d.reset().is_some(), "reset fires an armed keyword");
    }

    #[test]
    fn hand_off_waits_but_not_past_a_stop_or_a_gone_reader() {
        let (alerts, _keep) = bounded(1);
        let ctx = Ctx {
            device: "d".into(),
            metrics: Arc::new(crate::metrics::Metrics::default()),
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            alerts,
        };
        let (tx, rx) = bounded::<Chunk>(1);
        let mut at = 0;
        assert!(hand_off(&tx, &mut at, vec![0.0; 10], &ctx));
        // The queue is full and nobody reads: a stop request ends the wait.
        let stop = ctx.stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            stop.store(true, Ordering::Relaxed);
        });
        let t0 = Instant::now();
        assert!(!hand_off(&tx, &mut at, vec![0.0; 10], &ctx));
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        t.join().unwrap();
        // So does the reader going away (the analysis thread ended or
        // panicked) while capture waits.
        ctx.stop.store(false, Ordering::Relaxed);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(rx);
        });
        assert!(!hand_off(&tx, &mut at, vec![0.0; 10], &ctx));
        t.join().unwrap();
        assert_eq!(ctx.metrics.audio_blocked.load(Ordering::Relaxed), 2);
        assert_eq!(at, 30);
    }
}

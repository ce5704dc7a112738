//! The daemon's one TOML configuration file: parsing (serde, unknown keys
//! rejected) and validation. Every error names the key and what was expected.
//!
//! The format is documented in `firmware/README.md`. Each numeric key's
//! default, range and meaning are declared once, in [`KEYS`]: the serde
//! defaults and the range checks read them and the README's key table is
//! generated from them (tests check the table and the example's ranges).

use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration error: the dotted key, what was expected, and what was found.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// Dotted key (`camera.motion.threshold`) or `<file>` for file-level errors.
    pub key: String,
    /// What a valid value looks like.
    pub expected: String,
    /// What the file holds (or the parser's message).
    pub found: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "config key `{}`: expected {}, found {}",
            self.key, self.expected, self.found
        )
    }
}

impl std::error::Error for ConfigError {}

fn err(
    key: impl Into<String>,
    expected: impl Into<String>,
    found: impl fmt::Display,
) -> ConfigError {
    ConfigError {
        key: key.into(),
        expected: expected.into(),
        found: found.to_string(),
    }
}

/// A numeric config key, declared once: its default, its accepted range and
/// its meaning. The serde defaults and [`Config::validate`] read these, and
/// the key table in `firmware/README.md` is generated from [`KEYS`] (the test
/// `readme_key_table_is_generated_from_keys` checks it; `STRIX_BLESS=1 cargo
/// test --release -p strix-firmware --lib readme_key_table` rewrites it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeySpec {
    /// Dotted key; `[]` stands for the index of an array entry.
    pub key: &'static str,
    /// The value when the key is absent (`None`: the key has no default).
    pub default: Option<f64>,
    pub min: f64,
    /// `f64::INFINITY`: no upper bound.
    pub max: f64,
    /// An integer key: its range reads `min..=max unit` in errors, a
    /// number key's `a number in min..=max`.
    pub int: bool,
    pub unit: &'static str,
    pub doc: &'static str,
}

impl KeySpec {
    const fn num(key: &'static str, default: f64, min: f64, max: f64, doc: &'static str) -> Self {
        KeySpec {
            key,
            default: Some(default),
            min,
            max,
            int: false,
            unit: "",
            doc,
        }
    }
    const fn int(
        key: &'static str,
        default: Option<f64>,
        (min, max): (f64, f64),
        unit: &'static str,
        doc: &'static str,
    ) -> Self {
        KeySpec {
            key,
            default,
            min,
            max,
            int: true,
            unit,
            doc,
        }
    }

    /// What a valid value looks like (the `expected` of the range error).
    pub fn expected(&self) -> String {
        let unit = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        if !self.int {
            format!("a number in {}..={}", self.min, self.max)
        } else if self.max.is_infinite() {
            format!("at least {}{unit}", self.min)
        } else {
            format!("{}..={}{unit}", self.min, self.max)
        }
    }

    /// `v` against the range, the error naming `self.key`.
    fn check<T: Num>(&self, v: T) -> Result<(), ConfigError> {
        self.check_at(self.key, v)
    }

    /// `v` against the range, the error naming `key` (an indexed key).
    fn check_at<T: Num>(&self, key: &str, v: T) -> Result<(), ConfigError> {
        if v.within(self.min, self.max) {
            Ok(())
        } else {
            Err(err(key, self.expected(), v))
        }
    }

    /// The default as `T`; every spec a serde default reads has one (the
    /// test `every_default_is_in_its_range` checks them all).
    fn default_as<T: Num>(&self) -> T {
        T::from_f64(self.default.unwrap_or(self.min))
    }
}

/// The numeric types of config values.
trait Num: Copy + fmt::Display {
    /// Finite and in `lo..=hi`, compared in the value's own type (an f32
    /// key accepts exactly the f32 values from `lo as f32` to `hi as f32`).
    fn within(self, lo: f64, hi: f64) -> bool;
    fn from_f64(v: f64) -> Self;
}

impl Num for f32 {
    fn within(self, lo: f64, hi: f64) -> bool {
        self.is_finite() && self >= lo as f32 && self <= hi as f32
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

macro_rules! int_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            fn within(self, lo: f64, hi: f64) -> bool {
                let v = self as f64;
                v >= lo && v <= hi
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
        }
    )*};
}
int_num!(u8, u16, u32, u64, usize);

const U: f64 = f64::INFINITY;

pub const CAMERA_FPS: KeySpec = KeySpec::num(
    "camera.fps",
    10.0,
    0.1,
    240.0,
    "frames per second: pacing of file sources, frame clock (stream_time = frame / fps)",
);
pub const CAMERA_THREADS: KeySpec = KeySpec::int(
    "camera.threads",
    Some(1.0),
    (1.0, 8.0),
    "",
    "detector threads (one Session each)",
);
pub const CAMERA_QUEUE: KeySpec = KeySpec::int(
    "camera.queue",
    Some(4.0),
    (1.0, 256.0),
    "",
    "capture queue capacity, frames",
);
pub const MOTION_WIDTH: KeySpec = KeySpec::int(
    "camera.motion.width",
    Some(64.0),
    (8.0, 640.0),
    "pixels",
    "width of the downscaled grey frame compared",
);
pub const MOTION_PIXEL_DELTA: KeySpec = KeySpec::int(
    "camera.motion.pixel_delta",
    Some(25.0),
    (0.0, 255.0),
    "",
    "grey-level change that counts a pixel as changed",
);
pub const MOTION_THRESHOLD: KeySpec = KeySpec::num(
    "camera.motion.threshold",
    0.01,
    0.0,
    1.0,
    "fraction of changed pixels that means motion",
);
pub const MOTION_KEYFRAME: KeySpec = KeySpec::int(
    "camera.motion.keyframe_interval",
    Some(0.0),
    (0.0, U),
    "frames",
    "detect at least every N frames on a still scene (0: never)",
);
pub const MOTION_HOLD: KeySpec = KeySpec::int(
    "camera.motion.hold_frames",
    Some(10.0),
    (0.0, U),
    "frames",
    "keep detecting this many frames after motion stops",
);
pub const TRACKER_IOU: KeySpec = KeySpec::num(
    "camera.tracker.iou",
    0.3,
    0.01,
    1.0,
    "minimum IoU to continue a track",
);
pub const TRACKER_MAX_AGE: KeySpec = KeySpec::int(
    "camera.tracker.max_age",
    Some(5.0),
    (0.0, 10_000.0),
    "frames",
    "inferred frames a track survives unmatched",
);
pub const RULE_MIN_SCORE: KeySpec = KeySpec::num(
    "camera.rules[].min_score",
    0.5,
    0.0,
    1.0,
    "detection score a rule needs",
);
pub const RULE_MIN_FRAMES: KeySpec = KeySpec::int(
    "camera.rules[].min_frames",
    Some(3.0),
    (1.0, 10_000.0),
    "",
    "detections of a track before its event starts",
);
pub const SNAPSHOT_QUALITY: KeySpec = KeySpec::int(
    "camera.snapshots.quality",
    Some(85.0),
    (1.0, 100.0),
    "",
    "JPEG quality of event snapshots",
);
pub const SPEECH_CAPTURE_RATE: KeySpec = KeySpec::int(
    "speech.capture_rate",
    None,
    (8_000.0, 192_000.0),
    "Hz",
    "ALSA only: capture at this rate and resample to 16 kHz (default: 16 kHz when offered, else the device's rate)",
);
pub const SPEECH_HOP: KeySpec = KeySpec::int(
    "speech.hop_ms",
    Some(100.0),
    (10.0, 1000.0),
    "ms",
    "hop of the 1 s sliding window",
);
pub const SPEECH_SMOOTHING: KeySpec = KeySpec::int(
    "speech.smoothing",
    Some(3.0),
    (1.0, 50.0),
    "windows",
    "posteriors averaged before the threshold",
);
pub const SPEECH_THRESHOLD: KeySpec = KeySpec::num(
    "speech.threshold",
    0.6,
    0.0,
    1.0,
    "smoothed posterior that arms a keyword",
);
pub const SPEECH_REFRACTORY: KeySpec = KeySpec::int(
    "speech.refractory_ms",
    Some(1000.0),
    (0.0, 60_000.0),
    "ms",
    "no second event for the same keyword within this time",
);
pub const VAD_THRESHOLD_DB: KeySpec = KeySpec::num(
    "speech.vad.threshold_db",
    -40.0,
    -120.0,
    0.0,
    "energy VAD: frame energy (dBFS) above which a frame may be speech",
);
pub const VAD_MAX_ZCR: KeySpec = KeySpec::num(
    "speech.vad.max_zcr",
    0.5,
    0.0,
    1.0,
    "energy VAD: frames crossing zero more often than this are noise-like",
);
pub const VAD_MIN_SPEECH: KeySpec = KeySpec::int(
    "speech.vad.min_speech_ms",
    Some(60.0),
    (0.0, 10_000.0),
    "ms",
    "voice must last this long before it starts",
);
pub const VAD_HANGOVER: KeySpec = KeySpec::int(
    "speech.vad.hangover_ms",
    Some(200.0),
    (0.0, 10_000.0),
    "ms",
    "silence this long ends voice",
);
pub const OUTBOX_MAX: KeySpec = KeySpec::int(
    "outbox.max_entries",
    Some(10_000.0),
    (1.0, U),
    "",
    "outbox capacity; when full the oldest `update`, else the oldest alert, is evicted",
);
pub const MQTT_PORT: KeySpec = KeySpec::int(
    "mqtt.port",
    Some(1883.0),
    (1.0, 65_535.0),
    "",
    "broker port",
);
pub const MQTT_KEEP_ALIVE: KeySpec = KeySpec::int(
    "mqtt.keep_alive_s",
    Some(15.0),
    (5.0, 3600.0),
    "seconds",
    "MQTT keep-alive",
);
pub const MQTT_INFLIGHT: KeySpec = KeySpec::int(
    "mqtt.inflight",
    Some(32.0),
    (1.0, 1000.0),
    "",
    "QoS 1 alerts in flight",
);
pub const WEBHOOK_TIMEOUT: KeySpec = KeySpec::int(
    "webhook.timeout_s",
    Some(10.0),
    (1.0, 300.0),
    "seconds",
    "connect + answer timeout of one POST",
);
pub const SHUTDOWN_DRAIN: KeySpec = KeySpec::int(
    "shutdown.drain_timeout_s",
    Some(30.0),
    (0.0, U),
    "seconds",
    "after the sources end, wait this long for the outbox to drain",
);

/// Every numeric key, in the order of the README's table.
pub const KEYS: &[KeySpec] = &[
    CAMERA_FPS,
    CAMERA_THREADS,
    CAMERA_QUEUE,
    MOTION_WIDTH,
    MOTION_PIXEL_DELTA,
    MOTION_THRESHOLD,
    MOTION_KEYFRAME,
    MOTION_HOLD,
    TRACKER_IOU,
    TRACKER_MAX_AGE,
    RULE_MIN_SCORE,
    RULE_MIN_FRAMES,
    SNAPSHOT_QUALITY,
    SPEECH_CAPTURE_RATE,
    SPEECH_HOP,
    SPEECH_SMOOTHING,
    SPEECH_THRESHOLD,
    SPEECH_REFRACTORY,
    VAD_THRESHOLD_DB,
    VAD_MAX_ZCR,
    VAD_MIN_SPEECH,
    VAD_HANGOVER,
    OUTBOX_MAX,
    MQTT_PORT,
    MQTT_KEEP_ALIVE,
    MQTT_INFLIGHT,
    WEBHOOK_TIMEOUT,
    SHUTDOWN_DRAIN,
];

/// The README's key table: one row per [`KEYS`] entry.
pub fn keys_markdown() -> String {
    let mut t = String::from("| key | default | range | meaning |\n| --- | --- | --- | --- |\n");
    for k in KEYS {
        let default = k.default.map_or("none".to_string(), |d| d.to_string());
        let unit = if k.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", k.unit)
        };
        let range = if k.max.is_infinite() {
            format!(">= {}{unit}", k.min)
        } else {
            format!("{}..={}{unit}", k.min, k.max)
        };
        t += &format!("| `{}` | {default} | {range} | {} |\n", k.key, k.doc);
    }
    t
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Device name: `[a-z0-9_-]`, 1..=64 characters; used in topics and ids.
    pub device: String,
    /// Optional board: a name (`rpi4`, looked up in the config's folder
    /// `boards/`, `/etc/strix/boards`, `/usr/share/strix/boards`, then among
    /// the built-in boards) or a path to a board file. strixd checks the
    /// binary's architecture, the CPU's kernel paths and the models' memory
    /// against it; GPIO line names come from it.
    #[serde(default)]
    pub board: Option<String>,
    /// Folder of the state files: relative `outbox.path` and
    /// `camera.snapshots.dir` resolve against it (default: the config's
    /// folder; a relative value is itself taken from the config's folder).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Least severe log messages printed: error, warn, info (default), debug.
    #[serde(default)]
    pub log_level: Option<crate::log::Level>,
    /// The config file's folder (absolute when it could be resolved); set by
    /// [`load`], empty after [`parse`].
    #[serde(skip)]
    pub config_dir: PathBuf,
    #[serde(default)]
    pub camera: Option<CameraConfig>,
    #[serde(default)]
    pub speech: Option<SpeechConfig>,
    #[serde(default)]
    pub outbox: OutboxConfig,
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    /// Optional HTTP(S) webhook: every alert is POSTed as JSON.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    #[serde(default)]
    pub stdout: StdoutConfig,
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    #[serde(default)]
    pub gpio: Option<GpioConfig>,
    /// What to do when every file source has ended.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Public key (PEM, from `strix keygen`) that every model must be signed
    /// with (`MODEL.strix.sig`); a signed bundle's `MANIFEST` beside the
    /// config is checked too. Unset: nothing is checked. See `verify.rs`.
    #[serde(default)]
    pub trusted_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Camera name in events (default `camera`).
    #[serde(default = "default_camera_name")]
    pub name: String,
    /// A directory of images, a `.y4m` or `.mjpeg`/`.mjpg` file, any video
    /// file or URL (`rtsp://...`) `ffmpeg` decodes, or `v4l2:/dev/videoN`.
    pub source: PathBuf,
    /// Frames per second: the pacing of file sources (and the frame clock of
    /// image directories).
    #[serde(default = "default_fps")]
    pub fps: f32,
    /// `true`: pace file sources at `fps` like a live camera and drop the
    /// oldest queued frame when inference falls behind. `false`: replay as fast
    /// as the pipeline goes, blocking instead of dropping (offline analysis).
    #[serde(default = "yes")]
    pub realtime: bool,
    /// Start again at the end of the source (soak tests, demos).
    #[serde(default, rename = "loop")]
    pub looping: bool,
    /// The detector `.strix` model (FastestDet or UltraFace metadata).
    pub model: PathBuf,
    /// Detector threads, one `Session` each.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Capacity of the capture queue (frames).
    #[serde(default = "default_queue")]
    pub queue: usize,
    #[serde(default)]
    pub motion: MotionConfig,
    #[serde(default)]
    pub tracker: TrackerConfig,
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    /// Per-label rules; labels without a rule make no events. Default: one
    /// rule for `person`.
    #[serde(default = "default_rules")]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub snapshots: SnapshotConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MotionConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Width of the grey frame compared (height keeps the aspect ratio).
    #[serde(default = "default_motion_width")]
    pub width: usize,
    /// A grey level difference above this counts a pixel as changed (0..255).
    #[serde(default = "default_pixel_delta")]
    pub pixel_delta: u8,
    /// Fraction of changed pixels that means motion (0..1).
    #[serde(default = "default_motion_threshold")]
    pub threshold: f32,
    /// Run the detector at least every N frames even on a still scene (0: never).
    #[serde(default = "default_keyframe")]
    pub keyframe_interval: u32,
    /// Keep running the detector for this many frames after motion stopped
    /// (an object that stops moving is then held by its track).
    #[serde(default = "default_hold")]
    pub hold_frames: u32,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            enabled: true,
            width: default_motion_width(),
            pixel_delta: default_pixel_delta(),
            threshold: default_motion_threshold(),
            keyframe_interval: default_keyframe(),
            hold_frames: default_hold(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrackerConfig {
    /// Minimum IoU to match a detection to a track.
    #[serde(default = "default_iou")]
    pub iou: f32,
    /// Inferred frames a track survives without a match.
    #[serde(default = "default_max_age")]
    pub max_age: u32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            iou: default_iou(),
            max_age: default_max_age(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub name: String,
    /// At least three `[x, y]` points, fractions of the image (0..1).
    pub polygon: Vec<[f32; 2]>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A label of the model (`person`, `car`, `face`, ...).
    pub label: String,
    #[serde(default = "default_min_score")]
    pub min_score: f32,
    /// Detections of a track before its event starts.
    #[serde(default = "default_min_frames")]
    pub min_frames: u32,
    /// Only objects whose box bottom centre lies in one of these zones count
    /// (empty: anywhere).
    #[serde(default)]
    pub zones: Vec<String>,
    /// A GPIO output (name from `gpio.outputs`) held high while such an event lasts.
    #[serde(default)]
    pub gpio: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    #[serde(default = "default_snapshot_dir")]
    pub dir: PathBuf,
    /// JPEG quality 1..=100.
    #[serde(default = "default_quality")]
    pub quality: u8,
    /// Delete snapshots older than this many days (fractions allowed).
    #[serde(default)]
    pub max_age_days: Option<f64>,
    /// Keep the folder's `.jpg` files under this many MB (oldest deleted first).
    #[serde(default)]
    pub max_mb: Option<f64>,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            dir: default_snapshot_dir(),
            quality: default_quality(),
            max_age_days: None,
            max_mb: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpeechConfig {
    /// A WAV file (any rate and channel count; converted to 16 kHz mono), or
    /// `alsa:<device>` for live capture from an ALSA PCM (`alsa:default`,
    /// `alsa:hw:CARD=1,DEV=0`, ...).
    pub source: PathBuf,
    /// ALSA only: capture at this rate (Hz) and resample to 16 kHz. Default:
    /// 16 kHz when the device offers it, else the device's default rate.
    #[serde(default)]
    pub capture_rate: Option<u32>,
    /// `true`: feed audio at real time; `false`: as fast as it is processed.
    #[serde(default)]
    pub realtime: bool,
    #[serde(default, rename = "loop")]
    pub looping: bool,
    /// The keyword-spotting `.strix` model (audio `kws_mfcc` input, classify decoder).
    pub model: PathBuf,
    /// Keywords that make events (labels of the model). Empty: every label
    /// not starting with `_`.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Hop of the 1 s sliding window, ms (10..=1000).
    #[serde(default = "default_hop")]
    pub hop_ms: u32,
    /// Posteriors averaged over this many consecutive windows.
    #[serde(default = "default_smoothing")]
    pub smoothing: usize,
    /// Smoothed posterior needed for a keyword event (0..1).
    #[serde(default = "default_kw_threshold")]
    pub threshold: f32,
    /// No second event for the same keyword within this time, ms.
    #[serde(default = "default_refractory")]
    pub refractory_ms: u32,
    #[serde(default)]
    pub vad: VadConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VadConfig {
    /// Which detector: `"silero"` (the Silero VAD `.strix` named by `model`) or
    /// `"energy"` (frame energy + zero-crossing rate). Default: `"silero"`
    /// when `model` is set, else `"energy"`.
    #[serde(default)]
    pub kind: Option<VadKind>,
    /// The Silero VAD `.strix` (converted with `strix convert
    /// silero_vad_16k_static.onnx --fp32`): raw 16 kHz samples in, speech
    /// probability and LSTM state out.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Energy VAD: frame energy (dBFS) above which a frame may be speech.
    #[serde(default = "default_vad_db")]
    pub threshold_db: f32,
    /// Energy VAD: frames with a zero-crossing rate above this are noise-like, not voice (0..1).
    #[serde(default = "default_vad_zcr")]
    pub max_zcr: f32,
    /// Voice must last this long before `voice` starts, ms.
    #[serde(default = "default_vad_min")]
    pub min_speech_ms: u32,
    /// Silence this long ends `voice`, ms.
    #[serde(default = "default_vad_hang")]
    pub hangover_ms: u32,
}

/// The voice activity detector `[speech.vad] kind` selects.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VadKind {
    Silero,
    Energy,
}

impl SpeechConfig {
    /// The ALSA PCM name when `source` is `alsa:<device>`.
    pub fn alsa_device(&self) -> Option<&str> {
        self.source.to_str()?.strip_prefix("alsa:")
    }
}

impl VadConfig {
    /// The detector in effect: `kind`, else Silero when a model is named.
    pub fn effective_kind(&self) -> VadKind {
        self.kind.unwrap_or(if self.model.is_some() {
            VadKind::Silero
        } else {
            VadKind::Energy
        })
    }
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            kind: None,
            model: None,
            threshold_db: default_vad_db(),
            max_zcr: default_vad_zcr(),
            min_speech_ms: default_vad_min(),
            hangover_ms: default_vad_hang(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// The redb file of undelivered alerts.
    #[serde(default = "default_outbox_path")]
    pub path: PathBuf,
    /// At most this many undelivered alerts; beyond it the oldest `update`
    /// (else the oldest alert) is evicted and counted.
    #[serde(default = "default_outbox_max")]
    pub max_entries: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            path: default_outbox_path(),
            max_entries: default_outbox_max(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub host: String,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// Default `strixd-<device>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// `"3.1.1"` (default) or `"5"`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Connect with TLS (rustls with ring).
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CA certificates trusted for the broker (default: the
    /// system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that require one (with `client_key`).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Topics are `<topic_prefix>/<device>/...`.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    /// Publish Home Assistant discovery messages.
    #[serde(default = "yes")]
    pub discovery: bool,
    #[serde(default = "default_discovery_prefix")]
    pub discovery_prefix: String,
    /// QoS 1 messages in flight at once.
    #[serde(default = "default_window")]
    pub inflight: u16,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host[:port]/path` or `https://...`; each alert is POSTed here
    /// with `Content-Type: application/json`, the same JSON as on MQTT.
    pub url: String,
    /// Extra request headers (e.g. `Authorization`).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Connect-and-response timeout of one POST, seconds (1..=300).
    #[serde(default = "default_webhook_timeout")]
    pub timeout_s: u64,
    /// HTTPS only: PEM CA certificates trusted for the server (default: the
    /// system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The MQTT protocol version spoken to the broker.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum MqttProtocol {
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
}

impl MqttProtocol {
    pub fn name(self) -> &'static str {
        match self {
            MqttProtocol::V311 => "3.1.1",
            MqttProtocol::V5 => "5",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// Print each alert as one JSON line once it is in the outbox. Default:
    /// on when no `[mqtt]` is configured (then printing is the delivery).
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` of the Prometheus text endpoint (`GET /metrics`).
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    /// Output names from the board file's `[gpio.outputs]` to drive.
    pub outputs: Vec<String>,
    /// `cdev` (Linux GPIO character device) or `log` (print only, for tests
    /// and hosts without GPIO).
    #[serde(default = "default_gpio_backend")]
    pub backend: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After every source ended, wait up to this long for the outbox to drain.
    #[serde(default = "default_drain")]
    pub drain_timeout_s: u64,
    /// Keep running (serving metrics, delivering) after the sources ended.
    #[serde(default)]
    pub stay: bool,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout_s: default_drain(),
            stay: false,
        }
    }
}

fn default_camera_name() -> String {
    "camera".into()
}
fn default_fps() -> f32 {
    CAMERA_FPS.default_as()
}
fn yes() -> bool {
    true
}
fn default_threads() -> usize {
    CAMERA_THREADS.default_as()
}
fn default_queue() -> usize {
    CAMERA_QUEUE.default_as()
}
fn default_motion_width() -> usize {
    MOTION_WIDTH.default_as()
}
fn default_pixel_delta() -> u8 {
    MOTION_PIXEL_DELTA.default_as()
}
fn default_motion_threshold() -> f32 {
    MOTION_THRESHOLD.default_as()
}
fn default_keyframe() -> u32 {
    MOTION_KEYFRAME.default_as()
}
fn default_hold() -> u32 {
    MOTION_HOLD.default_as()
}
fn default_iou() -> f32 {
    TRACKER_IOU.default_as()
}
fn default_max_age() -> u32 {
    TRACKER_MAX_AGE.default_as()
}
fn default_rules() -> Vec<RuleConfig> {
    vec![RuleConfig {
        label: "person".into(),
        min_score: default_min_score(),
        min_frames: default_min_frames(),
        zones: vec![],
        gpio: None,
    }]
}
fn default_min_score() -> f32 {
    RULE_MIN_SCORE.default_as()
}
fn default_min_frames() -> u32 {
    RULE_MIN_FRAMES.default_as()
}
fn default_snapshot_dir() -> PathBuf {
    PathBuf::from("snapshots")
}
fn default_quality() -> u8 {
    SNAPSHOT_QUALITY.default_as()
}
fn default_hop() -> u32 {
    SPEECH_HOP.default_as()
}
fn default_smoothing() -> usize {
    SPEECH_SMOOTHING.default_as()
}
fn default_kw_threshold() -> f32 {
    SPEECH_THRESHOLD.default_as()
}
fn default_refractory() -> u32 {
    SPEECH_REFRACTORY.default_as()
}
fn default_vad_db() -> f32 {
    VAD_THRESHOLD_DB.default_as()
}
fn default_vad_zcr() -> f32 {
    VAD_MAX_ZCR.default_as()
}
fn default_vad_min() -> u32 {
    VAD_MIN_SPEECH.default_as()
}
fn default_vad_hang() -> u32 {
    VAD_HANGOVER.default_as()
}
fn default_outbox_path() -> PathBuf {
    PathBuf::from("outbox.redb")
}
fn default_outbox_max() -> u64 {
    OUTBOX_MAX.default_as()
}
fn default_mqtt_port() -> u16 {
    MQTT_PORT.default_as()
}
fn default_prefix() -> String {
    "strix".into()
}
fn default_keep_alive() -> u64 {
    MQTT_KEEP_ALIVE.default_as()
}
fn default_discovery_prefix() -> String {
    "homeassistant".into()
}
fn default_window() -> u16 {
    MQTT_INFLIGHT.default_as()
}
fn default_webhook_timeout() -> u64 {
    WEBHOOK_TIMEOUT.default_as()
}
fn default_gpio_backend() -> String {
    "cdev".into()
}
fn default_drain() -> u64 {
    SHUTDOWN_DRAIN.default_as()
}

/// Reads, parses and validates a config file. Relative paths inside it are
/// resolved against the directory of the file (symlinks to it followed).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(
            "<file>",
            format!("a readable TOML file at {}", path.display()),
            e,
        )
    })?;
    let mut cfg = parse(&text)?;
    // Relative paths follow the file, not a symlink to it: an installed
    // /etc/strix/strixd.toml links into the release that holds its models.
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let base = real
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Absolute paths make event snapshot paths usable by other processes.
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    cfg.config_dir = base.clone();
    cfg.resolve_paths(&base);
    cfg.check_files()?;
    Ok(cfg)
}

/// Parses and validates config text (paths are left as written).
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let cfg: Config = toml::from_str(text).map_err(|e| {
        // toml's message names the unknown or mistyped key and the line.
        let msg = e.message().to_string();
        let key = e
            .span()
            .and_then(|s| text.get(s))
            .map(|s| s.trim().trim_matches('"').to_string())
            .filter(|s| !s.is_empty() && s.len() < 80 && !s.contains('\n'))
            .unwrap_or_else(|| "<file>".into());
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
            .unwrap_or(0);
        err(
            key,
            "valid strixd TOML (see firmware/README.md)",
            format!("{msg} (line {line})"),
        )
    })?;
    cfg.validate()?;
    Ok(cfg)
}

fn check_range(key: &str, v: f32, lo: f32, hi: f32) -> Result<(), ConfigError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(err(key, format!("a number in {lo}..={hi}"), v))
    }
}

fn check_name(key: &str, v: &str) -> Result<(), ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(err(
            key,
            "1 to 64 characters of a-z, 0-9, '_' or '-'",
            format!("{v:?}"),
        ))
    }
}

impl Config {
    /// Checks every value range and cross-reference.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name("device", &self.device)?;
        if self.camera.is_none() && self.speech.is_none() {
            return Err(err(
                "camera / speech",
                "at least one of the [camera] and [speech] sections",
                "neither",
            ));
        }
        let gpio_outputs: BTreeSet<&str> = self
            .gpio
            .iter()
            .flat_map(|g| g.outputs.iter().map(String::as_str))
            .collect();
        if let Some(c) = &self.camera {
            check_name("camera.name", &c.name)?;
            CAMERA_FPS.check(c.fps)?;
            CAMERA_THREADS.check(c.threads)?;
            CAMERA_QUEUE.check(c.queue)?;
            MOTION_WIDTH.check(c.motion.width)?;
            MOTION_PIXEL_DELTA.check(c.motion.pixel_delta)?;
            MOTION_THRESHOLD.check(c.motion.threshold)?;
            MOTION_KEYFRAME.check(c.motion.keyframe_interval)?;
            MOTION_HOLD.check(c.motion.hold_frames)?;
            TRACKER_IOU.check(c.tracker.iou)?;
            TRACKER_MAX_AGE.check(c.tracker.max_age)?;
            let mut zone_names = BTreeSet::new();
            for (i, z) in c.zones.iter().enumerate() {
                check_name(&format!("camera.zones[{i}].name"), &z.name)?;
                if !zone_names.insert(z.name.as_str()) {
                    return Err(err(
                        format!("camera.zones[{i}].name"),
                        "a name not used by another zone",
                        &z.name,
                    ));
                }
                if z.polygon.len() < 3 {
                    return Err(err(
                        format!("camera.zones[{i}].polygon"),
                        "at least 3 [x, y] points",
                        format!("{} points", z.polygon.len()),
                    ));
                }
                for (j, p) in z.polygon.iter().enumerate() {
                    for (k, v) in p.iter().enumerate() {
                        check_range(
                            &format!("camera.zones[{i}].polygon[{j}][{k}]"),
                            *v,
                            0.0,
                            1.0,
                        )?;
                    }
                }
            }
            if c.rules.is_empty() {
                return Err(err(
                    "camera.rules",
                    "at least one [[camera.rules]] entry",
                    "an empty list",
                ));
            }
            for (i, r) in c.rules.iter().enumerate() {
                if r.label.is_empty() {
                    return Err(err(
                        format!("camera.rules[{i}].label"),
                        "a model label such as \"person\"",
                        "\"\"",
                    ));
                }
                RULE_MIN_SCORE.check_at(&format!("camera.rules[{i}].min_score"), r.min_score)?;
                RULE_MIN_FRAMES.check_at(&format!("camera.rules[{i}].min_frames"), r.min_frames)?;
                for z in &r.zones {
                    if !zone_names.contains(z.as_str()) {
                        return Err(err(
                            format!("camera.rules[{i}].zones"),
                            format!("names of [[camera.zones]] ({:?})", zone_names),
                            format!("{z:?}"),
                        ));
                    }
                }
                if let Some(g) = &r.gpio {
                    if !gpio_outputs.contains(g.as_str()) {
                        return Err(err(
                            format!("camera.rules[{i}].gpio"),
                            format!("an output listed in gpio.outputs ({:?})", gpio_outputs),
                            format!("{g:?}"),
                        ));
                    }
                }
            }
            for (key, v) in [
                ("camera.snapshots.max_age_days", c.snapshots.max_age_days),
                ("camera.snapshots.max_mb", c.snapshots.max_mb),
            ] {
                if let Some(v) = v {
                    if !(v.is_finite() && v > 0.0 && v <= 1e6) {
                        return Err(err(key, "a number above 0 (at most 1e6)", v));
                    }
                }
            }
            SNAPSHOT_QUALITY.check(c.snapshots.quality)?;
        }
        if let Some(s) = &self.speech {
            if s.alsa_device().is_some_and(|d| d.trim().is_empty()) {
                return Err(err(
                    "speech.source",
                    "an ALSA PCM name after \"alsa:\" (e.g. \"alsa:default\")",
                    "\"alsa:\"",
                ));
            }
            if let Some(r) = s.capture_rate {
                if s.alsa_device().is_none() {
                    return Err(err(
                        "speech.capture_rate",
                        "an \"alsa:<device>\" source (WAV files keep their own rate)",
                        format!("{:?}", s.source.display().to_string()),
                    ));
                }
                SPEECH_CAPTURE_RATE.check(r)?;
            }
            SPEECH_HOP.check(s.hop_ms)?;
            SPEECH_SMOOTHING.check(s.smoothing)?;
            SPEECH_THRESHOLD.check(s.threshold)?;
            SPEECH_REFRACTORY.check(s.refractory_ms)?;
            if s.vad.effective_kind() == VadKind::Silero && s.vad.model.is_none() {
                return Err(err(
                    "speech.vad.model",
                    "a Silero VAD .strix when speech.vad.kind = \"silero\"",
                    "nothing",
                ));
            }
            VAD_THRESHOLD_DB.check(s.vad.threshold_db)?;
            VAD_MAX_ZCR.check(s.vad.max_zcr)?;
            VAD_MIN_SPEECH.check(s.vad.min_speech_ms)?;
            VAD_HANGOVER.check(s.vad.hangover_ms)?;
        }
        OUTBOX_MAX.check(self.outbox.max_entries)?;
        if let Some(m) = &self.mqtt {
            if m.host.is_empty() {
                return Err(err("mqtt.host", "a host name or address", "\"\""));
            }
            MQTT_PORT.check(m.port)?;
            match (&m.client_cert, &m.client_key) {
                (Some(_), None) => {
                    return Err(err(
                        "mqtt.client_key",
                        "the private key of mqtt.client_cert",
                        "nothing",
                    ))
                }
                (None, Some(_)) => {
                    return Err(err(
                        "mqtt.client_cert",
                        "the certificate of mqtt.client_key",
                        "nothing",
                    ))
                }
                (Some(_), Some(_)) if !m.tls => {
                    return Err(err(
                        "mqtt.tls",
                        "true when a client certificate is set",
                        "false",
                    ))
                }
                _ => {}
            }
            if m.password.is_some() && m.username.is_none() {
                return Err(err(
                    "mqtt.username",
                    "a user name when mqtt.password is set",
                    "nothing",
                ));
            }
            check_topic("mqtt.topic_prefix", &m.topic_prefix)?;
            check_topic("mqtt.discovery_prefix", &m.discovery_prefix)?;
            MQTT_KEEP_ALIVE.check(m.keep_alive_s)?;
            MQTT_INFLIGHT.check(m.inflight)?;
        }
        if let Some(w) = &self.webhook {
            w.endpoint()?;
            for (k, v) in &w.headers {
                if hyper::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                    || hyper::header::HeaderValue::from_str(v).is_err()
                {
                    return Err(err(
                        format!("webhook.headers.{k}"),
                        "an HTTP header name and a visible-ASCII value",
                        format!("{k:?} = {v:?}"),
                    ));
                }
            }
            WEBHOOK_TIMEOUT.check(w.timeout_s)?;
            if w.ca_file.is_some() && !w.endpoint()?.tls {
                return Err(err(
                    "webhook.ca_file",
                    "only with an https:// url",
                    format!("{:?}", w.url),
                ));
            }
        }
        if let Some(m) = &self.metrics {
            if m.listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(err(
                    "metrics.listen",
                    "an address:port such as \"127.0.0.1:9108\"",
                    format!("{:?}", m.listen),
                ));
            }
        }
        if let Some(g) = &self.gpio {
            if g.backend != "cdev" && g.backend != "log" {
                return Err(err(
                    "gpio.backend",
                    "\"cdev\" or \"log\"",
                    format!("{:?}", g.backend),
                ));
            }
            if self.board.is_none() {
                return Err(err(
                    "board",
                    "a board file naming the GPIO lines of gpio.outputs",
                    "nothing",
                ));
            }
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(b) = &mut self.board {
            // A name stays a name (resolved by `board::resolve`); a
            // relative path is taken from the config's folder.
            if !crate::board::is_name(b) && Path::new(b.as_str()).is_relative() {
                *b = base.join(b.as_str()).display().to_string();
            }
        }
        if let Some(d) = &mut self.state_dir {
            fix(d);
        }
        let state = self.state_dir.clone().unwrap_or_else(|| base.to_path_buf());
        let fix_state = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = state.join(&*p);
            }
        };
        if let Some(c) = &mut self.camera {
            let live = crate::camera::source::v4l2_device(&c.source).is_some()
                || crate::camera::source::is_url(&c.source);
            if !live {
                fix(&mut c.source);
            }
            fix(&mut c.model);
            fix_state(&mut c.snapshots.dir);
        }
        if let Some(s) = &mut self.speech {
            if s.alsa_device().is_none() {
                fix(&mut s.source);
            }
            fix(&mut s.model);
            if let Some(v) = &mut s.vad.model {
                fix(v);
            }
        }
        fix_state(&mut self.outbox.path);
        if let Some(m) = &mut self.mqtt {
            for p in [&mut m.ca_file, &mut m.client_cert, &mut m.client_key]
                .into_iter()
                .flatten()
            {
                fix(p);
            }
        }
        if let Some(ca) = self.webhook.as_mut().and_then(|w| w.ca_file.as_mut()) {
            fix(ca);
        }
        if let Some(k) = &mut self.trusted_key {
            fix(k);
        }
    }

    /// Reads the TLS files the upstreams will use (paths as resolved by
    /// [`load`]) with the same PEM readers as the connections: each must be
    /// a readable regular file holding what its key names, so a wrong file
    /// is a config error at start, not a connection retried forever. Every
    /// file that is set is checked, whether or not `mqtt.tls` is on.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let ca = |key: &str, p: &Path| {
            crate::tls::ca_roots(p)
                .map(|_| ())
                .map_err(|e| err(key, "a readable PEM file of CA certificates", e))
        };
        if let Some(m) = &self.mqtt {
            if let Some(p) = &m.ca_file {
                ca("mqtt.ca_file", p)?;
            }
            if let Some(p) = &m.client_cert {
                crate::tls::cert_chain(p).map_err(|e| {
                    err(
                        "mqtt.client_cert",
                        "a readable PEM file of the client certificate chain",
                        e,
                    )
                })?;
            }
            if let Some(p) = &m.client_key {
                crate::tls::private_key(p).map_err(|e| {
                    err(
                        "mqtt.client_key",
                        "a readable PEM private key (PKCS#8, PKCS#1 or SEC1)",
                        e,
                    )
                })?;
            }
            if let (Some(c), Some(k)) = (&m.client_cert, &m.client_key) {
                crate::tls::check_client_identity(c, k).map_err(|e| {
                    err("mqtt.client_key", "the private key of mqtt.client_cert", e)
                })?;
            }
        }
        if let Some(p) = self.webhook.as_ref().and_then(|w| w.ca_file.as_ref()) {
            ca("webhook.ca_file", p)?;
        }
        Ok(())
    }

    /// Whether some upstream (MQTT or a webhook) delivers the alerts.
    pub fn has_upstream(&self) -> bool {
        self.mqtt.is_some() || self.webhook.is_some()
    }

    /// Whether alerts are printed as JSON lines on stdout.
    pub fn stdout_enabled(&self) -> bool {
        self.stdout.enabled.unwrap_or(!self.has_upstream())
    }
}

/// Where a webhook URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The `Host` header value (`host` or `host:port`, as in the URL).
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

impl WebhookConfig {
    /// Parses `url` (`http://` or `https://`, a host, optional port, path).
    pub fn endpoint(&self) -> Result<Endpoint, ConfigError> {
        let bad = |why: &str| {
            err(
                "webhook.url",
                format!("an http:// or https:// URL with a host ({why})"),
                format!("{:?}", self.url),
            )
        };
        let uri: hyper::Uri = self.url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("scheme")),
        };
        let auth = uri.authority().ok_or_else(|| bad("no host"))?;
        if auth.as_str().contains('@') {
            return Err(bad("user info is not supported; use webhook.headers"));
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Endpoint {
            tls,
            host: host.to_string(),
            port: auth.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: auth.as_str().to_string(),
            path: uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .filter(|p| p.starts_with('/'))
                .unwrap_or_else(|| "/".into()),
        })
    }
}

fn check_topic(key: &str, v: &str) -> Result<(), ConfigError> {
    if v.is_empty() || v.contains(['+', '#', '\0']) || v.starts_with('/') || v.ends_with('/') {
        Err(err(
            key,
            "a topic level without '+', '#' or leading/trailing '/'",
            format!("{v:?}"),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
device = "porch"
[camera]
source = "clip.y4m"
model = "det.strix"
"#;

    #[test]
    fn minimal_parses_with_defaults() {
        let c = parse(MIN).unwrap();
        let cam = c.camera.unwrap();
        assert_eq!(cam.fps, 10.0);
        assert_eq!(cam.rules[0].label, "person");
        assert!(cam.motion.enabled);
        assert!(c.mqtt.is_none());
    }

    #[test]
    fn every_default_is_in_its_range_and_used() {
        for k in KEYS {
            assert!(k.min <= k.max, "{}", k.key);
            if let Some(d) = k.default {
                assert!(d >= k.min && d <= k.max, "{}: default {d}", k.key);
                assert!(!k.int || d.fract() == 0.0, "{}: default {d}", k.key);
            }
        }
        let c = parse(MIN).unwrap();
        let cam = c.camera.unwrap();
        assert_eq!(cam.threads as f64, CAMERA_THREADS.default.unwrap());
        assert_eq!(
            cam.motion.threshold,
            MOTION_THRESHOLD.default.unwrap() as f32
        );
        assert_eq!(cam.tracker.iou, TRACKER_IOU.default.unwrap() as f32);
        assert_eq!(
            cam.rules[0].min_frames as f64,
            RULE_MIN_FRAMES.default.unwrap()
        );
        assert_eq!(c.outbox.max_entries as f64, OUTBOX_MAX.default.unwrap());
    }

    #[test]
    fn range_errors_keep_their_words() {
        let e = parse(&format!("{MIN}threads = 9\n")).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.expected.as_str()),
            ("camera.threads", "1..=8")
        );
        let e = parse(&format!("{MIN}[camera.motion]\nwidth = 4\n")).unwrap_err();
        assert_eq!(e.expected, "8..=640 pixels");
        let e = parse(&format!("{MIN}[camera.tracker]\niou = 0.001\n")).unwrap_err();
        assert_eq!(e.expected, "a number in 0.01..=1");
        // The lower bound is compared in f32: 0.01 itself is accepted.
        parse(&format!("{MIN}[camera.tracker]\niou = 0.01\n")).unwrap();
        let e = parse(&format!(
            "{MIN}[[camera.rules]]\nlabel = \"car\"\nmin_frames = 0\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "camera.rules[0].min_frames");
        assert_eq!(e.expected, "1..=10000");
        let e = parse(&format!("{MIN}[outbox]\nmax_entries = 0\n")).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.expected.as_str()),
            ("outbox.max_entries", "at least 1")
        );
        let e = parse(&format!(
            "{MIN}[speech]\nsource = \"a.wav\"\nmodel = \"k\"\n[speech.vad]\nhangover_ms = 10001\n"
        ))
        .unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.expected.as_str()),
            ("speech.vad.hangover_ms", "0..=10000 ms")
        );
    }

    /// The README between its `config-keys` markers.
    fn readme_table(readme: &str) -> Option<(usize, usize)> {
        const START: &str = "<!-- config-keys:start (generated from config::KEYS) -->\n";
        let a = readme.find(START)? + START.len();
        let b = a + readme[a..].find("<!-- config-keys:end -->")?;
        Some((a, b))
    }

    #[test]
    fn readme_key_table_is_generated_from_keys() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let (a, b) = readme_table(&readme).expect("README.md has no config-keys markers");
        let want = keys_markdown();
        if std::env::var_os("STRIX_BLESS").is_some() {
            let text = format!("{}{want}{}", &readme[..a], &readme[b..]);
            std::fs::write(path, text).unwrap();
            return;
        }
        assert_eq!(
            &readme[a..b],
            want,
            "firmware/README.md's key table is stale: run STRIX_BLESS=1 cargo test --release -p strix-firmware --lib readme_key_table"
        );
    }

    /// The annotated example in the README: every range its comments give for
    /// a key of [`KEYS`] is that key's, and every example value is in range.
    #[test]
    fn readme_example_agrees_with_keys() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("```toml\ndevice = ")
            .expect("the README's example");
        let block = &readme[start..start + readme[start..][3..].find("```").unwrap()];
        let mut section = String::new();
        let mut checked = 0;
        for line in block.lines() {
            let (code, comment) = line.split_once('#').unwrap_or((line, ""));
            let code = code.trim();
            if code.starts_with('[') {
                section = code.trim_matches(|c| c == '[' || c == ']').to_string();
                if section == "camera.rules" {
                    section = "camera.rules[]".into();
                }
                continue;
            }
            let Some((name, value)) = code.split_once('=') else {
                continue;
            };
            let key = format!("{section}.{}", name.trim());
            let Some(k) = KEYS.iter().find(|k| k.key == key) else {
                continue;
            };
            let v: f64 = value
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{key}: {value}"));
            assert!(
                v >= k.min && v <= k.max,
                "README example {key} = {v} out of range"
            );
            let range = comment
                .split_whitespace()
                .map(|w| w.trim_end_matches([':', ',']))
                .find(|w| {
                    w.contains("..") && w.starts_with(|c: char| c.is_ascii_digit() || c == '-')
                });
            if let Some(r) = range {
                let (lo, hi) = r.split_once("..").unwrap();
                let hi = hi.trim_start_matches('=');
                assert_eq!(
                    (lo.parse::<f64>().unwrap(), hi.parse::<f64>().unwrap()),
                    (k.min, k.max),
                    "README example comment of {key}: {r}"
                );
                checked += 1;
            }
        }
        assert!(
            checked >= 15,
            "only {checked} ranges found in the README's example"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse(&format!("{MIN}\nfsp = 3\n")).unwrap_err();
        assert!(e.to_string().contains("fsp"), "{e}");
    }

    #[test]
    fn out_of_range_names_key() {
        let e = parse(&format!("{MIN}\n[camera.motion]\nthreshold = 2.0\n")).unwrap_err();
        assert_eq!(e.key, "camera.motion.threshold");
        assert!(e.expected.contains("0..=1"));
    }

    #[test]
    fn wrong_type_names_key() {
        let e = parse("device = \"a\"\n[camera]\nsource = 3\nmodel = \"m\"\n").unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
    }

    #[test]
    fn rule_zone_must_exist() {
        let t = format!("{MIN}\n[[camera.rules]]\nlabel = \"person\"\nzones = [\"yard\"]\n");
        let e = parse(&t).unwrap_err();
        assert_eq!(e.key, "camera.rules[0].zones");
    }

    #[test]
    fn bad_device_name() {
        let e = parse("device = \"My Porch\"\n[speech]\nsource = \"a.wav\"\nmodel = \"k.strix\"\n")
            .unwrap_err();
        assert_eq!(e.key, "device");
    }

    #[test]
    fn vad_kind_defaults_to_silero_with_a_model_and_needs_one() {
        const SPEECH: &str =
            "device = \"mic\"\n[speech]\nsource = \"a.wav\"\nmodel = \"k.strix\"\n";
        let c = parse(SPEECH).unwrap();
        assert_eq!(c.speech.unwrap().vad.effective_kind(), VadKind::Energy);
        let c = parse(&format!("{SPEECH}[speech.vad]\nmodel = \"vad.strix\"\n")).unwrap();
        assert_eq!(c.speech.unwrap().vad.effective_kind(), VadKind::Silero);
        let c = parse(&format!(
            "{SPEECH}[speech.vad]\nmodel = \"vad.strix\"\nkind = \"energy\"\n"
        ))
        .unwrap();
        assert_eq!(c.speech.unwrap().vad.effective_kind(), VadKind::Energy);
        let e = parse(&format!("{SPEECH}[speech.vad]\nkind = \"silero\"\n")).unwrap_err();
        assert_eq!(e.key, "speech.vad.model");
        let e = parse(&format!("{SPEECH}[speech.vad]\nkind = \"webrtc\"\n")).unwrap_err();
        assert!(e.to_string().contains("webrtc"), "{e}");
    }

    #[test]
    fn capture_rate_only_for_alsa() {
        let s = |src: &str, extra: &str| {
            parse(&format!(
                "device = \"m\"\n[speech]\nsource = \"{src}\"\nmodel = \"k.strix\"\n{extra}\n"
            ))
        };
        let c = s("alsa:hw:CARD=1,DEV=0", "capture_rate = 48000").unwrap();
        let sp = c.speech.unwrap();
        assert_eq!(sp.alsa_device(), Some("hw:CARD=1,DEV=0"));
        assert_eq!(sp.capture_rate, Some(48000));
        assert_eq!(
            s("a.wav", "capture_rate = 48000").unwrap_err().key,
            "speech.capture_rate"
        );
        assert_eq!(
            s("alsa:default", "capture_rate = 100").unwrap_err().key,
            "speech.capture_rate"
        );
        assert_eq!(s("alsa:", "").unwrap_err().key, "speech.source");
    }

    #[test]
    fn needs_a_pipeline() {
        assert_eq!(
            parse("device = \"x\"\n").unwrap_err().key,
            "camera / speech"
        );
    }

    #[test]
    fn webhook_url_and_headers_are_checked() {
        let w = |extra: &str| parse(&format!("{MIN}\n[webhook]\n{extra}\n"));
        let c = w("url = \"http://127.0.0.1:8080/hook?x=1\"").unwrap();
        let e = c.webhook.as_ref().unwrap().endpoint().unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.path.as_str()),
            (false, "127.0.0.1", 8080, "/hook?x=1")
        );
        assert!(!c.stdout_enabled(), "an upstream delivers, stdout is off");
        let e = w("url = \"https://hooks.example\"")
            .unwrap()
            .webhook
            .unwrap()
            .endpoint()
            .unwrap();
        assert_eq!((e.tls, e.port, e.path.as_str()), (true, 443, "/"));
        assert_eq!(w("url = \"ftp://x/y\"").unwrap_err().key, "webhook.url");
        assert_eq!(w("url = \"/just/a/path\"").unwrap_err().key, "webhook.url");
        let e = w("url = \"http://h/\"\nheaders = { \"Bad Name\" = \"v\" }").unwrap_err();
        assert_eq!(e.key, "webhook.headers.Bad Name");
        let e = w("url = \"http://h/\"\ntimeout_s = 0").unwrap_err();
        assert_eq!(e.key, "webhook.timeout_s");
    }

    #[test]
    fn mqtt_protocol_and_tls_keys() {
        let m = |extra: &str| parse(&format!("{MIN}\n[mqtt]\nhost = \"h\"\n{extra}\n"));
        let c = m("").unwrap();
        assert_eq!(c.mqtt.unwrap().protocol, MqttProtocol::V311);
        let c = m("protocol = \"5\"").unwrap();
        assert_eq!(c.mqtt.unwrap().protocol, MqttProtocol::V5);
        let e = m("protocol = \"4\"").unwrap_err();
        assert!(e.to_string().contains("3.1.1"), "{e}");
        // TLS without a CA file trusts the system roots.
        assert!(m("tls = true").is_ok());
        let e = m("tls = true\nclient_cert = \"c.pem\"").unwrap_err();
        assert_eq!(e.key, "mqtt.client_key");
        let e = m("client_cert = \"c.pem\"\nclient_key = \"k.pem\"").unwrap_err();
        assert_eq!(e.key, "mqtt.tls");
    }

    #[test]
    fn state_dir_board_names_and_retention_keys() {
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::canonicalize(dir.path()).unwrap();
        let load_with = |extra: &str, snaps: &str| {
            let p = d.join("strixd.toml");
            std::fs::write(&p, format!("{extra}\n{MIN}[camera.snapshots]\n{snaps}\n")).unwrap();
            load(&p)
        };
        let c = load_with("", "").unwrap();
        assert_eq!(c.outbox.path, d.join("outbox.redb"));
        assert_eq!(c.camera.unwrap().snapshots.dir, d.join("snapshots"));
        assert_eq!(c.config_dir, d);
        let c = load_with("state_dir = \"var\"\nboard = \"rpi4\"", "").unwrap();
        assert_eq!(c.outbox.path, d.join("var/outbox.redb"));
        let cam = c.camera.unwrap();
        assert_eq!(cam.snapshots.dir, d.join("var/snapshots"));
        assert_eq!(
            cam.model,
            d.join("det.strix"),
            "models stay config-relative"
        );
        assert_eq!(c.board.as_deref(), Some("rpi4"), "a name stays a name");
        let c = load_with("state_dir = \"/var/lib/strix\"\nboard = \"b/x.toml\"", "").unwrap();
        assert_eq!(c.outbox.path, Path::new("/var/lib/strix/outbox.redb"));
        assert_eq!(c.board, Some(d.join("b/x.toml").display().to_string()));
        let c = load_with("log_level = \"debug\"", "max_age_days = 0.5\nmax_mb = 20").unwrap();
        assert_eq!(c.log_level, Some(crate::log::Level::Debug));
        let s = c.camera.unwrap().snapshots;
        assert_eq!((s.max_age_days, s.max_mb), (Some(0.5), Some(20.0)));
        let e = load_with("", "max_mb = 0").unwrap_err();
        assert_eq!(e.key, "camera.snapshots.max_mb");
        let e = load_with("", "max_age_days = -1").unwrap_err();
        assert_eq!(e.key, "camera.snapshots.max_age_days");
        let e = load_with("log_level = \"loud\"", "").unwrap_err();
        assert!(e.to_string().contains("loud"), "{e}");
    }

    /// A self-signed test CA certificate (EC P-256, valid to 2126).
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBljCCAT2gAwIBAgIUUsjM9w3k3ai4g6EQeNZOSovDAOgwCgYIKoZIzj0EAwIw\n\
IDEeMBwGA1UEAwwVc3RyaXhkIGNvbmZpZyB0ZXN0IENBMCAXDTI2MTIwNzAxMzcy\n\
NloYDzIxMjYxMTEzMDEzNzI2WjAgMR4wHAYDVQQDDBVzdHJpeGQgY29uZmlnIHRl\n\
c3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATtTw1Awzz3+q7NYTDLikTt\n\
FaI49CmMURJSsLxszoqDOZaTDfeyq8n9CE1UnpHVbi8onuhdnon4gvDqj1Cwyiey\n\
o1MwUTAdBgNVHQ4EFgQUtTla7517IXtqHkj3Erswpr47i8YwHwYDVR0jBBgwFoAU\n\
tTla7517IXtqHkj3Erswpr47i8YwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQD\n\
AgNHADBEAiBnCGlgy2FaPM0G6TWB19treCG8mSb6WSUOEtcMY7gDyQIgVIUaiC/3\n\
oNy/J3m5tcw0mhs5OiasVeNXtM9MXKQweiM=\n\
-----END CERTIFICATE-----\n";

    #[test]
    fn tls_files_are_read_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("ca.pem"), TEST_CA).unwrap();
        std::fs::write(d.join("notes.txt"), "not a certificate\n").unwrap();
        // A PEM block that decodes, but not to a certificate.
        std::fs::write(
            d.join("junk.pem"),
            "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::create_dir(d.join("certs")).unwrap();
        let fifo = std::ffi::CString::new(d.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let load_with = |section: &str| {
            let p = d.join("strixd.toml");
            std::fs::write(&p, format!("{MIN}\n{section}\n")).unwrap();
            load(&p)
        };
        let mqtt = |extra: &str| load_with(&format!("[mqtt]\nhost = \"h\"\ntls = true\n{extra}"));
        mqtt("ca_file = \"ca.pem\"").unwrap();
        for (file, why) in [
            ("missing.pem", "No such file"),
            ("notes.txt", "no PEM certificates"),
            ("junk.pem", "junk.pem"),
            ("certs", "not a regular file"),
            ("fifo", "not a regular file"),
        ] {
            let e = mqtt(&format!("ca_file = \"{file}\"")).unwrap_err();
            assert_eq!(e.key, "mqtt.ca_file", "{e}");
            assert!(e.found.contains(&d.join(file).display().to_string()), "{e}");
            assert!(e.found.contains(why), "{file}: {e}");
        }
        // Checked even while TLS is off: the key is set, so it must be right.
        let e = load_with("[mqtt]\nhost = \"h\"\nca_file = \"notes.txt\"").unwrap_err();
        assert_eq!(e.key, "mqtt.ca_file");
        let e = mqtt("client_cert = \"notes.txt\"\nclient_key = \"ca.pem\"").unwrap_err();
        assert_eq!(e.key, "mqtt.client_cert", "{e}");
        let e = mqtt("client_cert = \"ca.pem\"\nclient_key = \"ca.pem\"").unwrap_err();
        assert_eq!(e.key, "mqtt.client_key", "{e}");
        assert!(e.found.contains("no PEM private key"), "{e}");
        let e =
            load_with("[webhook]\nurl = \"https://h/\"\nca_file = \"missing.pem\"").unwrap_err();
        assert_eq!(e.key, "webhook.ca_file", "{e}");
        load_with("[webhook]\nurl = \"https://h/\"\nca_file = \"ca.pem\"").unwrap();
    }
}

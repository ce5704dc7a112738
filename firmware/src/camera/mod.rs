//! The camera pipeline, as threads joined by bounded crossbeam channels:
//!
//! capture -> motion gate -> detector (N threads, one `Session` each) ->
//! tracker + zones + rules -> alerts.
//!
//! Capture never blocks on inference in real-time mode: when the capture
//! queue is full the oldest frame is dropped and counted.

pub mod motion;
pub mod source;
pub mod tracker;
pub mod v4l2;
pub mod zones;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strix_runtime::meta::{Decoder, Detection, InputSpec};
use strix_runtime::postprocess::{decode, Decoded};
use strix_runtime::preprocess::{image_to_tensor, Frame as PFrame, PixelFormat};
use strix_runtime::{Model, Session};

use crate::alert::{new_event_id, unix_now, Alert, AlertKind, AlertType};
use crate::config::{CameraConfig, ConfigError};
use crate::gpio::Outputs;
use crate::metrics::Metrics;
use source::{Image, Source};
use tracker::{Track, Tracker};
use zones::Zone;

/// One captured frame.
#[derive(Clone)]
pub struct Frame {
    pub seq: u64,
    /// Seconds into the stream (`seq / fps`).
    pub stream_time: f64,
    pub unix_time: f64,
    pub image: Arc<Image>,
}

struct Detected {
    /// Order of the frames sent to the detectors (gap-free).
    iseq: u64,
    frame: Frame,
    dets: Vec<Detection>,
}

/// Checks that `model` is a detector this pipeline can drive; returns its
/// input `(channels, height, width)`.
pub fn check_detector(model: &Model) -> Result<(usize, usize, usize), String> {
    if !matches!(model.meta.input, InputSpec::Image { .. }) {
        return Err("the camera model's metadata has no image input spec (convert it with an image [input] section)".into());
    }
    if !matches!(
        model.meta.decoder,
        Decoder::Fastestdet { .. } | Decoder::Ultraface { .. }
    ) {
        return Err(format!(
            "the camera model's decoder is {:?}; expected fastestdet or ultraface",
            model.meta.decoder
        ));
    }
    let g = &model.graph;
    let shape = g
        .inputs
        .first()
        .map(|&i| g.tensors[i].shape.clone())
        .unwrap_or_default();
    match shape.as_slice() {
        [1, c, h, w] if (*c == 1 || *c == 3) && *h > 0 && *w > 0 => Ok((*c, *h, *w)),
        _ => Err(format!(
            "the camera model's input shape is {shape:?}; expected [1, 1|3, H, W]"
        )),
    }
}

/// Checks rule labels against the model's labels.
pub fn check_rules(cfg: &CameraConfig, model: &Model) -> Result<(), ConfigError> {
    for (i, r) in cfg.rules.iter().enumerate() {
        if !model.meta.labels.iter().any(|l| l == &r.label) {
            let some: Vec<&String> = model.meta.labels.iter().take(12).collect();
            return Err(ConfigError {
                key: format!("camera.rules[{i}].label"),
                expected: format!("a label of the model (e.g. {some:?})"),
                found: format!("{:?}", r.label),
            });
        }
    }
    Ok(())
}

/// Runs the detector model on images.
pub struct Detector<'m> {
    session: Session<'m>,
    chw: (usize, usize, usize),
    outs: Vec<Vec<f32>>,
}

impl<'m> Detector<'m> {
    pub fn new(model: &'m Model) -> Result<Self, String> {
        let chw = check_detector(model)?;
        let n = model.graph.outputs.len();
        Ok(Detector {
            session: Session::new(model),
            chw,
            outs: vec![Vec::new(); n],
        })
    }

    /// Detections in fractions of `img`, after NMS, by descending score.
    pub fn detect(&mut self, img: &Image) -> Result<Vec<Detection>, String> {
        let model = self.session.model();
        let (c, h, w) = self.chw;
        let frame = PFrame::new(&img.rgb, img.width, img.height, PixelFormat::Rgb8);
        let input = self.session.input_mut(0).map_err(|e| e.to_string())?;
        let lb = image_to_tensor(&frame, &model.meta.input, c, h, w, input)
            .map_err(|e| e.to_string())?;
        self.session.run().map_err(|e| e.to_string())?;
        for (i, o) in self.outs.iter_mut().enumerate() {
            self.session.output_f32(i, o).map_err(|e| e.to_string())?;
        }
        let g = &model.graph;
        let views: Vec<(&[f32], &[usize])> = self
            .outs
            .iter()
            .zip(&g.outputs)
            .map(|(v, &id)| (v.as_slice(), g.tensors[id].shape.as_slice()))
            .collect();
        match decode(&model.meta.decoder, &views).map_err(|e| e.to_string())? {
            Decoded::Detections(d) => Ok(d.iter().map(|d| lb.to_source(d)).collect()),
            _ => Err("the model's decoder does not produce detections".into()),
        }
    }
}

/// Shared handles the pipeline threads need.
#[derive(Clone)]
pub struct Ctx {
    pub device: String,
    pub metrics: Arc<Metrics>,
    pub stop: Arc<AtomicBool>,
    pub alerts: Sender<Alert>,
}

/// Starts the camera threads; they end when the source ends (or on `stop`).
pub fn start(
    cfg: CameraConfig,
    model: Arc<Model>,
    source: Box<dyn Source>,
    outputs: Outputs,
    ctx: Ctx,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::new();
    let (ftx, frx) = bounded::<Frame>(cfg.queue);
    let (dtx, drx) = bounded::<(u64, Frame)>(cfg.threads);
    let (ttx, trx) = bounded::<Detected>(cfg.threads * 2);
    let active = Arc::new(AtomicUsize::new(0));
    {
        let (f, d, t) = (frx.clone(), drx.clone(), trx.clone());
        ctx.metrics
            .gauge("strix_queue_depth{queue=\"frames\"}", move || {
                f.len() as f64
            });
        ctx.metrics
            .gauge("strix_queue_depth{queue=\"detect\"}", move || {
                d.len() as f64
            });
        ctx.metrics
            .gauge("strix_queue_depth{queue=\"track\"}", move || t.len() as f64);
        let a = active.clone();
        ctx.metrics.gauge("strix_active_tracks", move || {
            a.load(Ordering::Relaxed) as f64
        });
    }
    {
        let (cfg, ctx, drop_rx) = (cfg.clone(), ctx.clone(), frx.clone());
        handles.push(spawn("capture", move || {
            capture(cfg, source, ftx, drop_rx, ctx)
        })?);
    }
    {
        let (cfg, ctx, active) = (cfg.clone(), ctx.clone(), active.clone());
        handles.push(spawn("motion", move || gate(cfg, frx, dtx, active, ctx))?);
    }
    for i in 0..cfg.threads {
        let (model, rx, tx, ctx) = (model.clone(), drx.clone(), ttx.clone(), ctx.clone());
        handles.push(spawn(&format!("detect{i}"), move || {
            detect_loop(&model, rx, tx, ctx)
        })?);
    }
    drop((drx, ttx));
    let labels = model.meta.labels.clone();
    handles.push(spawn("track", move || {
        track_loop(cfg, labels, trx, active, outputs, ctx)
    })?);
    Ok(handles)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.to_string()).spawn(f)
}

fn capture(
    cfg: CameraConfig,
    mut source: Box<dyn Source>,
    tx: Sender<Frame>,
    oldest: Receiver<Frame>,
    ctx: Ctx,
) {
    let period = Duration::from_secs_f64(1.0 / cfg.fps as f64);
    let start = Instant::now();
    let mut seq = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let img = match source.next_frame() {
            Ok(Some(img)) => img,
            Ok(None) if cfg.looping => match source::open(&cfg.source, cfg.fps) {
                Ok(s) => {
                    source = s;
                    continue;
                }
                Err(e) => {
                    crate::log_warn!("strixd: camera: reopening source: {e}");
                    break;
                }
            },
            Ok(None) => break,
            Err(e) => {
                // A bad image in a directory is skipped; a broken stream
                // yields its error again at once, so stop after logging.
                crate::log_error!("strixd: camera: {e}");
                ctx.metrics.errors.fetch_add(1, Ordering::Relaxed);
                if cfg.source.is_dir() {
                    continue;
                }
                break;
            }
        };
        ctx.metrics.observe("capture", t0.elapsed());
        if cfg.realtime {
            // Pace like a live camera.
            let due = start + period * (seq as u32);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let frame = Frame {
            seq,
            stream_time: seq as f64 / cfg.fps as f64,
            unix_time: unix_now(),
            image: Arc::new(img),
        };
        seq += 1;
        ctx.metrics.frames_captured.fetch_add(1, Ordering::Relaxed);
        if !cfg.realtime {
            if tx.send(frame).is_err() {
                break;
            }
            continue;
        }
        let mut frame = frame;
        loop {
            match tx.try_send(frame) {
                Ok(()) => break,
                Err(TrySendError::Full(f)) => {
                    // Drop the oldest queued frame, never the capture.
                    if oldest.try_recv().is_ok() {
                        ctx.metrics.frames_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    frame = f;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

fn gate(
    cfg: CameraConfig,
    rx: Receiver<Frame>,
    tx: Sender<(u64, Frame)>,
    active: Arc<AtomicUsize>,
    ctx: Ctx,
) {
    let m = &cfg.motion;
    let mut gate = motion::MotionGate::new(m.width, m.pixel_delta, m.threshold);
    let mut since_inference = 0u32;
    let mut since_motion = u32::MAX;
    let mut iseq = 0u64;
    for frame in rx {
        let t0 = Instant::now();
        let moving = gate.is_motion(&frame.image);
        ctx.metrics.observe("motion", t0.elapsed());
        since_motion = if moving {
            0
        } else {
            since_motion.saturating_add(1)
        };
        let keyframe = m.keyframe_interval > 0 && since_inference + 1 >= m.keyframe_interval;
        // `active` is the tracker's feedback, a few frames late; the hold
        // bridges that delay.
        let run = !m.enabled
            || since_motion <= m.hold_frames
            || keyframe
            || active.load(Ordering::Relaxed) > 0;
        if !run {
            since_inference += 1;
            ctx.metrics.frames_still.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        since_inference = 0;
        if tx.send((iseq, frame)).is_err() {
            return;
        }
        iseq += 1;
    }
}

fn detect_loop(model: &Model, rx: Receiver<(u64, Frame)>, tx: Sender<Detected>, ctx: Ctx) {
    let mut det = match Detector::new(model) {
        Ok(d) => d,
        Err(e) => {
            crate::log_error!("strixd: detector: {e}");
            ctx.stop.store(true, Ordering::Relaxed);
            return;
        }
    };
    for (iseq, frame) in rx {
        let t0 = Instant::now();
        let dets = match det.detect(&frame.image) {
            Ok(d) => d,
            Err(e) => {
                crate::log_error!("strixd: detector: frame {}: {e}", frame.seq);
                ctx.metrics.errors.fetch_add(1, Ordering::Relaxed);
                Vec::new()
            }
        };
        ctx.metrics.observe("detect", t0.elapsed());
        ctx.metrics.frames_inferred.fetch_add(1, Ordering::Relaxed);
        if tx.send(Detected { iseq, frame, dets }).is_err() {
            return;
        }
    }
}

/// A track's event while it lasts.
struct Event {
    id: String,
    rule: usize,
    start_time: f64,
    zones: Vec<String>,
    reported_score: f32,
    last_report: f64,
    snapshot: Option<String>,
}

/// Tracker, zones, rules and the event lifecycle (new -> update -> end).
pub struct EventEngine {
    cfg: CameraConfig,
    labels: Vec<String>,
    zones: Vec<Zone>,
    tracker: Tracker,
    events: HashMap<u64, Event>,
    outputs: Outputs,
    device: String,
}

/// Minimum score gain, and stream seconds between, `update` messages.
const UPDATE_SCORE_GAIN: f32 = 0.05;
const UPDATE_MIN_INTERVAL: f64 = 1.0;

impl EventEngine {
    pub fn new(cfg: CameraConfig, labels: Vec<String>, outputs: Outputs, device: String) -> Self {
        let zones = cfg
            .zones
            .iter()
            .map(|z| Zone {
                name: z.name.clone(),
                polygon: z.polygon.clone(),
            })
            .collect();
        let tracker = Tracker::new(cfg.tracker.iou, cfg.tracker.max_age);
        EventEngine {
            cfg,
            labels,
            zones,
            tracker,
            events: HashMap::new(),
            outputs,
            device,
        }
    }

    pub fn active_tracks(&self) -> usize {
        self.tracker.tracks().len()
    }

    fn label(&self, class: u32) -> String {
        self.labels
            .get(class as usize)
            .cloned()
            .unwrap_or_else(|| class.to_string())
    }

    /// Feeds one inferred frame; returns the alerts it causes.
    pub fn process(&mut self, frame: &Frame, dets: &[Detection]) -> Vec<Alert> {
        let mut out = Vec::new();
        let ended = self.tracker.update(dets);
        for t in ended {
            self.end(&t, frame, &mut out);
        }
        let tracks: Vec<Track> = self.tracker.tracks().to_vec();
        for t in tracks.iter().filter(|t| t.matched) {
            let label = self.label(t.class);
            let Some(ri) = self.cfg.rules.iter().position(|r| r.label == label) else {
                continue;
            };
            let rule = &self.cfg.rules[ri];
            let in_zones: Vec<String> = self
                .zones
                .iter()
                .filter(|z| z.contains_det(&t.det))
                .map(|z| z.name.clone())
                .collect();
            let zone_ok = rule.zones.is_empty() || rule.zones.iter().any(|z| in_zones.contains(z));
            match self.events.get_mut(&t.id) {
                None => {
                    if t.det.score >= rule.min_score && t.hits >= rule.min_frames && zone_ok {
                        let id = new_event_id();
                        let snapshot = self.snapshot(&id, frame, t, &tracks);
                        if let Some(g) = &rule.gpio {
                            if let Err(e) = self.outputs.hold(g) {
                                crate::log_error!("strixd: gpio {g}: {e}");
                            }
                        }
                        let ev = Event {
                            id,
                            rule: ri,
                            start_time: frame.unix_time,
                            zones: in_zones,
                            reported_score: t.top_score,
                            last_report: frame.stream_time,
                            snapshot,
                        };
                        out.push(self.alert(&ev, t, frame, AlertType::New));
                        self.events.insert(t.id, ev);
                    }
                }
                Some(ev) => {
                    let mut changed = false;
                    for z in in_zones {
                        if !ev.zones.contains(&z) {
                            ev.zones.push(z);
                            changed = true;
                        }
                    }
                    let better = t.top_score >= ev.reported_score + UPDATE_SCORE_GAIN;
                    if (changed || better)
                        && frame.stream_time - ev.last_report >= UPDATE_MIN_INTERVAL
                    {
                        ev.reported_score = t.top_score;
                        ev.last_report = frame.stream_time;
                        let id = ev.id.clone();
                        if better {
                            let snap = self.snapshot(&id, frame, t, &tracks);
                            if let Some(ev) = self.events.get_mut(&t.id) {
                                ev.snapshot = snap.or(ev.snapshot.take());
                            }
                        }
                        if let Some(ev) = self.events.get(&t.id) {
                            out.push(self.alert(ev, t, frame, AlertType::Update));
                        }
                    }
                }
            }
        }
        out
    }

    /// Ends every event (end of stream).
    pub fn finish(&mut self, frame: &Frame) -> Vec<Alert> {
        let mut out = Vec::new();
        for t in self.tracker.finish() {
            self.end(&t, frame, &mut out);
        }
        self.outputs.all_low();
        out
    }

    fn end(&mut self, t: &Track, frame: &Frame, out: &mut Vec<Alert>) {
        if let Some(ev) = self.events.remove(&t.id) {
            if let Some(g) = &self.cfg.rules[ev.rule].gpio {
                if let Err(e) = self.outputs.release(g) {
                    crate::log_error!("strixd: gpio {g}: {e}");
                }
            }
            let mut a = self.alert(&ev, t, frame, AlertType::End);
            a.end_time = Some(frame.unix_time);
            out.push(a);
        }
    }

    fn alert(&self, ev: &Event, t: &Track, frame: &Frame, ty: AlertType) -> Alert {
        Alert {
            msg_id: String::new(),
            kind_of_message: ty,
            kind: AlertKind::Object,
            id: ev.id.clone(),
            device: self.device.clone(),
            source: self.cfg.name.clone(),
            label: self.label(t.class),
            score: t.det.score,
            top_score: t.top_score,
            bbox: Some([t.det.x0, t.det.y0, t.det.x1, t.det.y1]),
            zones: ev.zones.clone(),
            track_id: Some(t.id),
            snapshot: ev.snapshot.clone(),
            start_time: ev.start_time,
            end_time: None,
            stream_time: frame.stream_time,
        }
    }

    /// Writes `<dir>/<event id>.jpg` with every track's box (thin) and the
    /// event's box (thick); returns its path, or `None` after logging.
    fn snapshot(&self, id: &str, frame: &Frame, t: &Track, all: &[Track]) -> Option<String> {
        let path = self.cfg.snapshots.dir.join(format!("{id}.jpg"));
        let mut img = frame.image.as_ref().clone();
        for o in all.iter().filter(|o| o.matched && o.id != t.id) {
            draw_box(&mut img, &o.det, 1, [255, 210, 0]);
        }
        draw_box(&mut img, &t.det, 3, [255, 0, 0]);
        match write_jpeg(&path, &img, self.cfg.snapshots.quality) {
            Ok(()) => Some(path.display().to_string()),
            Err(e) => {
                crate::log_error!("strixd: snapshot {}: {e}", path.display());
                None
            }
        }
    }
}

/// Draws a rectangle outline `thick` pixels wide (fractions -> pixels, clamped).
pub fn draw_box(img: &mut Image, d: &Detection, thick: usize, rgb: [u8; 3]) {
    let (w, h) = (img.width, img.height);
    if w == 0 || h == 0 {
        return;
    }
    let px = |f: f32, n: usize| ((f.clamp(0.0, 1.0) * (n - 1) as f32).round() as usize).min(n - 1);
    let (x0, x1, y0, y1) = (px(d.x0, w), px(d.x1, w), px(d.y0, h), px(d.y1, h));
    let mut put = |x: usize, y: usize| {
        if x < w && y < h {
            img.rgb[(y * w + x) * 3..][..3].copy_from_slice(&rgb);
        }
    };
    for k in 0..thick {
        for x in x0..=x1 {
            put(x, y0 + k);
            put(x, y1.saturating_sub(k));
        }
        for y in y0..=y1 {
            put(x0 + k, y);
            put(x1.saturating_sub(k), y);
        }
    }
}

/// Writes a JPEG atomically (temporary file, then rename).
pub fn write_jpeg(path: &Path, img: &Image, quality: u8) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let f = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
    let mut w = std::io::BufWriter::new(f);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, quality)
        .encode(
            &img.rgb,
            img.width as u32,
            img.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| e.to_string())?;
    drop(w);
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

fn track_loop(
    cfg: CameraConfig,
    labels: Vec<String>,
    rx: Receiver<Detected>,
    active: Arc<AtomicUsize>,
    outputs: Outputs,
    ctx: Ctx,
) {
    let mut engine = EventEngine::new(cfg, labels, outputs, ctx.device.clone());
    // Detector threads may finish out of order: restore frame order.
    let mut pending: BTreeMap<u64, Detected> = BTreeMap::new();
    let mut next = 0u64;
    let mut last: Option<Frame> = None;
    let send = |alerts: Vec<Alert>| {
        for a in alerts {
            // Blocking: alerts are never dropped.
            if ctx.alerts.send(a).is_err() {
                return false;
            }
        }
        true
    };
    for d in rx {
        pending.insert(d.iseq, d);
        while let Some(d) = pending.remove(&next) {
            next += 1;
            let t0 = Instant::now();
            let alerts = engine.process(&d.frame, &d.dets);
            active.store(engine.active_tracks(), Ordering::Relaxed);
            ctx.metrics.observe("track", t0.elapsed());
            last = Some(d.frame);
            if !send(alerts) {
                return;
            }
        }
    }
    if let Some(f) = last {
        send(engine.finish(&f));
    }
    active.store(0, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RuleConfig, ZoneConfig};

    fn cfg(dir: &Path) -> CameraConfig {
        let mut c = crate::config::parse(&format!(
            "device = \"d\"\n[camera]\nsource = \"s\"\nmodel = \"m\"\n[camera.snapshots]\ndir = \"{}\"\n",
            dir.display()
        ))
        .unwrap()
        .camera
        .unwrap();
        c.tracker.max_age = 1;
        c.zones = vec![ZoneConfig {
            name: "left".into(),
            polygon: vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]],
        }];
        c.rules = vec![RuleConfig {
            label: "person".into(),
            min_score: 0.5,
            min_frames: 2,
            zones: vec!["left".into()],
            gpio: None,
        }];
        c
    }

    fn frame(seq: u64) -> Frame {
        Frame {
            seq,
            stream_time: seq as f64 * 0.1,
            unix_time: 1000.0 + seq as f64,
            image: Arc::new(Image {
                width: 32,
                height: 16,
                rgb: vec![90; 32 * 16 * 3],
            }),
        }
    }

    fn det(x: f32, score: f32) -> Detection {
        Detection {
            x0: x,
            y0: 0.2,
            x1: x + 0.2,
            y1: 0.9,
            score,
            class: 0,
        }
    }

    #[test]
    fn lifecycle_new_update_end_with_snapshot_and_zone_rule() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = EventEngine::new(
            cfg(dir.path()),
            vec!["person".into()],
            Outputs::new(),
            "d".into(),
        );
        // Right half: outside the rule's zone, never an event.
        let mut all = vec![];
        for s in 0..3 {
            all.extend(e.process(&frame(s), &[det(0.1, 0.6), det(0.7, 0.9)]));
        }
        assert_eq!(all.len(), 1, "{all:?}");
        let new = &all[0];
        assert_eq!(new.kind_of_message, AlertType::New);
        assert_eq!(new.zones, ["left"]);
        let snap = new.snapshot.clone().unwrap();
        assert!(image::open(&snap).is_ok());
        // A much better score after >= 1 s of stream time: update.
        let mut more = vec![];
        for s in 3..15 {
            more.extend(e.process(&frame(s), &[det(0.1, 0.8), det(0.7, 0.9)]));
        }
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].kind_of_message, AlertType::Update);
        assert_eq!(more[0].id, new.id);
        // Gone for more than max_age frames: end.
        let mut end = vec![];
        for s in 15..18 {
            end.extend(e.process(&frame(s), &[]));
        }
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].kind_of_message, AlertType::End);
        assert_eq!(end[0].track_id, new.track_id);
        assert!(end[0].end_time.is_some());
    }

    #[test]
    fn draw_box_clamps() {
        let mut img = Image {
            width: 4,
            height: 4,
            rgb: vec![0; 48],
        };
        draw_box(
            &mut img,
            &Detection {
                x0: -1.0,
                y0: 0.0,
                x1: 2.0,
                y1: 1.0,
                score: 1.0,
                class: 0,
            },
            9,
            [255, 0, 0],
        );
        assert_eq!(img.rgb[0], 255);
    }
}

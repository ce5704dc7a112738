//! `strixd`: the Strix board daemon.

use clap::Parser;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strix_firmware::alert::Alert;
use strix_firmware::board::Board;
use strix_firmware::camera::{self, Ctx};
use strix_firmware::config::{self, Config};
use strix_firmware::exit;
use strix_firmware::gpio::{LogPin, Outputs};
use strix_firmware::metrics::{self, Metrics};
use strix_firmware::outbox::{Outbox, Queue};
use strix_firmware::speech;
use strix_firmware::upstream::{Mqtt, Sink};
use strix_firmware::webhook::Webhook;
use strix_runtime::Model;

const LONG_ABOUT: &str = "\
strixd runs the Strix pipelines on a board and sends their alerts upstream.

  camera: frames -> motion gate -> detector (.strix) -> tracker -> zones/rules
          -> events new/update/end with a JPEG snapshot
  speech: 16 kHz audio -> voice activity (Silero VAD .strix, or energy)
          -> keyword spotting (.strix)
          -> voice start/end and keyword events

Every alert is written to a durable outbox (redb) before it is sent, and is
removed only when the MQTT broker acknowledged it (QoS 1) and the webhook
answered 2xx or, without either, once it was printed as a JSON line on
stdout.

Minimal config (all keys: firmware/README.md):

  device = \"porch\"
  [camera]
  source = \"clip.y4m\"          # image dir, .y4m, .mjpeg, any file or URL ffmpeg reads,
                                # or \"v4l2:/dev/video0\"
  model = \"fastestdet.strix\"   # strix convert FastestDet.onnx --calib ... -o ...
  [speech]
  source = \"mic.wav\"            # or \"alsa:default\" (live capture)
  model = \"kws.strix\"
  keywords = [\"yes\", \"stop\"]
  [speech.vad]                  # omit: the energy VAD
  model = \"vad.strix\"          # strix convert silero_vad_16k_static.onnx --fp32 -o ...
  [mqtt]                        # omit both: JSON lines on stdout
  host = \"localhost\"             # protocol = \"5\", tls, username, ...
  [webhook]                     # optional: every alert POSTed as JSON
  url = \"http://hub.local:8080/strix\"

Check a config without running:  strixd --config FILE --check

Exit codes:
  0  finished (sources ended and the outbox drained, or stopped by a signal)
  1  internal error
  2  config error (the message names the key and what was expected)
  3  model error (missing, corrupt, or the wrong kind for its pipeline)
  4  media error (source missing or unreadable)
  5  resource error (outbox file, metrics port, GPIO line)";

#[derive(Parser)]
#[command(name = "strixd", version, about = "The Strix board daemon: camera and speech pipelines, alerts upstream.", long_about = LONG_ABOUT)]
struct Cli {
    /// The daemon's TOML config file.
    #[arg(short, long)]
    config: PathBuf,
    /// Validate the config, board, models and sources, then exit.
    #[arg(long)]
    check: bool,
}

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

fn fail(code: i32, msg: impl std::fmt::Display) -> ! {
    eprintln!("strixd: error: {msg}");
    std::process::exit(code)
}

fn main() {
    let cli = Cli::parse();
    let cfg = config::load(&cli.config).unwrap_or_else(|e| fail(exit::CONFIG, e));
    let code = run(cfg, cli.check);
    std::process::exit(code);
}

/// Loads a model on the kernel path the `STRIX_ISA` environment variable
/// forces (read here: the runtime reads no environment), else the best one.
fn load_model(path: &std::path::Path, what: &str) -> Model {
    let isa = strix_runtime::Isa::forced(
        std::env::var_os("STRIX_ISA")
            .map(|v| v.to_string_lossy().into_owned())
            .as_deref(),
    )
    .unwrap_or_else(|e| fail(exit::CONFIG, format!("STRIX_ISA: {e}")));
    Model::load_with(path, &strix_runtime::LoadOptions { isa })
        .unwrap_or_else(|e| fail(exit::MODEL, format!("{what} model {}: {e}", path.display())))
}

fn run(cfg: Config, check_only: bool) -> i32 {
    let board = cfg
        .board
        .as_ref()
        .map(|p| Board::load(p).unwrap_or_else(|e| fail(exit::CONFIG, e)));
    // Models and sources are all checked before anything starts.
    let camera = cfg.camera.as_ref().map(|c| {
        let model = load_model(&c.model, "camera");
        camera::check_detector(&model)
            .unwrap_or_else(|e| fail(exit::MODEL, format!("{}: {e}", c.model.display())));
        camera::check_rules(c, &model).unwrap_or_else(|e| fail(exit::CONFIG, e));
        let src = camera::source::open(&c.source, c.fps)
            .unwrap_or_else(|e| fail(exit::MEDIA, format!("camera source {e}")));
        (Arc::new(model), src)
    });
    let speech = cfg.speech.as_ref().map(|s| {
        let model = load_model(&s.model, "speech");
        let kws = speech::check_kws(s, &model)
            .unwrap_or_else(|e| fail(exit::MODEL, format!("{}: {e}", s.model.display())));
        let vad = match (s.vad.effective_kind(), &s.vad.model) {
            (config::VadKind::Silero, Some(p)) => {
                let m = load_model(p, "speech.vad");
                speech::check_vad(&m)
                    .unwrap_or_else(|e| fail(exit::MODEL, format!("{}: {e}", p.display())));
                Some(Arc::new(m))
            }
            _ => None,
        };
        let audio = speech::open_input(s)
            .unwrap_or_else(|e| fail(exit::MEDIA, format!("speech source: {e}")));
        (Arc::new(model), vad, kws, audio)
    });
    let mut outputs = Outputs::new();
    if let (Some(g), Some(b)) = (&cfg.gpio, &board) {
        for name in &g.outputs {
            let Some(line) = b.gpio.outputs.get(name) else {
                let have: Vec<&String> = b.gpio.outputs.keys().collect();
                fail(exit::CONFIG, format!("config key `gpio.outputs`: expected outputs of board {} ({have:?}), found {name:?}", b.name));
            };
            let pin: Box<dyn strix_firmware::gpio::DynPin> = match g.backend.as_str() {
                #[cfg(all(feature = "gpio-cdev", target_os = "linux"))]
                "cdev" => Box::new(
                    strix_firmware::gpio::cdev::CdevPin::new(
                        &line.chip,
                        line.line,
                        line.active_low,
                        "strixd",
                    )
                    .unwrap_or_else(|e| fail(exit::RESOURCE, format!("gpio output {name}: {e}"))),
                ),
                "log" => Box::new(LogPin { name: name.clone() }),
                other => fail(
                    exit::CONFIG,
                    format!("config key `gpio.backend`: {other:?} is not available in this build"),
                ),
            };
            outputs
                .add(name, pin)
                .unwrap_or_else(|e| fail(exit::RESOURCE, format!("gpio output {name}: {e}")));
        }
    }
    if check_only {
        println!("strixd: config OK");
        return exit::OK;
    }
    // One outbox queue per sink: MQTT (or stdout without any upstream) and
    // the webhook each remove only what they delivered.
    let mut queues = Vec::new();
    if cfg.mqtt.is_some() || !cfg.has_upstream() {
        queues.push(Queue::Main);
    }
    if cfg.webhook.is_some() {
        queues.push(Queue::Webhook);
    }
    let outbox = Arc::new(
        Outbox::open(&cfg.outbox.path, cfg.outbox.max_entries, &queues)
            .unwrap_or_else(|e| fail(exit::RESOURCE, e)),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let metrics = Arc::new(Metrics::default());
    {
        let (o1, o2) = (outbox.clone(), outbox.clone());
        metrics.gauge("strix_outbox_depth", move || o1.len() as f64);
        metrics.gauge("strix_outbox_evicted_total", move || o2.evicted() as f64);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let upstream_stop = Arc::new(AtomicBool::new(false));
    if let Some(m) = &cfg.metrics {
        match metrics::serve(&m.listen, metrics.clone(), upstream_stop.clone()) {
            Ok(addr) => eprintln!("strixd: metrics on http://{addr}/metrics"),
            Err(e) => fail(exit::RESOURCE, format!("metrics.listen {}: {e}", m.listen)),
        }
    }
    let mqtt_notify = Arc::new(tokio::sync::Notify::new());
    let webhook_notify = Arc::new(tokio::sync::Notify::new());
    let (state_tx, state_rx) = tokio::sync::mpsc::unbounded_channel();
    let sink = Sink {
        outbox: outbox.clone(),
        metrics: metrics.clone(),
        stdout: cfg.stdout_enabled(),
        remove_after_print: !cfg.has_upstream(),
        notify: vec![mqtt_notify.clone(), webhook_notify.clone()],
        states: cfg.mqtt.as_ref().map(|_| state_tx),
    };
    if let Err(e) = sink.flush_leftovers() {
        fail(exit::RESOURCE, format!("outbox: {e}"));
    }
    let mut upstreams = Vec::new();
    if let Some(m) = cfg.mqtt.clone() {
        let mq = Mqtt {
            cfg: m,
            device: cfg.device.clone(),
            board: board
                .as_ref()
                .map(|b| b.name.clone())
                .unwrap_or_else(|| "generic".into()),
            outbox: outbox.clone(),
            metrics: metrics.clone(),
            notify: mqtt_notify,
            states: state_rx,
            stop: upstream_stop.clone(),
        };
        upstreams.push(
            std::thread::Builder::new()
                .name("mqtt".into())
                .spawn(move || mq.run())
                .unwrap_or_else(|e| fail(exit::INTERNAL, e)),
        );
    }
    if let Some(w) = cfg.webhook.clone() {
        let wh = Webhook {
            cfg: w,
            outbox: outbox.clone(),
            metrics: metrics.clone(),
            notify: webhook_notify,
            stop: upstream_stop.clone(),
        };
        upstreams.push(
            std::thread::Builder::new()
                .name("webhook".into())
                .spawn(move || wh.run())
                .unwrap_or_else(|e| fail(exit::INTERNAL, e)),
        );
    }
    let (atx, arx) = crossbeam_channel::bounded::<Alert>(1024);
    let sink_thread = std::thread::Builder::new()
        .name("sink".into())
        .spawn(move || sink.run(arx))
        .unwrap_or_else(|e| fail(exit::INTERNAL, e));
    let ctx = Ctx {
        device: cfg.device.clone(),
        metrics: metrics.clone(),
        stop: stop.clone(),
        alerts: atx,
    };
    let mut pipelines = Vec::new();
    if let (Some(c), Some((model, src))) = (cfg.camera.clone(), camera) {
        if let Some(dir) = Some(&c.snapshots.dir) {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| {
                fail(
                    exit::RESOURCE,
                    format!("camera.snapshots.dir {}: {e}", dir.display()),
                )
            });
        }
        pipelines.extend(
            camera::start(c, model, src, outputs, ctx.clone())
                .unwrap_or_else(|e| fail(exit::INTERNAL, e)),
        );
    }
    if let (Some(s), Some((model, vad, kws, audio))) = (cfg.speech.clone(), speech) {
        pipelines.extend(
            speech::start(s, model, vad, kws, audio, ctx.clone())
                .unwrap_or_else(|e| fail(exit::INTERNAL, e)),
        );
    }
    drop(ctx);
    eprintln!("strixd: {} running", cfg.device);
    // Wait for the sources to end (or a signal).
    while !pipelines.iter().all(|h| h.is_finished()) {
        if SIGNALLED.load(Ordering::Relaxed) {
            stop.store(true, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for h in pipelines {
        let _ = h.join();
    }
    let _ = sink_thread.join();
    if !upstreams.is_empty() {
        // Sources ended: deliver what is left, within the drain timeout.
        let deadline = Instant::now() + Duration::from_secs(cfg.shutdown.drain_timeout_s);
        while !SIGNALLED.load(Ordering::Relaxed)
            && (cfg.shutdown.stay || (!outbox.is_empty() && Instant::now() < deadline))
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        upstream_stop.store(true, Ordering::Relaxed);
        for t in upstreams {
            let _ = t.join();
        }
    }
    upstream_stop.store(true, Ordering::Relaxed);
    if !outbox.is_empty() {
        eprintln!(
            "strixd: {} alert(s) stay in the outbox for the next run",
            outbox.len()
        );
    }
    eprintln!("strixd: done");
    exit::OK
}

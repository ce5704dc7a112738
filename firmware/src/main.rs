//! `strixd`: the Strix board daemon.

use clap::Parser;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
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
  5  resource error (outbox file, metrics port, GPIO line)
  6  a pipeline, delivery or metrics thread panicked (a bug): strixd stops
     so that the service manager restarts it; stored alerts are kept

SIGINT/SIGTERM: strixd stops within 5 s (exit 0), even if a thread is stuck.";

#[derive(Parser)]
#[command(name = "strixd", version, about = "The Strix board daemon: camera and speech pipelines, alerts upstream.", long_about = LONG_ABOUT)]
struct Cli {
    /// The daemon's TOML config file.
    #[arg(short, long)]
    config: PathBuf,
    /// Validate the config, board, models and sources, then exit.
    #[arg(long)]
    check: bool,
    /// Make a pipeline stage panic at its first item, to check exit code 6
    /// and the service manager's restart policy (tests, diagnosis).
    #[arg(long, value_name = "STAGE", hide = true,
          value_parser = clap::builder::PossibleValuesParser::new(metrics::STAGES))]
    panic_in: Option<String>,
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
    for line in strix_firmware::verify::check(&cfg, &cli.config).unwrap_or_else(|e| fail(e.code, e))
    {
        eprintln!("strixd: {line}");
    }
    let code = run(cfg, cli.check, cli.panic_in.as_deref());
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

fn run(cfg: Config, check_only: bool, panic_in: Option<&str>) -> i32 {
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
    // A damaged file can make redb panic inside `open`, which catches it and
    // reports it in `opened()`: silence the default hook's "thread 'main'
    // panicked" meanwhile, which would read like a crash (the pipeline and
    // delivery threads have not started: none of their panics is hidden).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = Outbox::open(&cfg.outbox.path, cfg.outbox.max_entries, &queues);
    std::panic::set_hook(hook);
    let outbox = Arc::new(
        result.unwrap_or_else(|e| fail(exit::RESOURCE, format!("{e} (config key `outbox.path`)"))),
    );
    let opened = outbox.opened();
    let path = cfg.outbox.path.display();
    if opened.repaired {
        eprintln!("strixd: outbox {path}: not closed cleanly last time; repaired");
    }
    if opened.integrity_repaired {
        eprintln!(
            "strixd: warning: outbox {path}: the integrity check found damage and redb repaired \
             it; if it had to roll back to an older commit, the alerts stored last before the \
             damage are lost and the ones delivered last are sent again"
        );
    }
    if let Some((to, why)) = &opened.quarantined {
        eprintln!(
            "strixd: error: outbox {path} was damaged beyond repair ({why}): moved to {} and a \
             new, empty outbox started; the undelivered alerts in the old file will not be sent",
            to.display()
        );
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let metrics = Arc::new(Metrics::default());
    if let Some(stage) = panic_in {
        metrics.inject_panic(stage);
    }
    {
        // Weak: the metrics server may outlive `run`; the outbox must not,
        // so that it is closed cleanly (no repair at the next start).
        let (o1, o2) = (Arc::downgrade(&outbox), Arc::downgrade(&outbox));
        metrics.gauge("strix_outbox_depth", move || {
            o1.upgrade().map_or(0.0, |o| o.len() as f64)
        });
        metrics.gauge("strix_outbox_evicted_total", move || {
            o2.upgrade().map_or(0.0, |o| o.evicted() as f64)
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let upstream_stop = Arc::new(AtomicBool::new(false));
    let metrics_thread = cfg.metrics.as_ref().map(|m| {
        match metrics::serve(&m.listen, metrics.clone(), upstream_stop.clone()) {
            Ok((addr, h)) => {
                eprintln!("strixd: metrics on http://{addr}/metrics");
                h
            }
            Err(e) => fail(exit::RESOURCE, format!("metrics.listen {}: {e}", m.listen)),
        }
    });
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
    let mut threads = Threads::default();
    for h in pipelines {
        threads.add(Role::Pipeline, h);
    }
    threads.add(Role::Sink, sink_thread);
    for h in upstreams {
        threads.add(Role::Upstream, h);
    }
    if let Some(h) = metrics_thread {
        threads.add(Role::Service, h);
    }
    let halt = |threads: &mut Threads, panicked: Vec<String>| -> i32 {
        eprintln!(
            "strixd: error: thread {} panicked (a bug; the message is above): exiting with code {} \
             so that the service manager restarts strixd; stored alerts stay in the outbox",
            panicked.join(", "),
            exit::PANIC
        );
        // Let the other stages stop and the sink store what it was handed,
        // briefly: exiting ends whatever is still stuck.
        stop.store(true, Ordering::Relaxed);
        let _ = threads.wait(Some(Instant::now() + STOP_GRACE), |t| {
            t.running(Role::Pipeline) || t.running(Role::Sink)
        });
        upstream_stop.store(true, Ordering::Relaxed);
        exit::PANIC
    };
    // Wait for the sources to end, a signal, or a panic. After a signal the
    // threads have STOP_GRACE to stop: a thread stuck past it cannot hold
    // strixd (and the service manager) hostage.
    let mut deadline: Option<Instant> = None;
    let signal = |deadline: &mut Option<Instant>| {
        if SIGNALLED.load(Ordering::Relaxed) && deadline.is_none() {
            stop.store(true, Ordering::Relaxed);
            upstream_stop.store(true, Ordering::Relaxed);
            *deadline = Some(Instant::now() + STOP_GRACE);
        }
    };
    let w = threads.wait(None, |t| {
        signal(&mut deadline);
        (t.running(Role::Pipeline) || t.running(Role::Sink))
            && deadline.is_none_or(|d| Instant::now() < d)
    });
    if let Err(p) = w {
        return halt(&mut threads, p);
    }
    if threads.running(Role::Upstream) && !SIGNALLED.load(Ordering::Relaxed) {
        // Sources ended: deliver what is left, within the drain timeout.
        let drain = Instant::now() + Duration::from_secs(cfg.shutdown.drain_timeout_s);
        let w = threads.wait(None, |_| {
            !SIGNALLED.load(Ordering::Relaxed)
                && (cfg.shutdown.stay || (!outbox.is_empty() && Instant::now() < drain))
        });
        if let Err(p) = w {
            return halt(&mut threads, p);
        }
    }
    upstream_stop.store(true, Ordering::Relaxed);
    let end = deadline.unwrap_or_else(|| Instant::now() + STOP_GRACE);
    if let Err(p) = threads.wait(Some(end), |t| {
        t.running(Role::Pipeline) || t.running(Role::Sink) || t.running(Role::Upstream)
    }) {
        return halt(&mut threads, p);
    }
    let stuck = threads.names(&[Role::Pipeline, Role::Sink, Role::Upstream]);
    if !outbox.is_empty() {
        eprintln!(
            "strixd: {} alert(s) stay in the outbox for the next run",
            outbox.len()
        );
    }
    if !stuck.is_empty() {
        // E.g. a detector still working through a long frame queue, or a
        // disk that does not take the sink's writes: what they hold was not
        // stored yet, what is stored is sent at the next start.
        eprintln!(
            "strixd: warning: thread {} had not stopped {STOP_GRACE:?} after the stop request: \
             exiting anyway",
            stuck.join(", ")
        );
    }
    eprintln!("strixd: done");
    exit::OK
}

/// How long strixd waits for its threads to stop after SIGINT/SIGTERM or a
/// panic before it exits anyway. Nothing stored is lost by exiting: the
/// outbox is durable and undelivered alerts are sent at the next start.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What a thread is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A camera or speech stage: ends with its source (or on `stop`).
    Pipeline,
    /// Stores alerts in the outbox: ends when every pipeline has ended.
    Sink,
    /// MQTT or the webhook: ends on `upstream_stop`.
    Upstream,
    /// The metrics server: ends on `upstream_stop`; never waited for.
    Service,
}

/// The threads strixd supervises. Every thread is joined as soon as it
/// ends, so a panic in any of them is seen at once instead of being
/// swallowed (a dead stage would otherwise leave strixd running and
/// producing nothing, or exiting 0).
#[derive(Default)]
struct Threads {
    running: Vec<(Role, JoinHandle<()>)>,
}

impl Threads {
    fn add(&mut self, role: Role, h: JoinHandle<()>) {
        self.running.push((role, h));
    }

    fn running(&self, role: Role) -> bool {
        self.running.iter().any(|(r, _)| *r == role)
    }

    /// Names of the threads of `roles` still running.
    fn names(&self, roles: &[Role]) -> Vec<String> {
        self.running
            .iter()
            .filter(|(r, _)| roles.contains(r))
            .map(|(_, h)| format!("'{}'", h.thread().name().unwrap_or("?")))
            .collect()
    }

    /// Joins the threads that ended; `Err` names those that panicked.
    fn reap(&mut self) -> Result<(), Vec<String>> {
        let mut panicked = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].1.is_finished() {
                let (_, h) = self.running.swap_remove(i);
                let name = format!("'{}'", h.thread().name().unwrap_or("?"));
                if h.join().is_err() {
                    panicked.push(name);
                }
            } else {
                i += 1;
            }
        }
        if panicked.is_empty() {
            Ok(())
        } else {
            Err(panicked)
        }
    }

    /// Reaps every 50 ms while `go_on` holds and `deadline` (if any) is
    /// ahead; `Err` at the first panic.
    fn wait(
        &mut self,
        deadline: Option<Instant>,
        mut go_on: impl FnMut(&Threads) -> bool,
    ) -> Result<(), Vec<String>> {
        loop {
            self.reap()?;
            if !go_on(self) || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

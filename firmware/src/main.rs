//! `strixd`: the Strix board daemon.

use clap::Parser;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strix_firmware::alert::Alert;
use strix_firmware::board::{self, Board, ModelCost};
use strix_firmware::camera::{self, Ctx};
use strix_firmware::config::{self, Config};
use strix_firmware::exit;
use strix_firmware::gpio::{LogPin, Outputs};
use strix_firmware::log::Level;
use strix_firmware::metrics::{self, Metrics};
use strix_firmware::outbox::{Outbox, Queue};
use strix_firmware::snapshots::{self, Retention};
use strix_firmware::speech;
use strix_firmware::upstream::{Mqtt, Sink};
use strix_firmware::webhook::Webhook;
use strix_firmware::{log_debug, log_error, log_info, log_warn};
use strix_runtime::npu::NpuOptions;
use strix_runtime::{Isa, Model, Session};

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
  board = \"rpi4\"                # optional: a board name (config folder's boards/,
                                # /etc/strix/boards, /usr/share/strix/boards, built in)
                                # or a path; its arch, kernel paths and memory budget
                                # are checked at start
  state_dir = \"/var/lib/strix\"  # optional: where a relative outbox / snapshots go
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

Check a config without running, and list what was found (board, kernel
path, models, camera, audio, broker):  strixd --config FILE --check

Logs: stderr, --log-level error|warn|info|debug (or log_level in the config);
under systemd (JOURNAL_STREAM set) lines carry <N> syslog priorities.
HTTP ([metrics] listen): /metrics, /healthz, /snapshot/latest.jpg.

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
    /// Least severe messages logged: error, warn, info, debug (overrides
    /// the config's `log_level`; default info).
    #[arg(long, value_name = "LEVEL",
          value_parser = clap::builder::PossibleValuesParser::new(["error", "warn", "info", "debug"]))]
    log_level: Option<String>,
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
    log_error!("strixd: error: {msg}");
    std::process::exit(code)
}

fn main() {
    let cli = Cli::parse();
    // Before the config is read, so that its errors carry the prefix too.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let cli_level = cli.log_level.as_deref().and_then(Level::from_name);
    strix_firmware::log::init(cli_level.unwrap_or(Level::Info), journal);
    let cfg = config::load(&cli.config).unwrap_or_else(|e| fail(exit::CONFIG, e));
    strix_firmware::log::init(cli_level.or(cfg.log_level).unwrap_or(Level::Info), journal);
    for line in strix_firmware::verify::check(&cfg, &cli.config).unwrap_or_else(|e| fail(e.code, e))
    {
        log_info!("strixd: {line}");
    }
    let code = run(cfg, cli.check, cli.panic_in.as_deref());
    std::process::exit(code);
}

/// The board named by `board = ...` (by name through the installed board
/// folders, or a path), checked against this binary and CPU: its
/// architecture must be this binary's and the CPU must run every kernel
/// path it promises. Returns the board and the kernel path models run on;
/// adds what it found to `report`.
fn board_setup(cfg: &Config, report: &mut Vec<String>) -> Option<(Board, Isa)> {
    let spec = cfg.board.as_ref()?;
    let dirs = board::search_dirs(&cfg.config_dir);
    let b = Board::resolve(spec, &dirs).unwrap_or_else(|e| fail(exit::CONFIG, e));
    let isa = board::check_cpu(&b, std::env::consts::ARCH, Isa::available)
        .unwrap_or_else(|e| fail(exit::CONFIG, format!("config key `board`: {e}")));
    let paths: Vec<&str> = board::kernel_paths(&b).iter().map(|i| i.name()).collect();
    report.push(format!(
        "board {} ({}, {}): {}, kernel paths [{}], memory budget {} MB",
        b.name,
        board::origin(spec, &dirs),
        b.cpu.target,
        if b.description.is_empty() {
            "-"
        } else {
            &b.description
        },
        paths.join(", "),
        b.memory.budget_mb
    ));
    Some((b, isa))
}

/// The kernel path models load on: `STRIX_ISA` (read here: the runtime
/// reads no environment) when set, else the board's best path, else the
/// best this CPU runs. Adds the choice to `report`.
fn choose_isa(board: Option<&(Board, Isa)>, report: &mut Vec<String>) -> Option<Isa> {
    let forced = strix_runtime::Isa::forced(
        std::env::var_os("STRIX_ISA")
            .map(|v| v.to_string_lossy().into_owned())
            .as_deref(),
    )
    .unwrap_or_else(|e| fail(exit::CONFIG, format!("STRIX_ISA: {e}")));
    let cpu: Vec<&str> = Isa::ALL
        .iter()
        .filter(|i| i.available())
        .map(|i| i.name())
        .collect();
    let (isa, why) = match (forced, board) {
        (Some(i), _) => (i, "forced by STRIX_ISA".to_string()),
        (None, Some((b, i))) => (*i, format!("the best of board {}'s paths", b.name)),
        (None, None) => (Isa::detect(), "the best this CPU runs; no board".into()),
    };
    report.push(format!(
        "kernel path {} ({why}; this CPU runs {})",
        isa.name(),
        cpu.join(", ")
    ));
    Some(isa)
}

/// One `--check` line per model, and the board's memory budget check:
/// models whose arenas and weights exceed `[memory] budget_mb` are refused.
fn check_models(board: Option<&(Board, Isa)>, costs: &[ModelCost], report: &mut Vec<String>) {
    for m in costs {
        report.push(format!(
            "model {} {}: {} ops, arena {} B x {} session(s), weights {} B",
            m.role,
            m.path.display(),
            m.ops,
            m.arena,
            m.sessions,
            m.weights
        ));
    }
    let total: usize = costs.iter().map(ModelCost::bytes).sum();
    match board {
        Some((b, _)) => {
            board::check_budget(b, costs).unwrap_or_else(|e| fail(exit::MODEL, e));
            report.push(format!(
                "memory: models {total} B ({:.1} MB) within board {}'s budget of {} MB",
                total as f64 / 1048576.0,
                b.name,
                b.memory.budget_mb
            ));
        }
        None => report.push(format!(
            "memory: models {total} B ({:.1} MB); no board, no budget checked",
            total as f64 / 1048576.0
        )),
    }
}

/// `--check` only: whether the MQTT broker accepts a TCP connection
/// (3 s timeout). Unreachable is a warning, not a failure: alerts wait in
/// the outbox until it is.
fn check_broker(cfg: &Config, report: &mut Vec<String>) {
    let Some(m) = &cfg.mqtt else {
        report.push("broker: none ([mqtt] not configured)".into());
        return;
    };
    use std::net::ToSocketAddrs;
    let addrs = (m.host.as_str(), m.port).to_socket_addrs();
    let r = match addrs {
        Err(e) => Err(format!("cannot resolve {}: {e}", m.host)),
        Ok(addrs) => {
            let mut last = String::from("no address");
            let mut ok = false;
            for a in addrs {
                match std::net::TcpStream::connect_timeout(&a, Duration::from_secs(3)) {
                    Ok(_) => {
                        ok = true;
                        break;
                    }
                    Err(e) => last = format!("{a}: {e}"),
                }
            }
            if ok {
                Ok(())
            } else {
                Err(last)
            }
        }
    };
    match r {
        Ok(()) => report.push(format!("broker {}:{} reachable", m.host, m.port)),
        Err(e) => report.push(format!(
            "warning: broker {}:{} unreachable ({e}); alerts will wait in the outbox",
            m.host, m.port
        )),
    }
}

/// Deletes snapshots over `camera.snapshots.max_age_days` / `max_mb` now
/// and then every minute until `stop`, keeping those the outbox's
/// undelivered alerts name.
fn snapshot_pruner(
    dir: PathBuf,
    r: Retention,
    outbox: std::sync::Weak<Outbox>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    let once = move || {
        let refs = match outbox.upgrade().map(|o| o.snapshot_refs()) {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                // Without the references nothing is safe to delete.
                log_warn!("strixd: snapshots: not pruned: {e}");
                return false;
            }
            None => return false,
        };
        match snapshots::prune(&dir, &r, std::time::SystemTime::now(), &refs) {
            Ok(p) if p.deleted > 0 || p.kept_referenced > 0 => log_info!(
                "strixd: snapshots: deleted {} ({} B), {} kept for undelivered alerts, {} B left in {}",
                p.deleted,
                p.freed,
                p.kept_referenced,
                p.left,
                dir.display()
            ),
            Ok(p) => log_debug!("strixd: snapshots: {} B in {}", p.left, dir.display()),
            Err(e) => log_warn!("strixd: snapshots {}: {e}", dir.display()),
        }
        true
    };
    once();
    std::thread::Builder::new()
        .name("snapshots".into())
        .spawn(move || {
            let mut next = Instant::now() + PRUNE_EVERY;
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    if !once() {
                        return;
                    }
                    next = Instant::now() + PRUNE_EVERY;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
}

const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How models use a Rockchip NPU part: on when the board file lists an NPU
/// (through that board's runtime library), off when it lists none; without
/// a board, tried through `librknnrt.so` (absent: the CPU fallback).
fn npu_options(board: Option<&(Board, Isa)>) -> NpuOptions {
    match board {
        Some((b, _)) => NpuOptions::for_board(&b.name, b.npu.kind == "rknpu2"),
        None => NpuOptions::default(),
    }
}

/// Loads a model on the kernel path `isa` (see [`choose_isa`]), its NPU
/// part (if any) used as `npu` says. A model with an NPU part gets a report
/// line saying where it runs: this opens a session, so the NPU runtime's
/// `rknn_init` has accepted the blob (or the reason it fell back is named).
fn load_model(
    path: &std::path::Path,
    what: &str,
    isa: Option<Isa>,
    npu: &NpuOptions,
    report: &mut Vec<String>,
) -> Model {
    let m = Model::load_with(path, &strix_runtime::LoadOptions { isa, lean: true })
        .unwrap_or_else(|e| fail(exit::MODEL, format!("{what} model {}: {e}", path.display())))
        .with_npu_options(npu.clone());
    if let Some(part) = &m.npu {
        let s = Session::with_threads(&m, 1)
            .unwrap_or_else(|e| fail(exit::MODEL, format!("{what} model {}: {e}", path.display())));
        report.push(format!(
            "{what} model: NPU part for {} (nodes {}..{}): runs on {}",
            part.board,
            part.first_node,
            part.end_node,
            s.backend()
        ));
    }
    m
}

fn run(cfg: Config, check_only: bool, panic_in: Option<&str>) -> i32 {
    let mut report = Vec::new();
    let board_isa = board_setup(&cfg, &mut report);
    let isa = choose_isa(board_isa.as_ref(), &mut report);
    let npu = npu_options(board_isa.as_ref());
    let mut costs = Vec::new();
    // Models and sources are all checked before anything starts.
    let camera = cfg.camera.as_ref().map(|c| {
        let model = load_model(&c.model, "camera", isa, &npu, &mut report);
        costs.push(ModelCost::of("camera", &c.model, &model, c.threads));
        camera::check_detector(&model)
            .unwrap_or_else(|e| fail(exit::MODEL, format!("{}: {e}", c.model.display())));
        camera::check_rules(c, &model).unwrap_or_else(|e| fail(exit::CONFIG, e));
        let src = camera::source::open(&c.source, c.fps)
            .unwrap_or_else(|e| fail(exit::MEDIA, format!("camera source {e}")));
        report.push(format!(
            "camera {}: {}",
            c.name,
            camera::source::describe(&c.source)
        ));
        (Arc::new(model), src)
    });
    let speech = cfg.speech.as_ref().map(|s| {
        let model = load_model(&s.model, "speech", isa, &npu, &mut report);
        costs.push(ModelCost::of("speech", &s.model, &model, 1));
        let kws = speech::check_kws(s, &model)
            .unwrap_or_else(|e| fail(exit::MODEL, format!("{}: {e}", s.model.display())));
        let vad = match (s.vad.effective_kind(), &s.vad.model) {
            (config::VadKind::Silero, Some(p)) => {
                let m = load_model(p, "speech.vad", isa, &npu, &mut report);
                costs.push(ModelCost::of("speech.vad", p, &m, 1));
                speech::check_vad(&m)
                    .unwrap_or_else(|e| fail(exit::MODEL, format!("{}: {e}", p.display())));
                Some(Arc::new(m))
            }
            _ => None,
        };
        let audio = speech::open_input(s)
            .unwrap_or_else(|e| fail(exit::MEDIA, format!("speech source: {e}")));
        report.push(format!("audio: {}", audio.describe(&s.source)));
        let names: Vec<String> = kws
            .iter()
            .filter_map(|&i| model.meta.labels.get(i).cloned())
            .collect();
        (Arc::new(model), vad, kws, audio, names)
    });
    check_models(board_isa.as_ref(), &costs, &mut report);
    let board = board_isa.map(|(b, _)| b);
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
        check_broker(&cfg, &mut report);
        for line in &report {
            println!("strixd: {line}");
        }
        println!("strixd: config OK");
        return exit::OK;
    }
    for line in &report {
        log_info!("strixd: {line}");
    }
    if let Some(dir) = cfg.outbox.path.parent() {
        // The state folder (e.g. /var/lib/strix) may be new.
        let _ = std::fs::create_dir_all(dir);
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
        log_warn!("strixd: outbox {path}: not closed cleanly last time; repaired");
    }
    if opened.integrity_repaired {
        log_warn!(
            "strixd: warning: outbox {path}: the integrity check found damage and redb repaired \
             it; if it had to roll back to an older commit, the alerts stored last before the \
             damage are lost and the ones delivered last are sent again"
        );
    }
    if let Some((to, why)) = &opened.quarantined {
        log_error!(
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
                log_info!("strixd: metrics on http://{addr}/metrics");
                h
            }
            Err(e) => fail(exit::RESOURCE, format!("metrics.listen {}: {e}", m.listen)),
        }
    });
    let pruner = cfg.camera.as_ref().and_then(|c| {
        if let Some(p) = snapshots::newest(&c.snapshots.dir) {
            // Served on /snapshot/ until this run takes one.
            metrics.set_snapshot(&c.name, p);
        }
        let r = Retention::from_config(&c.snapshots);
        r.is_active().then(|| {
            snapshot_pruner(
                c.snapshots.dir.clone(),
                r,
                Arc::downgrade(&outbox),
                upstream_stop.clone(),
            )
            .unwrap_or_else(|e| fail(exit::INTERNAL, e))
        })
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
    let keywords = speech.as_ref().map(|t| t.4.clone()).unwrap_or_default();
    let mut upstreams = Vec::new();
    if let Some(m) = cfg.mqtt.clone() {
        let mq = Mqtt {
            cfg: m,
            device: cfg.device.clone(),
            board: board
                .as_ref()
                .map(|b| b.name.clone())
                .unwrap_or_else(|| "generic".into()),
            keywords,
            cameras: cfg.camera.iter().map(|c| c.name.clone()).collect(),
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
    if let (Some(s), Some((model, vad, kws, audio, _))) = (cfg.speech.clone(), speech) {
        pipelines.extend(
            speech::start(s, model, vad, kws, audio, ctx.clone())
                .unwrap_or_else(|e| fail(exit::INTERNAL, e)),
        );
    }
    drop(ctx);
    log_info!("strixd: {} running", cfg.device);
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
    if let Some(h) = pruner {
        threads.add(Role::Service, h);
    }
    metrics
        .pipelines_started
        .store(threads.count(Role::Pipeline) as u64, Ordering::Relaxed);
    threads.health = Some(metrics.clone());
    threads.publish_health();
    let halt = |threads: &mut Threads, panicked: Vec<String>| -> i32 {
        log_error!(
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
    let stay = cfg.shutdown.stay;
    if (threads.running(Role::Upstream) || stay) && !SIGNALLED.load(Ordering::Relaxed) {
        // Sources ended: deliver what is left, within the drain timeout (or
        // with `shutdown.stay`, serve /metrics and /healthz until a signal).
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
        log_info!(
            "strixd: {} alert(s) stay in the outbox for the next run",
            outbox.len()
        );
    }
    if !stuck.is_empty() {
        // E.g. a detector still working through a long frame queue, or a
        // disk that does not take the sink's writes: what they hold was not
        // stored yet, what is stored is sent at the next start.
        log_warn!(
            "strixd: warning: thread {} had not stopped {STOP_GRACE:?} after the stop request: \
             exiting anyway",
            stuck.join(", ")
        );
    }
    log_info!("strixd: done");
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
    /// Where the running pipeline count goes (`/healthz`).
    health: Option<Arc<Metrics>>,
}

impl Threads {
    fn add(&mut self, role: Role, h: JoinHandle<()>) {
        self.running.push((role, h));
    }

    fn running(&self, role: Role) -> bool {
        self.running.iter().any(|(r, _)| *r == role)
    }

    fn count(&self, role: Role) -> usize {
        self.running.iter().filter(|(r, _)| *r == role).count()
    }

    fn publish_health(&self) {
        if let Some(m) = &self.health {
            m.pipelines_running
                .store(self.count(Role::Pipeline) as u64, Ordering::Relaxed);
        }
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
        self.publish_health();
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
        self.publish_health();
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

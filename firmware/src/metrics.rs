//! Counters and gauges, served as Prometheus text on `GET /metrics` by a tiny
//! HTTP/1.1 responder on a std `TcpListener` (one request per connection),
//! which also answers `GET /healthz` and serves the latest snapshots
//! (`/snapshot/latest.jpg`, `/snapshot/<camera>.jpg`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Sum and count of a stage's latency (a Prometheus summary without quantiles).
#[derive(Default)]
pub struct Latency {
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Latency {
    pub fn observe(&self, d: Duration) {
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

type Gauge = Box<dyn Fn() -> f64 + Send + Sync>;

/// All of the daemon's metrics. Cheap to update from any thread.
pub struct Metrics {
    started: Instant,
    pub frames_captured: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub frames_still: AtomicU64,
    pub frames_inferred: AtomicU64,
    pub audio_samples: AtomicU64,
    pub audio_blocked: AtomicU64,
    pub audio_overruns: AtomicU64,
    pub kws_windows: AtomicU64,
    pub alerts: AtomicU64,
    pub mqtt_published: AtomicU64,
    pub mqtt_acked: AtomicU64,
    pub mqtt_connects: AtomicU64,
    pub mqtt_connected: AtomicBool,
    pub webhook_posts: AtomicU64,
    pub webhook_delivered: AtomicU64,
    pub webhook_failures: AtomicU64,
    pub errors: AtomicU64,
    latencies: BTreeMap<&'static str, Latency>,
    gauges: Mutex<Vec<(String, Gauge)>>,
    /// The stage [`Metrics::inject_panic`] named.
    panic_in: OnceLock<String>,
    /// Pipeline threads started and still running (main keeps them).
    pub pipelines_started: AtomicU64,
    pub pipelines_running: AtomicU64,
    /// The last outbox write failed (the sink retries it); cleared by the
    /// next successful one.
    pub outbox_failing: AtomicBool,
    /// The latest snapshot file of each camera.
    snapshots: Mutex<BTreeMap<String, (Instant, std::path::PathBuf)>>,
}

/// Stage names with a latency summary.
pub const STAGES: [&str; 6] = ["capture", "motion", "detect", "track", "vad", "kws"];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            frames_captured: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            frames_still: AtomicU64::new(0),
            frames_inferred: AtomicU64::new(0),
            audio_samples: AtomicU64::new(0),
            audio_blocked: AtomicU64::new(0),
            audio_overruns: AtomicU64::new(0),
            kws_windows: AtomicU64::new(0),
            alerts: AtomicU64::new(0),
            mqtt_published: AtomicU64::new(0),
            mqtt_acked: AtomicU64::new(0),
            mqtt_connects: AtomicU64::new(0),
            mqtt_connected: AtomicBool::new(false),
            webhook_posts: AtomicU64::new(0),
            webhook_delivered: AtomicU64::new(0),
            webhook_failures: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latencies: STAGES.iter().map(|s| (*s, Latency::default())).collect(),
            gauges: Mutex::new(Vec::new()),
            panic_in: OnceLock::new(),
            pipelines_started: AtomicU64::new(0),
            pipelines_running: AtomicU64::new(0),
            outbox_failing: AtomicBool::new(false),
            snapshots: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    /// The latency summary of `stage` (one of [`STAGES`]; others are ignored).
    ///
    /// # Panics
    /// When `stage` is the one named to [`Metrics::inject_panic`].
    pub fn observe(&self, stage: &str, d: Duration) {
        if self.panic_in.get().is_some_and(|s| s == stage) {
            panic!("stage {stage:?}: panic injected by --panic-in");
        }
        if let Some(l) = self.latencies.get(stage) {
            l.observe(d);
        }
    }

    /// Makes every [`observe`](Metrics::observe) of `stage` (one of
    /// [`STAGES`]) panic, on that stage's thread, as a bug in the stage
    /// would. strixd's hidden `--panic-in STAGE` flag sets it, so that tests
    /// and operators can check that a failed stage ends strixd with its
    /// documented exit code (and that the service manager restarts it).
    /// Set at most once; `false` when `stage` is not a stage or one is set.
    pub fn inject_panic(&self, stage: &str) -> bool {
        STAGES.contains(&stage) && self.panic_in.set(stage.to_string()).is_ok()
    }

    /// Records `path` as `camera`'s latest snapshot.
    pub fn set_snapshot(&self, camera: &str, path: std::path::PathBuf) {
        if let Ok(mut m) = self.snapshots.lock() {
            m.insert(camera.to_string(), (Instant::now(), path));
        }
    }

    /// The latest snapshot of `camera`, or of any camera when `None`.
    pub fn snapshot(&self, camera: Option<&str>) -> Option<std::path::PathBuf> {
        let m = self.snapshots.lock().ok()?;
        match camera {
            Some(c) => m.get(c).map(|(_, p)| p.clone()),
            None => m.values().max_by_key(|(t, _)| *t).map(|(_, p)| p.clone()),
        }
    }

    /// `/healthz`: healthy while every pipeline thread started is running
    /// and the outbox takes writes; `(healthy, JSON body)`.
    pub fn health(&self) -> (bool, String) {
        let started = self.pipelines_started.load(Ordering::Relaxed);
        let running = self.pipelines_running.load(Ordering::Relaxed);
        let outbox_ok = !self.outbox_failing.load(Ordering::Relaxed);
        let ok = started > 0 && running == started && outbox_ok;
        let body = serde_json::json!({
            "status": if ok { "ok" } else { "unhealthy" },
            "pipelines": { "running": running, "started": started },
            "outbox": if outbox_ok { "ok" } else { "write failing" },
            "mqtt_connected": self.mqtt_connected.load(Ordering::Relaxed),
        });
        (ok, body.to_string())
    }

    /// Registers a gauge read at scrape time, e.g. a queue depth:
    /// `name` is a full sample name such as `strix_queue_depth{queue="frames"}`.
    pub fn gauge(&self, name: impl Into<String>, f: impl Fn() -> f64 + Send + Sync + 'static) {
        if let Ok(mut g) = self.gauges.lock() {
            g.push((name.into(), Box::new(f)));
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let up = self.started.elapsed().as_secs_f64().max(1e-9);
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, v: u64| {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        };
        counter(
            "strix_frames_captured_total",
            "Frames read from the camera source.",
            c(&self.frames_captured),
        );
        counter(
            "strix_frames_dropped_total",
            "Frames dropped (oldest first) because inference fell behind.",
            c(&self.frames_dropped),
        );
        counter(
            "strix_frames_still_total",
            "Frames skipped by the motion gate.",
            c(&self.frames_still),
        );
        counter(
            "strix_frames_inferred_total",
            "Frames run through the detector.",
            c(&self.frames_inferred),
        );
        counter(
            "strix_audio_samples_total",
            "16 kHz audio samples captured.",
            c(&self.audio_samples),
        );
        counter(
            "strix_audio_backpressure_total",
            "Audio chunks whose hand-off had to wait (audio is never dropped).",
            c(&self.audio_blocked),
        );
        counter(
            "strix_audio_overruns_total",
            "Live capture losses: ALSA overruns (xruns) and capture buffers dropped because the hand-off queue was full.",
            c(&self.audio_overruns),
        );
        counter(
            "strix_kws_windows_total",
            "Keyword-spotting windows evaluated.",
            c(&self.kws_windows),
        );
        counter(
            "strix_alerts_total",
            "Alerts written to the outbox.",
            c(&self.alerts),
        );
        counter(
            "strix_mqtt_published_total",
            "QoS 1 alert publishes sent (redeliveries included).",
            c(&self.mqtt_published),
        );
        counter(
            "strix_mqtt_acked_total",
            "Alerts acknowledged by the broker (PUBACK).",
            c(&self.mqtt_acked),
        );
        counter(
            "strix_mqtt_connects_total",
            "Successful broker connections.",
            c(&self.mqtt_connects),
        );
        counter(
            "strix_webhook_posts_total",
            "Webhook POSTs attempted (retries included).",
            c(&self.webhook_posts),
        );
        counter(
            "strix_webhook_delivered_total",
            "Alerts the webhook answered with a 2xx status.",
            c(&self.webhook_delivered),
        );
        counter(
            "strix_webhook_failures_total",
            "Webhook POSTs that failed (connection error, timeout or non-2xx status).",
            c(&self.webhook_failures),
        );
        counter(
            "strix_errors_total",
            "Errors logged by pipeline stages.",
            c(&self.errors),
        );
        s.push_str("# HELP strix_camera_fps Mean captured frames per second since start.\n# TYPE strix_camera_fps gauge\n");
        s.push_str(&format!(
            "strix_camera_fps {:.3}\n",
            c(&self.frames_captured) as f64 / up
        ));
        s.push_str("# HELP strix_inference_fps Mean inferred frames per second since start.\n# TYPE strix_inference_fps gauge\n");
        s.push_str(&format!(
            "strix_inference_fps {:.3}\n",
            c(&self.frames_inferred) as f64 / up
        ));
        s.push_str("# HELP strix_mqtt_connected 1 while connected to the broker.\n# TYPE strix_mqtt_connected gauge\n");
        s.push_str(&format!(
            "strix_mqtt_connected {}\n",
            self.mqtt_connected.load(Ordering::Relaxed) as u8
        ));
        s.push_str("# HELP strix_stage_latency_seconds Time spent per item in each stage.\n# TYPE strix_stage_latency_seconds summary\n");
        for (stage, l) in &self.latencies {
            let (sum, n) = (c(&l.sum_ns) as f64 * 1e-9, c(&l.count));
            s.push_str(&format!(
                "strix_stage_latency_seconds_sum{{stage=\"{stage}\"}} {sum:.6}\n"
            ));
            s.push_str(&format!(
                "strix_stage_latency_seconds_count{{stage=\"{stage}\"}} {n}\n"
            ));
        }
        if let Ok(g) = self.gauges.lock() {
            let mut typed = std::collections::BTreeSet::new();
            for (name, f) in g.iter() {
                let base = name.split('{').next().unwrap_or(name);
                if typed.insert(base.to_string()) {
                    s.push_str(&format!("# TYPE {base} gauge\n"));
                }
                s.push_str(&format!("{name} {}\n", f()));
            }
        }
        s
    }
}

/// Serves `GET /metrics` on `listen` from a background thread until `stop`.
/// Returns the bound address (`listen` may use port 0) and the thread.
pub fn serve(
    listen: &str,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(std::net::SocketAddr, JoinHandle<()>)> {
    let l = TcpListener::bind(listen)?;
    let addr = l.local_addr()?;
    l.set_nonblocking(true)?;
    let h = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((stream, _)) => {
                        // Per-connection errors (a client that hangs up) only end
                        // that connection.
                        let _ = answer(stream, &metrics);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        })?;
    Ok((addr, h))
}

fn answer(stream: std::net::TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut r = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    // Drain the headers (bounded) so the client sees a clean close.
    let mut h = String::new();
    for _ in 0..100 {
        h.clear();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let text = |status: &'static str, body: &str| (status, "text/plain", body.as_bytes().to_vec());
    let (status, ctype, body): (&str, &str, Vec<u8>) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4",
            metrics.render().into_bytes(),
        ),
        ("GET", "/healthz") => {
            let (ok, body) = metrics.health();
            (
                if ok {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                },
                "application/json",
                body.into_bytes(),
            )
        }
        ("GET", p) if p.starts_with("/snapshot/") && p.ends_with(".jpg") => {
            let name = &p["/snapshot/".len()..p.len() - 4];
            let camera = (name != "latest").then_some(name);
            match metrics.snapshot(camera).map(std::fs::read) {
                Some(Ok(jpeg)) => ("200 OK", "image/jpeg", jpeg),
                Some(Err(_)) => text("404 Not Found", "the snapshot file is gone\n"),
                None => text("404 Not Found", "no snapshot yet\n"),
            }
        }
        ("GET", "/") => text(
            "200 OK",
            "strixd: /metrics, /healthz, /snapshot/latest.jpg, /snapshot/<camera>.jpg\n",
        ),
        ("GET", _) => text("404 Not Found", "not found\n"),
        _ => text("405 Method Not Allowed", "only GET\n"),
    };
    let mut w = stream;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    w.write_all(&body)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn serves_prometheus_text() {
        let m = Arc::new(Metrics::default());
        m.frames_dropped.fetch_add(3, Ordering::Relaxed);
        m.observe("detect", Duration::from_millis(20));
        m.gauge("strix_queue_depth{queue=\"frames\"}", || 2.0);
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, _) = serve("127.0.0.1:0", m, stop.clone()).unwrap();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        stop.store(true, Ordering::Relaxed);
        assert!(body.starts_with("HTTP/1.1 200 OK"));
        assert!(body.contains("strix_frames_dropped_total 3"));
        assert!(body.contains("strix_stage_latency_seconds_count{stage=\"detect\"} 1"));
        assert!(body.contains("strix_queue_depth{queue=\"frames\"} 2"));
    }

    #[test]
    fn injected_panic_hits_only_its_stage() {
        let m = Metrics::default();
        assert!(!m.inject_panic("nowhere"));
        assert!(m.inject_panic("vad"));
        assert!(!m.inject_panic("kws"), "set at most once");
        m.observe("kws", Duration::from_millis(1));
        let r = std::panic::catch_unwind(|| m.observe("vad", Duration::from_millis(1)));
        assert!(r.is_err());
    }
}

//! Shared harness: paths and binaries, generated media, a mosquitto broker on a free port, MQTT subscribers, a webhook server, strixd processes and their output.

pub use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
pub use serde_json::Value;
pub use std::collections::{HashMap, HashSet};
pub use std::io::{BufRead, BufReader, Read, Write};
pub use std::net::TcpStream;
pub use std::path::{Path, PathBuf};
pub use std::process::{Child, Command, Stdio};
pub use std::sync::{Arc, Mutex, OnceLock};
pub use std::time::{Duration, Instant};
pub use strix_firmware::speech::{EnergyVad, SileroVad, Vad};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The cargo target folder (a relative CARGO_TARGET_DIR is taken from the workspace root).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        Some(p) => root().join(p),
        None => root().join("target"),
    }
}

pub fn strixd() -> &'static str {
    env!("CARGO_BIN_EXE_strixd")
}

pub fn strix_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("STRIX_BIN") {
        return PathBuf::from(p);
    }
    let p = target_dir().join("release/strix");
    if !p.exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "strix-tools"])
            .current_dir(root())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "building strix-tools failed");
    }
    p
}

/// Panics with the fix when a tool the tests need is missing.
pub fn need_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
        || Path::new("/usr/sbin").join(name).is_file();
    assert!(found, "`{name}` is not installed: run scripts/test-strixd.sh (apt-get install mosquitto ffmpeg sox)");
}

pub fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Shared per test binary: converted models and generated media.
pub struct Assets {
    pub dir: PathBuf,
}

pub fn assets() -> &'static Assets {
    static A: OnceLock<Assets> = OnceLock::new();
    A.get_or_init(|| {
        for tool in ["mosquitto", "ffmpeg", "sox"] {
            need_tool(tool);
        }
        // One reused folder (remade by each run) so runs leave no litter.
        let dir = target_dir().join("strixd-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let strix = strix_bin();
        let m = root().join("models");
        let imgs: Vec<PathBuf> = std::fs::read_dir(m.join("images"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
            .collect();
        run_ok(
            Command::new(&strix)
                .arg("convert")
                .arg(m.join("fastestdet/FastestDet.onnx"))
                .arg("--calib")
                .args(&imgs)
                .arg("-o")
                .arg(dir.join("fastestdet.strix")),
        );
        let wavs: Vec<PathBuf> = ["yes", "no", "silence", "noise"]
            .iter()
            .map(|n| m.join(format!("kws/{n}_1000ms.wav")))
            .collect();
        run_ok(
            Command::new(&strix)
                .arg("convert")
                .arg(m.join("kws/kws_dscnn_f32.onnx"))
                .arg("--calib")
                .args(&wavs)
                .arg("-o")
                .arg(dir.join("kws.strix")),
        );
        run_ok(
            Command::new(&strix)
                .arg("convert")
                .arg(m.join("vad/silero_vad_16k_static.onnx"))
                .arg("--fp32")
                .arg("-o")
                .arg(dir.join("vad.strix")),
        );
        // Speech: 1 s silence, yes, 1 s silence, noise, 1 s silence, yes, 1 s silence.
        let sil = dir.join("sil.wav");
        run_ok(
            Command::new("sox")
                .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
                .arg(&sil)
                .args(["trim", "0", "1.0"]),
        );
        let yes = m.join("kws/yes_1000ms.wav");
        let noise = m.join("kws/noise_1000ms.wav");
        run_ok(
            Command::new("sox")
                .args([&sil, &yes, &sil, &noise, &sil, &yes, &sil])
                .arg(dir.join("speech.wav")),
        );
        Assets { dir }
    })
}

/// A clip: `pattern` is a list of segments, `true` = the person image, each
/// 2 s at 10 fps, on a still (but sensor-noisy) background.
pub fn clip(name: &str, pattern: &[bool]) -> PathBuf {
    static GEN: Mutex<()> = Mutex::new(());
    let _one_at_a_time = GEN.lock().unwrap_or_else(|e| e.into_inner());
    let a = assets();
    let out = a.dir.join(name);
    if out.exists() {
        return out;
    }
    let person = root().join("models/images/fastestdet_3.jpg");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-loglevel", "error", "-y"]);
    let mut filter = String::new();
    for (i, &p) in pattern.iter().enumerate() {
        if p {
            cmd.args(["-loop", "1", "-framerate", "10", "-t", "2", "-i"])
                .arg(&person);
            filter.push_str(&format!(
                "[{i}:v]scale=640:480,setsar=1,format=yuv420p[s{i}];"
            ));
        } else {
            cmd.args(["-f", "lavfi", "-i", "color=c=0x5a6e50:s=640x480:r=10:d=2"]);
            filter.push_str(&format!("[{i}:v]format=yuv420p[s{i}];"));
        }
    }
    for i in 0..pattern.len() {
        filter.push_str(&format!("[s{i}]"));
    }
    filter.push_str(&format!(
        "concat=n={}:v=1:a=0,noise=alls=6:allf=t",
        pattern.len()
    ));
    cmd.arg("-filter_complex")
        .arg(filter)
        .args(["-pix_fmt", "yuv420p"])
        .arg(&out);
    run_ok(&mut cmd);
    out
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Broker {
    pub child: Option<Child>,
    pub conf: PathBuf,
    pub port: u16,
}

impl Broker {
    pub fn start(dir: &Path, port: u16) -> Broker {
        let conf = dir.join("mosquitto.conf");
        let data = dir.join("mosq-data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 100000\nlog_dest stderr\nlog_type notice\nlog_type error\n",
                data.display()
            ),
        )
        .unwrap();
        let mut b = Broker {
            child: None,
            conf,
            port,
        };
        b.restart();
        b
    }

    pub fn restart(&mut self) {
        let exe = if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        // The log goes to stderr (unbuffered), appended to `mosquitto.log` beside the
        // config (mosquitto drops root for its own user, which cannot open
        // files in the test's private folder).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.conf.with_file_name("mosquitto.log"))
            .unwrap();
        let child = Command::new(exe)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto (apt-get install mosquitto)");
        self.child = Some(child);
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "mosquitto did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (mosquitto saves its persistent sessions), then wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Collects every message on `strix/+/events` (persistent session, QoS 1:
/// the broker keeps messages for it across its own restarts).
pub fn subscribe(port: u16, id: &str) -> Arc<Mutex<Vec<Value>>> {
    subscribe_with(MqttOptions::new(id, "127.0.0.1", port))
}

/// [`subscribe`] with the caller's connection options (TLS, credentials).
pub fn subscribe_with(mut o: MqttOptions) -> Arc<Mutex<Vec<Value>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(o, 64);
    let g = got.clone();
    let ready = Arc::new(Mutex::new(false));
    let r = ready.clone();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe("strix/+/events", QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => *r.lock().unwrap() = true,
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                        g.lock().unwrap().push(v);
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
    let t0 = Instant::now();
    while !*ready.lock().unwrap() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "subscriber did not subscribe"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    got
}

pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("strixd.toml");
    let a = assets();
    let text = body
        .replace(
            "@DET@",
            &a.dir.join("fastestdet.strix").display().to_string(),
        )
        .replace("@KWS@", &a.dir.join("kws.strix").display().to_string())
        .replace("@VAD@", &a.dir.join("vad.strix").display().to_string())
        .replace("@SPEECH@", &a.dir.join("speech.wav").display().to_string());
    std::fs::write(&p, text).unwrap();
    p
}

pub const CAMERA: &str = r#"
[camera]
source = "@CLIP@"
model = "@DET@"
realtime = @RT@
fps = 10
[[camera.zones]]
name = "left"
polygon = [[0.0, 0.0], [0.3, 0.0], [0.3, 1.0], [0.0, 1.0]]
[[camera.rules]]
label = "person"
min_score = 0.5
min_frames = 3
zones = ["left"]
"#;

/// Spawns strixd; stdout lines (alerts as JSON) are collected by a thread.
pub fn spawn_strixd(cfg: &Path) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(strixd())
        .arg("--config")
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    (child, lines)
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("strixd did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn alerts(lines: &Mutex<Vec<String>>) -> Vec<Value> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Every printed (persisted) alert arrived; duplicates carry identical content.
pub fn assert_all_delivered(persisted: &[Value], got: &[Value]) {
    let mut by_id: HashMap<String, &Value> = HashMap::new();
    for v in got {
        let id = v["msg_id"].as_str().unwrap().to_string();
        if let Some(prev) = by_id.insert(id.clone(), v) {
            assert_eq!(prev, v, "duplicate {id} with different content");
        }
    }
    let missing: Vec<&str> = persisted
        .iter()
        .map(|v| v["msg_id"].as_str().unwrap())
        .filter(|id| !by_id.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "not delivered: {missing:?} (got {} messages)",
        got.len()
    );
}

pub fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// 16 kHz mono samples of a WAV file.
pub fn wav(path: &Path) -> Vec<f32> {
    strix_runtime::audio::read_wav_mono_16k(path).unwrap()
}

/// One request seen by [`HookServer`]: its headers (lower-case names), body,
/// and the status it was answered with.
#[derive(Clone, Debug)]
pub struct HookRequest {
    pub head: String,
    pub body: Vec<u8>,
    pub status: u16,
}

/// A tiny HTTP/1.1 server (std `TcpListener`, keep-alive, `Content-Length`
/// bodies) standing in for a webhook receiver: it answers 500 to the first
/// `fail_first` requests, then 200, and records every request.
pub struct HookServer {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<HookRequest>>>,
}

impl HookServer {
    /// Plain HTTP, or HTTPS when `tls` holds a server configuration.
    pub fn start(fail_first: usize, tls: Option<Arc<rustls::ServerConfig>>) -> HookServer {
        Self::start_on(0, fail_first, tls)
    }

    /// [`HookServer::start`] on a given port (0: any free one).
    pub fn start_on(
        port: u16,
        fail_first: usize,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> HookServer {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let s = s.clone();
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => Self::serve(conn, s, fail_first),
                    Some(cfg) => {
                        let server = rustls::ServerConnection::new(cfg).unwrap();
                        Self::serve(rustls::StreamOwned::new(server, conn), s, fail_first)
                    }
                });
            }
        });
        HookServer { port, seen }
    }

    pub fn serve<S: Read + Write>(conn: S, seen: Arc<Mutex<Vec<HookRequest>>>, fail_first: usize) {
        let mut r = BufReader::new(conn);
        loop {
            let mut head = String::new();
            loop {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line.to_ascii_lowercase());
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            let status = {
                let mut seen = seen.lock().unwrap();
                let status = if seen.len() < fail_first { 500 } else { 200 };
                seen.push(HookRequest { head, body, status });
                status
            };
            let reason = if status == 200 {
                "OK"
            } else {
                "Internal Server Error"
            };
            let resp = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 2\r\n\r\nok");
            let w = r.get_mut();
            if w.write_all(resp.as_bytes())
                .and_then(|_| w.flush())
                .is_err()
            {
                return;
            }
        }
    }
}

/// Lines of a child's output, collected by a thread.
pub type Lines = Arc<Mutex<Vec<String>>>;

/// Spawns strixd with stdout (alert lines) and stderr (log lines) collected.
pub fn spawn_strixd_logged(cfg: &Path) -> (Child, Lines, Lines) {
    spawn_strixd_logged_with(cfg, &[])
}

/// [`spawn_strixd_logged`] with extra command-line arguments.
pub fn spawn_strixd_logged_with(cfg: &Path, args: &[&str]) -> (Child, Lines, Lines) {
    let mut child = Command::new(strixd())
        .arg("--config")
        .arg(cfg)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let collect = |r: Box<dyn Read + Send>| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                eprintln!("| {line}");
                l.lock().unwrap().push(line);
            }
        });
        lines
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    (child, out, err)
}

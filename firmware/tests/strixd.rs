//! End-to-end tests of `strixd` with real models (converted by the `strix`
//! binary), real media generated with ffmpeg and sox from the shipped files,
//! and a real mosquitto broker started on a free loopback port.
//!
//! Needs: mosquitto, ffmpeg, sox (scripts/test-strixd.sh installs them) and
//! the `strix` binary (`STRIX_BIN`, else `<target>/release/strix`, else it is
//! built with `cargo build --release -p strix-tools`).

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use strix_firmware::speech::{EnergyVad, SileroVad, Vad};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The cargo target folder (a relative CARGO_TARGET_DIR is taken from the workspace root).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        Some(p) => root().join(p),
        None => root().join("target"),
    }
}

fn strixd() -> &'static str {
    env!("CARGO_BIN_EXE_strixd")
}

fn strix_bin() -> PathBuf {
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
fn need_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
        || Path::new("/usr/sbin").join(name).is_file();
    assert!(found, "`{name}` is not installed: run scripts/test-strixd.sh (apt-get install mosquitto ffmpeg sox)");
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Shared per test binary: converted models and generated media.
struct Assets {
    dir: PathBuf,
}

fn assets() -> &'static Assets {
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
fn clip(name: &str, pattern: &[bool]) -> PathBuf {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Broker {
    child: Option<Child>,
    conf: PathBuf,
    port: u16,
}

impl Broker {
    fn start(dir: &Path, port: u16) -> Broker {
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

    fn restart(&mut self) {
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
    fn stop(&mut self) {
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
fn subscribe(port: u16, id: &str) -> Arc<Mutex<Vec<Value>>> {
    subscribe_with(MqttOptions::new(id, "127.0.0.1", port))
}

/// [`subscribe`] with the caller's connection options (TLS, credentials).
fn subscribe_with(mut o: MqttOptions) -> Arc<Mutex<Vec<Value>>> {
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

fn write_config(dir: &Path, body: &str) -> PathBuf {
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

const CAMERA: &str = r#"
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
fn spawn_strixd(cfg: &Path) -> (Child, Arc<Mutex<Vec<String>>>) {
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

fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
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

fn alerts(lines: &Mutex<Vec<String>>) -> Vec<Value> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Every printed (persisted) alert arrived; duplicates carry identical content.
fn assert_all_delivered(persisted: &[Value], got: &[Value]) {
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

fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn camera_clip_gives_one_person_event_over_mqtt() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    let got = subscribe(port, "t-camera");
    let metrics_port = free_port();
    let clip = clip("one.y4m", &[false, true, false]);
    let body = format!(
        "device = \"cam1\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n{}",
        CAMERA.replace("@CLIP@", &clip.display().to_string()).replace("@RT@", "true")
    );
    let cfg = write_config(dir.path(), &body);
    let (mut child, _) = spawn_strixd(&cfg);
    std::thread::sleep(Duration::from_secs(3));
    let m = scrape(&format!("127.0.0.1:{metrics_port}"));
    assert!(m.contains("strix_frames_captured_total"), "{m}");
    assert!(
        m.contains("strix_stage_latency_seconds_count{stage=\"detect\"}"),
        "{m}"
    );
    assert!(m.contains("strix_outbox_depth"), "{m}");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    std::thread::sleep(Duration::from_millis(500));
    let got = got.lock().unwrap().clone();
    let person: Vec<&Value> = got
        .iter()
        .filter(|v| v["kind"] == "object" && v["label"] == "person")
        .collect();
    let ids: HashSet<&str> = person.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "exactly one person event: {person:#?}");
    let types: Vec<&str> = person.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"new"), "{types:?}");
    assert_eq!(types.last(), Some(&"end"), "{types:?}");
    assert!(person[0]["zones"]
        .as_array()
        .unwrap()
        .iter()
        .any(|z| z == "left"));
    let new = person[0];
    let t = new["stream_time"].as_f64().unwrap();
    assert!(
        (2.0..3.0).contains(&t),
        "person appears at 2 s, event at {t}"
    );
    let snap = new["snapshot"].as_str().expect("snapshot path");
    let img = image::open(snap).expect("snapshot is a readable JPEG");
    assert_eq!((img.width(), img.height()), (640, 480));
}

#[test]
fn speech_events_at_the_right_times() {
    let dir = tempfile::tempdir().unwrap();
    let body = "device = \"mic1\"\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nkeywords = [\"yes\", \"no\", \"stop\", \"go\"]\n";
    let cfg = write_config(dir.path(), body);
    let (mut child, lines) = spawn_strixd(&cfg);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    let ev = alerts(&lines);
    // Where the word is in yes_1000ms.wav: first and last 10 ms frame above -40 dBFS.
    let yes = hound::WavReader::open(root().join("models/kws/yes_1000ms.wav")).unwrap();
    let s: Vec<f32> = yes
        .into_samples::<i16>()
        .map(|v| v.unwrap() as f32 / 32768.0)
        .collect();
    let loud: Vec<usize> = s
        .chunks(160)
        .enumerate()
        .filter(|(_, c)| {
            10.0 * (c.iter().map(|x| x * x).sum::<f32>() / c.len() as f32 + 1e-12).log10() > -40.0
        })
        .map(|(i, _)| i)
        .collect();
    let (on, off) = (
        loud[0] as f64 * 0.01,
        (loud[loud.len() - 1] + 1) as f64 * 0.01,
    );
    for clip_start in [1.0, 5.0] {
        let (won, woff) = (clip_start + on, clip_start + off);
        let near = |t: &Value, want: f64| (t.as_f64().unwrap() - want).abs() <= 0.3;
        assert!(
            ev.iter().any(|v| v["kind"] == "voice"
                && v["type"] == "new"
                && near(&v["stream_time"], won)),
            "voice start near {won}: {ev:#?}"
        );
        assert!(
            ev.iter().any(|v| v["kind"] == "voice"
                && v["type"] == "end"
                && near(&v["stream_time"], woff)),
            "voice end near {woff}: {ev:#?}"
        );
        let centre = (won + woff) / 2.0;
        assert!(
            ev.iter().any(|v| v["kind"] == "keyword"
                && v["label"] == "yes"
                && near(&v["stream_time"], centre)),
            "keyword yes near {centre}: {ev:#?}"
        );
    }
    let keywords = ev.iter().filter(|v| v["kind"] == "keyword").count();
    assert_eq!(keywords, 2, "no keyword in silence or noise: {ev:#?}");
}

/// 16 kHz mono samples of a WAV file.
fn wav(path: &Path) -> Vec<f32> {
    strix_runtime::audio::read_wav_mono_16k(path).unwrap()
}

/// Per-frame speech probabilities of `vad` over `audio` (whole frames).
fn probabilities(vad: &mut dyn Vad, audio: &[f32]) -> Vec<f32> {
    let n = vad.frame_len();
    audio
        .chunks_exact(n)
        .map(|f| vad.speech_probability(f))
        .collect()
}

#[test]
fn silero_vad_tells_speech_from_noise_the_energy_vad_calls_speech() {
    let a = assets();
    let model = strix_runtime::Model::load(a.dir.join("vad.strix")).unwrap();
    let mut silero = SileroVad::new(&model).unwrap();
    assert_eq!(silero.frame_len(), 512, "from the model's [1, 576] input");
    let mut energy = EnergyVad::new(-40.0, 0.5);
    let frac = |p: &[f32]| p.iter().filter(|&&v| v >= 0.5).count() as f32 / p.len() as f32;
    // Loud noise (the shipped clip, and sox brown noise): the energy VAD calls
    // much of it speech, which is the case the model exists for.
    let brown = a.dir.join("brown.wav");
    run_ok(
        Command::new("sox")
            .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
            .arg(&brown)
            .args(["synth", "2", "brownnoise", "vol", "0.5"]),
    );
    for noise in [root().join("models/kws/noise_1000ms.wav"), brown] {
        let x = wav(&noise);
        let e = probabilities(&mut energy, &x);
        silero.reset();
        let s = probabilities(&mut silero, &x);
        eprintln!(
            "{}: energy VAD speech frames {:.2}, Silero max p {:.3}",
            noise.display(),
            frac(&e),
            s.iter().copied().fold(0.0, f32::max)
        );
        assert!(frac(&e) >= 0.5, "{}: energy VAD {e:?}", noise.display());
        assert_eq!(frac(&s), 0.0, "{}: Silero {s:?}", noise.display());
    }
    // Speech: the shipped "yes" and the 60 s speech file.
    silero.reset();
    let yes = probabilities(&mut silero, &wav(&root().join("models/kws/yes_1000ms.wav")));
    assert!(
        yes.iter().any(|&p| p > 0.8),
        "yes clip is speech somewhere: {yes:?}"
    );
    silero.reset();
    let long = probabilities(&mut silero, &wav(&root().join("models/vad/speech_60s.wav")));
    assert!(frac(&long) > 0.7, "60 s of speech: {}", frac(&long));
}

#[test]
fn speech_events_with_the_silero_vad_skip_the_noise() {
    let dir = tempfile::tempdir().unwrap();
    let body = "device = \"mic1\"\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nkeywords = [\"yes\", \"no\", \"stop\", \"go\"]\n[speech.vad]\nmodel = \"@VAD@\"\n";
    let cfg = write_config(dir.path(), body);
    let (mut child, lines) = spawn_strixd(&cfg);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    let ev = alerts(&lines);
    let starts: Vec<f64> = ev
        .iter()
        .filter(|v| v["kind"] == "voice" && v["type"] == "new")
        .map(|v| v["stream_time"].as_f64().unwrap())
        .collect();
    eprintln!("Silero voice starts: {starts:?}");
    // The two "yes" clips start at 1 s and 5 s; the noise fills 3..4 s.
    for clip in [1.0, 5.0] {
        assert!(
            starts.iter().any(|&t| (clip..clip + 1.0).contains(&t)),
            "voice in the yes clip at {clip} s: {ev:#?}"
        );
    }
    assert!(
        !starts.iter().any(|&t| (2.9..4.1).contains(&t)),
        "no voice in the noise: {ev:#?}"
    );
    let keywords: Vec<&Value> = ev.iter().filter(|v| v["kind"] == "keyword").collect();
    assert_eq!(keywords.len(), 2, "{ev:#?}");
    assert!(keywords.iter().all(|v| v["label"] == "yes"), "{ev:#?}");
}

#[test]
fn broker_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Broker::start(dir.path(), port);
    let got = subscribe(port, "t-outage");
    let clip = clip("three.y4m", &[false, true, false, true, false, true, false]);
    let body = format!(
        "device = \"out1\"\n[stdout]\nenabled = true\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n{}\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nrealtime = true\nkeywords = [\"yes\"]\n",
        CAMERA.replace("@CLIP@", &clip.display().to_string()).replace("@RT@", "true")
    );
    let cfg = write_config(dir.path(), &body);
    let (mut child, lines) = spawn_strixd(&cfg);
    std::thread::sleep(Duration::from_secs(3));
    broker.stop();
    let outage: u64 = std::env::var("STRIXD_OUTAGE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    std::thread::sleep(Duration::from_secs(outage));
    broker.restart();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(90)), 0);
    std::thread::sleep(Duration::from_secs(1));
    let persisted = alerts(&lines);
    let during: usize = persisted.len();
    assert!(during >= 6, "enough alerts to matter: {persisted:#?}");
    let person_news = persisted
        .iter()
        .filter(|v| v["label"] == "person" && v["type"] == "new")
        .count();
    assert_eq!(person_news, 3, "three appearances: {persisted:#?}");
    assert_all_delivered(&persisted, &got.lock().unwrap());
}

#[test]
fn sigkill_then_restart_delivers_everything_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let clip = clip("one.y4m", &[false, true, false]);
    let body = format!(
        "device = \"kill1\"\n[stdout]\nenabled = true\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n{}\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nrealtime = true\nkeywords = [\"yes\"]\n",
        CAMERA.replace("@CLIP@", &clip.display().to_string()).replace("@RT@", "true")
    );
    let cfg = write_config(dir.path(), &body);
    // No broker yet: alerts pile up in the outbox.
    let (mut child, lines) = spawn_strixd(&cfg);
    let t0 = Instant::now();
    while alerts(&lines).len() < 4 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no alerts: {:?}",
            lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let before = alerts(&lines);
    let _broker = Broker::start(dir.path(), port);
    let got = subscribe(port, "t-kill");
    let (mut child, _) = spawn_strixd(&cfg);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    std::thread::sleep(Duration::from_secs(1));
    assert_all_delivered(&before, &got.lock().unwrap());
}

#[test]
fn bad_inputs_give_documented_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let run = |body: &str| {
        let cfg = write_config(dir.path(), body);
        let out = Command::new(strixd())
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) =
        run("device = \"x\"\n[speech]\nsource = \"a.wav\"\nmodel = \"@KWS@\"\nhop_ms = 5\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("speech.hop_ms") && err.contains("10..=1000"),
        "{err}"
    );
    let (code, err) = run("device = \"x\"\n[speech]\nsourc = \"a.wav\"\nmodel = \"@KWS@\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sourc"), "{err}");
    let (code, err) =
        run("device = \"x\"\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"missing.strix\"\n");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("missing.strix"), "{err}");
    // The KWS model is not a detector.
    let (code, err) = run("device = \"x\"\n[camera]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\n");
    assert_eq!(code, 3, "{err}");
    std::fs::write(dir.path().join("junk.y4m"), b"not a video").unwrap();
    let (code, err) = run("device = \"x\"\n[camera]\nsource = \"junk.y4m\"\nmodel = \"@DET@\"\n");
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("junk.y4m"), "{err}");
    let (code, err) = run("device = \"x\"\n[speech]\nsource = \"nope.wav\"\nmodel = \"@KWS@\"\n");
    assert_eq!(code, 4, "{err}");
    let help = Command::new(strixd()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Exit codes") && help.contains("[camera]"),
        "{help}"
    );
}

/// One request seen by [`HookServer`]: its headers (lower-case names), body,
/// and the status it was answered with.
#[derive(Clone, Debug)]
struct HookRequest {
    head: String,
    body: Vec<u8>,
    status: u16,
}

/// A tiny HTTP/1.1 server (std `TcpListener`, keep-alive, `Content-Length`
/// bodies) standing in for a webhook receiver: it answers 500 to the first
/// `fail_first` requests, then 200, and records every request.
struct HookServer {
    port: u16,
    seen: Arc<Mutex<Vec<HookRequest>>>,
}

impl HookServer {
    /// Plain HTTP, or HTTPS when `tls` holds a server configuration.
    fn start(fail_first: usize, tls: Option<Arc<rustls::ServerConfig>>) -> HookServer {
        Self::start_on(0, fail_first, tls)
    }

    /// [`HookServer::start`] on a given port (0: any free one).
    fn start_on(
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

    fn serve<S: Read + Write>(conn: S, seen: Arc<Mutex<Vec<HookRequest>>>, fail_first: usize) {
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

#[test]
fn webhook_gets_every_alert_through_server_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Five failures: 0.25 + 0.5 + 1 + 2 + 4 s of backoff while the speech
    // pipeline (not paced) has long finished persisting its alerts.
    let hook = HookServer::start(5, None);
    let body = format!(
        "device = \"hook1\"\n[stdout]\nenabled = true\n[webhook]\nurl = \"http://127.0.0.1:{}/strix/events?src=test\"\nheaders = {{ Authorization = \"Bearer t0ken\" }}\ntimeout_s = 5\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nkeywords = [\"yes\"]\n",
        hook.port
    );
    let cfg = write_config(dir.path(), &body);
    let (mut child, lines) = spawn_strixd(&cfg);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    let persisted = alerts(&lines);
    assert!(
        persisted.len() >= 4,
        "voice and keyword alerts: {persisted:#?}"
    );
    let seen = hook.seen.lock().unwrap().clone();
    let failed = seen.iter().filter(|r| r.status == 500).count();
    assert_eq!(failed, 5, "the server failed for a while: {seen:#?}");
    for r in &seen {
        assert!(
            r.head.starts_with("post /strix/events?src=test http/1.1"),
            "{}",
            r.head
        );
        assert!(
            r.head.contains("content-type: application/json"),
            "{}",
            r.head
        );
        assert!(r.head.contains("authorization: bearer t0ken"), "{}", r.head);
    }
    let ok: Vec<Value> = seen
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    // Every persisted alert was accepted, each exactly once, in order, and
    // byte-for-byte the JSON strixd printed.
    assert_eq!(ok, persisted, "accepted alerts (500s: {failed})");
}

/// Retained messages on `topics` (waits up to 3 s for `n` of them), by topic.
fn retained(port: u16, topics: &[&str], n: usize) -> HashMap<String, String> {
    let mut o = MqttOptions::new("t-retained", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(o, 64);
    for t in topics {
        client.subscribe(*t, QoS::AtLeastOnce).unwrap();
    }
    let mut got = HashMap::new();
    let t0 = Instant::now();
    while got.len() < n && t0.elapsed() < Duration::from_secs(3) {
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            conn.recv_timeout(Duration::from_millis(200))
        {
            got.insert(
                p.topic.clone(),
                String::from_utf8_lossy(&p.payload).to_string(),
            );
        }
    }
    got
}

#[test]
fn mqtt5_delivers_events_availability_and_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    let got = subscribe(port, "t-v5");
    let body = format!(
        "device = \"v5dev\"\n[stdout]\nenabled = true\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nprotocol = \"5\"\nclient_id = \"strixd-v5test\"\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nkeywords = [\"yes\"]\n"
    );
    let cfg = write_config(dir.path(), &body);
    let (mut child, lines) = spawn_strixd(&cfg);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    std::thread::sleep(Duration::from_millis(500));
    let persisted = alerts(&lines);
    assert!(
        persisted.iter().any(|v| v["kind"] == "keyword"),
        "{persisted:#?}"
    );
    let got = got.lock().unwrap().clone();
    assert_all_delivered(&persisted, &got);
    // The broker saw an MQTT 5 client ("p5" in mosquitto's connect line).
    let log = std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("as strixd-v5test (p5")),
        "mosquitto log: {log}"
    );
    // Last will / clean shutdown and Home Assistant discovery, retained.
    let r = retained(
        port,
        &[
            "strix/v5dev/availability",
            "homeassistant/binary_sensor/strix_v5dev/+/config",
        ],
        5,
    );
    assert_eq!(
        r.get("strix/v5dev/availability").map(String::as_str),
        Some("offline"),
        "{r:#?}"
    );
    let kw: Value =
        serde_json::from_str(&r["homeassistant/binary_sensor/strix_v5dev/keyword/config"]).unwrap();
    assert_eq!(kw["state_topic"], "strix/v5dev/keyword");
}

/// Lines of a child's output, collected by a thread.
type Lines = Arc<Mutex<Vec<String>>>;

/// Spawns strixd with stdout (alert lines) and stderr (log lines) collected.
fn spawn_strixd_logged(cfg: &Path) -> (Child, Lines, Lines) {
    spawn_strixd_logged_with(cfg, &[])
}

/// [`spawn_strixd_logged`] with extra command-line arguments.
fn spawn_strixd_logged_with(cfg: &Path, args: &[&str]) -> (Child, Lines, Lines) {
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

/// A test CA, a server certificate for localhost / 127.0.0.1 and a client
/// certificate, made with the `openssl` CLI in `dir` (world-readable: the
/// broker drops root for its own user before it reads them).
fn make_pki(dir: &Path) {
    need_tool("openssl");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run_ok(
        Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .args([
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=strix test CA",
            ])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .current_dir(dir),
    );
    for (name, cn, ext) in [
        (
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "strixd", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}"),
        )
        .unwrap();
        run_ok(
            Command::new("openssl")
                .arg("req")
                .args(ec)
                .args([
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ])
                .args(["-subj", &format!("/CN={cn}")])
                .current_dir(dir),
        );
        run_ok(
            Command::new("openssl")
                .args([
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                ])
                .args([
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-out",
                    &format!("{name}.pem"),
                ])
                .args(["-extfile", &format!("{name}.ext")])
                .current_dir(dir),
        );
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

#[test]
fn mqtt_over_tls_with_password_and_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_pki(d);
    run_ok(
        Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(d.join("passwd"))
            .args(["strixd", "s3cret"]),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("passwd"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = free_port();
    // The broker: TLS only, a client certificate from the test CA and a
    // password from the password file are both required.
    let mut broker = Broker::start(d, port);
    broker.stop();
    let conf = format!(
        "listener {port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\nrequire_certificate true\nallow_anonymous false\npassword_file {0}/passwd\nlog_dest stderr\nlog_type all\n",
        d.display()
    );
    std::fs::write(&broker.conf, conf).unwrap();
    broker.restart();
    let tls = strix_firmware::tls::client_config(
        Some(&d.join("ca.pem")),
        Some((&d.join("client.pem"), &d.join("client.key"))),
    )
    .unwrap();
    let mut o = MqttOptions::new("t-tls", "localhost", port);
    o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
        tls,
    )));
    o.set_credentials("strixd", "s3cret");
    let got = subscribe_with(o);
    let cfg_for = |ca: &str, password: &str| {
        write_config(
            d,
            &format!(
                "device = \"tls1\"\n[stdout]\nenabled = true\n[shutdown]\ndrain_timeout_s = 3\n[mqtt]\nhost = \"localhost\"\nport = {port}\ntls = true\n{ca}\nclient_cert = \"client.pem\"\nclient_key = \"client.key\"\nusername = \"strixd\"\npassword = \"{password}\"\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nkeywords = [\"yes\"]\n"
            ),
        )
    };
    // The system roots do not trust the test CA: the broker is refused.
    let (mut child, lines, log) = spawn_strixd_logged(&cfg_for("", "s3cret"));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    std::thread::sleep(Duration::from_millis(200));
    let untrusted = alerts(&lines);
    let log = log.lock().unwrap().join("\n");
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert!(got.lock().unwrap().is_empty());
    // A wrong password: a clear error, and the alerts stay in the outbox
    // (with the ones the run above left there).
    let (mut child, lines, log) = spawn_strixd_logged(&cfg_for("ca_file = \"ca.pem\"", "wrong"));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    std::thread::sleep(Duration::from_millis(200));
    let first = alerts(&lines);
    assert!(first.len() >= 4, "{first:#?}");
    let log = log.lock().unwrap().join("\n");
    assert!(
        log.contains("the broker refused the login")
            && log.contains("check mqtt.username and mqtt.password"),
        "{log}"
    );
    assert!(
        log.contains(&format!("{} alert(s) stay in the outbox", 2 * first.len())),
        "{log}"
    );
    assert!(got.lock().unwrap().is_empty());
    // The right password: this run's alerts and the first run's arrive over TLS.
    let (mut child, lines, log) = spawn_strixd_logged(&cfg_for("ca_file = \"ca.pem\"", "s3cret"));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    std::thread::sleep(Duration::from_millis(500));
    let second = alerts(&lines);
    let log = log.lock().unwrap().join("\n");
    assert!(log.contains("mqtt: connected"), "{log}");
    let got = got.lock().unwrap().clone();
    assert_all_delivered(&untrusted, &got);
    assert_all_delivered(&first, &got);
    assert_all_delivered(&second, &got);
    let blog = std::fs::read_to_string(d.join("mosquitto.log")).unwrap();
    assert!(blog.contains("as strixd-tls1"), "{blog}");
}

#[test]
fn webhook_over_https_checks_the_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_pki(d);
    let pem = |name: &str| std::fs::read(d.join(name)).unwrap();
    let certs = rustls_pemfile::certs(&mut pem("server.pem").as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut pem("server.key").as_slice())
        .unwrap()
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let hook = HookServer::start(0, Some(Arc::new(server)));
    let cfg_for = |ca: &str| {
        write_config(
            d,
            &format!(
                "device = \"hook2\"\n[stdout]\nenabled = true\n[shutdown]\ndrain_timeout_s = 3\n[webhook]\nurl = \"https://localhost:{}/in\"\n{ca}\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nkeywords = [\"yes\"]\n",
                hook.port
            ),
        )
    };
    // System roots: the test CA is not trusted, nothing is accepted.
    let (mut child, lines, log) = spawn_strixd_logged(&cfg_for(""));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    std::thread::sleep(Duration::from_millis(200));
    let untrusted = alerts(&lines);
    let log = log.lock().unwrap().join("\n");
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert!(hook.seen.lock().unwrap().is_empty());
    // With the CA: this run's alerts and the kept ones arrive, in order.
    let (mut child, lines, _) = spawn_strixd_logged(&cfg_for("ca_file = \"ca.pem\""));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    let mut want = untrusted;
    want.extend(alerts(&lines));
    let got: Vec<Value> = hook
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(got, want);
}

/// Live capture through cpal's ALSA host, with ALSA's userspace `file`
/// plugin as the test double for a microphone: a PCM `strixtest` whose
/// capture data is read from a FIFO the test writes (no kernel module, no
/// sound card). The FIFO paces nothing (the `null` slave has no clock), so
/// the audio arrives faster than real time; the FIFO only keeps the
/// capture from running past the data.
#[cfg(feature = "alsa")]
#[test]
fn alsa_capture_through_the_file_plugin_gives_keywords() {
    alsa_capture(16_000);
}

/// The same at 48 kHz (`speech.capture_rate`): the streaming resampler's path.
#[cfg(feature = "alsa")]
#[test]
fn alsa_capture_at_48k_is_resampled() {
    alsa_capture(48_000);
}

#[cfg(feature = "alsa")]
fn alsa_capture(rate: u32) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = assets();
    let raw = d.join("speech.raw");
    run_ok(
        Command::new("sox")
            .arg(a.dir.join("speech.wav"))
            .args([
                "-t",
                "raw",
                "-r",
                &rate.to_string(),
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed",
            ])
            .arg(&raw),
    );
    let data = std::fs::read(&raw).unwrap();
    let fifo = d.join("mic.fifo");
    run_ok(Command::new("mkfifo").arg(&fifo));
    let conf = d.join("asound.conf");
    std::fs::write(
        &conf,
        format!(
            "</usr/share/alsa/alsa.conf>\npcm.strixtest {{\n  type file\n  slave.pcm \"null\"\n  file \"/dev/null\"\n  infile \"{}\"\n  format \"raw\"\n  hint {{ show on description \"strixd test capture\" }}\n}}\n",
            fifo.display()
        ),
    )
    .unwrap();
    // The writer opens the FIFO read-write: that never blocks, and keeps
    // the pipe (and the data in it) alive while strixd opens and closes the
    // device to check it and opens it again to capture. It stays open (the
    // capture then waits for data) until `done`.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dn = done.clone();
    let mut w = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    std::thread::spawn(move || {
        w.write_all(&data).unwrap();
        while !dn.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let metrics_port = free_port();
    let cfg = write_config(
        d,
        &format!("device = \"alsa1\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[speech]\nsource = \"alsa:strixtest\"\ncapture_rate = {rate}\nmodel = \"@KWS@\"\nkeywords = [\"yes\", \"no\", \"stop\", \"go\"]\n"),
    );
    let mut child = Command::new(strixd())
        .arg("--config")
        .arg(&cfg)
        .env("ALSA_CONFIG_PATH", &conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::new(Mutex::new(Vec::new()));
    for (r, l) in [
        (
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            lines.clone(),
        ),
        (Box::new(child.stderr.take().unwrap()), log.clone()),
    ] {
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                eprintln!("| {line}");
                l.lock().unwrap().push(line);
            }
        });
    }
    let keywords = |lines: &Mutex<Vec<String>>| -> Vec<Value> {
        alerts(lines)
            .into_iter()
            .filter(|v| v["kind"] == "keyword")
            .collect()
    };
    let t0 = Instant::now();
    while keywords(&lines).len() < 2 && t0.elapsed() < Duration::from_secs(30) {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("strixd exited ({s}): {:#?}", log.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = scrape(&format!("127.0.0.1:{metrics_port}"));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), 0);
    let kw = keywords(&lines);
    let times: Vec<f64> = kw
        .iter()
        .map(|v| v["stream_time"].as_f64().unwrap())
        .collect();
    eprintln!("ALSA at {rate} Hz: keyword times {times:?}");
    assert_eq!(kw.len(), 2, "{:#?}", alerts(&lines));
    assert!(kw.iter().all(|v| v["label"] == "yes"), "{kw:#?}");
    // The "yes" clips start at 1 s and 5 s of the stream.
    assert!(
        (1.0..2.0).contains(&times[0]) && (5.0..6.0).contains(&times[1]),
        "{times:?}"
    );
    let log = log.lock().unwrap().join("\n");
    assert!(
        log.contains(&format!(
            "capturing from ALSA strixtest ({rate} Hz, 1 channel(s)"
        )),
        "{log}"
    );
    let metric = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {m}"))
            .parse()
            .unwrap()
    };
    assert_eq!(metric("strix_audio_overruns_total"), 0.0);
    assert!(metric("strix_audio_samples_total") >= 6.0 * 16000.0, "{m}");
}

/// Removes every DHT (Huffman table) segment before the scan, as many UVC
/// cameras send MJPEG (the decoder must then use the standard tables).
fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        let (m, len) = (
            jpeg[i + 1],
            u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize,
        );
        if m == 0xDA {
            out.extend_from_slice(&jpeg[i..]);
            return out;
        }
        if m != 0xC4 {
            out.extend_from_slice(&jpeg[i..i + 2 + len]);
        }
        i += 2 + len;
    }
    panic!("no scan in the JPEG");
}

/// V4L2 frame conversion on recorded buffers (the test double for a camera):
/// a 640x480 YUYV buffer and an MJPEG buffer, both made by ffmpeg from a
/// shipped photo, converted by strixd and compared with ffmpeg's own RGB.
#[test]
fn v4l2_frames_convert_like_ffmpeg() {
    use strix_firmware::camera::v4l2::{convert, PixelFormat};
    need_tool("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let photo = root().join("models/images/fastestdet_3.jpg");
    let ff = |args: &[&str]| {
        run_ok(
            Command::new("ffmpeg")
                .args(["-loglevel", "error", "-y"])
                .args(args)
                .current_dir(d),
        )
    };
    let src = photo.display().to_string();
    ff(&[
        "-i",
        &src,
        "-vf",
        "scale=640:480",
        "-pix_fmt",
        "yuyv422",
        "-f",
        "rawvideo",
        "frame.yuyv",
    ]);
    ff(&[
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuyv422",
        "-s",
        "640x480",
        "-i",
        "frame.yuyv",
        "-pix_fmt",
        "rgb24",
        "-f",
        "rawvideo",
        "frame.rgb",
    ]);
    // `-huffman default`: the standard tables, as UVC cameras use.
    ff(&[
        "-i",
        &src,
        "-vf",
        "scale=640:480",
        "-q:v",
        "3",
        "-huffman",
        "default",
        "-f",
        "mjpeg",
        "frame.mjpg",
    ]);
    let yuyv = std::fs::read(d.join("frame.yuyv")).unwrap();
    let want = std::fs::read(d.join("frame.rgb")).unwrap();
    assert_eq!(yuyv.len(), 640 * 480 * 2);
    let cam = Path::new("/dev/video-test");
    let got = convert(PixelFormat::Yuyv, 640, 480, 1280, &yuyv, cam).unwrap();
    let diffs: Vec<i32> = got
        .rgb
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .collect();
    let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
    let max = *diffs.iter().max().unwrap();
    eprintln!("YUYV vs ffmpeg rgb24: mean |diff| {mean:.3}, max {max}");
    assert!(mean < 2.0 && max <= 8, "mean {mean}, max {max}");
    // The same buffer in a driver's padded rows (stride 1344) converts the same.
    let padded: Vec<u8> = yuyv
        .chunks_exact(1280)
        .flat_map(|r| r.iter().copied().chain([0u8; 64]))
        .collect();
    assert_eq!(
        convert(PixelFormat::Yuyv, 640, 480, 1344, &padded, cam).unwrap(),
        got
    );
    // MJPEG, with its Huffman tables and without them (UVC style).
    let mjpg = std::fs::read(d.join("frame.mjpg")).unwrap();
    let full = convert(PixelFormat::Mjpeg, 640, 480, 0, &mjpg, cam).unwrap();
    let mean_vs_yuyv = full
        .rgb
        .iter()
        .zip(&got.rgb)
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .sum::<i32>() as f64
        / full.rgb.len() as f64;
    assert!(
        mean_vs_yuyv < 6.0,
        "MJPEG and YUYV frames of one photo: mean |diff| {mean_vs_yuyv}"
    );
    let bare = strip_dht(&mjpg);
    assert!(bare.len() < mjpg.len());
    let no_dht = convert(PixelFormat::Mjpeg, 640, 480, 0, &bare, cam).unwrap();
    assert_eq!(
        no_dht, full,
        "decoded with the standard tables strixd inserts"
    );
}

/// Serves `file` to every GET (HTTP/1.1, whole body, then close): a stand-in
/// for a network camera stream that ffmpeg reads by URL.
fn serve_file(file: PathBuf) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let body = std::fs::read(&file).unwrap();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn
                    .write_all(head.as_bytes())
                    .and_then(|_| conn.write_all(&body));
            });
        }
    });
    port
}

#[test]
fn camera_reads_a_url_through_ffmpeg() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clip("one.y4m", &[false, true, false]);
    let port = serve_file(clip);
    let body = format!(
        "device = \"url1\"\n{}",
        CAMERA
            .replace("@CLIP@", &format!("http://127.0.0.1:{port}/live/one.y4m"))
            .replace("@RT@", "false")
    );
    let cfg = write_config(dir.path(), &body);
    let (mut child, lines) = spawn_strixd(&cfg);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    let ev = alerts(&lines);
    let person: Vec<&Value> = ev.iter().filter(|v| v["label"] == "person").collect();
    let ids: HashSet<&str> = person.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids.len(),
        1,
        "one person event from the URL source: {ev:#?}"
    );
    assert_eq!(person.last().unwrap()["type"], "end");
}

#[test]
fn webhook_down_at_start_then_up_and_mqtt_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let hook_port = free_port();
    let mqtt_port = free_port();
    let _broker = Broker::start(dir.path(), mqtt_port);
    let got = subscribe(mqtt_port, "t-both");
    let body = format!(
        "device = \"hook3\"\n[stdout]\nenabled = true\n[mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n[webhook]\nurl = \"http://127.0.0.1:{hook_port}/\"\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nkeywords = [\"yes\"]\n"
    );
    let cfg = write_config(dir.path(), &body);
    let (mut child, lines, log) = spawn_strixd_logged(&cfg);
    // Nothing listens on the webhook port yet: MQTT delivers meanwhile.
    let t0 = Instant::now();
    while got.lock().unwrap().len() < 4 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "MQTT held back by the webhook"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let hook = HookServer::start_on(hook_port, 0, None);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    std::thread::sleep(Duration::from_millis(300));
    let persisted = alerts(&lines);
    let log = log.lock().unwrap().join("\n");
    assert!(log.contains("connect: Connection refused"), "{log}");
    assert!(log.contains("delivering again"), "{log}");
    let posted: Vec<Value> = hook
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(posted, persisted);
    assert_all_delivered(&persisted, &got.lock().unwrap());
}

#[test]
fn mqtt5_refused_publish_keeps_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Broker::start(dir.path(), port);
    broker.stop();
    // Anonymous clients may publish availability and sensor states but
    // not events: MQTT 5 answers those with PUBACK "not authorized".
    std::fs::write(
        dir.path().join("acl"),
        "topic readwrite strix/+/availability\ntopic readwrite strix/+/person\ntopic readwrite strix/+/vehicle\ntopic readwrite strix/+/voice\ntopic readwrite strix/+/keyword\ntopic readwrite homeassistant/#\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in [dir.path().to_path_buf(), dir.path().join("acl")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let conf = std::fs::read_to_string(&broker.conf).unwrap();
    std::fs::write(
        &broker.conf,
        format!("{conf}acl_file {}\n", dir.path().join("acl").display()),
    )
    .unwrap();
    broker.restart();
    let body = format!(
        "device = \"v5acl\"\n[stdout]\nenabled = true\n[shutdown]\ndrain_timeout_s = 3\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nprotocol = \"5\"\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nkeywords = [\"yes\"]\n"
    );
    let cfg = write_config(dir.path(), &body);
    let (mut child, lines, log) = spawn_strixd_logged(&cfg);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    std::thread::sleep(Duration::from_millis(200));
    let n = alerts(&lines).len();
    let log = log.lock().unwrap().join("\n");
    assert!(
        log.contains("broker refused a publish (NotAuthorized); the alert stays in the outbox"),
        "{log}"
    );
    assert!(
        log.contains(&format!("{n} alert(s) stay in the outbox")),
        "{log}"
    );
}

#[cfg(feature = "alsa")]
#[test]
fn unknown_alsa_device_is_a_media_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "device = \"x\"\n[speech]\nsource = \"alsa:nosuchpcm\"\nmodel = \"@KWS@\"\n",
    );
    let out = Command::new(strixd())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("ALSA capture device \"nosuchpcm\" not found (input devices:"),
        "{err}"
    );
}

/// Waits until a collected log line contains `what` (the process still running).
fn wait_log(child: &mut Child, log: &Lines, what: &str, limit: Duration) {
    let t0 = Instant::now();
    while !log.lock().unwrap().iter().any(|l| l.contains(what)) {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("strixd exited ({s}) before {what:?}");
        }
        assert!(t0.elapsed() < limit, "no {what:?} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_panicking_stage_ends_strixd_with_exit_6() {
    let dir = tempfile::tempdir().unwrap();
    // Looping sources never end by themselves: strixd used to swallow the
    // stage's panic and wait forever (the speech capture blocked on a queue
    // nobody read), or exit 0 with a non-looping source.
    let speech = write_config(
        dir.path(),
        "device = \"p1\"\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nloop = true\n",
    );
    let clip = clip("one.y4m", &[false, true, false]);
    let cam_dir = dir.path().join("cam");
    std::fs::create_dir(&cam_dir).unwrap();
    let camera = write_config(
        &cam_dir,
        &format!(
            "device = \"p2\"\n{}",
            CAMERA
                .replace("@CLIP@", &clip.display().to_string())
                .replace("@RT@", "false\nloop = true")
        ),
    );
    for (cfg, stage, thread) in [
        (&speech, "vad", "speech"),
        (&speech, "kws", "speech"),
        (&camera, "detect", "detect0"),
        (&camera, "track", "track"),
    ] {
        let (mut child, _, log) = spawn_strixd_logged_with(cfg, &["--panic-in", stage]);
        assert_eq!(
            wait_exit(&mut child, Duration::from_secs(30)),
            6,
            "{stage}: {:#?}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
        let log = log.lock().unwrap().join("\n");
        assert!(
            log.contains(&format!("thread '{thread}' panicked"))
                && log.contains("exiting with code 6"),
            "{stage}: {log}"
        );
    }
    // The switch is checked like any argument.
    let out = Command::new(strixd())
        .args(["--config"])
        .arg(&speech)
        .args(["--panic-in", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sigterm_stops_a_looping_source_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    // Not paced and never ending, with an MQTT upstream that is down (its
    // thread retrying) and the metrics server up.
    let (port, metrics_port) = (free_port(), free_port());
    let cfg = write_config(
        dir.path(),
        &format!(
            "device = \"t1\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nloop = true\n"
        ),
    );
    let (mut child, _, log) = spawn_strixd_logged(&cfg);
    wait_log(&mut child, &log, "running", Duration::from_secs(30));
    // Let the audio queue fill up and alerts pile up in the outbox.
    std::thread::sleep(Duration::from_secs(2));
    let m = scrape(&format!("127.0.0.1:{metrics_port}"));
    assert!(m.contains("strix_queue_depth{queue=\"audio\"}"), "{m}");
    let t0 = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let code = wait_exit(&mut child, Duration::from_secs(10));
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let log = log.lock().unwrap().join("\n");
    assert_eq!(code, 0, "{log}");
    assert!(
        took < Duration::from_secs(3),
        "stopping took {took:?}: {log}"
    );
    assert!(!log.contains("had not stopped"), "{log}");
    assert!(log.contains("stay in the outbox"), "{log}");
}

#[test]
fn check_refuses_missing_or_wrong_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_pki(d);
    let check = |mqtt: &str| {
        let cfg = write_config(
            d,
            &format!("device = \"k1\"\n[mqtt]\nhost = \"localhost\"\ntls = true\n{mqtt}\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\n"),
        );
        let out = Command::new(strixd())
            .arg("--config")
            .arg(&cfg)
            .arg("--check")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) =
        check("ca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client.key\"");
    assert_eq!(code, 0, "{err}");
    for (mqtt, key, why) in [
        ("ca_file = \"missing.pem\"", "mqtt.ca_file", "missing.pem"),
        (
            "ca_file = \"client.key\"",
            "mqtt.ca_file",
            "no PEM certificates",
        ),
        ("ca_file = \"client.ext\"", "mqtt.ca_file", "client.ext"),
        (
            "ca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"missing.key\"",
            "mqtt.client_key",
            "missing.key",
        ),
        // Someone else's key: it does not match the certificate.
        (
            "ca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"server.key\"",
            "mqtt.client_key",
            "client.pem",
        ),
    ] {
        let (code, err) = check(mqtt);
        assert_eq!(code, 2, "{mqtt}: {err}");
        assert!(
            err.contains(&format!("config key `{key}`")) && err.contains(why),
            "{mqtt}: {err}"
        );
    }
}

#[test]
fn a_truncated_outbox_is_moved_aside_and_strixd_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    // No broker: the alerts stay in the outbox.
    let port = free_port();
    let cfg = write_config(
        dir.path(),
        &format!("device = \"o1\"\n[shutdown]\ndrain_timeout_s = 1\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\n"),
    );
    let (mut child, _, log) = spawn_strixd_logged(&cfg);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("stay in the outbox")),
        "{:#?}",
        log.lock().unwrap()
    );
    // What a power cut can leave: the file cut short.
    let outbox = dir.path().join("outbox.redb");
    let bytes = std::fs::read(&outbox).unwrap();
    std::fs::write(&outbox, &bytes[..bytes.len() / 2]).unwrap();
    let (mut child, _, log) = spawn_strixd_logged(&cfg);
    let code = wait_exit(&mut child, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(200));
    let log = log.lock().unwrap().join("\n");
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("was damaged beyond repair") && log.contains("a new, empty outbox started"),
        "{log}"
    );
    assert!(!log.contains("thread 'main' panicked"), "{log}");
    let moved: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("outbox.redb.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(std::fs::read(&moved[0]).unwrap(), &bytes[..bytes.len() / 2]);
    assert!(log.contains(&moved[0].display().to_string()), "{log}");
    // The new outbox holds this run's alerts, and opens cleanly next time.
    let (mut child, _, log) = spawn_strixd_logged(&cfg);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    std::thread::sleep(Duration::from_millis(200));
    let log = log.lock().unwrap().join("\n");
    assert!(
        !log.contains("outbox.redb:") && !log.contains("damaged"),
        "{log}"
    );
}

//! Live audio through ALSA (the file plugin stands in for a device).

use super::harness::*;

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

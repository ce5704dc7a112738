//! Process life: documented exit codes, panicking stages, SIGTERM, a damaged outbox.

use super::harness::*;

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

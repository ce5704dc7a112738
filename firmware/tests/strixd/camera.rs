//! Camera pipeline end to end: clips and URLs to person events over MQTT.

use super::harness::*;

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

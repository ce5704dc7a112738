//! Home Assistant: no phantom keyword after an HA restart, discovery with
//! `sw_version` and the event and image entities, snapshots over MQTT and
//! HTTP, `/healthz`.

use super::harness::*;

/// One message seen by [`Watch`]: topic, payload, retain flag.
pub type Seen = (String, Vec<u8>, bool);

/// A fresh (clean session) MQTT subscriber to `filters`, as an HA that
/// (re)starts: it gets the retained messages first, then live ones.
pub fn watch(port: u16, id: &str, filters: &[&str]) -> Arc<Mutex<Vec<Seen>>> {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(true);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut conn) = Client::new(o, 64);
    let got = Arc::new(Mutex::new(Vec::new()));
    let ready = Arc::new(Mutex::new(0usize));
    let (g, r) = (got.clone(), ready.clone());
    let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
    let n = filters.len();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for f in &filters {
                        let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => *r.lock().unwrap() += 1,
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    g.lock()
                        .unwrap()
                        .push((p.topic.clone(), p.payload.to_vec(), p.retain))
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let t0 = Instant::now();
    while *ready.lock().unwrap() < n {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "watcher did not subscribe"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    got
}

/// `GET path` on `addr`: (status code, content type, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or("")
        .to_string();
    (code, ctype, raw[split + 4..].to_vec())
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "no {what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills strixd when a failed assertion unwinds the test.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn is_jpeg(b: &[u8]) -> bool {
    b.len() > 1000 && b.starts_with(&[0xFF, 0xD8])
}

#[test]
fn ha_sees_no_phantom_keyword_and_gets_entities_snapshots_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    // An HA that was there before strixd started.
    let live = watch(port, "t-ha-live", &["homeassistant/#", "strix/ha1/#"]);
    let http = format!("127.0.0.1:{}", free_port());
    let clip = clip("one.y4m", &[false, true, false]);
    let body = format!(
        "device = \"ha1\"\n[stdout]\nenabled = true\n[metrics]\nlisten = \"{http}\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n{}\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nrealtime = true\nloop = true\nkeywords = [\"yes\"]\n",
        CAMERA
            .replace("@CLIP@", &clip.display().to_string())
            .replace("@RT@", "true\nloop = true")
    );
    let cfg = write_config(dir.path(), &body);
    let (child, lines) = spawn_strixd(&cfg);
    let mut child = Reap(child);
    let seen = |topic: &str| -> Vec<(Vec<u8>, bool)> {
        live.lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, p, r)| (p.clone(), *r))
            .collect()
    };
    wait_for("keyword event", Duration::from_secs(30), || {
        !seen("strix/ha1/keyword/event").is_empty()
    });
    // (A live subscriber sees no retain flag: the broker sets it only on
    // messages it replays from its store, as to `fresh` below.)
    wait_for("snapshot on MQTT", Duration::from_secs(60), || {
        seen("strix/ha1/camera/snapshot")
            .iter()
            .any(|(p, _)| is_jpeg(p))
    });
    let ev: Value = serde_json::from_slice(&seen("strix/ha1/keyword/event")[0].0).unwrap();
    assert_eq!(ev["event_type"], "yes", "{ev}");
    let kw = seen("strix/ha1/keyword");
    assert!(kw.iter().any(|(p, _)| p == b"ON"), "keyword ON: {kw:?}");
    // Discovery: sw_version everywhere, the event and image entities.
    let disc: Vec<(String, Value)> = live
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _, _)| t.starts_with("homeassistant/") && t.ends_with("/config"))
        .map(|(t, p, _)| (t.clone(), serde_json::from_slice(p).unwrap()))
        .collect();
    assert!(disc.len() >= 6, "{disc:?}");
    for (t, v) in &disc {
        assert_eq!(
            v["device"]["sw_version"],
            env!("CARGO_PKG_VERSION"),
            "{t}: {v}"
        );
    }
    let get = |t: &str| {
        disc.iter()
            .find(|(x, _)| x == t)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {t} in {disc:?}"))
    };
    let event = get("homeassistant/event/strix_ha1/keyword/config");
    assert_eq!(event["state_topic"], "strix/ha1/keyword/event");
    assert_eq!(event["event_types"], serde_json::json!(["yes"]));
    let image = get("homeassistant/image/strix_ha1/camera_snapshot/config");
    assert_eq!(image["image_topic"], "strix/ha1/camera/snapshot");
    assert_eq!(image["content_type"], "image/jpeg");
    // HA restarts after the keyword: a fresh subscriber gets no retained ON.
    let fresh = watch(port, "t-ha-fresh", &["strix/ha1/#"]);
    std::thread::sleep(Duration::from_millis(1500));
    let retained: Vec<(String, String)> = fresh
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, r)| *r)
        .filter(|(t, _, _)| !t.ends_with("/snapshot"))
        .map(|(t, p, _)| (t.clone(), String::from_utf8_lossy(p).to_string()))
        .collect();
    for s in ["keyword", "voice"] {
        let t = format!("strix/ha1/{s}");
        let r: Vec<&String> = retained
            .iter()
            .filter(|(x, _)| *x == t)
            .map(|(_, p)| p)
            .collect();
        assert_eq!(r, ["OFF"], "{t} retained after a keyword: {retained:?}");
    }
    assert!(
        !retained.iter().any(|(t, _)| t == "strix/ha1/keyword/event"),
        "keyword events are not retained: {retained:?}"
    );
    assert!(
        fresh
            .lock()
            .unwrap()
            .iter()
            .any(|(t, p, r)| t == "strix/ha1/camera/snapshot" && *r && is_jpeg(p)),
        "the latest snapshot is retained for a restarted HA"
    );
    // HTTP: the latest snapshot (any camera, and by name), health.
    let (code, ctype, jpeg) = http_get(&http, "/snapshot/latest.jpg");
    assert_eq!((code, ctype.as_str()), (200, "image/jpeg"));
    assert!(is_jpeg(&jpeg));
    let snap_files: Vec<PathBuf> = alerts(&lines)
        .iter()
        .filter_map(|a| a["snapshot"].as_str().map(PathBuf::from))
        .collect();
    assert!(
        snap_files
            .iter()
            .any(|p| std::fs::read(p).is_ok_and(|b| b == jpeg)),
        "/snapshot/latest.jpg is one of the events' snapshots"
    );
    assert_eq!(http_get(&http, "/snapshot/camera.jpg").0, 200);
    assert_eq!(http_get(&http, "/snapshot/garage.jpg").0, 404);
    let (code, ctype, body) = http_get(&http, "/healthz");
    let health: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (code, ctype.as_str()),
        (200, "application/json"),
        "{health}"
    );
    assert_eq!(health["status"], "ok");
    assert_eq!(
        health["pipelines"]["running"],
        health["pipelines"]["started"]
    );
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(15)), 0);
}

#[test]
fn healthz_is_503_once_the_pipelines_have_ended() {
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let body = format!(
        "device = \"ha2\"\n[metrics]\nlisten = \"{http}\"\n[shutdown]\nstay = true\n[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nkeywords = [\"yes\"]\n"
    );
    let cfg = write_config(dir.path(), &body);
    let (child, lines) = spawn_strixd(&cfg);
    let mut child = Reap(child);
    wait_for("two keywords", Duration::from_secs(30), || {
        alerts(&lines)
            .iter()
            .filter(|a| a["kind"] == "keyword")
            .count()
            == 2
    });
    wait_for("503", Duration::from_secs(10), || {
        http_get(&http, "/healthz").0 == 503
    });
    let (_, _, body) = http_get(&http, "/healthz");
    let health: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "unhealthy", "{health}");
    assert_eq!(health["pipelines"]["running"], 0, "{health}");
    assert_eq!(health["pipelines"]["started"], 2, "{health}");
    assert_eq!(health["outbox"], "ok", "{health}");
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(15)), 0);
}

//! Alert delivery: broker and webhook outages, restarts, MQTT 5, nothing lost.

use super::harness::*;

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

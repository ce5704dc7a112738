//! Alerts upstream: the sink thread that persists every alert in the outbox
//! (and prints it on stdout), and the MQTT publisher on tokio.
//!
//! MQTT delivery: each connection gets a fresh rumqttc client and event
//! loop (so no stale in-flight state survives a reconnect); every alert still
//! in the outbox is published QoS 1, oldest first, at most `inflight` at once,
//! and removed from the outbox on its PUBACK. A broker outage or restart makes
//! the next connection send the unacknowledged alerts again with the same
//! `msg_id` (duplicates carry the same id; nothing is lost).
//!
//! MQTT 3.1.1 and 5 use rumqttc's two clients; both are reduced to the few
//! things the publisher needs ([`MqttClient`], [`Ev`]), so the delivery logic
//! is one.

use crossbeam_channel::Receiver;
use rumqttc::{Outgoing, QoS, TlsConfiguration, Transport};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

use crate::alert::{Alert, AlertKind, AlertType};
use crate::config::{MqttConfig, MqttProtocol};
use crate::metrics::Metrics;
use crate::outbox::{Outbox, Queue};

/// Labels that drive the `vehicle` binary sensor.
const VEHICLES: [&str; 5] = ["car", "truck", "bus", "motorcycle", "bicycle"];

/// Home Assistant binary sensors: (name, device class).
pub const SENSORS: [(&str, &str); 4] = [
    ("person", "occupancy"),
    ("vehicle", "motion"),
    ("voice", "sound"),
    ("keyword", "sound"),
];

/// Sensors whose `ON` is momentary (a voice, a keyword): published without
/// the retain flag, so a Home Assistant (or any subscriber) that connects
/// later never sees a stale `ON`; their `OFF` is retained and is published
/// retained at every connect, which also clears an `ON` an older strixd left.
pub const MOMENTARY: [&str; 2] = ["voice", "keyword"];

/// Largest MQTT packet strixd sends (a snapshot above it is not published).
const MAX_PACKET: usize = 8 << 20;

/// What the sink hands the MQTT publisher besides the alerts themselves.
#[derive(Debug, Clone, PartialEq)]
pub enum StateUpdate {
    /// A binary sensor's state: sensor (`person`) and payload (`ON`).
    State(String, String),
    /// A keyword was spotted: the HA `event` entity's event.
    Keyword {
        label: String,
        score: f32,
        id: String,
    },
    /// A camera's new snapshot file: published (retained) to its image topic.
    Snapshot {
        camera: String,
        path: std::path::PathBuf,
    },
}

/// The sink: persists each alert (outbox first), prints it when `stdout`,
/// derives the binary-sensor states, and wakes the publishers. Without an
/// upstream (`remove_after_print`) printing is the delivery, so the alert is
/// removed from the outbox's main queue once the line is flushed.
pub struct Sink {
    pub outbox: Arc<Outbox>,
    pub metrics: Arc<Metrics>,
    pub stdout: bool,
    pub remove_after_print: bool,
    /// One per publisher (MQTT, webhook), each woken on every alert.
    pub notify: Vec<Arc<Notify>>,
    pub states: Option<mpsc::UnboundedSender<StateUpdate>>,
}

impl Sink {
    /// Prints and removes what a previous run left undelivered (no-broker mode).
    pub fn flush_leftovers(&self) -> Result<(), String> {
        if !self.remove_after_print {
            return Ok(());
        }
        loop {
            let batch = self
                .outbox
                .pending(Queue::Main, 0, 256)
                .map_err(|e| e.to_string())?;
            if batch.is_empty() {
                return Ok(());
            }
            let mut out = std::io::stdout().lock();
            for (_, bytes) in &batch {
                out.write_all(bytes)
                    .and_then(|_| out.write_all(b"\n"))
                    .map_err(|e| e.to_string())?;
            }
            out.flush().map_err(|e| e.to_string())?;
            let keys: Vec<u64> = batch.iter().map(|(k, _)| *k).collect();
            self.outbox
                .remove(Queue::Main, &keys)
                .map_err(|e| e.to_string())?;
        }
    }

    /// Runs until every pipeline has dropped its sender.
    pub fn run(self, rx: Receiver<Alert>) {
        let mut active: HashMap<&'static str, HashSet<String>> = HashMap::new();
        for mut a in rx {
            let key = loop {
                match self.outbox.push(&mut a) {
                    Ok(k) => break k,
                    Err(e) => {
                        // Never drop an alert: retry until the disk takes it.
                        crate::log_error!("strixd: outbox: {e}; retrying");
                        self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        self.metrics.outbox_failing.store(true, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            };
            self.metrics.outbox_failing.store(false, Ordering::Relaxed);
            crate::log_debug!(
                "strixd: stored {} {:?} {:?} {} ({})",
                a.msg_id,
                a.kind,
                a.kind_of_message,
                a.label,
                a.id
            );
            if let Some(s) = &a.snapshot {
                self.metrics.set_snapshot(&a.source, s.into());
            }
            self.metrics.alerts.fetch_add(1, Ordering::Relaxed);
            if self.stdout {
                if let Ok(line) = serde_json::to_string(&a) {
                    let mut out = std::io::stdout().lock();
                    let ok = writeln!(out, "{line}").and_then(|_| out.flush()).is_ok();
                    if ok && self.remove_after_print {
                        if let Err(e) = self.outbox.remove(Queue::Main, &[key]) {
                            crate::log_error!("strixd: outbox: {e}");
                        }
                    }
                }
            }
            if let Some(tx) = &self.states {
                for (k, v) in state_changes(&mut active, &a) {
                    let _ = tx.send(StateUpdate::State(k, v));
                }
                if a.kind == AlertKind::Keyword {
                    let _ = tx.send(StateUpdate::Keyword {
                        label: a.label.clone(),
                        score: a.score,
                        id: a.id.clone(),
                    });
                }
                // `new` and `update` may (re)write the snapshot; `end`
                // names the same file again.
                if let (Some(s), false) = (&a.snapshot, a.kind_of_message == AlertType::End) {
                    let _ = tx.send(StateUpdate::Snapshot {
                        camera: a.source.clone(),
                        path: s.into(),
                    });
                }
            }
            for n in &self.notify {
                n.notify_one();
            }
        }
    }
}

/// Binary-sensor state changes caused by one alert: (sensor, `ON`/`OFF`).
fn state_changes(
    active: &mut HashMap<&'static str, HashSet<String>>,
    a: &Alert,
) -> Vec<(String, String)> {
    let sensor = match a.kind {
        AlertKind::Keyword => return vec![("keyword".into(), "ON".into())],
        AlertKind::Voice => "voice",
        AlertKind::Object if a.label == "person" => "person",
        AlertKind::Object if VEHICLES.contains(&a.label.as_str()) => "vehicle",
        AlertKind::Object => return vec![],
    };
    let set = active.entry(sensor).or_default();
    let was = !set.is_empty();
    match a.kind_of_message {
        AlertType::New | AlertType::Update => {
            set.insert(a.id.clone());
        }
        AlertType::End => {
            set.remove(&a.id);
        }
    }
    let now = !set.is_empty();
    if was != now {
        vec![(sensor.into(), if now { "ON" } else { "OFF" }.into())]
    } else {
        vec![]
    }
}

/// Everything the MQTT publisher needs.
pub struct Mqtt {
    pub cfg: MqttConfig,
    pub device: String,
    pub board: String,
    /// The keywords (HA `event` entity's event types).
    pub keywords: Vec<String>,
    /// Camera names (an HA `image` entity each).
    pub cameras: Vec<String>,
    pub outbox: Arc<Outbox>,
    pub metrics: Arc<Metrics>,
    pub notify: Arc<Notify>,
    pub states: mpsc::UnboundedReceiver<StateUpdate>,
    pub stop: Arc<AtomicBool>,
}

impl Mqtt {
    fn topic(&self, suffix: &str) -> String {
        format!("{}/{}/{}", self.cfg.topic_prefix, self.device, suffix)
    }

    fn client_id(&self) -> String {
        self.cfg
            .client_id
            .clone()
            .unwrap_or_else(|| format!("strixd-{}", self.device))
    }

    fn transport(&self) -> Result<Option<Transport>, String> {
        if !self.cfg.tls {
            return Ok(None);
        }
        let client = match (&self.cfg.client_cert, &self.cfg.client_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        let c = crate::tls::client_config(self.cfg.ca_file.as_deref(), client)?;
        Ok(Some(Transport::Tls(TlsConfiguration::Rustls(c))))
    }

    fn options_v4(&self) -> Result<rumqttc::MqttOptions, String> {
        let mut o =
            rumqttc::MqttOptions::new(self.client_id(), self.cfg.host.clone(), self.cfg.port);
        o.set_keep_alive(Duration::from_secs(self.cfg.keep_alive_s));
        o.set_clean_session(true);
        o.set_inflight(self.cfg.inflight.saturating_add(16));
        o.set_max_packet_size(1 << 20, MAX_PACKET);
        o.set_last_will(rumqttc::LastWill::new(
            self.topic("availability"),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        if let Some(u) = &self.cfg.username {
            o.set_credentials(u.clone(), self.cfg.password.clone().unwrap_or_default());
        }
        if let Some(t) = self.transport()? {
            o.set_transport(t);
        }
        Ok(o)
    }

    fn options_v5(&self) -> Result<rumqttc::v5::MqttOptions, String> {
        use rumqttc::v5::mqttbytes::v5::LastWill;
        let mut o =
            rumqttc::v5::MqttOptions::new(self.client_id(), self.cfg.host.clone(), self.cfg.port);
        o.set_keep_alive(Duration::from_secs(self.cfg.keep_alive_s));
        o.set_clean_start(true);
        o.set_outgoing_inflight_upper_limit(self.cfg.inflight.saturating_add(16));
        // MQTT 5: the largest packet the broker may send us; what we send is
        // bounded by the broker's own maximum (CONNACK).
        o.set_max_packet_size(Some(1 << 20));
        o.set_last_will(LastWill::new(
            self.topic("availability"),
            "offline",
            qos_v5(QoS::AtLeastOnce),
            true,
            None,
        ));
        if let Some(u) = &self.cfg.username {
            o.set_credentials(u.clone(), self.cfg.password.clone().unwrap_or_default());
        }
        if let Some(t) = self.transport()? {
            o.set_transport(t);
        }
        Ok(o)
    }

    /// The device block every discovery message carries.
    fn ha_device(&self) -> serde_json::Value {
        serde_json::json!({
            "identifiers": [format!("strix_{}", self.device)],
            "name": format!("Strix {}", self.device),
            "manufacturer": "Strix",
            "model": self.board,
            "sw_version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// Home Assistant discovery messages (topic, JSON), all retained: the
    /// binary sensors, the keyword `event` entity, an `image` entity per
    /// camera.
    pub fn discovery(&self) -> Vec<(String, String)> {
        let dp = &self.cfg.discovery_prefix;
        let dev = &self.device;
        let mut out: Vec<(String, String)> = SENSORS
            .iter()
            .map(|(name, class)| {
                let mut p = serde_json::json!({
                    "name": name,
                    "unique_id": format!("strix_{dev}_{name}"),
                    "object_id": format!("strix_{dev}_{name}"),
                    "state_topic": self.topic(name),
                    "availability_topic": self.topic("availability"),
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    "device_class": class,
                    "device": self.ha_device(),
                });
                if *name == "keyword" {
                    p["off_delay"] = serde_json::json!(3);
                }
                let topic = format!("{dp}/binary_sensor/strix_{dev}/{name}/config");
                (topic, p.to_string())
            })
            .collect();
        if !self.keywords.is_empty() {
            let p = serde_json::json!({
                "name": "keyword event",
                "unique_id": format!("strix_{dev}_keyword_event"),
                "object_id": format!("strix_{dev}_keyword_event"),
                "state_topic": self.topic("keyword/event"),
                "event_types": self.keywords,
                "availability_topic": self.topic("availability"),
                "device": self.ha_device(),
            });
            out.push((
                format!("{dp}/event/strix_{dev}/keyword/config"),
                p.to_string(),
            ));
        }
        for cam in &self.cameras {
            let p = serde_json::json!({
                "name": format!("{cam} snapshot"),
                "unique_id": format!("strix_{dev}_{cam}_snapshot"),
                "object_id": format!("strix_{dev}_{cam}_snapshot"),
                "image_topic": self.topic(&format!("{cam}/snapshot")),
                "content_type": "image/jpeg",
                "availability_topic": self.topic("availability"),
                "device": self.ha_device(),
            });
            out.push((
                format!("{dp}/image/strix_{dev}/{cam}_snapshot/config"),
                p.to_string(),
            ));
        }
        out
    }

    /// Runs the publisher on a current-thread tokio runtime until `stop`.
    pub fn run(mut self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                crate::log_error!("strixd: mqtt: cannot start tokio: {e}");
                return;
            }
        };
        rt.block_on(async move { self.main_loop().await });
    }

    async fn main_loop(&mut self) {
        let mut backoff = Duration::from_millis(250);
        let mut held = Held::default();
        while !self.stop.load(Ordering::Relaxed) {
            match self.connection(&mut held).await {
                Ok(()) => return,
                Err(e) => {
                    crate::log_warn!(
                        "strixd: mqtt {}:{}: {e}; retrying in {:?}",
                        self.cfg.host,
                        self.cfg.port,
                        backoff
                    );
                }
            }
            self.metrics.mqtt_connected.store(false, Ordering::Relaxed);
            let until = tokio::time::Instant::now() + backoff;
            while tokio::time::Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection's life. `Ok` means stopped on request.
    async fn connection(&mut self, held: &mut Held) -> Result<(), String> {
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        // The event loop runs in its own task; this task only reads its
        // events, reduced to `Ev`, from a channel (cancel-safe in select!).
        let (client, poller) = match self.cfg.protocol {
            MqttProtocol::V311 => {
                let (client, mut el) = rumqttc::AsyncClient::new(self.options_v4()?, 512);
                let poller = tokio::spawn(async move {
                    loop {
                        let ev = el.poll().await.map(ev_v4).map_err(|e| error_v4(&e));
                        let failed = ev.is_err();
                        if ev_tx.send(ev).is_err() || failed {
                            return;
                        }
                    }
                });
                (MqttClient::V4(client), poller)
            }
            MqttProtocol::V5 => {
                let (client, mut el) = rumqttc::v5::AsyncClient::new(self.options_v5()?, 512);
                let poller = tokio::spawn(async move {
                    loop {
                        let ev = el.poll().await.map(ev_v5).map_err(|e| error_v5(&e));
                        let failed = ev.is_err();
                        if ev_tx.send(ev).is_err() || failed {
                            return;
                        }
                    }
                });
                (MqttClient::V5(client), poller)
            }
        };
        let r = self.serve(&client, &mut ev_rx, held).await;
        poller.abort();
        r
    }

    async fn serve(
        &mut self,
        client: &MqttClient,
        ev_rx: &mut mpsc::UnboundedReceiver<Result<Ev, String>>,
        held: &mut Held,
    ) -> Result<(), String> {
        let Held { states, snapshots } = held;
        let events_topic = self.topic("events");
        let window = self.cfg.inflight as usize;
        // QoS 1 publishes in request order: `Some(key)` for outbox alerts,
        // `None` for control messages; matched to packet ids as the event
        // loop reports them.
        let mut unassigned: VecDeque<Option<u64>> = VecDeque::new();
        let mut by_pkid: HashMap<u16, Option<u64>> = HashMap::new();
        let mut cursor = 0u64;
        let mut connected = false;
        let qos1 = |q: &mut VecDeque<Option<u64>>,
                    topic: String,
                    payload: Vec<u8>,
                    retain: bool,
                    key: Option<u64>| {
            client.publish(topic, QoS::AtLeastOnce, retain, payload)?;
            q.push_back(key);
            Ok::<(), String>(())
        };
        loop {
            if self.stop.load(Ordering::Relaxed) {
                if connected {
                    let _ = client.publish(
                        self.topic("availability"),
                        QoS::AtMostOnce,
                        true,
                        b"offline".to_vec(),
                    );
                    client.disconnect();
                    let _ = tokio::time::timeout(Duration::from_millis(500), ev_rx.recv()).await;
                }
                return Ok(());
            }
            // New states (keep the latest of each, publish when connected).
            while let Ok(u) = self.states.try_recv() {
                match u {
                    StateUpdate::State(k, v) => {
                        if connected {
                            let retain = !MOMENTARY.contains(&k.as_str()) || v == "OFF";
                            qos1(
                                &mut unassigned,
                                self.topic(&k),
                                v.clone().into_bytes(),
                                retain,
                                None,
                            )?;
                        }
                        states.insert(k, v);
                    }
                    // An event, not a state: lost while disconnected (the
                    // alert itself waits in the outbox), never retained.
                    StateUpdate::Keyword { label, score, id } if connected => {
                        let p = serde_json::json!({
                            "event_type": label, "score": score, "id": id,
                        });
                        qos1(
                            &mut unassigned,
                            self.topic("keyword/event"),
                            p.to_string().into_bytes(),
                            false,
                            None,
                        )?;
                    }
                    StateUpdate::Keyword { .. } => {}
                    StateUpdate::Snapshot { camera, path } => {
                        if connected {
                            self.publish_snapshot(client, &mut unassigned, &camera, &path)?;
                        }
                        snapshots.insert(camera, path);
                    }
                }
            }
            if connected {
                let in_flight = by_pkid.values().filter(|v| v.is_some()).count()
                    + unassigned.iter().filter(|v| v.is_some()).count();
                if in_flight < window {
                    let batch = self
                        .outbox
                        .pending(Queue::Main, cursor, window - in_flight)
                        .map_err(|e| e.to_string())?;
                    for (k, bytes) in batch {
                        qos1(&mut unassigned, events_topic.clone(), bytes, false, Some(k))?;
                        self.metrics.mqtt_published.fetch_add(1, Ordering::Relaxed);
                        cursor = k + 1;
                    }
                }
            }
            let ev = tokio::select! {
                ev = ev_rx.recv() => ev,
                _ = self.notify.notified() => continue,
                _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
            };
            let mut acked = Vec::new();
            let mut next = ev;
            while let Some(ev) = next {
                match ev {
                    Ok(Ev::ConnAck) => {
                        connected = true;
                        self.metrics.mqtt_connected.store(true, Ordering::Relaxed);
                        self.metrics.mqtt_connects.fetch_add(1, Ordering::Relaxed);
                        crate::log_info!(
                            "strixd: mqtt: connected to {}:{} (MQTT {})",
                            self.cfg.host,
                            self.cfg.port,
                            self.cfg.protocol.name()
                        );
                        qos1(
                            &mut unassigned,
                            self.topic("availability"),
                            b"online".to_vec(),
                            true,
                            None,
                        )?;
                        if self.cfg.discovery {
                            for (t, p) in self.discovery() {
                                qos1(&mut unassigned, t, p.into_bytes(), true, None)?;
                            }
                        }
                        for (s, _) in SENSORS {
                            let v = states.get(s).cloned().unwrap_or_else(|| "OFF".into());
                            if MOMENTARY.contains(&s) {
                                // Clears a retained ON (an older strixd's).
                                qos1(&mut unassigned, self.topic(s), b"OFF".to_vec(), true, None)?;
                                if v == "OFF" {
                                    continue;
                                }
                            }
                            let retain = !MOMENTARY.contains(&s);
                            qos1(&mut unassigned, self.topic(s), v.into_bytes(), retain, None)?;
                        }
                        for (cam, path) in snapshots.iter() {
                            self.publish_snapshot(client, &mut unassigned, cam, path)?;
                        }
                    }
                    Ok(Ev::Sent(pkid)) if pkid != 0 => {
                        if let std::collections::hash_map::Entry::Vacant(e) = by_pkid.entry(pkid) {
                            if let Some(key) = unassigned.pop_front() {
                                e.insert(key);
                            }
                        }
                    }
                    Ok(Ev::Acked(pkid)) => {
                        if let Some(Some(k)) = by_pkid.remove(&pkid) {
                            acked.push(k);
                        }
                    }
                    Ok(Ev::Refused(pkid, why)) => {
                        // MQTT 5 only. The alert stays in the outbox and is
                        // sent again on the next connection.
                        if let Some(key) = by_pkid.remove(&pkid) {
                            crate::log_warn!(
                                "strixd: mqtt: broker refused a publish ({why}); {}",
                                if key.is_some() {
                                    "the alert stays in the outbox"
                                } else {
                                    "a status message"
                                }
                            );
                            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.remove(&acked)?;
                        return Err(e);
                    }
                }
                next = ev_rx.try_recv().ok();
            }
            self.remove(&acked)?;
        }
    }

    /// Publishes a snapshot file, retained, to `<prefix>/<device>/<camera>/snapshot`
    /// (the HA image entity's `image_topic`). A file that is gone (pruned)
    /// or too large is skipped with a log line.
    fn publish_snapshot(
        &self,
        client: &MqttClient,
        unassigned: &mut VecDeque<Option<u64>>,
        camera: &str,
        path: &std::path::Path,
    ) -> Result<(), String> {
        match std::fs::read(path) {
            Ok(jpeg) if jpeg.len() + 1024 <= MAX_PACKET => {
                client.publish(
                    self.topic(&format!("{camera}/snapshot")),
                    QoS::AtLeastOnce,
                    true,
                    jpeg,
                )?;
                unassigned.push_back(None);
                crate::log_debug!("strixd: mqtt: snapshot {} published", path.display());
            }
            Ok(jpeg) => crate::log_warn!(
                "strixd: mqtt: snapshot {} is {} bytes, over the {MAX_PACKET}-byte packet limit: not published",
                path.display(),
                jpeg.len()
            ),
            Err(e) => crate::log_warn!("strixd: mqtt: snapshot {}: {e}", path.display()),
        }
        Ok(())
    }

    fn remove(&self, acked: &[u64]) -> Result<(), String> {
        if acked.is_empty() {
            return Ok(());
        }
        self.outbox
            .remove(Queue::Main, acked)
            .map_err(|e| e.to_string())?;
        self.metrics
            .mqtt_acked
            .fetch_add(acked.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// What the publisher keeps across connections: the binary sensors' states
/// and each camera's latest snapshot, published again at each connect.
#[derive(Default)]
struct Held {
    states: BTreeMap<String, String>,
    snapshots: BTreeMap<String, std::path::PathBuf>,
}

/// A connected rumqttc client of either protocol.
enum MqttClient {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl MqttClient {
    fn publish(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        let queued = match self {
            MqttClient::V4(c) => c.try_publish(topic, qos, retain, payload).is_ok(),
            MqttClient::V5(c) => c.try_publish(topic, qos_v5(qos), retain, payload).is_ok(),
        };
        if queued {
            Ok(())
        } else {
            Err("the MQTT client's request queue is closed or full".into())
        }
    }

    fn disconnect(&self) {
        match self {
            MqttClient::V4(c) => {
                let _ = c.try_disconnect();
            }
            MqttClient::V5(c) => {
                let _ = c.try_disconnect();
            }
        }
    }
}

fn qos_v5(q: QoS) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    match q {
        QoS::AtMostOnce => Q5::AtMostOnce,
        QoS::AtLeastOnce => Q5::AtLeastOnce,
        QoS::ExactlyOnce => Q5::ExactlyOnce,
    }
}

/// What the publisher needs from an event loop event.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    ConnAck,
    /// A QoS 1 publish went out with this packet id.
    Sent(u16),
    /// Its PUBACK arrived: delivered.
    Acked(u16),
    /// MQTT 5: its PUBACK carries a failure reason.
    Refused(u16, String),
    Other,
}

fn ev_v4(ev: rumqttc::Event) -> Ev {
    use rumqttc::{Event, Packet};
    match ev {
        Event::Incoming(Packet::ConnAck(_)) => Ev::ConnAck,
        Event::Outgoing(Outgoing::Publish(pkid)) => Ev::Sent(pkid),
        Event::Incoming(Packet::PubAck(a)) => Ev::Acked(a.pkid),
        _ => Ev::Other,
    }
}

fn ev_v5(ev: rumqttc::v5::Event) -> Ev {
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
    use rumqttc::v5::Event;
    match ev {
        Event::Incoming(Packet::ConnAck(_)) => Ev::ConnAck,
        Event::Outgoing(Outgoing::Publish(pkid)) => Ev::Sent(pkid),
        // "No matching subscribers" is still accepted by the broker.
        Event::Incoming(Packet::PubAck(a)) => match a.reason {
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ev::Acked(a.pkid),
            r => Ev::Refused(a.pkid, format!("{r:?}")),
        },
        _ => Ev::Other,
    }
}

const CREDENTIALS_HINT: &str = "check mqtt.username and mqtt.password";

fn error_v4(e: &rumqttc::ConnectionError) -> String {
    use rumqttc::ConnectReturnCode as C;
    match e {
        rumqttc::ConnectionError::ConnectionRefused(
            c @ (C::BadUserNamePassword | C::NotAuthorized),
        ) => {
            format!("the broker refused the login ({c:?}): {CREDENTIALS_HINT}")
        }
        e => e.to_string(),
    }
}

fn error_v5(e: &rumqttc::v5::ConnectionError) -> String {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as C;
    match e {
        rumqttc::v5::ConnectionError::ConnectionRefused(
            c @ (C::BadUserNamePassword | C::NotAuthorized | C::BadAuthenticationMethod),
        ) => format!("the broker refused the login ({c:?}): {CREDENTIALS_HINT}"),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: AlertKind, label: &str, id: &str, t: AlertType) -> Alert {
        Alert {
            msg_id: String::new(),
            kind_of_message: t,
            kind,
            id: id.into(),
            device: "d".into(),
            source: "c".into(),
            label: label.into(),
            score: 1.0,
            top_score: 1.0,
            bbox: None,
            zones: vec![],
            track_id: None,
            snapshot: None,
            start_time: 0.0,
            end_time: None,
            stream_time: 0.0,
        }
    }

    #[test]
    fn sensor_states_follow_events() {
        let mut act = HashMap::new();
        let on = |v: Vec<(String, String)>| {
            v.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            on(state_changes(
                &mut act,
                &alert(AlertKind::Object, "person", "a", AlertType::New)
            )),
            ["person=ON"]
        );
        assert!(state_changes(
            &mut act,
            &alert(AlertKind::Object, "person", "b", AlertType::New)
        )
        .is_empty());
        assert!(state_changes(
            &mut act,
            &alert(AlertKind::Object, "person", "a", AlertType::End)
        )
        .is_empty());
        assert_eq!(
            on(state_changes(
                &mut act,
                &alert(AlertKind::Object, "person", "b", AlertType::End)
            )),
            ["person=OFF"]
        );
        assert_eq!(
            on(state_changes(
                &mut act,
                &alert(AlertKind::Object, "car", "c", AlertType::New)
            )),
            ["vehicle=ON"]
        );
        assert!(state_changes(
            &mut act,
            &alert(AlertKind::Object, "dog", "d", AlertType::New)
        )
        .is_empty());
        assert_eq!(
            on(state_changes(
                &mut act,
                &alert(AlertKind::Keyword, "yes", "k", AlertType::New)
            )),
            ["keyword=ON"]
        );
        assert_eq!(
            on(state_changes(
                &mut act,
                &alert(AlertKind::Voice, "voice", "v", AlertType::New)
            )),
            ["voice=ON"]
        );
    }
}

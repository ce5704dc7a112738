//! Alerts: the messages strixd sends upstream (Frigate-like JSON).

use serde::{Deserialize, Serialize};

/// Lifecycle step of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertType {
    New,
    Update,
    End,
}

/// What produced the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A tracked object (camera).
    Object,
    /// Voice activity (speech).
    Voice,
    /// A spotted keyword (speech; a single `new` message, no `end`).
    Keyword,
}

/// One message on `<prefix>/<device>/events`.
///
/// `msg_id` is unique per message (redelivery repeats it: consumers dedupe on
/// it); `id` is the event's id, shared by its `new`, `update` and `end`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Set by the outbox when the alert is persisted.
    #[serde(default)]
    pub msg_id: String,
    #[serde(rename = "type")]
    pub kind_of_message: AlertType,
    pub kind: AlertKind,
    pub id: String,
    pub device: String,
    /// Camera name or `mic`.
    pub source: String,
    pub label: String,
    /// Score of this observation (detector score, keyword posterior; 1 for voice).
    pub score: f32,
    pub top_score: f32,
    /// `[x0, y0, x1, y1]` in fractions of the image (objects only).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "box")]
    pub bbox: Option<[f32; 4]>,
    /// Zones the object has entered so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
    /// JPEG snapshot with the boxes drawn (objects only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Unix seconds of the event's start and (for `end`) its end.
    pub start_time: f64,
    #[serde(default)]
    pub end_time: Option<f64>,
    /// Seconds into the source stream (file position) of this observation;
    /// for voice `end` the end of voice, for keywords the centre of the word.
    pub stream_time: f64,
}

/// Unix time now, seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A new event id: Frigate-style `<unix time>-<random suffix>`.
pub fn new_event_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = unix_now();
    // A per-process random part keeps ids unique across restarts within
    // the same microsecond; the counter within the process.
    format!("{t:.6}-{:06x}{n:x}", process_nonce() & 0xff_ffff)
}

/// Random bits chosen once per process (from /dev/urandom, else time and pid).
pub fn process_nonce() -> u64 {
    use std::sync::OnceLock;
    static NONCE: OnceLock<u64> = OnceLock::new();
    *NONCE.get_or_init(|| {
        let mut b = [0u8; 8];
        let ok = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
            .is_ok();
        if ok {
            u64::from_le_bytes(b)
        } else {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ ((std::process::id() as u64) << 32)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let a = Alert {
            msg_id: "m".into(),
            kind_of_message: AlertType::New,
            kind: AlertKind::Object,
            id: new_event_id(),
            device: "d".into(),
            source: "cam".into(),
            label: "person".into(),
            score: 0.8,
            top_score: 0.9,
            bbox: Some([0.1, 0.2, 0.3, 0.4]),
            zones: vec!["yard".into()],
            track_id: Some(3),
            snapshot: Some("/s.jpg".into()),
            start_time: 1.0,
            end_time: None,
            stream_time: 0.5,
        };
        let v: serde_json::Value = serde_json::to_value(&a).unwrap();
        assert_eq!(v["type"], "new");
        assert_eq!(v["kind"], "object");
        assert_eq!(v["box"][1], serde_json::json!(0.2f32));
        assert_eq!(v["track_id"], 3);
        let back: Alert = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn ids_unique() {
        let a: std::collections::HashSet<String> = (0..1000).map(|_| new_event_id()).collect();
        assert_eq!(a.len(), 1000);
    }
}

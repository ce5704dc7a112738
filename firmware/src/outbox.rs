//! The durable outbox: every alert is committed to a redb file
//! (`Durability::Immediate`: fsynced before `push` returns) before anything
//! tries to send it, and removed only after delivery is confirmed (MQTT PUBACK,
//! or a flushed stdout line when stdout is the sink).
//!
//! Keys are a persistent, strictly increasing sequence number; an alert's
//! `msg_id` is `<sequence>-<process nonce>`, unique across restarts.
//! Bounded: when `max_entries` undelivered alerts are stored, pushing another
//! evicts the oldest `update` message (else the oldest message) and counts it
//! (`evicted()`, persisted).
//!
//! Each sink has its own [`Queue`] (a table): `push` stores the alert in every
//! queue the outbox was opened with, in one transaction and under one key, so
//! every sink sends the same `msg_id`, and each sink removes only what it
//! delivered. The bound applies to each queue.

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::alert::{Alert, AlertType};

/// The main queue (MQTT, or stdout without an upstream): named `alerts` as
/// before queues existed, so older outbox files keep their alerts.
const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");
const WEBHOOK: TableDefinition<u64, &[u8]> = TableDefinition::new("webhook");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// How far from the oldest entry eviction looks for an `update` to drop.
const EVICT_SCAN: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {msg}")]
    Db { path: String, msg: String },
    #[error("outbox: cannot encode alert: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A sink's queue of undelivered alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// MQTT, or stdout when no upstream is configured.
    Main,
    /// The HTTP webhook.
    Webhook,
}

impl Queue {
    fn table(self) -> TableDefinition<'static, u64, &'static [u8]> {
        match self {
            Queue::Main => ALERTS,
            Queue::Webhook => WEBHOOK,
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

pub struct Outbox {
    db: Database,
    path: String,
    max_entries: u64,
    queues: Vec<Queue>,
    /// Entries per queue, indexed by `Queue::index`.
    lens: [AtomicU64; 2],
    evicted: AtomicU64,
}

impl Outbox {
    /// Opens (or creates) the outbox file with the given sink queues (at
    /// least one). Alerts stored in other queues by an earlier configuration
    /// stay in the file untouched.
    pub fn open(path: &Path, max_entries: u64, queues: &[Queue]) -> Result<Outbox, OutboxError> {
        let p = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| OutboxError::Db {
                path: p.clone(),
                msg: e.to_string(),
            })?;
        }
        let db = Database::create(path).map_err(|e| OutboxError::Db {
            path: p.clone(),
            msg: e.to_string(),
        })?;
        let mut queues = queues.to_vec();
        queues.dedup();
        if queues.is_empty() {
            return Err(OutboxError::Db {
                path: p,
                msg: "no delivery queue".into(),
            });
        }
        let ob = Outbox {
            db,
            path: p,
            max_entries,
            queues,
            lens: Default::default(),
            evicted: AtomicU64::new(0),
        };
        // Create the tables and read the counters.
        let tx = ob.db.begin_write().map_err(|e| ob.e(e))?;
        let evicted = {
            for q in &ob.queues {
                let t = tx.open_table(q.table()).map_err(|e| ob.e(e))?;
                ob.lens[q.index()].store(t.len().map_err(|e| ob.e(e))?, Ordering::Relaxed);
            }
            let m = tx.open_table(META).map_err(|e| ob.e(e))?;
            let ev = m
                .get("evicted")
                .map_err(|e| ob.e(e))?
                .map(|v| v.value())
                .unwrap_or(0);
            ev
        };
        tx.commit().map_err(|e| ob.e(e))?;
        ob.evicted.store(evicted, Ordering::Relaxed);
        Ok(ob)
    }

    fn e(&self, e: impl std::fmt::Display) -> OutboxError {
        OutboxError::Db {
            path: self.path.clone(),
            msg: e.to_string(),
        }
    }

    /// Undelivered alerts stored, summed over the queues (an alert waiting
    /// for two sinks counts twice).
    pub fn len(&self) -> u64 {
        self.queues
            .iter()
            .map(|q| self.lens[q.index()].load(Ordering::Relaxed))
            .sum()
    }

    /// Undelivered alerts in one queue.
    pub fn queue_len(&self, q: Queue) -> u64 {
        self.lens[q.index()].load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Alerts evicted because the outbox was full (over the file's life).
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Assigns `alert.msg_id`, stores the alert durably in every queue and
    /// returns its key. When this returns `Ok`, the alert survives a crash or
    /// power cut.
    pub fn push(&self, alert: &mut Alert) -> Result<u64, OutboxError> {
        let mut tx = self.db.begin_write().map_err(|e| self.e(e))?;
        tx.set_durability(Durability::Immediate);
        let mut lens = Vec::with_capacity(self.queues.len());
        let (key, evicted) = {
            let mut m = tx.open_table(META).map_err(|e| self.e(e))?;
            let key = m
                .get("next")
                .map_err(|e| self.e(e))?
                .map(|v| v.value())
                .unwrap_or(1);
            m.insert("next", key + 1).map_err(|e| self.e(e))?;
            let mut evicted = m
                .get("evicted")
                .map_err(|e| self.e(e))?
                .map(|v| v.value())
                .unwrap_or(0);
            alert.msg_id = format!("{key}-{:08x}", crate::alert::process_nonce() as u32);
            let bytes = serde_json::to_vec(alert)?;
            for q in &self.queues {
                let mut t = tx.open_table(q.table()).map_err(|e| self.e(e))?;
                let mut len = t.len().map_err(|e| self.e(e))?;
                while len >= self.max_entries {
                    let victim = {
                        let mut oldest = None;
                        let mut update = None;
                        for item in t.iter().map_err(|e| self.e(e))?.take(EVICT_SCAN) {
                            let (k, v) = item.map_err(|e| self.e(e))?;
                            oldest.get_or_insert(k.value());
                            let is_update = serde_json::from_slice::<Alert>(v.value())
                                .map(|a| a.kind_of_message == AlertType::Update)
                                .unwrap_or(false);
                            if is_update {
                                update = Some(k.value());
                                break;
                            }
                        }
                        update.or(oldest)
                    };
                    let Some(victim) = victim else { break };
                    t.remove(victim).map_err(|e| self.e(e))?;
                    len -= 1;
                    evicted += 1;
                }
                t.insert(key, bytes.as_slice()).map_err(|e| self.e(e))?;
                lens.push((q.index(), len + 1));
            }
            m.insert("evicted", evicted).map_err(|e| self.e(e))?;
            (key, evicted)
        };
        tx.commit().map_err(|e| self.e(e))?;
        for (i, len) in lens {
            self.lens[i].store(len, Ordering::Relaxed);
        }
        self.evicted.store(evicted, Ordering::Relaxed);
        Ok(key)
    }

    /// Up to `limit` alerts of queue `q` with key `>= from`, oldest first, as
    /// `(key, JSON bytes)`. `q` must be one the outbox was opened with.
    pub fn pending(
        &self,
        q: Queue,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, OutboxError> {
        let tx = self.db.begin_read().map_err(|e| self.e(e))?;
        let t = tx.open_table(q.table()).map_err(|e| self.e(e))?;
        let mut out = Vec::new();
        for item in t.range(from..).map_err(|e| self.e(e))?.take(limit) {
            let (k, v) = item.map_err(|e| self.e(e))?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Removes alerts queue `q` delivered (unknown keys, e.g. evicted ones,
    /// are ignored). The other queues keep their copies.
    pub fn remove(&self, q: Queue, keys: &[u64]) -> Result<(), OutboxError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write().map_err(|e| self.e(e))?;
        tx.set_durability(Durability::Immediate);
        let len = {
            let mut t = tx.open_table(q.table()).map_err(|e| self.e(e))?;
            for k in keys {
                t.remove(*k).map_err(|e| self.e(e))?;
            }
            t.len().map_err(|e| self.e(e))?
        };
        tx.commit().map_err(|e| self.e(e))?;
        self.lens[q.index()].store(len, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertKind;

    fn alert(t: AlertType) -> Alert {
        Alert {
            msg_id: String::new(),
            kind_of_message: t,
            kind: AlertKind::Object,
            id: "e".into(),
            device: "d".into(),
            source: "c".into(),
            label: "person".into(),
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
    fn persists_across_reopen_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.redb");
        let ids: Vec<String> = {
            let ob = Outbox::open(&p, 100, &[Queue::Main]).unwrap();
            (0..5)
                .map(|_| {
                    let mut a = alert(AlertType::New);
                    ob.push(&mut a).unwrap();
                    a.msg_id
                })
                .collect()
        };
        let ob = Outbox::open(&p, 100, &[Queue::Main]).unwrap();
        assert_eq!(ob.len(), 5);
        let got = ob.pending(Queue::Main, 0, 10).unwrap();
        let back: Vec<String> = got
            .iter()
            .map(|(_, b)| serde_json::from_slice::<Alert>(b).unwrap().msg_id)
            .collect();
        assert_eq!(back, ids);
        ob.remove(Queue::Main, &[got[0].0, got[1].0]).unwrap();
        assert_eq!(ob.len(), 3);
        assert_eq!(ob.pending(Queue::Main, 0, 10).unwrap()[0].0, got[2].0);
        // Keys keep increasing after reopen: ids stay unique.
        let mut a = alert(AlertType::End);
        let k = ob.push(&mut a).unwrap();
        assert!(k > got[4].0);
        assert!(!ids.contains(&a.msg_id));
    }

    #[test]
    fn evicts_updates_first_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&dir.path().join("o.redb"), 3, &[Queue::Main]).unwrap();
        for t in [
            AlertType::New,
            AlertType::Update,
            AlertType::End,
            AlertType::New,
        ] {
            ob.push(&mut alert(t)).unwrap();
        }
        assert_eq!(ob.len(), 3);
        assert_eq!(ob.evicted(), 1);
        let kinds: Vec<AlertType> = ob
            .pending(Queue::Main, 0, 10)
            .unwrap()
            .iter()
            .map(|(_, b)| serde_json::from_slice::<Alert>(b).unwrap().kind_of_message)
            .collect();
        assert_eq!(kinds, [AlertType::New, AlertType::End, AlertType::New]);
        // No update left: the oldest goes.
        ob.push(&mut alert(AlertType::End)).unwrap();
        assert_eq!(ob.evicted(), 2);
        assert_eq!(ob.len(), 3);
    }

    #[test]
    fn queues_share_keys_and_ids_and_drain_independently() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.redb");
        let ob = Outbox::open(&p, 100, &[Queue::Main, Queue::Webhook]).unwrap();
        let mut a = alert(AlertType::New);
        let k = ob.push(&mut a).unwrap();
        ob.push(&mut alert(AlertType::End)).unwrap();
        assert_eq!(
            (ob.queue_len(Queue::Main), ob.queue_len(Queue::Webhook)),
            (2, 2)
        );
        assert_eq!(ob.len(), 4);
        let m = ob.pending(Queue::Main, 0, 10).unwrap();
        let w = ob.pending(Queue::Webhook, 0, 10).unwrap();
        assert_eq!(m, w, "same keys and bytes (so the same msg_id)");
        assert_eq!(m[0].0, k);
        ob.remove(Queue::Webhook, &[k]).unwrap();
        assert_eq!(
            (ob.queue_len(Queue::Main), ob.queue_len(Queue::Webhook)),
            (2, 1)
        );
        drop(ob);
        // Reopened with the webhook only: its queue is as it was left.
        let ob = Outbox::open(&p, 100, &[Queue::Webhook]).unwrap();
        assert_eq!(ob.len(), 1);
        let back: Alert =
            serde_json::from_slice(&ob.pending(Queue::Webhook, 0, 10).unwrap()[0].1).unwrap();
        assert_ne!(back.msg_id, a.msg_id);
    }
}

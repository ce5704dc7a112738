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
//!
//! Damage: an unclean stop (power cut, kill) loses nothing committed; redb
//! repairs the file at the next open. Damaged pages (an SD card's decayed or
//! torn writes) and a file cut short are found at open by an integrity check
//! of every page in use. redb repairs what it can (rebuilding its allocation
//! state, or rolling back to an older intact commit, which loses the writes
//! after it). A file that stays damaged is moved aside (kept as found, renamed
//! `<path>.corrupt-<unix seconds>`) and a new outbox started: **the alerts
//! still undelivered in it are not sent**, rather than the device failing at
//! every start. All of it is reported in [`Opened`] for the caller to log;
//! none of it is a panic.

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

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
    opened: Opened,
}

/// What [`Outbox::open`] found in the file, for the caller to log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opened {
    /// The file was not closed cleanly (power cut, kill, crash) and redb
    /// repaired it (normal after an unclean stop; nothing committed is lost).
    pub repaired: bool,
    /// The integrity check found damage redb could repair: its allocation
    /// state rebuilt (nothing lost), or the file rolled back to an older
    /// intact commit, losing the writes after it (an alert stored last, or a
    /// delivery's removal: that alert is sent again). redb does not say which.
    pub integrity_repaired: bool,
    /// The file was damaged beyond redb's repair (or made redb panic): it was
    /// moved to this path, kept for inspection, and a new empty outbox
    /// started. The undelivered alerts it held are not sent.
    pub quarantined: Option<(PathBuf, String)>,
}

/// redb's magic number, the first bytes of every redb file. A file that
/// does not start with it is not an outbox: strixd refuses it rather than
/// moving someone's file aside.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Why loading the file failed.
enum LoadError {
    /// The file is damaged: redb reported corruption or panicked.
    Damaged(String),
    /// Anything else (I/O, lock held by another process, format version):
    /// the file may be fine, so it is left alone.
    Other(String),
}

impl From<redb::Error> for LoadError {
    fn from(e: redb::Error) -> Self {
        match &e {
            redb::Error::Corrupted(_) | redb::Error::LockPoisoned(_) => {
                LoadError::Damaged(e.to_string())
            }
            // A file shorter than its header says (truncated by a power cut),
            // or without the magic number redb writes last when it creates one.
            redb::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
                ) =>
            {
                LoadError::Damaged(e.to_string())
            }
            _ => LoadError::Other(e.to_string()),
        }
    }
}

/// An open, checked database with its counters.
struct Loaded {
    db: Database,
    lens: [u64; 2],
    evicted: u64,
    repaired: bool,
    integrity_repaired: bool,
}

/// Opens (or creates) the redb file, checks its integrity (every page's
/// checksum: redb verifies them only when repairing, and a damaged page read
/// later would fail or panic in a delivery thread), creates the queues'
/// tables and reads the counters.
fn load(path: &Path, queues: &[Queue]) -> Result<Loaded, LoadError> {
    let repairing = Arc::new(AtomicBool::new(false));
    let flag = repairing.clone();
    let mut db = redb::Builder::new()
        .set_repair_callback(move |_| flag.store(true, Ordering::Relaxed))
        .create(path)
        .map_err(redb::Error::from)?;
    let intact = db.check_integrity().map_err(redb::Error::from)?;
    let tx = db.begin_write().map_err(redb::Error::from)?;
    let mut lens = [0u64; 2];
    let evicted = {
        for q in queues {
            let t = tx.open_table(q.table()).map_err(redb::Error::from)?;
            lens[q.index()] = t.len().map_err(redb::Error::from)?;
        }
        let m = tx.open_table(META).map_err(redb::Error::from)?;
        let ev = m
            .get("evicted")
            .map_err(redb::Error::from)?
            .map(|v| v.value())
            .unwrap_or(0);
        ev
    };
    tx.commit().map_err(redb::Error::from)?;
    Ok(Loaded {
        db,
        lens,
        evicted,
        repaired: repairing.load(Ordering::Relaxed),
        integrity_repaired: !intact,
    })
}

/// [`load`], with a panic inside redb (which a truncated or damaged file can
/// cause) turned into [`LoadError::Damaged`]. redb's own `Drop` does nothing
/// while unwinding, so the caught panic leaves the file closed.
fn load_guarded(path: &Path, queues: &[Queue]) -> Result<Loaded, LoadError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(path, queues))) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(LoadError::Damaged(format!("redb panicked: {msg}")))
        }
    }
}

/// The first page and the length of an existing outbox file, read before
/// redb opens it.
struct Found {
    head: Vec<u8>,
    len: u64,
}

/// Bytes of a file's start kept by [`inspect`]: the redb header (320 bytes)
/// is all that redb rewrites in place before it finds a file beyond repair.
const HEAD: u64 = 4096;

fn inspect(path: &Path) -> std::io::Result<Option<Found>> {
    use std::io::Read;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let mut head = Vec::with_capacity(HEAD as usize);
    f.by_ref().take(HEAD).read_to_end(&mut head)?;
    Ok(Some(Found { head, len }))
}

/// Whether a file starting with `head` can be a redb file: empty, starting
/// with (a prefix of) redb's magic number, or with zeros where it goes
/// (redb writes the magic number last when it creates a file, so a power
/// cut during creation leaves zeros there).
fn could_be_redb(head: &[u8]) -> bool {
    let n = head.len().min(REDB_MAGIC.len());
    head[..n] == REDB_MAGIC[..n] || head[..n].iter().all(|&b| b == 0)
}

/// Puts back the start and the length of a damaged file as [`inspect`]
/// found them, undoing what a failed repair rewrote in place (the header)
/// or grew, so the file moved aside is the damaged file as it was.
fn restore(path: &Path, found: &Found) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&found.head)?;
    f.set_len(found.len)?;
    f.sync_all()
}

/// Moves a damaged outbox to `<path>.corrupt-<unix seconds>[-n]` (a rename
/// in the same directory: the bytes are kept, nothing is deleted).
fn quarantine(path: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{secs}"));
    let mut to = PathBuf::from(&name);
    let mut n = 1;
    while to.exists() {
        let mut alt = name.clone();
        alt.push(format!("-{n}"));
        to = PathBuf::from(alt);
        n += 1;
    }
    std::fs::rename(path, &to)?;
    Ok(to)
}

impl Outbox {
    /// Opens (or creates) the outbox file with the given sink queues (at
    /// least one). Alerts stored in other queues by an earlier configuration
    /// stay in the file untouched.
    ///
    /// A damaged file never makes this panic. In order:
    /// * a file not closed cleanly is repaired by redb (nothing committed is
    ///   lost: [`Opened::repaired`]);
    /// * every page in use is checked against its checksum; redb repairs
    ///   what it can ([`Opened::integrity_repaired`]);
    /// * a file still damaged (or that makes redb panic) is put back as it
    ///   was found (redb rewrites its header while trying), renamed
    ///   `<path>.corrupt-<unix seconds>`, and a new empty outbox is created
    ///   ([`Opened::quarantined`]): the device keeps working instead of
    ///   failing at every start. The undelivered alerts of the old file are
    ///   not sent.
    ///
    /// Errors (the file is left alone): a directory or file that cannot be
    /// read or written, a file that is not a redb file (a wrong
    /// `outbox.path`), a file another process holds open, a redb file format
    /// this build cannot read, or tables of the wrong types.
    pub fn open(path: &Path, max_entries: u64, queues: &[Queue]) -> Result<Outbox, OutboxError> {
        let p = path.display().to_string();
        let fail = |msg: String| OutboxError::Db {
            path: p.clone(),
            msg,
        };
        let mut queues = queues.to_vec();
        queues.dedup();
        if queues.is_empty() {
            return Err(fail("no delivery queue".into()));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
        let found = inspect(path).map_err(|e| fail(e.to_string()))?;
        if found.as_ref().is_some_and(|f| !could_be_redb(&f.head)) {
            return Err(fail(
                "not a redb file (it does not start with redb's magic number): check \
                 outbox.path; if it is a damaged outbox, move it aside and strixd starts \
                 a new one"
                    .into(),
            ));
        }
        let mut opened = Opened::default();
        let loaded = match load_guarded(path, &queues) {
            Ok(l) => l,
            Err(LoadError::Other(msg)) => return Err(fail(msg)),
            Err(LoadError::Damaged(why)) => {
                if let Some(f) = &found {
                    // Best effort: the move below matters more.
                    let _ = restore(path, f);
                }
                let to = quarantine(path).map_err(|e| {
                    fail(format!(
                        "damaged ({why}) and it cannot be moved aside ({e}): move or delete it \
                         and strixd starts a new outbox"
                    ))
                })?;
                opened.quarantined = Some((to, why.clone()));
                load_guarded(path, &queues).map_err(|e| {
                    let (LoadError::Other(msg) | LoadError::Damaged(msg)) = e;
                    fail(format!(
                        "damaged ({why}); moved aside, but a new outbox cannot be created: {msg}"
                    ))
                })?
            }
        };
        opened.repaired = loaded.repaired;
        opened.integrity_repaired = loaded.integrity_repaired;
        Ok(Outbox {
            db: loaded.db,
            path: p,
            max_entries,
            queues,
            lens: loaded.lens.map(AtomicU64::new),
            evicted: AtomicU64::new(loaded.evicted),
            opened,
        })
    }

    /// What opening found in the file (repairs, a quarantined file).
    pub fn opened(&self) -> &Opened {
        &self.opened
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

    /// The `snapshot` paths of every undelivered alert (all queues): the
    /// snapshot retention keeps these files. One read transaction over at
    /// most `max_entries` small JSON values per queue.
    pub fn snapshot_refs(&self) -> Result<std::collections::HashSet<String>, OutboxError> {
        let mut out = std::collections::HashSet::new();
        let tx = self.db.begin_read().map_err(|e| self.e(e))?;
        for q in &self.queues {
            let t = tx.open_table(q.table()).map_err(|e| self.e(e))?;
            for item in t.iter().map_err(|e| self.e(e))? {
                let (_, v) = item.map_err(|e| self.e(e))?;
                if let Ok(a) = serde_json::from_slice::<serde_json::Value>(v.value()) {
                    if let Some(s) = a.get("snapshot").and_then(|s| s.as_str()) {
                        out.insert(s.to_string());
                    }
                }
            }
        }
        Ok(out)
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

    /// An outbox file with `n` alerts (each a few hundred bytes, so they
    /// span many pages), closed cleanly; returns its bytes and the alerts'
    /// stored JSON.
    fn sample_file(p: &Path, n: usize) -> (Vec<u8>, Vec<(u64, Vec<u8>)>) {
        let ob = Outbox::open(p, 10_000, &[Queue::Main, Queue::Webhook]).unwrap();
        for i in 0..n {
            let mut a = alert(AlertType::New);
            a.label = format!("label-{i}-{}", "x".repeat(200));
            ob.push(&mut a).unwrap();
        }
        let stored = ob.pending(Queue::Main, 0, n + 1).unwrap();
        assert_eq!(stored.len(), n);
        drop(ob);
        (std::fs::read(p).unwrap(), stored)
    }

    /// Opens a damaged copy and checks the contract: no panic, no error, and
    /// either (a) the file was moved aside byte for byte and a new, empty,
    /// working outbox started, or (b) the file was kept and what it yields
    /// is exactly what was stored (all of it, unless redb reported a
    /// rollback: then a subset), and it keeps working across a reopen.
    /// Returns whether the damage was detected (moved aside, or rolled back).
    fn check_damaged(p: &Path, bytes: &[u8], stored: &[(u64, Vec<u8>)], what: &str) -> bool {
        std::fs::write(p, bytes).unwrap();
        let ob = Outbox::open(p, 10_000, &[Queue::Main, Queue::Webhook])
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let quarantined = ob.opened().quarantined.clone();
        let detected = quarantined.is_some() || ob.opened().integrity_repaired;
        if let Some((to, why)) = &quarantined {
            assert!(!why.is_empty(), "{what}");
            let kept = std::fs::read(to).unwrap();
            let diff = kept.iter().zip(bytes).position(|(a, b)| a != b);
            assert!(
                kept.len() == bytes.len() && diff.is_none(),
                "{what}: moved aside intact ({why}): {} bytes, was {}, first difference at {diff:?}",
                kept.len(),
                bytes.len()
            );
            assert_eq!(ob.len(), 0, "{what}: a new outbox");
            std::fs::remove_file(to).unwrap();
        } else {
            let got = ob.pending(Queue::Main, 0, stored.len() + 1).unwrap();
            if ob.opened().integrity_repaired {
                assert!(got.iter().all(|g| stored.contains(g)), "{what}: {got:?}");
            } else {
                assert_eq!(got, stored, "{what}: no silent change");
            }
        }
        let mut a = alert(AlertType::End);
        let k = ob.push(&mut a).unwrap();
        ob.remove(Queue::Webhook, &[k]).unwrap();
        drop(ob);
        let ob = Outbox::open(p, 10_000, &[Queue::Main, Queue::Webhook])
            .unwrap_or_else(|e| panic!("{what}, reopened: {e}"));
        assert!(ob.opened().quarantined.is_none(), "{what}: reopened clean");
        let last = ob.pending(Queue::Main, k, 1).unwrap();
        assert_eq!(last.len(), 1, "{what}: the new alert survived");
        detected
    }

    #[test]
    fn truncated_files_never_panic_and_are_moved_aside_or_kept_exact() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.redb");
        let (bytes, stored) = sample_file(&p, 150);
        let len = bytes.len();
        assert!(len > 64 * 1024, "{len}");
        let mut detected = 0;
        for cut in [
            1,
            5,
            9,
            100,
            511,
            512,
            4095,
            4096,
            4097,
            3 * 4096 + 17,
            len / 4,
            len / 2,
            len - 4096,
            len - 1,
        ] {
            let what = format!("truncated to {cut} of {len} bytes");
            detected += check_damaged(&p, &bytes[..cut], &stored, &what) as usize;
        }
        assert_eq!(detected, 14, "every truncation is detected");
    }

    #[test]
    fn damaged_pages_never_panic_and_are_moved_aside_or_kept_exact() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.redb");
        let (bytes, stored) = sample_file(&p, 150);
        // One byte in every page in use (not all zeros) and in the first
        // unused one, at offsets that vary from page to page (page headers,
        // entries, checksums, the end).
        let pages: Vec<usize> = {
            let zero = |p: &usize| bytes[p * 4096..(p + 1) * 4096].iter().all(|&b| b == 0);
            let all = 0..bytes.len() / 4096;
            let mut used: Vec<usize> = all.clone().filter(|p| !zero(p)).collect();
            used.extend(all.clone().find(zero));
            used
        };
        assert!(pages.len() > 50, "{}", pages.len());
        let mut detected = 0;
        for (n, &page) in pages.iter().enumerate() {
            let at = [9, 40, 200, 1000, 2048, 4095][n % 6];
            let mut b = bytes.clone();
            let i = page * 4096 + at;
            b[i] ^= 0x5a;
            let what = format!("byte {i} (page {page}) flipped");
            detected += check_damaged(&p, &b, &stored, &what) as usize;
        }
        assert!(detected > 0, "some flips must be detected");
        // A power cut while redb created the file: zeros where the magic
        // number goes (written last).
        let mut b = bytes.clone();
        b[..9].fill(0);
        assert!(check_damaged(&p, &b, &stored, "no magic number"));
    }

    #[test]
    fn a_file_that_is_not_redb_or_is_in_use_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.redb");
        std::fs::write(&p, b"device = \"porch\"\n").unwrap();
        let e = Outbox::open(&p, 10, &[Queue::Main])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("o.redb") && e.contains("not a redb file"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"device = \"porch\"\n");
        std::fs::remove_file(&p).unwrap();
        let first = Outbox::open(&p, 10, &[Queue::Main]).unwrap();
        let e = Outbox::open(&p, 10, &[Queue::Main])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("already open"), "{e}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing moved"
        );
        drop(first);
    }
}

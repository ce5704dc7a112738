//! Snapshot retention: `camera.snapshots.max_age_days` and `max_mb` prune
//! the snapshot folder's `.jpg` files, oldest (by modification time) first,
//! never one an undelivered alert in the outbox still names.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

impl Retention {
    pub fn from_config(c: &crate::config::SnapshotConfig) -> Retention {
        Retention {
            max_age: c
                .max_age_days
                .map(|d| Duration::from_secs_f64(d * 86_400.0)),
            max_bytes: c.max_mb.map(|mb| (mb * 1048576.0) as u64),
        }
    }

    pub fn is_active(&self) -> bool {
        self.max_age.is_some() || self.max_bytes.is_some()
    }
}

/// What one [`prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub deleted: usize,
    pub freed: u64,
    /// Files over a limit kept because an undelivered alert names them.
    pub kept_referenced: usize,
    /// Bytes of `.jpg` files left.
    pub left: u64,
}

/// Deletes `.jpg` files in `dir` older than `r.max_age` at `now`, then the
/// oldest until the rest fit in `r.max_bytes`; files in `referenced`
/// (full paths as events carry them) are kept and still counted.
pub fn prune(
    dir: &Path,
    r: &Retention,
    now: SystemTime,
    referenced: &HashSet<String>,
) -> std::io::Result<Pruned> {
    let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if p.extension().is_none_or(|x| x != "jpg") {
            continue;
        }
        let Ok(m) = e.metadata() else { continue };
        if m.is_file() {
            files.push((m.modified().unwrap_or(now), m.len(), p));
        }
    }
    files.sort();
    let mut out = Pruned {
        left: files.iter().map(|f| f.1).sum(),
        ..Pruned::default()
    };
    let keep = |p: &Path| referenced.contains(&p.display().to_string());
    for (t, len, p) in &files {
        let old = r
            .max_age
            .is_some_and(|a| now.duration_since(*t).unwrap_or_default() > a);
        let over = r.max_bytes.is_some_and(|b| out.left > b);
        if !old && !over {
            continue;
        }
        if keep(p) {
            out.kept_referenced += 1;
            continue;
        }
        match std::fs::remove_file(p) {
            Ok(()) => {
                out.deleted += 1;
                out.freed += len;
                out.left -= len;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.left -= len,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The newest `.jpg` in `dir`, if any (served as the latest snapshot
/// until this run takes one).
pub fn newest(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "jpg"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prunes_by_age_then_bytes_oldest_first_keeping_referenced() {
        let d = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        // a (10 days), b (5 days, referenced), c (3 days), d (1 day), e (now).
        let mut paths = Vec::new();
        for (i, age) in [10u32, 5, 3, 1, 0].iter().enumerate() {
            let p = d.path().join(format!("{}.jpg", (b'a' + i as u8) as char));
            std::fs::write(&p, vec![0u8; 1000]).unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(now - day * *age).unwrap();
            paths.push(p);
        }
        std::fs::write(d.path().join("notes.txt"), "x").unwrap();
        let refs: HashSet<String> = [paths[1].display().to_string()].into();
        let r = Retention {
            max_age: Some(day * 4),
            max_bytes: None,
        };
        let got = prune(d.path(), &r, now, &refs).unwrap();
        assert_eq!((got.deleted, got.kept_referenced), (1, 1), "{got:?}");
        assert!(!paths[0].exists() && paths[1].exists());
        let r = Retention {
            max_age: None,
            max_bytes: Some(2500),
        };
        let got = prune(d.path(), &r, now, &refs).unwrap();
        // 4 files, 4000 B: b is kept (referenced), c and ... go until <= 2500.
        assert_eq!(got.deleted, 2, "{got:?}");
        assert!(paths[1].exists() && !paths[2].exists() && !paths[3].exists());
        assert!(paths[4].exists() && d.path().join("notes.txt").exists());
        assert_eq!(got.left, 2000);
        assert_eq!(newest(d.path()), Some(paths[4].clone()));
    }
}

//! Signed models and bundles: with `trusted_key` set in the config, strixd
//! starts only when every model it would load carries a valid detached
//! signature (`MODEL.strix.sig`, made by `strix sign` or `strix flash`)
//! from that key, and, when the config sits in a signed bundle (a
//! `MANIFEST` beside it, as `strix flash` installs it), only when the
//! bundle verifies: manifest signature, every file's SHA-256, no file added.
//! The signature format is the `strix-sign` crate's.

use crate::config::Config;
use std::path::{Path, PathBuf};
use strix_sign::{verify_bundle, PublicKey, MANIFEST};

/// Why strixd refuses to start: the exit code and the message (which
/// names the file and the reason).
#[derive(Debug)]
pub struct Refused {
    pub code: i32,
    pub msg: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

/// What was verified, one line each (for the log).
pub type Verified = Vec<String>;

/// Checks the signatures `cfg` asks for (nothing without `trusted_key`).
/// `config_path` is the config file as given (a symlink is followed to
/// find its bundle). A key file that does not load is a config error
/// (exit 2); a model or bundle that does not verify is a model error (3).
pub fn check(cfg: &Config, config_path: &Path) -> Result<Verified, Refused> {
    let Some(key_path) = &cfg.trusted_key else {
        return Ok(Vec::new());
    };
    let key = PublicKey::load(key_path).map_err(|e| Refused {
        code: crate::exit::CONFIG,
        msg: format!("config key `trusted_key`: {e}"),
    })?;
    let refused = |e: strix_sign::Error| Refused {
        code: crate::exit::MODEL,
        msg: format!("refused (trusted_key {}): {e}", key.id()),
    };
    let mut done = Vec::new();
    let real = std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    if let Some(dir) = real.parent().filter(|d| d.join(MANIFEST).exists()) {
        let m = verify_bundle(dir, &key).map_err(refused)?;
        done.push(format!(
            "bundle {} verified ({} files, key {})",
            dir.display(),
            m.entries.len(),
            key.id()
        ));
    }
    for m in models(cfg) {
        key.verify_file(&m).map_err(refused)?;
        done.push(format!("model {} verified (key {})", m.display(), key.id()));
    }
    Ok(done)
}

/// Every model file the config would load.
fn models(cfg: &Config) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(c) = &cfg.camera {
        v.push(c.model.clone());
    }
    if let Some(s) = &cfg.speech {
        v.push(s.model.clone());
        // The VAD model only when it is loaded (as main.rs decides).
        if let (crate::config::VadKind::Silero, Some(m)) = (s.vad.effective_kind(), &s.vad.model) {
            v.push(m.clone());
        }
    }
    v
}

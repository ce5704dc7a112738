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

#[cfg(test)]
mod tests {
    use super::*;
    use strix_sign::{Manifest, SecretKey};

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("strixd-verify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A config (relative paths resolved as `config::load` does) with a
    /// camera model `m.strix` and the trusted key `key.pub`, in `d`.
    fn config(d: &Path, trusted: bool) -> (Config, PathBuf) {
        let text = format!(
            "device = \"t\"\n{}[camera]\nsource = \"clip.y4m\"\nmodel = \"m.strix\"\n",
            if trusted {
                "trusted_key = \"key.pub\"\n"
            } else {
                ""
            }
        );
        let p = d.join("strixd.toml");
        std::fs::write(&p, &text).unwrap();
        let mut cfg = crate::config::parse(&text).unwrap();
        cfg.camera.as_mut().unwrap().model = d.join("m.strix");
        if trusted {
            cfg.trusted_key = Some(d.join("key.pub"));
        }
        (cfg, p)
    }

    #[test]
    fn models_must_be_signed_by_the_trusted_key() {
        let d = dir("models");
        let k = SecretKey::generate().unwrap();
        k.public().save(&d.join("key.pub")).unwrap();
        std::fs::write(d.join("m.strix"), b"model bytes").unwrap();

        // No trusted_key: nothing is checked.
        let (cfg, p) = config(&d, false);
        assert!(check(&cfg, &p).unwrap().is_empty());

        let (cfg, p) = config(&d, true);
        let e = check(&cfg, &p).unwrap_err();
        assert_eq!(e.code, crate::exit::MODEL);
        assert!(
            e.msg.contains("m.strix") && e.msg.contains("not signed"),
            "{e}"
        );

        k.sign_to_file(&d.join("m.strix")).unwrap();
        let done = check(&cfg, &p).unwrap();
        assert_eq!(done.len(), 1, "{done:?}");

        std::fs::write(d.join("m.strix"), b"model bytez").unwrap();
        let e = check(&cfg, &p).unwrap_err();
        assert!(e.msg.contains("does not verify"), "{e}");

        // Signed by another key.
        let other = SecretKey::generate().unwrap();
        other.sign_to_file(&d.join("m.strix")).unwrap();
        let e = check(&cfg, &p).unwrap_err();
        assert!(e.msg.contains("trusted key"), "{e}");

        // A key file that is not a key: a config error naming the key.
        std::fs::write(d.join("key.pub"), "not a key").unwrap();
        let e = check(&cfg, &p).unwrap_err();
        assert_eq!(e.code, crate::exit::CONFIG);
        assert!(
            e.msg.contains("trusted_key") && e.msg.contains("key.pub"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_bundle_beside_the_config_must_verify() {
        let d = dir("bundle");
        let k = SecretKey::generate().unwrap();
        k.public().save(&d.join("key.pub")).unwrap();
        std::fs::write(d.join("m.strix"), b"model bytes").unwrap();
        k.sign_to_file(&d.join("m.strix")).unwrap();
        let (cfg, p) = config(&d, true);
        Manifest::write_signed(&d, &k).unwrap();
        let done = check(&cfg, &p).unwrap();
        assert!(done[0].starts_with("bundle"), "{done:?}");
        // The config changed after signing (e.g. a model path edited).
        std::fs::write(&p, "device = \"evil\"\n").unwrap();
        let e = check(&cfg, &p).unwrap_err();
        assert_eq!(e.code, crate::exit::MODEL);
        assert!(
            e.msg.contains("strixd.toml") && e.msg.contains("changed"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}

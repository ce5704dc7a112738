//! ed25519 signatures for Strix files (models, board bundles), shared by
//! `strix keygen|sign|verify|flash` and strixd.
//!
//! **Key files** are standard PEM: the private key PKCS#8 (`-----BEGIN
//! PRIVATE KEY-----`, written mode 0600), the public key SubjectPublicKeyInfo
//! (`-----BEGIN PUBLIC KEY-----`); `openssl pkey` reads both.
//!
//! **A signature** is a detached text file `FILE.sig` beside `FILE`:
//!
//! ```text
//! strix-signature 1
//! kind model
//! name kws.strix
//! sha256 <64 hex digits: SHA-256 of the file's bytes>
//! key <16 hex digits: the signer's key id, see key_id>
//! ed25519 <128 hex digits>
//! ```
//!
//! The ed25519 signature covers the first five lines exactly as shown (each
//! ending in `\n`): the file's SHA-256 **and** its name and kind. So a
//! signature cannot be moved to another file (another name or other bytes),
//! nor a model's signature reused for a bundle. The kind follows from the
//! name ([`Kind::of`]): `MANIFEST` is a bundle, `*.strix` a model, anything
//! else a file.
//!
//! **A bundle** is a directory with a [`MANIFEST`] listing every other file
//! in it (`<sha256> <size> <relative path>` per line) and `MANIFEST.sig`;
//! [`verify_bundle`] checks the signature, every listed file and that no
//! file was added.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};

/// The manifest file name of a bundle.
pub const MANIFEST: &str = "MANIFEST";
const MAGIC: &str = "strix-signature 1";
/// Largest `.sig` / key file read (they are a few hundred bytes).
const MAX_SMALL_FILE: u64 = 64 * 1024;

/// What went wrong, naming the file and the reason.
#[derive(Debug)]
pub enum Error {
    /// A key file that cannot be read or parsed.
    Key { path: PathBuf, reason: String },
    /// The signed file has no `.sig` beside it.
    MissingSig { file: PathBuf, sig: PathBuf },
    /// A `.sig` file that is not a signature file (truncated, garbled).
    BadSig { sig: PathBuf, reason: String },
    /// Well-formed, but the signature does not verify for this file and key.
    Rejected { file: PathBuf, reason: String },
    /// A file that cannot be read or written.
    Io { path: PathBuf, reason: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Key { path, reason } => write!(f, "key file {}: {reason}", path.display()),
            Error::MissingSig { file, sig } => write!(
                f,
                "{}: not signed (no signature file {})",
                file.display(),
                sig.display()
            ),
            Error::BadSig { sig, reason } => {
                write!(f, "{}: not a valid signature file: {reason}", sig.display())
            }
            Error::Rejected { file, reason } => {
                write!(f, "{}: signature does not verify: {reason}", file.display())
            }
            Error::Io { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for Error {}

fn io(path: &Path, e: impl fmt::Display) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// What a signature is for; part of the signed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Model,
    Bundle,
    File,
}

impl Kind {
    /// The kind of a file, from its name: `MANIFEST` -> bundle, `*.strix` ->
    /// model, anything else -> file.
    pub fn of(path: &Path) -> Kind {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == MANIFEST {
            Kind::Bundle
        } else if name.ends_with(".strix") {
            Kind::Model
        } else {
            Kind::File
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Bundle => "bundle",
            Kind::File => "file",
        }
    }
}

/// `FILE.sig`, the signature file of `FILE`.
pub fn sig_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_os_string();
    s.push(".sig");
    PathBuf::from(s)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<[u8; 32], Error> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

fn read_small(path: &Path, what: &str) -> Result<String, std::io::Error> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut s = String::new();
    f.take(MAX_SMALL_FILE + 1).read_to_string(&mut s)?;
    if s.len() as u64 > MAX_SMALL_FILE {
        return Err(std::io::Error::other(format!(
            "over {MAX_SMALL_FILE} bytes: not a {what}"
        )));
    }
    Ok(s)
}

/// The short id of a public key: the first 8 bytes of SHA-256 over its 32
/// bytes, in hex. Shown in errors so "signed by another key" is visible.
pub fn key_id(key: &VerifyingKey) -> String {
    hex(&Sha256::digest(key.as_bytes())[..8])
}

/// A private signing key.
pub struct SecretKey(SigningKey);

/// Shows the key id only, never the secret.
impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(id {})", self.public().id())
    }
}

/// A public key that signatures are checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<SecretKey, Error> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| Error::Key {
            path: PathBuf::from("<new key>"),
            reason: format!("no randomness from the OS: {e}"),
        })?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Reads a PKCS#8 PEM private key file.
    pub fn load(path: &Path) -> Result<SecretKey, Error> {
        let bad = |reason: String| Error::Key {
            path: path.to_path_buf(),
            reason,
        };
        let text = read_small(path, "key file").map_err(|e| bad(e.to_string()))?;
        SigningKey::from_pkcs8_pem(&text)
            .map(SecretKey)
            .map_err(|e| {
                bad(format!(
                    "not an ed25519 private key in PKCS#8 PEM (made by `strix keygen`): {e}"
                ))
            })
    }

    /// Writes the private key to `path` (mode 0600, refusing to overwrite)
    /// and the public key to `path.pub`.
    pub fn save(&self, path: &Path) -> Result<PathBuf, Error> {
        // PKCS#8 v1 (no embedded public key): the form openssl 3 reads.
        let pem = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.0.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| io(path, format!("encoding the key: {e}")))?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        {
            use std::io::Write;
            let mut f = opts.open(path).map_err(|e| {
                io(
                    path,
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        "exists already (a key is never overwritten)".to_string()
                    } else {
                        e.to_string()
                    },
                )
            })?;
            f.write_all(pem.as_bytes()).map_err(|e| io(path, e))?;
        }
        let mut pubp = path.as_os_str().to_os_string();
        pubp.push(".pub");
        let pubp = PathBuf::from(pubp);
        self.public().save(&pubp)?;
        Ok(pubp)
    }

    /// Signs `file`: returns the text of its `.sig` (see the crate docs).
    pub fn sign_file(&self, file: &Path) -> Result<String, Error> {
        let name = file_name(file)?;
        let digest = sha256_file(file)?;
        let body = signed_text(
            Kind::of(file),
            &name,
            &digest,
            &key_id(&self.0.verifying_key()),
        );
        let sig = self.0.sign(body.as_bytes());
        Ok(format!("{body}ed25519 {}\n", hex(&sig.to_bytes())))
    }

    /// Signs `file` and writes `file.sig`; returns its path.
    pub fn sign_to_file(&self, file: &Path) -> Result<PathBuf, Error> {
        let text = self.sign_file(file)?;
        let sig = sig_path(file);
        std::fs::write(&sig, text).map_err(|e| io(&sig, e))?;
        Ok(sig)
    }
}

impl PublicKey {
    /// Reads a SubjectPublicKeyInfo PEM public key file (`KEY.pub`).
    pub fn load(path: &Path) -> Result<PublicKey, Error> {
        let bad = |reason: String| Error::Key {
            path: path.to_path_buf(),
            reason,
        };
        let text = read_small(path, "key file").map_err(|e| bad(e.to_string()))?;
        Self::parse(&text).map_err(|e| bad(e.to_string()))
    }

    /// Parses PEM text; the error says what was expected.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        VerifyingKey::from_public_key_pem(text)
            .map(PublicKey)
            .map_err(|e| {
                format!("not an ed25519 public key in PEM (KEY.pub from `strix keygen`): {e}")
            })
    }

    pub fn to_pem(&self) -> Result<String, String> {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| e.to_string())
    }

    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let pem = self.to_pem().map_err(|e| io(path, e))?;
        std::fs::write(path, pem).map_err(|e| io(path, e))
    }

    /// See [`key_id`].
    pub fn id(&self) -> String {
        key_id(&self.0)
    }

    /// Checks `file` against `file.sig`; returns the verified SHA-256.
    pub fn verify_file(&self, file: &Path) -> Result<[u8; 32], Error> {
        let sig = sig_path(file);
        let text = match read_small(&sig, "signature file") {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingSig {
                    file: file.to_path_buf(),
                    sig,
                })
            }
            Err(e) => return Err(io(&sig, e)),
        };
        let parsed = SigFile::parse(&text).map_err(|reason| Error::BadSig {
            sig: sig.clone(),
            reason,
        })?;
        let reject = |reason: String| Error::Rejected {
            file: file.to_path_buf(),
            reason,
        };
        let name = file_name(file)?;
        let kind = Kind::of(file);
        if parsed.name != name {
            return Err(reject(format!(
                "the signature is for a file named {:?}, not {name:?} (moved or renamed)",
                parsed.name
            )));
        }
        if parsed.kind != kind.name() {
            return Err(reject(format!(
                "the signature is for a {}, this is a {}",
                parsed.kind,
                kind.name()
            )));
        }
        let digest = sha256_file(file)?;
        if parsed.sha256 != digest {
            return Err(reject(format!(
                "its SHA-256 is {}, the signature is for {} (the file was changed)",
                hex(&digest),
                hex(&parsed.sha256)
            )));
        }
        let body = signed_text(kind, &name, &digest, &parsed.key);
        if parsed.key != self.id() {
            return Err(reject(format!(
                "signed by key {}, the trusted key is {}",
                parsed.key,
                self.id()
            )));
        }
        self.0
            .verify(body.as_bytes(), &parsed.sig)
            .map_err(|_| reject(format!("bad ed25519 signature for key {}", self.id())))?;
        Ok(digest)
    }
}

fn file_name(file: &Path) -> Result<String, Error> {
    file.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| io(file, "has no UTF-8 file name"))
}

fn signed_text(kind: Kind, name: &str, digest: &[u8; 32], key: &str) -> String {
    format!(
        "{MAGIC}\nkind {}\nname {name}\nsha256 {}\nkey {key}\n",
        kind.name(),
        hex(digest)
    )
}

struct SigFile {
    kind: String,
    name: String,
    sha256: [u8; 32],
    key: String,
    sig: Signature,
}

impl SigFile {
    fn parse(text: &str) -> Result<SigFile, String> {
        let mut lines = text.split('\n');
        if lines.next() != Some(MAGIC) {
            return Err(format!("the first line is not {MAGIC:?}"));
        }
        let mut field = |key: &str| -> Result<String, String> {
            match lines.next() {
                Some(l) => l
                    .strip_prefix(key)
                    .and_then(|v| v.strip_prefix(' '))
                    .map(str::to_string)
                    .ok_or_else(|| format!("expected a line `{key} ...`, found {l:?}")),
                None => Err(format!("truncated: no `{key}` line")),
            }
        };
        let kind = field("kind")?;
        let name = field("name")?;
        let sha = field("sha256")?;
        let key = field("key")?;
        let sig = field("ed25519")?;
        let sha256: [u8; 32] = unhex(&sha)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| format!("sha256 is not 64 hex digits: {sha:?}"))?;
        let sig: [u8; 64] = unhex(&sig)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| "ed25519 is not 128 hex digits (truncated?)".to_string())?;
        if key.len() != 16 || unhex(&key).is_none() {
            return Err(format!("key is not 16 hex digits: {key:?}"));
        }
        Ok(SigFile {
            kind,
            name,
            sha256,
            key,
            sig: Signature::from_bytes(&sig),
        })
    }
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the bundle root, `/`-separated, no `..`.
    pub path: String,
    pub sha256: [u8; 32],
    pub size: u64,
}

/// The file list of a bundle (see the crate docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// Lists every regular file under `root` (recursively, sorted), except
    /// `MANIFEST` and `MANIFEST.sig` at the top; symlinks are refused (a
    /// bundle holds files, not references to elsewhere).
    pub fn build(root: &Path) -> Result<Manifest, Error> {
        let mut entries = Vec::new();
        for rel in walk(root)? {
            let p = root.join(&rel);
            let size = std::fs::metadata(&p).map_err(|e| io(&p, e))?.len();
            entries.push(Entry {
                sha256: sha256_file(&p)?,
                size,
                path: rel,
            });
        }
        Ok(Manifest { entries })
    }

    pub fn to_text(&self) -> String {
        self.entries
            .iter()
            .map(|e| format!("{} {} {}\n", hex(&e.sha256), e.size, e.path))
            .collect()
    }

    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |what: &str| format!("line {}: {what}: {line:?}", i + 1);
            let mut parts = line.splitn(3, ' ');
            let (Some(h), Some(s), Some(p)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("expected `<sha256> <size> <path>`"));
            };
            let sha256 = unhex(h)
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| bad("bad sha256"))?;
            let size = s.parse().map_err(|_| bad("bad size"))?;
            if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c == ".." || c.is_empty())
            {
                return Err(bad("path must be relative, without `..`"));
            }
            entries.push(Entry {
                path: p.to_string(),
                sha256,
                size,
            });
        }
        Ok(Manifest { entries })
    }

    /// Writes `root/MANIFEST` for the files now under `root` and signs it.
    pub fn write_signed(root: &Path, key: &SecretKey) -> Result<Manifest, Error> {
        let m = Manifest::build(root)?;
        let p = root.join(MANIFEST);
        std::fs::write(&p, m.to_text()).map_err(|e| io(&p, e))?;
        key.sign_to_file(&p)?;
        Ok(m)
    }
}

/// Relative paths of the regular files under `root`, sorted, without the
/// top-level MANIFEST and its signature.
fn walk(root: &Path) -> Result<Vec<String>, Error> {
    fn rec(root: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), Error> {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let rd = std::fs::read_dir(&dir).map_err(|e| io(&dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| io(&dir, e))?;
            let name = ent
                .file_name()
                .into_string()
                .map_err(|_| io(&ent.path(), "has no UTF-8 name"))?;
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let t = ent.file_type().map_err(|e| io(&ent.path(), e))?;
            if t.is_dir() {
                rec(root, &r, out)?;
            } else if t.is_file() {
                if !(rel.is_empty() && (name == MANIFEST || name == format!("{MANIFEST}.sig"))) {
                    out.push(r);
                }
            } else {
                return Err(io(
                    &ent.path(),
                    "is not a regular file or directory (a bundle holds files only)",
                ));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    rec(root, "", &mut out)?;
    out.sort();
    Ok(out)
}

/// Verifies a bundle directory: `MANIFEST.sig` against `key`, then that
/// every listed file has its listed size and SHA-256 and that no other
/// file is present. Errors name the file.
pub fn verify_bundle(root: &Path, key: &PublicKey) -> Result<Manifest, Error> {
    let mp = root.join(MANIFEST);
    if !mp.is_file() {
        return Err(Error::Rejected {
            file: root.to_path_buf(),
            reason: format!("no {MANIFEST} (not a signed bundle)"),
        });
    }
    key.verify_file(&mp)?;
    let text = read_small_or_big(&mp)?;
    let m = Manifest::parse(&text).map_err(|reason| Error::BadSig {
        sig: mp.clone(),
        reason,
    })?;
    let tampered = |file: PathBuf, reason: String| Error::Rejected {
        file,
        reason: format!("{reason} (the bundle was changed after it was signed)"),
    };
    for e in &m.entries {
        let p = root.join(&e.path);
        let digest = sha256_file(&p).map_err(|_| {
            tampered(
                p.clone(),
                format!("listed in {MANIFEST} but missing or unreadable"),
            )
        })?;
        if digest != e.sha256 {
            return Err(tampered(
                p,
                format!("its SHA-256 differs from the one in {MANIFEST}"),
            ));
        }
    }
    let listed: std::collections::BTreeSet<&str> =
        m.entries.iter().map(|e| e.path.as_str()).collect();
    for rel in walk(root)? {
        if !listed.contains(rel.as_str()) {
            return Err(tampered(
                root.join(&rel),
                format!("not listed in {MANIFEST}"),
            ));
        }
    }
    Ok(m)
}

fn read_small_or_big(p: &Path) -> Result<String, Error> {
    std::fs::read_to_string(p).map_err(|e| io(p, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(tag: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("strix-sign-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }

    #[test]
    fn keys_round_trip_and_private_key_is_0600() {
        let t = tmp("keys");
        let k = SecretKey::generate().unwrap();
        let kp = t.0.join("key");
        let pubp = k.save(&kp).unwrap();
        assert_eq!(pubp, t.0.join("key.pub"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&kp).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let k2 = SecretKey::load(&kp).unwrap();
        assert_eq!(k2.public(), k.public());
        assert_eq!(PublicKey::load(&pubp).unwrap(), k.public());
        // Never overwritten.
        let e = k.save(&kp).unwrap_err().to_string();
        assert!(e.contains("exists already"), "{e}");
        // A public key is not a private key and vice versa.
        let e = SecretKey::load(&pubp).unwrap_err();
        assert!(matches!(e, Error::Key { .. }), "{e}");
        assert!(e.to_string().contains("key.pub"), "{e}");
        let e = PublicKey::load(&kp).unwrap_err();
        assert!(matches!(e, Error::Key { .. }), "{e}");
        let e = PublicKey::load(&t.0.join("absent.pub")).unwrap_err();
        assert!(e.to_string().contains("absent.pub"), "{e}");
    }

    #[test]
    fn sign_verify_and_every_way_to_fail() {
        let t = tmp("files");
        let k = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let a = t.0.join("a.strix");
        let b = t.0.join("b.strix");
        std::fs::write(&a, b"model a bytes").unwrap();
        std::fs::write(&b, b"model b bytes").unwrap();
        // Unsigned.
        let e = k.public().verify_file(&a).unwrap_err();
        assert!(matches!(e, Error::MissingSig { .. }), "{e}");
        assert!(e.to_string().contains("a.strix.sig"), "{e}");

        let sig = k.sign_to_file(&a).unwrap();
        assert_eq!(sig, t.0.join("a.strix.sig"));
        k.public().verify_file(&a).unwrap();

        // Wrong key.
        let e = other.public().verify_file(&a).unwrap_err();
        assert!(matches!(e, Error::Rejected { .. }), "{e}");
        assert!(e.to_string().contains("trusted key"), "{e}");

        // Moved: a's signature beside b.
        std::fs::copy(&sig, sig_path(&b)).unwrap();
        let e = k.public().verify_file(&b).unwrap_err();
        assert!(e.to_string().contains("moved or renamed"), "{e}");
        // Renamed together with its file: still refused (the name is signed).
        std::fs::copy(&a, t.0.join("c.strix")).unwrap();
        std::fs::copy(&sig, t.0.join("c.strix.sig")).unwrap();
        assert!(k.public().verify_file(&t.0.join("c.strix")).is_err());
        // Another kind: the model's signature on a file named like a bundle.
        std::fs::copy(&a, t.0.join(MANIFEST)).unwrap();
        let text = std::fs::read_to_string(&sig)
            .unwrap()
            .replace("name a.strix", "name MANIFEST");
        std::fs::write(t.0.join("MANIFEST.sig"), text).unwrap();
        let e = k.public().verify_file(&t.0.join(MANIFEST)).unwrap_err();
        assert!(e.to_string().contains("for a model"), "{e}");

        // Tampered file: one byte changed.
        std::fs::write(&a, b"model A bytes").unwrap();
        let e = k.public().verify_file(&a).unwrap_err();
        assert!(e.to_string().contains("was changed"), "{e}");
        std::fs::write(&a, b"model a bytes").unwrap();
        k.public().verify_file(&a).unwrap();

        // Forged: the hash line edited to match a changed file -> the
        // ed25519 signature no longer covers it.
        std::fs::write(&a, b"evil").unwrap();
        let forged = std::fs::read_to_string(&sig).unwrap().replace(
            &hex(&Sha256::digest(b"model a bytes")),
            &hex(&Sha256::digest(b"evil")),
        );
        std::fs::write(&sig, &forged).unwrap();
        let e = k.public().verify_file(&a).unwrap_err();
        assert!(e.to_string().contains("bad ed25519 signature"), "{e}");

        // Truncated .sig, at every length.
        std::fs::write(&a, b"model a bytes").unwrap();
        let good = k.sign_file(&a).unwrap();
        for n in 0..good.len() - 1 {
            std::fs::write(&sig, &good[..n]).unwrap();
            let e = k.public().verify_file(&a).unwrap_err();
            assert!(
                matches!(e, Error::BadSig { .. } | Error::Rejected { .. }),
                "{n}: {e}"
            );
        }
        std::fs::write(&sig, &good).unwrap();
        k.public().verify_file(&a).unwrap();
    }

    #[test]
    fn bundles_refuse_changed_added_and_removed_files() {
        let t = tmp("bundle");
        let k = SecretKey::generate().unwrap();
        let root = t.0.join("rel");
        std::fs::create_dir_all(root.join("models")).unwrap();
        std::fs::write(root.join("strixd.toml"), "device = \"x\"\n").unwrap();
        std::fs::write(root.join("models/m.strix"), b"weights").unwrap();
        let m = Manifest::write_signed(&root, &k).unwrap();
        assert_eq!(m.entries.len(), 2);
        assert_eq!(Manifest::parse(&m.to_text()).unwrap(), m);
        verify_bundle(&root, &k.public()).unwrap();

        let other = SecretKey::generate().unwrap();
        assert!(verify_bundle(&root, &other.public()).is_err());

        std::fs::write(root.join("strixd.toml"), "device = \"y\"\n").unwrap();
        let e = verify_bundle(&root, &k.public()).unwrap_err().to_string();
        assert!(e.contains("strixd.toml") && e.contains("differs"), "{e}");
        std::fs::write(root.join("strixd.toml"), "device = \"x\"\n").unwrap();

        std::fs::write(root.join("models/extra.strix"), b"x").unwrap();
        let e = verify_bundle(&root, &k.public()).unwrap_err().to_string();
        assert!(e.contains("extra.strix") && e.contains("not listed"), "{e}");
        std::fs::remove_file(root.join("models/extra.strix")).unwrap();

        std::fs::remove_file(root.join("models/m.strix")).unwrap();
        let e = verify_bundle(&root, &k.public()).unwrap_err().to_string();
        assert!(e.contains("m.strix") && e.contains("missing"), "{e}");

        for bad in ["x 1 a", "00 1 a", &format!("{} 1 ../a", "0".repeat(64))] {
            assert!(Manifest::parse(bad).is_err(), "{bad}");
        }
    }
}

//! `strix keygen`, `strix sign`, `strix verify`: the commands around the
//! `strix-sign` crate (file formats and what is signed: see its docs).

use anyhow::{bail, Result};
use std::path::Path;
use strix_sign::{PublicKey, SecretKey};

/// Writes a new private key to `out` (mode 0600; never overwrites) and its
/// public key to `out.pub`.
pub fn keygen(out: &Path) -> Result<()> {
    let k = SecretKey::generate()?;
    let pubp = k.save(out)?;
    println!(
        "wrote private key {} (keep it off the board) and public key {} (id {})",
        out.display(),
        pubp.display(),
        k.public().id()
    );
    Ok(())
}

/// Signs each file: writes `FILE.sig` beside it.
pub fn sign(key: &Path, files: &[std::path::PathBuf]) -> Result<()> {
    let k = SecretKey::load(key)?;
    for f in files {
        if !f.is_file() {
            bail!("{}: not a regular file", f.display());
        }
        let sig = k.sign_to_file(f)?;
        println!("signed {} -> {}", f.display(), sig.display());
    }
    Ok(())
}

/// Verifies `FILE.sig` (or a bundle directory's MANIFEST) against `pubkey`.
pub fn verify(pubkey: &Path, file: &Path) -> Result<()> {
    let k = PublicKey::load(pubkey)?;
    if file.is_dir() {
        let m = strix_sign::verify_bundle(file, &k)?;
        println!(
            "{}: bundle OK ({} files, key {})",
            file.display(),
            m.entries.len(),
            k.id()
        );
    } else {
        let digest = k.verify_file(file)?;
        println!(
            "{}: OK (sha256 {}, key {})",
            file.display(),
            strix_sign::hex(&digest),
            k.id()
        );
    }
    Ok(())
}

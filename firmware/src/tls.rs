//! Client TLS for the upstreams (MQTT over TLS, HTTPS webhooks): rustls with
//! the ring provider, no OpenSSL.
//!
//! The PEM readers here are the ones the connections use; config loading
//! calls them too, so a missing or malformed file is a config error at start
//! rather than a connection retried forever.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// The largest PEM file read (a full system CA bundle is about 200 KiB).
const MAX_PEM_BYTES: u64 = 4 << 20;

/// Reads a PEM file: a regular file (not a FIFO or device, which could block
/// or never end) of at most [`MAX_PEM_BYTES`].
fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    let mut open = std::fs::OpenOptions::new();
    open.read(true);
    // Opening a FIFO for reading blocks until a writer comes: don't wait
    // (no effect on regular files; anything else is refused below).
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut open, libc::O_NONBLOCK);
    let f = open
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    let mut pem = Vec::new();
    f.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if pem.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "{}: larger than {} MiB, not a PEM file",
            path.display(),
            MAX_PEM_BYTES >> 20
        ));
    }
    Ok(pem)
}

/// Reads every certificate of a PEM file (at least one).
pub fn cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificates", path.display()));
    }
    Ok(certs)
}

/// Reads a PEM CA file into a root store; every certificate must be one
/// rustls accepts as a trust anchor.
pub fn ca_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in cert_chain(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Reads the first PEM private key (PKCS#8, PKCS#1 or SEC1) of a file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_pem(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("{}: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no PEM private key", path.display()))
}

fn builder(
    roots: rustls::RootCertStore,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots))
}

/// Checks that a client certificate chain and key make a usable client
/// identity (a key type the provider supports, matching the certificate).
pub fn check_client_identity(cert: &Path, key: &Path) -> Result<(), String> {
    let (chain, key_der) = (cert_chain(cert)?, private_key(key)?);
    builder(rustls::RootCertStore::empty())?
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| format!("client certificate {}: {e}", cert.display()))?;
    Ok(())
}

/// Builds a rustls client configuration.
///
/// * `ca_file`: PEM CA certificates trusted for the server; `None` trusts
///   the system's roots (`/etc/ssl/certs`, through `rustls-native-certs`).
/// * `client`: a PEM certificate chain and its PEM private key (PKCS#8,
///   PKCS#1 or SEC1) for servers that require client certificates.
///
/// Errors name the file and what is wrong with it.
pub fn client_config(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = match ca_file {
        Some(ca) => ca_roots(ca)?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system bundle may hold certificates rustls rejects; skip them.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(format!(
                    "no system CA certificates found ({:?}); set a ca_file",
                    found.errors.first()
                ));
            }
            roots
        }
    };
    let builder = builder(roots)?;
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(cert_chain(cert)?, private_key(key)?)
            .map_err(|e| format!("client certificate {}: {e}", cert.display()))?,
    };
    Ok(Arc::new(config))
}

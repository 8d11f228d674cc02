//! The TLS settings of the agent's outgoing HTTP requests: https artifact
//! sources, package repositories and trigger feeds.
//!
//! By default a server's certificate must chain to one of Mozilla's root
//! certificates (built into the binary, so an agent needs no system store).
//! A data center whose servers use a private CA points `SSL_CERT_FILE` at a
//! PEM file of the CAs to trust, as with OpenSSL's tools; those roots then
//! replace the built-in ones. The file is read once, when the agent starts,
//! and an unreadable file or one without a certificate stops the start with
//! the path named, rather than failing every fetch later.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ureq::tls::{PemItem, RootCerts, TlsConfig};

/// The environment variable naming the PEM file of trusted CAs.
pub const CA_FILE_ENV: &str = "SSL_CERT_FILE";

static TLS: OnceLock<TlsConfig> = OnceLock::new();

/// Why the CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// It cannot be read.
    #[error(
        "{CA_FILE_ENV}={path}: cannot read it: {source}; point it at a readable PEM file of CA certificates, or unset it to trust the built-in roots"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not PEM, or holds no certificate.
    #[error(
        "{CA_FILE_ENV}={path}: {why}; it must hold one or more `-----BEGIN CERTIFICATE-----` blocks"
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
}

/// Reads `SSL_CERT_FILE` if it is set; the settings every later request
/// uses. Called once at agent start (a second call keeps the first
/// settings: one process, one trust store).
pub fn init() -> Result<(), CaError> {
    if TLS.get().is_some() {
        return Ok(());
    }
    let config = match std::env::var_os(CA_FILE_ENV) {
        Some(path) if !path.is_empty() => tls_from(Path::new(&path))?,
        _ => TlsConfig::default(),
    };
    let _ = TLS.set(config);
    Ok(())
}

/// The TLS settings for an outgoing request (the built-in roots if
/// [`init`] was not called, as in unit tests).
pub fn tls() -> TlsConfig {
    TLS.get().cloned().unwrap_or_default()
}

/// The TLS settings for requests to other agents' APIs: trust exactly the
/// cluster's API CA (`ca`, DER), so a peer is checked against the cluster
/// and not against public roots.
pub fn peer_tls(ca: &[u8]) -> TlsConfig {
    TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&[
            ureq::tls::Certificate::from_der(ca).to_owned(),
        ]))
        .build()
}

/// TLS settings trusting exactly the CAs in a PEM file.
pub fn tls_from(path: &Path) -> Result<TlsConfig, CaError> {
    let pem = std::fs::read(path).map_err(|source| CaError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {} // a key in the same file is not a root; skip it
            Err(e) => {
                return Err(CaError::Parse {
                    path: path.to_owned(),
                    why: e.to_string(),
                });
            }
        }
    }
    if certs.is_empty() {
        return Err(CaError::Parse {
            path: path.to_owned(),
            why: "no certificate in it".into(),
        });
    }
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&certs))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_certificate_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = tls_from(&path).unwrap_err().to_string();
        assert!(e.contains("ca.pem") && e.contains("no certificate"), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = tls_from(&missing).unwrap_err().to_string();
        assert!(
            e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );
    }
}

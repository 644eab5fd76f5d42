//! The listener's TLS settings, and reading PEM files (certificates, keys) with errors that
//! name the key they are about.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::service::config::ServeConfig;

/// The listener's TLS settings from `tls_cert`, `tls_key` and `tls_client_ca` (`None`:
/// plaintext), checked now so that a key that does not match its certificate fails at
/// start-up.
pub fn server_config(cfg: &ServeConfig) -> Result<Option<ServerTlsConfig>, String> {
    let set = |p: &Path| !p.as_os_str().is_empty();
    if !set(&cfg.tls_cert) {
        return Ok(None);
    }
    let cert = read_certs("tls_cert", &cfg.tls_cert)?;
    let key = read_key("tls_key", &cfg.tls_key)?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if set(&cfg.tls_client_ca) {
        let ca = read_certs("tls_client_ca", &cfg.tls_client_ca)?;
        tls = tls.client_ca_root(Certificate::from_pem(ca));
    }
    // Builds the rustls configuration once now, so that a key that does not match its
    // certificate fails at start-up.
    tonic::transport::Server::builder()
        .tls_config(tls.clone())
        .map_err(|e| {
            format!(
                "tls_cert, tls_key: {} and {} do not make a TLS identity: {}",
                cfg.tls_cert.display(),
                cfg.tls_key.display(),
                error_chain(&e)
            )
        })?;
    Ok(Some(tls))
}

/// The error and its sources, joined.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    if path.as_os_str().is_empty() {
        return Err(format!("{key}: must be set (a PEM file)"));
    }
    std::fs::read(path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))
}

/// The PEM file `path` with at least one certificate.
pub(super) fn read_certs(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    let pem = read_file(key, path)?;
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(&pem) {
        c.map_err(|e| format!("{key}: {} is not valid PEM: {e}", path.display()))?;
        n += 1;
    }
    if n == 0 {
        return Err(format!(
            "{key}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(pem)
}

/// The PEM file `path` with a private key.
pub(super) fn read_key(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    let pem = read_file(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!(
            "{key}: {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            path.display()
        )
    })?;
    Ok(pem)
}

//! `wss://` and `https://` on the server's own port, with rustls, from PEM files; and the client
//! side ferrocast uses towards others (`rediss://`, `https://` handlers and webhooks).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("TLS key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("TLS key {key} does not match certificate {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Loads the certificate chain and private key and checks that they belong together.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Cert {
            path: cert.into(),
            reason: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert.into(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert.into(),
            reason: "no PEM certificate found".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.into(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Cert {
            path: cert.into(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsError::Mismatch {
            cert: cert.into(),
            key: key.into(),
            reason: e.to_string(),
        })?;
    Ok(Arc::new(config))
}

/// A CA file must hold at least one PEM certificate (checked when the configuration loads, so
/// a wrong path is a start-up error, not a refused handshake later).
pub fn check_ca_file(file: &Path) -> Result<(), String> {
    let certs =
        CertificateDer::pem_file_iter(file).map_err(|e| format!("{}: {e}", file.display()))?;
    match certs.flatten().count() {
        0 => Err(format!("{}: no PEM certificate", file.display())),
        _ => Ok(()),
    }
}

/// What a TLS client trusts: the system's CA bundle, plus `ca_file` (PEM) when given. The error
/// names the file at fault, or says there is nothing to trust.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let system = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ];
    let files: Vec<&Path> = system
        .iter()
        .map(Path::new)
        .filter(|p| p.exists())
        .take(1)
        .chain(ca_file)
        .collect();
    for file in files {
        let certs =
            CertificateDer::pem_file_iter(file).map_err(|e| format!("{}: {e}", file.display()))?;
        for cert in certs.flatten() {
            let _ = roots.add(cert);
        }
    }
    if roots.is_empty() {
        return Err(
            "no CA certificates to trust: install ca-certificates, or set tls_ca_file \
             (handlers, webhooks) or scaling.redis_ca_file (Redis)"
                .into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

//! TLS client configuration for the network sinks: rustls (ring), trusting only the CA
//! certificates of one PEM file.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::error::SinkError;

/// A connector trusting the CA certificates in the PEM file `ca`.
pub(crate) fn connector(ca: &Path) -> Result<tokio_rustls::TlsConnector, SinkError> {
    let bad = |reason: String| SinkError::Tls {
        what: ca.display().to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad("no CA certificate in it".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The name a server's certificate must carry.
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, SinkError> {
    ServerName::try_from(name.to_owned()).map_err(|_| SinkError::Tls {
        what: name.to_owned(),
        reason: "not a DNS name or IP address".into(),
    })
}

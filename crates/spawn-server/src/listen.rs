//! The connections: HTTP/1.1 (hyper) over TCP, or over TLS 1.3 (rustls, only 1.3) when the
//! configuration names a certificate; with `tls.clientCa`, client certificates verified by
//! rustls (mutual TLS), the User each names read once per connection. Limits that hold before any handler runs: the
//! request head (line and headers) at most `limits.maxHeaderBytes` (else 431), read within
//! `limits.headerReadTimeoutSeconds` (a client that sends its head slowly is dropped), a
//! TLS handshake within the same time. Graceful shutdown: no new connections; those open
//! finish their requests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::config::{ClientAuth, Limits, Tls};
use crate::ServerError;

/// A TLS 1.3 acceptor for the configured certificate chain and key (PEM).
pub fn tls_acceptor(tls: &Tls) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &Path, reason: String| ServerError::Config {
        what: format!("tls ({})", what.display()),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| bad(&tls.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&tls.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(&tls.cert, "no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| bad(&tls.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(&tls.cert, e.to_string()))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(_) => builder.with_client_cert_verifier(client_verifier(tls, provider)?),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| bad(&tls.key, e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The verifier of client certificates (`tls.clientCa`): rustls' `WebPkiClientVerifier`,
/// which checks the chain to one of the CAs, the validity period, the clientAuth extended
/// key usage (when the certificate names any) and, with `tls.clientCrl`, revocation of every
/// certificate in the chain but the CA (a certificate whose issuer has no CRL in the file is
/// refused, and so is one checked against a CRL past its nextUpdate). A file that cannot be
/// read, holds nothing of its kind or anything that does not parse stops the daemon.
fn client_verifier(
    tls: &Tls,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, ServerError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
    let bad = |field: &str, what: &Path, reason: String| ServerError::Config {
        what: format!("tls.{field} ({})", what.display()),
        reason,
    };
    let Some(ca) = &tls.client_ca else {
        return Err(ServerError::Config {
            what: "tls".into(),
            reason: "no clientCa".into(),
        });
    };
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(|e| bad("clientCa", ca, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("clientCa", ca, e.to_string()))?;
    if cas.is_empty() {
        return Err(bad("clientCa", ca, "no certificate in it".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in cas.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            bad(
                "clientCa",
                ca,
                format!("certificate {} is not usable as a CA: {e}", i + 1),
            )
        })?;
    }
    let mut builder =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    if let Some(crl) = &tls.client_crl {
        let crls: Vec<CertificateRevocationListDer<'static>> =
            CertificateRevocationListDer::pem_file_iter(crl)
                .map_err(|e| bad("clientCrl", crl, e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad("clientCrl", crl, e.to_string()))?;
        if crls.is_empty() {
            return Err(bad("clientCrl", crl, "no CRL in it".into()));
        }
        builder = builder.with_crls(crls).enforce_revocation_expiration();
    }
    if tls.client_auth.unwrap_or_default() == ClientAuth::Optional {
        builder = builder.allow_unauthenticated();
    }
    builder.build().map_err(|e| {
        let (field, file) = match (&e, &tls.client_crl) {
            (rustls::server::VerifierBuilderError::InvalidCrl(_), Some(crl)) => ("clientCrl", crl),
            _ => ("clientCa", ca),
        };
        bad(field, file, e.to_string())
    })
}

/// The User the connection's verified client certificate names, or why it names none (one
/// of `spawn_auth::cert::REFUSALS`): in the extensions of each request of a connection
/// that presented one; `api::authenticate` takes it when the request carries no other
/// credential.
#[derive(Debug, Clone)]
pub(crate) struct ClientCert(pub(crate) Result<spawn_auth::rbac::Subject, &'static str>);

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: &Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let head_timeout = Duration::from_secs(limits.header_read_timeout_seconds);
    let max_head = limits.max_header_bytes;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        // What each request of the connection carries: the peer, and the User its verified
        // client certificate names (read once, at the handshake).
        let service = move |client: Option<ClientCert>| {
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                if let Some(client) = &client {
                    req.extensions_mut().insert(client.clone());
                }
                app.clone().oneshot(req.map(axum::body::Body::new))
            })
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout)
            .max_buf_size(max_head);
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service(None));
                    let _ = watcher.watch(conn).await;
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(head_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    // Present only when rustls verified it (tls.clientCa): the leaf first.
                    let client = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| ClientCert(spawn_auth::cert::principal_of(leaf)));
                    let conn = builder.serve_connection(TokioIo::new(stream), service(client));
                    let _ = watcher.watch(conn).await;
                }
            }
        });
    }
    drop(listener);
    // The requests in flight finish; SSE streams end when their run does, or after a while.
    let _ = tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await;
    Ok(())
}

/// The address a listener serves, for logs.
pub fn describe(addr: SocketAddr, tls: bool) -> String {
    format!("{}://{addr}", if tls { "https" } else { "http" })
}

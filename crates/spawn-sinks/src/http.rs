//! The HTTP client of the webhook and OTLP sinks: one POST per batch over a connection of
//! its own (TCP, or TLS trusting the configured CA), through hyper's HTTP/1.1 connection
//! API. No client crate with its own TLS stack and roots: the CA is the operator's, rustls
//! (ring) is the workspace's.
//!
//! Header values come from the environment when the sink starts; they are marked sensitive
//! and never appear in `Debug`, errors or logs (errors name the URL without its query and
//! the status only).

use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use crate::config::HttpOptions;
use crate::error::SinkError;

/// Most bytes of a response body read (and thrown away): receivers answer briefly.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A header whose value is a secret: shown by name only.
struct SecretHeader {
    name: http::HeaderName,
    value: http::HeaderValue,
}

impl std::fmt::Debug for SecretHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: <redacted>", self.name)
    }
}

/// Where and how a sink POSTs.
pub(crate) struct HttpPoster {
    uri: http::Uri,
    /// `host:port` to connect to.
    addr: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    headers: Vec<SecretHeader>,
    timeout: Duration,
    /// The URL as errors name it: scheme, authority and path (a query may hold a token).
    target: String,
}

impl std::fmt::Debug for HttpPoster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPoster")
            .field("target", &self.target)
            .field("tls", &self.tls.is_some())
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl HttpPoster {
    /// Reads the headers' values from the environment (a missing one is an error naming
    /// the variable) and the CA of an `https` URL.
    pub(crate) fn new(sink: &str, opts: &HttpOptions) -> Result<HttpPoster, SinkError> {
        let uri = opts.url.clone();
        let https = uri.scheme_str() == Some("https");
        let authority = uri.authority().ok_or_else(|| SinkError::Config {
            sink: sink.into(),
            reason: "the URL has no host".into(),
        })?;
        let host = authority.host();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addr = format!("{host}:{port}");
        let target = format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("http"),
            authority,
            uri.path()
        );
        let tls = if https {
            let name = opts.server_name.clone().unwrap_or_else(|| {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            });
            Some((
                crate::tls::connector(&opts.ca)?,
                crate::tls::server_name(&name)?,
            ))
        } else {
            None
        };
        let mut headers = Vec::new();
        for (name, var) in &opts.headers {
            let missing = || SinkError::MissingEnv {
                sink: sink.into(),
                header: name.clone(),
                var: var.clone(),
            };
            let value = Zeroizing::new(std::env::var(var).map_err(|_| missing())?);
            let mut value = http::HeaderValue::from_str(&value).map_err(|_| SinkError::Config {
                sink: sink.into(),
                reason: format!("the value of {var} (header {name}) is not a valid header value"),
            })?;
            value.set_sensitive(true);
            let name =
                http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| SinkError::Config {
                    sink: sink.into(),
                    reason: format!("header {name} is not a header name"),
                })?;
            headers.push(SecretHeader { name, value });
        }
        Ok(HttpPoster {
            uri,
            addr,
            tls,
            headers,
            timeout: opts.timeout,
            target,
        })
    }

    /// POSTs `body`; `Ok` on a 2xx answer, an error (to retry) on anything else.
    pub(crate) async fn post(&self, body: Vec<u8>, content_type: &str) -> Result<(), SinkError> {
        match tokio::time::timeout(self.timeout, self.exchange(body, content_type)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
            Ok(Ok(status)) => Err(SinkError::Status {
                target: self.target.clone(),
                status,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SinkError::Timeout {
                target: self.target.clone(),
                seconds: self.timeout.as_secs(),
            }),
        }
    }

    async fn exchange(&self, body: Vec<u8>, content_type: &str) -> Result<u16, SinkError> {
        let mut req = http::Request::post(
            self.uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
        )
        .header(
            http::header::HOST,
            self.uri.authority().map_or("", |a| a.as_str()),
        )
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::USER_AGENT, "spawnd")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| self.http_err(e.to_string()))?;
        for h in &self.headers {
            req.headers_mut().insert(h.name.clone(), h.value.clone());
        }
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|source| SinkError::Connect {
                target: self.target.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some((tls, name)) => {
                let s =
                    tls.connect(name.clone(), tcp)
                        .await
                        .map_err(|source| SinkError::Connect {
                            target: self.target.clone(),
                            source,
                        })?;
                self.send(TokioIo::new(s), req).await
            }
            None => self.send(TokioIo::new(tcp), req).await,
        }
    }

    async fn send<I>(&self, io: I, req: http::Request<Full<Bytes>>) -> Result<u16, SinkError>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| self.http_err(e.to_string()))?;
        // The connection is driven until the response is read; dropping the sender ends it.
        let driver = tokio::spawn(conn);
        let result = async {
            let res = sender
                .send_request(req)
                .await
                .map_err(|e| self.http_err(e.to_string()))?;
            let status = res.status().as_u16();
            // Read (and drop) a bounded body so the receiver sees its answer taken.
            let _ = Limited::new(res.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await;
            Ok(status)
        }
        .await;
        drop(sender);
        driver.abort();
        result
    }

    fn http_err(&self, reason: String) -> SinkError {
        SinkError::Http {
            target: self.target.clone(),
            reason,
        }
    }
}

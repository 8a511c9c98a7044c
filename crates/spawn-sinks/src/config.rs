//! What an operator writes (`audit.sinks` in spawnd's `spawn.yaml`), and the checked plan
//! made of it.
//!
//! One flat YAML shape for every type, refused strictly: an unknown field is a serde error,
//! and an option of another type (`maxBytes` on a syslog sink) is refused by [`plan`] with
//! the option's name. Names become file names (the cursor), so they are a small alphabet.

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::SinkError;

/// Most sinks one daemon forwards to.
const MAX_SINKS: usize = 16;
/// Longest sink name (it names the cursor file).
const MAX_NAME: usize = 64;
/// Most extra headers a webhook or OTLP sink sends.
const MAX_HEADERS: usize = 16;
/// The CA bundle HTTPS sinks trust when they name none (Debian's `ca-certificates`).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The four kinds of sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    File,
    Syslog,
    Webhook,
    Otlp,
}

/// What a record is sent as: the stored line itself, or an OCSF event holding it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Spawn,
    Ocsf,
}

/// How a syslog sink reaches its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RFC 5426: one message per datagram, cut to `maxMessageBytes`.
    Udp,
    /// RFC 6587 §3.4.1 octet counting.
    Tcp,
    /// RFC 5425: octet counting inside TLS.
    Tls,
}

/// One entry of `audit.sinks`, as written. See the crate README for every option.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SinkSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SinkType,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub batch_size: Option<usize>,
    #[serde(default)]
    pub retry_max_seconds: Option<u64>,
    // file
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub max_bytes: Option<u64>,
    #[serde(default)]
    pub keep: Option<u32>,
    // syslog
    #[serde(default)]
    pub transport: Option<Transport>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub facility: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
    // TLS (syslog over TLS, HTTPS)
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub server_name: Option<String>,
    // webhook, otlp
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    /// Header name → the environment variable holding its value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// A checked sink: what the forwarder runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkPlan {
    pub name: String,
    pub format: Format,
    pub batch_size: usize,
    pub retry_max: Duration,
    pub target: Target,
}

/// Where a sink delivers, with its type's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    File(FileOptions),
    Syslog(SyslogOptions),
    Webhook(HttpOptions),
    Otlp(HttpOptions),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOptions {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogOptions {
    pub transport: Transport,
    /// `host:port` (a name is resolved at each connection).
    pub address: String,
    pub facility: u8,
    /// HOSTNAME of every message; the machine's name when not configured.
    pub hostname: Option<String>,
    pub max_message_bytes: usize,
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Where batches are POSTed (for OTLP, the endpoint with `/v1/logs`).
    pub url: http::Uri,
    /// The CA bundle an `https` URL's certificate must chain to.
    pub ca: PathBuf,
    pub server_name: Option<String>,
    /// CloudEvents `source` (webhook).
    pub source: String,
    /// Header name → environment variable (read when the sink starts; never shown).
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

/// Syslog facilities by name (RFC 5424 §6.2.1).
const FACILITIES: [(&str, u8); 20] = [
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Checks every sink of `specs` for a log in `log_dir` and makes their plans. Refuses
/// duplicate names, a name that is not a safe file name, options of another type, values
/// out of range, and URLs or addresses that are not plainly what they should be.
pub fn plan(specs: &[SinkSpec], log_dir: &Path) -> Result<Vec<SinkPlan>, SinkError> {
    if specs.len() > MAX_SINKS {
        return Err(SinkError::Config {
            sink: "audit.sinks".into(),
            reason: format!("at most {MAX_SINKS} sinks"),
        });
    }
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    let mut out = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        check_name(&spec.name).map_err(|reason| SinkError::Config {
            sink: format!("#{}", i + 1),
            reason,
        })?;
        let err = |reason: String| SinkError::Config {
            sink: spec.name.clone(),
            reason,
        };
        if !names.insert(spec.name.as_str()) {
            return Err(err("the name is used by another sink".into()));
        }
        let plan = plan_one(spec, log_dir).map_err(err)?;
        if let Target::File(f) = &plan.target {
            if !paths.insert(f.path.clone()) {
                return Err(err(format!(
                    "path {} is written by another sink",
                    f.path.display()
                )));
            }
        }
        out.push(plan);
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {:?} must be 1 to {MAX_NAME} of a-z, 0-9, '-' and '_', starting with a letter \
             or digit (it names the sink's cursor file)",
            shorten(name)
        ))
    }
}

fn plan_one(spec: &SinkSpec, log_dir: &Path) -> Result<SinkPlan, String> {
    let s = spec;
    let given = [
        ("path", s.path.is_some()),
        ("maxBytes", s.max_bytes.is_some()),
        ("keep", s.keep.is_some()),
        ("transport", s.transport.is_some()),
        ("address", s.address.is_some()),
        ("facility", s.facility.is_some()),
        ("hostname", s.hostname.is_some()),
        ("maxMessageBytes", s.max_message_bytes.is_some()),
        ("ca", s.ca.is_some()),
        ("serverName", s.server_name.is_some()),
        ("url", s.url.is_some()),
        ("endpoint", s.endpoint.is_some()),
        ("source", s.source.is_some()),
        ("headers", !s.headers.is_empty()),
        ("timeoutSeconds", s.timeout_seconds.is_some()),
    ];
    let allowed: &[&str] = match s.kind {
        SinkType::File => &["path", "maxBytes", "keep"],
        SinkType::Syslog => &[
            "transport",
            "address",
            "facility",
            "hostname",
            "maxMessageBytes",
            "ca",
            "serverName",
            "timeoutSeconds",
        ],
        SinkType::Webhook => &[
            "url",
            "source",
            "headers",
            "ca",
            "serverName",
            "timeoutSeconds",
        ],
        SinkType::Otlp => &["endpoint", "headers", "ca", "serverName", "timeoutSeconds"],
    };
    for (option, present) in given {
        if present && !allowed.contains(&option) {
            return Err(format!(
                "{option} is not an option of a {} sink",
                type_name(s.kind)
            ));
        }
    }
    let batch_size = range("batchSize", s.batch_size.unwrap_or(100), 1, 10_000)?;
    let retry_max = Duration::from_secs(range(
        "retryMaxSeconds",
        s.retry_max_seconds.unwrap_or(60),
        1,
        3600,
    )?);
    let timeout = Duration::from_secs(range(
        "timeoutSeconds",
        s.timeout_seconds.unwrap_or(10),
        1,
        300,
    )?);
    let target = match s.kind {
        SinkType::File => Target::File(file_options(s, log_dir)?),
        SinkType::Syslog => Target::Syslog(syslog_options(s, timeout)?),
        SinkType::Webhook => {
            let url = s.url.as_deref().ok_or("a webhook sink needs url")?;
            let source = s.source.clone().unwrap_or_else(|| "spawnd".into());
            if source.is_empty()
                || source.len() > 256
                || source.chars().any(|c| c.is_control() || c == ' ')
            {
                return Err("source must be 1 to 256 characters, no spaces or controls".into());
            }
            Target::Webhook(http_options(s, url, None, source, timeout)?)
        }
        SinkType::Otlp => {
            let endpoint = s.endpoint.as_deref().ok_or("an otlp sink needs endpoint")?;
            Target::Otlp(http_options(
                s,
                endpoint,
                Some("/v1/logs"),
                String::new(),
                timeout,
            )?)
        }
    };
    Ok(SinkPlan {
        name: s.name.clone(),
        format: s.format,
        batch_size,
        retry_max,
        target,
    })
}

fn type_name(t: SinkType) -> &'static str {
    match t {
        SinkType::File => "file",
        SinkType::Syslog => "syslog",
        SinkType::Webhook => "webhook",
        SinkType::Otlp => "otlp",
    }
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, String> {
    if v < lo || v > hi {
        return Err(format!("{name} must be {lo} to {hi}"));
    }
    Ok(v)
}

fn file_options(s: &SinkSpec, log_dir: &Path) -> Result<FileOptions, String> {
    let path = s.path.clone().ok_or("a file sink needs path")?;
    let text = path.to_string_lossy();
    if !path.is_absolute()
        || text.contains('\0')
        || path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || path.file_name().is_none()
        || text.ends_with('/')
    {
        return Err(format!(
            "path {:?} must be an absolute file path without '.' or '..'",
            shorten(&text)
        ));
    }
    // Never into the audit directory: a sink must not append to the log it reads, nor
    // write beside the cursors and checkpoints.
    if path.starts_with(log_dir) {
        return Err(format!(
            "path {} is inside the audit directory {}",
            path.display(),
            log_dir.display()
        ));
    }
    Ok(FileOptions {
        path,
        max_bytes: range("maxBytes", s.max_bytes.unwrap_or(100 << 20), 4096, 1 << 40)?,
        keep: range("keep", s.keep.unwrap_or(5), 1, 1000)?,
    })
}

fn syslog_options(s: &SinkSpec, timeout: Duration) -> Result<SyslogOptions, String> {
    let transport = s
        .transport
        .ok_or("a syslog sink needs transport (udp, tcp or tls)")?;
    let address = s.address.clone().ok_or("a syslog sink needs address")?;
    let host = check_address(&address)?;
    let facility = match s.facility.as_deref() {
        None => 10,
        Some(f) => FACILITIES
            .iter()
            .find(|(n, _)| *n == f)
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                format!(
                    "facility {:?} is not one of kern, user, mail, daemon, auth, syslog, lpr, \
                     news, uucp, cron, authpriv, ftp, local0 to local7",
                    shorten(f)
                )
            })?,
    };
    if let Some(h) = &s.hostname {
        if h.is_empty() || h.len() > 255 || !h.bytes().all(|b| (33..=126).contains(&b)) {
            return Err("hostname must be 1 to 255 printable ASCII characters".into());
        }
    }
    let max_message_bytes = match transport {
        Transport::Udp => range(
            "maxMessageBytes",
            s.max_message_bytes.unwrap_or(2048),
            480,
            65_000,
        )?,
        Transport::Tcp | Transport::Tls => range(
            "maxMessageBytes",
            s.max_message_bytes.unwrap_or(256 * 1024),
            1024,
            1 << 20,
        )?,
    };
    if transport != Transport::Tls && (s.ca.is_some() || s.server_name.is_some()) {
        return Err("ca and serverName are for transport tls".into());
    }
    if transport == Transport::Tls && s.ca.is_none() {
        return Err("transport tls needs ca (the CA the receiver's certificate chains to)".into());
    }
    let server_name = s.server_name.clone().or_else(|| Some(host.to_owned()));
    if let Some(n) = &server_name {
        check_server_name(n)?;
    }
    Ok(SyslogOptions {
        transport,
        address,
        facility,
        hostname: s.hostname.clone(),
        max_message_bytes,
        ca: s.ca.clone(),
        server_name: (transport == Transport::Tls)
            .then_some(server_name)
            .flatten(),
        timeout,
    })
}

/// `host:port` with a DNS name, an IPv4 address or a bracketed IPv6 address; returns the
/// host (without brackets).
fn check_address(address: &str) -> Result<&str, String> {
    let bad = || {
        format!(
            "address {:?} must be host:port (a DNS name, IPv4, or [IPv6])",
            shorten(address)
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || port.to_string() != address.rsplit_once(':').map_or("", |p| p.1) {
        return Err(bad());
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        return Ok(v6);
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(host);
    }
    check_dns_name(host).map_err(|_| bad())?;
    Ok(host)
}

fn check_dns_name(host: &str) -> Result<(), ()> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

fn check_server_name(name: &str) -> Result<(), String> {
    rustls::pki_types::ServerName::try_from(name.to_owned())
        .map(|_| ())
        .map_err(|_| format!("serverName {:?} is not a DNS name or IP", shorten(name)))
}

fn http_options(
    s: &SinkSpec,
    url: &str,
    append: Option<&str>,
    source: String,
    timeout: Duration,
) -> Result<HttpOptions, String> {
    let bad = |why: &str| format!("URL {:?} {why}", shorten(url));
    if url.contains('#') || url.chars().any(|c| c.is_control() || c == ' ') {
        return Err(bad(
            "must not hold a fragment, spaces or control characters",
        ));
    }
    let mut full = url.to_owned();
    if let Some(suffix) = append {
        let (base, query) = match full.split_once('?') {
            Some(_) => return Err(bad("must not hold a query")),
            None => (full.trim_end_matches('/').to_owned(), ""),
        };
        full = format!("{base}{suffix}{query}");
    }
    let uri: http::Uri = full.parse().map_err(|_| bad("is not a URL"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad("must be http:// or https://")),
    };
    let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad(
            "must not hold credentials (use headers from the environment)",
        ));
    }
    let host = authority.host();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<std::net::IpAddr>().is_err() && check_dns_name(bare).is_err() {
        return Err(bad("has no valid host"));
    }
    if authority.port_u16() == Some(0) {
        return Err(bad("has port 0"));
    }
    if !https && (s.ca.is_some() || s.server_name.is_some()) {
        return Err("ca and serverName are for https URLs".into());
    }
    if let Some(n) = &s.server_name {
        check_server_name(n)?;
    }
    if s.headers.len() > MAX_HEADERS {
        return Err(format!("at most {MAX_HEADERS} headers"));
    }
    const RESERVED: [&str; 8] = [
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "expect",
    ];
    let mut headers = Vec::new();
    for (name, var) in &s.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || RESERVED.contains(&name.to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "header {:?} is not a header name this sink may set",
                shorten(name)
            ));
        }
        let var_ok = !var.is_empty()
            && var.len() <= 128
            && var
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            && !var.as_bytes()[0].is_ascii_digit();
        if !var_ok {
            return Err(format!(
                "header {name}: {:?} is not an environment variable name (A-Z, 0-9, _); \
                 header values come from the environment, never from this file",
                shorten(var)
            ));
        }
        headers.push((name.clone(), var.clone()));
    }
    Ok(HttpOptions {
        url: uri,
        ca: s
            .ca
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE)),
        server_name: s.server_name.clone(),
        source,
        headers,
        timeout,
    })
}

/// Untrusted text quoted in an error is cut to this many characters.
fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests;

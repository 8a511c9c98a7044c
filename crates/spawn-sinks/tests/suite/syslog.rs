//! The syslog sink against a real rsyslog (UDP and TCP, started here as a child with its
//! own configuration), and over TLS against a receiver written here with rustls (rsyslog's
//! TLS drivers are separate Debian packages with their own certificate set-up; RFC 5425's
//! framing is the same octet counting as TCP's, which rsyslog checks).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use spawn_audit::checkpoint::{sign_log, Signed, SigningKey};
use spawn_sinks::Forwarders;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

use super::common::{append, free_port, plans, until, FAST};

const BOM: &str = "\u{feff}";

/// rsyslogd, from PATH or where Debian puts it; the test fails without it.
fn rsyslogd() -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let p = Path::new(dir).join("rsyslogd");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "rsyslogd is not installed: the syslog sink is tested against a real rsyslog \
         (scripts/install-deps.sh installs the Debian package rsyslog)"
    );
}

/// A UDP port free right now.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `/proc/net/{proto}` shows 127.0.0.1:`port` bound (listening, for TCP).
fn bound(proto: &str, port: u16) -> bool {
    let table = std::fs::read_to_string(format!("/proc/net/{proto}")).unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&local.as_str()) && (proto == "udp" || f.get(3) == Some(&"0A"))
    })
}

/// rsyslogd with an imudp and an imtcp input on loopback, each writing its messages'
/// fields to its own file; killed when dropped.
struct Rsyslog {
    child: Child,
    udp: (u16, PathBuf),
    tcp: (u16, PathBuf),
    _dir: tempfile::TempDir,
}

impl Rsyslog {
    async fn start() -> Rsyslog {
        let exe = rsyslogd();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (udp_port, tcp_port) = (free_udp_port(), free_port());
        let (udp_out, tcp_out) = (d.join("udp.log"), d.join("tcp.log"));
        let conf = d.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}" maxMessageSize="256k")
module(load="imudp")
module(load="imtcp")
template(name="fields" type="string"
  string="%syslogfacility%|%syslogseverity%|%hostname%|%app-name%|%msgid%|%structured-data%|%msg%\n")
ruleset(name="udp") {{ action(type="omfile" file="{udp}" template="fields") }}
ruleset(name="tcp") {{ action(type="omfile" file="{tcp}" template="fields") }}
input(type="imudp" address="127.0.0.1" port="{udp_port}" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}" ruleset="tcp")
"#,
                dir = d.display(),
                udp = udp_out.display(),
                tcp = tcp_out.display(),
            ),
        )
        .unwrap();
        let mut child = Command::new(exe)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(d.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !(bound("udp", udp_port) && bound("tcp", tcp_port)) {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                panic!("rsyslogd stopped ({status}): {err}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "rsyslogd did not bind its ports within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Rsyslog {
            child,
            udp: (udp_port, udp_out),
            tcp: (tcp_port, tcp_out),
            _dir: dir,
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn out_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Checks what rsyslog wrote for `lines` (records) then, if given, a checkpoint.
fn check_received(got: &[String], lines: &[String], note: Option<(u64, &str)>) {
    assert_eq!(
        got.len(),
        lines.len() + usize::from(note.is_some()),
        "{got:#?}"
    );
    for (out, line) in got.iter().zip(lines) {
        let f: Vec<&str> = out.splitn(7, '|').collect();
        let rec: Value = serde_json::from_str(line).unwrap();
        let sev = match rec["outcome"].as_str().unwrap() {
            "success" => "6",
            "denied" => "4",
            _ => "3",
        };
        assert_eq!(
            f[..5],
            [
                "10",
                sev,
                "spawn-test",
                "spawn",
                rec["eventType"].as_str().unwrap()
            ],
            "{out}"
        );
        assert_eq!(
            f[5],
            format!(
                "[spawn@32473 seq=\"{}\" hash=\"{}\" traceId=\"{}\"]",
                rec["seq"],
                rec["hash"].as_str().unwrap(),
                rec["traceId"].as_str().unwrap()
            )
        );
        // Complete: the stored line, after the BOM, byte for byte.
        assert_eq!(f[6], format!("{BOM}{line}"), "seq {}", rec["seq"]);
    }
    if let Some((size, note)) = note {
        let f: Vec<&str> = got[lines.len()].splitn(7, '|').collect();
        assert_eq!(f[4], "audit.checkpoint");
        assert_eq!(f[5], format!("[spawn@32473 checkpointSize=\"{size}\"]"));
        // rsyslog drops a message's trailing newline and shows the others as #012 (its
        // control-character escape).
        let shown = note
            .strip_suffix('\n')
            .unwrap_or(note)
            .replace('\n', "#012");
        assert_eq!(f[6], format!("{BOM}{shown}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_every_record_complete_and_in_order_over_udp_and_tcp() {
    let rs = Rsyslog::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("audit");
    let lines = append(&log_dir, 30);
    let yaml = format!(
        "- name: udp\n  type: syslog\n  transport: udp\n  address: 127.0.0.1:{}\n  \
           hostname: spawn-test\n  maxMessageBytes: 65000\n  batchSize: 4\n\
         - name: tcp\n  type: syslog\n  transport: tcp\n  address: 127.0.0.1:{}\n  \
           hostname: spawn-test\n  batchSize: 7\n",
        rs.udp.0, rs.tcp.0
    );
    let fw = Forwarders::start(&log_dir, plans(&yaml, &log_dir), FAST).unwrap();
    until(20, "rsyslog wrote every record", || {
        out_lines(&rs.udp.1).len() >= 30 && out_lines(&rs.tcp.1).len() >= 30
    })
    .await;
    // And then the signed checkpoint, as its own message.
    let key = SigningKey::generate("spawn.audit/test").unwrap();
    let Signed::Kept { note, .. } =
        sign_log(&log_dir.join(spawn_audit::LOG_FILE_NAME), &key).unwrap()
    else {
        panic!("no checkpoint");
    };
    until(20, "rsyslog wrote the checkpoint", || {
        out_lines(&rs.udp.1).len() >= 31 && out_lines(&rs.tcp.1).len() >= 31
    })
    .await;
    fw.shutdown(Duration::from_secs(5)).await;
    check_received(&out_lines(&rs.udp.1), &lines, Some((30, &note)));
    check_received(&out_lines(&rs.tcp.1), &lines, Some((30, &note)));
}

/// A CA and a server certificate for `localhost` it signed: (CA PEM, server config).
fn tls_server() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    (ca.pem(), Arc::new(config))
}

/// Reads octet-counted frames (RFC 6587 §3.4.1) strictly: digits, one space, exactly that
/// many bytes.
async fn read_frame<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    let mut len = Vec::new();
    if r.read_until(b' ', &mut len).await.ok()? == 0 {
        return None;
    }
    let digits = std::str::from_utf8(len.strip_suffix(b" ")?).ok()?;
    assert!(
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        "bad frame length {digits:?}"
    );
    let mut msg = vec![0u8; digits.parse().ok()?];
    r.read_exact(&mut msg).await.ok()?;
    Some(msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_configured_ca_and_only_it() {
    let (ca_pem, server) = tls_server();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut r = BufReader::new(tls);
                while let Some(m) = read_frame(&mut r).await {
                    let _ = tx.send(m);
                }
            });
        }
    });
    let log_dir = dir.path().join("audit");
    let lines = append(&log_dir, 12);

    // A CA that did not sign the server's certificate: nothing is delivered.
    let (other_ca, _) = tls_server();
    let other = dir.path().join("other.pem");
    std::fs::write(&other, other_ca).unwrap();
    let yaml = |ca: &Path| {
        format!(
            "- name: tls\n  type: syslog\n  transport: tls\n  address: 127.0.0.1:{port}\n  \
             serverName: localhost\n  ca: {}\n  batchSize: 5\n",
            ca.display()
        )
    };
    let fw = Forwarders::start(&log_dir, plans(&yaml(&other), &log_dir), FAST).unwrap();
    until(10, "refusals of the untrusted server", || {
        fw.status()[0].failures >= 2
    })
    .await;
    assert_eq!(fw.status()[0].delivered, 0);
    fw.shutdown(Duration::from_secs(5)).await;
    assert!(rx.try_recv().is_err(), "nothing reached the server");

    let fw = Forwarders::start(&log_dir, plans(&yaml(&ca), &log_dir), FAST).unwrap();
    let mut got = Vec::new();
    while got.len() < lines.len() {
        let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a message within 10 s")
            .unwrap();
        got.push(m);
    }
    fw.shutdown(Duration::from_secs(5)).await;
    server.abort();
    for (m, line) in got.iter().zip(&lines) {
        let text = String::from_utf8(m.clone()).unwrap();
        let (head, msg) = text.split_once(BOM).unwrap();
        assert_eq!(msg, line);
        let rec: Value = serde_json::from_str(line).unwrap();
        assert!(
            head.contains(&format!("[spawn@32473 seq=\"{}\" ", rec["seq"])),
            "{head}"
        );
        assert!(head.starts_with("<8"), "authpriv: {head}");
    }
}

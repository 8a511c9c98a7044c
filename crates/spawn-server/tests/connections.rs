//! The connections of a real `spawnd`: TLS 1.3 only (spoken to with curl and openssl, clients
//! nobody here wrote), request heads beyond the limit refused (431), and a client that
//! sends its head slowly dropped; the daemon serves others throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Daemon;

/// A self-signed certificate for 127.0.0.1 in `dir`: (cert, key).
fn certificate(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=spawnd-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl (scripts/install-deps.sh installs it)")
}

#[test]
fn tls_1_3_only_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let d = Daemon::start_full(
        None,
        None,
        "",
        &format!("tls:\n  cert: {cert}\n  key: {key}\n"),
    );
    let url = format!("https://{}/healthz", d.addr);
    let ok = curl(&[
        "--cacert",
        &cert,
        "-w",
        " %{http_code} %{ssl_verify_result}",
        &url,
    ]);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success() && text.ends_with(" 200 0"),
        "{text} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // TLS 1.2 at most: refused.
    let old = curl(&["--cacert", &cert, "--tlsv1.2", "--tls-max", "1.2", &url]);
    assert!(!old.status.success(), "TLS 1.2 was accepted");
    let s_client = Command::new("openssl")
        .args([
            "s_client", "-connect", &d.addr, "-tls1_3", "-CAfile", &cert, "-brief",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&s_client.stderr).into_owned()
        + &String::from_utf8_lossy(&s_client.stdout);
    assert!(said.contains("TLSv1.3"), "{said}");
    // Plain HTTP to the TLS port: no answer in HTTP.
    let plain = curl(&[&format!("http://{}/healthz", d.addr)]);
    assert!(!plain.status.success());
    // An API call over TLS.
    let me = curl(&[
        "--cacert",
        &cert,
        "-H",
        &format!("X-API-Key: {}", d.admin),
        &format!("https://{}/v1/whoami", d.addr),
    ]);
    assert!(
        String::from_utf8_lossy(&me.stdout).contains("\"admin\""),
        "{:?}",
        me
    );
}

#[test]
fn a_second_daemon_on_one_sqlite_store_is_refused_with_the_reason() {
    let mut d = Daemon::start(None);
    let out = Command::new(common::spawnd())
        .arg("--config")
        .arg(&d.config)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "it served");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another spawnd") && err.contains("PostgreSQL"),
        "{err}"
    );
    // The first serves on; once it is gone (a restart), the store is free again.
    let res = TcpStream::connect(&d.addr);
    assert!(res.is_ok());
    d.restart();
    assert!(TcpStream::connect(&d.addr).is_ok());
}

#[test]
fn a_missing_or_broken_certificate_stops_the_daemon_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    for (cert, key) in [
        ("/nonexistent/cert.pem", "/nonexistent/key.pem"),
        (junk.to_str().unwrap(), junk.to_str().unwrap()),
    ] {
        let err = common::refused(dir.path(), &format!("tls:\n  cert: {cert}\n  key: {key}\n"));
        assert!(err.contains("tls"), "{err}");
    }
}

#[test]
fn oversized_heads_and_slow_clients_are_cut_off() {
    let d = Daemon::start_limits(
        None,
        None,
        "  maxHeaderBytes: 16384\n  headerReadTimeoutSeconds: 2\n",
    );
    // A head beyond the limit: 431.
    let mut s = TcpStream::connect(&d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let _ = s.write_all(big.as_bytes());
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // A head sent a byte at a time, never finished: dropped after the timeout.
    let mut slow = TcpStream::connect(&d.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the slow client was kept {took:?}"
    );
    assert!(took >= Duration::from_secs(1), "dropped at once ({took:?})");
    // A body promised and sent slowly, never finished: 408, and the connection closed.
    let mut slow = TcpStream::connect(&d.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let started = Instant::now();
    slow.write_all(
        format!(
            "PUT /v1/namespaces/team/agents/bot HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\nContent-Length: 1000\r\n\r\napiVersion",
            d.admin
        )
        .as_bytes(),
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        took < Duration::from_secs(10),
        "the slow body was waited for {took:?}"
    );
    // Others were served meanwhile and still are.
    let ok = curl(&[&format!("http://{}/healthz", d.addr)]);
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok"));
}

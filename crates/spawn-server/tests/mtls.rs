//! Mutual TLS against a real `spawnd` (SQLite, TLS on loopback), spoken to with curl and
//! `openssl s_client` (clients nobody here wrote); the certificates, CRLs and hostile
//! subjects are made with rcgen. A client certificate of the configured CA authenticates the
//! User its one CommonName names, with that User's RoleBindings; every other certificate is
//! refused at the handshake (chain, validity, EKU, revocation: rustls) or with a 401 (the
//! name: `spawn_auth::cert`), the daemon healthy after each; an explicit credential in the
//! request wins over the connection's certificate; `required` refuses a connection without
//! one; configurations that cannot be used stop the daemon.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use common::Daemon;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use serde_json::Value;

/// Panics with what failed: the helpers below run only in tests.
fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// A certificate authority: its certificate and key.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate written out: its PEM files and serial number.
struct Issued {
    crt: PathBuf,
    key: PathBuf,
    serial: u64,
}

/// Serial numbers, distinct across the test's certificates.
static SERIAL: AtomicU64 = AtomicU64::new(1000);

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A CA named `name`, valid from 2020 to 2099.
fn new_ca(name: &str) -> Ca {
    let key = must(KeyPair::generate(), "a CA key");
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2099, 1, 1);
    let cert = must(params.self_signed(&key), "a CA certificate");
    Ca { cert, key }
}

/// A client certificate for CN `cn`, clientAuth, valid 2020–2099, signed by `issuer` (or by
/// itself), after `change` had its say; written to `dir/file.{crt,key}`.
fn issue(
    dir: &Path,
    file: &str,
    issuer: Option<&Ca>,
    change: impl FnOnce(&mut CertificateParams),
) -> Issued {
    let key = must(KeyPair::generate(), "a client key");
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("alice");
    params.serial_number = Some(SerialNumber::from(serial));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2099, 1, 1);
    change(&mut params);
    let cert = match issuer {
        Some(ca) => params.signed_by(&key, &ca.cert, &ca.key),
        None => params.self_signed(&key),
    };
    let cert = must(cert, "a client certificate");
    let (crt, key_file) = (
        dir.join(format!("{file}.crt")),
        dir.join(format!("{file}.key")),
    );
    must(std::fs::write(&crt, cert.pem()), "write the certificate");
    must(
        std::fs::write(&key_file, key.serialize_pem()),
        "write the key",
    );
    Issued {
        crt,
        key: key_file,
        serial,
    }
}

/// The CRL of `ca` revoking `serials`, next updated at `next_update` (a year).
fn crl(ca: &Ca, serials: &[u64], next_update: i32) -> String {
    let params = CertificateRevocationListParams {
        this_update: date_time_ymd(next_update - 1, 1, 1),
        next_update: date_time_ymd(next_update, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: date_time_ymd(2021, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let list = must(params.signed_by(&ca.cert, &ca.key), "sign the CRL");
    must(list.pem(), "the CRL as PEM")
}

/// The daemon's own certificate, self-signed for 127.0.0.1: (cert, key) paths.
fn server_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let key = must(KeyPair::generate(), "the server key");
    let mut params = must(
        CertificateParams::new(vec!["127.0.0.1".to_owned()]),
        "server parameters",
    );
    params.distinguished_name = dn("spawnd-test");
    let cert = must(params.self_signed(&key), "the server certificate");
    let (crt, key_file) = (dir.join("server.crt"), dir.join("server.key"));
    must(std::fs::write(&crt, cert.pem()), "write server.crt");
    must(
        std::fs::write(&key_file, key.serialize_pem()),
        "write server.key",
    );
    (crt, key_file)
}

/// What curl got: the status (0 when there was no HTTP answer: the handshake failed) and
/// the body.
#[derive(Debug)]
struct Answer {
    code: u16,
    body: String,
    stderr: String,
}

/// A request over TLS with curl, trusting `server` for the daemon, presenting `client` if
/// any, with `headers`.
fn call(
    d: &Daemon,
    server: &Path,
    client: Option<&Issued>,
    headers: &[String],
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-X", method, "--cacert"])
        .arg(server)
        .args(["-w", "\n%{http_code}"]);
    if let Some(c) = client {
        cmd.arg("--cert").arg(&c.crt).arg("--key").arg(&c.key);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/yaml", "--data-binary", b]);
    }
    cmd.arg(format!("https://{}{path}", d.addr));
    let out = must(cmd.output(), "curl (scripts/install-deps.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", stdout.as_str()));
    Answer {
        code: code.trim().parse().unwrap_or(0),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn get(d: &Daemon, server: &Path, client: Option<&Issued>, path: &str) -> Answer {
    call(d, server, client, &[], "GET", path, None)
}

fn whoami(answer: &Answer) -> Value {
    assert_eq!(answer.code, 200, "{answer:?}");
    must(serde_json::from_str(&answer.body), "whoami's JSON")
}

/// `openssl s_client` to the daemon with `client` (or none), sending one request; what it
/// printed, stdout and stderr.
fn s_client(d: &Daemon, server: &Path, client: Option<&Issued>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client", "-connect", &d.addr, "-tls1_3", "-quiet", "-CAfile",
    ])
    .arg(server);
    if let Some(c) = client {
        cmd.arg("-cert").arg(&c.crt).arg("-key").arg(&c.key);
    }
    let mut child = must(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn(),
        "openssl (scripts/install-deps.sh installs it)",
    );
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        let _ = stdin
            .write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    }
    let out = must(child.wait_with_output(), "openssl s_client");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The `tls:` block of a daemon that asks for client certificates of `ca` (`mode`, CRL).
fn tls_block(
    dir: &Path,
    server: &(PathBuf, PathBuf),
    ca: &Ca,
    mode: Option<&str>,
    crl_pem: Option<&str>,
) -> String {
    let ca_file = dir.join("client-ca.pem");
    must(
        std::fs::write(&ca_file, ca.cert.pem()),
        "write client-ca.pem",
    );
    let mut yaml = format!(
        "tls:\n  cert: {}\n  key: {}\n  clientCa: {}\n",
        server.0.display(),
        server.1.display(),
        ca_file.display()
    );
    if let Some(mode) = mode {
        yaml.push_str(&format!("  clientAuth: {mode}\n"));
    }
    if let Some(pem) = crl_pem {
        let crl_file = dir.join("client-crl.pem");
        must(std::fs::write(&crl_file, pem), "write client-crl.pem");
        yaml.push_str(&format!("  clientCrl: {}\n", crl_file.display()));
    }
    yaml
}

const LIMITS: &str = "  requestsPerSecond: 100000\n  burst: 100000\n  authFailures: 100000\n";

#[test]
fn a_client_certificate_of_the_ca_is_its_common_name_and_nothing_else() {
    let dir = must(tempfile::tempdir(), "a temporary directory");
    let p = dir.path();
    let server = server_certificate(p);
    let ca = new_ca("spawn-test-client-ca");
    let other_ca = new_ca("another-ca");
    let alice = issue(p, "alice", Some(&ca), |_| {});
    let revoked = issue(p, "revoked", Some(&ca), |_| {});
    let block = tls_block(
        p,
        &server,
        &ca,
        None,
        Some(&crl(&ca, &[revoked.serial], 2099)),
    );
    let d = Daemon::start_full(None, None, LIMITS, &block);
    let s = server.0.as_path();

    // alice, bound to nothing yet: authenticated, allowed nothing.
    let me = whoami(&get(&d, s, Some(&alice), "/v1/whoami"));
    assert_eq!(
        (
            me["kind"].as_str(),
            me["name"].as_str(),
            me["keyId"].as_str()
        ),
        (Some("User"), Some("alice"), Some("mtls")),
        "{me}"
    );
    assert_eq!(
        get(&d, s, Some(&alice), "/v1/namespaces/team/agents").code,
        403
    );

    // The admin binds her as a viewer in `team`, through the API.
    let binding = "apiVersion: spawn.dev/v1\nkind: RoleBinding\nmetadata: {name: alice-views, namespace: team}\nsubjects: [{kind: User, name: alice}]\nroleRef: {kind: Role, name: viewer}\n";
    let made = call(
        &d,
        s,
        None,
        &[format!("X-API-Key: {}", d.admin)],
        "PUT",
        "/v1/namespaces/team/rolebindings/alice-views",
        Some(binding),
    );
    assert_eq!(made.code, 201, "{made:?}");
    // What a viewer may, and no more.
    let agents = get(&d, s, Some(&alice), "/v1/namespaces/team/agents");
    assert_eq!(agents.code, 200, "{agents:?}");
    let run = call(
        &d,
        s,
        Some(&alice),
        &[],
        "POST",
        "/v1/namespaces/team/runs",
        Some(r#"{"command": ["true"]}"#),
    );
    assert_eq!(run.code, 403, "{run:?}");
    assert_eq!(
        get(&d, s, Some(&alice), "/v1/namespaces/prod/agents").code,
        403
    );
    assert_eq!(
        get(&d, s, Some(&alice), "/v1/namespaces/team/keys").code,
        403
    );
    // openssl's client too.
    let said = s_client(&d, s, Some(&alice));
    assert!(
        said.contains("HTTP/1.1 200") && said.contains("\"name\":\"alice\""),
        "{said}"
    );

    // `optional`: an API key alone does; no credential at all is a 401.
    let admin = call(
        &d,
        s,
        None,
        &[format!("X-API-Key: {}", d.admin)],
        "GET",
        "/v1/whoami",
        None,
    );
    assert_eq!(whoami(&admin)["name"], "admin");
    assert_eq!(get(&d, s, None, "/v1/whoami").code, 401);
    assert_eq!(get(&d, s, None, "/healthz").code, 200);
    // A credential in the request wins over the connection's certificate …
    let both = call(
        &d,
        s,
        Some(&alice),
        &[format!("X-API-Key: {}", d.admin)],
        "GET",
        "/v1/whoami",
        None,
    );
    let both = whoami(&both);
    assert_eq!(both["name"], "admin");
    assert!(
        both["keyId"]
            .as_str()
            .is_some_and(|k| k.starts_with("key_")),
        "{both}"
    );
    // … and a bad one is refused, not passed over for the certificate.
    for header in [
        "X-API-Key: spawn_sk_live_notakey".to_owned(),
        "Authorization: Bearer abc.def.ghi".to_owned(),
        "Authorization: Basic YWxpY2U6eA==".to_owned(),
    ] {
        let res = call(
            &d,
            s,
            Some(&alice),
            std::slice::from_ref(&header),
            "GET",
            "/v1/whoami",
            None,
        );
        assert_eq!(res.code, 401, "{header}: {res:?}");
    }

    // Hostile certificates: refused at the handshake (no HTTP answer) …
    let two_cas_alice = issue(p, "other-ca", Some(&other_ca), |_| {});
    let handshake: Vec<(&str, Issued)> = vec![
        ("a certificate of another CA", two_cas_alice),
        (
            "expired",
            issue(p, "expired", Some(&ca), |c| {
                c.not_before = date_time_ymd(2020, 1, 1);
                c.not_after = date_time_ymd(2021, 1, 1);
            }),
        ),
        (
            "not yet valid",
            issue(p, "not-yet", Some(&ca), |c| {
                c.not_before = date_time_ymd(2090, 1, 1);
            }),
        ),
        ("self-signed", issue(p, "self-signed", None, |_| {})),
        (
            "serverAuth only",
            issue(p, "server-auth", Some(&ca), |c| {
                c.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }),
        ),
        (
            "a CA certificate as the client's",
            issue(p, "a-ca", Some(&ca), |c| {
                c.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                c.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
            }),
        ),
        ("revoked (the CRL)", revoked),
    ];
    // A certificate signed by alice's (which is no CA) with alice's own chain sent along.
    let alice_as_ca = Ca {
        cert: must(
            {
                let mut params = CertificateParams::default();
                params.distinguished_name = dn("alice");
                params.serial_number = Some(SerialNumber::from(alice.serial));
                params.self_signed(&must(KeyPair::generate(), "a key"))
            },
            "alice as an issuer",
        ),
        key: must(
            KeyPair::from_pem(&must(std::fs::read_to_string(&alice.key), "alice's key")),
            "alice's key",
        ),
    };
    let by_alice = issue(p, "by-alice", Some(&alice_as_ca), |c| {
        c.distinguished_name = dn("admin");
    });
    // The chain: the leaf, then alice's real certificate.
    let chain = format!(
        "{}{}",
        must(std::fs::read_to_string(&by_alice.crt), "by-alice.crt"),
        must(std::fs::read_to_string(&alice.crt), "alice.crt")
    );
    must(std::fs::write(&by_alice.crt, chain), "write the chain");
    let mut handshake = handshake;
    handshake.push(("signed by a client certificate (not a CA)", by_alice));
    for (what, cert) in &handshake {
        let res = get(&d, s, Some(cert), "/v1/whoami");
        assert_eq!(res.code, 0, "{what}: an HTTP answer {res:?}");
        assert!(!res.stderr.is_empty(), "{what}: curl said nothing");
        assert_eq!(get(&d, s, None, "/healthz").code, 200, "after {what}");
    }
    // openssl's client is refused the same way.
    let said = s_client(&d, s, Some(&handshake[0].1));
    assert!(!said.contains("HTTP/1.1"), "{said}");

    // … or, verified but naming no one a principal can be, a 401 (audited).
    let mut two = DistinguishedName::new();
    two.push(DnType::CommonName, "alice");
    two.push(DnType::CustomDnType(vec![2, 5, 4, 3]), "admin");
    let mut org_only = DistinguishedName::new();
    org_only.push(DnType::OrganizationName, "admins");
    let named: Vec<(&str, DistinguishedName, &str)> = vec![
        ("no CommonName", org_only, spawn_auth::cert::NO_COMMON_NAME),
        ("two CommonNames", two, spawn_auth::cert::MANY_COMMON_NAMES),
        (
            "a space",
            dn("alice admin"),
            spawn_auth::cert::NOT_A_PRINCIPAL,
        ),
        (
            "a newline",
            dn("alice\nUser/admin"),
            spawn_auth::cert::NOT_A_PRINCIPAL,
        ),
        (
            "a zero-width space",
            dn("ad\u{200b}min"),
            spawn_auth::cert::NOT_A_PRINCIPAL,
        ),
        (
            "254 bytes",
            dn(&"a".repeat(254)),
            spawn_auth::cert::NOT_A_PRINCIPAL,
        ),
        (
            "a BMPString",
            {
                let mut n = DistinguishedName::new();
                n.push(
                    DnType::CommonName,
                    DnValue::BmpString(must(rcgen::BmpString::try_from("alice"), "BMP")),
                );
                n
            },
            spawn_auth::cert::NOT_TEXT,
        ),
    ];
    let before = d.audit().matches("\"auth.failure\"").count();
    for (i, (what, name, reason)) in named.into_iter().enumerate() {
        let cert = issue(p, &format!("named-{i}"), Some(&ca), |c| {
            c.distinguished_name = name;
        });
        let res = get(&d, s, Some(&cert), "/v1/whoami");
        assert_eq!(res.code, 401, "{what}: {res:?}");
        assert!(res.body.contains(reason), "{what}: {}", res.body);
        assert_eq!(
            get(&d, s, Some(&cert), "/healthz").code,
            200,
            "after {what}"
        );
        let log = d.audit();
        assert!(log.contains(reason), "{what}: not audited");
    }
    let log = d.audit();
    assert!(
        log.matches("\"auth.failure\"").count() >= before + 7,
        "each refused name is an auth.failure"
    );
    // alice's denials name her, authenticated by her certificate.
    let denied = log
        .lines()
        .filter(|l| l.contains("\"rbac.permission.denied\"") && l.contains("\"mtls\""))
        .count();
    assert!(denied >= 3, "{log}");
    assert!(log.contains("\"name\":\"alice\""), "{log}");
}

#[test]
fn required_refuses_a_connection_without_a_certificate() {
    let dir = must(tempfile::tempdir(), "a temporary directory");
    let p = dir.path();
    let server = server_certificate(p);
    let ca = new_ca("spawn-test-client-ca");
    let alice = issue(p, "alice", Some(&ca), |_| {});
    let d = Daemon::start_full(
        None,
        None,
        LIMITS,
        &tls_block(p, &server, &ca, Some("required"), None),
    );
    let s = server.0.as_path();
    // No certificate: no HTTP at all, an API key or not.
    let res = call(
        &d,
        s,
        None,
        &[format!("X-API-Key: {}", d.admin)],
        "GET",
        "/v1/whoami",
        None,
    );
    assert_eq!(res.code, 0, "{res:?}");
    assert_eq!(get(&d, s, None, "/healthz").code, 0);
    let said = s_client(&d, s, None);
    assert!(!said.contains("HTTP/1.1"), "{said}");
    assert!(said.contains("alert"), "{said}");
    // With one: alice, or the key's principal when a key is sent too.
    assert_eq!(
        whoami(&get(&d, s, Some(&alice), "/v1/whoami"))["name"],
        "alice"
    );
    let both = call(
        &d,
        s,
        Some(&alice),
        &[format!("X-API-Key: {}", d.admin)],
        "GET",
        "/v1/whoami",
        None,
    );
    assert_eq!(whoami(&both)["name"], "admin");
    assert_eq!(get(&d, s, Some(&alice), "/healthz").code, 200);
}

/// A CRL past its nextUpdate tells nothing of what was revoked since: every certificate is
/// refused, the revoked and the others alike (API keys still do, `optional`).
#[test]
fn an_expired_crl_refuses_every_certificate() {
    let dir = must(tempfile::tempdir(), "a temporary directory");
    let p = dir.path();
    let server = server_certificate(p);
    let ca = new_ca("spawn-test-client-ca");
    let alice = issue(p, "alice", Some(&ca), |_| {});
    let d = Daemon::start_full(
        None,
        None,
        LIMITS,
        &tls_block(p, &server, &ca, None, Some(&crl(&ca, &[1], 2022))),
    );
    let s = server.0.as_path();
    assert_eq!(get(&d, s, Some(&alice), "/v1/whoami").code, 0);
    let admin = call(
        &d,
        s,
        None,
        &[format!("X-API-Key: {}", d.admin)],
        "GET",
        "/v1/whoami",
        None,
    );
    assert_eq!(whoami(&admin)["name"], "admin");
}

/// A client CA or CRL that cannot be used stops the daemon with the reason and the file.
#[test]
fn unusable_client_ca_or_crl_files_stop_the_daemon() {
    let dir = must(tempfile::tempdir(), "a temporary directory");
    let p = dir.path();
    let server = server_certificate(p);
    let ca = new_ca("spawn-test-client-ca");
    let ca_file = p.join("ca.pem");
    must(std::fs::write(&ca_file, ca.cert.pem()), "write ca.pem");
    let crl_file = p.join("crl.pem");
    must(
        std::fs::write(&crl_file, crl(&ca, &[1], 2099)),
        "write crl.pem",
    );
    let write = |name: &str, text: &str| {
        let f = p.join(name);
        must(std::fs::write(&f, text), "write a file");
        f.display().to_string()
    };
    let empty = write("empty.pem", "");
    let text = write("text.pem", "not a certificate\n");
    let bad_base64 = write(
        "bad-base64.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    let bad_der = write(
        "bad-der.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let bad_crl_der = write(
        "bad-crl.pem",
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    );
    let missing = p.join("missing.pem").display().to_string();
    let ca_s = ca_file.display().to_string();
    let crl_s = crl_file.display().to_string();
    // A CA file given as the CRL: PEM of another kind, so no CRL in it.
    let cases: Vec<(String, &str)> = vec![
        (format!("clientCa: {missing}"), "missing.pem"),
        (format!("clientCa: {empty}"), "no certificate in it"),
        (format!("clientCa: {text}"), "no certificate in it"),
        (format!("clientCa: {bad_base64}"), "bad-base64.pem"),
        (format!("clientCa: {bad_der}"), "not usable as a CA"),
        (
            format!("clientCa: {ca_s}\n  clientCrl: {missing}"),
            "missing.pem",
        ),
        (
            format!("clientCa: {ca_s}\n  clientCrl: {empty}"),
            "no CRL in it",
        ),
        (
            format!("clientCa: {ca_s}\n  clientCrl: {ca_s}"),
            "no CRL in it",
        ),
        (
            format!("clientCa: {ca_s}\n  clientCrl: {bad_crl_der}"),
            "bad-crl.pem",
        ),
        (
            format!("clientCa: {ca_s}\n  clientAuth: sometimes"),
            "clientAuth",
        ),
        ("clientAuth: required".to_owned(), "need tls.clientCa"),
        (format!("clientCrl: {crl_s}"), "need tls.clientCa"),
    ];
    for (client, says) in &cases {
        let yaml = format!(
            "tls:\n  cert: {}\n  key: {}\n  {client}\n",
            server.0.display(),
            server.1.display()
        );
        let err = common::refused(p, &yaml);
        assert!(err.contains(says), "{client}: {err}");
        if client.starts_with("clientCa: /") && !client.contains("clientAuth") {
            assert!(err.contains("tls.client"), "{client}: {err}");
        }
    }
}

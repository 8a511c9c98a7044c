//! The Vault client (`spawn_secrets::vault`) against the stand-in of `common/vault.rs`
//! (written from Vault's published HTTP API; no Vault server can be had here): KV v2 reads
//! with a token and with AppRole, the token's renewal, TLS with the CA given (and refused
//! without it), a namespace header; every failure a clear error that never holds a token or
//! a value.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common {
    pub mod vault;
}

use std::collections::HashMap;
use std::time::Duration;

use common::vault::{State, Vault};
use spawn_secrets::vault::{VaultAuth, VaultClient, VaultConfig};
use zeroize::Zeroizing;

const TOKEN: &str = "hvs.test-token-4f2a";
const VALUE: &str = "kv2-value-9b1e";

fn state() -> State {
    let mut app = HashMap::new();
    app.insert("token".to_owned(), VALUE.to_owned());
    app.insert("other".to_owned(), "x".to_owned());
    let mut secrets = HashMap::new();
    secrets.insert("secret/data/app".to_owned(), app);
    State {
        secrets,
        tokens: vec![TOKEN.to_owned()],
        approle: Some((
            "role-1".into(),
            "sid-secret-77".into(),
            "hvs.approle-token".into(),
            2,
        )),
        ..State::default()
    }
}

fn config(v: &Vault, auth: VaultAuth) -> VaultConfig {
    VaultConfig {
        addr: v.addr.clone(),
        auth,
        ca_cert: v.ca.clone(),
        namespace: Some("team-a".into()),
    }
}

fn token() -> VaultAuth {
    VaultAuth::Token(Zeroizing::new(TOKEN.to_owned()))
}

#[test]
fn kv2_values_are_read_over_tls_with_a_token_and_with_approle() {
    let v = Vault::start(true, state());
    let mut c = VaultClient::connect(&config(&v, token())).unwrap();
    assert_eq!(
        &*c.read_kv2("secret/data/app", "token").unwrap(),
        VALUE.as_bytes()
    );
    let approle = VaultAuth::AppRole {
        role_id: "role-1".into(),
        secret_id: Zeroizing::new("sid-secret-77".into()),
    };
    let mut c = VaultClient::connect(&config(&v, approle)).unwrap();
    assert_eq!(
        &*c.read_kv2("secret/data/app", "token").unwrap(),
        VALUE.as_bytes()
    );
    // The token's lease (2 s) is renewed once half of it has passed.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(&*c.read_kv2("secret/data/app", "other").unwrap(), b"x");
    let st = v.state.lock().unwrap();
    assert_eq!((st.logins, st.renewals), (1, 1));
    assert!(st.namespaces.iter().all(|n| n == "team-a") && !st.namespaces.is_empty());
}

#[test]
fn failures_are_clear_and_quote_no_token_or_value() {
    let v = Vault::start(true, state());
    let check = |e: spawn_secrets::SecretsError, want: &str| {
        let text = e.to_string();
        assert!(text.contains(want), "want {want:?} in {text}");
        for leak in [TOKEN, VALUE, "sid-secret-77", "hvs.approle-token"] {
            assert!(!text.contains(leak), "{text}");
        }
    };
    let mut c = VaultClient::connect(&config(&v, token())).unwrap();
    check(
        c.read_kv2("secret/data/missing", "token").unwrap_err(),
        "404",
    );
    check(
        c.read_kv2("secret/data/app", "nokey").unwrap_err(),
        "no such key",
    );
    let bad = VaultAuth::Token(Zeroizing::new("hvs.wrong".into()));
    let mut c = VaultClient::connect(&config(&v, bad)).unwrap();
    check(c.read_kv2("secret/data/app", "token").unwrap_err(), "403");
    let bad_role = VaultAuth::AppRole {
        role_id: "role-1".into(),
        secret_id: Zeroizing::new("wrong".into()),
    };
    check(
        VaultClient::connect(&config(&v, bad_role)).unwrap_err(),
        "invalid role or secret ID",
    );
    // TLS: without the CA (the public roots only), the server is not trusted.
    let mut untrusted = config(&v, token());
    untrusted.ca_cert = None;
    let mut c = VaultClient::connect(&untrusted).unwrap();
    check(
        c.read_kv2("secret/data/app", "token").unwrap_err(),
        "cannot be reached",
    );
    // A CA file that is not one.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("ca.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let mut wrong = config(&v, token());
    wrong.ca_cert = Some(junk);
    check(VaultClient::connect(&wrong).unwrap_err(), "VAULT_CACERT");
    // Nothing listening.
    let mut gone = config(&v, token());
    gone.addr = "https://127.0.0.1:9".into();
    let mut c = VaultClient::connect(&gone).unwrap();
    check(
        c.read_kv2("secret/data/app", "token").unwrap_err(),
        "cannot be reached",
    );
    // Plain http only to loopback; other schemes refused.
    for addr in [
        "http://vault.example.com:8200",
        "ftp://127.0.0.1",
        "vault.example.com",
    ] {
        let mut c = config(&v, token());
        c.addr = addr.into();
        check(VaultClient::connect(&c).unwrap_err(), "not https");
    }
    let plain = Vault::start(false, state());
    let mut c = VaultClient::connect(&config(&plain, token())).unwrap();
    assert_eq!(
        &*c.read_kv2("secret/data/app", "token").unwrap(),
        VALUE.as_bytes()
    );
}

/// Vault's Transit engine as the master key provider: values set and read back through
/// data keys it wraps (never the local key file), its rotation rewraps every data key
/// online (values untouched, still opening), a wrapped key moved to another namespace does
/// not unwrap, and Vault unreachable is a clear error.
#[tokio::test]
async fn transit_wraps_the_data_keys_and_rotates() {
    use spawn_secrets::master::MasterKeys as _;
    use spawn_secrets::vault::TransitMasterKeys;
    let mut st = state();
    st.transit = Some(("transit".into(), "spawn".into(), 1));
    let v = Vault::start(true, st);
    let dir = tempfile::tempdir().unwrap();
    let store = spawn_store::Store::open(&dir.path().join("s.db").display().to_string())
        .await
        .unwrap();
    let transit = TransitMasterKeys::connect(&config(&v, token()), "transit", "spawn").unwrap();
    assert_eq!(transit.current(), "transit:transit/spawn:v1");
    let secrets = spawn_secrets::Secrets::new(store.clone(), transit);
    secrets
        .set("team", "API", b"transit-wrapped-1", "t")
        .await
        .unwrap();
    secrets
        .set("other", "API", b"transit-wrapped-2", "t")
        .await
        .unwrap();
    let get = |ns: &'static str| {
        let s = &secrets;
        async move {
            let o = s.get(ns, "API").await.unwrap();
            secrecy::ExposeSecret::expose_secret(&o.value).to_vec()
        }
    };
    assert_eq!(get("team").await, b"transit-wrapped-1");
    let keys = store.secret_keys_all().await.unwrap();
    assert!(
        keys.iter().all(|k| k.master == "transit:transit/spawn:v1"),
        "{keys:?}"
    );
    // What the database holds is Vault's ciphertext, not the key.
    assert!(keys.iter().all(|k| k.wrapped.starts_with(b"vault:v1:")));
    let rotated = secrets.rotate_master().await.unwrap();
    assert_eq!(rotated.master, "transit:transit/spawn:v2");
    assert_eq!(rotated.rewrapped, 2);
    let keys = store.secret_keys_all().await.unwrap();
    assert!(
        keys.iter().all(|k| k.master == "transit:transit/spawn:v2"),
        "{keys:?}"
    );
    assert_eq!(get("team").await, b"transit-wrapped-1");
    assert_eq!(get("other").await, b"transit-wrapped-2");
    // A wrapped key moved to another namespace's place does not unwrap.
    let team = keys.iter().find(|k| k.namespace == "team").unwrap();
    let transit = TransitMasterKeys::connect(&config(&v, token()), "transit", "spawn").unwrap();
    let moved = transit.unwrap(
        &team.master,
        &team.wrapped,
        &spawn_secrets::crypto::data_key_aad("other", team.version),
    );
    assert!(
        matches!(moved, Err(spawn_secrets::SecretsError::WrappedKeyTampered)),
        "{moved:?}"
    );
    // A ciphertext Vault did not make, and another provider's key name.
    let forged = transit.unwrap(&team.master, b"vault:v2:forged", b"x");
    assert!(matches!(
        forged,
        Err(spawn_secrets::SecretsError::WrappedKeyTampered)
    ));
    let other = transit.unwrap("local:0011223344556677", &team.wrapped, b"x");
    assert!(matches!(
        other,
        Err(spawn_secrets::SecretsError::WrongMasterKey { .. })
    ));
    // A Transit key that does not exist, and Vault gone: clear errors.
    let e = TransitMasterKeys::connect(&config(&v, token()), "transit", "nope").unwrap_err();
    assert!(e.to_string().contains("404"), "{e}");
    let mut gone = config(&v, token());
    gone.addr = "https://127.0.0.1:9".into();
    let e = TransitMasterKeys::connect(&gone, "transit", "spawn").unwrap_err();
    assert!(e.to_string().contains("cannot be reached"), "{e}");
    for bad in ["../x", "a b", ""] {
        assert!(TransitMasterKeys::connect(&config(&v, token()), bad, "spawn").is_err());
    }
    store.close().await;
}

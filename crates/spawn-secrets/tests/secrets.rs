//! The secrets store on real databases (SQLite and PostgreSQL): values sealed at rest,
//! every tampering and every move of a ciphertext or a wrapped key refused with a clear
//! error, the wrong master key refused, rotations of the master key (online, values
//! untouched) and of data keys (every value resealed), crypto-shredding, hostile names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../spawn-store/tests/common/mod.rs"]
mod common;

use std::path::Path;

use common::Db;
use secrecy::ExposeSecret as _;
use spawn_secrets::master::LocalMasterKeys;
use spawn_secrets::{Secrets, SecretsError};
use spawn_store::SealedSecret;

macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::common::sqlite().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::common::postgres().await).await
                }
            )*
        }
    };
}

on_both!(
    values_round_trip_and_only_sealed_bytes_are_stored,
    tampered_or_moved_ciphertexts_and_keys_fail_closed,
    another_master_key_opens_nothing,
    the_master_key_rotates_online_without_resealing_values,
    a_data_key_rotation_reseals_every_value,
    shredding_a_namespace_leaves_nothing_to_open,
    names_values_and_namespaces_are_checked,
    concurrent_writers_get_distinct_versions,
);

fn secrets(db: &Db, key_file: &Path) -> Secrets {
    Secrets::new(
        db.store.clone(),
        LocalMasterKeys::load_or_create(key_file).unwrap(),
    )
}

/// A store's secrets under a master key file of a directory of its own (kept alive).
fn fresh(db: &Db) -> (tempfile::TempDir, Secrets) {
    let dir = tempfile::tempdir().unwrap();
    let s = secrets(db, &dir.path().join("master.key"));
    (dir, s)
}

/// The latest sealed version of a secret, as the database holds it.
async fn latest(db: &Db, ns: &str, name: &str) -> SealedSecret {
    db.store.secret_latest(ns, name).await.unwrap().unwrap()
}

async fn value(s: &Secrets, ns: &str, name: &str) -> Vec<u8> {
    s.get(ns, name)
        .await
        .unwrap()
        .value
        .expose_secret()
        .to_vec()
}

const PLAIN: &[u8] = b"ghp_0123456789abcdefSECRETVALUE";

async fn values_round_trip_and_only_sealed_bytes_are_stored(db: Db) {
    let (_dir, s) = fresh(&db);
    assert_eq!(
        s.set("team-a", "GITHUB_TOKEN", PLAIN, "User/alice")
            .await
            .unwrap(),
        1
    );
    assert_eq!(value(&s, "team-a", "GITHUB_TOKEN").await, PLAIN);
    assert_eq!(
        s.set("team-a", "GITHUB_TOKEN", b"second", "User/bob")
            .await
            .unwrap(),
        2
    );
    let got = s.get("team-a", "GITHUB_TOKEN").await.unwrap();
    assert_eq!(
        (got.version, got.value.expose_secret()),
        (2, &b"second"[..])
    );
    assert!(!format!("{got:?}").contains("second"), "{got:?}");
    s.set("team-a", "OTHER", b"x", "User/alice").await.unwrap();
    let list = s.list("team-a").await.unwrap();
    assert_eq!(
        list.iter()
            .map(|e| (e.name.as_str(), e.version, e.updated_by.as_str()))
            .collect::<Vec<_>>(),
        vec![("GITHUB_TOKEN", 2, "User/bob"), ("OTHER", 1, "User/alice")]
    );
    assert!(list[0].created_ms <= list[0].updated_ms);
    assert!(s.list("team-b").await.unwrap().is_empty());
    // What the database holds: no plaintext.
    let row = latest(&db, "team-a", "GITHUB_TOKEN").await;
    assert!(!row.sealed.windows(6).any(|w| w == b"second"));
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        for file in [path.to_owned(), format!("{path}-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                assert!(!bytes.windows(PLAIN.len()).any(|w| w == PLAIN), "{file}");
            }
        }
    }
    // Deleted: every version gone; deleting again says so.
    assert_eq!(s.delete("team-a", "GITHUB_TOKEN").await.unwrap(), 2);
    assert!(matches!(
        s.get("team-a", "GITHUB_TOKEN").await,
        Err(SecretsError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete("team-a", "GITHUB_TOKEN").await,
        Err(SecretsError::NotFound { .. })
    ));
    assert_eq!(value(&s, "team-a", "OTHER").await, b"x");
}

/// A new latest version made of `row` with `change` applied (as whoever holds the database
/// could write it).
async fn forge(db: &Db, row: &SealedSecret, change: impl FnOnce(&mut SealedSecret)) {
    let mut f = row.clone();
    f.version += 100;
    change(&mut f);
    db.store.insert_secret(&f).await.unwrap();
}

async fn tampered_or_moved_ciphertexts_and_keys_fail_closed(db: Db) {
    let (_dir, s) = fresh(&db);
    s.set("team-a", "X", b"value-x", "u").await.unwrap();
    s.set("team-a", "Y", b"value-y", "u").await.unwrap();
    s.set("team-b", "X", b"value-bx", "u").await.unwrap();
    let ax = latest(&db, "team-a", "X").await;
    let ay = latest(&db, "team-a", "Y").await;
    let tampered = |r: Result<spawn_secrets::Opened, SecretsError>, what: &str| {
        let e = r.expect_err(what);
        assert!(matches!(e, SecretsError::Tampered { .. }), "{what}: {e}");
        assert!(e.to_string().contains("does not open"), "{e}");
        for v in ["value-x", "value-y", "value-bx"] {
            assert!(!e.to_string().contains(v), "{e}");
        }
    };
    // Every byte of the sealed value changed, in turn.
    for i in [0, 1, 12, 13, ax.sealed.len() / 2, ax.sealed.len() - 1] {
        forge(&db, &ax, |f| f.sealed[i] ^= 1).await;
        tampered(s.get("team-a", "X").await, &format!("byte {i}"));
        db.store.delete_secret("team-a", "X").await.unwrap();
        db.store.insert_secret(&ax).await.unwrap();
    }
    // Y's ciphertext under X's name; an older version's ciphertext as a newer one; another
    // namespace's ciphertext of the same name; cut short.
    forge(&db, &ax, |f| f.sealed = ay.sealed.clone()).await;
    tampered(s.get("team-a", "X").await, "Y's ciphertext as X");
    s.set("team-a", "Z", b"z1", "u").await.unwrap();
    let z1 = latest(&db, "team-a", "Z").await;
    s.set("team-a", "Z", b"z2", "u").await.unwrap();
    forge(&db, &z1, |_| {}).await;
    tampered(s.get("team-a", "Z").await, "version 1 as version 101");
    let bx = latest(&db, "team-b", "X").await;
    forge(&db, &bx, |f| f.sealed = ax.sealed.clone()).await;
    tampered(s.get("team-b", "X").await, "team-a's X in team-b");
    forge(&db, &ay, |f| f.sealed.truncate(10)).await;
    tampered(s.get("team-a", "Y").await, "cut short");
    // A value that names a data key the database does not hold.
    s.set("team-a", "W", b"w", "u").await.unwrap();
    let w = latest(&db, "team-a", "W").await;
    forge(&db, &w, |f| f.key_version = 7).await;
    let e = s.get("team-a", "W").await.unwrap_err();
    assert!(
        matches!(e, SecretsError::MissingDataKey { key_version: 7, .. }),
        "{e}"
    );

    // Wrapped data keys: a byte changed, or another namespace's moved in: nothing under
    // them opens or seals, and other namespaces are untouched.
    let ka = db.store.secret_key("team-a", 1).await.unwrap().unwrap();
    let kb = db.store.secret_key("team-b", 1).await.unwrap().unwrap();
    let mut changed = ka.wrapped.clone();
    changed[20] ^= 0x40;
    for (wrapped, master, what) in [
        (&changed, &ka.master, "a byte changed"),
        (&kb.wrapped, &kb.master, "team-b's data key in team-a"),
    ] {
        assert!(db
            .store
            .rewrap_secret_key("team-a", 1, &ka.master, wrapped, master)
            .await
            .unwrap());
        for r in [
            s.get("team-a", "X").await.map(drop),
            s.set("team-a", "N", b"n", "u").await.map(drop),
        ] {
            let e = r.expect_err(what);
            assert!(matches!(e, SecretsError::WrappedKeyTampered), "{what}: {e}");
        }
        assert!(db
            .store
            .rewrap_secret_key("team-a", 1, master, &ka.wrapped, &ka.master)
            .await
            .unwrap());
    }
    s.set("team-b", "Q", b"q", "u").await.unwrap();
    assert_eq!(value(&s, "team-b", "Q").await, b"q");
}

async fn another_master_key_opens_nothing(db: Db) {
    let (dir, s) = fresh(&db);
    s.set("team-a", "X", PLAIN, "u").await.unwrap();
    // Another key file: its key is not the one that wrapped.
    let other = secrets(&db, &dir.path().join("other.key"));
    let e = other.get("team-a", "X").await.unwrap_err();
    assert!(matches!(e, SecretsError::WrongMasterKey { .. }), "{e}");
    // A file with the right id and another key: the wrapping does not open.
    let text = std::fs::read_to_string(dir.path().join("master.key")).unwrap();
    let id = text.split(' ').nth(1).unwrap();
    let forged = dir.path().join("forged.key");
    let other_text = std::fs::read_to_string(dir.path().join("other.key")).unwrap();
    let other_id = other_text.split(' ').nth(1).unwrap();
    std::fs::write(&forged, other_text.replace(other_id, id)).unwrap();
    std::fs::set_permissions(&forged, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let e = secrets(&db, &forged).get("team-a", "X").await.unwrap_err();
    assert!(matches!(e, SecretsError::WrappedKeyTampered), "{e}");
    assert!(!e.to_string().contains(std::str::from_utf8(PLAIN).unwrap()));
}

async fn the_master_key_rotates_online_without_resealing_values(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let a = secrets(&db, &path);
    let b = secrets(&db, &path);
    a.set("team-a", "X", b"ax", "u").await.unwrap();
    a.set("team-b", "X", b"bx", "u").await.unwrap();
    let before = latest(&db, "team-a", "X").await;
    let old_master = db
        .store
        .secret_key("team-a", 1)
        .await
        .unwrap()
        .unwrap()
        .master;
    let r = a.rotate_master().await.unwrap();
    assert_eq!((r.rewrapped, r.retired), (2, 1), "{r:?}");
    assert_ne!(r.master, old_master);
    for k in db.store.secret_keys_all().await.unwrap() {
        assert_eq!(k.master, r.master);
    }
    // Values were not resealed; both processes open them (b reads the rotated file).
    assert_eq!(latest(&db, "team-a", "X").await, before);
    assert_eq!(value(&b, "team-a", "X").await, b"ax");
    assert_eq!(value(&a, "team-b", "X").await, b"bx");
    b.set("team-c", "X", b"cx", "u").await.unwrap();
    assert_eq!(
        db.store
            .secret_key("team-c", 1)
            .await
            .unwrap()
            .unwrap()
            .master,
        r.master
    );
    // The file holds one key again; a second rotation works on from it.
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    let r2 = b.rotate_master().await.unwrap();
    assert_eq!((r2.rewrapped, r2.retired), (3, 1));
    assert_eq!(value(&a, "team-c", "X").await, b"cx");
}

async fn a_data_key_rotation_reseals_every_value(db: Db) {
    let (_dir, s) = fresh(&db);
    s.set("team-a", "X", b"x1", "u").await.unwrap();
    s.set("team-a", "X", b"x2", "u").await.unwrap();
    s.set("team-a", "Y", b"y1", "u").await.unwrap();
    s.set("team-b", "X", b"bx", "u").await.unwrap();
    let before = latest(&db, "team-a", "X").await;
    assert_eq!(s.rotate_data_key("team-a").await.unwrap(), (2, 3));
    let after = latest(&db, "team-a", "X").await;
    assert_eq!((after.version, after.key_version), (2, 2));
    assert_ne!(after.sealed, before.sealed);
    assert_eq!(value(&s, "team-a", "X").await, b"x2");
    assert_eq!(value(&s, "team-a", "Y").await, b"y1");
    assert!(
        db.store.secret_key("team-a", 1).await.unwrap().is_none(),
        "the old data key is gone"
    );
    // New values are sealed under the new key; other namespaces are untouched.
    s.set("team-a", "Z", b"z", "u").await.unwrap();
    assert_eq!(latest(&db, "team-a", "Z").await.key_version, 2);
    assert_eq!(latest(&db, "team-b", "X").await.key_version, 1);
    // A namespace with no key yet gets its first.
    assert_eq!(s.rotate_data_key("team-new").await.unwrap(), (1, 0));
}

async fn shredding_a_namespace_leaves_nothing_to_open(db: Db) {
    let (_dir, s) = fresh(&db);
    s.set("team-a", "X", b"x", "u").await.unwrap();
    s.set("team-a", "Y", b"y", "u").await.unwrap();
    s.set("team-b", "X", b"bx", "u").await.unwrap();
    assert_eq!(s.shred("team-a").await.unwrap(), (1, 2));
    assert!(matches!(
        s.get("team-a", "X").await,
        Err(SecretsError::NotFound { .. })
    ));
    assert!(db.store.secret_key("team-a", 1).await.unwrap().is_none());
    assert_eq!(value(&s, "team-b", "X").await, b"bx");
    // A new secret there gets a new data key.
    s.set("team-a", "X", b"again", "u").await.unwrap();
    assert_eq!(value(&s, "team-a", "X").await, b"again");
}

async fn names_values_and_namespaces_are_checked(db: Db) {
    let (_dir, s) = fresh(&db);
    let long = "A".repeat(128);
    for name in ["_", "A", "a1_", "GITHUB_TOKEN", long.as_str()] {
        s.set("team-a", name, b"v", "u")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let too_long = "A".repeat(129);
    for name in [
        "",
        "1A",
        "9",
        "A-B",
        "A B",
        "A\n",
        "A\r",
        "\u{c4}",
        "A=B",
        "../x",
        "a/b",
        "A\0",
        "A\u{1b}[2J",
        " A",
        "A ",
        "A.B",
        "$A",
        too_long.as_str(),
    ] {
        let e = s.set("team-a", name, b"v", "u").await.unwrap_err();
        assert!(matches!(e, SecretsError::InvalidName(_)), "{name:?}: {e}");
        let e = s.get("team-a", name).await.unwrap_err();
        assert!(matches!(e, SecretsError::InvalidName(_)), "{name:?}: {e}");
    }
    for ns in ["", "A", "a/b", "a b", "a\n", "..\u{0}"] {
        let e = s.set(ns, "X", b"v", "u").await.unwrap_err();
        assert!(
            matches!(e, SecretsError::InvalidNamespace(_)),
            "{ns:?}: {e}"
        );
    }
    let max = vec![7u8; spawn_secrets::MAX_VALUE];
    s.set("team-a", "BIG", &max, "u").await.unwrap();
    assert_eq!(value(&s, "team-a", "BIG").await, max);
    for bad in [Vec::new(), vec![7u8; spawn_secrets::MAX_VALUE + 1]] {
        let e = s.set("team-a", "BAD", &bad, "u").await.unwrap_err();
        assert!(matches!(e, SecretsError::InvalidValue { .. }), "{e}");
    }
    // Any bytes are a value (binary, NUL, invalid UTF-8).
    let binary: Vec<u8> = (0..=255u8).collect();
    s.set("team-a", "BIN", &binary, "u").await.unwrap();
    assert_eq!(value(&s, "team-a", "BIN").await, binary);
}

async fn concurrent_writers_get_distinct_versions(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    LocalMasterKeys::load_or_create(&path).unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = secrets(&db, &path);
        tasks.push(tokio::spawn(async move {
            s.set("fresh", "X", format!("v{i}").as_bytes(), "u").await
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=6).collect::<Vec<_>>());
    let s = secrets(&db, &path);
    assert!(value(&s, "fresh", "X").await.starts_with(b"v"));
    assert_eq!(
        db.store.secret_keys_all().await.unwrap().len(),
        1,
        "one data key made"
    );
}

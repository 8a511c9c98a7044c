//! Who a key is, remembered between requests where that is exact.
//!
//! Authenticating a request reads its key and the grants of its principal from the store.
//! On SQLite the daemon is the only writer of keys, roles and bindings (one daemon per
//! store, held by a lock: see [`crate::lock_sqlite_store`]), so what it read stays true
//! until it writes them itself: the answer is kept, tagged with the store's
//! [`Store::auth_epoch`], and used while no such write happened since (a revocation or a
//! binding changed through this daemon holds from its next request on, as without the
//! cache). On PostgreSQL several daemons write; every request reads the database, so a
//! revocation on one daemon holds on the next request on every other.

use std::collections::HashMap;
use std::sync::Mutex;

use spawn_store::{KeyRecord, Store, StoreError};

/// Beyond this many keys remembered, all are forgotten (keys are few; this bounds memory
/// whatever happens).
const MAX_KEYS: usize = 4096;

type Found = (KeyRecord, Vec<(String, String)>);

#[derive(Debug)]
pub(crate) struct KeyCache {
    enabled: bool,
    keys: Mutex<HashMap<[u8; 32], (u64, Found)>>,
}

impl KeyCache {
    /// A cache that remembers (`enabled`), or one that always reads the store.
    pub(crate) fn new(enabled: bool) -> KeyCache {
        KeyCache {
            enabled,
            keys: Mutex::default(),
        }
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (u64, Found)>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key whose hash is `hash` and its principal's grants, as
    /// [`Store::key_with_grants`] answers now.
    pub(crate) async fn lookup(
        &self,
        store: &Store,
        hash: &[u8; 32],
    ) -> Result<Option<Found>, StoreError> {
        if !self.enabled {
            return store.key_with_grants(hash).await;
        }
        let epoch = store.auth_epoch();
        if let Some((at, found)) = self.keys().get(hash) {
            if *at == epoch {
                return Ok(Some(found.clone()));
            }
        }
        let found = store.key_with_grants(hash).await?;
        if let Some(f) = &found {
            let mut keys = self.keys();
            // Kept only if nothing was written while it was read: a revocation committed
            // meanwhile must not be hidden by the answer read before it.
            if store.auth_epoch() == epoch {
                if keys.len() >= MAX_KEYS {
                    keys.clear();
                }
                keys.insert(*hash, (epoch, f.clone()));
            }
        }
        Ok(found)
    }

    /// Notes that the key `hash` was marked used at `at_ms`.
    pub(crate) fn touched(&self, hash: &[u8; 32], at_ms: i64) {
        if let Some((_, (record, _))) = self.keys().get_mut(hash) {
            record.last_used_ms = Some(at_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use spawn_store::NewKey;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_home(dir.path()).await.unwrap();
        (dir, s)
    }

    fn new_key(n: u8) -> NewKey {
        NewKey {
            hash: [n; 32],
            hint: format!("…{n}"),
            test: false,
            principal_kind: "User".into(),
            principal_name: format!("u{n}"),
            created_by: "t".into(),
            namespace: "ns".into(),
        }
    }

    #[tokio::test]
    async fn a_revocation_or_a_binding_through_the_store_is_seen_at_once() {
        let (_d, s) = store().await;
        let cache = KeyCache::new(true);
        assert!(cache.lookup(&s, &[1; 32]).await.unwrap().is_none());
        let k = s.insert_key(&new_key(1)).await.unwrap();
        let (r, grants) = cache.lookup(&s, &[1; 32]).await.unwrap().unwrap();
        assert!(r.revoked_ms.is_none() && grants.is_empty());
        // Remembered: the same answer without the store (seen by closing it).
        s.put_binding(
            "ns",
            "b",
            "viewer",
            "[]",
            &[("User".into(), "u1".into())],
            None,
        )
        .await
        .unwrap();
        let (_, grants) = cache.lookup(&s, &[1; 32]).await.unwrap().unwrap();
        assert_eq!(grants, [("ns".to_owned(), "viewer".to_owned())]);
        s.revoke_key(&k.id).await.unwrap();
        let (r, _) = cache.lookup(&s, &[1; 32]).await.unwrap().unwrap();
        assert!(
            r.revoked_ms.is_some(),
            "the revocation was hidden by the cache"
        );
    }

    #[tokio::test]
    async fn remembered_answers_are_used_until_a_write() {
        let (_d, s) = store().await;
        let cache = KeyCache::new(true);
        s.insert_key(&new_key(2)).await.unwrap();
        cache.lookup(&s, &[2; 32]).await.unwrap().unwrap();
        cache.touched(&[2; 32], 42);
        // With the database gone, the remembered answer is still given (it was not read
        // again) and carries the touch.
        s.close().await;
        let (r, _) = cache.lookup(&s, &[2; 32]).await.unwrap().unwrap();
        assert_eq!(r.last_used_ms, Some(42));
        // A cache that does not remember reads the (closed) store: an error.
        assert!(KeyCache::new(false).lookup(&s, &[2; 32]).await.is_err());
    }
}

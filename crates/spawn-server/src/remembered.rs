//! What the daemon read of its configuration, remembered between requests where that is
//! exact.
//!
//! Authenticating a request reads its key and the grants of its principal; `GET` of an
//! agent reads the agent. On SQLite the daemon is the only writer of keys, roles, bindings
//! and agents (one daemon per store, held by a lock: see [`crate::lock_sqlite_store`]), so
//! what it read stays true until it writes them itself: each answer is kept, tagged with
//! the store's [`Store::config_epoch`], and used only while no such write happened since
//! (a revocation, a binding or an agent changed through this daemon holds from its next
//! request on, as without the cache). A change made to the database behind the daemon's
//! back (an operator's `UPDATE` with `sqlite3`, say) is not counted: no answer is kept longer
//! than [`AT_MOST`], so such a change holds within that time. On PostgreSQL several daemons
//! write: every request reads the database, so a revocation on one daemon holds on the
//! next request on every other.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spawn_store::{AgentRecord, KeyRecord, Store, StoreError};

/// The longest an answer is used (for changes this daemon did not make).
pub(crate) const AT_MOST: Duration = Duration::from_secs(1);

/// Beyond this many answers remembered, all are forgotten (this bounds memory whatever
/// happens).
const MAX_ENTRIES: usize = 4096;

/// A key and its principal's grants (namespace, role), as the store answers.
pub(crate) type KeyGrants = (KeyRecord, Vec<(String, String)>);

/// Answers of the store by `K`, each tagged with the configuration epoch it was read at.
#[derive(Debug)]
pub(crate) struct Remembered<K, V> {
    enabled: bool,
    entries: Mutex<HashMap<K, (u64, Instant, V)>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Remembered<K, V> {
    /// A cache that remembers (`enabled`), or one that always reads the store.
    pub(crate) fn new(enabled: bool) -> Self {
        Remembered {
            enabled,
            entries: Mutex::default(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<K, (u64, Instant, V)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What `read` answers now for `key`: remembered if nothing was written since it was
    /// read, else read (and remembered if found and nothing was written meanwhile).
    pub(crate) async fn get<F>(
        &self,
        store: &Store,
        key: &K,
        read: impl FnOnce() -> F,
    ) -> Result<Option<V>, StoreError>
    where
        F: Future<Output = Result<Option<V>, StoreError>>,
    {
        if !self.enabled {
            return read().await;
        }
        let epoch = store.config_epoch();
        let now = Instant::now();
        if let Some((at, read_at, v)) = self.entries().get(key) {
            if *at == epoch && now.duration_since(*read_at) < AT_MOST {
                return Ok(Some(v.clone()));
            }
        }
        let found = read().await?;
        if let Some(v) = &found {
            let mut entries = self.entries();
            // Kept only if nothing was written while it was read: a revocation committed
            // meanwhile must not be hidden by the answer read before it.
            if store.config_epoch() == epoch {
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
                entries.insert(key.clone(), (epoch, now, v.clone()));
            }
        }
        Ok(found)
    }

    /// Changes the remembered answer for `key`, if any (what this daemon wrote itself and
    /// does not count as configuration, such as a key's last use).
    pub(crate) fn update(&self, key: &K, f: impl FnOnce(&mut V)) {
        if let Some((_, _, v)) = self.entries().get_mut(key) {
            f(v);
        }
    }
}

/// The key whose hash is `hash` and its principal's grants.
pub(crate) async fn key(
    cache: &Remembered<[u8; 32], KeyGrants>,
    store: &Store,
    hash: &[u8; 32],
) -> Result<Option<KeyGrants>, StoreError> {
    cache.get(store, hash, || store.key_with_grants(hash)).await
}

/// An agent as `GET` answers it: its version (the `ETag`) and its view, serialized once.
#[derive(Debug)]
pub(crate) struct AgentAnswer {
    pub(crate) version: i64,
    pub(crate) body: axum::body::Bytes,
}

impl AgentAnswer {
    fn of(a: &AgentRecord) -> Result<AgentAnswer, StoreError> {
        let body = serde_json::to_vec(&crate::views::AgentView::from(a)).map_err(|e| {
            StoreError::Corrupt {
                what: "an agent's view",
                reason: e.to_string(),
            }
        })?;
        Ok(AgentAnswer {
            version: a.version,
            body: body.into(),
        })
    }
}

/// The agent `ns/name`, as `GET` answers it.
pub(crate) async fn agent(
    cache: &Remembered<(String, String), Arc<AgentAnswer>>,
    store: &Store,
    ns: &str,
    name: &str,
) -> Result<Arc<AgentAnswer>, StoreError> {
    let k = (ns.to_owned(), name.to_owned());
    let found = cache
        .get(store, &k, || async {
            match store.agent(ns, name).await {
                Ok(a) => AgentAnswer::of(&a).map(|x| Some(Arc::new(x))),
                Err(StoreError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
    found.ok_or_else(|| StoreError::NotFound {
        kind: "agent",
        name: format!("{ns}/{name}"),
    })
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
        let cache = Remembered::new(true);
        assert!(key(&cache, &s, &[1; 32]).await.unwrap().is_none());
        let k = s.insert_key(&new_key(1)).await.unwrap();
        let (r, grants) = key(&cache, &s, &[1; 32]).await.unwrap().unwrap();
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
        let (_, grants) = key(&cache, &s, &[1; 32]).await.unwrap().unwrap();
        assert_eq!(grants, [("ns".to_owned(), "viewer".to_owned())]);
        s.revoke_key(&k.id).await.unwrap();
        let (r, _) = key(&cache, &s, &[1; 32]).await.unwrap().unwrap();
        assert!(
            r.revoked_ms.is_some(),
            "the revocation was hidden by the cache"
        );
    }

    #[tokio::test]
    async fn remembered_answers_are_used_until_a_write() {
        let (_d, s) = store().await;
        let cache = Remembered::new(true);
        s.insert_key(&new_key(2)).await.unwrap();
        key(&cache, &s, &[2; 32]).await.unwrap().unwrap();
        cache.update(&[2; 32], |(r, _)| r.last_used_ms = Some(42));
        // With the database gone, the remembered answer is still given (it was not read
        // again) and carries the touch.
        s.close().await;
        let (r, _) = key(&cache, &s, &[2; 32]).await.unwrap().unwrap();
        assert_eq!(r.last_used_ms, Some(42));
        // Not beyond AT_MOST: then the store is read again (closed: an error).
        tokio::time::sleep(AT_MOST).await;
        assert!(key(&cache, &s, &[2; 32]).await.is_err());
        // A cache that does not remember reads the (closed) store: an error.
        assert!(key(&Remembered::new(false), &s, &[2; 32]).await.is_err());
    }

    #[tokio::test]
    async fn an_agent_written_or_deleted_is_read_again() {
        let (_d, s) = store().await;
        let cache = Remembered::new(true);
        assert!(matches!(
            agent(&cache, &s, "ns", "a").await,
            Err(StoreError::NotFound { .. })
        ));
        s.put_agent("ns", "a", "{}", None).await.unwrap();
        assert_eq!(agent(&cache, &s, "ns", "a").await.unwrap().version, 1);
        let first = agent(&cache, &s, "ns", "a").await.unwrap();
        s.put_agent("ns", "a", "{\"x\":1}", Some(1)).await.unwrap();
        let a = agent(&cache, &s, "ns", "a").await.unwrap();
        assert_eq!(a.version, 2);
        assert!(!Arc::ptr_eq(&a, &first));
        let view: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(view["manifest"], serde_json::json!({"x": 1}));
        // Remembered: the same answer, not serialized again.
        assert!(Arc::ptr_eq(
            &a,
            &agent(&cache, &s, "ns", "a").await.unwrap()
        ));
        s.delete_agent("ns", "a", None).await.unwrap();
        assert!(matches!(
            agent(&cache, &s, "ns", "a").await,
            Err(StoreError::NotFound { .. })
        ));
    }
}

//! API keys: only their SHA-256 is stored (`spawn-auth` makes and checks keys).

use crate::{new_id, now_ms, on_pool, Store, StoreError};

/// A key to record.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// What lists show of it (never enough to use it).
    pub hint: String,
    /// A `spawn_sk_test_…` key.
    pub test: bool,
    /// `User` or `ServiceAccount`.
    pub principal_kind: String,
    pub principal_name: String,
    /// Who created it.
    pub created_by: String,
    /// The namespace it belongs to (where it is listed and revoked); `*` for all.
    pub namespace: String,
}

/// A stored key.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyRecord {
    pub id: String,
    pub hash: Vec<u8>,
    pub hint: String,
    pub test: bool,
    pub principal_kind: String,
    pub principal_name: String,
    pub created_by: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub namespace: String,
}

/// A key and one grant of its principal (none: NULLs).
#[derive(sqlx::FromRow)]
struct KeyGrantRow {
    #[sqlx(flatten)]
    key: KeyRecord,
    grant_namespace: Option<String>,
    grant_role: Option<String>,
}

const COLUMNS: &str = "id, hash, hint, test, principal_kind, principal_name, created_by, \
                       created_ms, last_used_ms, revoked_ms, namespace";

/// `last_used` is written at most this often per key (milliseconds): a busy key does not
/// turn every request into a write.
pub const LAST_USED_RESOLUTION_MS: i64 = 60_000;

impl Store {
    /// Records a new key; returns it with its id (`key_…`).
    pub async fn insert_key(&self, key: &NewKey) -> Result<KeyRecord, StoreError> {
        let _written = self.config_write();
        let id = new_id("key")?;
        let now = now_ms();
        let sql = format!(
            "INSERT INTO api_keys ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, $9) \
             RETURNING {COLUMNS}"
        );
        on_pool!(self, p => sqlx::query_as::<_, KeyRecord>(&sql)
            .bind(&id)
            .bind(key.hash.as_slice())
            .bind(&key.hint)
            .bind(key.test)
            .bind(&key.principal_kind)
            .bind(&key.principal_name)
            .bind(&key.created_by)
            .bind(now)
            .bind(&key.namespace)
            .fetch_one(p)
            .await)
        .map_err(StoreError::db("record an API key"))
    }

    /// The key whose hash is `hash`, revoked or not.
    pub async fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE hash = $1");
        on_pool!(self, p => sqlx::query_as::<_, KeyRecord>(&sql)
            .bind(hash.as_slice())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("look up an API key"))
    }

    /// The key whose hash is `hash` (revoked or not) and, in the same read, what its
    /// principal is granted: (namespace, role) of each RoleBinding naming it.
    pub async fn key_with_grants(
        &self,
        hash: &[u8; 32],
    ) -> Result<Option<(KeyRecord, Vec<(String, String)>)>, StoreError> {
        let columns: Vec<String> = COLUMNS.split(", ").map(|c| format!("k.{c}")).collect();
        let sql = format!(
            "SELECT {}, b.namespace AS grant_namespace, b.role AS grant_role \
             FROM api_keys k \
             LEFT JOIN binding_subjects s \
               ON s.kind = k.principal_kind AND s.name = k.principal_name \
             LEFT JOIN role_bindings b ON b.namespace = s.namespace AND b.name = s.binding \
             WHERE k.hash = $1",
            columns.join(", ")
        );
        let rows = on_pool!(self, p => sqlx::query_as::<_, KeyGrantRow>(&sql)
            .bind(hash.as_slice())
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("look up an API key"))?;
        let mut key = None;
        let mut grants = Vec::new();
        for row in rows {
            if let (Some(ns), Some(role)) = (row.grant_namespace, row.grant_role) {
                grants.push((ns, role));
            }
            key.get_or_insert(row.key);
        }
        Ok(key.map(|k| (k, grants)))
    }

    /// The key `id`.
    pub async fn key(&self, id: &str) -> Result<KeyRecord, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1");
        on_pool!(self, p => sqlx::query_as::<_, KeyRecord>(&sql)
            .bind(id)
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("read an API key"))?
        .ok_or_else(|| StoreError::NotFound {
            kind: "key",
            name: id.to_owned(),
        })
    }

    /// Notes that key `id` was used at `at_ms` (written only when the last note is older
    /// than [`LAST_USED_RESOLUTION_MS`]).
    pub async fn touch_key(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "UPDATE api_keys SET last_used_ms = $2 \
             WHERE id = $1 AND (last_used_ms IS NULL OR last_used_ms < $3)",
        )
        .bind(id)
        .bind(at_ms)
        .bind(at_ms.saturating_sub(LAST_USED_RESOLUTION_MS))
        .execute(p)
        .await.map(|r| r.rows_affected()))
        .map(drop)
        .map_err(StoreError::db("note an API key's use"))
    }

    /// Revokes key `id` (from now on, on every daemon sharing the database). Revoking a
    /// revoked key keeps its first revocation time.
    pub async fn revoke_key(&self, id: &str) -> Result<KeyRecord, StoreError> {
        let _written = self.config_write();
        on_pool!(self, p => sqlx::query(
            "UPDATE api_keys SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL",
        )
        .bind(id)
        .bind(now_ms())
        .execute(p)
        .await.map(|r| r.rows_affected()))
        .map_err(StoreError::db("revoke an API key"))?;
        self.key(id).await
    }

    /// Keys of `namespace` by id, `limit` after the id `after`.
    pub async fn list_keys(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<crate::Page<KeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys WHERE namespace = $1 AND id > $2 \
             ORDER BY id LIMIT $3"
        );
        on_pool!(self, p => sqlx::query_as::<_, KeyRecord>(&sql)
            .bind(namespace)
            .bind(after.unwrap_or(""))
            .bind(limit.saturating_add(1))
            .fetch_all(p)
            .await)
        .map(|rows| crate::Page::of(rows, limit, |k| k.id.clone()))
        .map_err(StoreError::db("list API keys"))
    }

    /// Whether any key or binding names the principal `kind`/`name`.
    pub async fn principal_known(&self, kind: &str, name: &str) -> Result<bool, StoreError> {
        let (n,): (i64,) = on_pool!(self, p => sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM api_keys \
                     WHERE principal_kind = $1 AND principal_name = $2) \
                  + (SELECT COUNT(*) FROM binding_subjects WHERE kind = $1 AND name = $2)")
            .bind(kind)
            .bind(name)
            .fetch_one(p)
            .await)
        .map_err(StoreError::db("look up a principal"))?;
        Ok(n > 0)
    }
}

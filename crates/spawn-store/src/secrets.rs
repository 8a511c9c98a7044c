//! Secrets as the database holds them: sealed bytes and wrapped keys only (`spawn-secrets`
//! seals and opens them; nothing here can).

use crate::{now_ms, on_pool, Store, StoreError};

/// A namespace's data key, wrapped by a master key.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WrappedKey {
    pub namespace: String,
    pub version: i64,
    pub wrapped: Vec<u8>,
    /// Which master key wrapped it (`provider:id`).
    pub master: String,
    pub created_ms: i64,
}

/// One version of a secret, sealed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SealedSecret {
    pub namespace: String,
    pub name: String,
    pub version: i64,
    pub key_version: i64,
    pub sealed: Vec<u8>,
    pub created_ms: i64,
    pub created_by: String,
}

/// What a list shows of a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SecretEntry {
    pub name: String,
    /// The latest version.
    pub version: i64,
    /// When the first version was set, and the latest.
    pub created_ms: i64,
    pub updated_ms: i64,
    pub updated_by: String,
}

const KEY_COLUMNS: &str = "namespace, version, wrapped, master, created_ms";
const SECRET_COLUMNS: &str =
    "namespace, name, version, key_version, sealed, created_ms, created_by";

impl Store {
    /// The namespace's latest data key.
    pub async fn secret_key_latest(
        &self,
        namespace: &str,
    ) -> Result<Option<WrappedKey>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM secret_keys WHERE namespace = $1 ORDER BY version DESC LIMIT 1"
        );
        on_pool!(self, p => sqlx::query_as::<_, WrappedKey>(&sql)
            .bind(namespace)
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("read a namespace's data key"))
    }

    /// One of the namespace's data keys.
    pub async fn secret_key(
        &self,
        namespace: &str,
        version: i64,
    ) -> Result<Option<WrappedKey>, StoreError> {
        let sql =
            format!("SELECT {KEY_COLUMNS} FROM secret_keys WHERE namespace = $1 AND version = $2");
        on_pool!(self, p => sqlx::query_as::<_, WrappedKey>(&sql)
            .bind(namespace)
            .bind(version)
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("read a namespace's data key"))
    }

    /// Every data key of every namespace (for a master key's rotation).
    pub async fn secret_keys_all(&self) -> Result<Vec<WrappedKey>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM secret_keys ORDER BY namespace, version");
        on_pool!(self, p => sqlx::query_as::<_, WrappedKey>(&sql).fetch_all(p).await)
            .map_err(StoreError::db("read the data keys"))
    }

    /// Records a new data key; `AlreadyExists` when another writer recorded that version
    /// first.
    pub async fn insert_secret_key(
        &self,
        namespace: &str,
        version: i64,
        wrapped: &[u8],
        master: &str,
    ) -> Result<WrappedKey, StoreError> {
        let sql = format!(
            "INSERT INTO secret_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5) RETURNING {KEY_COLUMNS}"
        );
        on_pool!(self, p => sqlx::query_as::<_, WrappedKey>(&sql)
            .bind(namespace)
            .bind(version)
            .bind(wrapped)
            .bind(master)
            .bind(now_ms())
            .fetch_one(p)
            .await)
        .map_err(|e| {
            if StoreError::is_unique_violation(&e) {
                StoreError::AlreadyExists {
                    kind: "data key",
                    name: format!("{namespace}/{version}"),
                }
            } else {
                StoreError::db("record a data key")(e)
            }
        })
    }

    /// Replaces a data key's wrapping, if it is still wrapped by `old_master`; whether it
    /// was.
    pub async fn rewrap_secret_key(
        &self,
        namespace: &str,
        version: i64,
        old_master: &str,
        wrapped: &[u8],
        master: &str,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE secret_keys SET wrapped = $1, master = $2 \
                   WHERE namespace = $3 AND version = $4 AND master = $5";
        on_pool!(self, p => sqlx::query(sql)
            .bind(wrapped)
            .bind(master)
            .bind(namespace)
            .bind(version)
            .bind(old_master)
            .execute(p)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(StoreError::db("rewrap a data key"))
    }

    /// The latest version of a secret.
    pub async fn secret_latest(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SealedSecret>, StoreError> {
        let sql = format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE namespace = $1 AND name = $2 \
             ORDER BY version DESC LIMIT 1"
        );
        on_pool!(self, p => sqlx::query_as::<_, SealedSecret>(&sql)
            .bind(namespace)
            .bind(name)
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("read a secret"))
    }

    /// Records a version of a secret; `AlreadyExists` when another writer recorded that
    /// version first.
    pub async fn insert_secret(&self, s: &SealedSecret) -> Result<(), StoreError> {
        let sql =
            format!("INSERT INTO secrets ({SECRET_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
        on_pool!(self, p => sqlx::query(&sql)
            .bind(&s.namespace)
            .bind(&s.name)
            .bind(s.version)
            .bind(s.key_version)
            .bind(&s.sealed)
            .bind(s.created_ms)
            .bind(&s.created_by)
            .execute(p)
            .await
            .map(drop))
        .map_err(|e| {
            if StoreError::is_unique_violation(&e) {
                StoreError::AlreadyExists {
                    kind: "secret version",
                    name: format!("{}/{} {}", s.namespace, s.name, s.version),
                }
            } else {
                StoreError::db("record a secret")(e)
            }
        })
    }

    /// The namespace's secrets, by name: latest version and dates, never a value.
    pub async fn secret_list(&self, namespace: &str) -> Result<Vec<SecretEntry>, StoreError> {
        let sql = "SELECT s.name, s.version, f.first AS created_ms, s.created_ms AS updated_ms, \
                   s.created_by AS updated_by \
                   FROM secrets s JOIN (SELECT name, MIN(created_ms) AS first, MAX(version) AS latest \
                   FROM secrets WHERE namespace = $1 GROUP BY name) f \
                   ON s.name = f.name AND s.version = f.latest \
                   WHERE s.namespace = $1 ORDER BY s.name";
        on_pool!(self, p => sqlx::query_as::<_, SecretEntry>(sql)
            .bind(namespace)
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("list secrets"))
    }

    /// Deletes every version of a secret; how many there were.
    pub async fn delete_secret(&self, namespace: &str, name: &str) -> Result<u64, StoreError> {
        on_pool!(self, p => sqlx::query("DELETE FROM secrets WHERE namespace = $1 AND name = $2")
            .bind(namespace)
            .bind(name)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("delete a secret"))
    }

    /// The namespace's secret versions sealed under a data key older than `key_version`.
    pub async fn secrets_sealed_before(
        &self,
        namespace: &str,
        key_version: i64,
    ) -> Result<Vec<SealedSecret>, StoreError> {
        let sql = format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE namespace = $1 AND key_version < $2 \
             ORDER BY name, version"
        );
        on_pool!(self, p => sqlx::query_as::<_, SealedSecret>(&sql)
            .bind(namespace)
            .bind(key_version)
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("read secrets to reseal"))
    }

    /// Replaces one version's sealing, if it is still sealed under `old_key_version`;
    /// whether it was.
    pub async fn reseal_secret(
        &self,
        s: &SealedSecret,
        old_key_version: i64,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE secrets SET sealed = $1, key_version = $2 \
                   WHERE namespace = $3 AND name = $4 AND version = $5 AND key_version = $6";
        on_pool!(self, p => sqlx::query(sql)
            .bind(&s.sealed)
            .bind(s.key_version)
            .bind(&s.namespace)
            .bind(&s.name)
            .bind(s.version)
            .bind(old_key_version)
            .execute(p)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(StoreError::db("reseal a secret"))
    }

    /// Deletes the namespace's data keys older than `version` that no secret is sealed under
    /// any more; how many went.
    pub async fn delete_unused_secret_keys(
        &self,
        namespace: &str,
        version: i64,
    ) -> Result<u64, StoreError> {
        let sql = "DELETE FROM secret_keys WHERE namespace = $1 AND version < $2 \
                   AND NOT EXISTS (SELECT 1 FROM secrets s WHERE s.namespace = $1 \
                   AND s.key_version = secret_keys.version)";
        on_pool!(self, p => sqlx::query(sql)
            .bind(namespace)
            .bind(version)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::db("delete unused data keys"))
    }

    /// Crypto-shredding: deletes the namespace's data keys and sealed values, in one
    /// transaction; how many keys and values went.
    pub async fn shred_secrets(&self, namespace: &str) -> Result<(u64, u64), StoreError> {
        on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let values = sqlx::query("DELETE FROM secrets WHERE namespace = $1")
                .bind(namespace)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let keys = sqlx::query("DELETE FROM secret_keys WHERE namespace = $1")
                .bind(namespace)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok((keys, values))
        }.await)
        .map_err(StoreError::db("shred a namespace's secrets"))
    }
}

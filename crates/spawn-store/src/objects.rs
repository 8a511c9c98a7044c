//! Namespaced, versioned objects: Roles, RoleBindings and Agents. Every write of an
//! existing object names the version it read (`If-Match`); another writer in between makes
//! it a [`StoreError::Conflict`].

use crate::{new_id, now_ms, on_pool, Store, StoreError};

/// A stored Role. `rules` is its JSON.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RoleRecord {
    pub namespace: String,
    pub name: String,
    pub rules: String,
    pub builtin: bool,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A stored RoleBinding. `subjects` is its JSON; `role` the Role it grants.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BindingRecord {
    pub namespace: String,
    pub name: String,
    pub role: String,
    pub subjects: String,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A stored Agent. `manifest` is its JSON.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AgentRecord {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub manifest: String,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// One page of a list, and where the next one starts (`None`: this was the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// From `limit + 1` rows: the extra row only says there is more.
    pub(crate) fn of(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> Page<T> {
        let limit = usize::try_from(limit).unwrap_or(0);
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(key)
        } else {
            None
        };
        Page { items: rows, next }
    }
}

/// The subjects of a binding, for the lookup table: `(kind, name)`.
pub type Subject = (String, String);

const ROLE_COLUMNS: &str = "namespace, name, rules, builtin, version, created_ms, updated_ms";
const BINDING_COLUMNS: &str = "namespace, name, role, subjects, version, created_ms, updated_ms";
const AGENT_COLUMNS: &str = "id, namespace, name, manifest, version, created_ms, updated_ms";

impl Store {
    /// Creates the Role `namespace/name` (`expected: None`), or replaces it if it is still
    /// at version `expected`. Returns the stored Role.
    pub async fn put_role(
        &self,
        namespace: &str,
        name: &str,
        rules: &str,
        builtin: bool,
        expected: Option<i64>,
    ) -> Result<RoleRecord, StoreError> {
        let _written = self.config_write();
        let now = now_ms();
        let full = format!("{namespace}/{name}");
        let row = match expected {
            None => {
                let sql = format!(
                    "INSERT INTO roles ({ROLE_COLUMNS}) VALUES ($1, $2, $3, $4, 1, $5, $5) \
                     RETURNING {ROLE_COLUMNS}"
                );
                on_pool!(self, p => sqlx::query_as::<_, RoleRecord>(&sql)
                    .bind(namespace).bind(name).bind(rules).bind(builtin).bind(now)
                    .fetch_one(p).await)
                .map_err(|e| created("role", &full, e))?
            }
            Some(v) => {
                let sql = format!(
                    "UPDATE roles SET rules = $3, version = version + 1, updated_ms = $4 \
                     WHERE namespace = $1 AND name = $2 AND version = $5 \
                     RETURNING {ROLE_COLUMNS}"
                );
                let updated = on_pool!(self, p => sqlx::query_as::<_, RoleRecord>(&sql)
                    .bind(namespace).bind(name).bind(rules).bind(now).bind(v)
                    .fetch_optional(p).await)
                .map_err(StoreError::db("update a role"))?;
                match updated {
                    Some(r) => r,
                    None => {
                        let current = self.role(namespace, name).await?;
                        return Err(StoreError::Conflict {
                            kind: "role",
                            name: full,
                            expected: v,
                            current: current.version,
                        });
                    }
                }
            }
        };
        Ok(row)
    }

    /// The Role `namespace/name`.
    pub async fn role(&self, namespace: &str, name: &str) -> Result<RoleRecord, StoreError> {
        let sql = format!("SELECT {ROLE_COLUMNS} FROM roles WHERE namespace = $1 AND name = $2");
        on_pool!(self, p => sqlx::query_as::<_, RoleRecord>(&sql)
            .bind(namespace).bind(name).fetch_optional(p).await)
        .map_err(StoreError::db("read a role"))?
        .ok_or_else(|| StoreError::NotFound {
            kind: "role",
            name: format!("{namespace}/{name}"),
        })
    }

    /// Roles of `namespace` by name, `limit` after the name `after`.
    pub async fn list_roles(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<RoleRecord>, StoreError> {
        let sql = format!(
            "SELECT {ROLE_COLUMNS} FROM roles WHERE namespace = $1 AND name > $2 \
             ORDER BY name LIMIT $3"
        );
        let rows = on_pool!(self, p => sqlx::query_as::<_, RoleRecord>(&sql)
            .bind(namespace).bind(after.unwrap_or("")).bind(limit.saturating_add(1))
            .fetch_all(p).await)
        .map_err(StoreError::db("list roles"))?;
        Ok(Page::of(rows, limit, |r| r.name.clone()))
    }

    /// Deletes the Role `namespace/name` (at version `expected`, if given).
    pub async fn delete_role(
        &self,
        namespace: &str,
        name: &str,
        expected: Option<i64>,
    ) -> Result<(), StoreError> {
        let _written = self.config_write();
        let current = self.role(namespace, name).await?;
        let version = expected.unwrap_or(current.version);
        let done = on_pool!(self, p => sqlx::query(
            "DELETE FROM roles WHERE namespace = $1 AND name = $2 AND version = $3")
            .bind(namespace).bind(name).bind(version).execute(p).await.map(|r| r.rows_affected()))
        .map_err(StoreError::db("delete a role"))?;
        if done == 0 {
            return Err(StoreError::Conflict {
                kind: "role",
                name: format!("{namespace}/{name}"),
                expected: version,
                current: self.role(namespace, name).await?.version,
            });
        }
        Ok(())
    }

    /// Creates or replaces (at version `expected`) the RoleBinding `namespace/name`,
    /// granting `role` to `subjects` (`subjects_json` is what is returned to readers).
    pub async fn put_binding(
        &self,
        namespace: &str,
        name: &str,
        role: &str,
        subjects_json: &str,
        subjects: &[Subject],
        expected: Option<i64>,
    ) -> Result<BindingRecord, StoreError> {
        let _written = self.config_write();
        let now = now_ms();
        let full = format!("{namespace}/{name}");
        // The binding and its subject rows change together.
        let record = on_pool!(self, p => {
            let mut tx = p.begin().await.map_err(StoreError::db("begin a transaction"))?;
            let row = match expected {
                None => {
                    let sql = format!(
                        "INSERT INTO role_bindings ({BINDING_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, 1, $5, $5) RETURNING {BINDING_COLUMNS}"
                    );
                    Some(sqlx::query_as::<_, BindingRecord>(&sql)
                        .bind(namespace).bind(name).bind(role).bind(subjects_json).bind(now)
                        .fetch_one(&mut *tx).await
                        .map_err(|e| created("rolebinding", &full, e))?)
                }
                Some(v) => {
                    let sql = format!(
                        "UPDATE role_bindings SET role = $3, subjects = $4, \
                         version = version + 1, updated_ms = $5 \
                         WHERE namespace = $1 AND name = $2 AND version = $6 \
                         RETURNING {BINDING_COLUMNS}"
                    );
                    sqlx::query_as::<_, BindingRecord>(&sql)
                        .bind(namespace).bind(name).bind(role).bind(subjects_json).bind(now)
                        .bind(v)
                        .fetch_optional(&mut *tx).await
                        .map_err(StoreError::db("update a rolebinding"))?
                }
            };
            if let Some(row) = &row {
                sqlx::query("DELETE FROM binding_subjects WHERE namespace = $1 AND binding = $2")
                    .bind(namespace).bind(name).execute(&mut *tx).await
                    .map_err(StoreError::db("update a rolebinding's subjects"))?;
                for (kind, subject) in subjects {
                    sqlx::query(
                        "INSERT INTO binding_subjects (namespace, binding, kind, name) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
                        .bind(namespace).bind(name).bind(kind).bind(subject)
                        .execute(&mut *tx).await
                        .map_err(StoreError::db("update a rolebinding's subjects"))?;
                }
                tx.commit().await.map_err(StoreError::db("commit a rolebinding"))?;
                Some(row.clone())
            } else {
                None
            }
        });
        match record {
            Some(r) => Ok(r),
            None => Err(StoreError::Conflict {
                kind: "rolebinding",
                name: full,
                expected: expected.unwrap_or(0),
                current: self.binding(namespace, name).await?.version,
            }),
        }
    }

    /// The RoleBinding `namespace/name`.
    pub async fn binding(&self, namespace: &str, name: &str) -> Result<BindingRecord, StoreError> {
        let sql = format!(
            "SELECT {BINDING_COLUMNS} FROM role_bindings WHERE namespace = $1 AND name = $2"
        );
        on_pool!(self, p => sqlx::query_as::<_, BindingRecord>(&sql)
            .bind(namespace).bind(name).fetch_optional(p).await)
        .map_err(StoreError::db("read a rolebinding"))?
        .ok_or_else(|| StoreError::NotFound {
            kind: "rolebinding",
            name: format!("{namespace}/{name}"),
        })
    }

    /// RoleBindings of `namespace` by name.
    pub async fn list_bindings(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<BindingRecord>, StoreError> {
        let sql = format!(
            "SELECT {BINDING_COLUMNS} FROM role_bindings WHERE namespace = $1 AND name > $2 \
             ORDER BY name LIMIT $3"
        );
        let rows = on_pool!(self, p => sqlx::query_as::<_, BindingRecord>(&sql)
            .bind(namespace).bind(after.unwrap_or("")).bind(limit.saturating_add(1))
            .fetch_all(p).await)
        .map_err(StoreError::db("list rolebindings"))?;
        Ok(Page::of(rows, limit, |r| r.name.clone()))
    }

    /// Every binding naming the subject `kind`/`name`, in any namespace.
    pub async fn bindings_of(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Vec<BindingRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM role_bindings b JOIN binding_subjects s \
             ON s.namespace = b.namespace AND s.binding = b.name \
             WHERE s.kind = $1 AND s.name = $2 ORDER BY b.namespace, b.name",
            BINDING_COLUMNS
                .split(", ")
                .map(|c| format!("b.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        on_pool!(self, p => sqlx::query_as::<_, BindingRecord>(&sql)
            .bind(kind).bind(name).fetch_all(p).await)
        .map_err(StoreError::db("find a principal's rolebindings"))
    }

    /// Deletes the RoleBinding `namespace/name` (its subject rows go with it).
    pub async fn delete_binding(
        &self,
        namespace: &str,
        name: &str,
        expected: Option<i64>,
    ) -> Result<(), StoreError> {
        let _written = self.config_write();
        let current = self.binding(namespace, name).await?;
        let version = expected.unwrap_or(current.version);
        let done = on_pool!(self, p => sqlx::query(
            "DELETE FROM role_bindings WHERE namespace = $1 AND name = $2 AND version = $3")
            .bind(namespace).bind(name).bind(version).execute(p).await.map(|r| r.rows_affected()))
        .map_err(StoreError::db("delete a rolebinding"))?;
        if done == 0 {
            return Err(StoreError::Conflict {
                kind: "rolebinding",
                name: format!("{namespace}/{name}"),
                expected: version,
                current: self.binding(namespace, name).await?.version,
            });
        }
        Ok(())
    }

    /// Creates (`expected: None`) or replaces (at version `expected`) the Agent
    /// `namespace/name`; a new agent gets an id (`ag_…`) that stays with it.
    pub async fn put_agent(
        &self,
        namespace: &str,
        name: &str,
        manifest: &str,
        expected: Option<i64>,
    ) -> Result<AgentRecord, StoreError> {
        match expected {
            None => {
                self.create_agent(&new_id("ag")?, namespace, name, manifest)
                    .await
            }
            Some(_) => {
                self.put_agent_as(None, namespace, name, manifest, expected)
                    .await
            }
        }
    }

    /// Creates the Agent `namespace/name` with the id `id` (`ag_…`), made by the caller
    /// beforehand (to record it, say, before the agent exists).
    pub async fn create_agent(
        &self,
        id: &str,
        namespace: &str,
        name: &str,
        manifest: &str,
    ) -> Result<AgentRecord, StoreError> {
        self.put_agent_as(Some(id), namespace, name, manifest, None)
            .await
    }

    async fn put_agent_as(
        &self,
        id: Option<&str>,
        namespace: &str,
        name: &str,
        manifest: &str,
        expected: Option<i64>,
    ) -> Result<AgentRecord, StoreError> {
        let _written = self.config_write();
        let now = now_ms();
        let full = format!("{namespace}/{name}");
        match expected {
            None => {
                let sql = format!(
                    "INSERT INTO agents ({AGENT_COLUMNS}) VALUES ($1, $2, $3, $4, 1, $5, $5) \
                     RETURNING {AGENT_COLUMNS}"
                );
                let id = match id {
                    Some(id) => id.to_owned(),
                    None => new_id("ag")?,
                };
                on_pool!(self, p => sqlx::query_as::<_, AgentRecord>(&sql)
                    .bind(&id).bind(namespace).bind(name).bind(manifest).bind(now)
                    .fetch_one(p).await)
                .map_err(|e| created("agent", &full, e))
            }
            Some(v) => {
                let sql = format!(
                    "UPDATE agents SET manifest = $3, version = version + 1, updated_ms = $4 \
                     WHERE namespace = $1 AND name = $2 AND version = $5 \
                     RETURNING {AGENT_COLUMNS}"
                );
                let updated = on_pool!(self, p => sqlx::query_as::<_, AgentRecord>(&sql)
                    .bind(namespace).bind(name).bind(manifest).bind(now).bind(v)
                    .fetch_optional(p).await)
                .map_err(StoreError::db("update an agent"))?;
                match updated {
                    Some(a) => Ok(a),
                    None => Err(StoreError::Conflict {
                        kind: "agent",
                        name: full,
                        expected: v,
                        current: self.agent(namespace, name).await?.version,
                    }),
                }
            }
        }
    }

    /// The Agent `namespace/name`.
    pub async fn agent(&self, namespace: &str, name: &str) -> Result<AgentRecord, StoreError> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE namespace = $1 AND name = $2");
        on_pool!(self, p => sqlx::query_as::<_, AgentRecord>(&sql)
            .bind(namespace).bind(name).fetch_optional(p).await)
        .map_err(StoreError::db("read an agent"))?
        .ok_or_else(|| StoreError::NotFound {
            kind: "agent",
            name: format!("{namespace}/{name}"),
        })
    }

    /// Agents of `namespace` by name.
    pub async fn list_agents(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<AgentRecord>, StoreError> {
        let sql = format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE namespace = $1 AND name > $2 \
             ORDER BY name LIMIT $3"
        );
        let rows = on_pool!(self, p => sqlx::query_as::<_, AgentRecord>(&sql)
            .bind(namespace).bind(after.unwrap_or("")).bind(limit.saturating_add(1))
            .fetch_all(p).await)
        .map_err(StoreError::db("list agents"))?;
        Ok(Page::of(rows, limit, |r| r.name.clone()))
    }

    /// Deletes the Agent `namespace/name` (at version `expected`, if given). Its runs stay.
    pub async fn delete_agent(
        &self,
        namespace: &str,
        name: &str,
        expected: Option<i64>,
    ) -> Result<(), StoreError> {
        let _written = self.config_write();
        let current = self.agent(namespace, name).await?;
        let version = expected.unwrap_or(current.version);
        let done = on_pool!(self, p => sqlx::query(
            "DELETE FROM agents WHERE namespace = $1 AND name = $2 AND version = $3")
            .bind(namespace).bind(name).bind(version).execute(p).await.map(|r| r.rows_affected()))
        .map_err(StoreError::db("delete an agent"))?;
        if done == 0 {
            return Err(StoreError::Conflict {
                kind: "agent",
                name: format!("{namespace}/{name}"),
                expected: version,
                current: self.agent(namespace, name).await?.version,
            });
        }
        Ok(())
    }
}

/// The error of an INSERT: an existing object is [`StoreError::AlreadyExists`].
fn created(kind: &'static str, name: &str, e: sqlx::Error) -> StoreError {
    if StoreError::is_unique_violation(&e) {
        StoreError::AlreadyExists {
            kind,
            name: name.to_owned(),
        }
    } else {
        StoreError::Database {
            what: "create an object",
            source: e,
        }
    }
}

-- spawn's state, version 1 (PostgreSQL). Times are milliseconds since the Unix epoch; JSON
-- documents are text. Kept in step with ../sqlite/0001_init.sql.

CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,            -- key_…
    hash           BYTEA NOT NULL UNIQUE,        -- SHA-256 of the key; the key itself is never stored
    hint           TEXT NOT NULL,               -- prefix and last characters, for lists
    test           BOOLEAN NOT NULL,            -- 1: spawn_sk_test_…
    principal_kind TEXT NOT NULL,               -- User | ServiceAccount
    principal_name TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    created_ms     BIGINT NOT NULL,
    last_used_ms   BIGINT,
    revoked_ms     BIGINT
);
CREATE INDEX api_keys_principal ON api_keys (principal_kind, principal_name);

CREATE TABLE roles (
    namespace  TEXT NOT NULL,                   -- '*' for the built-in, cluster-wide roles
    name       TEXT NOT NULL,
    rules      TEXT NOT NULL,                   -- JSON
    builtin    BOOLEAN NOT NULL DEFAULT FALSE,
    version    BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (namespace, name)
);

CREATE TABLE role_bindings (
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    subjects   TEXT NOT NULL,                   -- JSON
    version    BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (namespace, name)
);

-- One row per subject of a binding, to find a principal's bindings.
CREATE TABLE binding_subjects (
    namespace TEXT NOT NULL,
    binding   TEXT NOT NULL,
    kind      TEXT NOT NULL,
    name      TEXT NOT NULL,
    PRIMARY KEY (namespace, binding, kind, name),
    FOREIGN KEY (namespace, binding) REFERENCES role_bindings (namespace, name) ON DELETE CASCADE
);
CREATE INDEX binding_subjects_subject ON binding_subjects (kind, name);

CREATE TABLE agents (
    id         TEXT PRIMARY KEY,                -- ag_…
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    manifest   TEXT NOT NULL,                   -- JSON
    version    BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    UNIQUE (namespace, name)
);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,          -- tr_…
    namespace        TEXT NOT NULL,
    agent_id         TEXT,
    spec             TEXT NOT NULL,             -- JSON
    state            TEXT NOT NULL,             -- queued | running | succeeded | failed | cancelled | interrupted
    holder           TEXT,                      -- the spawnd that claimed it
    lease_until_ms   BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    exit_code        INTEGER,
    error            TEXT,
    created_by       TEXT NOT NULL,
    request_id       TEXT,
    created_ms       BIGINT NOT NULL,
    started_ms       BIGINT,
    finished_ms      BIGINT
);
CREATE INDEX runs_queue ON runs (state, created_ms, id);
CREATE INDEX runs_namespace ON runs (namespace, created_ms, id);
CREATE INDEX runs_holder ON runs (holder, state);

CREATE TABLE run_output (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq    BIGINT NOT NULL,                     -- 1, 2, … per run: the SSE event id
    stream TEXT NOT NULL,                       -- stdout | stderr
    data   BYTEA NOT NULL,
    at_ms  BIGINT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Secrets (spawn-secrets): each namespace's data keys, wrapped by a master key the database
-- never holds, and the values sealed under them (AES-256-GCM; namespace, name, version and
-- key version bound as associated data). Nothing here opens without the master key. Kept
-- in step with ../postgres.
CREATE TABLE secret_keys (
    namespace   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    wrapped     BLOB NOT NULL,     -- the data key, sealed by the master key
    master      TEXT NOT NULL,     -- which master key sealed it (provider:id)
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (namespace, version)
);
CREATE TABLE secrets (
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    key_version INTEGER NOT NULL,  -- the data key that sealed it
    sealed      BLOB NOT NULL,     -- nonce, ciphertext and tag
    created_ms  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    PRIMARY KEY (namespace, name, version)
);

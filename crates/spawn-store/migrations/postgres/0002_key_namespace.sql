-- Keys belong to the namespace of the binding made with them ('*' for the first admin's):
-- who may list and revoke them is decided there. Kept in step with ../sqlite.
ALTER TABLE api_keys ADD COLUMN namespace TEXT NOT NULL DEFAULT '*';
CREATE INDEX api_keys_namespace ON api_keys (namespace, id);

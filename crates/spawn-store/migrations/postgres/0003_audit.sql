-- The audit log (spawn_audit: one chained JSON line per record), as the database holds it:
-- each line byte for byte, with the fields queries select on beside it. `log` names the log
-- (the origin of its checkpoint key, `spawn.audit/log_…`): each daemon writes its own.
-- Append-only: the triggers below refuse every UPDATE, DELETE and TRUNCATE, whoever asks;
-- someone who drops them is caught by `spawn audit verify` (the chain, and the signed
-- checkpoints kept apart from the database). Kept in step with ../sqlite.
CREATE TABLE audit_records (
    log        TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    hash       TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    at         TEXT NOT NULL,     -- the record's timestamp, RFC 3339 UTC as written
    event_type TEXT NOT NULL,
    principal  TEXT NOT NULL,     -- principal.id
    outcome    TEXT NOT NULL,
    trace_id   TEXT,
    line       TEXT NOT NULL,     -- the record as the log wrote it, without its newline
    PRIMARY KEY (log, seq)
);
CREATE INDEX audit_records_type ON audit_records (log, event_type, seq);
CREATE INDEX audit_records_principal ON audit_records (log, principal, seq);
CREATE INDEX audit_records_trace ON audit_records (trace_id) WHERE trace_id IS NOT NULL;

CREATE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE TRIGGER audit_records_no_change BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION audit_records_append_only();

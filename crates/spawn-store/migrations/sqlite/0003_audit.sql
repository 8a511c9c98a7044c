-- The audit log (spawn_audit: one chained JSON line per record), as the database holds it:
-- each line byte for byte, with the fields queries select on beside it. `log` names the log
-- (the origin of its checkpoint key, `spawn.audit/log_…`): each daemon writes its own.
-- Append-only: the triggers below refuse every UPDATE and DELETE, whoever asks; someone who
-- drops them is caught by `spawn audit verify` (the chain, and the signed checkpoints kept
-- apart from the database). Kept in step with ../postgres.
CREATE TABLE audit_records (
    log        TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    hash       TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    at         TEXT NOT NULL,     -- the record's timestamp, RFC 3339 UTC as written
    event_type TEXT NOT NULL,
    principal  TEXT NOT NULL,     -- principal.id
    outcome    TEXT NOT NULL,
    trace_id   TEXT,
    line       TEXT NOT NULL,     -- the record as the log wrote it, without its newline
    PRIMARY KEY (log, seq)
) WITHOUT ROWID;
CREATE INDEX audit_records_type ON audit_records (log, event_type, seq);
CREATE INDEX audit_records_principal ON audit_records (log, principal, seq);
CREATE INDEX audit_records_trace ON audit_records (trace_id) WHERE trace_id IS NOT NULL;

CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

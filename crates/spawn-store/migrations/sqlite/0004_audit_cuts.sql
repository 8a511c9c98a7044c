-- Retention: the records of a log up to a seq are deleted under a signed cut
-- (spawn_audit::cut), kept here and beside the log's checkpoints. A record may be deleted
-- only when a cut of its log covers it; cuts themselves are append-only. Kept in step with
-- ../postgres.
CREATE TABLE audit_cuts (
    log   TEXT NOT NULL,
    seq   INTEGER NOT NULL,    -- records 1..seq are cut
    hash  TEXT NOT NULL,       -- record seq's hash: the next record's prevHash
    note  TEXT NOT NULL,       -- the signed cut
    at    TEXT NOT NULL,
    PRIMARY KEY (log, seq)
) WITHOUT ROWID;
CREATE TRIGGER audit_cuts_no_update BEFORE UPDATE ON audit_cuts
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_cuts_no_delete BEFORE DELETE ON audit_cuts
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

DROP TRIGGER audit_records_no_delete;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
WHEN OLD.seq > COALESCE((SELECT MAX(seq) FROM audit_cuts WHERE log = OLD.log), 0)
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

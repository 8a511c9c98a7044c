-- Retention: the records of a log up to a seq are deleted under a signed cut
-- (spawn_audit::cut), kept here and beside the log's checkpoints. A record may be deleted
-- only when a cut of its log covers it; cuts themselves are append-only. Kept in step with
-- ../sqlite.
CREATE TABLE audit_cuts (
    log   TEXT NOT NULL,
    seq   BIGINT NOT NULL,     -- records 1..seq are cut
    hash  TEXT NOT NULL,       -- record seq's hash: the next record's prevHash
    note  TEXT NOT NULL,       -- the signed cut
    at    TEXT NOT NULL,
    PRIMARY KEY (log, seq)
);
CREATE TRIGGER audit_cuts_no_change BEFORE UPDATE OR DELETE ON audit_cuts
    FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();
CREATE TRIGGER audit_cuts_no_truncate BEFORE TRUNCATE ON audit_cuts
    FOR EACH STATEMENT EXECUTE FUNCTION audit_records_append_only();

DROP TRIGGER audit_records_no_change ON audit_records;
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();
CREATE FUNCTION audit_records_delete_cut_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq > COALESCE((SELECT MAX(seq) FROM audit_cuts WHERE log = OLD.log), 0) THEN
        RAISE EXCEPTION 'the audit log is append-only';
    END IF;
    RETURN OLD;
END;
$$;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_delete_cut_only();

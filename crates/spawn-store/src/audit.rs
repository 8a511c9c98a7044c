//! The audit log in the database: each record of a log (`spawn_audit`'s chained JSON lines)
//! stored byte for byte, beside the fields queries select on.
//!
//! Append-only at every level: the store has no call that changes or removes a record, the
//! schema's triggers refuse `UPDATE`, `DELETE` (and `TRUNCATE` on PostgreSQL) of the table,
//! and [`Store::audit_append`] takes only records that continue the stored chain (the next
//! `seq`, and a `prevHash` equal to the last stored `hash`). Someone who holds the database
//! can still drop the triggers: [`Store::audit_verify`] then finds what they changed (the
//! chain, and the signed checkpoints, which live apart from the database).

use serde::Deserialize;
use spawn_audit::chain::{Broken, Verified};
use spawn_audit::checkpoint::Opened;
use spawn_audit::cut::Cut;
use spawn_audit::query::Filter;

use crate::{on_pool, Store, StoreError};

/// Records per statement: 10 parameters each stays far below SQLite's limit of 32,766.
const ROWS_PER_STATEMENT: usize = 500;

/// Records read per query when scanning a log.
const PAGE: i64 = 5_000;

/// One record as stored: its line and the fields read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub seq: i64,
    pub hash: String,
    pub prev_hash: String,
    pub timestamp: String,
    pub event_type: String,
    pub principal: String,
    pub outcome: String,
    pub trace_id: Option<String>,
    /// The line as the log wrote it, without its newline.
    pub line: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields {
    seq: u64,
    timestamp: String,
    event_type: String,
    principal: PrincipalId,
    outcome: String,
    #[serde(default)]
    trace_id: Option<String>,
    prev_hash: String,
    hash: String,
}

#[derive(Deserialize)]
struct PrincipalId {
    id: String,
}

impl StoredRecord {
    /// The record of one log line (without its newline). Only chained records are taken.
    pub fn from_line(line: &str) -> Result<StoredRecord, StoreError> {
        let bad = |reason: String| StoreError::Corrupt {
            what: "audit record",
            reason,
        };
        if line.contains('\n') {
            return Err(bad("a line holds a newline".into()));
        }
        let f: Fields = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let seq = i64::try_from(f.seq).map_err(|_| bad(format!("seq {} is too large", f.seq)))?;
        Ok(StoredRecord {
            seq,
            hash: f.hash,
            prev_hash: f.prev_hash,
            timestamp: f.timestamp,
            event_type: f.event_type,
            principal: f.principal.id,
            outcome: f.outcome,
            trace_id: f.trace_id,
            line: line.to_owned(),
        })
    }
}

/// A log's last stored record, or its latest cut when every record was cut.
const HEAD_SQL: &str = "SELECT seq, hash FROM (\
     SELECT seq, hash FROM audit_records WHERE log = $1 \
     UNION ALL SELECT seq, hash FROM audit_cuts WHERE log = $1) h \
     ORDER BY seq DESC LIMIT 1";

#[derive(sqlx::FromRow)]
struct Head {
    seq: i64,
    hash: String,
}

/// A stored record as read back: its seq and line.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditLine {
    pub seq: i64,
    pub line: String,
}

#[derive(sqlx::FromRow)]
struct FullRow {
    seq: i64,
    hash: String,
    prev_hash: String,
    at: String,
    event_type: String,
    principal: String,
    outcome: String,
    trace_id: Option<String>,
    line: String,
}

impl Store {
    /// The last stored record of `log`: its seq and hash.
    /// (A log whose every record was cut has the cut's seq and hash as its head.)
    pub async fn audit_head(&self, log: &str) -> Result<Option<(i64, String)>, StoreError> {
        let sql = HEAD_SQL;
        let head =
            on_pool!(self, p => sqlx::query_as::<_, Head>(sql).bind(log).fetch_optional(p).await)
                .map_err(StoreError::db("read the audit log's head"))?;
        Ok(head.map(|h| (h.seq, h.hash)))
    }

    /// The logs the database holds records of.
    pub async fn audit_logs(&self) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT DISTINCT log FROM audit_records ORDER BY log";
        on_pool!(self, p => sqlx::query_scalar::<_, String>(sql).fetch_all(p).await)
            .map_err(StoreError::db("list the audit logs"))
    }

    /// Deletes the records of `log` up to `seq` under the signed cut `note` (its anchor
    /// `hash`, record `seq`'s), in one transaction: the cut is stored, then the records
    /// deleted. Refused unless the database holds record `seq` with that hash. Returns how
    /// many records were deleted.
    pub async fn audit_cut(
        &self,
        log: &str,
        seq: i64,
        hash: &str,
        note: &str,
    ) -> Result<u64, StoreError> {
        macro_rules! cut {
            ($begin:expr) => {{
                let mut tx = $begin.await.map_err(StoreError::db("begin an audit cut"))?;
                let stored: Option<String> = sqlx::query_scalar(
                    "SELECT hash FROM audit_records WHERE log = $1 AND seq = $2",
                )
                .bind(log)
                .bind(seq)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db("read the record to cut at"))?;
                if stored.as_deref() != Some(hash) {
                    return Err(StoreError::AuditChain {
                        seq,
                        reason: "is not a stored record with the cut's hash: nothing was cut"
                            .into(),
                    });
                }
                sqlx::query(
                    "INSERT INTO audit_cuts (log, seq, hash, note, at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(log)
                .bind(seq)
                .bind(hash)
                .bind(note)
                .bind(spawn_audit::now_rfc3339())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("store an audit cut"))?;
                let deleted = sqlx::query("DELETE FROM audit_records WHERE log = $1 AND seq <= $2")
                    .bind(log)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("delete cut audit records"))?
                    .rows_affected();
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit an audit cut"))?;
                deleted
            }};
        }
        Ok(match &self.pool {
            crate::Pool::Sqlite(p) => cut!(p.begin_with("BEGIN IMMEDIATE")),
            crate::Pool::Postgres(p) => cut!(p.begin()),
        })
    }

    /// The signed cuts of `log`, oldest first: (seq, note).
    pub async fn audit_cuts(&self, log: &str) -> Result<Vec<(i64, String)>, StoreError> {
        let sql = "SELECT seq, note FROM audit_cuts WHERE log = $1 ORDER BY seq";
        on_pool!(self, p => sqlx::query_as::<_, (i64, String)>(sql).bind(log).fetch_all(p).await)
            .map_err(StoreError::db("read audit cuts"))
    }

    /// Up to `limit` (seq, hash) of `log` after `after_seq`, in order.
    pub async fn audit_hashes(
        &self,
        log: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let sql = "SELECT seq, hash FROM audit_records WHERE log = $1 AND seq > $2 \
                   ORDER BY seq LIMIT $3";
        on_pool!(self, p => sqlx::query_as::<_, (i64, String)>(sql)
            .bind(log).bind(after_seq).bind(limit).fetch_all(p).await)
        .map_err(StoreError::db("read audit hashes"))
    }

    /// The last record of `log` written before `at` (the log's timestamp form).
    pub async fn audit_last_before(&self, log: &str, at: &str) -> Result<Option<i64>, StoreError> {
        let sql = "SELECT MAX(seq) FROM audit_records WHERE log = $1 AND at < $2";
        on_pool!(self, p => sqlx::query_scalar::<_, Option<i64>>(sql).bind(log).bind(at).fetch_one(p).await)
            .map_err(StoreError::db("find the records to cut"))
    }

    /// Appends `records` to `log` in one transaction, durable when this returns. They must
    /// continue the stored chain: the first the seq after the last stored one with a
    /// `prevHash` equal to its `hash` (a log's first record may have any seq), each next
    /// one likewise. Anything else is refused and nothing is written.
    pub async fn audit_append(
        &self,
        log: &str,
        records: &[StoredRecord],
    ) -> Result<(), StoreError> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let refuse = |seq: i64, reason: String| StoreError::AuditChain { seq, reason };
        for pair in records.windows(2) {
            if let [a, b] = pair {
                if Some(b.seq) != a.seq.checked_add(1) || b.prev_hash != a.hash {
                    return Err(refuse(
                        b.seq,
                        format!("does not follow seq {} in the batch", a.seq),
                    ));
                }
            }
        }
        // SQLite: the write lock from the start (a deferred transaction that reads first
        // cannot wait for another writer: it fails "database is locked" at once).
        macro_rules! append {
            ($begin:expr) => {{
                let mut tx = $begin
                    .await
                    .map_err(StoreError::db("begin an audit append"))?;
                let head = sqlx::query_as::<_, Head>(HEAD_SQL)
                    .bind(log)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::db("read the audit log's head"))?;
                if let Some(h) = head {
                    if Some(first.seq) != h.seq.checked_add(1) || first.prev_hash != h.hash {
                        return Err(refuse(
                            first.seq,
                            format!(
                                "does not continue the stored log, whose last record is seq {}",
                                h.seq
                            ),
                        ));
                    }
                }
                for chunk in records.chunks(ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::new(
                        "INSERT INTO audit_records (log, seq, hash, prev_hash, at, event_type, \
                         principal, outcome, trace_id, line) ",
                    );
                    q.push_values(chunk, |mut b, r| {
                        b.push_bind(log)
                            .push_bind(r.seq)
                            .push_bind(&r.hash)
                            .push_bind(&r.prev_hash)
                            .push_bind(&r.timestamp)
                            .push_bind(&r.event_type)
                            .push_bind(&r.principal)
                            .push_bind(&r.outcome)
                            .push_bind(&r.trace_id)
                            .push_bind(&r.line);
                    });
                    q.build().execute(&mut *tx).await.map_err(|e| match &e {
                        e if StoreError::is_unique_violation(e) => {
                            refuse(first.seq, "another writer stored these seqs first".into())
                        }
                        _ => StoreError::Database {
                            what: "append audit records",
                            source: e,
                        },
                    })?;
                }
                tx.commit()
                    .await
                    .map_err(StoreError::db("commit audit records"))?;
            }};
        }
        match &self.pool {
            crate::Pool::Sqlite(p) => append!(p.begin_with("BEGIN IMMEDIATE")),
            crate::Pool::Postgres(p) => append!(p.begin()),
        }
        Ok(())
    }

    /// Up to `limit` records of `log` after `after_seq`, in order.
    pub async fn audit_lines(
        &self,
        log: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditLine>, StoreError> {
        let sql = "SELECT seq, line FROM audit_records WHERE log = $1 AND seq > $2 \
                   ORDER BY seq LIMIT $3";
        on_pool!(self, p => sqlx::query_as::<_, AuditLine>(sql)
            .bind(log).bind(after_seq).bind(limit).fetch_all(p).await)
        .map_err(StoreError::db("read audit records"))
    }

    /// Up to `limit` records of `log` after `after_seq` that match `filter`, in order. The
    /// database narrows by type, outcome, time and trace; the filter itself decides (the
    /// same rule as a query of a log file).
    pub async fn audit_query(
        &self,
        log: &str,
        filter: &Filter,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<AuditLine>, StoreError> {
        let mut out = Vec::new();
        let mut after = after_seq;
        while out.len() < limit {
            // Integers are written in; every string is a bound parameter.
            let mut sql =
                format!("SELECT seq, line FROM audit_records WHERE log = $1 AND seq > {after}");
            let mut binds: Vec<&str> = vec![log];
            if !filter.types.is_empty() {
                let mut marks = Vec::new();
                for t in &filter.types {
                    binds.push(t);
                    marks.push(format!("${}", binds.len()));
                }
                sql.push_str(&format!(" AND event_type IN ({})", marks.join(", ")));
            }
            for (cond, value) in [
                ("outcome =", &filter.outcome),
                ("at >=", &filter.since),
                ("at <", &filter.until),
                ("trace_id =", &filter.trace),
            ] {
                if let Some(v) = value {
                    binds.push(v);
                    sql.push_str(&format!(" AND {cond} ${}", binds.len()));
                }
            }
            sql.push_str(&format!(" ORDER BY seq LIMIT {PAGE}"));
            let page: Vec<AuditLine> = on_pool!(self, p => {
                let mut q = sqlx::query_as::<_, AuditLine>(&sql);
                for b in &binds {
                    q = q.bind(*b);
                }
                q.fetch_all(p).await
            })
            .map_err(StoreError::db("query audit records"))?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let full = i64::try_from(page.len()).unwrap_or(i64::MAX) < PAGE;
            for l in page {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&l.line) else {
                    continue;
                };
                if filter.matches(&v, &l.line) && out.len() < limit {
                    out.push(l);
                }
            }
            if full {
                break;
            }
        }
        Ok(out)
    }

    /// Checks the stored `log`: every row's fields against its line, the seqs one after
    /// another from the first, the chain of the lines ([`spawn_audit::chain`]), and every
    /// checkpoint in `notes` against the lines' Merkle tree
    /// ([`spawn_audit::checkpoint::verify_log`]). The first problem is the answer's
    /// `broken` (`line` is the record's position in the log, from 1).
    ///
    /// A log whose first records were cut verifies from one of `cuts` (see
    /// [`spawn_audit::cut::verify_log`]).
    pub async fn audit_verify(
        &self,
        log: &str,
        notes: Vec<Opened>,
        cuts: Vec<Cut>,
    ) -> Result<Verified, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let checker = std::thread::spawn(move || {
            let reader = std::io::BufReader::with_capacity(
                1 << 20,
                Pages {
                    rx,
                    cur: Vec::new(),
                    at: 0,
                },
            );
            spawn_audit::cut::verify_log(reader, &notes, &cuts)
        });
        let mut first_row_problem: Option<Broken> = None;
        let mut after = i64::MIN;
        let mut expect: Option<i64> = None;
        let mut position = 0u64;
        let sql =
            "SELECT seq, hash, prev_hash, at, event_type, principal, outcome, trace_id, line \
                   FROM audit_records WHERE log = $1 AND seq > $2 ORDER BY seq LIMIT $3";
        loop {
            let rows = on_pool!(self, p => sqlx::query_as::<_, FullRow>(sql)
                .bind(log).bind(after).bind(PAGE).fetch_all(p).await)
            .map_err(StoreError::db("read audit records"))?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            let n = rows.len();
            let mut buf = Vec::with_capacity(n * 512);
            for row in rows {
                position += 1;
                if first_row_problem.is_none() {
                    first_row_problem = row_problem(&row, expect, position);
                }
                expect = row.seq.checked_add(1);
                buf.extend_from_slice(row.line.as_bytes());
                buf.push(b'\n');
            }
            if tx.send(buf).is_err() {
                break; // the checker stopped early (it failed to read)
            }
            if i64::try_from(n).unwrap_or(i64::MAX) < PAGE {
                break;
            }
        }
        drop(tx);
        let verified = checker
            .join()
            .map_err(|_| StoreError::Io {
                what: "verify the audit log".into(),
                source: std::io::Error::other("the checker panicked"),
            })?
            .map_err(|source| StoreError::Io {
                what: "verify the audit log".into(),
                source,
            })?;
        Ok(first_problem(verified, first_row_problem))
    }

    /// Every record of `log`, in order, as the JSON lines the log wrote: the export that
    /// `spawn audit verify --file` checks bit for bit.
    pub async fn audit_export(
        &self,
        log: &str,
        out: &mut impl std::io::Write,
    ) -> Result<u64, StoreError> {
        let mut after = i64::MIN;
        let mut n = 0u64;
        loop {
            let page = self.audit_lines(log, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for l in &page {
                out.write_all(l.line.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(|source| StoreError::Io {
                        what: "write the audit export".into(),
                        source,
                    })?;
                n += 1;
            }
            if i64::try_from(page.len()).unwrap_or(i64::MAX) < PAGE {
                break;
            }
        }
        Ok(n)
    }
}

/// What is wrong with one stored row, whose seq should be `expect` (none for the first) and
/// which is the `position`th of the log.
fn row_problem(row: &FullRow, expect: Option<i64>, position: u64) -> Option<Broken> {
    let seq = u64::try_from(row.seq).unwrap_or(0);
    let broken = |reason: String| {
        Some(Broken {
            seq,
            line: position,
            reason,
        })
    };
    if let Some(e) = expect {
        if row.seq != e {
            return broken(format!(
                "seq {} follows seq {}: records are missing",
                row.seq,
                e - 1
            ));
        }
    }
    let Ok(r) = StoredRecord::from_line(&row.line) else {
        return broken("the stored line is not a chained record".into());
    };
    let stored = [
        ("seq", r.seq.to_string(), row.seq.to_string()),
        ("hash", r.hash, row.hash.clone()),
        ("prevHash", r.prev_hash, row.prev_hash.clone()),
        ("timestamp", r.timestamp, row.at.clone()),
        ("eventType", r.event_type, row.event_type.clone()),
        ("principal", r.principal, row.principal.clone()),
        ("outcome", r.outcome, row.outcome.clone()),
        (
            "traceId",
            r.trace_id.unwrap_or_default(),
            row.trace_id.clone().unwrap_or_default(),
        ),
    ];
    stored
        .into_iter()
        .find(|(_, in_line, in_row)| in_line != in_row)
        .and_then(|(field, _, _)| {
            broken(format!(
                "the row's {field} is not the record's: the row was edited"
            ))
        })
}

/// The earlier of the chain's verdict and a row's problem (by position in the log).
fn first_problem(mut v: Verified, row: Option<Broken>) -> Verified {
    if let Some(row) = row {
        let earlier = match &v.broken {
            None => true,
            Some(b) => b.line == 0 || row.line < b.line,
        };
        if earlier {
            v.broken = Some(row);
        }
    }
    v
}

/// The pages of lines a scan sends, read as one stream.
struct Pages {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    at: usize,
}

impl std::io::Read for Pages {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.cur.len() {
            match self.rx.recv() {
                Ok(page) => {
                    self.cur = page;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Bytes of the log file read by one [`Ingest::step`] at most.
pub const INGEST_BYTES: u64 = 4 << 20;

/// Copies a log file's records into the database as they are written: each
/// [`Ingest::step`] reads the complete lines written since the last one and appends their
/// records ([`Store::audit_append`], so only a continuation of the stored chain is taken).
/// Lines that are not chained records (a fragment a crash tore, left on a line of its own)
/// are passed over and counted.
#[derive(Debug)]
pub struct Ingest {
    log: String,
    path: std::path::PathBuf,
    /// Where the next unread line starts.
    offset: u64,
    /// The last seq stored.
    stored: Option<i64>,
    /// Lines passed over.
    pub skipped: u64,
}

impl Ingest {
    /// An ingest of the log file at `path` as the log `log`, resuming after what the store
    /// holds of it.
    pub async fn new(
        store: &Store,
        log: &str,
        path: &std::path::Path,
    ) -> Result<Ingest, StoreError> {
        Ok(Ingest {
            log: log.to_owned(),
            path: path.to_owned(),
            offset: 0,
            stored: store.audit_head(log).await?.map(|(seq, _)| seq),
            skipped: 0,
        })
    }

    /// The last seq stored.
    pub fn stored(&self) -> Option<i64> {
        self.stored
    }

    /// Reads what was written since the last step (at most a few MiB) and stores its
    /// records; returns how many it stored. A log file that is missing has nothing to read;
    /// one that shrank (replaced) is read again from its start.
    pub async fn step(&mut self, store: &Store) -> Result<usize, StoreError> {
        match self.read_at(self.offset)? {
            None => Ok(0),
            Some(chunk) => {
                let parsed = chunk.parse();
                self.store_parsed(store, parsed).await
            }
        }
    }

    /// Steps until the file holds nothing more, reading and parsing each chunk on a
    /// blocking thread while the one before is being stored; returns how many records it
    /// stored.
    pub async fn catch_up(&mut self, store: &Store) -> Result<usize, StoreError> {
        let spawn = |chunk: Chunk| tokio::task::spawn_blocking(move || chunk.parse());
        let mut total = 0;
        let mut next = self.read_at(self.offset)?.map(spawn);
        while let Some(parsing) = next.take() {
            let parsed = parsing.await.map_err(|e| StoreError::Io {
                what: "parse the audit log".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
            next = self.read_at(self.offset + parsed.consumed)?.map(spawn);
            total += self.store_parsed(store, parsed).await?;
        }
        Ok(total)
    }

    /// The complete lines of the file from `offset` (at most [`INGEST_BYTES`]); `None` when
    /// there is nothing more.
    fn read_at(&mut self, offset: u64) -> Result<Option<Chunk>, StoreError> {
        use std::io::{Read as _, Seek as _};
        let io = |what: &str| {
            let what = format!("{what} {}", self.path.display());
            move |source| StoreError::Io { what, source }
        };
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("open")(e)),
        };
        // Not cut by retention while it is read; read from past what was cut.
        spawn_audit::cut::hold_for_reading(&file).map_err(io("lock"))?;
        let len = file.metadata().map_err(io("read"))?.len();
        let offset = if len < self.offset {
            // Replaced by a shorter file: read again from its start.
            self.offset = 0;
            0
        } else {
            offset
        };
        let requested = offset;
        let offset = spawn_audit::cut::records_start(&file, offset).map_err(io("read"))?;
        let hole = offset.saturating_sub(requested);
        let want = len.saturating_sub(offset).min(INGEST_BYTES);
        if want == 0 {
            return Ok(None);
        }
        file.seek(std::io::SeekFrom::Start(offset))
            .map_err(io("read"))?;
        let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        file.take(want).read_to_end(&mut buf).map_err(io("read"))?;
        // Only complete lines; a line longer than a whole step is passed over a step at a
        // time until it ends (the log caps its lines far below).
        match buf.iter().rposition(|b| *b == b'\n') {
            Some(end) => {
                buf.truncate(end);
                Ok(Some(Chunk {
                    buf,
                    consumed: u64::try_from(end).unwrap_or(0) + 1,
                    hole,
                }))
            }
            None if want == INGEST_BYTES => Ok(Some(Chunk {
                buf: Vec::new(),
                consumed: want,
                hole,
            })),
            None => Ok(None),
        }
    }

    /// Stores the records of a parsed chunk that follow what is stored, and moves past it.
    async fn store_parsed(&mut self, store: &Store, parsed: Parsed) -> Result<usize, StoreError> {
        let records: Vec<StoredRecord> = parsed
            .records
            .into_iter()
            .filter(|r| self.stored.is_none_or(|s| r.seq > s))
            .collect();
        // The batch must link up: records after a break in the file are not taken, and the
        // step stops there (the error names the record).
        if let Err(e) = store.audit_append(&self.log, &records).await {
            // Another writer may have stored some of them, or the file was replaced under
            // a step: the next step reads the file again from its start and resumes after
            // whatever the database holds.
            if matches!(e, StoreError::AuditChain { .. }) {
                self.stored = store.audit_head(&self.log).await?.map(|(seq, _)| seq);
                self.offset = 0;
            }
            return Err(e);
        }
        if let Some(last) = records.last() {
            self.stored = Some(last.seq);
        }
        self.skipped += parsed.skipped;
        self.offset += parsed.consumed;
        Ok(records.len())
    }
}

/// Complete lines read from a log file: `buf` (without its last newline), `consumed` bytes
/// of the file after a `hole` that retention cut out of it (passed over).
struct Chunk {
    buf: Vec<u8>,
    consumed: u64,
    hole: u64,
}

/// A chunk's records, and its lines that are not records.
struct Parsed {
    records: Vec<StoredRecord>,
    skipped: u64,
    consumed: u64,
}

impl Chunk {
    fn parse(self) -> Parsed {
        let mut records = Vec::new();
        let mut skipped = 0;
        if self.buf.is_empty() && self.consumed > 0 && self.consumed == INGEST_BYTES {
            // A line longer than a step, passed over.
            skipped = 1;
        } else {
            for line in self.buf.split(|b| *b == b'\n') {
                match std::str::from_utf8(line)
                    .ok()
                    .and_then(|l| StoredRecord::from_line(l).ok())
                {
                    Some(r) => records.push(r),
                    None => skipped += 1,
                }
            }
        }
        Parsed {
            records,
            skipped,
            consumed: self.hole + self.consumed,
        }
    }
}

/// What [`Store::audit_retain`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retained {
    /// No record is older than the period (or those that are were cut before).
    Nothing,
    /// Records up to `seq` were cut: `deleted` rows went.
    Cut { seq: i64, deleted: u64 },
    /// The stored log does not verify: nothing was cut (a cut signed over it would vouch
    /// for what was changed).
    Broken(Broken),
}

impl Store {
    /// Retention: deletes the records of `log` written before `before` (the log's
    /// timestamp form) under a cut signed with `key` (the log's checkpoint key), kept
    /// beside the log's checkpoints in `log_dir` and in the database. The stored log is
    /// verified first, against `notes` and its cuts; a log that does not verify is not cut.
    pub async fn audit_retain(
        &self,
        log: &str,
        key: &spawn_audit::checkpoint::SigningKey,
        notes: Vec<Opened>,
        log_dir: &std::path::Path,
        before: &str,
    ) -> Result<Retained, StoreError> {
        let Some(last) = self.audit_last_before(log, before).await? else {
            return Ok(Retained::Nothing);
        };
        let verifier = key.verifier();
        let cuts: Vec<Cut> = self
            .audit_cuts(log)
            .await?
            .into_iter()
            .filter_map(|(_, note)| Cut::open(&verifier, &note).ok())
            .collect();
        let v = self.audit_verify(log, notes, cuts.clone()).await?;
        if let Some(b) = v.broken {
            return Ok(Retained::Broken(b));
        }
        // The tree from the latest cut (or the start) through record `last`.
        let latest = cuts.iter().max_by_key(|c| c.checkpoint.size);
        let mut tree = latest.map(|c| c.frontier.clone()).unwrap_or_default();
        let mut after = latest.map_or(0, |c| i64::try_from(c.checkpoint.size).unwrap_or(i64::MAX));
        let mut anchor = None;
        while after < last {
            let page = self
                .audit_hashes(log, after, PAGE.min(last - after))
                .await?;
            let Some(&(seq, _)) = page.last() else { break };
            for (_, hash) in &page {
                let leaf =
                    spawn_audit::checkpoint::leaf_of(hash).ok_or_else(|| StoreError::Corrupt {
                        what: "audit record hash",
                        reason: hash.clone(),
                    })?;
                tree.push(leaf);
            }
            anchor = page.last().map(|(_, h)| h.clone());
            after = seq;
        }
        let Some(anchor) = anchor else {
            return Ok(Retained::Nothing);
        };
        let io = |e: spawn_audit::AuditError| StoreError::Io {
            what: "sign the audit cut".into(),
            source: std::io::Error::other(e.to_string()),
        };
        let cut = Cut::new(log, &anchor, tree).map_err(io)?;
        let note = spawn_audit::cut::keep(log_dir, key, &cut).map_err(io)?;
        let deleted = self.audit_cut(log, last, &anchor, &note).await?;
        Ok(Retained::Cut { seq: last, deleted })
    }
}

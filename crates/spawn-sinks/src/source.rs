//! Reading the log from a sink's cursor on: complete lines only, in file order.
//!
//! The log is appended by other processes (runs, the egress proxy, spawnd), each batch
//! with one `O_APPEND` write under the log's lock; it only grows. The reader keeps its byte
//! offset and reads what lies past it, up to the last newline: a line still being written,
//! or torn by a crash, is not taken until its newline is there. A torn fragment that a
//! later append closed with a newline is not a record and is skipped (the chain, checked
//! downstream, shows the gap if a record was lost with it). Records that retention cut out
//! of the file before the sink read them (`spawn_audit::cut::cut_file`: a sink that was
//! behind for the whole retention period) are passed over with the hole.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::SinkError;

/// Most bytes read from the log at once. A record line is at most
/// `spawn_audit::MAX_EVENT_BYTES` + 1, so a read this size always holds whole lines.
const READ_CHUNK: usize = 1 << 20;

/// One record of the log, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    /// The line exactly as stored, without its newline.
    pub line: String,
    pub event_type: String,
    pub outcome: String,
    pub timestamp: String,
    pub hash: Option<String>,
    pub trace_id: Option<String>,
    pub request_id: Option<String>,
}

/// The fields a sink needs besides the line; anything else in the line is kept as is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    seq: u64,
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    timestamp: String,
    #[serde(default)]
    hash: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
}

/// Reads records after a seq from the log at `path`.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    file: Option<File>,
    /// Byte offset of the first line not yet read.
    offset: u64,
    /// Records with a seq at or below this are skipped (delivered already).
    after: u64,
}

impl LogReader {
    /// A reader of the records after `after`. The file is opened on first read (a log not
    /// made yet is simply empty).
    pub fn new(path: &Path, after: u64) -> LogReader {
        LogReader {
            path: path.to_owned(),
            file: None,
            offset: 0,
            after,
        }
    }

    /// Up to `max` records past the last one returned (or past `after`), in file order;
    /// empty when the log holds no complete line more.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<Entry>, SinkError> {
        let read_err = |path: &Path| {
            let path = path.to_owned();
            move |source| SinkError::Read { path, source }
        };
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(read_err(&self.path)(e)),
            }
        }
        let Some(file) = &self.file else {
            return Ok(Vec::new());
        };
        // Retention may cut the records read so far out of the file (a hole of NUL bytes):
        // not while this batch reads, and past the hole afterwards.
        let _reading = spawn_audit::cut::reading(file).map_err(read_err(&self.path))?;
        let mut out = Vec::new();
        while out.len() < max {
            self.offset =
                spawn_audit::cut::records_start(file, self.offset).map_err(read_err(&self.path))?;
            let len = file.metadata().map_err(read_err(&self.path))?.len();
            if len <= self.offset {
                break;
            }
            let want = usize::try_from(len - self.offset).map_or(READ_CHUNK, |n| n.min(READ_CHUNK));
            let mut buf = vec![0u8; want];
            file.read_exact_at(&mut buf, self.offset)
                .map_err(read_err(&self.path))?;
            // Only whole lines: up to the last newline in what was read.
            let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
                break;
            };
            let mut consumed = 0usize;
            for line in buf[..end + 1].split_inclusive(|&b| b == b'\n') {
                if out.len() >= max {
                    break;
                }
                consumed += line.len();
                let body = &line[..line.len() - 1];
                if let Some(entry) = parse(body) {
                    if entry.seq > self.after {
                        self.after = entry.seq;
                        out.push(entry);
                    }
                }
            }
            self.offset += consumed as u64;
        }
        Ok(out)
    }
}

/// A line that is a record (a JSON object with a seq, UTF-8); `None` for anything else.
fn parse(body: &[u8]) -> Option<Entry> {
    let line = std::str::from_utf8(body).ok()?;
    let p: Probe = serde_json::from_str(line).ok()?;
    Some(Entry {
        seq: p.seq,
        line: line.to_owned(),
        event_type: p.event_type,
        outcome: p.outcome,
        timestamp: p.timestamp,
        hash: p.hash,
        trace_id: p.trace_id,
        request_id: p.request_id,
    })
}

/// The seq of the last record in the log at `path` (0 when there is none yet), from its
/// end only: what a sink's backlog is counted against.
pub fn last_seq(path: &Path) -> Result<u64, SinkError> {
    match spawn_audit::last_seq(path) {
        Ok(seq) => Ok(seq),
        Err(spawn_audit::AuditError::Open { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(0)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn rec(seq: u64, extra: &str) -> String {
        format!("{{\"seq\":{seq},\"eventType\":\"auth.login\",\"outcome\":\"success\",\"x\":{extra}}}\n")
    }

    #[test]
    fn whole_lines_only_in_order_from_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut f = std::fs::File::create(&path).unwrap();
        for seq in 1..=5 {
            f.write_all(rec(seq, "1").as_bytes()).unwrap();
        }
        // A torn line: not taken until its newline comes.
        f.write_all(b"{\"seq\":6,\"eventType\":\"a").unwrap();
        let mut r = LogReader::new(&path, 2);
        let got: Vec<u64> = r.next_batch(2).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(got, [3, 4]);
        let got: Vec<u64> = r.next_batch(10).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(got, [5]);
        assert!(r.next_batch(10).unwrap().is_empty());
        f.write_all(b"uth.login\",\"outcome\":\"denied\"}\n")
            .unwrap();
        let got = r.next_batch(10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].seq, 6);
        assert_eq!(got[0].outcome, "denied");
        assert_eq!(
            got[0].line,
            "{\"seq\":6,\"eventType\":\"auth.login\",\"outcome\":\"denied\"}"
        );
    }

    #[test]
    fn a_torn_fragment_closed_by_a_later_append_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let text = format!(
            "{}{{\"seq\":2,\"even\n{}not json\n{}",
            rec(1, "1"),
            rec(2, "2"),
            rec(3, "3")
        );
        std::fs::write(&path, text).unwrap();
        let mut r = LogReader::new(&path, 0);
        let got: Vec<u64> = r.next_batch(10).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(got, [1, 2, 3]);
    }

    /// Retention cut the records up to 2990 out of the file (a hole of more than one read):
    /// a reader that was behind goes on past the hole, and one that starts at the file's
    /// start (every daemon start) finds the records kept.
    #[test]
    fn records_cut_by_retention_are_passed_over_with_their_hole() {
        use spawn_audit::checkpoint::{leaf_of, Frontier, SigningKey};
        let dir = tempfile::tempdir().unwrap();
        let mut log = spawn_audit::AuditLog::open(dir.path()).unwrap();
        let events: Vec<spawn_audit::Event> = (0..3000)
            .map(|i| {
                let mut e = spawn_audit::Event::new(
                    spawn_audit::EventType::AgentStart,
                    spawn_audit::Principal {
                        kind: "agent".into(),
                        id: format!("ag_{i}"),
                        name: None,
                    },
                    spawn_audit::Resource {
                        kind: "run".into(),
                        name: "r".into(),
                    },
                    "start",
                    spawn_audit::Outcome::Success,
                );
                e.details.insert("pad".into(), "p".repeat(400).into());
                e
            })
            .collect();
        log.append(&events).unwrap();
        let path = log.path().to_owned();
        let mut behind = LogReader::new(&path, 0);
        let got: Vec<u64> = behind
            .next_batch(10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(got, (1..=10).collect::<Vec<_>>());

        let text = std::fs::read_to_string(&path).unwrap();
        let hashes: Vec<String> = text
            .lines()
            .map(|l| parse(l.as_bytes()).unwrap().hash.unwrap())
            .collect();
        let mut tree = Frontier::default();
        for h in &hashes[..2990] {
            tree.push(leaf_of(h).unwrap());
        }
        let key = SigningKey::generate("spawn.audit/t").unwrap();
        let cut = spawn_audit::cut::Cut::new(key.name(), &hashes[2989], tree).unwrap();
        let done = spawn_audit::cut::cut_file(&path, &cut).unwrap();
        assert!(
            matches!(done, spawn_audit::cut::FileCut::Cut { seq: 2990, bytes } if bytes > (READ_CHUNK as u64) * 2),
            "{done:?}"
        );

        let got: Vec<u64> = behind
            .next_batch(100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(got, (2991..=3000).collect::<Vec<_>>());
        let mut fresh = LogReader::new(&path, 2995);
        let got: Vec<u64> = fresh
            .next_batch(100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(got, (2996..=3000).collect::<Vec<_>>());
        assert_eq!(last_seq(&path).unwrap(), 3000);
    }

    #[test]
    fn a_missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = LogReader::new(&dir.path().join("none"), 0);
        assert!(r.next_batch(10).unwrap().is_empty());
        assert_eq!(last_seq(&dir.path().join("none")).unwrap(), 0);
    }
}

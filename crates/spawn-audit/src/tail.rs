//! Finding the last record of the log by reading only its end.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Deserialize;

use crate::encode::MAX_EVENT_BYTES;
use crate::error::AuditError;

/// First read from the end of the log. Records are normally a few hundred bytes, so
/// this one read almost always holds the last complete line.
const FIRST_WINDOW: usize = 8 * 1024;

/// How far back the log is searched for a valid record before giving up. A record line
/// is at most [`MAX_EVENT_BYTES`] + 1 bytes and so is a torn one, so this covers the last
/// record behind a dozen torn lines left by repeated crashes. Past it the log is treated
/// as corrupt: guessing the next seq could duplicate one.
const MAX_TAIL_SCAN: usize = 16 * (MAX_EVENT_BYTES + 1);

/// What the end of the log looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tail {
    /// Seq of the last valid record; 0 when the log holds none.
    pub(crate) last_seq: u64,
    /// Its hash (the next record's `prevHash`); `None` when the log holds no record, or
    /// its last one is not chained.
    pub(crate) last_hash: Option<String>,
    /// The log does not end with a newline: its last line was torn (e.g. by a crash
    /// mid-write), and the next line must start on a line of its own.
    pub(crate) torn: bool,
}

/// Only the seq of a line is needed; the other fields are not checked, so a log written
/// by a newer version (more event types, chain fields) still yields its seq.
#[derive(Deserialize)]
struct SeqProbe {
    seq: u64,
    #[serde(default)]
    hash: Option<String>,
}

/// Reads the tail of `file`, whose length is `len`. The caller holds the log's lock.
pub(crate) fn read_tail(file: &File, len: u64, path: &Path) -> Result<Tail, AuditError> {
    if len == 0 {
        return Ok(Tail {
            last_seq: 0,
            last_hash: None,
            torn: false,
        });
    }
    let mut window = FIRST_WINDOW;
    loop {
        // The window never exceeds the file.
        let size = usize::try_from(len).map_or(window, |len| window.min(len));
        let start = len - size as u64;
        let mut buf = vec![0u8; size];
        file.read_exact_at(&mut buf, start)
            .map_err(|source| AuditError::Read {
                path: path.to_owned(),
                source,
            })?;
        let torn = buf.last() != Some(&b'\n');
        if let Some(probe) = last_record_in(&buf, start == 0) {
            return Ok(Tail {
                last_seq: probe.seq,
                last_hash: probe.hash,
                torn,
            });
        }
        if start == 0 {
            // Nothing but torn or foreign lines: the log holds no record yet.
            return Ok(Tail {
                last_seq: 0,
                last_hash: None,
                torn,
            });
        }
        if size >= MAX_TAIL_SCAN {
            return Err(AuditError::CorruptTail {
                path: path.to_owned(),
                scanned: size as u64,
            });
        }
        window = (size * 2).min(MAX_TAIL_SCAN);
    }
}

/// The seq of the last line of `buf` that is a JSON object with a `seq`. The first line
/// is considered only when `buf` starts at the beginning of the file (otherwise it may be
/// cut). A trailing line without its newline counts if it parses: a write torn right
/// after its closing brace still holds a complete record, whose seq must not be reused.
fn last_record_in(buf: &[u8], at_file_start: bool) -> Option<SeqProbe> {
    let mut lines = buf.split(|&b| b == b'\n');
    if !at_file_start {
        lines.next();
    }
    lines
        .rev()
        .filter(|line| !line.is_empty())
        .find_map(|line| serde_json::from_slice::<SeqProbe>(line).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tail_of(bytes: &[u8]) -> Result<Tail, AuditError> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        read_tail(&f, bytes.len() as u64, Path::new("test"))
    }

    fn line(seq: u64, pad: usize) -> String {
        format!("{{\"seq\":{seq},\"pad\":\"{}\"}}\n", "p".repeat(pad))
    }

    #[test]
    fn empty_log() {
        assert_eq!(
            tail_of(b"").unwrap(),
            Tail {
                last_seq: 0,
                last_hash: None,
                torn: false
            }
        );
    }

    #[test]
    fn last_line_wins() {
        let log = format!("{}{}{}", line(1, 0), line(2, 0), line(3, 0));
        assert_eq!(
            tail_of(log.as_bytes()).unwrap(),
            Tail {
                last_seq: 3,
                last_hash: None,
                torn: false
            }
        );
    }

    #[test]
    fn torn_last_line_is_skipped() {
        let log = format!("{}{}{{\"seq\":3,\"pad\":\"pp", line(1, 0), line(2, 0));
        assert_eq!(
            tail_of(log.as_bytes()).unwrap(),
            Tail {
                last_seq: 2,
                last_hash: None,
                torn: true
            }
        );
    }

    #[test]
    fn complete_record_missing_only_its_newline_counts() {
        let log = format!("{}{{\"seq\":2}}", line(1, 0));
        assert_eq!(
            tail_of(log.as_bytes()).unwrap(),
            Tail {
                last_seq: 2,
                last_hash: None,
                torn: true
            }
        );
    }

    #[test]
    fn repaired_torn_lines_are_skipped() {
        let log = format!("{}{{\"seq\":2,\"pa\n{{\"se\n", line(1, 0));
        assert_eq!(tail_of(log.as_bytes()).unwrap().last_seq, 1);
    }

    #[test]
    fn only_garbage_means_no_record() {
        assert_eq!(
            tail_of(b"{\"seq\":1,\"tr").unwrap(),
            Tail {
                last_seq: 0,
                last_hash: None,
                torn: true
            }
        );
    }

    #[test]
    fn long_lines_grow_the_window() {
        let log = format!("{}{}", line(41, 10), line(42, MAX_EVENT_BYTES - 100));
        assert_eq!(tail_of(log.as_bytes()).unwrap().last_seq, 42);
        // The record before a long torn fragment is found too.
        let log = format!(
            "{}{{\"seq\":43,\"pad\":\"{}",
            line(42, 10),
            "p".repeat(40_000)
        );
        assert_eq!(
            tail_of(log.as_bytes()).unwrap(),
            Tail {
                last_seq: 42,
                last_hash: None,
                torn: true
            }
        );
    }

    #[test]
    fn too_much_garbage_is_an_error() {
        let mut log = line(1, 0);
        log.push_str(&"garbage\n".repeat(MAX_TAIL_SCAN / 8 + 1));
        assert!(matches!(
            tail_of(log.as_bytes()),
            Err(AuditError::CorruptTail { .. })
        ));
    }
}

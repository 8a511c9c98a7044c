//! The log file: opening it safely, appending batches, reading it back.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::chain::GENESIS;
use crate::clock::now_rfc3339;
use crate::encode::encode_line;
use crate::error::AuditError;
use crate::event::{Event, Record};
use crate::tail::read_tail;

/// Name of the log file inside the directory given to [`AuditLog::open`].
pub const LOG_FILE_NAME: &str = "audit.jsonl";

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Opening races with another process creating or replacing the file at most this many
/// times before giving up.
const OPEN_ATTEMPTS: usize = 3;

/// An open audit log. Each spawn process opens its own; appends from many processes
/// (and threads, each with its own `AuditLog`) are serialized by an exclusive lock.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    /// Opened read + `O_APPEND`: every write lands at the current end of the file.
    file: File,
    /// The directory, when this handle created the file: [`AuditLog::sync`] then also
    /// makes the new directory entry durable, once.
    unsynced_dir: Option<PathBuf>,
}

impl AuditLog {
    /// Opens `dir/audit.jsonl`, creating `dir` (mode 0700) and the file (mode 0600) if
    /// missing. Refuses a log file that is a symlink or not a regular file. Existing
    /// directories and files keep their permissions.
    pub fn open(dir: &Path) -> Result<AuditLog, AuditError> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|source| AuditError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        let path = dir.join(LOG_FILE_NAME);
        let (file, created) = open_log_file(&path)?;
        Ok(AuditLog {
            path,
            file,
            unsynced_dir: created.then(|| dir.to_owned()),
        })
    }

    /// A log already opened by another process with [`AuditLog::open`] and handed over as
    /// its file (e.g. over a unix socket to a process that may not open it itself). `path`
    /// is for messages only.
    pub fn from_file(file: File, path: PathBuf) -> AuditLog {
        AuditLog {
            path,
            file,
            unsynced_dir: None,
        }
    }

    /// The open log file (to hand it to another process; see [`AuditLog::from_file`]).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `events` as one batch and returns the seqs assigned, in order.
    ///
    /// Under an exclusive lock on the file: reads only the end of the file to find the
    /// last seq, assigns the following seqs and one timestamp, and writes every line with
    /// a single write. Does not fsync: see [`AuditLog::sync`].
    pub fn append(&mut self, events: &[Event]) -> Result<Vec<u64>, AuditError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let _lock = LockGuard::lock(&self.file, &self.path)?;

        let len = self
            .file
            .metadata()
            .map_err(|source| AuditError::Read {
                path: self.path.clone(),
                source,
            })?
            .len();
        let tail = read_tail(&self.file, len, &self.path)?;

        let timestamp = now_rfc3339();
        let mut buf = Vec::with_capacity(events.len() * 512 + 1);
        if tail.torn {
            // Leave the torn fragment on a line of its own rather than glue to it.
            buf.push(b'\n');
        }
        let mut seqs = Vec::with_capacity(events.len());
        let mut seq = tail.last_seq;
        // A log whose last record is not chained (written before the chain) starts a chain
        // anew: `verify` names the first record outside it.
        let mut prev = tail.last_hash.unwrap_or_else(|| GENESIS.to_owned());
        for event in events {
            seq = seq.checked_add(1).ok_or_else(|| AuditError::SeqOverflow {
                path: self.path.clone(),
            })?;
            prev = encode_line(seq, &timestamp, event, &prev, &mut buf)?;
            seqs.push(seq);
        }

        (&self.file)
            .write_all(&buf)
            .map_err(|source| AuditError::Write {
                path: self.path.clone(),
                source,
            })?;
        Ok(seqs)
    }

    /// Makes every appended line durable (`fdatasync`), and the file's directory entry
    /// too if this handle created the file.
    pub fn sync(&mut self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(|source| AuditError::Sync {
            path: self.path.clone(),
            source,
        })?;
        if let Some(dir) = &self.unsynced_dir {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| AuditError::Sync {
                    path: dir.clone(),
                    source,
                })?;
            self.unsynced_dir = None;
        }
        Ok(())
    }
}

/// Reads every record of the log at `path` (from the first record kept, after a cut). A
/// line that is not a valid record — a torn line left by a crash included — is an error
/// naming its line number (counted from the first record kept).
/// Reads from the first record kept (see [`snapshot`]).
pub fn read_records(path: &Path) -> Result<Vec<Record>, AuditError> {
    let read_err = |source| AuditError::Read {
        path: path.to_owned(),
        source,
    };
    let (file, len) = snapshot(path)?;
    let mut reader = BufReader::new(io::Read::take(file, len));
    let mut records = Vec::new();
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(read_err)? == 0 {
            break;
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let record = serde_json::from_slice(body).map_err(|source| AuditError::Malformed {
            path: path.to_owned(),
            line: number,
            source,
        })?;
        records.push(record);
    }
    Ok(records)
}

/// The log at `path` as it stands between two appends: the open file, positioned at its
/// first record kept (past what retention cut out of it, [`crate::cut::cut_file`]), and
/// how many bytes lie from there to the file's length at a moment no writer held the lock
/// (the log only grows, so what lies before that length never changes; and the file holds
/// the readers' lock, [`crate::cut::hold_for_reading`], so that no cut punches it while
/// it is open). Readers copy or check that much without holding writers up.
pub fn snapshot(path: &Path) -> Result<(File, u64), AuditError> {
    let mut file = File::open(path).map_err(|source| AuditError::Open {
        path: path.to_owned(),
        source,
    })?;
    let meta = file.metadata().map_err(|source| AuditError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(AuditError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    let len = {
        file.lock_shared().map_err(|source| AuditError::Lock {
            path: path.to_owned(),
            source,
        })?;
        let len = file.metadata().map(|m| m.len());
        let _ = file.unlock();
        len.map_err(|source| AuditError::Read {
            path: path.to_owned(),
            source,
        })?
    };
    let read_err = |source| AuditError::Read {
        path: path.to_owned(),
        source,
    };
    crate::cut::hold_for_reading(&file).map_err(|source| AuditError::Lock {
        path: path.to_owned(),
        source,
    })?;
    let start = crate::cut::records_start(&file, 0)
        .map_err(read_err)?
        .min(len);
    io::Seek::seek(&mut file, io::SeekFrom::Start(start)).map_err(read_err)?;
    Ok((file, len - start))
}

/// The seq of the last record of the log at `path` (0 when it holds none), read from the
/// end of the file only, as an append finds it, without taking the lock: a forwarder's
/// backlog is counted against it.
pub fn last_seq(path: &Path) -> Result<u64, AuditError> {
    let file = File::open(path).map_err(|source| AuditError::Open {
        path: path.to_owned(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| AuditError::Read {
            path: path.to_owned(),
            source,
        })?
        .len();
    Ok(read_tail(&file, len, path)?.last_seq)
}

/// Opens the existing log file at `path` for [`crate::cut::cut_file`], refusing what
/// [`AuditLog::open`] refuses.
pub(crate) fn open_for_cut(path: &Path) -> Result<File, AuditError> {
    let meta = fs::symlink_metadata(path).map_err(|source| AuditError::Open {
        path: path.to_owned(),
        source,
    })?;
    open_existing(path, &meta)
}

/// Opens the log file, creating it if missing; returns whether it was created.
///
/// Without `O_NOFOLLOW` (std has no portable constant for it), symlinks are refused by
/// checking the path with `lstat` and then checking that the opened file is that same
/// inode. Creation uses `O_EXCL`, which never follows a symlink.
fn open_log_file(path: &Path) -> Result<(File, bool), AuditError> {
    let open_err = |source| AuditError::Open {
        path: path.to_owned(),
        source,
    };
    for _ in 0..OPEN_ATTEMPTS {
        match fs::symlink_metadata(path) {
            Ok(meta) => return open_existing(path, &meta).map(|f| (f, false)),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(open_err(e)),
        }
        match OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(path)
        {
            Ok(file) => {
                // The umask may have removed bits from the mode asked for at creation.
                file.set_permissions(Permissions::from_mode(FILE_MODE))
                    .map_err(open_err)?;
                return Ok((file, true));
            }
            // Another process created it (or planted something) meanwhile: look again.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(open_err(e)),
        }
    }
    Err(AuditError::Replaced {
        path: path.to_owned(),
    })
}

fn open_existing(path: &Path, meta: &fs::Metadata) -> Result<File, AuditError> {
    if meta.file_type().is_symlink() {
        return Err(AuditError::Symlink {
            path: path.to_owned(),
        });
    }
    if !meta.file_type().is_file() {
        return Err(AuditError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    let open_err = |source| AuditError::Open {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(open_err)?;
    let opened = file.metadata().map_err(open_err)?;
    if opened.dev() != meta.dev() || opened.ino() != meta.ino() || !opened.file_type().is_file() {
        return Err(AuditError::Replaced {
            path: path.to_owned(),
        });
    }
    Ok(file)
}

/// Holds the exclusive lock (`flock`) on the log; released on drop, on every path.
struct LockGuard<'a> {
    file: &'a File,
}

impl<'a> LockGuard<'a> {
    fn lock(file: &'a File, path: &Path) -> Result<LockGuard<'a>, AuditError> {
        file.lock().map_err(|source: io::Error| AuditError::Lock {
            path: path.to_owned(),
            source,
        })?;
        Ok(LockGuard { file })
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Unlocking cannot fail on a valid descriptor; if it somehow did, the lock
        // is still released when the file is closed.
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests;

//! A sink's cursor: what it has delivered, on disk, so that a restart resumes after it.
//!
//! `<audit dir>/sinks/<name>.cursor`, mode 0600, one JSON object
//! `{"seq": N, "checkpoint": M}`: the last record seq and the largest checkpoint size the
//! sink acknowledged. Written aside, synced, renamed over the old one, and the directory
//! synced: after a crash the cursor is the old one or the new one, never a torn mix, and
//! a record is never marked delivered before its sink acknowledged it (at least once).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::SinkError;

/// Largest cursor file read (it is a few dozen bytes).
const MAX_CURSOR_BYTES: u64 = 4096;

/// What a sink has delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// The last record seq acknowledged (0: none).
    pub seq: u64,
    /// The size of the largest checkpoint acknowledged (0: none).
    #[serde(default)]
    pub checkpoint: u64,
}

/// The directory of the cursors: `sinks/` beside the log.
pub fn dir_of(log_dir: &Path) -> PathBuf {
    log_dir.join("sinks")
}

/// The cursor file of sink `name` (a name [`crate::plan`] accepted).
pub fn path_of(log_dir: &Path, name: &str) -> PathBuf {
    dir_of(log_dir).join(format!("{name}.cursor"))
}

/// Reads a cursor; a missing file is the start (nothing delivered).
pub fn load(path: &Path) -> Result<Cursor, SinkError> {
    let read_err = |source| SinkError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Cursor::default()),
        Err(e) => return Err(read_err(e)),
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_CURSOR_BYTES), &mut text)
        .map_err(read_err)?;
    serde_json::from_str(&text).map_err(|e| {
        read_err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("not a cursor: {e}"),
        ))
    })
}

/// Replaces the cursor at `path` atomically and durably (temp file, fsync, rename,
/// directory fsync); creates the directory (0700) if missing.
pub fn store(path: &Path, cursor: Cursor) -> Result<(), SinkError> {
    let write_err = |p: &Path| {
        let p = p.to_owned();
        move |source| SinkError::Write { path: p, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(write_err(dir))?;
    let tmp = path.with_extension(format!("cursor.tmp.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        // A temp file left by a crash of this very process id is replaced.
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        let mut body = serde_json::to_vec(&cursor).map_err(std::io::Error::other)?;
        body.push(b'\n');
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(write_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn round_trip_private_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_of(dir.path(), "siem");
        assert_eq!(load(&path).unwrap(), Cursor::default());
        store(
            &path,
            Cursor {
                seq: 42,
                checkpoint: 40,
            },
        )
        .unwrap();
        store(
            &path,
            Cursor {
                seq: 43,
                checkpoint: 40,
            },
        )
        .unwrap();
        assert_eq!(
            load(&path).unwrap(),
            Cursor {
                seq: 43,
                checkpoint: 40
            }
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(dir_of(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        // Nothing left aside.
        let names: Vec<_> = std::fs::read_dir(dir_of(dir.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("siem.cursor")]);
    }

    #[test]
    fn a_corrupt_cursor_is_an_error_not_a_restart_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_of(dir.path(), "x");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{\"seq\": 3, \"se").unwrap();
        assert!(matches!(load(&path), Err(SinkError::Read { .. })));
    }
}

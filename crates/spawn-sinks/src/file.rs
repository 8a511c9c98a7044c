//! The file sink: JSON lines appended to a file, rotated at `maxBytes` into `name.1`
//! (newest) … `name.<keep>` (oldest; older ones are removed). Files are 0600, never
//! followed through a symlink, and synced (with their directory after a rotation) before a
//! batch counts as delivered.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::config::{FileOptions, Format};
use crate::error::SinkError;
use crate::item::Item;

/// A file sink; the open file and its size are kept between batches.
#[derive(Debug)]
pub(crate) struct FileSink {
    opts: FileOptions,
    format: Format,
    file: Option<(File, u64)>,
}

impl FileSink {
    pub(crate) fn new(opts: FileOptions, format: Format) -> FileSink {
        FileSink {
            opts,
            format,
            file: None,
        }
    }

    /// Appends `items`, rotating as they go; synced before returning.
    pub(crate) fn deliver(&mut self, items: &[Item]) -> Result<(), SinkError> {
        let r = self.write(items);
        if r.is_err() {
            // Reopened (and its size read again) on the next try.
            self.file = None;
        }
        r
    }

    fn write(&mut self, items: &[Item]) -> Result<(), SinkError> {
        let path = self.opts.path.clone();
        let werr = |p: &Path| {
            let p = p.to_owned();
            move |source| SinkError::Write { path: p, source }
        };
        let mut dir_dirty = false;
        let mut buf = Vec::new();
        for item in items {
            let mut line = item.json_line(self.format).into_bytes();
            line.push(b'\n');
            let size = match &self.file {
                Some((_, size)) => *size,
                None => {
                    let (f, size, created) = open(&path).map_err(werr(&path))?;
                    dir_dirty |= created;
                    self.file = Some((f, size));
                    size
                }
            };
            let pending = buf.len() as u64;
            if size + pending > 0 && size + pending + line.len() as u64 > self.opts.max_bytes {
                self.flush(&mut buf)?;
                self.rotate()?;
                dir_dirty = true;
                let (f, size, _) = open(&path).map_err(werr(&path))?;
                self.file = Some((f, size));
            }
            buf.extend_from_slice(&line);
        }
        self.flush(&mut buf)?;
        if let Some((f, _)) = &self.file {
            f.sync_data().map_err(werr(&path))?;
        }
        if dir_dirty {
            let dir = path.parent().unwrap_or(Path::new("/"));
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(werr(dir))?;
        }
        Ok(())
    }

    fn flush(&mut self, buf: &mut Vec<u8>) -> Result<(), SinkError> {
        if buf.is_empty() {
            return Ok(());
        }
        let path = self.opts.path.clone();
        if let Some((f, size)) = &mut self.file {
            f.write_all(buf).map_err(|source| SinkError::Write {
                path: path.clone(),
                source,
            })?;
            *size += buf.len() as u64;
        }
        buf.clear();
        Ok(())
    }

    /// `name.<keep-1>` → `name.<keep>` … `name` → `name.1`, the current file synced first.
    fn rotate(&mut self) -> Result<(), SinkError> {
        let path = self.opts.path.clone();
        let werr = |p: PathBuf| move |source| SinkError::Write { path: p, source };
        if let Some((f, _)) = self.file.take() {
            f.sync_data().map_err(werr(path.clone()))?;
        }
        for n in (1..self.opts.keep).rev() {
            let from = numbered(&path, n);
            match std::fs::rename(&from, numbered(&path, n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(werr(from)(e)),
            }
        }
        std::fs::rename(&path, numbered(&path, 1)).map_err(werr(path.clone()))
    }
}

/// `path` with `.n` after its file name.
pub(crate) fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Opens `path` for appending (0600, created if missing, a symlink refused); its size and
/// whether it was created.
fn open(path: &Path) -> std::io::Result<(File, u64, bool)> {
    let existed = match std::fs::symlink_metadata(path) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if !existed {
        // The umask may have taken bits from the mode asked for.
        f.set_permissions(Permissions::from_mode(0o600))?;
    }
    Ok((f, meta.len(), !existed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Entry;

    fn rec(seq: u64) -> Item {
        Item::Record(Entry {
            seq,
            line: format!("{{\"seq\":{seq},\"pad\":\"{}\"}}", "p".repeat(80)),
            event_type: "auth.login".into(),
            outcome: "success".into(),
            timestamp: String::new(),
            hash: None,
            trace_id: None,
            request_id: None,
        })
    }

    #[test]
    fn rotation_keeps_n_files_complete_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = FileSink::new(
            FileOptions {
                path: path.clone(),
                max_bytes: 4096,
                keep: 3,
            },
            Format::Spawn,
        );
        // ~100-byte lines: about 40 per file; 200 records make 5 files' worth.
        let items: Vec<Item> = (1..=200).map(rec).collect();
        for chunk in items.chunks(7) {
            sink.deliver(chunk).unwrap();
        }
        // The current file and 3 old ones; the oldest were removed.
        assert!(!numbered(&path, 4).exists());
        let mut seqs = Vec::new();
        for p in [
            numbered(&path, 3),
            numbered(&path, 2),
            numbered(&path, 1),
            path.clone(),
        ] {
            let meta = std::fs::metadata(&p).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", p.display());
            assert!(meta.len() <= 4096, "{}: {}", p.display(), meta.len());
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.ends_with('\n'));
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                seqs.push(v["seq"].as_u64().unwrap());
            }
        }
        // Complete and in order, from the oldest file kept to the end.
        let first = seqs[0];
        assert_eq!(seqs, (first..=200).collect::<Vec<_>>());
        assert!(first > 1, "the oldest files were removed");
        // Each full file is as full as maxBytes allows: the next line would not fit.
        let line_len = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .len()
            + 1;
        for n in 1..=3 {
            let len =
                usize::try_from(std::fs::metadata(numbered(&path, n)).unwrap().len()).unwrap();
            assert!(len + line_len > 4096, "file .{n} rotated early: {len}");
        }
    }

    #[test]
    fn a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        let path = dir.path().join("out.jsonl");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let mut sink = FileSink::new(
            FileOptions {
                path,
                max_bytes: 4096,
                keep: 1,
            },
            Format::Spawn,
        );
        assert!(sink.deliver(&[rec(1)]).is_err());
        assert!(!target.exists());
    }
}

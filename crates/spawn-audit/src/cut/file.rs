//! Retention in the log file itself: the records up to a signed cut are punched out of the
//! file in place.
//!
//! The log file is appended by many processes, some holding it open for a run's whole
//! life (the egress proxies, handed its descriptor), so it is never replaced or rewritten:
//! the bytes of the records cut are given back to the file system as a hole
//! (`fallocate(PUNCH_HOLE | KEEP_SIZE)`). Offsets and descriptors stay valid; the file
//! keeps its size and reads as NUL bytes up to the first record kept. The newline that
//! ended the last record cut is kept, so that the first record kept still starts a line:
//!
//! ```text
//! before:  {"seq":1,…}\n{"seq":2,…}\n{"seq":3,…}\n      cut at seq 2
//! after:   \0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\n{"seq":3,…}\n
//! ```
//!
//! A record is never written with a NUL byte (JSON escapes it), so a NUL where a line
//! starts is the cut's hole: [`records_start`] finds where it ends.
//!
//! Readers and the cut exclude each other by a lock of their own (an open file description
//! lock, `F_OFD_SETLK`, on the log file: apart from the writers' `flock`, so appends never
//! wait on a reader): a reader takes it shared ([`hold_for_reading`]) and holds it as long
//! as its descriptor is open, so that what it reads is never punched under it; the cut
//! takes it exclusive for the punch only, and gives up ([`FileCut::Busy`]) rather than
//! wait long for readers. The writers read the log's last record to chain the next, so
//! the cut never takes the last record: it waits for one more ([`FileCut::NotYet`]).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, FcntlArg};
use nix::unistd::Whence;

use super::Cut;
use crate::error::AuditError;

/// What [`cut_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCut {
    /// The records up to `seq` were punched out: `bytes` bytes of the file are a hole.
    Cut { seq: u64, bytes: u64 },
    /// The file holds no record up to the cut any more (it was cut there, or further).
    Already,
    /// The cut's last record is the file's last: the writers chain the next record from
    /// it, so it stays until one more is written.
    NotYet,
    /// Readers held the file all the while the cut waited: nothing was cut.
    Busy,
}

/// How often, and how long apart, the cut tries to take the lock from readers.
const LOCK_TRIES: u32 = 50;
const LOCK_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Takes the readers' lock on `file` (shared; waits while a cut punches): it is held until
/// every descriptor of this open file is closed. `file` must be open for reading.
pub fn hold_for_reading(file: &File) -> io::Result<()> {
    ofd_lock(file, libc::F_RDLCK, true).map(drop)
}

/// The readers' lock on a file held for a while ([`reading`]): released when dropped, for
/// readers that keep the file open between reads.
#[derive(Debug)]
pub struct Reading<'a> {
    file: &'a File,
}

/// Takes the readers' lock on `file` until the answer is dropped.
pub fn reading(file: &File) -> io::Result<Reading<'_>> {
    ofd_lock(file, libc::F_RDLCK, true)?;
    Ok(Reading { file })
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        // Unlocking cannot fail on a valid descriptor; if it somehow did, the lock is
        // released when the file is closed.
        let _ = ofd_lock(self.file, libc::F_UNLCK, false);
    }
}

/// An open file description lock over the whole file: `kind` `F_RDLCK`, `F_WRLCK` or
/// `F_UNLCK`;
/// `false` when `wait` is not set and another description holds a conflicting one.
// `F_RDLCK`, `F_WRLCK`, `F_UNLCK` and `SEEK_SET` are 0, 1, 2 and 0: the kernel's `short` fields hold them.
#[allow(clippy::cast_possible_truncation)]
fn ofd_lock(file: &File, kind: libc::c_int, wait: bool) -> io::Result<bool> {
    let lock = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        // Must be 0 for open file description locks.
        l_pid: 0,
    };
    loop {
        let arg = if wait {
            FcntlArg::F_OFD_SETLKW(&lock)
        } else {
            FcntlArg::F_OFD_SETLK(&lock)
        };
        match nix::fcntl::fcntl(file, arg) {
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN | Errno::EACCES) if !wait => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Where the records of the log `file` go on from `from`: `from` itself unless a cut's
/// hole starts there, else the offset after the hole (and the newline it kept). Moves the
/// file's offset.
pub fn records_start(file: &File, from: u64) -> io::Result<u64> {
    let mut byte = [0u8; 1];
    if file.read_at(&mut byte, from)? == 0 || byte[0] != 0 {
        return Ok(from);
    }
    // Skip what the file system knows to be a hole, then the zeroed part of its last block.
    let mut at = match nix::unistd::lseek(file, to_off(from)?, Whence::SeekData) {
        Ok(data) => u64::try_from(data).unwrap_or(from).max(from),
        // Nothing but hole up to the end.
        Err(Errno::ENXIO) => return Ok(file.metadata()?.len()),
        // A file system that does not say where holes are: read through them.
        Err(Errno::EINVAL | Errno::EOPNOTSUPP) => from,
        Err(e) => return Err(e.into()),
    };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            return Ok(at);
        }
        if let Some(i) = buf[..n].iter().position(|b| *b != 0) {
            at += i as u64;
            break;
        }
        at += n as u64;
    }
    if file.read_at(&mut byte, at)? == 1 && byte[0] == b'\n' {
        at += 1;
    }
    Ok(at)
}

fn to_off(n: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Punches the records up to `cut` (those with a seq at or below its size) out of the log
/// file at `path`, which must go on exactly after it: its record `N + 1`'s `prevHash` is
/// the cut's anchor. Records before `N + 1` are not read for the cut's sake (the cut was
/// signed over a verified copy); a file whose record `N + 1` does not follow the cut is
/// refused. Durable (`fdatasync`) before it returns. Idempotent: a cut left half done by
/// a crash is finished by the next call.
pub fn cut_file(path: &Path, cut: &Cut) -> Result<FileCut, AuditError> {
    let file = crate::log::open_for_cut(path)?;
    let read_err = |source| AuditError::Read {
        path: path.to_owned(),
        source,
    };
    let n = cut.checkpoint.size;
    let start = records_start(&file, 0).map_err(read_err)?;
    let Some(next) = find_next(&file, start, n, &cut.anchor, path)? else {
        return Ok(FileCut::NotYet);
    };
    let keep = match next {
        Next::Found(offset) => offset,
        Next::Beyond => return Ok(FileCut::Already),
    };
    // The newline before `keep` stays: the hole ends before it.
    let hole = keep.saturating_sub(1);
    if keep <= start || hole == 0 {
        return Ok(FileCut::Already);
    }
    let mut held = false;
    for _ in 0..LOCK_TRIES {
        if ofd_lock(&file, libc::F_WRLCK, false).map_err(|source| AuditError::Lock {
            path: path.to_owned(),
            source,
        })? {
            held = true;
            break;
        }
        std::thread::sleep(LOCK_PAUSE);
    }
    if !held {
        return Ok(FileCut::Busy);
    }
    let write_err = |source| AuditError::Write {
        path: path.to_owned(),
        source,
    };
    nix::fcntl::fallocate(
        &file,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        0,
        to_off(hole).map_err(write_err)?,
    )
    .map_err(|e| write_err(e.into()))?;
    file.sync_data().map_err(|source| AuditError::Sync {
        path: path.to_owned(),
        source,
    })?;
    // Closing the file releases the lock.
    Ok(FileCut::Cut {
        seq: n,
        bytes: hole,
    })
}

/// Where record `n + 1` is, looked for from `start`.
enum Next {
    /// It starts at this offset.
    Found(u64),
    /// The file's records start after it: it was cut there or further.
    Beyond,
}

/// Finds record `n + 1` of the file from `start` (`None` when the file holds none yet):
/// lines that are not records (left by a crash, or by a cut half done) are passed over.
fn find_next(
    file: &File,
    start: u64,
    n: u64,
    anchor: &str,
    path: &Path,
) -> Result<Option<Next>, AuditError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        seq: u64,
        #[serde(default)]
        prev_hash: Option<String>,
    }
    let read_err = |source| AuditError::Read {
        path: path.to_owned(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader.seek(SeekFrom::Start(start)).map_err(read_err)?;
    let mut at = start;
    let mut line = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        let len = reader.read_until(b'\n', &mut line).map_err(read_err)?;
        if len == 0 || line.last() != Some(&b'\n') {
            // The end, or a line still being written.
            return Ok(None);
        }
        let probe = if line.contains(&0) {
            None
        } else {
            serde_json::from_slice::<Probe>(&line).ok()
        };
        if let Some(p) = probe {
            if p.seq > n + 1 && first {
                return Ok(Some(Next::Beyond));
            }
            if p.seq == n + 1 {
                if p.prev_hash.as_deref() != Some(anchor) {
                    return Err(AuditError::Checkpoint(format!(
                        "{}: its record {} does not follow the cut at seq {n} (another prevHash): the file is not the log the cut was signed over; nothing was cut",
                        path.display(),
                        n + 1
                    )));
                }
                return Ok(Some(Next::Found(at)));
            }
            if p.seq > n + 1 {
                return Err(AuditError::Checkpoint(format!(
                    "{}: record {} is missing (seq {} follows a lower one): nothing was cut",
                    path.display(),
                    n + 1,
                    p.seq
                )));
            }
            first = false;
        }
        at += len as u64;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;

    use super::super::tests::hash_of;
    use super::*;
    use crate::checkpoint::{self, leaf_of, Frontier, SigningKey};
    use crate::{AuditLog, Event};

    /// The cut's tests' event, padded to a few hundred bytes.
    fn event(i: usize) -> Event {
        let mut e = super::super::tests::event(i);
        e.details
            .insert("pad".into(), "p".repeat(200 + i % 50).into());
        e
    }

    fn append(log: &mut AuditLog, from: usize, n: usize) {
        log.append(&(from..from + n).map(event).collect::<Vec<_>>())
            .unwrap();
        log.sync().unwrap();
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn leaves(lines: &[String]) -> Vec<crate::merkle::Hash> {
        lines
            .iter()
            .map(|l| leaf_of(&hash_of(l)).unwrap())
            .collect()
    }

    /// A log of `n` records in a directory of its own, its path and lines, and a key.
    struct Fixture {
        dir: tempfile::TempDir,
        key: SigningKey,
        log: AuditLog,
        path: std::path::PathBuf,
        before: Vec<String>,
    }

    fn fixture(n: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate("spawn.audit/t").unwrap();
        let mut log = AuditLog::open(dir.path()).unwrap();
        let path = log.path().to_owned();
        append(&mut log, 0, n);
        let before = lines(&path);
        Fixture {
            dir,
            key,
            log,
            path,
            before,
        }
    }

    /// The signed cut of the log whose lines are `lines` at seq `n`, kept beside it.
    fn cut_at(dir: &Path, key: &SigningKey, lines: &[String], n: usize) -> Cut {
        let mut tree = Frontier::default();
        for leaf in leaves(&lines[..n]) {
            tree.push(leaf);
        }
        let cut = Cut::new(key.name(), &hash_of(&lines[n - 1]), tree).unwrap();
        super::super::keep(dir, key, &cut).unwrap();
        cut
    }

    fn read_snapshot(path: &Path) -> String {
        let (file, len) = crate::snapshot(path).unwrap();
        let mut s = String::new();
        file.take(len).read_to_string(&mut s).unwrap();
        s
    }

    fn verify(dir: &Path, key: &SigningKey) -> crate::chain::Verified {
        let notes = checkpoint::notes(dir).unwrap();
        let cuts = super::super::cuts_in(&key.verifier(), &notes);
        let opened: Vec<_> = notes
            .iter()
            .map(|(p, n)| (p.clone(), key.verifier().open(n)))
            .collect();
        let (file, len) = crate::snapshot(&dir.join(crate::LOG_FILE_NAME)).unwrap();
        super::super::verify_log(std::io::BufReader::new(file.take(len)), &opened, &cuts).unwrap()
    }

    /// For cuts anywhere in a log: the records up to the cut are zeros on disk (the file's
    /// size and offsets kept); every reader starts at the first record kept; the log
    /// verifies against its checkpoints and cut; the writers chain on; checkpoints signed
    /// after it and inclusion proofs from it are those of the whole log; a record cut has
    /// no proof; a second cut at the same seq does nothing.
    #[test]
    fn a_cut_file_reads_verifies_chains_signs_and_proves_as_the_whole_log() {
        for n in [1usize, 2, 3, 7, 16, 31, 39] {
            let Fixture {
                dir,
                key,
                mut log,
                path,
                before,
            } = fixture(40);
            let size = std::fs::metadata(&path).unwrap().len();
            assert!(matches!(
                checkpoint::sign_log(&path, &key).unwrap(),
                checkpoint::Signed::Kept { size: 40, .. }
            ));
            let cut = cut_at(dir.path(), &key, &before, n);
            let kept_from: u64 = before[..n].iter().map(|l| l.len() as u64 + 1).sum();

            assert_eq!(
                cut_file(&path, &cut).unwrap(),
                FileCut::Cut {
                    seq: n as u64,
                    bytes: kept_from - 1
                },
                "n={n}"
            );
            let raw = std::fs::read(&path).unwrap();
            assert_eq!(raw.len() as u64, size, "the file keeps its size");
            let hole = usize::try_from(kept_from).unwrap() - 1;
            assert!(raw[..hole].iter().all(|b| *b == 0), "n={n}");
            assert_eq!(raw[hole], b'\n');
            assert_eq!(
                &raw[hole + 1..],
                before[n..]
                    .iter()
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
                    .as_bytes()
            );

            // Readers.
            let text = read_snapshot(&path);
            assert_eq!(
                text.lines().collect::<Vec<_>>(),
                before[n..].iter().map(String::as_str).collect::<Vec<_>>()
            );
            let seqs: Vec<u64> = crate::read_records(&path)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect();
            assert_eq!(seqs, ((n as u64 + 1)..=40).collect::<Vec<_>>());
            assert_eq!(crate::last_seq(&path).unwrap(), 40);
            let v = verify(dir.path(), &key);
            assert!(v.broken.is_none(), "n={n}: {v:?}");
            assert_eq!(v.first_seq, Some(n as u64 + 1));

            // Writers chain on; a checkpoint after the cut is the whole log's.
            append(&mut log, 40, 5);
            let now = lines(&path);
            let after: Vec<String> = before
                .iter()
                .cloned()
                .chain(now[now.len() - 5..].iter().cloned())
                .collect();
            assert_eq!(after.len(), 45);
            let checkpoint::Signed::Kept { note, .. } = checkpoint::sign_log(&path, &key).unwrap()
            else {
                panic!("n={n}: no checkpoint signed after the cut");
            };
            let c = key.verifier().open(&note).unwrap();
            let all = leaves(&after);
            assert_eq!((c.size, c.root), (45, crate::merkle::root(&all)), "n={n}");
            let v = verify(dir.path(), &key);
            assert!(v.broken.is_none(), "n={n}: {v:?}");

            // Proofs of the records kept are the whole tree's; records cut have none.
            let cuts = vec![cut.clone()];
            for seq in 1..=46u64 {
                let (file, len) = crate::snapshot(&path).unwrap();
                let got =
                    checkpoint::prove(std::io::BufReader::new(file.take(len)), &c, seq, &cuts);
                if seq <= n as u64 {
                    assert!(
                        got.unwrap_err().contains("deleted by retention"),
                        "n={n} seq={seq}"
                    );
                } else if seq > 45 {
                    assert!(got.is_err());
                } else {
                    let got = got.unwrap();
                    let i = usize::try_from(seq - 1).unwrap();
                    assert_eq!(got.proof, crate::merkle::inclusion_proof(&all, i).unwrap());
                    assert!(crate::merkle::verify_inclusion(
                        &all[i],
                        seq - 1,
                        45,
                        &got.proof,
                        &c.root
                    ));
                }
            }
            // Without the cut, the log cut cannot be proven from.
            let (file, len) = crate::snapshot(&path).unwrap();
            assert!(
                checkpoint::prove(std::io::BufReader::new(file.take(len)), &c, 45, &[])
                    .unwrap_err()
                    .contains("no signed cut")
            );

            assert_eq!(cut_file(&path, &cut).unwrap(), FileCut::Already, "n={n}");
        }
    }

    /// The space of what is cut goes back to the file system.
    #[test]
    fn a_cut_gives_the_space_back() {
        let Fixture {
            dir,
            key,
            log: _,
            path,
            before,
        } = fixture(3000);
        let blocks = std::fs::metadata(&path).unwrap().blocks();
        let cut = cut_at(dir.path(), &key, &before, 2900);
        assert!(matches!(
            cut_file(&path, &cut).unwrap(),
            FileCut::Cut { seq: 2900, .. }
        ));
        let now = std::fs::metadata(&path).unwrap().blocks();
        // 100 records of ~400 bytes are left: a few dozen 512-byte blocks at most.
        assert!(
            now * 10 < blocks,
            "{blocks} blocks before the cut, {now} after"
        );
        assert_eq!(read_snapshot(&path).lines().count(), 100);
    }

    /// The writers chain the next record from the last: a cut at the last record waits
    /// for one more, and then cuts.
    #[test]
    fn the_last_record_is_never_cut() {
        let Fixture {
            dir,
            key,
            log: _,
            path,
            before,
        } = fixture(4);
        let cut = cut_at(dir.path(), &key, &before, 4);
        let raw = std::fs::read(&path).unwrap();
        assert_eq!(cut_file(&path, &cut).unwrap(), FileCut::NotYet);
        assert_eq!(std::fs::read(&path).unwrap(), raw);
        // A line still being written (no newline yet) is not a record to keep either.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all_at_end(b"{\"seq\":5");
        assert_eq!(cut_file(&path, &cut).unwrap(), FileCut::NotYet);
        let dir2 = tempfile::tempdir().unwrap();
        let mut log = AuditLog::open(dir2.path()).unwrap();
        append(&mut log, 0, 4);
        let path = log.path().to_owned();
        let before = lines(&path);
        let cut = cut_at(dir2.path(), &key, &before, 4);
        append(&mut log, 4, 1);
        assert!(matches!(
            cut_file(&path, &cut).unwrap(),
            FileCut::Cut { seq: 4, .. }
        ));
        assert_eq!(crate::last_seq(&path).unwrap(), 5);
        append(&mut log, 5, 1);
        assert_eq!(
            crate::read_records(&path)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            vec![5, 6]
        );
    }

    trait AppendAll {
        fn write_all_at_end(self, b: &[u8]);
    }
    impl AppendAll for File {
        fn write_all_at_end(mut self, b: &[u8]) {
            std::io::Write::write_all(&mut self, b).unwrap();
        }
    }

    /// A cut that the file does not continue (another log's, a changed record after it, a
    /// record missing) is refused, and the file is left as it was.
    #[test]
    fn a_file_the_cut_was_not_signed_over_is_left_alone() {
        let Fixture {
            dir,
            key,
            log: _,
            path,
            before,
        } = fixture(10);
        let raw = std::fs::read(&path).unwrap();
        let other = tempfile::tempdir().unwrap();
        let mut olog = AuditLog::open(other.path()).unwrap();
        // Other events: the same ones, written within the same millisecond, would make a
        // byte-identical log whose cut this file does follow.
        append(&mut olog, 100, 10);
        let olines = lines(olog.path());
        let foreign = cut_at(other.path(), &key, &olines, 5);
        let err = cut_file(&path, &foreign).unwrap_err().to_string();
        assert!(err.contains("does not follow the cut at seq 5"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), raw);
        // Record 6 gone: refused.
        let cut = cut_at(dir.path(), &key, &before, 5);
        let without: String = before
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 5)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        std::fs::write(&path, &without).unwrap();
        let err = cut_file(&path, &cut).unwrap_err().to_string();
        assert!(err.contains("record 6 is missing"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), without);
        // A symlink in the log's place is refused as the writers refuse it.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(other.path().join(crate::LOG_FILE_NAME), &path).unwrap();
        assert!(matches!(
            cut_file(&path, &cut),
            Err(AuditError::Symlink { .. })
        ));
    }

    /// A reader's snapshot holds the cut off while it is open (what it reads is never
    /// punched under it); once it is closed the cut goes through.
    #[test]
    fn an_open_reader_holds_the_cut_off() {
        let Fixture {
            dir,
            key,
            log: _,
            path,
            before,
        } = fixture(10);
        let cut = cut_at(dir.path(), &key, &before, 5);
        let (reader, len) = crate::snapshot(&path).unwrap();
        assert_eq!(cut_file(&path, &cut).unwrap(), FileCut::Busy);
        let mut text = String::new();
        (&reader).take(len).read_to_string(&mut text).unwrap();
        assert_eq!(
            text.lines().count(),
            10,
            "the reader reads the whole log it opened"
        );
        drop(reader);
        // A reader that keeps its file open holds it off only while it reads.
        let kept = File::open(&path).unwrap();
        let held = reading(&kept).unwrap();
        assert_eq!(cut_file(&path, &cut).unwrap(), FileCut::Busy);
        drop(held);
        assert!(matches!(
            cut_file(&path, &cut).unwrap(),
            FileCut::Cut { seq: 5, .. }
        ));
        let _held = reading(&kept).unwrap();
        assert_eq!(
            records_start(&kept, 0).unwrap(),
            before[..5].iter().map(|l| l.len() as u64 + 1).sum::<u64>()
        );
    }

    /// A cut that a crash left half done (some of its blocks punched, others not) is
    /// finished by the next.
    #[test]
    fn a_cut_half_done_is_finished_by_the_next() {
        for (at, len) in [(4096, 8192), (0, 4096), (20000, 3000), (0, 30000)] {
            let Fixture {
                dir,
                key,
                log: _,
                path,
                before,
            } = fixture(200);
            let cut = cut_at(dir.path(), &key, &before, 150);
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            nix::fcntl::fallocate(
                &file,
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                at,
                len,
            )
            .unwrap();
            assert!(
                verify(dir.path(), &key).broken.is_some(),
                "{at}+{len}: a cut half done does not verify"
            );
            assert!(
                matches!(
                    cut_file(&path, &cut).unwrap(),
                    FileCut::Cut { seq: 150, .. }
                ),
                "{at}+{len}"
            );
            assert!(verify(dir.path(), &key).broken.is_none(), "{at}+{len}");
            assert_eq!(read_snapshot(&path).lines().count(), 50);
        }
    }

    /// Where the records go on, for every shape of a file's start: with no hole, a hole
    /// with and without the newline kept, a hole to the end, from inside the hole, from
    /// the end and beyond.
    #[test]
    fn records_start_past_every_shape_of_hole() {
        let zeros = |n: usize| vec![0u8; n];
        let cat = |parts: &[&[u8]]| parts.concat();
        let rec = b"{\"seq\":9}\n".as_slice();
        let cases: Vec<(Vec<u8>, u64, u64)> = vec![
            (Vec::new(), 0, 0),
            (rec.to_vec(), 0, 0),
            (rec.to_vec(), 3, 3),
            (cat(&[&zeros(1), b"\n", rec]), 0, 2),
            (cat(&[&zeros(100), b"\n", rec]), 0, 101),
            (cat(&[&zeros(100), b"\n", rec]), 50, 101),
            (cat(&[&zeros(100), rec]), 0, 100),
            (cat(&[&zeros(70_000), b"\n", rec]), 0, 70_001),
            (cat(&[&zeros(70_000), b"\n", rec]), 69_999, 70_001),
            (cat(&[&zeros(9000), b"\n", rec]), 9001, 9001),
            (zeros(5000), 0, 5000),
            (cat(&[&zeros(5000), b"\n"]), 0, 5001),
            (cat(&[&zeros(10), b"\n", rec]), 500, 500),
        ];
        for (bytes, from, want) in cases {
            let mut f = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut f, &bytes).unwrap();
            // A real hole too, where the file is long enough.
            if bytes.len() > 8192 && bytes[..4096].iter().all(|b| *b == 0) {
                nix::fcntl::fallocate(
                    &f,
                    FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                    0,
                    4096,
                )
                .unwrap();
            }
            assert_eq!(
                records_start(&f, from).unwrap(),
                want,
                "{} bytes from {from}",
                bytes.len()
            );
        }
    }
}

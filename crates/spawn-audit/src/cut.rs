//! Retention's cut: the records of a log up to some seq are deleted, and a signed note says
//! so — with what a verifier needs to go on without them.
//!
//! A cut at `N` is a checkpoint of the log at size `N` (so any `tlog-checkpoint` reader
//! takes it as one) whose body goes on with extension lines:
//!
//! ```text
//! spawn.audit/log_…            origin
//! 1200                         N
//! <base64 tree head>           the head of the tree of records 1..N
//! cut sha256:<64 hex>          record N's hash: record N+1's prevHash
//! frontier 1024 <base64>       the heads of the tree's complete subtrees, largest first
//! frontier 128 <base64>
//! frontier 32 <base64>
//! frontier 16 <base64>
//! ```
//!
//! signed with the log's checkpoint key. The frontier's heads must make the tree head: a
//! verifier starts the chain at record N+1 anchored at the cut's hash, goes on with the
//! tree from the frontier, and checks every later checkpoint as before. Deleting the
//! newest records still shows (the later checkpoints hold more), and a cut cannot be made
//! up without the key: a log whose first records are gone without one does not verify.

mod file;

pub use file::{cut_file, hold_for_reading, reading, records_start, FileCut, Reading};

use std::io::BufRead;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::chain::{Broken, Verified};
use crate::checkpoint::{leaf_of, Checkpoint, Frontier, Opened, SigningKey, VerifierKey};
use crate::error::AuditError;
use crate::merkle::Hash;

/// A signed cut: records `1..=checkpoint.size` are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The log at the cut: origin, size `N`, tree head.
    pub checkpoint: Checkpoint,
    /// Record N's hash (`sha256:…`).
    pub anchor: String,
    /// The tree over records 1..N.
    pub frontier: Frontier,
}

impl Cut {
    /// The cut of the log `origin` after the record whose hash is `anchor`, the tree over
    /// records 1..N being `frontier`.
    pub fn new(origin: &str, anchor: &str, frontier: Frontier) -> Result<Cut, AuditError> {
        if leaf_of(anchor).is_none() {
            return Err(AuditError::Checkpoint(format!(
                "a cut's anchor must be a record hash, not {anchor:?}"
            )));
        }
        Ok(Cut {
            checkpoint: Checkpoint {
                origin: origin.to_owned(),
                size: frontier.size(),
                root: frontier.root(),
            },
            anchor: anchor.to_owned(),
            frontier,
        })
    }

    /// The note's body: the checkpoint's lines, then the cut's.
    pub fn body(&self) -> String {
        let mut body = self.checkpoint.body();
        body.push_str(&format!("cut {}\n", self.anchor));
        for (n, head) in self.frontier.nodes() {
            body.push_str(&format!("frontier {n} {}\n", B64.encode(head)));
        }
        body
    }

    /// The signed note of the cut.
    pub fn sign(&self, key: &SigningKey) -> String {
        key.sign_body(&self.body())
    }

    /// The cut in `note`, if `key` signed it and it is one (a checkpoint whose extension
    /// lines are a cut's, its frontier making its tree head).
    pub fn open(key: &VerifierKey, note: &str) -> Result<Cut, AuditError> {
        let body = key.open_body(note)?;
        let bad = |why: &str| AuditError::Checkpoint(format!("not a valid cut: {why}"));
        let checkpoint = Checkpoint::parse(&body)?;
        let mut lines = body.lines().skip(3);
        let anchor = lines
            .next()
            .and_then(|l| l.strip_prefix("cut "))
            .ok_or_else(|| bad("no cut line"))?;
        if leaf_of(anchor).is_none() {
            return Err(bad("its anchor is not a record hash"));
        }
        let mut nodes = Vec::new();
        for line in lines {
            let (n, head) = line
                .strip_prefix("frontier ")
                .and_then(|r| r.split_once(' '))
                .ok_or_else(|| bad("a line that is not a frontier line"))?;
            let n: u64 = (n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0'))
                .then(|| n.parse().ok())
                .flatten()
                .ok_or_else(|| bad("a frontier size that is not a number"))?;
            let head: Hash = B64
                .decode(head)
                .ok()
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| bad("a frontier head that is not 32 bytes of base64"))?;
            nodes.push((n, head));
        }
        let frontier =
            Frontier::from_nodes(nodes).ok_or_else(|| bad("its frontier is not a tree's"))?;
        if frontier.size() != checkpoint.size || frontier.root() != checkpoint.root {
            return Err(bad("its frontier does not make its tree head"));
        }
        if checkpoint.size == 0 {
            return Err(bad("it cuts nothing"));
        }
        Ok(Cut {
            checkpoint,
            anchor: anchor.to_owned(),
            frontier,
        })
    }
}

/// Signs `cut` with `key` and keeps the note beside the log's checkpoints in `log_dir`
/// (`checkpoints/<N>.cut.note`: a checkpoint too, for readers of checkpoints).
pub fn keep(log_dir: &std::path::Path, key: &SigningKey, cut: &Cut) -> Result<String, AuditError> {
    let note = cut.sign(key);
    crate::checkpoint::write_note(
        log_dir,
        &format!("{:020}.cut.note", cut.checkpoint.size),
        &note,
    )?;
    Ok(note)
}

/// The cuts among `notes` (file, text) that `key` signed; other notes are passed over.
pub fn cuts_in(key: &VerifierKey, notes: &[(std::path::PathBuf, String)]) -> Vec<Cut> {
    notes
        .iter()
        .filter_map(|(_, text)| Cut::open(key, text).ok())
        .collect()
}

/// [`crate::checkpoint::verify_log`] for a log that may have been cut: when its first
/// record is not seq 1, it must follow one of `cuts` exactly (seq N+1, `prevHash` the cut's
/// anchor); the tree then goes on from the cut's frontier, and the checkpoints at or after
/// the cut are checked as before (those before it cannot be, and are passed over).
pub fn verify_log(
    input: impl BufRead,
    notes: &[Opened],
    cuts: &[Cut],
) -> std::io::Result<Verified> {
    verify_log_tree(input, notes, cuts).map(|(v, _)| v)
}

/// [`verify_log`], with the tree over the records it read (from the cut's frontier on).
pub(crate) fn verify_log_tree(
    mut input: impl BufRead,
    notes: &[Opened],
    cuts: &[Cut],
) -> std::io::Result<(Verified, Frontier)> {
    let first = first_seq(&mut input)?;
    let cut = first
        .filter(|s| *s > 1)
        .and_then(|s| cuts.iter().find(|c| c.checkpoint.size == s - 1));
    let Some(cut) = cut else {
        return crate::checkpoint::verify_log_tree(input, true, notes);
    };
    let n = cut.checkpoint.size;
    let sizes: std::collections::BTreeSet<u64> = notes
        .iter()
        .filter_map(|(_, c)| c.as_ref().ok().map(|c| c.size))
        .filter(|s| *s > n)
        .collect();
    let mut tree = cut.frontier.clone();
    let mut heads = std::collections::BTreeMap::new();
    let mut v = crate::chain::verify_with(input, false, |_, hash| {
        if let Some(leaf) = leaf_of(hash) {
            tree.push(leaf);
            if sizes.contains(&tree.size()) {
                heads.insert(tree.size(), tree.root());
            }
        }
    })?;
    if v.broken.is_some() {
        return Ok((v, tree));
    }
    if v.anchor.as_deref() != Some(cut.anchor.as_str()) {
        v.broken = Some(Broken {
            seq: n + 1,
            line: 1,
            reason: format!(
                "its prevHash is not the hash the cut at seq {n} signed: the records after the cut were changed"
            ),
        });
        return Ok((v, tree));
    }
    let records = n + v.records;
    // The checkpoints after the cut, each against the heads from the frontier on; a note
    // that does not open (a bad signature, a forged or damaged file) is reported as in a
    // log that was never cut: its size is not known, so it is not known to be before it.
    v.broken = notes.iter().find_map(|(file, opened)| {
        if opened.as_ref().is_ok_and(|c| c.size <= n) {
            return None;
        }
        crate::checkpoint::against(file, opened, &heads, records)
    });
    Ok((v, tree))
}

/// The seq of the first record in `input`, without consuming it (lines that are not
/// records before it are left too).
pub(crate) fn first_seq(input: &mut impl BufRead) -> std::io::Result<Option<u64>> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    let buf = input.fill_buf()?;
    let line = buf.split(|b| *b == b'\n').find(|l| !l.is_empty());
    Ok(line.and_then(|l| serde_json::from_slice::<Seq>(l).ok().map(|s| s.seq)))
}

#[cfg(test)]
mod fuzz_property {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate as spawn_audit;

    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/audit_cut.rs"
    ));
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/kept.rs"
    ));

    /// Every input the `audit_cut` fuzz target ever failed on or was given to hold
    /// (fuzz/regressions/audit_cut/) keeps the target's property.
    #[test]
    fn fuzz_regressions_keep_the_audit_cut_property() {
        check_kept(env!("CARGO_MANIFEST_DIR"), "audit_cut", check);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::{AuditLog, Event, EventType, Outcome, Principal, Resource};

    /// Record `i`'s event (the file cut's tests too).
    pub(super) fn event(i: usize) -> Event {
        Event::new(
            EventType::AgentStart,
            Principal {
                kind: "agent".into(),
                id: format!("ag_{i}"),
                name: None,
            },
            Resource {
                kind: "run".into(),
                name: "r".into(),
            },
            "start",
            Outcome::Success,
        )
    }

    /// A log of `n` records; its lines.
    fn log(n: usize) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::open(dir.path()).unwrap();
        log.append(&(0..n).map(event).collect::<Vec<_>>()).unwrap();
        std::fs::read_to_string(log.path())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub(super) fn hash_of(line: &str) -> String {
        serde_json::from_str::<serde_json::Value>(line).unwrap()["hash"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn tree(lines: &[String]) -> Frontier {
        let mut f = Frontier::default();
        for l in lines {
            f.push(leaf_of(&hash_of(l)).unwrap());
        }
        f
    }

    fn signed(key: &SigningKey, lines: &[String], size: usize) -> Opened {
        let f = tree(&lines[..size]);
        let note = key.sign(&Checkpoint {
            origin: key.name().into(),
            size: size as u64,
            root: f.root(),
        });
        (format!("{size}.note").into(), key.verifier().open(&note))
    }

    fn text(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn a_cut_log_verifies_and_every_tamper_around_the_cut_is_named() {
        let key = SigningKey::generate("spawn.audit/t").unwrap();
        let lines = log(40);
        for n in [1usize, 2, 3, 7, 16, 17, 31, 39] {
            let cut = Cut::new(key.name(), &hash_of(&lines[n - 1]), tree(&lines[..n])).unwrap();
            let note = cut.sign(&key);
            let opened = Cut::open(&key.verifier(), &note).unwrap();
            assert_eq!(opened, cut);
            // The cut is a checkpoint too, for any reader of checkpoints.
            assert_eq!(key.verifier().open(&note).unwrap(), cut.checkpoint);
            let notes = vec![signed(&key, &lines, 5), signed(&key, &lines, 40)];
            let rest = &lines[n..];
            let v =
                verify_log(text(rest).as_bytes(), &notes, std::slice::from_ref(&opened)).unwrap();
            assert!(v.broken.is_none(), "n={n}: {v:?}");
            assert_eq!(v.records, (40 - n) as u64);
            // Without the cut, the log is one whose first records were removed.
            let v = verify_log(text(rest).as_bytes(), &notes, &[]).unwrap();
            assert!(v.broken.unwrap().reason.contains("not 1"), "n={n}");
            // The newest records deleted: the checkpoint after the cut shows it.
            if rest.len() > 2 {
                let v = verify_log(
                    text(&rest[..rest.len() - 2]).as_bytes(),
                    &notes,
                    std::slice::from_ref(&opened),
                )
                .unwrap();
                assert!(v.broken.unwrap().reason.contains("were removed"), "n={n}");
            }
            // One more record deleted than the cut covers: no cut matches.
            if rest.len() > 1 {
                let v = verify_log(
                    text(&rest[1..]).as_bytes(),
                    &notes,
                    std::slice::from_ref(&opened),
                )
                .unwrap();
                assert!(v.broken.is_some(), "n={n}");
            }
            // A note that does not open is named after a cut as in a log never cut
            // (its size is not known, so it is not known to be before the cut).
            let other = SigningKey::generate("spawn.audit/t").unwrap();
            let forged = other.sign(&Checkpoint {
                origin: key.name().into(),
                size: 3,
                root: tree(&lines[..3]).root(),
            });
            for bad in [forged.as_str(), "", "not a note\n"] {
                let mut notes = vec![signed(&key, &lines, 5), signed(&key, &lines, 40)];
                notes.push(("3.note".into(), key.verifier().open(bad)));
                let whole = verify_log(text(&lines).as_bytes(), &notes, &[]).unwrap();
                let after =
                    verify_log(text(rest).as_bytes(), &notes, std::slice::from_ref(&opened))
                        .unwrap();
                for v in [whole, after] {
                    let broken = v.broken.unwrap_or_else(|| panic!("n={n}: {bad:?} passed"));
                    assert!(
                        broken.reason.starts_with("checkpoint 3.note: "),
                        "{broken:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_cut_cannot_be_made_up_or_bent() {
        let key = SigningKey::generate("spawn.audit/t").unwrap();
        let other = SigningKey::generate("spawn.audit/t").unwrap();
        let lines = log(20);
        let cut = Cut::new(key.name(), &hash_of(&lines[9]), tree(&lines[..10])).unwrap();
        let note = cut.sign(&key);
        // Signed by another key: refused.
        assert!(Cut::open(&key.verifier(), &cut.sign(&other)).is_err());
        // Any line of the body changed: the signature fails.
        let body = cut.body();
        for (i, line) in body.lines().enumerate() {
            let changed = note.replacen(line, &format!("{line}x"), 1);
            assert!(Cut::open(&key.verifier(), &changed).is_err(), "line {i}");
        }
        // Signed, but not a cut's shape: each refused.
        let f = tree(&lines[..10]);
        let head = B64.encode(f.root());
        let bodies = [
            format!("spawn.audit/t\n10\n{head}\n"),
            format!("spawn.audit/t\n10\n{head}\ncut nothex\n"),
            format!(
                "spawn.audit/t\n10\n{head}\ncut {}\nfrontier 3 {head}\n",
                hash_of(&lines[9])
            ),
            format!(
                "spawn.audit/t\n10\n{head}\ncut {}\nfrontier 8 {head}\n",
                hash_of(&lines[9])
            ),
            format!(
                "spawn.audit/t\n10\n{head}\ncut {}\nfrontier 2 {head}\nfrontier 8 {head}\n",
                hash_of(&lines[9])
            ),
            format!(
                "spawn.audit/t\n10\n{head}\ncut {}\nfrontier 08 {head}\nfrontier 2 {head}\n",
                hash_of(&lines[9])
            ),
            format!(
                "spawn.audit/t\n10\n{head}\ncut {}\nfrontier 8 {head}\nfrontier 2 {head}\n",
                hash_of(&lines[9])
            ),
            format!("spawn.audit/t\n0\n{head}\ncut {}\n", hash_of(&lines[9])),
        ];
        for b in bodies {
            assert!(
                Cut::open(&key.verifier(), &key.sign_body(&b)).is_err(),
                "{b}"
            );
        }
        // A cut whose anchor is not record N's: the log after it does not verify.
        let wrong = Cut::new(key.name(), &hash_of(&lines[3]), tree(&lines[..10])).unwrap();
        let v = verify_log(text(&lines[10..]).as_bytes(), &[], &[wrong]).unwrap();
        assert!(v.broken.unwrap().reason.contains("cut at seq 10"));
    }
}

//! Signed checkpoints of the audit log's Merkle tree ([`crate::merkle`]), in the C2SP
//! `tlog-checkpoint` format inside a C2SP `signed-note` signed with Ed25519, so that
//! transparency-log tooling (e.g. golang.org/x/mod/sumdb/note) reads and checks them:
//!
//! ```text
//! <origin>
//! <tree size>
//! <base64 of the tree head>
//!
//! — <key name> <base64 of 4-byte key id ‖ 64-byte signature>
//! ```
//!
//! The key id is the first 4 bytes of SHA-256(name ‖ `\n` ‖ 0x01 ‖ public key); the
//! signature covers the note's text (the first three lines, newlines included). Keys are
//! written as the note format writes them: `PRIVATE+KEY+<name>+<id hex>+<base64(0x01 ‖
//! seed)>` (kept secret, apart from the log) and the verifier key `<name>+<id hex>+<base64(
//! 0x01 ‖ public key)>` (published).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, Verifier as _};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::error::AuditError;
use crate::merkle::{node_hash, Hash};

/// The algorithm byte of Ed25519 keys in signed notes.
const ALG_ED25519: u8 = 1;

fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// A key name: what the note format allows (non-empty, no spaces, no `+`, printable).
fn check_name(name: &str) -> Result<(), AuditError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name.chars().all(|c| c.is_ascii_graphic() && c != '+');
    if ok {
        Ok(())
    } else {
        Err(AuditError::Checkpoint(
            "a key name is 1–256 printable ASCII characters without '+' or spaces".into(),
        ))
    }
}

/// The key that signs checkpoints.
pub struct SigningKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key named `name` (the log's origin), from the OS random source.
    pub fn generate(name: &str) -> Result<SigningKey, AuditError> {
        check_name(name)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *seed)
            .map_err(|e| AuditError::Random(std::io::Error::other(e.to_string())))?;
        Ok(SigningKey {
            name: name.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// Reads `PRIVATE+KEY+<name>+<id>+<base64>`; the id must match the key.
    pub fn parse(text: &str) -> Result<SigningKey, AuditError> {
        let bad = |why: &str| AuditError::Checkpoint(format!("not a signing key: {why}"));
        let rest = text
            .trim_end_matches('\n')
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| bad("it does not start with PRIVATE+KEY+"))?;
        // The key's base64 may hold '+' itself.
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it is not PRIVATE+KEY+name+id+key"));
        };
        check_name(name)?;
        let raw = Zeroizing::new(B64.decode(b64).map_err(|_| bad("its key is not base64"))?);
        let [alg, seed @ ..] = raw.as_slice() else {
            return Err(bad("its key is empty"));
        };
        let seed: &[u8; 32] = seed
            .try_into()
            .map_err(|_| bad("its key is not 32 bytes"))?;
        if *alg != ALG_ED25519 {
            return Err(bad("it is not an Ed25519 key"));
        }
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        if u32::from_str_radix(id, 16).ok() != Some(key_id(name, key.verifying_key().as_bytes()))
            || id.len() != 8
        {
            return Err(bad("its id does not match its key"));
        }
        Ok(SigningKey {
            name: name.to_owned(),
            key,
        })
    }

    /// The key as [`SigningKey::parse`] reads it (secret: zeroed when dropped).
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(33));
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.key.as_bytes());
        let public = self.key.verifying_key();
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{:08x}+{}\n",
            self.name,
            key_id(&self.name, public.as_bytes()),
            B64.encode(&*raw)
        ))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its verifier key.
    pub fn verifier(&self) -> VerifierKey {
        let key = self.key.verifying_key();
        VerifierKey {
            name: self.name.clone(),
            id: key_id(&self.name, key.as_bytes()),
            key,
        }
    }

    /// The signed note of `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        self.sign_body(&checkpoint.body())
    }

    /// The signed note of `body` (lines, each ending in a newline): any text the key's
    /// holder means to vouch for (a checkpoint, a cut).
    pub fn sign_body(&self, body: &str) -> String {
        let sig = self.key.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(
            &key_id(&self.name, self.key.verifying_key().as_bytes()).to_be_bytes(),
        );
        blob.extend_from_slice(&sig.to_bytes());
        format!("{body}\n\u{2014} {} {}\n", self.name, B64.encode(blob))
    }
}

/// The public half: checks notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    key: ed25519_dalek::VerifyingKey,
}

impl VerifierKey {
    /// Reads `<name>+<id hex>+<base64(0x01 ‖ public key)>`.
    pub fn parse(text: &str) -> Result<VerifierKey, AuditError> {
        let bad = |why: &str| AuditError::Checkpoint(format!("not a verifier key: {why}"));
        // The key's base64 may hold '+' itself.
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it is not name+id+key"));
        };
        check_name(name)?;
        let raw = B64.decode(b64).map_err(|_| bad("its key is not base64"))?;
        let [alg, public @ ..] = raw.as_slice() else {
            return Err(bad("its key is empty"));
        };
        let public: &[u8; 32] = public
            .try_into()
            .map_err(|_| bad("its key is not 32 bytes"))?;
        if *alg != ALG_ED25519 {
            return Err(bad("it is not an Ed25519 key"));
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(public)
            .map_err(|_| bad("its key is not a valid Ed25519 point"))?;
        let want = key_id(name, public);
        if id.len() != 8 || u32::from_str_radix(id, 16).ok() != Some(want) {
            return Err(bad("its id does not match its key"));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            id: want,
            key,
        })
    }

    pub fn to_text(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }

    /// The checkpoint in `note` if this key signed it (other signatures are ignored).
    pub fn open(&self, note: &str) -> Result<Checkpoint, AuditError> {
        Checkpoint::parse(&self.open_body(note)?)
    }

    /// The body of `note` if this key signed it.
    pub(crate) fn open_body(&self, note: &str) -> Result<String, AuditError> {
        let bad = |why: &str| AuditError::Checkpoint(format!("not a valid checkpoint: {why}"));
        let (body, sigs) = note
            .rsplit_once("\n\n")
            .ok_or_else(|| bad("no signature block"))?;
        let body = format!("{body}\n");
        let mut found = false;
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(bad("a signature line does not start with an em dash"));
            };
            let Some((name, b64)) = rest.split_once(' ') else {
                return Err(bad("a signature line is not name and signature"));
            };
            if name != self.name {
                continue;
            }
            let Ok(blob) = B64.decode(b64) else {
                return Err(bad("a signature is not base64"));
            };
            let Some((id, sig)) = blob.split_first_chunk::<4>() else {
                return Err(bad("a signature is too short"));
            };
            if u32::from_be_bytes(*id) != self.id {
                continue;
            }
            let sig = ed25519_dalek::Signature::from_slice(sig)
                .map_err(|_| bad("a signature is not 64 bytes"))?;
            self.key
                .verify(body.as_bytes(), &sig)
                .map_err(|_| bad("the signature does not verify: the checkpoint was changed or signed by another key"))?;
            found = true;
        }
        if !found {
            return Err(bad(&format!("no signature by {}", self.name)));
        }
        Ok(body)
    }
}

/// A tree head: the log `origin` had `size` records, and `root` was the head of their tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note's text: origin, size, base64 head, each on a line.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    pub(crate) fn parse(body: &str) -> Result<Checkpoint, AuditError> {
        let bad = |why: &str| AuditError::Checkpoint(format!("not a valid checkpoint: {why}"));
        let mut lines = body.lines();
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("fewer than three lines"));
        };
        if origin.is_empty() {
            return Err(bad("no origin"));
        }
        let size: u64 = (!size.starts_with('0') || size == "0")
            .then(|| size.parse().ok())
            .flatten()
            .filter(|_| size.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| bad("its size is not a number"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("its tree head is not 32 bytes of base64"))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// The tree over the records so far, kept as the heads of its complete subtrees (largest
/// first): a record is added in O(log n), and the head computed in O(log n).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (leaves, head) of each complete subtree, sizes strictly decreasing powers of two.
    nodes: Vec<(u64, Hash)>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds the next leaf (its leaf hash).
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (1u64, leaf);
        while let Some(&(n, h)) = self.nodes.last() {
            if n != node.0 {
                break;
            }
            self.nodes.pop();
            node = (n * 2, node_hash(&h, &node.1));
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// The heads of its complete subtrees, largest first: (leaves, head).
    pub fn nodes(&self) -> &[(u64, Hash)] {
        &self.nodes
    }

    /// The tree whose complete subtrees are `nodes` (largest first), if they are those of
    /// a tree: each a power of two, strictly decreasing.
    pub fn from_nodes(nodes: Vec<(u64, Hash)>) -> Option<Frontier> {
        let mut size = 0u64;
        let mut previous = u64::MAX;
        for &(n, _) in &nodes {
            if !n.is_power_of_two() || n >= previous {
                return None;
            }
            previous = n;
            size = size.checked_add(n)?;
        }
        Some(Frontier { size, nodes })
    }

    /// The tree head (RFC 9162 §2.1.1) over the leaves so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(&(_, last)) = iter.next() else {
            return crate::merkle::empty_root();
        };
        iter.fold(last, |acc, (_, h)| node_hash(h, &acc))
    }
}

/// The leaf data of a record: the 32 bytes of its chain hash (`sha256:` + 64 hex digits).
pub fn leaf_of(record_hash: &str) -> Option<Hash> {
    let hex = record_hash.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(crate::merkle::leaf_hash(&out))
}

/// Where a log's checkpoints are kept: `checkpoints/` beside the log file, one note per
/// checkpoint, named by its size (20 digits, so that names sort as sizes).
pub fn dir_of(log_dir: &Path) -> PathBuf {
    log_dir.join("checkpoints")
}

/// Every checkpoint note under `log_dir`, in size order: (file, text).
pub fn notes(log_dir: &Path) -> Result<Vec<(PathBuf, String)>, AuditError> {
    notes_in(&dir_of(log_dir))
}

/// Every checkpoint note (`*.note`) in `dir`, in name order: (file, text).
pub fn notes_in(dir: &Path) -> Result<Vec<(PathBuf, String)>, AuditError> {
    let dir = dir.to_owned();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(AuditError::Read { path: dir, source }),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| AuditError::Read {
                path: dir.clone(),
                source,
            })?
            .path();
        if path.extension().is_some_and(|e| e == "note") {
            let text = std::fs::read_to_string(&path).map_err(|source| AuditError::Read {
                path: path.clone(),
                source,
            })?;
            out.push((path, text));
        }
    }
    out.sort();
    Ok(out)
}

/// Signs the head of the log's tree as it stands (`size` records, head `root`) and keeps
/// the note in [`dir_of`]`(log_dir)`; returns the note and its file.
pub fn keep(
    log_dir: &Path,
    key: &SigningKey,
    size: u64,
    root: Hash,
) -> Result<(String, PathBuf), AuditError> {
    let note = key.sign(&Checkpoint {
        origin: key.name().to_owned(),
        size,
        root,
    });
    let path = write_note(log_dir, &format!("{size:020}.note"), &note)?;
    Ok((note, path))
}

/// Keeps `note` as `name` in [`dir_of`]`(log_dir)`, owner-only, durably: written aside and
/// renamed, so that a note is whole or absent.
pub(crate) fn write_note(log_dir: &Path, name: &str, note: &str) -> Result<PathBuf, AuditError> {
    let dir = dir_of(log_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| AuditError::CreateDir {
            path: dir.clone(),
            source,
        })?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let write = |p: &Path| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(p)?;
        std::io::Write::write_all(&mut f, note.as_bytes())?;
        f.sync_all()
    };
    write(&tmp)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .and_then(|()| std::fs::File::open(&dir)?.sync_all())
        .map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            AuditError::Write {
                path: path.clone(),
                source,
            }
        })?;
    Ok(path)
}

/// What [`sign_log`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    /// A checkpoint of `size` records, its note kept in `path`.
    Kept {
        size: u64,
        note: String,
        path: PathBuf,
    },
    /// The log already had a checkpoint of its current size: nothing new to sign.
    Unchanged { size: u64 },
    /// The log's chain is broken: nothing was signed.
    Broken(crate::chain::Broken),
}

/// Checks the chain of the log at `log_path` as it stands ([`crate::snapshot`]) and signs
/// the head of its tree with `key` ([`keep`]), unless it is broken or already signed at
/// this size. Reads the whole log; a log cut by retention from the cut on (the cut's note
/// among its checkpoints, signed by `key`: [`crate::cut::verify_log`]).
pub fn sign_log(log_path: &Path, key: &SigningKey) -> Result<Signed, AuditError> {
    use std::io::Read as _;
    let dir = log_path.parent().unwrap_or(Path::new("."));
    let cuts = crate::cut::cuts_in(&key.verifier(), &notes(dir)?);
    let (file, len) = crate::snapshot(log_path)?;
    let (v, tree) =
        crate::cut::verify_log_tree(std::io::BufReader::new(file.take(len)), &[], &cuts).map_err(
            |source| AuditError::Read {
                path: log_path.to_owned(),
                source,
            },
        )?;
    if let Some(b) = v.broken {
        return Ok(Signed::Broken(b));
    }
    let size = tree.size();
    if dir_of(dir).join(format!("{size:020}.note")).exists() {
        return Ok(Signed::Unchanged { size });
    }
    let (note, path) = keep(dir, key, size, tree.root())?;
    Ok(Signed::Kept { size, note, path })
}

/// A checkpoint note as opened: its file, and the checkpoint or why it did not open.
pub type Opened = (PathBuf, Result<Checkpoint, AuditError>);

/// The chain of the log read from `input` ([`crate::chain::verify`]) and then every
/// checkpoint in `notes` against it: opened (signed by the key), over no more records than
/// the log holds, with the head of the log's first `size` records. The first problem, of
/// the chain or of a checkpoint, is the answer's `broken`.
pub fn verify_log(
    input: impl std::io::BufRead,
    whole: bool,
    notes: &[Opened],
) -> std::io::Result<crate::chain::Verified> {
    verify_log_tree(input, whole, notes).map(|(v, _)| v)
}

/// [`verify_log`], with the tree over the records it read.
pub(crate) fn verify_log_tree(
    input: impl std::io::BufRead,
    whole: bool,
    notes: &[Opened],
) -> std::io::Result<(crate::chain::Verified, Frontier)> {
    let sizes: std::collections::BTreeSet<u64> = notes
        .iter()
        .filter_map(|(_, c)| c.as_ref().ok().map(|c| c.size))
        .collect();
    let mut tree = Frontier::default();
    let mut heads = std::collections::BTreeMap::new();
    let mut v = crate::chain::verify_with(input, whole, |_, hash| {
        if let Some(leaf) = leaf_of(hash) {
            tree.push(leaf);
            if sizes.contains(&tree.size()) {
                heads.insert(tree.size(), tree.root());
            }
        }
    })?;
    if v.broken.is_none() {
        v.broken = notes
            .iter()
            .find_map(|(file, opened)| against(file, opened, &heads, v.records));
    }
    Ok((v, tree))
}

/// What is wrong with one checkpoint of a log of `records` records whose heads at the
/// checkpoints' sizes are `heads`, if anything.
pub(crate) fn against(
    file: &Path,
    opened: &Result<Checkpoint, AuditError>,
    heads: &std::collections::BTreeMap<u64, Hash>,
    records: u64,
) -> Option<crate::chain::Broken> {
    let name = file
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let broken = |seq, reason| {
        Some(crate::chain::Broken {
            seq,
            line: 0,
            reason,
        })
    };
    let c = match opened {
        Ok(c) => c,
        Err(e) => return broken(0, format!("checkpoint {name}: {e}")),
    };
    if c.size > records {
        return broken(
            records + 1,
            format!(
                "checkpoint {name} signed {} records, the log holds {records}: the records after seq {records} were removed",
                c.size
            ),
        );
    }
    if heads.get(&c.size) != Some(&c.root) {
        return broken(
            c.size,
            format!(
                "checkpoint {name} signed another history of seq 1–{}: the log was rewritten",
                c.size
            ),
        );
    }
    None
}

/// An inclusion proof (RFC 9162 §2.1.3) of one record in a checkpoint's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inclusion {
    /// The record's chain hash.
    pub hash: String,
    /// Its leaf index (seq − 1).
    pub leaf_index: u64,
    pub proof: Vec<Hash>,
}

/// The inclusion proof of record `seq` in the tree of `checkpoint`, from the log read from
/// `input` (whole, or from one of `cuts` on); an error if the log is broken within the
/// checkpoint, has no such record (a record cut included), or is not the history the
/// checkpoint signed.
pub fn prove(
    mut input: impl std::io::BufRead,
    checkpoint: &Checkpoint,
    seq: u64,
    cuts: &[crate::cut::Cut],
) -> Result<Inclusion, String> {
    let first = crate::cut::first_seq(&mut input)
        .map_err(|e| format!("cannot read the log: {e}"))?
        .unwrap_or(1);
    let cut = match first {
        0 | 1 => None,
        _ => Some(
            cuts.iter()
                .find(|c| c.checkpoint.size == first - 1)
                .ok_or_else(|| {
                    format!("the log starts at seq {first} and no signed cut says why: records were removed")
                })?,
        ),
    };
    let n = cut.map_or(0, |c| c.checkpoint.size);
    if seq <= n {
        return Err(format!(
            "record {seq} was deleted by retention (the log was cut at seq {n} under a signed cut)"
        ));
    }
    let mut leaves = Vec::new();
    let mut record_hash = None;
    let v = crate::chain::verify_with(input, cut.is_none(), |s, hash| {
        if s <= checkpoint.size {
            if let Some(leaf) = leaf_of(hash) {
                leaves.push(leaf);
            }
            if s == seq {
                record_hash = Some(hash.to_owned());
            }
        }
    })
    .map_err(|e| format!("cannot read the log: {e}"))?;
    if let Some(b) = v.broken.filter(|b| b.seq <= checkpoint.size) {
        return Err(format!("the log is broken at seq {}: {}", b.seq, b.reason));
    }
    if let Some(c) = cut {
        if v.anchor.as_deref() != Some(c.anchor.as_str()) {
            return Err(format!(
                "the log's records after the cut at seq {n} do not follow it: they were changed"
            ));
        }
    }
    let (Some(leaf_index), Some(hash)) = (seq.checked_sub(1), record_hash) else {
        return Err(format!("there is no record with seq {seq}"));
    };
    let tree = crate::merkle::Pruned::new(cut.map_or(&[], |c| c.frontier.nodes()), &leaves);
    if tree.size() != checkpoint.size || tree.root() != Some(checkpoint.root) {
        return Err(format!(
            "the log's first {} records are not those the checkpoint signed: the log was rewritten",
            checkpoint.size
        ));
    }
    let proof = tree
        .inclusion_proof(leaf_index)
        .ok_or_else(|| "the record is not in the checkpoint's tree".to_owned())?;
    Ok(Inclusion {
        hash,
        leaf_index,
        proof,
    })
}

/// The signing key at `path`, made (owner-only, in an owner-only directory) with the
/// origin `spawn.audit/<random id>` if it does not exist yet.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey, AuditError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            if mode & 0o077 != 0 {
                return Err(AuditError::Checkpoint(format!(
                    "the audit signing key {} is readable by others (mode {:o}): chmod 600 it",
                    path.display(),
                    mode & 0o777
                )));
            }
            SigningKey::parse(&text)
                .map_err(|e| AuditError::Checkpoint(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = crate::id::new_id("log")?;
            let key = SigningKey::generate(&format!("spawn.audit/{id}"))?;
            if let Some(parent) = path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(|source| AuditError::CreateDir {
                        path: parent.to_owned(),
                        source,
                    })?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| AuditError::Open {
                    path: path.to_owned(),
                    source,
                })?;
            std::io::Write::write_all(&mut f, key.to_text().as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|source| AuditError::Write {
                    path: path.to_owned(),
                    source,
                })?;
            Ok(key)
        }
        Err(source) => Err(AuditError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests;

//! The audit log as the leaves of an RFC 6962 (RFC 9162 §2.1) Merkle tree: leaf `i` is
//! record `seq = i + 1`, its data the 32 bytes of the record's chain hash. Tree heads,
//! inclusion proofs and consistency proofs as the RFC defines them, so that transparency-
//! log tooling can check what spawn signs.

use sha2::{Digest, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The head of the empty tree: `SHA-256()`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n` (`n` ≥ 2).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The tree head over `leaves` (leaf hashes), RFC 9162 §2.1.1.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof of leaf `index` in the tree over `leaves`, RFC 9162 §2.1.3.1;
/// `None` when `index` is not a leaf of it.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    (index < leaves.len()).then(|| {
        let mut path = Vec::new();
        subproof_inclusion(leaves, index, &mut path);
        path
    })
}

fn subproof_inclusion(leaves: &[Hash], index: usize, path: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if index < k {
        subproof_inclusion(&leaves[..k], index, path);
        path.push(root(&leaves[k..]));
    } else {
        subproof_inclusion(&leaves[k..], index - k, path);
        path.push(root(&leaves[..k]));
    }
}

/// A tree whose first leaves are gone (cut by retention) and known only as the heads of
/// their complete subtrees (a cut's frontier), followed by leaves known one by one: enough
/// for its head and for the inclusion proof of any later leaf, since every subtree those
/// need lies after the cut, is one of the frontier's, or is split between the two at a
/// frontier head.
#[derive(Debug)]
pub struct Pruned<'a> {
    /// (first leaf, leaves, head) of each frontier subtree, in leaf order.
    prefix: Vec<(u64, u64, Hash)>,
    /// Leaves cut.
    cut: u64,
    later: &'a [Hash],
}

impl<'a> Pruned<'a> {
    /// The tree of the subtrees `frontier` (leaves, head; largest first, as a cut keeps
    /// them) followed by the leaves `later`.
    pub fn new(frontier: &[(u64, Hash)], later: &'a [Hash]) -> Pruned<'a> {
        let mut prefix = Vec::with_capacity(frontier.len());
        let mut cut = 0u64;
        for &(n, head) in frontier {
            prefix.push((cut, n, head));
            cut = cut.saturating_add(n);
        }
        Pruned { prefix, cut, later }
    }

    /// Leaves in all.
    pub fn size(&self) -> u64 {
        self.cut.saturating_add(self.later.len() as u64)
    }

    /// The tree head; `None` if the frontier is not a tree's (a head it would need is not
    /// one of its subtrees).
    pub fn root(&self) -> Option<Hash> {
        match self.size() {
            0 => Some(empty_root()),
            n => self.head(0, n),
        }
    }

    /// The inclusion proof of leaf `index`: `None` for a leaf that is cut or beyond the tree.
    pub fn inclusion_proof(&self, index: u64) -> Option<Vec<Hash>> {
        if index < self.cut || index >= self.size() {
            return None;
        }
        let mut path = Vec::new();
        self.path(index, 0, self.size(), &mut path)?;
        Some(path)
    }

    /// The head of leaves `a..b` (`b > a`).
    fn head(&self, a: u64, b: u64) -> Option<Hash> {
        if b <= self.cut {
            if let Some((_, _, h)) = self
                .prefix
                .iter()
                .find(|(start, n, _)| *start == a && start + n == b)
            {
                return Some(*h);
            }
            if b - a == 1 {
                return None;
            }
        } else if b - a == 1 {
            return self
                .later
                .get(usize::try_from(a.checked_sub(self.cut)?).ok()?)
                .copied();
        }
        let k = split(usize::try_from(b - a).ok()?) as u64;
        Some(node_hash(&self.head(a, a + k)?, &self.head(a + k, b)?))
    }

    fn path(&self, index: u64, a: u64, b: u64, out: &mut Vec<Hash>) -> Option<()> {
        if b - a <= 1 {
            return Some(());
        }
        let k = split(usize::try_from(b - a).ok()?) as u64;
        if index < a + k {
            self.path(index, a, a + k, out)?;
            out.push(self.head(a + k, b)?);
        } else {
            self.path(index, a + k, b, out)?;
            out.push(self.head(a, a + k)?);
        }
        Some(())
    }
}

/// Checks an inclusion proof, RFC 9162 §2.1.3.2: whether `leaf` is leaf `index` of the tree
/// of `size` leaves whose head is `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// The consistency proof between the tree of the first `old` leaves and the tree over all
/// `leaves`, RFC 9162 §2.1.4.1; `None` unless `0 < old <= leaves.len()`.
pub fn consistency_proof(leaves: &[Hash], old: usize) -> Option<Vec<Hash>> {
    (old > 0 && old <= leaves.len()).then(|| {
        let mut path = Vec::new();
        subproof_consistency(old, leaves, true, &mut path);
        path
    })
}

fn subproof_consistency(m: usize, leaves: &[Hash], whole: bool, path: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !whole {
            path.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof_consistency(m, &leaves[..k], whole, path);
        path.push(root(&leaves[k..]));
    } else {
        subproof_consistency(m - k, &leaves[k..], false, path);
        path.push(root(&leaves[..k]));
    }
}

/// Checks a consistency proof, RFC 9162 §2.1.4.2: whether the tree of `old` leaves with head
/// `old_root` is a prefix of the tree of `new` leaves with head `new_root`.
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> bool {
    if old == 0 || old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    if proof.is_empty() {
        return false;
    }
    let mut proof: Vec<Hash> = proof.to_vec();
    if old.is_power_of_two() {
        proof.insert(0, *old_root);
    }
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && fr == *old_root && sr == *new_root
}

#[cfg(test)]
mod tests;

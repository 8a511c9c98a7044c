use super::*;

fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// The leaves of RFC 6962's reference tests (certificate-transparency's merkle tree tests).
fn reference_leaves() -> Vec<Hash> {
    let data: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    data.iter().map(|d| leaf_hash(d)).collect()
}

#[test]
fn tree_heads_match_the_reference_vectors() {
    let want = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    let leaves = reference_leaves();
    for (n, want) in want.iter().enumerate() {
        assert_eq!(hex(&root(&leaves[..=n])), *want, "size {}", n + 1);
    }
    assert_eq!(
        hex(&empty_root()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
        .collect()
}

/// Every leaf of every tree up to 40 leaves is proven in it, and only there.
#[test]
fn inclusion_proofs_verify_and_nothing_else_does() {
    for n in 1..=40usize {
        let l = leaves(n);
        let r = root(&l);
        for i in 0..n {
            let p = inclusion_proof(&l, i).unwrap();
            let (i64_, n64) = (i as u64, n as u64);
            assert!(verify_inclusion(&l[i], i64_, n64, &p, &r), "{i} of {n}");
            // Another leaf, another index, another root, a changed proof.
            let other = leaf_hash(b"other");
            assert!(!verify_inclusion(&other, i64_, n64, &p, &r));
            if n > 1 {
                assert!(
                    !verify_inclusion(&l[i], (i64_ + 1) % n64, n64, &p, &r),
                    "{i} of {n}"
                );
            }
            assert!(!verify_inclusion(&l[i], i64_, n64, &p, &leaf_hash(b"root")));
            for k in 0..p.len() {
                let mut bad = p.clone();
                bad[k][0] ^= 1;
                assert!(!verify_inclusion(&l[i], i64_, n64, &bad, &r));
            }
            let mut longer = p.clone();
            longer.push(r);
            assert!(!verify_inclusion(&l[i], i64_, n64, &longer, &r));
            if !p.is_empty() {
                assert!(!verify_inclusion(&l[i], i64_, n64, &p[1..], &r));
            }
        }
        assert!(inclusion_proof(&l, n).is_none());
        assert!(!verify_inclusion(&l[0], n as u64, n as u64, &[], &r));
    }
}

/// Every tree up to 40 leaves is proven a prefix of every larger one; a tree that is not
/// (one leaf changed) is not.
#[test]
fn consistency_proofs_verify_and_nothing_else_does() {
    for n in 1..=40usize {
        let l = leaves(n);
        let rn = root(&l);
        for m in 1..=n {
            let rm = root(&l[..m]);
            let p = consistency_proof(&l, m).unwrap();
            let (m64, n64) = (m as u64, n as u64);
            assert!(verify_consistency(m64, n64, &p, &rm, &rn), "{m} → {n}");
            // A history rewritten before leaf m: another old head.
            let mut rewritten = l[..m].to_vec();
            rewritten[m - 1] = leaf_hash(b"rewritten");
            assert!(
                !verify_consistency(m64, n64, &p, &root(&rewritten), &rn),
                "{m} → {n}"
            );
            assert!(
                !verify_consistency(m64, n64, &p, &rm, &leaf_hash(b"x")),
                "{m} → {n}"
            );
            for k in 0..p.len() {
                let mut bad = p.clone();
                bad[k][31] ^= 0x80;
                assert!(!verify_consistency(m64, n64, &bad, &rm, &rn), "{m} → {n}");
            }
            if m < n {
                assert!(!verify_consistency(m64, n64, &[], &rm, &rn));
                assert!(!verify_consistency(m64 + 1, n64, &p, &rm, &rn) || m + 1 == n);
            }
        }
        assert!(consistency_proof(&l, 0).is_none());
        assert!(consistency_proof(&l, n + 1).is_none());
        assert!(!verify_consistency(0, n as u64, &[], &empty_root(), &rn));
    }
}

/// A tree cut after any number of leaves gives, from its frontier and the later leaves
/// alone, the head and every later leaf's proof that the whole tree gives; a cut leaf has
/// no proof, and a frontier that cannot be a tree's gives no head (`Cut::open` refuses
/// every frontier that is not one).
#[test]
fn a_pruned_tree_proves_what_the_whole_tree_proves() {
    let leaves: Vec<Hash> = (0u32..34).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    for size in 0..=leaves.len() {
        let all = &leaves[..size];
        for cut in 0..=size {
            let mut frontier = crate::checkpoint::Frontier::default();
            for leaf in &all[..cut] {
                frontier.push(*leaf);
            }
            let pruned = Pruned::new(frontier.nodes(), &all[cut..]);
            assert_eq!(pruned.size(), size as u64);
            assert_eq!(pruned.root(), Some(root(all)), "size {size} cut {cut}");
            for i in 0..size + 2 {
                let want = (i >= cut).then(|| inclusion_proof(all, i)).flatten();
                assert_eq!(
                    pruned.inclusion_proof(i as u64),
                    want,
                    "size {size} cut {cut} leaf {i}"
                );
            }
        }
    }
    // Frontiers that are not a tree's: no head, no proof.
    let h = leaves[0];
    for bad in [vec![(3u64, h)], vec![(2, h), (4, h)], vec![(1, h), (2, h)]] {
        let pruned = Pruned::new(&bad, &leaves[..5]);
        assert_eq!(pruned.root(), None, "{bad:?}");
        let n = pruned.size();
        assert!(
            (0..n).any(|i| pruned.inclusion_proof(i).is_none()),
            "{bad:?}"
        );
    }
}

// The property of the `audit_cut` fuzz target. spawn-audit's tests include this file too
// and check it on every input kept in fuzz/regressions/audit_cut/ (hence no inner
// attributes or `//!` comments here; the includer puts `spawn_audit` in scope).
//
// Retention's cuts are read from files beside the log and from the database, where whoever
// holds them may write anything: arbitrary text never opens as a cut without the key; a
// body the key signed opens only as a self-consistent cut (its frontier makes its tree
// head) that signs again to itself; a cut made from any tree opens as itself; a log checked
// against it, or proven from it, never panics.

use std::sync::OnceLock;

use spawn_audit::checkpoint::{Frontier, SigningKey};
use spawn_audit::cut::Cut;

fn cut_key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| {
        SigningKey::parse("PRIVATE+KEY+spawn.audit/fuzz+1447e5c7+AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB")
            .expect("the fuzz key")
    })
}

fn check(data: &[u8]) {
    let key = cut_key();
    let verifier = key.verifier();
    let text = String::from_utf8_lossy(data);
    assert!(
        Cut::open(&verifier, &text).is_err(),
        "a cut opened without a signature: {text:?}"
    );
    // The text as a body the key signed.
    let mut body = text.replace("\n\n", "\n");
    if !body.ends_with('\n') {
        body.push('\n');
    }
    if let Ok(cut) = Cut::open(&verifier, &key.sign_body(&body)) {
        assert_eq!(cut.frontier.size(), cut.checkpoint.size);
        assert_eq!(cut.frontier.root(), cut.checkpoint.root);
        let again = Cut::open(&verifier, &cut.sign(key)).expect("a cut signs again to itself");
        assert_eq!(again, cut);
    }
    // A cut of a tree drawn from the bytes: opens as itself; the bytes as a log after it.
    let mut tree = Frontier::default();
    let leaves = data.first().map_or(0, |b| usize::from(*b)) + 1;
    for i in 0..leaves {
        let mut leaf = [0u8; 32];
        leaf[..8].copy_from_slice(&(i as u64).to_be_bytes());
        leaf[8] = data.get(1).copied().unwrap_or(0);
        tree.push(leaf);
    }
    let anchor = format!("sha256:{}", "ab".repeat(32));
    let cut = Cut::new(key.name(), &anchor, tree).expect("a cut of a tree");
    let opened = Cut::open(&verifier, &cut.sign(key)).expect("a signed cut opens");
    assert_eq!(opened, cut);
    let _ = spawn_audit::cut::verify_log(data, &[], std::slice::from_ref(&cut));
    // The bytes as a log cut there, proven from (a log file whose start retention punched
    // out): an answer or an error, never a panic; a record at or before the cut is never
    // proven; an answer's proof checks against the checkpoint's tree.
    let n = cut.checkpoint.size;
    let checkpoint = spawn_audit::checkpoint::Checkpoint {
        origin: key.name().to_owned(),
        size: n + 2,
        root: cut.checkpoint.root,
    };
    for seq in [0, 1, n, n + 1, n + 2, n + 3] {
        let proven =
            spawn_audit::checkpoint::prove(data, &checkpoint, seq, std::slice::from_ref(&cut));
        if let Ok(p) = proven {
            assert!(seq > n, "record {seq} proven though the cut at {n} deleted it");
            let leaf = spawn_audit::checkpoint::leaf_of(&p.hash).expect("a proven record's hash");
            assert!(spawn_audit::merkle::verify_inclusion(
                &leaf,
                p.leaf_index,
                checkpoint.size,
                &p.proof,
                &checkpoint.root
            ));
        }
    }
}

use super::*;
use crate::merkle::{leaf_hash, root};

/// The example key and note of the signed-note format's documentation
/// (golang.org/x/mod/sumdb/note): the same bytes signed by the same key give the same
/// signature (Ed25519 is deterministic), so spawn's notes are what that tooling reads.
#[test]
fn the_note_formats_example_signs_the_same() {
    let key = SigningKey::parse(
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
    )
    .unwrap();
    assert_eq!(
        key.verifier().to_text(),
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    );
    let text = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    let sig = key.key.sign(text.as_bytes());
    let mut blob = key.verifier().id.to_be_bytes().to_vec();
    blob.extend_from_slice(&sig.to_bytes());
    assert_eq!(
        B64.encode(blob),
        "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
    );
    assert_eq!(
        SigningKey::parse(&key.to_text()).unwrap().to_text(),
        key.to_text()
    );
}

fn checkpoint(size: u64) -> Checkpoint {
    Checkpoint {
        origin: "spawn.test/audit".into(),
        size,
        root: leaf_hash(&size.to_be_bytes()),
    }
}

#[test]
fn a_signed_checkpoint_opens_with_its_key_only() {
    let key = SigningKey::generate("spawn.test/audit").unwrap();
    let note = key.sign(&checkpoint(42));
    assert!(note.starts_with("spawn.test/audit\n42\n"), "{note}");
    assert!(note.contains("\n\n\u{2014} spawn.test/audit "), "{note}");
    let v = key.verifier();
    assert_eq!(v.open(&note).unwrap(), checkpoint(42));
    assert_eq!(VerifierKey::parse(&v.to_text()).unwrap(), v);
    // Another key of the same name, and a key of another name.
    let other = SigningKey::generate("spawn.test/audit").unwrap().verifier();
    assert!(other.open(&note).is_err());
    let stranger = SigningKey::generate("elsewhere").unwrap().verifier();
    assert!(stranger.open(&note).is_err());
    // A second signature by someone else beside spawn's is fine.
    let both = format!("{}\u{2014} elsewhere AAAAAAAA\n", note);
    assert_eq!(v.open(&both).unwrap(), checkpoint(42));
}

/// Whatever is changed in a note, it no longer opens.
#[test]
fn a_changed_note_does_not_open() {
    let key = SigningKey::generate("spawn.test/audit").unwrap();
    let v = key.verifier();
    let note = key.sign(&checkpoint(42));
    let changed: Vec<String> = vec![
        note.replacen("\n42\n", "\n43\n", 1),
        note.replacen("\n42\n", "\n042\n", 1),
        note.replacen("spawn.test/audit\n", "spawn.test/audiT\n", 1),
        note.replacen("\n\n", "\n", 1),
        note.replacen("\n\n", "\nextra\n\n", 1),
        note.replacen("\u{2014}", "-", 1),
        note.replacen(" spawn.test/audit ", " spawn.test/audit  ", 1),
        {
            let mut b: Vec<u8> = note.clone().into_bytes();
            let i = b.len() - 10;
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).unwrap()
        },
        note[..note.len() - 5].to_owned(),
        String::new(),
        "\n\n".into(),
    ];
    for c in changed {
        assert!(v.open(&c).is_err(), "opened: {c:?}");
    }
    // A note whose body is not a checkpoint, signed properly, is refused as such.
    let body = "spawn.test/audit\nnot a number\nAAAA\n";
    let sig = key.key.sign(body.as_bytes());
    let mut blob = v.id.to_be_bytes().to_vec();
    blob.extend_from_slice(&sig.to_bytes());
    let note = format!("{body}\n\u{2014} spawn.test/audit {}\n", B64.encode(blob));
    assert!(v.open(&note).is_err());
}

#[test]
fn keys_in_any_other_shape_are_refused() {
    let good = SigningKey::generate("n").unwrap();
    let text = good.to_text();
    let vtext = good.verifier().to_text();
    let bad_private = [
        "",
        "PRIVATE+KEY+",
        "PRIVATE+KEY+n",
        "PRIVATE+KEY+n+00000000+",
        "private+key+n+00000000+AQ==",
        &text.replacen("PRIVATE+KEY+n+", "PRIVATE+KEY+m+", 1),
        &text.replacen("+A", "+B", 1),
        &format!("{}+extra", text.trim_end()),
        "PRIVATE+KEY+a b+00000000+AQ==",
    ];
    for t in bad_private {
        assert!(SigningKey::parse(t).is_err(), "{t:?}");
    }
    let bad_public = [
        "",
        "n",
        "n+00000000",
        &vtext.replacen("n+", "m+", 1),
        &vtext.replacen("+A", "+B", 1),
        &format!("{vtext}+x"),
        &vtext.to_uppercase(),
    ];
    for t in bad_public {
        assert!(VerifierKey::parse(t).is_err(), "{t:?}");
    }
}

#[test]
fn the_frontier_has_the_trees_head_at_every_size() {
    let leaves: Vec<Hash> = (0..70u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let mut f = Frontier::default();
    assert_eq!(f.root(), root(&[]));
    for (i, l) in leaves.iter().enumerate() {
        f.push(*l);
        assert_eq!(f.size(), i as u64 + 1);
        assert_eq!(f.root(), root(&leaves[..=i]), "size {}", i + 1);
    }
}

#[test]
fn leaves_are_the_record_hashes_bytes() {
    let h = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let mut raw = [0u8; 32];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ][i % 16];
    }
    assert_eq!(leaf_of(h), Some(leaf_hash(&raw)));
    for bad in [
        "",
        "sha256:",
        &h[..h.len() - 1],
        &h.to_uppercase(),
        &h.replacen("sha256:0", "sha256:+", 1),
        &h.replacen("sha256:", "sha512:", 1),
        &format!("{h}0"),
    ] {
        assert_eq!(leaf_of(bad), None, "{bad:?}");
    }
}

mod fuzz_property {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate as spawn_audit;
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/checkpoint_note.rs"
    ));
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/kept.rs"
    ));

    /// Every input the `checkpoint_note` fuzz target ever failed on or was given to hold
    /// (fuzz/regressions/checkpoint_note/) keeps the target's property.
    #[test]
    fn fuzz_regressions_keep_the_checkpoint_note_property() {
        check_kept(env!("CARGO_MANIFEST_DIR"), "checkpoint_note", check);
    }
}

// The property of the `checkpoint_note` fuzz target. spawn-audit's tests include this file
// too and check it on every input kept in fuzz/regressions/checkpoint_note/ (hence no inner
// attributes or `//!` comments here; the includer puts `spawn_audit` in scope).
//
// What `spawn audit verify` reads beside the log (checkpoint notes, verifier keys given on
// the command line), arbitrary text: no note opens without the signing key (whose seed
// exists only here and signs nothing), keys that parse print back as themselves, and
// nothing panics.

use std::sync::OnceLock;

use spawn_audit::checkpoint::{SigningKey, VerifierKey};

fn verifier() -> &'static VerifierKey {
    static V: OnceLock<VerifierKey> = OnceLock::new();
    V.get_or_init(|| {
        // A fixed key: the fuzzer may well learn its public half (it is in every error
        // path), never a signature by it.
        SigningKey::parse("PRIVATE+KEY+spawn.audit/fuzz+1447e5c7+AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB")
            .expect("the fuzz key")
            .verifier()
    })
}

fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    assert!(
        verifier().open(&text).is_err(),
        "a note opened without a signature: {text:?}"
    );
    if let Ok(k) = VerifierKey::parse(&text) {
        assert_eq!(VerifierKey::parse(&k.to_text()).expect("printed key"), k);
    }
    if let Ok(k) = SigningKey::parse(&text) {
        let again = SigningKey::parse(&k.to_text()).expect("printed key");
        assert_eq!(again.verifier(), k.verifier());
    }
}

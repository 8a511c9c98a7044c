// Included by the crate tests that check a fuzz target's property on stable (beside the
// property's own file): runs `check` on every input kept in fuzz/regressions/<target>/ —
// what the target ever failed on, and what it was given to hold — from the crate at
// `manifest_dir`. Fails if there is none.

fn check_kept(manifest_dir: &str, target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(manifest_dir)
        .join("../../fuzz/regressions")
        .join(target);
    let mut kept = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        check(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        kept += 1;
    }
    assert!(kept > 0, "no regression inputs in {}", dir.display());
}

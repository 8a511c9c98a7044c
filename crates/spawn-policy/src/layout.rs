//! What of the sandbox's file tree is the host's: the read-only host trees every runtime
//! binds into the root. The sandbox builds its root from these lists; the policy refuses
//! mount targets inside them, where a mount point would have to be made in the host's own
//! tree (a runtime would create it on the host).

use std::path::Path;

/// Host system trees bound read-only at the same path (or, where the host has a symlink
/// such as `/bin -> usr/bin`, the same symlink).
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
];

/// Harmless host files and directories under `/etc` exposed read-only when present.
pub const ETC_BINDS: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/ssl/certs",
    "/etc/protocols",
    "/etc/services",
    "/etc/localtime",
];

/// The host tree that holds sandbox path `path` below its top, if one does: a mount there
/// would need a mount point inside the host's tree.
pub fn host_tree_holding(path: &Path) -> Option<&'static str> {
    SYSTEM_DIRS
        .iter()
        .chain(ETC_BINDS)
        .copied()
        .find(|tree| path != Path::new(tree) && path.starts_with(tree))
}

//! Host capability probes for `spawn doctor`. Each check reads the kernel's own answer
//! (procfs, a probing syscall); none of them changes the host.

use std::path::Path;

use crate::cgroups::Layout;

/// One line of the doctor's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it is usable.
    pub ok: bool,
    /// Version, detail, or why not.
    pub detail: String,
}

fn check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
    }
}

/// The Landlock ABI of the running kernel, if any.
pub fn landlock_abi() -> Option<i64> {
    crate::sys::landlock_abi()
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Every probe, in display order.
pub fn checks() -> Vec<Check> {
    let mut out = Vec::new();
    let uname = nix::sys::utsname::uname().ok();
    out.push(check(
        "kernel",
        true,
        uname
            .map(|u| {
                format!(
                    "{} {}",
                    u.sysname().to_string_lossy(),
                    u.release().to_string_lossy()
                )
            })
            .unwrap_or_else(|| "unknown".into()),
    ));
    let max_userns = read("/proc/sys/user/max_user_namespaces").and_then(|s| s.parse::<u64>().ok());
    out.push(check(
        "user namespaces",
        max_userns.is_some_and(|n| n > 0),
        match max_userns {
            Some(n) => format!("max_user_namespaces={n}"),
            None => "not available".into(),
        },
    ));
    let ns_ok = ["user", "pid", "mnt", "net", "ipc", "uts", "cgroup"]
        .iter()
        .filter(|n| !Path::new(&format!("/proc/self/ns/{n}")).exists())
        .map(|n| (*n).to_owned())
        .collect::<Vec<_>>();
    out.push(check(
        "namespaces",
        ns_ok.is_empty(),
        if ns_ok.is_empty() {
            "user pid mnt net ipc uts cgroup".to_owned()
        } else {
            format!("missing: {}", ns_ok.join(" "))
        },
    ));
    let actions = read("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    out.push(check(
        "seccomp",
        actions.split_whitespace().any(|a| a == "user_notif"),
        if actions.is_empty() {
            "not available".into()
        } else {
            format!("actions: {actions}")
        },
    ));
    let ll = landlock_abi();
    out.push(check(
        "landlock",
        ll.is_some(),
        match ll {
            Some(abi) => format!("ABI {abi}"),
            None => "not available (runs proceed without it; the other layers still apply)".into(),
        },
    ));
    match Layout::detect() {
        Ok(layout) => out.push(check("cgroups", true, layout.describe())),
        Err(e) => out.push(check("cgroups", false, e.to_string())),
    }
    // Every run's scratch filesystem (the disk quota) is formatted by mkfs.ext4 and lives
    // on the host's disk under scratch::DIR.
    let mkfs = [
        "/usr/sbin/mkfs.ext4",
        "/sbin/mkfs.ext4",
        "/usr/bin/mkfs.ext4",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    out.push(check(
        "scratch filesystem",
        mkfs.is_some(),
        match mkfs {
            Some(m) => format!(
                "one ext4 image per run under {} ({m}): the disk quota, apart from memory",
                crate::scratch::DIR
            ),
            None => "mkfs.ext4 is missing: install e2fsprogs (runs fail with exit 125)".into(),
        },
    ));
    match crate::native::check_available() {
        Ok(_) => out.push(check(
            "runtime native",
            true,
            "available: namespaces + seccomp + landlock + cgroups",
        )),
        Err(e) => out.push(check("runtime native", false, e.to_string())),
    }
    let gvisor = crate::container::Engine::Runsc {
        platform: String::new(),
    };
    out.push(match crate::container::find_binary(&gvisor) {
        Ok(runsc) => {
            let version =
                crate::container::version(&runsc).unwrap_or_else(|| runsc.display().to_string());
            let profile = crate::container::gvisor_profile(&runsc);
            match profile.check() {
                Ok(()) => check(
                    "runtime gvisor",
                    true,
                    format!(
                        "{version}, platform {} (the default runtime; with a network policy \
                         the agent's sockets go to gVisor's own network stack)",
                        profile.platform
                    ),
                ),
                Err(e) => check("runtime gvisor", false, format!("{version}: {e}")),
            }
        }
        Err(e) => check("runtime gvisor", false, e.to_string()),
    });
    out.push(match crate::container::find_runtime() {
        Ok(runc) => check(
            "runtime container",
            true,
            format!(
                "{} (development only: the host kernel with namespaces and seccomp)",
                crate::container::version(&runc).unwrap_or_else(|| runc.display().to_string())
            ),
        ),
        Err(e) => check("runtime container", false, e.to_string()),
    });
    // restricted, egress-only and full need the tools that build a run's link and filter.
    let missing: Vec<&str> = ["ip", "nft", "nsenter", "unshare"]
        .into_iter()
        .filter(|tool| {
            !["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .any(|dir| Path::new(dir).join(tool).exists())
        })
        .collect();
    out.push(check(
        "network policies",
        missing.is_empty(),
        if missing.is_empty() {
            "restricted and egress-only: a veth link per run, nftables in its namespace, the \
             egress proxy; full: a veth link per run routed by the host, the host walled off"
                .to_owned()
        } else {
            format!(
                "missing {} (apt-get install iproute2 nftables util-linux); net must be none",
                missing.join(", ")
            )
        },
    ));
    out.push(check(
        "runtime firecracker",
        false,
        if Path::new("/dev/kvm").exists() {
            "not supported yet by this build"
        } else {
            "not supported yet by this build; /dev/kvm is absent"
        },
    ));
    out
}

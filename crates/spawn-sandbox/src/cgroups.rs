//! Memory, PID and CPU limits through cgroups, v1 or v2.
//!
//! Hosts differ: pure v2 (`/sys/fs/cgroup` is cgroup2 with the controllers), or hybrid
//! (v1 `memory`/`pids`/`cpu` hierarchies plus a cgroup2 mount carrying few or no
//! controllers, as on our build machines). The layout is read from `/proc/self/mountinfo`.
//! Every run gets one group per hierarchy named `<spawn pid>-<run id>` under a `spawn`
//! parent, so groups left by a spawn that was SIGKILLed can be found and removed later.

use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::SandboxError;

/// Where the controllers live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// v1 hierarchies, one mount point per controller.
    V1 {
        /// The `memory` hierarchy.
        memory: PathBuf,
        /// The `pids` hierarchy.
        pids: PathBuf,
        /// The `cpu` hierarchy, if mounted.
        cpu: Option<PathBuf>,
    },
    /// The unified hierarchy with the memory and pids controllers.
    V2 {
        /// Its mount point.
        root: PathBuf,
    },
}

impl Layout {
    /// Reads the layout from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Layout, SandboxError> {
        if let Some(layout) = Layout::standard() {
            return Ok(layout);
        }
        let info = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| SandboxError::cgroup("/proc/self/mountinfo", e))?;
        Layout::from_mountinfo(&info).ok_or_else(|| SandboxError::RuntimeUnavailable {
            runtime: "native".into(),
            reason: "no cgroup hierarchy with the memory and pids controllers is mounted".into(),
            fix: Some(
                "mount cgroup2 at /sys/fs/cgroup or the v1 memory and pids controllers".into(),
            ),
        })
    }

    /// The usual places (`/sys/fs/cgroup/{memory,pids,cpu}` for v1, `/sys/fs/cgroup` for
    /// v2), recognised by their control files: a few `stat`s instead of parsing mountinfo.
    fn standard() -> Option<Layout> {
        let root = Path::new("/sys/fs/cgroup");
        let (memory, pids, cpu) = (root.join("memory"), root.join("pids"), root.join("cpu"));
        if memory.join("memory.limit_in_bytes").is_file() && pids.join("pids.max").is_file() {
            let cpu = cpu.join("cpu.cfs_quota_us").is_file().then_some(cpu);
            return Some(Layout::V1 { memory, pids, cpu });
        }
        let controllers = fs::read_to_string(root.join("cgroup.controllers")).ok()?;
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        (has("memory") && has("pids")).then(|| Layout::V2 {
            root: root.to_path_buf(),
        })
    }

    /// Parses mountinfo text; `None` when memory and pids limits cannot be enforced.
    pub fn from_mountinfo(info: &str) -> Option<Layout> {
        let mut memory = None;
        let mut pids = None;
        let mut cpu = None;
        let mut v2 = None;
        for line in info.lines() {
            // "<id> <parent> <maj:min> <root> <mount point> <opts> <optional...> - <fstype> <source> <super opts>"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).map(unescape);
            let mut right = right.split(' ');
            let fstype = right.next();
            let super_opts = right.nth(1).unwrap_or("");
            let Some(mount_point) = mount_point else {
                continue;
            };
            match fstype {
                Some("cgroup") => {
                    for opt in super_opts.split(',') {
                        match opt {
                            "memory" => memory = Some(PathBuf::from(&mount_point)),
                            "pids" => pids = Some(PathBuf::from(&mount_point)),
                            "cpu" => cpu = Some(PathBuf::from(&mount_point)),
                            _ => {}
                        }
                    }
                }
                Some("cgroup2") => v2 = Some(PathBuf::from(&mount_point)),
                _ => {}
            }
        }
        if let (Some(memory), Some(pids)) = (memory, pids) {
            return Some(Layout::V1 { memory, pids, cpu });
        }
        let root = v2?;
        let controllers = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        (has("memory") && has("pids")).then_some(Layout::V2 { root })
    }

    /// A one-line description for `spawn doctor`.
    pub fn describe(&self) -> String {
        match self {
            Layout::V1 { memory, pids, cpu } => format!(
                "cgroup v1 (memory at {}, pids at {}, cpu {})",
                memory.display(),
                pids.display(),
                cpu.as_ref()
                    .map(|c| format!("at {}", c.display()))
                    .unwrap_or_else(|| "not mounted".into())
            ),
            Layout::V2 { root } => format!("cgroup v2 at {}", root.display()),
        }
    }

    fn parents(&self) -> Vec<PathBuf> {
        match self {
            Layout::V1 { memory, pids, cpu } => {
                let mut v = vec![memory.join("spawn"), pids.join("spawn")];
                if let Some(cpu) = cpu {
                    v.push(cpu.join("spawn"));
                }
                v
            }
            Layout::V2 { root } => vec![root.join("spawn")],
        }
    }
}

/// Mount points of every cgroup hierarchy in mountinfo text: v1 controllers, named v1
/// hierarchies (`name=systemd`) and the unified one.
fn hierarchies_in(info: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            matches!(right.split(' ').next(), Some("cgroup" | "cgroup2"))
                .then(|| left.split(' ').nth(4).map(|m| PathBuf::from(unescape(m))))
                .flatten()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Starts, on a thread of its own, a move of that thread into the cgroup it is already in
/// (a move the kernel then skips): a hint that makes the next move of a process between
/// groups, by anyone, cheaper. Returns the thread, which a caller may drop to let it end
/// by itself.
///
/// Every move into a cgroup takes the kernel's global lock on thread groups for writing;
/// the first writer after a quiet spell waits there for an RCU grace period, and the lock
/// stays in the mode where writers do not wait for about one more grace period after the
/// last one. Measured on these machines (Linux 6.18, cgroup v1 hierarchies and a v2 mount):
/// a move costs 5–16 ms cold and 0.1–0.2 ms within ~15 ms of another move, whether it is
/// written to a v1 `tasks` or `cgroup.procs` file or to a v2 `cgroup.threads`. runc moves
/// the container's init into its groups about 10 ms after it starts, and cold that wait was
/// a third of a bare `runc run`; a run that primes as it begins has it (mostly) behind it by
/// then. A host whose cgroup2 is mounted with `favordynmods` never waits, and the hint
/// costs a thread's start.
///
/// The thread moves only itself (its own id, into the group `/proc/thread-self/cgroup`
/// names): should anything move spawn meanwhile, spawn's process stays where it was put.
/// A failure (a delegated hierarchy that refuses the write, a missing file) is ignored by
/// the callers: it changes nothing of the run, at most the time the next move waits (only
/// accepted writes were measured priming).
pub fn prime_migrations(layout: &Layout) -> Option<std::thread::JoinHandle<io::Result<()>>> {
    let layout = layout.clone();
    std::thread::Builder::new()
        .name("spawn-prime".into())
        .spawn(move || {
            let own = fs::read_to_string("/proc/thread-self/cgroup")?;
            let target = prime_target(&layout, &own)
                .ok_or_else(|| io::Error::new(ErrorKind::NotFound, "no group of its own"))?;
            fs::write(target, nix::unistd::gettid().to_string())
        })
        .ok()
}

/// The file through which a thread moves itself into the group it is in, from the layout
/// and its `/proc/thread-self/cgroup` (`ID:CONTROLLERS:PATH` lines): the v1 `pids`
/// hierarchy's `tasks`, or the v2 group's `cgroup.threads`. `None` if the group is not
/// named there or its path is not a plain absolute one.
fn prime_target(layout: &Layout, own: &str) -> Option<PathBuf> {
    let (mount, file, wanted) = match layout {
        Layout::V1 { pids, .. } => (pids, "tasks", "pids"),
        Layout::V2 { root } => (root, "cgroup.threads", ""),
    };
    let path = own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if wanted.is_empty() {
            id == "0" && controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == wanted)
        };
        matches.then_some(path)
    })?;
    let relative = Path::new(path).strip_prefix("/").ok()?;
    if !relative
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return None;
    }
    Some(mount.join(relative).join(file))
}

/// `relative` (a cgroup path such as `spawn/NAME`) in every mounted hierarchy, whether or
/// not it exists there: where a runtime that makes its own groups (runc) may have made
/// one.
pub fn every_hierarchy(relative: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(relative)];
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let path = e.path();
            // Symlinks (cpu -> cpu,cpuacct) name a hierarchy listed under its own name.
            let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if is_dir && path.join("cgroup.procs").exists() {
                dirs.push(path.join(relative));
            }
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Removes run `name`'s group (`spawn/<name>`) from every mounted hierarchy, not only
/// the ones spawn configures: OCI runtimes create the run's group in all of them (runc
/// and runsc under `linux.cgroupsPath`). Missing groups are fine; the first one that
/// cannot be removed is the error (the others are still tried).
pub fn remove_everywhere(name: &str) -> Result<(), SandboxError> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| SandboxError::cgroup("/proc/self/mountinfo", e))?;
    let mut first_error = Ok(());
    for h in hierarchies_in(&info) {
        let removed = remove_one(&h.join("spawn").join(name));
        if first_error.is_ok() {
            first_error = removed;
        }
    }
    first_error
}

/// Mount points in mountinfo escape spaces and a few other bytes as `\ooo`.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The limits one run's cgroup enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory (swap is held to the same figure where the host accounts it).
    pub memory_bytes: u64,
    /// Maximum tasks.
    pub pids: u64,
    /// Thousandths of a CPU; `None` = no CPU limit.
    pub cpu_millis: Option<u64>,
}

/// What the cgroup observed, read when the run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Peak memory use in bytes, if the kernel reports it.
    pub peak_memory_bytes: Option<u64>,
    /// How many times the OOM killer killed a task of the run.
    pub oom_kills: u64,
    /// How many times a fork failed at the PID limit.
    pub pids_limit_hits: u64,
}

/// One run's cgroup (one directory per hierarchy).
#[derive(Debug)]
pub struct Cgroup {
    layout: Layout,
    dirs: Vec<PathBuf>,
    removed: bool,
}

fn write(path: &Path, value: &str) -> Result<(), SandboxError> {
    fs::write(path, value).map_err(|e| SandboxError::cgroup(path, e))
}

fn write_optional(path: &Path, value: &str) -> Result<(), SandboxError> {
    match fs::write(path, value) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other.map_err(|e| SandboxError::cgroup(path, e)),
    }
}

fn read_key(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Cgroup {
    /// A run's groups created by someone else (an OCI runtime), for reading their
    /// statistics. Dropping it does not remove them.
    pub fn existing(layout: &Layout, name: &str) -> Cgroup {
        Cgroup {
            layout: layout.clone(),
            dirs: layout.parents().into_iter().map(|p| p.join(name)).collect(),
            removed: true,
        }
    }

    /// Creates and configures the run's groups. Nothing is left behind on error.
    pub fn create(layout: &Layout, name: &str, limits: &Limits) -> Result<Cgroup, SandboxError> {
        if limits.cpu_millis.is_some() {
            if let Layout::V1 { cpu: None, .. } = layout {
                return Err(SandboxError::Unsupported(
                    "a CPU limit was asked for but the cpu cgroup controller is not mounted".into(),
                ));
            }
        }
        let mut cg = Cgroup {
            layout: layout.clone(),
            dirs: Vec::new(),
            removed: false,
        };
        for parent in layout.parents() {
            match fs::create_dir(&parent) {
                Ok(()) => {
                    if let Layout::V2 { root } = layout {
                        write(&root.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
                        write(&parent.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
                    }
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(SandboxError::cgroup(&parent, e)),
            }
            let dir = parent.join(name);
            fs::create_dir(&dir).map_err(|e| SandboxError::cgroup(&dir, e))?;
            cg.dirs.push(dir);
        }
        cg.configure(limits)?;
        Ok(cg)
    }

    fn configure(&self, limits: &Limits) -> Result<(), SandboxError> {
        let mem = limits.memory_bytes.to_string();
        match &self.layout {
            Layout::V1 { .. } => {
                let (memory, pids) = (&self.dirs[0], &self.dirs[1]);
                write(&memory.join("memory.limit_in_bytes"), &mem)?;
                write_optional(&memory.join("memory.memsw.limit_in_bytes"), &mem)?;
                write(&pids.join("pids.max"), &limits.pids.to_string())?;
                if let (Some(_), Some(dir)) = (limits.cpu_millis, self.dirs.get(2)) {
                    // A new group starts with the kernel's default period of 100 ms; each
                    // write re-programs the bandwidth timer, so only write what differs.
                    let period = dir.join("cpu.cfs_period_us");
                    if read_u64(&period) != Some(100_000) {
                        write(&period, "100000")?;
                    }
                }
            }
            Layout::V2 { .. } => {
                let dir = &self.dirs[0];
                write(&dir.join("memory.max"), &mem)?;
                write_optional(&dir.join("memory.swap.max"), "0")?;
                write(&dir.join("pids.max"), &limits.pids.to_string())?;
            }
        }
        match limits.cpu_millis {
            Some(cpu) => self.set_cpu(cpu),
            None => Ok(()),
        }
    }

    /// Sets the CPU limit (thousandths of a CPU, per period of 100 ms): when the groups
    /// are configured, and to change it later (gVisor's boot allowance).
    pub fn set_cpu(&self, cpu_millis: u64) -> Result<(), SandboxError> {
        let quota = cpu_millis.saturating_mul(100);
        match &self.layout {
            Layout::V1 { .. } => match self.dirs.get(2) {
                Some(dir) => write(&dir.join("cpu.cfs_quota_us"), &quota.to_string()),
                None => Err(SandboxError::Unsupported(
                    "a CPU limit was asked for but the cpu cgroup controller is not mounted".into(),
                )),
            },
            Layout::V2 { .. } => write(&self.dirs[0].join("cpu.max"), &format!("{quota} 100000")),
        }
    }

    /// Files through which a process moves *itself* into every group of the run by writing
    /// `0`. Moving oneself is cheap; moving another process makes the kernel wait for an RCU
    /// grace period (~10 ms on our hosts), which would dominate a sandbox's start time.
    pub fn join_files(&self) -> Result<Vec<std::os::fd::OwnedFd>, SandboxError> {
        let file = match self.layout {
            Layout::V1 { .. } => "tasks",
            Layout::V2 { .. } => "cgroup.procs",
        };
        self.dirs
            .iter()
            .map(|d| {
                let path = d.join(file);
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(std::os::fd::OwnedFd::from)
                    .map_err(|e| SandboxError::cgroup(path, e))
            })
            .collect()
    }

    /// Moves a process into every group of the run.
    pub fn add(&self, pid: i32) -> Result<(), SandboxError> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Reads what the run consumed.
    pub fn stats(&self) -> Stats {
        match &self.layout {
            Layout::V1 { .. } => Stats {
                peak_memory_bytes: read_u64(&self.dirs[0].join("memory.max_usage_in_bytes")),
                oom_kills: read_key(&self.dirs[0].join("memory.oom_control"), "oom_kill")
                    .unwrap_or(0),
                pids_limit_hits: read_key(&self.dirs[1].join("pids.events"), "max").unwrap_or(0),
            },
            Layout::V2 { .. } => Stats {
                peak_memory_bytes: read_u64(&self.dirs[0].join("memory.peak")),
                oom_kills: read_key(&self.dirs[0].join("memory.events"), "oom_kill").unwrap_or(0),
                pids_limit_hits: read_key(&self.dirs[0].join("pids.events"), "max").unwrap_or(0),
            },
        }
    }

    /// The run's directories, one per hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Kills every process of the run and removes the groups.
    pub fn remove(mut self) -> Result<(), SandboxError> {
        self.removed = true;
        remove_dirs(&self.dirs)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.removed {
            let _ = remove_dirs(&self.dirs);
        }
    }
}

fn kill_procs(dir: &Path) {
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Removes groups, killing what is left in them; retries while the kernel finishes tearing
/// processes down. Missing directories are fine.
fn remove_dirs(dirs: &[PathBuf]) -> Result<(), SandboxError> {
    let mut last = Ok(());
    for dir in dirs.iter().rev() {
        last = remove_one(dir);
    }
    last
}

/// Removes one group directory, killing what is left in it.
pub fn remove_path(dir: &Path) -> Result<(), SandboxError> {
    remove_one(dir)
}

fn remove_one(dir: &Path) -> Result<(), SandboxError> {
    // Up to ~2 s: a memory-heavy process can take a while to be torn down.
    for attempt in 0..400 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let _ = fs::write(dir.join("cgroup.kill"), "1");
                kill_procs(dir);
                std::thread::sleep(Duration::from_micros(if attempt < 20 { 200 } else { 5000 }));
            }
            Err(e) => return Err(SandboxError::cgroup(dir, e)),
        }
    }
    Err(SandboxError::cgroup(
        dir,
        io::Error::other("still busy after killing its processes"),
    ))
}

/// Whether `pid` is a live process (a zombie, exited but not yet reaped, is not).
pub fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which ends with the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Removes groups left behind by spawn processes that no longer exist (e.g. SIGKILLed
/// while their guard was killed too). Returns how many were removed.
pub fn reap_stale(layout: &Layout) -> usize {
    // Every run has a group in each hierarchy under the same name, so listing the first
    // hierarchy finds them all (listing a cgroup directory is not cheap).
    let parents = layout.parents();
    let Some(first) = parents.first() else {
        return 0;
    };
    let Ok(entries) = fs::read_dir(first) else {
        return 0;
    };
    let mut reaped = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if owner <= 0 || process_alive(owner) {
            continue;
        }
        let removed = match name.to_str() {
            Some(name) => remove_everywhere(name).is_ok(),
            None => false,
        };
        if removed {
            reaped += 1;
        }
    }
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cgroup_hierarchy_is_listed_once() {
        let info = "\
30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
32 25 0:28 / /sys/fs/cgroup/systemd rw,relatime shared:12 - cgroup cgroup rw,xattr,name=systemd
33 25 0:29 / /sys/fs/cgroup/unified rw,relatime shared:13 - cgroup2 cgroup2 rw
34 25 0:29 / /sys/fs/cgroup/unified rw,relatime shared:13 - cgroup2 cgroup2 rw
35 25 0:30 / /sys/fs/cgroup/my\\040dir rw - cgroup cgroup rw,pids
22 27 0:21 / /proc rw,relatime - proc proc rw
36 25 0:31 / /tmp/cgroup\\040-\\040x rw - tmpfs tmpfs rw
";
        let got = hierarchies_in(info);
        let want: Vec<PathBuf> = [
            "/sys/fs/cgroup/cpu,cpuacct",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/my dir",
            "/sys/fs/cgroup/systemd",
            "/sys/fs/cgroup/unified",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_primer_moves_its_thread_into_its_own_group_and_nowhere_else() {
        let v1 = Layout::V1 {
            memory: "/sys/fs/cgroup/memory".into(),
            pids: "/sys/fs/cgroup/pids".into(),
            cpu: None,
        };
        let v2 = Layout::V2 {
            root: "/sys/fs/cgroup".into(),
        };
        let hybrid = "9:name=systemd:/\n8:pids:/user.slice/a\n4:memory:/x\n0::/\n";
        let rows: &[(&Layout, &str, Option<&str>)] = &[
            (&v1, hybrid, Some("/sys/fs/cgroup/pids/user.slice/a/tasks")),
            (&v1, "3:cpu,pids:/\n", Some("/sys/fs/cgroup/pids/tasks")),
            (
                &v1,
                "3:pids:/a:b c\n",
                Some("/sys/fs/cgroup/pids/a:b c/tasks"),
            ),
            (&v2, hybrid, Some("/sys/fs/cgroup/cgroup.threads")),
            (
                &v2,
                "0::/system.slice/s\n",
                Some("/sys/fs/cgroup/system.slice/s/cgroup.threads"),
            ),
            // Not named, or named by anything but a plain absolute path.
            (&v1, "3:pidsx:/a\n2:xpids:/b\n", None),
            (&v1, "", None),
            (&v1, "8:pids\n", None),
            (&v1, "8:pids:relative\n", None),
            (&v1, "8:pids:/a/../../etc\n", None),
            (
                &v1,
                "8:pids:/a/./b\n",
                Some("/sys/fs/cgroup/pids/a/b/tasks"),
            ),
            (&v2, "1:name=systemd:/\n", None),
            (&v2, "0:pids:/\n", None),
            (&v2, "0::/..\n", None),
        ];
        for (layout, own, want) in rows {
            assert_eq!(
                prime_target(layout, own),
                want.map(PathBuf::from),
                "{layout:?} {own:?}"
            );
        }
    }

    /// On this host: the primer's write is accepted, and spawn's process is in the same
    /// groups afterwards.
    #[test]
    fn priming_leaves_the_process_where_it_is() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test moves a thread between cgroups: run it as root (make test does)");
        }
        let before = fs::read_to_string("/proc/self/cgroup").unwrap();
        let layout = Layout::detect().unwrap();
        let primer = prime_migrations(&layout).expect("the primer's thread starts");
        primer.join().unwrap().expect("the kernel accepts the move");
        assert_eq!(fs::read_to_string("/proc/self/cgroup").unwrap(), before);
    }

    /// On this host: a run's group made with one CPU limit holds another once set, in
    /// whichever hierarchy has the cpu controller.
    #[test]
    fn a_groups_cpu_limit_can_be_changed() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test makes cgroups: run it as root (make test does)");
        }
        let layout = Layout::detect().unwrap();
        let name = format!("{}-test-set-cpu", std::process::id());
        let limits = Limits {
            memory_bytes: 64 << 20,
            pids: 16,
            cpu_millis: Some(1500),
        };
        let group = Cgroup::create(&layout, &name, &limits).unwrap();
        let quota = || {
            group.dirs().iter().find_map(|d| {
                let v1 = fs::read_to_string(d.join("cpu.cfs_quota_us")).ok();
                let v2 = fs::read_to_string(d.join("cpu.max")).ok();
                v1.or(v2)?.split_whitespace().next()?.parse::<u64>().ok()
            })
        };
        assert_eq!(quota(), Some(150_000));
        for (millis, want) in [(500, 50_000), (10, 1000), (2000, 200_000)] {
            group.set_cpu(millis).unwrap();
            assert_eq!(quota(), Some(want), "{millis} thousandths");
        }
    }

    #[test]
    fn hybrid_layout_prefers_v1_controllers() {
        let info = "\
30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/pids rw,relatime shared:11 - cgroup cgroup rw,pids
32 25 0:28 / /sys/fs/cgroup/cpu rw,relatime shared:12 - cgroup cgroup rw,cpu
33 25 0:29 / /sys/fs/cgroup/unified rw,relatime shared:13 - cgroup2 cgroup2 rw
";
        assert_eq!(
            Layout::from_mountinfo(info),
            Some(Layout::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                pids: "/sys/fs/cgroup/pids".into(),
                cpu: Some("/sys/fs/cgroup/cpu".into()),
            })
        );
    }

    #[test]
    fn combined_cpu_cpuacct_mount_counts_as_cpu() {
        let info = "\
30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
";
        match Layout::from_mountinfo(info) {
            Some(Layout::V1 { cpu, .. }) => {
                assert_eq!(cpu, Some("/sys/fs/cgroup/cpu,cpuacct".into()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn no_controllers_means_no_layout() {
        let info = "33 25 0:29 / /nonexistent/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(Layout::from_mountinfo(info), None);
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/trailing\\"), "/trailing\\");
    }
}

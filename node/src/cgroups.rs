//! Resource limits for tasks through cgroups, v2 or v1.
//!
//! - **v2** (unified hierarchy with the `cpu`, `memory` and `pids`
//!   controllers): the agent moves itself into a leaf `agent/` of its own
//!   cgroup, enables the controllers, and puts each task in
//!   `shoal/<node id>/<task>/`: `cpu.max`, `memory.max`, `pids.max`; an OOM
//!   kill shows in `memory.events`.
//! - **v1** (the controllers mounted separately, as on the machines here): a
//!   `shoal/<node id>/<task>/` group under the agent's own group in each of `cpu`,
//!   `memory` and `pids`: `cpu.cfs_quota_us`, `memory.limit_in_bytes`,
//!   `pids.max`; an OOM kill shows in `memory.oom_control`.
//! - **none** otherwise, with the reason; never silently.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where tasks' groups live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// The unified hierarchy; `base` holds the tasks' groups.
    V2 {
        /// `<agent's cgroup>/shoal`.
        base: PathBuf,
    },
    /// Separate hierarchies.
    V1 {
        /// `<cpu mount><agent's group>/shoal`.
        cpu: PathBuf,
        /// `<memory mount><agent's group>/shoal`.
        memory: PathBuf,
        /// `<pids mount><agent's group>/shoal`.
        pids: PathBuf,
    },
    /// No limits.
    None {
        /// Why.
        why: String,
    },
}

/// A task's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskGroup {
    v2: bool,
    dirs: Vec<PathBuf>,
}

const PERIOD_US: u64 = 100_000;

fn own_group(controller: &str) -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
        if names.split(',').any(|n| n == controller) {
            return Some(path.to_owned());
        }
    }
    None
}

fn join(mount: &Path, group: &str) -> PathBuf {
    mount.join(group.trim_start_matches('/'))
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl Isolation {
    /// Finds what this host offers; `scope` (the node id) separates the
    /// groups of agents sharing a host.
    pub fn detect(scope: &str) -> Isolation {
        match detect_v2(scope) {
            Ok(Some(i)) => return i,
            Ok(None) => {}
            Err(e) => {
                return Isolation::None {
                    why: format!("cgroup v2 present but unusable: {e}"),
                };
            }
        }
        match detect_v1(scope) {
            Ok(i) => i,
            Err(why) => Isolation::None { why },
        }
    }

    /// `cgroup-v2`, `cgroup-v1` or `none`.
    pub fn name(&self) -> &'static str {
        match self {
            Isolation::V2 { .. } => "cgroup-v2",
            Isolation::V1 { .. } => "cgroup-v1",
            Isolation::None { .. } => "none",
        }
    }

    /// Creates the group of a task (removing a stale one of the same name).
    pub fn create(&self, name: &str) -> io::Result<Option<TaskGroup>> {
        let (v2, dirs) = match self {
            Isolation::V2 { base } => (true, vec![base.join(name)]),
            Isolation::V1 { cpu, memory, pids } => (
                false,
                vec![cpu.join(name), memory.join(name), pids.join(name)],
            ),
            Isolation::None { .. } => return Ok(None),
        };
        let group = TaskGroup { v2, dirs };
        group.remove();
        for d in &group.dirs {
            fs::create_dir_all(d)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", d.display())))?;
        }
        Ok(Some(group))
    }

    /// The group of a task that may exist from before a restart.
    pub fn existing(&self, name: &str) -> Option<TaskGroup> {
        let (v2, dirs) = match self {
            Isolation::V2 { base } => (true, vec![base.join(name)]),
            Isolation::V1 { cpu, memory, pids } => (
                false,
                vec![cpu.join(name), memory.join(name), pids.join(name)],
            ),
            Isolation::None { .. } => return None,
        };
        dirs.iter()
            .all(|d| d.exists())
            .then_some(TaskGroup { v2, dirs })
    }
}

fn detect_v2(scope: &str) -> io::Result<Option<Isolation>> {
    let root = Path::new("/sys/fs/cgroup");
    let controllers = match fs::read_to_string(root.join("cgroup.controllers")) {
        Ok(c) => c,
        Err(_) => return Ok(None),
    };
    let have: Vec<&str> = controllers.split_whitespace().collect();
    if !["cpu", "memory", "pids"].iter().all(|c| have.contains(c)) {
        return Ok(None);
    }
    let own = own_group("").unwrap_or_else(|| "/".into());
    let base = join(root, &own);
    // No process may sit in a group that delegates controllers: move the
    // agent into a leaf first.
    let leaf = base.join("agent");
    fs::create_dir_all(&leaf)?;
    write(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
    write(&base.join("cgroup.subtree_control"), "+cpu +memory +pids")?;
    let shoal = base.join("shoal");
    fs::create_dir_all(&shoal)?;
    write(&shoal.join("cgroup.subtree_control"), "+cpu +memory +pids")?;
    let scoped = shoal.join(scope);
    fs::create_dir_all(&scoped)?;
    write(&scoped.join("cgroup.subtree_control"), "+cpu +memory +pids")?;
    Ok(Some(Isolation::V2 { base: scoped }))
}

fn detect_v1(scope: &str) -> Result<Isolation, String> {
    let root = Path::new("/sys/fs/cgroup");
    let mut found = Vec::new();
    for controller in ["cpu", "memory", "pids"] {
        let mount = root.join(controller);
        if !mount.join("cgroup.procs").exists() {
            return Err(format!(
                "no cgroup v1 {controller} controller at {}",
                mount.display()
            ));
        }
        let own = own_group(controller).unwrap_or_else(|| "/".into());
        let dir = join(&mount, &own).join("shoal").join(scope);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        found.push(dir);
    }
    let pids = found.pop().expect("three");
    let memory = found.pop().expect("three");
    let cpu = found.pop().expect("three");
    Ok(Isolation::V1 { cpu, memory, pids })
}

impl TaskGroup {
    /// Sets CPU, memory and process-count limits.
    pub fn limit(&self, cpus_milli: u64, memory_mb: u64, pids_max: u64) -> io::Result<()> {
        let quota = (cpus_milli * PERIOD_US / 1000).max(1000);
        let bytes = memory_mb * 1024 * 1024;
        if self.v2 {
            let d = &self.dirs[0];
            write(&d.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
            write(&d.join("memory.max"), &bytes.to_string())?;
            // Without swap a limit is a limit.
            let _ = write(&d.join("memory.swap.max"), "0");
            write(&d.join("pids.max"), &pids_max.to_string())?;
        } else {
            write(
                &self.dirs[0].join("cpu.cfs_period_us"),
                &PERIOD_US.to_string(),
            )?;
            write(&self.dirs[0].join("cpu.cfs_quota_us"), &quota.to_string())?;
            write(
                &self.dirs[1].join("memory.limit_in_bytes"),
                &bytes.to_string(),
            )?;
            let _ = write(
                &self.dirs[1].join("memory.memsw.limit_in_bytes"),
                &bytes.to_string(),
            );
            let _ = write(&self.dirs[1].join("memory.swappiness"), "0");
            write(&self.dirs[2].join("pids.max"), &pids_max.to_string())?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process must write its pid to.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Whether the kernel killed a process of the group for memory.
    pub fn oom_killed(&self) -> bool {
        let (file, dir) = if self.v2 {
            ("memory.events", &self.dirs[0])
        } else {
            ("memory.oom_control", &self.dirs[1])
        };
        fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .is_some_and(|n| n > 0)
    }

    /// Processes still in the group.
    pub fn pids(&self) -> Vec<i32> {
        let file = if self.v2 {
            &self.dirs[0]
        } else {
            &self.dirs[2]
        }
        .join("cgroup.procs");
        fs::read_to_string(file)
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills what is left in the group and removes it.
    pub fn remove(&self) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for d in &self.dirs {
            if d.exists() {
                // A group empties a moment after its last process dies.
                for _ in 0..50 {
                    if fs::remove_dir(d).is_ok() || !d.exists() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_names_what_it_found() {
        let i = Isolation::detect("test");
        match &i {
            Isolation::None { why } => assert!(!why.is_empty()),
            _ => assert_ne!(i.name(), "none"),
        }
    }
}

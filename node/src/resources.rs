//! What this machine offers, detected at start-up (flags override).

use std::path::Path;

use shoal_gossip::Capacity;

/// Detected resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    /// CPUs usable by this process, in thousandths of a core.
    pub cpus_milli: u32,
    /// Total memory, MiB.
    pub memory_mb: u64,
    /// Space available on the data dir's file system, MiB.
    pub disk_mb: u64,
    /// GPUs (NVIDIA device nodes `/dev/nvidiaN`).
    pub gpus: u32,
}

impl Detected {
    /// As gossip capacity.
    pub fn capacity(&self) -> Capacity {
        Capacity {
            cpus_milli: self.cpus_milli,
            memory_mb: self.memory_mb,
            disk_mb: self.disk_mb,
            gpus: self.gpus,
        }
    }
}

/// Detects CPUs (respecting affinity and cgroup quotas, as
/// `available_parallelism` does), memory, disk under `data_dir`, and GPUs.
pub fn detect(data_dir: &Path) -> Detected {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let memory_mb = sysinfo::System::new()
        .map(|mut sys| {
            sys.refresh_memory();
            sys.total_memory() / (1024 * 1024)
        })
        .unwrap_or(0);
    let disk_mb = nix::sys::statvfs::statvfs(data_dir)
        .map(|s| s.blocks_available() * s.fragment_size() / (1024 * 1024))
        .unwrap_or(0);
    Detected {
        cpus_milli: u32::try_from(cpus * 1000).unwrap_or(u32::MAX),
        memory_mb,
        disk_mb,
        gpus: count_gpus(Path::new("/dev")),
    }
}

fn count_gpus(dev: &Path) -> u32 {
    let Ok(entries) = std::fs::read_dir(dev) else {
        return 0;
    };
    let n = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("nvidia")
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The host name, or `node` when it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_something() {
        let d = detect(Path::new("/"));
        assert!(d.cpus_milli >= 1000);
        assert!(d.memory_mb > 0);
    }

    #[test]
    fn counts_only_numbered_nvidia_devices() {
        let tmp = tempfile::tempdir().unwrap();
        for f in ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "null"] {
            std::fs::write(tmp.path().join(f), b"").unwrap();
        }
        assert_eq!(count_gpus(tmp.path()), 2);
    }
}

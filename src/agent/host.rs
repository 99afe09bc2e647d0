//! What the agent reports about its machine: CPUs, memory, identity, OS.

/// Capacity and identity of the machine the agent runs on.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub cpus: usize,
    pub memory_kib: u64,
    pub machine_id: String,
    pub os_image: String,
}

impl HostInfo {
    /// Reads `/proc` and `/etc`; missing files give conservative values.
    pub fn read() -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
            .unwrap_or(0);
        let machine_id = std::fs::read_to_string("/etc/machine-id").map(|s| s.trim().to_string()).unwrap_or_default();
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|r| r.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
            .unwrap_or_else(|| "linux".into());
        HostInfo { cpus, memory_kib, machine_id, os_image }
    }
}

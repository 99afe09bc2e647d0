//! What the agent reports about its machine: CPUs, memory, identity, OS.

/// Capacity and identity of the machine the agent runs on.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub cpus: usize,
    pub memory_kib: u64,
    pub machine_id: String,
    pub os_image: String,
    /// `/proc/sys/kernel/random/boot_id`: changes at every boot.
    pub boot_id: String,
    /// `/proc/sys/kernel/osrelease`, as `uname -r` prints it.
    pub kernel_version: String,
    /// The firmware's UUID (`/sys/class/dmi/id/product_uuid`, readable by root), else empty.
    pub system_uuid: String,
    /// `docker://<version>`, once Docker has answered (filled by the agent, not read here).
    pub container_runtime_version: String,
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
        let first_line = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default();
        HostInfo {
            cpus,
            memory_kib,
            machine_id,
            os_image,
            boot_id: first_line("/proc/sys/kernel/random/boot_id"),
            kernel_version: first_line("/proc/sys/kernel/osrelease"),
            system_uuid: first_line("/sys/class/dmi/id/product_uuid"),
            container_runtime_version: String::new(),
        }
    }
}

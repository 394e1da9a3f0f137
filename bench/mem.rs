//! Memory readings from /proc.

use std::fs;

/// Server process memory (kB, as the kernel reports it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcMem {
    pub vm_rss_kb: u64,
    pub rss_anon_kb: u64,
}

/// Reads `VmRSS` and `RssAnon` from /proc/PID/status.
pub fn proc_mem(pid: u32) -> std::io::Result<ProcMem> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(ProcMem {
        vm_rss_kb: field_kb(&s, "VmRSS:").unwrap_or(0),
        rss_anon_kb: field_kb(&s, "RssAnon:").unwrap_or(0),
    })
}

/// Reads `Slab` (kB) from /proc/meminfo: the kernel's slab memory, machine-wide.
pub fn slab_kb() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| field_kb(&s, "Slab:"))
        .unwrap_or(0)
}

fn field_kb(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l[name.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

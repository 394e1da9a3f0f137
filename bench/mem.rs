//! Memory and CPU readings from /proc.
//!
//! A server may be several processes (nginx: a master and its workers), so
//! readings are summed over the process and all its descendants.

use std::fs;

/// Server process memory (kB, as the kernel reports it), summed over the
/// process tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcMem {
    pub vm_rss_kb: u64,
    pub rss_anon_kb: u64,
    /// Proportional set size (shared pages split between the processes that
    /// map them), from /proc/PID/smaps_rollup: the fair sum over several processes.
    pub pss_kb: u64,
}

/// The process and its descendants (children of every thread, recursively).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 4096 {
        let p = out[i];
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(s) = fs::read_to_string(t.path().join("children")) {
                    out.extend(s.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
                }
            }
        }
        i += 1;
    }
    out
}

/// Reads `VmRSS`, `RssAnon` (/proc/PID/status) and `Pss` (smaps_rollup),
/// summed over PID and its descendants.
pub fn proc_mem(pid: u32) -> std::io::Result<ProcMem> {
    let mut m = ProcMem::default();
    for (i, p) in tree(pid).into_iter().enumerate() {
        let s = match fs::read_to_string(format!("/proc/{p}/status")) {
            Ok(s) => s,
            Err(e) if i == 0 => return Err(e),
            Err(_) => continue,
        };
        m.vm_rss_kb += field_kb(&s, "VmRSS:").unwrap_or(0);
        m.rss_anon_kb += field_kb(&s, "RssAnon:").unwrap_or(0);
        if let Ok(r) = fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
            m.pss_kb += field_kb(&r, "Pss:").unwrap_or(0);
        }
    }
    Ok(m)
}

/// CPU seconds used so far by PID and its descendants: (user, system).
pub fn cpu_split(pid: u32) -> (f64, f64) {
    let tick = clock_ticks_per_sec();
    let (mut user, mut system) = (0u64, 0u64);
    for p in tree(pid) {
        if let Ok(s) = fs::read_to_string(format!("/proc/{p}/stat")) {
            // Fields after the parenthesised command name: state is field 3; utime 14, stime 15.
            if let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                if f.len() > 12 {
                    user += f[11].parse::<u64>().unwrap_or(0);
                    system += f[12].parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    (user as f64 / tick, system as f64 / tick)
}

/// CPU seconds of this process (all threads) so far: (user, system).
pub fn self_cpu_split() -> (f64, f64) {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(ru.ru_utime), t(ru.ru_stime))
}

/// Reads `Slab` (kB) from /proc/meminfo: the kernel's slab memory, machine-wide.
pub fn slab_kb() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| field_kb(&s, "Slab:"))
        .unwrap_or(0)
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// CPU time the hypervisor took from this machine's CPUs (the `steal` column of
/// /proc/stat, summed over all CPUs), in seconds; 0 where the kernel does not
/// report it: time this VM's CPUs had work to run and the hypervisor ran
/// something else instead.
pub fn steal_secs() -> f64 {
    let ticks = fs::read_to_string("/proc/stat").ok().and_then(|s| {
        let line = s.lines().next()?;
        // "cpu user nice system idle iowait irq softirq steal ..."
        line.split_whitespace().nth(8)?.parse::<u64>().ok()
    });
    ticks.map_or(0.0, |t| t as f64 / clock_ticks_per_sec())
}

/// Clock ticks per second of /proc's CPU times (`_SC_CLK_TCK`, at least 1).
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf takes no pointers and has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

fn field_kb(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l[name.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

//! Memory readings of the server (and the kernel's slab), waiting for them to
//! settle, and the per-connection arithmetic.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::mem;

/// A memory reading of the server and the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Reading {
    pub(super) proc: mem::ProcMem,
    pub(super) slab_kb: u64,
}

pub(super) fn read_mem(pid: Option<u32>) -> Option<Reading> {
    let pid = pid?;
    match mem::proc_mem(pid) {
        Ok(p) => Some(Reading {
            proc: p,
            slab_kb: mem::slab_kb(),
        }),
        Err(e) => {
            eprintln!("switchboard-bench: cannot read /proc/{pid}/status: {e}");
            None
        }
    }
}

/// Waits until the server's VmRSS has changed by at most 8 kB over 1 s (or
/// `max` passed), calling `tick` to keep the generators serviced.
/// Returns the final reading and the seconds waited.
pub(super) fn settle(
    pid: Option<u32>,
    min_secs: u64,
    max_secs: u64,
    mut tick: impl FnMut(Duration),
) -> (Option<Reading>, f64) {
    let (min, max) = (
        Duration::from_secs(min_secs),
        Duration::from_secs(max_secs.max(min_secs)),
    );
    let t = Instant::now();
    let mut window: VecDeque<u64> = VecDeque::new();
    loop {
        let Some(r) = read_mem(pid) else {
            return (None, 0.0);
        };
        window.push_back(r.proc.vm_rss_kb);
        if window.len() > 5 {
            window.pop_front();
        }
        let stable =
            window.len() == 5 && window.iter().max().unwrap() - window.iter().min().unwrap() <= 8;
        if (stable && t.elapsed() >= min) || t.elapsed() >= max {
            return (read_mem(pid), t.elapsed().as_secs_f64());
        }
        tick(Duration::from_millis(250));
    }
}

pub(super) fn per_conn(before_kb: u64, after_kb: u64, n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    ((after_kb as f64 - before_kb as f64) * 1024.0 / n as f64 * 10.0).round() / 10.0
}

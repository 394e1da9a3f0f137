//! The JSON summary printed at the end of a run, and the exit code.

use std::process::ExitCode;

use super::conn::Counts;
use super::memory::{per_conn, Reading};
use super::{IdleArgs, Warm};
use crate::mem;

/// Result of the connect phase (of all generators).
pub(super) struct Outcome {
    pub(super) counts: Counts,
    pub(super) connect_secs: f64,
    pub(super) timed_out: bool,
}

/// Prints the JSON summary; success if every connection was established.
pub(super) fn report(
    a: &IdleArgs,
    nofile: u64,
    warm: &Warm,
    [before, after, end]: [Option<Reading>; 3],
    settle_secs: f64,
    o: &Outcome,
) -> ExitCode {
    let v = summary(a, nofile, warm, before, after, end, settle_secs, o);
    println!(
        "{}",
        serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
    );
    if o.counts.established == a.connections {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[allow(clippy::too_many_arguments)]
fn summary(
    a: &IdleArgs,
    nofile: u64,
    warm: &Warm,
    before: Option<Reading>,
    after: Option<Reading>,
    end: Option<Reading>,
    settle_secs: f64,
    o: &Outcome,
) -> serde_json::Value {
    let est = o.counts.established;
    let mut v = serde_json::json!({
        "scenario": "idle",
        "target": a.target.name(),
        "transport": a.target.transport_name(),
        "server": a.server.to_string(),
        "connections": a.connections,
        "loadavg_1m": mem::loadavg(),
        "established": est,
        "failed": o.counts.failed,
        "dropped_after_established": o.counts.dropped,
        "failure_reasons": o.counts.reasons,
        "connect_timed_out": o.timed_out,
        "procs": a.procs.max(1),
        "sources": a.sources,
        "offset": a.offset,
        "nofile_limit_per_proc": nofile,
        "connect_secs": (o.connect_secs * 1000.0).round() / 1000.0,
        "connect_rate_per_sec": if o.connect_secs > 0.0 { (est as f64 / o.connect_secs).round() } else { 0.0 },
        "hold_secs": a.hold,
        "tls": a.tls,
        "warmup": a.warmup,
        "warmup_established": warm.established,
    });
    if let (Some(b), Some(af)) = (before, after) {
        let m = v.as_object_mut().unwrap();
        m.insert("server_pid".into(), a.pid.into());
        m.insert(
            "settle_secs".into(),
            ((settle_secs * 100.0).round() / 100.0).into(),
        );
        m.insert("rss_before_kb".into(), b.proc.vm_rss_kb.into());
        m.insert("rss_after_kb".into(), af.proc.vm_rss_kb.into());
        m.insert("rss_anon_before_kb".into(), b.proc.rss_anon_kb.into());
        m.insert("rss_anon_after_kb".into(), af.proc.rss_anon_kb.into());
        m.insert("pss_before_kb".into(), b.proc.pss_kb.into());
        m.insert("pss_after_kb".into(), af.proc.pss_kb.into());
        m.insert("slab_before_kb".into(), b.slab_kb.into());
        m.insert("slab_after_kb".into(), af.slab_kb.into());
        for (name, kb) in [
            ("pss", (b.proc.pss_kb, af.proc.pss_kb)),
            ("rss", (b.proc.vm_rss_kb, af.proc.vm_rss_kb)),
            ("rss_anon", (b.proc.rss_anon_kb, af.proc.rss_anon_kb)),
            ("slab", (b.slab_kb, af.slab_kb)),
        ] {
            m.insert(
                format!("{name}_bytes_per_conn"),
                per_conn(kb.0, kb.1, est).into(),
            );
        }
        if let Some(e) = end {
            m.insert("rss_end_of_hold_kb".into(), e.proc.vm_rss_kb.into());
        }
        // From a cold server: the warm-up's one-time costs spread over all connections.
        if let Some(c) = warm.cold {
            let all = est + warm.established;
            m.insert("pss_before_warmup_kb".into(), c.proc.pss_kb.into());
            m.insert(
                "rss_anon_before_warmup_kb".into(),
                c.proc.rss_anon_kb.into(),
            );
            for (name, kb) in [
                ("pss", (c.proc.pss_kb, af.proc.pss_kb)),
                ("rss_anon", (c.proc.rss_anon_kb, af.proc.rss_anon_kb)),
            ] {
                m.insert(
                    format!("{name}_bytes_per_conn_cold"),
                    per_conn(kb.0, kb.1, all).into(),
                );
            }
        }
    }
    v
}

//! The admin listener: `/info`, `/connections`, `/metrics`, `/healthz`,
//! `/readyz`, `/debug/pprof/profile` and `/debug/memory`, on its own address
//! (never the client port) and its own threads, so a busy or stuck event loop
//! cannot hide itself from the operator.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::accept::{accept_error_is_transient, AcceptStreak, ACCEPT_BACKOFF_MS};
use super::{ConnInfo, Envelope, Shared};
use crate::proto::head::{query_param, Limits, Method};
use crate::proto::response;
use gate::{AllowedHosts, HeadRead, Slot, Slots};

mod gate;
mod metrics;

/// Write timeout of an admin connection (the head has a whole-head deadline,
/// see `gate`).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Write timeout of the `503` written by the accept thread itself.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait for the workers to answer `/connections`.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest CPU profile.
const MAX_PROFILE_SECS: u64 = 60;

/// Process-wide admin state.
struct Admin {
    shared: Arc<Shared>,
    slots: Slots,
    hosts: AllowedHosts,
    profiling: AtomicBool,
    /// Accepts on the admin listener that failed for want of a resource.
    accept_failures: AtomicU64,
    /// Admin requests refused, by [`Refusal`].
    refused: [AtomicU64; Refusal::ALL.len()],
}

/// Why the admin listener refused a request.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Every slot busy, or a probe slot asked for another path (503).
    Overloaded,
    /// The head did not arrive within the deadline (408).
    Timeout,
    /// `Host` does not name this listener (421).
    Host,
}

impl Refusal {
    const ALL: [Refusal; 3] = [Refusal::Overloaded, Refusal::Timeout, Refusal::Host];

    fn as_str(self) -> &'static str {
        match self {
            Refusal::Overloaded => "overloaded",
            Refusal::Timeout => "timeout",
            Refusal::Host => "host",
        }
    }
}

/// Binds the admin listener on `addr` and serves it on a background thread.
pub fn start(addr: SocketAddr, shared: Arc<Shared>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let hosts = AllowedHosts::new(&shared.config.admin_hosts, shared.config.admin);
    let admin = Arc::new(Admin {
        shared,
        slots: Slots::default(),
        hosts,
        profiling: AtomicBool::new(false),
        accept_failures: AtomicU64::new(0),
        refused: Default::default(),
    });
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            let start = Instant::now();
            let ms = || start.elapsed().as_millis() as u64;
            let mut streak = AcceptStreak::default();
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(s) => {
                        if let Some((lasted, failures)) = streak.ended(ms()) {
                            log::warn!(
                                "admin: accepting again after {lasted} ms ({failures} failed accepts)"
                            );
                        }
                        s
                    }
                    Err(e) if accept_error_is_transient(&e) => continue,
                    Err(e) => {
                        admin.accept_failures.fetch_add(1, Relaxed);
                        // Logged when a streak of failures starts, not every 100 ms.
                        if streak.failed(ms()) {
                            log::warn!(
                                "admin: accept failed: {e}; retrying every {ACCEPT_BACKOFF_MS} ms"
                            );
                        }
                        std::thread::sleep(Duration::from_millis(ACCEPT_BACKOFF_MS));
                        continue;
                    }
                };
                let Some(slot) = admin.slots.take() else {
                    admin.count(Refusal::Overloaded);
                    let mut out = Vec::new();
                    response::write_json_error(
                        &mut out,
                        503,
                        "overloaded",
                        "too many admin requests at once",
                        true,
                    );
                    let mut s = stream;
                    let _ = s.set_write_timeout(Some(REFUSE_TIMEOUT));
                    let _ = s.write_all(&out);
                    continue;
                };
                let a = admin.clone();
                let spawned = std::thread::Builder::new()
                    .name("admin-conn".into())
                    .spawn(move || {
                        let _ = a.serve(stream, slot);
                        a.slots.release(slot);
                    });
                if spawned.is_err() {
                    admin.slots.release(slot);
                }
            }
        })?;
    Ok(local)
}

impl Admin {
    fn count(&self, r: Refusal) {
        self.refused[r as usize].fetch_add(1, Relaxed);
    }

    /// Serves one request (admin connections are not kept alive) in `slot`.
    fn serve(&self, mut stream: TcpStream, slot: Slot) -> io::Result<()> {
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let deadline = Instant::now() + slot.head_deadline();
        let mut out = Vec::new();
        let head = match gate::read_head(&mut stream, deadline, &Limits::default())? {
            HeadRead::Head(h) => h,
            HeadRead::Closed => return Ok(()),
            HeadRead::TimedOut => {
                self.count(Refusal::Timeout);
                let msg = format!(
                    "the request head did not arrive within {} s",
                    slot.head_deadline().as_secs()
                );
                response::write_json_error(&mut out, 408, "request_timeout", &msg, true);
                return stream.write_all(&out);
            }
            HeadRead::Bad(e) => {
                response::write_json_error(&mut out, e.status(), e.code(), &e.message(), true);
                return stream.write_all(&out);
            }
        };
        if !self.hosts.allows(head.host(), stream.local_addr().ok()) {
            self.count(Refusal::Host);
            let msg = format!(
                "Host {:?} does not name this admin listener (see --admin-hosts)",
                head.host().unwrap_or_default()
            );
            response::write_json_error(&mut out, 421, "misdirected_request", &msg, true);
            return stream.write_all(&out);
        }
        if !slot.serves(head.path()) {
            self.count(Refusal::Overloaded);
            response::write_json_error(
                &mut out,
                503,
                "overloaded",
                "too many admin requests at once (only /healthz, /readyz and /metrics are answered now)",
                true,
            );
            return stream.write_all(&out);
        }
        if head.method != Method::Get && head.method != Method::Head {
            response::write_json_error(
                &mut out,
                405,
                "method_not_allowed",
                "the admin endpoints take GET",
                true,
            );
            return stream.write_all(&out);
        }
        let q = head.query().unwrap_or("");
        match head.path() {
            "/info" => json(&mut out, 200, &self.info()),
            "/healthz" => json(&mut out, 200, &serde_json::json!({"status": "ok"})),
            "/readyz" => {
                let (ready, why) = self.readiness();
                let status = if ready { 200 } else { 503 };
                json(&mut out, status, &serde_json::json!({"ready": ready, "reason": why}));
            }
            "/connections" => match self.connections(q) {
                Ok(v) => json(&mut out, 200, &v),
                Err((status, code, msg)) => response::write_json_error(&mut out, status, code, &msg, true),
            },
            "/metrics" => {
                let text = self.metrics();
                response::write_response(&mut out, 200, "text/plain; version=0.0.4; charset=utf-8", text.as_bytes(), true);
            }
            "/debug/pprof/profile" => match self.profile(q) {
                Ok(svg) => response::write_response(&mut out, 200, "image/svg+xml", &svg, true),
                Err((status, code, msg)) => response::write_json_error(&mut out, status, code, &msg, true),
            },
            "/debug/memory" => json(&mut out, 200, &self.memory()),
            _ => response::write_json_error(
                &mut out,
                404,
                "not_found",
                "admin endpoints: /info /connections /metrics /healthz /readyz /debug/pprof/profile?seconds=N /debug/memory",
                true,
            ),
        }
        if head.method == Method::Head {
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                out.truncate(end + 4);
            }
        }
        stream.write_all(&out)
    }

    fn info(&self) -> serde_json::Value {
        let now = super::epoch_ms() / 1000;
        let up = self.shared.origin.elapsed().as_secs();
        serde_json::json!({
            "version": env!("SWITCHBOARD_VERSION"),
            "node": self.shared.config.node_id,
            "start_time": self.shared.start_epoch_s,
            "current_time": now,
            "uptime": human_duration(up),
            "uptime_seconds": up,
            "workers": self.shared.peers.len(),
            "draining": self.shared.draining.load(Relaxed),
        })
    }

    /// Whether the node should get new clients, and why not.
    fn readiness(&self) -> (bool, &'static str) {
        if self.shared.draining.load(Relaxed) {
            return (false, "draining");
        }
        if self.shared.cluster.as_ref().is_some_and(|b| !b.ok()) {
            return (false, "cluster_unavailable");
        }
        let open = self.shared.open_connections.load(Relaxed);
        if open >= self.shared.config.max_connections {
            return (false, "connection_limit");
        }
        if self
            .shared
            .peers
            .iter()
            .any(|p| p.tx.len() * 10 >= super::CHANNEL_CAPACITY * 9)
        {
            return (false, "overloaded");
        }
        (true, "ok")
    }

    fn connections(&self, q: &str) -> Result<serde_json::Value, (u16, &'static str, String)> {
        let limit = match query_param(q, "limit") {
            Some(l) => l.parse::<usize>().map_err(|_| {
                (
                    400,
                    "bad_limit",
                    format!("limit must be a number, not {l:?}"),
                )
            })?,
            None => 1000,
        }
        .min(100_000);
        let filter = super::InspectFilter {
            account: query_param(q, "account"),
            client: query_param(q, "client"),
            limit,
        };
        let (tx, rx) = crossbeam_channel::bounded(self.shared.peers.len());
        let mut asked = 0;
        for w in 0..self.shared.peers.len() {
            let env = Envelope::Inspect {
                filter: filter.clone(),
                reply: tx.clone(),
            };
            if self.shared.send_to(w, env).is_ok() {
                self.shared.wake(w);
                asked += 1;
            }
        }
        let mut all: Vec<ConnInfo> = Vec::new();
        let mut total = 0usize;
        let mut answered = 0;
        let deadline = std::time::Instant::now() + INSPECT_TIMEOUT;
        while answered < asked {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok((matched, mut list)) => {
                    total += matched;
                    all.append(&mut list);
                    answered += 1;
                }
                Err(_) => break,
            }
        }
        let now = super::epoch_ms();
        all.sort_by_key(|c| c.since_ms);
        all.truncate(limit);
        let list: Vec<_> = all
            .iter()
            .map(|c| {
                serde_json::json!({
                    "session": c.sid.to_string(),
                    "account": c.account,
                    "client": c.client,
                    "role": c.role.map(|r| r.as_str()),
                    "kind": c.kind,
                    "transport": c.transport,
                    "remote": c.remote.map(|a| a.to_string()),
                    "since_ms": c.since_ms,
                    "duration_ms": now.saturating_sub(c.since_ms),
                    "bytes_in": c.bytes_in,
                    "bytes_out": c.bytes_out,
                    "queued_bytes": c.queued_bytes,
                    "messages_queued": c.messages_queued,
                    "worker": c.worker,
                })
            })
            .collect();
        Ok(serde_json::json!({
            "connections": list,
            "matched": total,
            "truncated": total > list.len(),
            "workers_answered": answered,
            "workers": self.shared.peers.len(),
        }))
    }

    fn profile(&self, q: &str) -> Result<Vec<u8>, (u16, &'static str, String)> {
        let secs = match query_param(q, "seconds") {
            Some(s) => s.parse::<u64>().map_err(|_| {
                (
                    400,
                    "bad_seconds",
                    format!("seconds must be a number, not {s:?}"),
                )
            })?,
            None => 10,
        };
        if secs == 0 || secs > MAX_PROFILE_SECS {
            return Err((
                400,
                "bad_seconds",
                format!("seconds must be between 1 and {MAX_PROFILE_SECS}"),
            ));
        }
        if self.profiling.swap(true, Relaxed) {
            return Err((
                409,
                "profile_in_progress",
                "another profile is running; one at a time".into(),
            ));
        }
        let result = (|| {
            let guard = pprof::ProfilerGuardBuilder::default()
                .frequency(99)
                .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                .build()
                .map_err(|e| (500, "profiler_error", e.to_string()))?;
            std::thread::sleep(Duration::from_secs(secs));
            let report = guard
                .report()
                .build()
                .map_err(|e| (500, "profiler_error", e.to_string()))?;
            let mut svg = Vec::new();
            report
                .flamegraph(&mut svg)
                .map_err(|e| (500, "profiler_error", e.to_string()))?;
            if svg.is_empty() {
                // No CPU samples (an idle node): still answer with a picture that says so.
                svg = format!(
                    "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\">\
                     <text x=\"10\" y=\"25\">no CPU samples in {secs} s: the node was idle</text></svg>\n"
                )
                .into_bytes();
            }
            Ok(svg)
        })();
        self.profiling.store(false, Relaxed);
        result
    }

    fn memory(&self) -> serde_json::Value {
        let (rss, anon) = proc_status_kb();
        let sh = &self.shared;
        let sum =
            |f: &dyn Fn(&super::stats::WorkerStats) -> u64| sh.stats.iter().map(f).sum::<u64>();
        serde_json::json!({
            "rss_bytes": rss * 1024,
            "rss_anon_bytes": anon * 1024,
            "connections": sum(&|s| s.open.load(Relaxed)),
            "receive_connections": sum(&|s| s.receive_open.load(Relaxed)),
            "websocket_connections": sum(&|s| s.ws_open.load(Relaxed)),
            "sessions": sum(&|s| s.sessions.load(Relaxed)),
            "held_sessions": sum(&|s| s.held.load(Relaxed)),
            "timer_entries": sum(&|s| s.timers.load(Relaxed)),
            // Retained messages (for held clients and replay), as the workers
            // last published them, and their limit (--hold-total-bytes).
            "retained_bytes": sum(&|s| s.retained_bytes.load(Relaxed)),
            "retained_messages": sum(&|s| s.retained_messages.load(Relaxed)),
            "hold_total_bytes": sh.config.hold_total_bytes,
            "struct_bytes": {
                "connection": std::mem::size_of::<super::conn::Conn>(),
                "session": std::mem::size_of::<crate::relay::session::Session>(),
                "timer_entry": std::mem::size_of::<(u64, super::worker::TimerRef)>(),
            },
            "open_fds": open_fds(),
            "allocator": {
                "name": crate::alloc::allocator_name(),
                // jemalloc only: how long unused pages are kept before they go
                // back to the kernel (null with glibc malloc).
                "dirty_decay_ms": crate::alloc::jemalloc_dirty_decay_ms(),
                // jemalloc only: heap totals in bytes (null with glibc malloc).
                "heap": crate::alloc::jemalloc_heap_stats(),
            },
        })
    }
}

fn json(out: &mut Vec<u8>, status: u16, v: &serde_json::Value) {
    response::write_response(
        out,
        status,
        "application/json",
        v.to_string().as_bytes(),
        true,
    );
}

/// `167h10m2s` style.
pub fn human_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// (VmRSS, RssAnon) of this process in KiB.
pub fn proc_status_kb() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// Number of open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_durations() {
        assert_eq!(super::human_duration(0), "0s");
        assert_eq!(super::human_duration(62), "1m2s");
        assert_eq!(super::human_duration(167 * 3600 + 10 * 60 + 2), "167h10m2s");
    }
}

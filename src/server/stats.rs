//! Counters and gauges. Each worker writes only its own [`WorkerStats`]
//! (relaxed atomics on its own cache lines), the admin thread reads them all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use super::conn::CloseReason;

/// Per-worker statistics.
#[derive(Default)]
#[repr(align(128))]
pub struct WorkerStats {
    pub accepted: AtomicU64,
    /// Accepts on the client listener that failed for want of a resource
    /// (descriptors, memory); each is followed by a pause (`server::accept`).
    pub accept_failures: AtomicU64,
    /// New connections refused past `--max-new-connections-per-address`:
    /// answered 429, and closed at once (far over the rate).
    pub rate_limited: AtomicU64,
    pub rate_flood: AtomicU64,
    /// Closed connections, indexed by [`CloseReason::index`].
    pub closed: [AtomicU64; CloseReason::COUNT],
    /// Open receive connections on this worker (both transports).
    pub receive_open: AtomicU64,
    /// Of those, WebSocket connections (`GET /v1/connect`).
    pub ws_open: AtomicU64,
    /// Commands read on WebSocket connections (answered or refused).
    pub ws_commands: AtomicU64,
    /// WebSocket connections closed for breaking RFC 6455 (or sending binary).
    pub ws_protocol_errors: AtomicU64,
    /// Open connections of any kind on this worker.
    pub open: AtomicU64,
    /// Sessions owned by this worker (online + held) and how many are held.
    pub sessions: AtomicU64,
    pub held: AtomicU64,
    /// Messages accepted (202) for clients owned here.
    pub accepted_messages: AtomicU64,
    /// Messages written to a live receive connection right away.
    pub relayed: AtomicU64,
    /// Writes of new events to live receive connections: of the events a loop
    /// iteration appends for one client, the first is written at once and the
    /// rest together at the end of the iteration.
    pub stream_writes: AtomicU64,
    /// Messages accepted while the recipient was held.
    pub held_messages: AtomicU64,
    /// Retained messages dropped before they were handed to the client.
    pub dropped: AtomicU64,
    /// Retained messages dropped early (delivered or not) because the node's
    /// retained messages passed three quarters of `--hold-total-bytes` (or all of it).
    pub memory_trims: AtomicU64,
    /// Bytes and number of the messages retained on this worker (updated
    /// once per loop iteration).
    pub retained_bytes: AtomicU64,
    pub retained_messages: AtomicU64,
    /// Coordination of `--hold-total-bytes` between workers (see
    /// `server::evict`): when this worker's longest-held session that still
    /// retains messages became held (monotonic ms; 0 = none, or the node is
    /// not near the limit), and the bytes other workers asked it to drop.
    pub oldest_held: AtomicU64,
    pub evict_asked: AtomicU64,
    /// Sends refused: recipient offline.
    pub offline: AtomicU64,
    /// Receive connections that resumed with Last-Event-ID, messages replayed, gaps reported.
    pub resumes: AtomicU64,
    pub replayed: AtomicU64,
    pub gaps: AtomicU64,
    pub peer_gone: AtomicU64,
    pub heartbeats: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// `send` calls on client sockets (every kind of output, heartbeats included).
    pub socket_writes: AtomicU64,
    /// Timer wheel entries (including stale ones).
    pub timers: AtomicU64,
    /// Event-loop iterations and the nanoseconds spent outside `poll`.
    pub iterations: AtomicU64,
    pub busy_ns: AtomicU64,
    /// Panics caught while handling one connection.
    pub panics: AtomicU64,
    /// Sends this worker passed to the worker that owns the recipient.
    pub cross_worker_sends: AtomicU64,
    /// Connections another worker handed to this one: receive connections to
    /// their client's worker, send connections to their account's worker.
    pub moved_in: AtomicU64,
    /// Requests refused with an error status, by (status, code).
    pub errors: Mutex<HashMap<(u16, &'static str), u64>>,
}

impl WorkerStats {
    /// Counts one error answer.
    pub fn error(&self, status: u16, code: &'static str) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry((status, code)).or_insert(0) += 1;
        }
    }

    /// Adds `n` to a counter.
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    /// Subtracts `n` from a gauge.
    #[inline]
    pub fn sub(c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Relaxed);
    }
}

//! Accepting client connections, and what a worker and the admin listener do
//! when an accept fails for want of a resource (descriptors, memory).
//!
//! Such a failure leaves the connection in the listen backlog, and a retry at
//! once fails the same way: a listener must pause instead of spinning. On
//! Linux an accept takes its descriptor slot before it looks at the backlog:
//! with no slot free it fails with EMFILE even when the backlog is empty, and
//! a blocking accept holds a slot while it waits (so a thread parked in
//! `accept` keeps one descriptor that the rest of the process cannot have).
//! A failed accept is counted (`switchboard_accept_failures_total`) and the
//! listener retries every [`ACCEPT_BACKOFF_MS`]; a streak of failures is
//! logged twice, when it starts and when it ends, not on every retry.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use mio::net::TcpStream;

use super::stats::WorkerStats;
use super::worker::Worker;

/// Pause before accepting again after an accept failed for want of a resource.
pub const ACCEPT_BACKOFF_MS: u64 = 100;

/// A streak of failed accepts on one listener (sans-IO: times are passed in,
/// in milliseconds of any monotonic clock).
#[derive(Debug, Default)]
pub struct AcceptStreak {
    /// When the first failure of the current streak happened.
    since: Option<u64>,
    /// Failures in the current streak.
    failures: u64,
}

impl AcceptStreak {
    /// Records a failed accept at `now`; true if it starts a streak (the
    /// failure to log).
    pub fn failed(&mut self, now: u64) -> bool {
        self.failures += 1;
        if self.since.is_none() {
            self.since = Some(now);
            return true;
        }
        false
    }

    /// Records that an accept got past the descriptor check at `now` (it
    /// returned a connection, or found the backlog empty). If that ends a
    /// streak: how long the streak lasted (ms) and how many accepts failed.
    pub fn ended(&mut self, now: u64) -> Option<(u64, u64)> {
        let since = self.since.take()?;
        let failures = std::mem::take(&mut self.failures);
        Some((now.saturating_sub(since), failures))
    }
}

/// An accept error that concerns one connection only (interrupted, or the
/// peer gave up before it was accepted): the next accept may go on at once.
pub fn accept_error_is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted | io::ErrorKind::WouldBlock
    )
}

impl Worker {
    /// Accepts every connection waiting on this worker's listener, unless
    /// accepts are paused after a failure.
    pub(super) fn accept_all(&mut self) {
        if self.accept_paused_until > 0 {
            return;
        }
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_recovered();
                    self.accepted(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_recovered();
                    break;
                }
                Err(e) if accept_error_is_transient(&e) => continue,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS/ENOMEM: back off instead of spinning on
                    // a listener that stays readable.
                    WorkerStats::add(&self.shared.stats[self.id].accept_failures, 1);
                    if self.accept_streak.failed(self.now) {
                        log::warn!(
                            "worker {}: accept failed: {e}; pausing accepts, retrying every {ACCEPT_BACKOFF_MS} ms",
                            self.id
                        );
                    }
                    self.accept_paused_until = self.now + ACCEPT_BACKOFF_MS;
                    break;
                }
            }
        }
    }

    /// Ends a streak of failed accepts, if one is going on, with its log line.
    fn accept_recovered(&mut self) {
        if let Some((ms, failures)) = self.accept_streak.ended(self.now) {
            log::warn!(
                "worker {}: accepting again after {ms} ms ({failures} failed accepts)",
                self.id
            );
        }
    }

    /// Sets up a connection just accepted: socket options, slab entry,
    /// handshake deadline, TLS; refuses it with 503 past `--max-connections`.
    fn accepted(&mut self, stream: TcpStream, peer: SocketAddr) {
        let c = &self.shared.config;
        let sock = socket2::SockRef::from(&stream);
        let ka = socket2::TcpKeepalive::new()
            .with_time(c.keepalive_idle)
            .with_interval(c.keepalive_interval)
            .with_retries(c.keepalive_count);
        let _ = sock.set_tcp_keepalive(&ka);
        if !c.user_timeout.is_zero() {
            let _ = sock.set_tcp_user_timeout(Some(c.user_timeout));
        }
        let verdict = self
            .shared
            .address_rate
            .check(peer.ip(), self.now.saturating_mul(1000));
        if verdict == super::admission::Admit::Flood {
            // Far over its rate: closed at once (dropping the stream), no answer.
            WorkerStats::add(&self.shared.stats[self.id].rate_flood, 1);
            self.note_rate_limited(peer, "closed at once");
            return;
        }
        let _ = sock.set_tcp_nodelay(true);
        if c.send_buffer > 0 {
            let _ = sock.set_send_buffer_size(c.send_buffer);
        }
        let open = self.shared.open_connections.fetch_add(1, Ordering::Relaxed) + 1;
        super::stats::WorkerStats::add(&self.shared.stats[self.id].accepted, 1);
        let limit = c.max_connections;
        let unauth_share = c.max_unauthenticated.div_ceil(c.workers.max(1));
        let mut over = open > limit;
        let Some(idx) =
            self.insert_conn(stream, crate::ids::SessionId::random(), super::epoch_ms())
        else {
            return;
        };
        let gen = self.conns[idx].gen;
        self.unauth.accepted(idx, gen, &self.conns);
        // Room for the new connection is made by closing the oldest one that
        // has not made a request yet, rather than by refusing the new one.
        let crowded = unauth_share > 0 && self.unauth.live() > unauth_share;
        if over || crowded {
            if let Some(victim) = self.unauth.oldest_waiting(&self.conns, idx) {
                let vsid = self.conns[victim].sid;
                if let Some(more) = self.noisy(super::throttle::Noisy::Evicted) {
                    log::warn!("{vsid} closed before its first request to make room for a new connection ({open} open, limit {limit}; unauthenticated on this worker {}, share {unauth_share}){more}", self.unauth.live());
                }
                self.close_conn(victim, super::conn::CloseReason::Evicted);
                over = false;
            }
        }
        let mut timeout = self.shared.config.handshake_timeout;
        if let Some(files) = &self.shared.tls {
            let made = files.config().map(super::tls::TlsConn::new);
            match made {
                Some(Ok(t)) => {
                    self.conns[idx].tls = Some(super::sysbox::SysBox::new(t));
                    timeout = self.shared.config.tls_handshake_timeout;
                }
                _ => {
                    log::error!("{} cannot start TLS; closing", self.conns[idx].sid);
                    self.close_conn(idx, super::conn::CloseReason::ReadError);
                    return;
                }
            }
        }
        let deadline = self.now + timeout.as_millis() as u64;
        self.set_conn_deadline(idx, deadline);
        let sid = self.conns[idx].sid;
        log::debug!("{sid} accepted from {peer}");
        if let super::admission::Admit::Limited { retry_after_s } = verdict {
            WorkerStats::add(&self.shared.stats[self.id].rate_limited, 1);
            self.note_rate_limited(peer, "answered 429");
            self.shared.stats[self.id].error(429, "rate_limited");
            let mut out = std::mem::take(&mut self.stage);
            out.clear();
            let msg =
                "too many new connections from this address; retry after the time in Retry-After";
            crate::proto::response::write_json_error(&mut out, 429, "rate_limited", msg, true);
            crate::proto::response::insert_retry_after(&mut out, retry_after_s);
            self.answer(idx, &out, true);
            self.stage = out;
            return;
        }
        if over {
            if let Some(more) = self.noisy(super::throttle::Noisy::Overloaded) {
                log::warn!("{sid} refused: {open} connections open, limit {limit}{more}");
            }
            self.respond_error(
                idx,
                503,
                "overloaded",
                "too many connections on this node; try another node or later",
                true,
            );
        }
    }
}

impl Worker {
    /// The (throttled) log line of a connection refused for its address's rate.
    fn note_rate_limited(&mut self, peer: SocketAddr, what: &str) {
        if let Some(more) = self.noisy(super::throttle::Noisy::RateLimited) {
            log::warn!(
                "worker {}: new connection from {} {what}: over --max-new-connections-per-address {}{more}",
                self.id,
                peer.ip(),
                self.shared.config.max_new_connections_per_address
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_is_reported_once_at_its_start_and_once_at_its_end() {
        let mut s = AcceptStreak::default();
        assert_eq!(s.ended(5), None, "no streak, nothing to report");
        assert!(s.failed(100));
        assert!(!s.failed(200));
        assert!(!s.failed(300));
        assert_eq!(s.ended(350), Some((250, 3)));
        assert_eq!(s.ended(400), None, "reported once");
        assert!(s.failed(1_000), "a new streak starts afresh");
        assert_eq!(s.ended(1_000), Some((0, 1)));
    }

    #[test]
    fn only_per_connection_errors_are_retried_at_once() {
        use io::ErrorKind::*;
        for k in [Interrupted, ConnectionAborted, WouldBlock] {
            assert!(accept_error_is_transient(&io::Error::from(k)), "{k:?}");
        }
        for errno in [
            24,  /* EMFILE */
            23,  /* ENFILE */
            105, /* ENOBUFS */
            12,  /* ENOMEM */
        ] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(!accept_error_is_transient(&e), "{e}");
        }
    }
}

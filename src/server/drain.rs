//! Drain and die: on SIGTERM the node stops accepting, tells each receive
//! connection to reconnect elsewhere (spread evenly over `--drain-timeout` so
//! clients do not all come back in the same second), lets in-flight requests
//! finish, and the worker exits when its last connection is gone or the
//! timeout passes, logging what it cut off.

use std::collections::VecDeque;

use super::conn::{CloseReason, State};
use super::worker::Worker;
use crate::proto::events;

/// Longest `retry_ms` a `reconnect` notice names.
const RETRY_MAX_MS: u64 = 3000;

/// A worker's draining progress.
pub struct Drain {
    /// Monotonic ms when the worker must be done: `--drain-timeout`, and on a
    /// cluster also the longest `retry_ms` sent plus the time a hand-over may
    /// take, so that a client that reconnects elsewhere as told still finds
    /// its session here to take over.
    until: u64,
    /// Receive connections (token) and when (monotonic ms) each is told to reconnect.
    queue: VecDeque<(u64, usize)>,
}

impl Worker {
    /// When the drain next needs the loop to wake up.
    pub fn drain_next(&self) -> Option<u64> {
        let d = self.drain.as_ref()?;
        Some(d.queue.front().map_or(d.until, |q| q.0.min(d.until)))
    }

    fn begin_drain(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let window = self.shared.config.drain_timeout.as_millis() as u64;
        let start = self.now;
        let receivers: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Receive { .. }))
            .map(|(k, _)| k)
            .collect();
        let n = receivers.len() as u64;
        let queue = receivers
            .iter()
            .enumerate()
            .map(|(i, &k)| (start + window * (i as u64 + 1) / (n + 1), self.token_of(k)))
            .collect();
        log::info!(
            "worker {}: draining {} receive connections over {} ms",
            self.id,
            n,
            window
        );
        let linger = match &self.shared.config.cluster {
            Some(c) => RETRY_MAX_MS + c.timeout.as_millis() as u64,
            None => 0,
        };
        self.drain = Some(Drain {
            until: start + window + linger,
            queue,
        });
    }

    /// Advances the drain; true when this worker is done.
    pub fn drain_step(&mut self) -> bool {
        if self.drain.is_none() {
            self.begin_drain();
        }
        // Tell the receive connections that are due to go elsewhere.
        while let Some(d) = self.drain.as_mut() {
            let Some(&(at, token)) = d.queue.front() else {
                break;
            };
            if at > self.now {
                break;
            }
            d.queue.pop_front();
            if let Some(idx) = self.conn_by_token(token) {
                self.guarded(token, |me| me.tell_reconnect(idx));
            }
        }
        // Idle request connections go now; busy ones close after their answer.
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(k, c)| {
                matches!(&c.state, State::Request(r) if !r.in_body())
                    && c.inbuf.is_empty()
                    && c.pending_out() == 0
                    && !self.pipes.contains(*k)
            })
            .map(|(k, _)| k)
            .collect();
        for idx in idle {
            self.close_conn(idx, CloseReason::Shutdown);
        }
        let until = self.drain.as_ref().map_or(self.now, |d| d.until);
        // On a cluster, the sessions of clients told to reconnect elsewhere
        // stay until another node took them over (or `until`).
        let waiting = if self.shared.cluster.is_some() {
            self.relay.len()
        } else {
            0
        };
        if self.conns.is_empty() && waiting == 0 {
            log::info!("worker {}: drained", self.id);
            return true;
        }
        if self.now >= until {
            if self.conns.is_empty() {
                log::warn!(
                    "worker {}: drain timeout; {waiting} held sessions were not taken over by another node",
                    self.id
                );
                return true;
            }
            let receive = self
                .conns
                .iter()
                .filter(|(_, c)| matches!(c.state, State::Receive { .. }))
                .count();
            log::warn!(
                "worker {}: drain timeout; cutting off {} connections ({} receive, {} other)",
                self.id,
                self.conns.len(),
                receive,
                self.conns.len() - receive
            );
            return true;
        }
        false
    }

    /// Sends `event: reconnect` with a retry hint and closes the connection after it.
    fn tell_reconnect(&mut self, idx: usize) {
        let retry = 500 + crate::ids::random_u64() % (RETRY_MAX_MS - 500);
        let mut out = std::mem::take(&mut self.stage);
        out.clear();
        let framing = self.conns[idx].framing();
        let mark = framing.begin(&mut out);
        events::retry(&mut out, framing, retry);
        let data = serde_json::json!({"reason": "draining", "retry_ms": retry}).to_string();
        events::encode(&mut out, framing, None, "reconnect", &data);
        let start = framing.finish(&mut out, mark);
        // The stream ends here, cleanly.
        let restart = crate::proto::ws::close::SERVICE_RESTART;
        events::end(&mut out, framing, restart, "draining");
        out.drain(..start);
        self.conns[idx].close_after_flush = true;
        log::info!(
            "{} told to reconnect elsewhere (draining)",
            self.conns[idx].sid
        );
        self.write_conn(idx, &out);
        self.stage = out;
    }
}

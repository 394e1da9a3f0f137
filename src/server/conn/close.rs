//! Closing a connection: timer expiry, lingering after the last answer,
//! removal, and the session of a receive connection becoming held.

use std::net::Shutdown;
use std::sync::atomic::Ordering;

use super::{acked_bytes, CloseReason, State};
use crate::server::worker::Worker;

/// How long a connection that was answered and closed may keep sending before it is cut.
const LINGER_MS: u64 = 2_000;

impl Worker {
    /// Output is complete for a connection that must close: shut the write
    /// side and discard input for a short while so the client reads the answer
    /// instead of a reset.
    pub(in crate::server) fn finish_close(&mut self, idx: usize) {
        if matches!(self.conns[idx].state, State::Linger) {
            return;
        }
        self.detach_receive(idx, CloseReason::Answered);
        let c = &mut self.conns[idx];
        let _ = c.stream.shutdown(Shutdown::Write);
        c.state = State::Linger;
        c.inbuf = Vec::new();
        c.close_after_flush = false;
        let d = self.now + LINGER_MS;
        self.set_conn_deadline(idx, d);
        self.read_ready(idx);
    }

    /// Handles an expired connection timer.
    pub fn conn_timeout(&mut self, idx: usize) {
        if self.pipes.contains(idx) {
            // Pipelined sends whose answers did not come in time get 503; what
            // waited behind them goes on.
            self.fail_pipe(idx);
            self.process_any(idx);
            return;
        }
        let c = &self.conns[idx];
        match c.state {
            State::Receive { framing, .. } if framing.is_websocket() => self.ws_timeout(idx),
            State::Receive { .. } => self.heartbeat(idx),
            State::Request(ref r) if r.in_body() => {
                log::info!("{} body timeout", c.sid);
                self.respond_error(
                    idx,
                    408,
                    "request_timeout",
                    "request body not received in time",
                    true,
                );
            }
            State::Request(_) if c.requests == 0 => {
                log::info!("{} handshake timeout", c.sid);
                self.close_conn(idx, CloseReason::HandshakeTimeout);
            }
            State::Request(_) => {
                if c.inbuf.is_empty() {
                    log::debug!("{} idle timeout", c.sid);
                    self.close_conn(idx, CloseReason::IdleTimeout);
                } else {
                    log::info!("{} request head timeout", c.sid);
                    self.close_conn(idx, CloseReason::HandshakeTimeout);
                }
            }
            State::Waiting { .. }
            | State::Listing(_)
            | State::Attaching(_)
            | State::ReceiveAfter(_) => {
                // The answer (from another worker, or the cluster) did not come in time.
                let sid = c.sid;
                if let Some(more) = self.noisy(crate::server::throttle::Noisy::NoAnswer) {
                    log::warn!("{sid} no answer from the cluster or another worker in time{more}");
                }
                let msg = "no answer in time from the node that holds the recipient; retry later";
                self.respond_error(idx, 503, "cluster_unavailable", msg, true);
            }
            State::Linger => self.close_conn(idx, CloseReason::Answered),
        }
    }

    /// Removes connection `idx`: deregisters and closes the socket, and moves its session (if any) to held.
    pub fn close_conn(&mut self, idx: usize, reason: CloseReason) {
        let Some(mut c) = self.remove_conn(idx) else {
            return;
        };
        if !c.authed {
            self.unauth.left();
        }
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
        let st = &self.shared.stats[self.id];
        crate::server::stats::WorkerStats::add(&st.closed[reason.index()], 1);
        crate::server::stats::WorkerStats::sub(&st.open, 1);
        if !matches!(
            reason,
            CloseReason::Answered | CloseReason::IdleTimeout | CloseReason::PeerClosed
        ) || matches!(c.state, State::Receive { .. })
        {
            log::info!("{} closed: {}", c.sid, reason.as_str());
        } else {
            log::debug!("{} closed: {}", c.sid, reason.as_str());
        }
        if let State::Receive {
            sess,
            sess_gen,
            framing,
        } = c.state
        {
            let st = &self.shared.stats[self.id];
            crate::server::stats::WorkerStats::sub(&st.receive_open, 1);
            if framing.is_websocket() {
                crate::server::stats::WorkerStats::sub(&st.ws_open, 1);
            }
            let acked = acked_bytes(&c);
            self.receive_closed(sess as usize, sess_gen, idx, c.gen, acked, reason);
        }
    }

    /// A receive connection that is about to close after its last output:
    /// its session becomes held now (if it is still the session's connection).
    fn detach_receive(&mut self, idx: usize, reason: CloseReason) {
        let c = &mut self.conns[idx];
        if let State::Receive {
            sess,
            sess_gen,
            framing,
        } = c.state
        {
            c.state = State::Linger;
            let gen = c.gen;
            let st = &self.shared.stats[self.id];
            crate::server::stats::WorkerStats::sub(&st.receive_open, 1);
            if framing.is_websocket() {
                crate::server::stats::WorkerStats::sub(&st.ws_open, 1);
            }
            self.receive_closed(sess as usize, sess_gen, idx, gen, None, reason);
        }
    }
}

//! Answering a connection's request: JSON answers and errors, their CORS
//! headers, whether the answer is the connection's last.

use std::sync::atomic::Ordering;

use super::State;
use crate::proto::cors::Allow;
use crate::proto::request::RequestReader;
use crate::proto::response;
use crate::server::worker::Worker;

impl Worker {
    /// Writes a JSON error answer; closes afterwards when `close`.
    pub fn respond_error(
        &mut self,
        idx: usize,
        status: u16,
        code: &'static str,
        message: &str,
        close: bool,
    ) {
        self.respond_error_with(idx, (status, code, message), close, "");
    }

    /// [`Worker::respond_error`] with `extra` header lines (each ending in
    /// CRLF) after the status line.
    pub fn respond_error_with(
        &mut self,
        idx: usize,
        (status, code, message): (u16, &'static str, &str),
        close: bool,
        extra: &str,
    ) {
        self.shared.stats[self.id].error(status, code);
        let close = self.must_close(idx, close);
        let mut out = std::mem::take(&mut self.stage);
        out.clear();
        response::write_json_error(&mut out, status, code, message, close);
        if !extra.is_empty() {
            let at = out
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(0, |p| p + 2);
            out.splice(at..at, extra.bytes());
        }
        self.add_cors(idx, &mut out, 0);
        self.answer(idx, &out, close);
        self.stage = out;
    }

    /// Writes a JSON answer; closes afterwards when `close`.
    pub fn respond_json(&mut self, idx: usize, status: u16, body: &[u8], close: bool) {
        let close = self.must_close(idx, close);
        let mut out = std::mem::take(&mut self.stage);
        out.clear();
        response::write_response(&mut out, status, "application/json", body, close);
        self.add_cors(idx, &mut out, 0);
        self.answer(idx, &out, close);
        self.stage = out;
    }

    /// Adds the CORS headers of connection `idx`'s current request (if it is
    /// an allowed cross-origin one) to the answer that starts at `start` in `out`.
    pub(in crate::server) fn add_cors(&self, idx: usize, out: &mut Vec<u8>, start: usize) {
        let allow = self.cors_of(idx);
        crate::proto::cors::insert_headers(out, start, allow, &self.shared.config.allowed_origins);
    }

    /// The CORS kind of connection `idx`'s current request. Only connections
    /// whose current request is an allowed cross-origin one have an entry in
    /// `Worker::cors` (browsers' send connections and streams being set up),
    /// so the others, agents above all, pay nothing for it.
    pub(in crate::server) fn cors_of(&self, idx: usize) -> Allow {
        if self.cors.is_empty() {
            return Allow::Plain;
        }
        self.cors.get(&idx).copied().unwrap_or_default()
    }

    /// Sets the CORS kind of connection `idx`'s current request.
    pub(in crate::server) fn set_cors(&mut self, idx: usize, allow: Allow) {
        if allow != Allow::Plain {
            self.cors.insert(idx, allow);
        } else if !self.cors.is_empty() {
            self.cors.remove(&idx);
        }
    }

    /// Whether the answer about to be written must be the connection's last
    /// (and say `Connection: close`): the request asked for it, the node is
    /// draining, or the connection outlived --send-lifetime.
    pub(in crate::server) fn must_close(&self, idx: usize, close: bool) -> bool {
        let too_old = self.conns[idx].since_ms
            + self.shared.config.send_lifetime.as_millis() as u64
            <= self.wall_ms;
        close || too_old || self.shared.draining.load(Ordering::Relaxed)
    }

    /// Writes the answer to the request just read (behind the connection's
    /// pipe if it has one); closes afterwards when `close`.
    pub(in crate::server) fn answer(&mut self, idx: usize, bytes: &[u8], close: bool) {
        if let Some(pipe) = self.pipes.get_mut(idx) {
            // Earlier pipelined sends are still being answered: this one comes after them.
            pipe.push_ready(bytes, close);
            let c = &mut self.conns[idx];
            c.requests += 1;
            if !matches!(c.state, State::Receive { .. } | State::Request(_)) {
                c.state = State::Request(RequestReader::new());
            }
            return;
        }
        {
            let c = &mut self.conns[idx];
            c.requests += 1;
            if close {
                c.close_after_flush = true;
            } else if !matches!(c.state, State::Receive { .. }) {
                c.state = State::Request(RequestReader::new());
            }
        }
        if !self.write_conn(idx, bytes) {
            return;
        }
        if !close && self.conns.contains(idx) {
            let d = self.now + self.shared.config.idle_timeout.as_millis() as u64;
            self.set_conn_deadline(idx, d);
        }
    }
}

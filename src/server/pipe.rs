//! In-order answers for sends pipelined across workers (and nodes).
//!
//! A send for a client owned by another worker is answered only when that
//! worker has appended the message (the answer carries the event id); in a
//! cluster, a send for a client with no session on this node is answered
//! when the bridge has the other node's answer. Before, the connection stopped
//! reading requests until then, so a client that pipelines sends waited a
//! thread (or Redis) round trip per message. Now such a send
//! reserves a slot in its connection's [`Pipe`] and request processing goes
//! on, up to [`MAX_IN_FLIGHT`] unwritten answers. Answers are written in
//! request order: a slot's answer waits until every earlier one is written,
//! and while a pipe exists every other answer on the connection (errors,
//! local sends, listings) queues behind it. A receive request behind
//! pipelined sends starts once they are all answered.
//!
//! Pipes live in a per-worker map keyed by slab index, so a connection that
//! never pipelines across workers costs nothing; the entry goes when the
//! pipe empties or the connection closes.

use std::collections::{HashMap, VecDeque};

use super::conn::State;
use super::worker::Worker;
use super::SendError;
use crate::ids::EventId;
use crate::proto::cors::{self, Allow};
use crate::proto::response;

/// Most answers one connection may have queued in its pipe (waiting or
/// ready); past it, request processing pauses until the front is written.
pub(super) const MAX_IN_FLIGHT: usize = 32;

/// The answers of one connection that wait to be written, in request order.
#[derive(Default)]
pub(super) struct Pipe {
    slots: VecDeque<Slot>,
}

enum Slot {
    /// A send handed to another worker (`seq` from [`Worker::pipe_seq`]),
    /// with the CORS headers its answer gets.
    Waiting { seq: u64, cors: Allow },
    /// The send's outcome; rendered when it is written (whether the answer
    /// says `Connection: close` is decided then).
    Answered(Result<EventId, SendError>, Allow),
    /// An answer ready to write; `close` ends the connection after it.
    Ready { bytes: Vec<u8>, close: bool },
    /// A WebSocket `send` handed to another worker or node, with the
    /// command's `ref` for its answer (`ws`).
    WsWaiting { seq: u64, ref_: Option<Box<str>> },
    /// A WebSocket `clients` command: the parts gathered so far, and how
    /// many are still to come (`None` once one part could not be had).
    WsList(Box<WsList>),
}

/// The answer to a WebSocket `clients` command being gathered.
struct WsList {
    seq: u64,
    ref_: Option<Box<str>>,
    pending: usize,
    clients: Option<Vec<super::ClientInfo>>,
}

impl Slot {
    /// True while the answer is awaited.
    fn waiting(&self) -> bool {
        matches!(
            self,
            Slot::Waiting { .. } | Slot::WsWaiting { .. } | Slot::WsList(_)
        )
    }
}

impl Pipe {
    /// Answers queued (waiting or ready).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True if one of the queued answers closes the connection (no further
    /// request may be read).
    pub fn closing(&self) -> bool {
        self.slots
            .back()
            .is_some_and(|s| matches!(s, Slot::Ready { close: true, .. }))
    }

    /// Queues an answer behind the others.
    pub fn push_ready(&mut self, bytes: &[u8], close: bool) {
        self.slots.push_back(Slot::Ready {
            bytes: bytes.to_vec(),
            close,
        });
    }
}

/// The pipes of one worker's connections, by slab index. Cheap to ask when
/// empty (the common case: no connection is waiting for another worker).
#[derive(Default)]
pub(super) struct Pipes(HashMap<usize, Pipe>);

impl Pipes {
    /// The pipe of connection `idx`, if it has one.
    pub fn get(&self, idx: usize) -> Option<&Pipe> {
        if self.0.is_empty() {
            return None;
        }
        self.0.get(&idx)
    }

    /// The pipe of connection `idx`, if it has one, for changing.
    pub fn get_mut(&mut self, idx: usize) -> Option<&mut Pipe> {
        if self.0.is_empty() {
            return None;
        }
        self.0.get_mut(&idx)
    }

    /// True if connection `idx` has answers queued.
    pub fn contains(&self, idx: usize) -> bool {
        self.get(idx).is_some()
    }

    /// Takes connection `idx`'s pipe out.
    pub fn remove(&mut self, idx: usize) -> Option<Pipe> {
        if self.0.is_empty() {
            return None;
        }
        self.0.remove(&idx)
    }

    /// Gives back the table's memory after a burst of pipelining connections
    /// (housekeeping): a map that is mostly empty is rebuilt at its size.
    pub fn shrink(&mut self) {
        if self.0.capacity() > 64 && self.0.len() < self.0.capacity() / 4 {
            self.0.shrink_to_fit();
        }
    }

    fn entry(&mut self, idx: usize) -> &mut Pipe {
        self.0.entry(idx).or_default()
    }
}

impl Worker {
    /// Reserves the next answer slot of connection `idx`; returns its sequence
    /// number (never 0, which marks an answer outside any pipe).
    pub fn reserve_slot(&mut self, idx: usize) -> u64 {
        self.pipe_seq += 1;
        let seq = self.pipe_seq;
        let fresh = !self.pipes.contains(idx);
        let cors = self.cors_of(idx);
        self.pipes
            .entry(idx)
            .slots
            .push_back(Slot::Waiting { seq, cors });
        if fresh {
            self.await_answer(idx);
        }
        seq
    }

    /// Reserves the next answer slot of WebSocket connection `idx` for a
    /// send with `ref_`; returns its sequence number. `before` holds the
    /// answers of the batch not written yet: they go into the pipe first.
    pub fn reserve_ws_slot(&mut self, idx: usize, ref_: Option<&str>, before: &mut Vec<u8>) -> u64 {
        self.pipe_seq += 1;
        let seq = self.pipe_seq;
        let ref_ = ref_.map(Box::from);
        self.push_awaited(idx, Slot::WsWaiting { seq, ref_ }, before);
        seq
    }

    /// Reserves the next answer slot of WebSocket connection `idx` for a
    /// `clients` command whose answer comes in `parts` parts (`before` as
    /// for [`Worker::reserve_ws_slot`]).
    pub fn reserve_ws_list(
        &mut self,
        idx: usize,
        ref_: Option<&str>,
        parts: usize,
        before: &mut Vec<u8>,
    ) -> u64 {
        self.pipe_seq += 1;
        let seq = self.pipe_seq;
        let list = WsList {
            seq,
            ref_: ref_.map(Box::from),
            pending: parts,
            clients: Some(Vec::new()),
        };
        self.push_awaited(idx, Slot::WsList(Box::new(list)), before);
        seq
    }

    /// Queues an awaited answer; answers of the batch not written yet
    /// (`before`, only while the connection has no pipe: otherwise they are
    /// in it already) stay ahead of it.
    fn push_awaited(&mut self, idx: usize, slot: Slot, before: &mut Vec<u8>) {
        let fresh = !self.pipes.contains(idx);
        let pipe = self.pipes.entry(idx);
        if !before.is_empty() {
            pipe.push_ready(before, false);
            before.clear();
        }
        pipe.slots.push_back(slot);
        if fresh {
            self.await_answer(idx);
        }
    }

    /// Adds a part of the answer to `clients` command `seq` of WebSocket
    /// connection `idx` (`None`: that part could not be had); once all are
    /// in, the answer is ready.
    pub fn ws_list_part(&mut self, idx: usize, seq: u64, part: Option<Vec<super::ClientInfo>>) {
        let Some(slot) = self.pipes.get_mut(idx).and_then(|p| {
            p.slots
                .iter_mut()
                .find(|s| matches!(s, Slot::WsList(l) if l.seq == seq))
        }) else {
            return;
        };
        let Slot::WsList(l) = slot else {
            return; // just matched
        };
        match (part, &mut l.clients) {
            (Some(mut more), Some(all)) => all.append(&mut more),
            _ => l.clients = None,
        }
        l.pending = l.pending.saturating_sub(1);
        if l.pending > 0 {
            return;
        }
        let mut bytes = Vec::new();
        super::ws::render_clients(&mut bytes, l.ref_.as_deref(), l.clients.as_mut());
        *slot = Slot::Ready {
            bytes,
            close: false,
        };
    }

    /// Fills slot `seq` of connection `idx` with the answer to its send (a
    /// late answer to a slot that timed out is dropped). The caller then
    /// runs [`Worker::process`], which writes what is ready.
    pub fn fill_slot(&mut self, idx: usize, seq: u64, result: Result<EventId, SendError>) {
        let Some(slot) = self.pipes.get_mut(idx).and_then(|p| {
            p.slots.iter_mut().find(|s| match s {
                Slot::Waiting { seq: s, .. } | Slot::WsWaiting { seq: s, .. } => *s == seq,
                _ => false,
            })
        }) else {
            return;
        };
        match slot {
            Slot::Waiting { cors, .. } => {
                let cors = *cors;
                *slot = Slot::Answered(result, cors);
            }
            Slot::WsWaiting { ref_, .. } => {
                if let Err(e) = result {
                    let (status, code, _) = e.answer();
                    self.shared.stats[self.id].error(status, code);
                }
                let mut bytes = Vec::new();
                super::ws::render_send(&mut bytes, ref_.as_deref(), result);
                *slot = Slot::Ready {
                    bytes,
                    close: false,
                };
            }
            _ => return, // just matched
        }
        self.conns[idx].requests += 1;
    }

    /// Answers every waiting slot of connection `idx` with 503 (its answer did
    /// not come in time); the connection stays open.
    pub fn fail_pipe(&mut self, idx: usize) {
        let Some(pipe) = self.pipes.get_mut(idx) else {
            return;
        };
        let mut failed = 0;
        for slot in pipe.slots.iter_mut() {
            let mut bytes = Vec::new();
            match slot {
                Slot::Waiting { cors, .. } => {
                    let cors = *cors;
                    *slot = Slot::Answered(Err(SendError::Timeout), cors);
                    failed += 1;
                    continue;
                }
                Slot::WsWaiting { ref_, .. } => {
                    super::ws::render_send(&mut bytes, ref_.as_deref(), Err(SendError::Timeout))
                }
                Slot::WsList(l) => super::ws::render_clients(&mut bytes, l.ref_.as_deref(), None),
                _ => continue,
            }
            *slot = Slot::Ready {
                bytes,
                close: false,
            };
            failed += 1;
        }
        self.conns[idx].requests += failed;
        if let Some(more) = self.noisy(super::throttle::Noisy::NoAnswer) {
            log::warn!(
                "{} no answer from another worker or node in time for {failed} pipelined sends{more}",
                self.conns[idx].sid
            );
        }
    }

    /// True if the oldest answer queued for connection `idx` is ready.
    pub fn pipe_front_ready(&self, idx: usize) -> bool {
        self.pipes
            .get(idx)
            .and_then(|p| p.slots.front())
            .is_some_and(|s| !s.waiting())
    }

    /// Writes the ready answers at the front of connection `idx`'s pipe; when
    /// the pipe empties, drops it and goes on with what waited for it (the
    /// idle timer, a receive request). Returns false if the connection closed.
    #[inline]
    pub fn drain_pipe(&mut self, idx: usize) -> bool {
        if !self.pipes.contains(idx) {
            return self.conns.contains(idx);
        }
        self.drain_pipe_slots(idx)
    }

    fn drain_pipe_slots(&mut self, idx: usize) -> bool {
        loop {
            let Some(pipe) = self.pipes.get_mut(idx) else {
                return self.conns.contains(idx);
            };
            let last = pipe.slots.len() == 1;
            let slot = match pipe.slots.pop_front() {
                None => {
                    self.pipes.remove(idx);
                    return self.pipe_emptied(idx);
                }
                Some(waiting) if waiting.waiting() => {
                    pipe.slots.push_front(waiting);
                    return true;
                }
                Some(slot) => slot,
            };
            let ok = match slot {
                Slot::Ready { bytes, close } => {
                    self.conns[idx].close_after_flush |= close;
                    self.write_conn(idx, &bytes)
                }
                Slot::Answered(result, allow) => {
                    // The last answer says so if the connection must end
                    // (--send-lifetime, draining).
                    let close = last && self.must_close(idx, false);
                    self.conns[idx].close_after_flush |= close;
                    let mut out = std::mem::take(&mut self.stage);
                    out.clear();
                    self.render_send_answer(result, close, &mut out);
                    cors::insert_headers(&mut out, 0, allow, &self.shared.config.allowed_origins);
                    let ok = self.write_conn(idx, &out);
                    self.stage = out;
                    ok
                }
                Slot::Waiting { .. } | Slot::WsWaiting { .. } | Slot::WsList(_) => true, // put back above
            };
            if !ok || !self.conns.contains(idx) {
                return false;
            }
            // The next answer waits: give it its own time limit.
            if self
                .pipes
                .get(idx)
                .and_then(|p| p.slots.front())
                .is_some_and(Slot::waiting)
            {
                self.await_answer(idx);
            }
        }
    }

    /// Connection `idx` has no answer queued any more.
    fn pipe_emptied(&mut self, idx: usize) -> bool {
        if self.conns[idx].close_after_flush {
            return true;
        }
        if matches!(self.conns[idx].state, State::Receive { .. }) {
            // A WebSocket connection: its timer is the heartbeat's again.
            self.heartbeat(idx);
            return self.conns.contains(idx);
        }
        if matches!(self.conns[idx].state, State::Request(_)) && self.must_close(idx, false) {
            // The last answer was written before the connection had to end
            // (it said keep-alive): close once it is flushed.
            self.conns[idx].close_after_flush = true;
            if self.conns[idx].pending_out() == 0
                && !self.conns[idx].parked
                && self.cork != Some(idx)
            {
                self.finish_close(idx);
                return false;
            }
            return true;
        }
        let c = &mut self.conns[idx];
        if matches!(c.state, State::ReceiveAfter(_)) {
            let State::ReceiveAfter(r) = std::mem::replace(
                &mut c.state,
                State::Request(crate::proto::request::RequestReader::new()),
            ) else {
                return true; // just matched
            };
            let (ident, req) = *r;
            self.start_receive(idx, ident, req);
            return self.conns.contains(idx);
        }
        if matches!(c.state, State::Request(_)) {
            let d = self.now + self.shared.config.idle_timeout.as_millis() as u64;
            self.set_conn_deadline(idx, d);
        }
        true
    }

    /// Writes the answer to a send into `out` (errors are counted).
    pub fn render_send_answer(
        &mut self,
        result: Result<EventId, SendError>,
        close: bool,
        out: &mut Vec<u8>,
    ) {
        match result {
            Ok(id) => {
                // `{"status":"accepted","id":"<hex>-<seq>"}`: an event id is hex
                // digits, a dash and decimal digits (nothing to escape).
                let mut body = std::mem::take(&mut self.json_scratch);
                body.clear();
                body.extend_from_slice(br#"{"status":"accepted","id":""#);
                id.push_to(&mut body);
                body.extend_from_slice(br#""}"#);
                response::write_response(out, 202, "application/json", &body, close);
                self.json_scratch = body;
            }
            Err(e) => {
                let (status, code, message) = e.answer();
                self.shared.stats[self.id].error(status, code);
                response::write_json_error(out, status, code, message, close);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_give_their_memory_back_after_a_burst() {
        let mut p = Pipes::default();
        for idx in 0..10_000 {
            p.entry(idx).push_ready(b"x", false);
        }
        let big = p.0.capacity();
        for idx in 0..10_000 {
            assert!(p.remove(idx).is_some());
        }
        assert!(!p.contains(5));
        p.shrink();
        assert!(
            p.0.capacity() < big / 100,
            "capacity {} after {big}",
            p.0.capacity()
        );
        // A few pipes left: still shrunk, and they stay.
        for idx in 0..3 {
            p.entry(idx).push_ready(b"y", true);
        }
        p.shrink();
        assert_eq!(p.get(2).map(Pipe::len), Some(1));
        assert!(p.get(2).is_some_and(Pipe::closing));
    }
}

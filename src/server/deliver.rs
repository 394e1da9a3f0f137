//! Delivery: a message or notice is appended to its recipient's retained log
//! and written to the recipient's receive connection, if it has one. Of the
//! events one loop iteration appends for a client, the first is written at
//! once and the rest together at the end of the iteration. Events from the
//! second and later requests of a pipelined batch all wait for its end.

use std::sync::Arc;

use slab::Slab;

use super::conn::{send_now, Conn};
use super::evict::WorkerBoard;
use super::stats::WorkerStats;
use super::worker::Worker;
use super::{Envelope, SendError};
use crate::ids::EventId;
use crate::proto::stream::{self, Framing};
use crate::proto::{events, sse};
use crate::relay::core::{Rules, TouchKey};
use crate::relay::retained::EntryKind;
use crate::relay::session::Session;
use crate::relay::stream::LogLimits;

/// Smallest message body written from the retained log by `sendmsg` instead
/// of being copied into its event (below it, the copy costs less than the
/// extra pieces).
const DIRECT_BODY_MIN: usize = 4096;

impl Worker {
    /// Accepts a message for `to` (owned by this worker): retains it and writes
    /// it to the receive connection if there is one. `json`: the body is
    /// compact JSON, delivered as a value (see `proto::json_body`).
    pub fn deliver(
        &mut self,
        account: &str,
        from: &Arc<str>,
        to: &str,
        body: Box<[u8]>,
        json: bool,
    ) -> Result<EventId, SendError> {
        let Some(sidx) = self.relay.find(account, to) else {
            WorkerStats::add(&self.shared.stats[self.id].offline, 1);
            return Err(SendError::Offline);
        };
        self.deliver_to(sidx, account, from, to, body, json)
    }

    /// [`Worker::deliver`] to the session at `sidx` (already looked up).
    pub fn deliver_to(
        &mut self,
        sidx: usize,
        account: &str,
        from: &Arc<str>,
        to: &str,
        body: Box<[u8]>,
        json: bool,
    ) -> Result<EventId, SendError> {
        let st = &self.shared.stats[self.id];
        let online = self.relay.session(sidx).online();
        if !online
            && self
                .shared
                .draining
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            // This node is going away: a message held here now would die with it.
            return Err(SendError::Overloaded);
        }
        WorkerStats::add(&st.accepted_messages, 1);
        WorkerStats::add(
            if online {
                &st.relayed
            } else {
                &st.held_messages
            },
            1,
        );
        let id = self.append(
            sidx,
            EntryKind::Message {
                from: from.clone(),
                body,
                json,
            },
        );
        // Conversation tracking, at most once per pair per few seconds (a busy
        // pair would otherwise cost two partner-table updates and a
        // cross-worker message per send): the recipient remembers the sender
        // here, and the sender remembers the recipient on whichever worker
        // owns it. The recipient's epoch is part of the key, so a new session
        // of the recipient is told about its partners at once.
        let epoch = self.relay.session(sidx).epoch;
        if !self
            .relay
            .touch_due(TouchKey::Pair(account, from, to, epoch), self.now)
        {
            return Ok(id);
        }
        self.relay.note_partner(sidx, from, self.now);
        let owner = self.shared.owner(account, from);
        if owner == self.id {
            self.touch(account, from, to, false);
        } else {
            // Best effort: a full channel only costs a possible missed peer-gone.
            let _ = self.post(
                owner,
                Envelope::Touch {
                    account: account.into(),
                    client: from[..].into(),
                    peer: to.into(),
                    remote: false,
                },
            );
        }
        Ok(id)
    }

    /// Appends an entry to session `sidx`'s log, enforcing the limits (see
    /// [`Relay::append`]), and writes it out now if it is the client's first
    /// of this loop iteration. The events of a pipelined request after the
    /// first of its batch wait for the end of the iteration as well
    /// (`Worker::pipelined`): that client accepted waiting for its earlier
    /// requests, and whatever else the batch brings for the same clients
    /// joins them in one write.
    pub(super) fn append(&mut self, sidx: usize, kind: EntryKind) -> EventId {
        let conns = &self.conns;
        let live = |s: &Session| live_conn(conns, s).is_some();
        let mut board = WorkerBoard::new(&self.shared, self.id, &mut self.wakes);
        let a = self.relay.append(sidx, kind, self.now, live, &mut board);
        self.set_session_deadline(sidx, a.deadline);
        if a.write_now && !self.pipelined {
            self.write_newest(sidx);
        }
        a.id
    }

    /// Writes the entries of session `sidx` not yet handed to its receive
    /// connection, in one write. Does nothing if it has no live connection
    /// (the entries stay held; a new receive connection replays them).
    fn write_newest(&mut self, sidx: usize) {
        let Some(s) = self.relay.get_mut(sidx) else {
            return;
        };
        let ci = s.conn.0 as usize;
        let Some(c) = live_conn(&self.conns, s) else {
            return;
        };
        if s.delivered >= s.last_seq {
            return;
        }
        let base = c.bytes_out + c.pending_out() as u64;
        let direct = c.tls.is_none() && c.pending_out() == 0 && !c.parked && self.cork != Some(ci);
        let framing = c.framing();
        let epoch = s.epoch;
        let mut out = std::mem::take(&mut self.stage);
        out.clear();
        let mark = framing.begin(&mut out);
        let n = (s.last_seq - s.delivered) as usize;
        // One large message whose body JSON holds as it is (compact JSON
        // delivered as a value, or text a JSON string holds unescaped) goes
        // out from where it is kept: the event's head, the body and the tail in one sendmsg,
        // instead of copying the body into the event first (on a chunked
        // stream the chunk's size line leads the head, its CRLF follows the tail).
        let sent = 'direct: {
            if n != 1 || !direct {
                break 'direct None;
            }
            let Some(e) = s.log.newest_mut(1).next() else {
                break 'direct None;
            };
            let EntryKind::Message { from, body, json } = &e.kind else {
                break 'direct None;
            };
            let json = *json;
            if body.len() < DIRECT_BODY_MIN || !(json || sse::plain_json_text(body)) {
                break 'direct None;
            }
            let id = EventId { epoch, seq: e.seq };
            let tail = events::message_head(&mut out, framing, id, from, body.len(), json);
            let more = body.len() + tail.len();
            let start = framing.finish_around(&mut out, mark, more);
            let end: &[u8] = match framing {
                Framing::Chunked => stream::CHUNK_END,
                Framing::Plain | Framing::WebSocket => b"",
            };
            let len = out.len() - start + more + end.len();
            e.wire_end = base + len as u64;
            let st = &self.shared.stats[self.id];
            WorkerStats::add(&st.stream_writes, 1);
            let c = &mut self.conns[ci];
            c.last_write = self.now;
            let head = &out[start..];
            Some(send_now(c, st, &[head, body, tail, end]))
        };
        if let Some(r) = sent {
            s.delivered = s.last_seq;
            self.stage = out;
            self.after_send(ci, r);
            self.trim_if_over(sidx);
            return;
        }
        let delivered = s.delivered;
        s.write_after(delivered, base, framing, &mut out);
        let start = framing.finish(&mut out, mark);
        let written = s.log.newest_mut(n).filter(|e| e.seq > delivered);
        super::attach::fix_wire_ends(written, start, framing);
        if out.len() > start {
            WorkerStats::add(&self.shared.stats[self.id].stream_writes, 1);
            self.write_conn(ci, &out[start..]);
        }
        self.stage = out;
        self.trim_if_over(sidx);
    }

    /// Trims session `sidx`'s log after a write if it is over the limits
    /// (see [`Relay::trim_if_over`]).
    fn trim_if_over(&mut self, sidx: usize) {
        let conns = &self.conns;
        let live = |s: &Session| live_conn(conns, s).is_some();
        let mut board = WorkerBoard::new(&self.shared, self.id, &mut self.wakes);
        self.relay.trim_if_over(sidx, live, &mut board);
    }

    /// Writes what this loop iteration appended after each session's first
    /// event (see [`Worker::append`]): one write per session. A session that
    /// went offline or was replaced in the meantime keeps its entries held (a
    /// new receive connection replays them).
    pub fn flush_sessions(&mut self) {
        let list = self.relay.take_flush();
        for &entry in &list {
            if self.relay.flush_due(entry) {
                self.write_newest(entry.0 as usize);
            }
        }
        self.relay.flushed(list);
    }
}

/// The receive connection session `s` is attached to, if it is still open.
fn live_conn<'a>(conns: &'a Slab<Conn>, s: &Session) -> Option<&'a Conn> {
    let (ci, cg) = s.conn;
    conns.get(ci as usize).filter(|c| cg != 0 && c.gen == cg)
}

/// The relay's limits, from the configuration.
pub(super) fn rules(cfg: &crate::config::Config) -> Rules {
    Rules {
        log: LogLimits {
            max_messages: cfg.hold_max_messages,
            max_bytes: cfg.hold_max_bytes,
        },
        hold_ms: cfg.hold.as_millis() as u64,
        hard: cfg.hold_total_bytes,
        conversation_ttl_ms: cfg.conversation_ttl.as_millis() as u64,
    }
}

//! Delivery: a message or notice is appended to its recipient's retained log
//! and written to the recipient's receive connection, if it has one. Of the
//! events one loop iteration appends for a client, the first is written at
//! once and the rest together at the end of the iteration. Events from the
//! second and later requests of a pipelined batch all wait for its end.

use std::sync::Arc;

use slab::Slab;

use super::conn::{send_now, Conn};
use super::session::TouchKey;
use super::stats::WorkerStats;
use super::worker::Worker;
use super::{Envelope, SendError};
use crate::ids::EventId;
use crate::proto::sse;
use crate::proto::stream::{self, Framing};
use crate::relay::retained::{self, EntryKind};
use crate::relay::session::Session;
use crate::relay::stream::{LogLimits, Pressure};

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
        let Some(sidx) = self.sessions.find(account, to) else {
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
        if !self.sessions.slab[sidx].online()
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
            if self.sessions.slab[sidx].online() {
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
        let epoch = self.sessions.slab[sidx].epoch;
        if !self.touch_due(TouchKey::Pair(account, from, to, epoch)) {
            return Ok(id);
        }
        self.note_partner(sidx, from);
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

    /// Appends an entry to session `sidx`'s log, enforcing the limits, and
    /// writes it out if the client is online.
    pub(super) fn append(&mut self, sidx: usize, kind: EntryKind) -> EventId {
        let now = self.now;
        let s = &mut self.sessions.slab[sidx];
        let (id, grown) = s.push_entry(now, kind);
        // The first event a loop iteration appends for an online client is
        // written at once (no added latency). Any further ones wait in the log
        // until the end of the iteration and then go out together, in one
        // write (and one read for the client) instead of one each: a burst
        // for one client costs two writes, not one per event. The events of
        // a pipelined request after the first of its batch wait as well
        // (`Worker::pipelined`): that client accepted waiting for its earlier
        // requests, and whatever else the batch brings for the same clients
        // joins them in one write.
        let write_now = s.online() && !s.flush_queued;
        if write_now {
            s.flush_queued = true;
            let gen = s.gen;
            self.to_flush.push((sidx as u32, gen));
        }
        self.trim(sidx, grown);
        let s = &self.sessions.slab[sidx];
        let deadline = s.deadline(self.shared.config.hold.as_millis() as u64, now);
        self.set_session_deadline(sidx, deadline);
        if write_now && !self.pipelined {
            self.write_newest(sidx);
        }
        id
    }

    /// Enforces the retention limits on session `sidx`'s log, oldest entries
    /// first; `grown` is what the entry just appended to it added to the
    /// retained bytes (0 when trimming after a write). Entries a live receive
    /// connection has not been sent yet are not dropped: they wait for the end
    /// of the loop iteration, are written, and the log is trimmed again then
    /// (so it can exceed the limits by one iteration's burst for a moment).
    /// Dropping an entry that was never handed out (the client is offline)
    /// records a gap for its next stream.
    ///
    /// `--hold-total-bytes` is kept in steps, run when a session receives:
    /// past three quarters of it, the session's delivered entries (kept only
    /// for replay) go. Past all of it, a held session's new entry makes room
    /// for itself, no more: `grown` bytes are taken from this worker's held
    /// sessions in the order they became held, oldest entries first
    /// ([`Worker::evict_held`]; the receiving session in its place in that
    /// order, or first if eviction has already passed it), then from the
    /// receiving session itself; or by another worker, from its own held
    /// sessions, if it holds a client gone longer ([`Worker::ask_older_worker`]). A live session's entries never push out a
    /// held session's (they leave after their write), and another worker's
    /// overshoot does not empty this worker's sessions. Retained memory so
    /// passes the limit by no more than one iteration's burst per worker (the
    /// other workers' part is read once per iteration).
    fn trim(&mut self, sidx: usize, grown: usize) {
        let cfg = &self.shared.config;
        let hard = cfg.hold_total_bytes;
        let soft = soft_limit(cfg);
        let s = &mut self.sessions.slab[sidx];
        // Retained on the node: this worker's tally, which the steps below
        // change, and the other workers' part as read this iteration.
        if !s.over_limits(log_limits(cfg)) && retained::node_bytes(self.others_retained) <= soft {
            s.log.compact();
            self.budget_dropping = false;
            self.held_order.rewind();
            return;
        }
        let held_since = s.held_since;
        self.trim_own(sidx, 0);
        if held_since > 0 && self.node_retained() > hard {
            let mut budget = grown;
            // Eviction went past this session earlier in this episode (it
            // was empty then), or reached sessions held in the same
            // millisecond: its turn is now, before those held later.
            let cursor = self.held_order.at_cursor().map(|(_, _, since)| since);
            let passed = cursor.is_none_or(|since| held_since <= since);
            // When the session whose turn it is here became held.
            let mine = cursor.map_or(held_since, |since| since.min(held_since));
            if self.ask_older_worker(mine, budget) {
                // Another worker holds a client gone longer: it makes the room.
                budget = 0;
            } else if passed {
                budget = budget.saturating_sub(self.trim_own(sidx, budget));
            }
            budget = budget.saturating_sub(self.evict_held(hard, budget));
            self.trim_own(sidx, budget);
        }
        if self.node_retained() <= soft {
            self.budget_dropping = false;
            self.held_order.rewind();
        }
    }

    /// One pass of [`Worker::trim`] over session `sidx`'s own log: entries
    /// past its own limits and its delivered entries while the node is past
    /// three quarters of `--hold-total-bytes`; then, if its client is not
    /// connected, up to `budget` bytes of its other entries while the node is
    /// past the whole limit. Returns the bytes freed against `budget`.
    fn trim_own(&mut self, sidx: usize, budget: usize) -> usize {
        let cfg = &self.shared.config;
        let st = &self.shared.stats[self.id];
        let hard = cfg.hold_total_bytes;
        let soft = soft_limit(cfg);
        let others = self.others_retained;
        let s = &mut self.sessions.slab[sidx];
        let live = live_conn(&self.conns, s).is_some();
        let pressure = Pressure { soft, hard, others };
        let t = s.trim(log_limits(cfg), pressure, live, budget);
        if t.memory_trims > 0 {
            WorkerStats::add(&st.memory_trims, t.memory_trims);
        }
        if t.lost > 0 {
            WorkerStats::add(&st.dropped, t.lost);
        }
        let (freed, lost_for_memory) = (t.freed, t.lost_for_memory);
        if lost_for_memory > 0 && !self.budget_dropping {
            self.budget_dropping = true;
            warn_budget(s, hard, lost_for_memory);
        }
        freed
    }

    /// Writes the entries of session `sidx` not yet handed to its receive
    /// connection, in one write. Does nothing if it has no live connection
    /// (the entries stay held; a new receive connection replays them).
    fn write_newest(&mut self, sidx: usize) {
        let Some(s) = self.sessions.get_mut(sidx) else {
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
            sse::encode_message_head(&mut out, id, from, json);
            let tail = sse::message_tail(json);
            let more = body.len() + tail.len();
            let start = framing.finish_around(&mut out, mark, more);
            let end: &[u8] = match framing {
                Framing::Chunked => stream::CHUNK_END,
                Framing::Plain => b"",
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
        s.write_after(delivered, base, &mut out);
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

    /// Trims session `sidx`'s log if it is over the limits: entries held back
    /// from trimming until they were written (see `trim`).
    fn trim_if_over(&mut self, sidx: usize) {
        let over_budget = self.node_retained() > soft_limit(&self.shared.config);
        if self
            .sessions
            .get(sidx)
            .is_some_and(|s| over_budget || s.over_limits(log_limits(&self.shared.config)))
        {
            self.trim(sidx, 0);
        }
    }

    /// Writes what this loop iteration appended after each session's first
    /// event (see [`Worker::append`]): one write per session. A session that
    /// went offline or was replaced in the meantime keeps its entries held (a
    /// new receive connection replays them).
    pub fn flush_sessions(&mut self) {
        if self.to_flush.is_empty() {
            return;
        }
        let mut list = std::mem::take(&mut self.to_flush);
        for &(sidx, gen) in &list {
            let sidx = sidx as usize;
            let Some(s) = self.sessions.get_mut(sidx) else {
                continue;
            };
            if s.gen != gen || !s.flush_queued {
                continue;
            }
            s.flush_queued = false;
            self.write_newest(sidx);
        }
        list.clear();
        // Keep the list's memory unless a burst made it large.
        if list.capacity() <= 1024 {
            self.to_flush = list;
        }
    }
}

/// The receive connection session `s` is attached to, if it is still open.
fn live_conn<'a>(conns: &'a Slab<Conn>, s: &Session) -> Option<&'a Conn> {
    let (ci, cg) = s.conn;
    conns.get(ci as usize).filter(|c| cg != 0 && c.gen == cg)
}

/// The retention limits of one session's log, from the configuration.
pub(super) fn log_limits(cfg: &crate::config::Config) -> LogLimits {
    LogLimits {
        max_messages: cfg.hold_max_messages,
        max_bytes: cfg.hold_max_bytes,
    }
}

/// Three quarters of `--hold-total-bytes`: past it, delivered entries make
/// room (see `Worker::trim`).
pub(super) fn soft_limit(cfg: &crate::config::Config) -> usize {
    cfg.hold_total_bytes / 4 * 3
}

/// The warning, once per episode of memory pressure, that held clients are
/// losing messages to `--hold-total-bytes`.
pub(super) fn warn_budget(s: &Session, hard: usize, lost: u64) {
    log::warn!(
        "{} retained messages reached --hold-total-bytes ({} bytes); {} undelivered \
         message(s) of held client {} dropped, oldest first (its next stream starts with a \
         gap); clients held the longest lose theirs first",
        s.sid,
        hard,
        lost,
        s.key
    );
}

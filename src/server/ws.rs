//! WebSocket connections (`GET /v1/connect`): a receive connection whose
//! client also sends. The stream's side is the SSE stream's (the events are
//! encoded as text frames, `proto::events`); this module reads the client's
//! frames (`proto::ws::frame`), carries out its commands (`proto::ws_msg`)
//! and answers them in order.
//!
//! An idle WebSocket connection costs what an SSE stream costs: the frame
//! decoder and the bytes of an incomplete message live in [`Partials`], a
//! per-worker table keyed by slab index, only while a frame or message is
//! incomplete. Answers to the commands of one read go out in one write;
//! answers that wait for another worker or node take a slot in the
//! connection's pipe (`pipe`), as pipelined HTTP sends do, and later
//! answers queue behind them.

use std::collections::HashMap;
use std::sync::Arc;

use super::conn::{CloseReason, State};
use super::stats::WorkerStats;
use super::worker::Worker;
use super::{Envelope, ReplyTo, SendError};
use crate::ids::EventId;
use crate::proto::stream::Framing;
use crate::proto::ws::close;
use crate::proto::ws::encode::{push_close, push_pong, InPlace, Opcode};
use crate::proto::ws::frame::{Event, FrameDecoder};
use crate::proto::ws_msg::{self, Command};

/// Room for the JSON around a body of `--max-message` bytes: the whole
/// message may be `2 x --max-message` plus this (escapes and base64 take
/// more than the body's bytes; docs/websocket.md, "Limits").
const ENVELOPE_ALLOWANCE: usize = 4096;

/// The largest WebSocket message a client may send, for `max_message`.
pub(super) fn message_limit(max_message: usize) -> usize {
    max_message
        .saturating_mul(2)
        .saturating_add(ENVELOPE_ALLOWANCE)
}

/// The frame state of a connection between reads, while it is not idle.
struct Partial {
    /// The connection's generation (a reused slot starts afresh).
    gen: u32,
    dec: FrameDecoder,
    /// The bytes of an incomplete message (see `FrameDecoder::decode`).
    buf: Option<Vec<u8>>,
    /// When the frame or message began (monotonic ms): it must be
    /// complete within `--body-timeout`, as a request body must.
    since: u64,
}

/// Incomplete frames and messages of a worker's WebSocket connections, by
/// slab index. Empty while every connection is between messages.
#[derive(Default)]
pub(super) struct Partials(HashMap<usize, Box<Partial>>);

impl Partials {
    /// The state of connection `idx` (fresh if it has none): the decoder,
    /// the incomplete message and when it began (0: nothing began).
    fn take(&mut self, idx: usize, gen: u32) -> (FrameDecoder, Option<Vec<u8>>, u64) {
        if self.0.is_empty() {
            return (FrameDecoder::new(), None, 0);
        }
        match self.0.remove(&idx) {
            Some(p) if p.gen == gen => (p.dec, p.buf, p.since),
            _ => (FrameDecoder::new(), None, 0),
        }
    }

    /// Keeps the state of connection `idx` if a frame or message is
    /// incomplete; returns when it began (0 if nothing is kept).
    fn keep(
        &mut self,
        idx: usize,
        gen: u32,
        dec: FrameDecoder,
        buf: Option<Vec<u8>>,
        since: u64,
    ) -> u64 {
        if dec.is_idle() && buf.is_none() {
            return 0;
        }
        self.0.insert(
            idx,
            Box::new(Partial {
                gen,
                dec,
                buf,
                since,
            }),
        );
        since
    }

    /// When connection `idx`'s incomplete frame or message began, if it has one.
    pub fn began(&self, idx: usize, gen: u32) -> Option<u64> {
        if self.0.is_empty() {
            return None;
        }
        self.0.get(&idx).filter(|p| p.gen == gen).map(|p| p.since)
    }

    /// Forgets connection `idx` (it closed or moved).
    pub fn remove(&mut self, idx: usize) {
        if !self.0.is_empty() {
            self.0.remove(&idx);
        }
    }

    /// Gives back the table's memory after a burst (housekeeping).
    pub fn shrink(&mut self) {
        if self.0.capacity() > 64 && self.0.len() < self.0.capacity() / 4 {
            self.0.shrink_to_fit();
        }
    }
}

/// Appends an answer frame: the JSON `f` writes, as one text frame.
pub(super) fn frame(out: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) {
    let at = InPlace::begin(out, Opcode::Text, 100);
    f(out);
    at.finish(out);
}

/// Appends the answer to a send as a frame.
pub(super) fn render_send(out: &mut Vec<u8>, ref_: Option<&str>, r: Result<EventId, SendError>) {
    match r {
        Ok(id) => frame(out, |o| ws_msg::encode_accepted(o, ref_, id)),
        Err(e) => {
            let (_, code, message) = e.answer();
            frame(out, |o| ws_msg::encode_error(o, ref_, code, message));
        }
    }
}

/// Appends the answer to a `clients` command as a frame (`None`: the
/// cluster could not be asked).
pub(super) fn render_clients(
    out: &mut Vec<u8>,
    ref_: Option<&str>,
    clients: Option<&mut Vec<super::ClientInfo>>,
) {
    let Some(clients) = clients else {
        let msg = "the cluster cannot be reached; retry later";
        frame(out, |o| {
            ws_msg::encode_error(o, ref_, "cluster_unavailable", msg)
        });
        return;
    };
    clients.sort_by(|a, b| a.client.cmp(&b.client));
    frame(out, |o| {
        let entries = clients.iter().map(|c| ws_msg::ClientEntry {
            client: &c.client,
            role: c.role.as_str(),
            online: c.online,
            since_ms: c.since_ms,
        });
        ws_msg::encode_clients(o, ref_, entries)
    });
}

/// How a batch of frames ended.
enum Stop {
    /// All input was read (or the connection waits for answers).
    Done,
    /// The connection must end with a Close frame of this code and reason.
    Close(u16, &'static str),
    /// The client closed: echo its code and end.
    PeerClose(u16),
    /// The connection is gone (closed or moved while a command ran).
    Gone,
}

impl Worker {
    /// Reads the frames buffered for WebSocket connection `idx` and carries
    /// out its commands; the answers of one call go out in one write.
    pub fn ws_input(&mut self, idx: usize) {
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        let gen = c.gen;
        let State::Receive {
            sess,
            framing: Framing::WebSocket,
            ..
        } = c.state
        else {
            return;
        };
        if c.close_after_flush {
            c.inbuf = Vec::new();
            return;
        }
        let mut input = std::mem::take(&mut c.inbuf);
        let (mut dec, mut buf, since) = self.ws.take(idx, gen);
        let limit = message_limit(self.shared.config.max_message);
        let mut out = std::mem::take(&mut self.ws_out);
        out.clear();
        let outer = self.pipelined;
        let mut nth = 0;
        let mut pos = 0;
        let mut stop = Stop::Done;
        while pos < input.len() {
            if self
                .pipes
                .get(idx)
                .is_some_and(|p| p.len() >= super::pipe::MAX_IN_FLIGHT)
            {
                break; // the rest waits for answers (`resume`)
            }
            let d = match dec.decode(&mut input[pos..], &mut buf, limit) {
                Ok(d) => d,
                Err(e) => {
                    let sid = self.conns[idx].sid;
                    log::info!("{sid} websocket protocol error: {}", e.reason());
                    WorkerStats::add(&self.shared.stats[self.id].ws_protocol_errors, 1);
                    stop = Stop::Close(e.close_code(), e.reason());
                    break;
                }
            };
            pos += d.consumed;
            let Some(event) = d.event else {
                continue;
            };
            match event {
                Event::Text(text) => {
                    // Later commands of a batch defer their events to the
                    // iteration's end, as pipelined HTTP sends do.
                    self.pipelined = nth > 0;
                    nth += 1;
                    let live = self.ws_command(idx, sess as usize, &text, &mut out);
                    self.pipelined = outer;
                    if !live || self.conns.get(idx).is_none_or(|c| c.gen != gen) {
                        stop = Stop::Gone;
                        break;
                    }
                }
                Event::Binary(_) => {
                    WorkerStats::add(&self.shared.stats[self.id].ws_protocol_errors, 1);
                    stop = Stop::Close(close::UNSUPPORTED_DATA, "binary messages are not accepted");
                    break;
                }
                Event::Ping(p) => push_pong(&mut out, &p),
                Event::Pong(_) => {}
                Event::Close(code) => {
                    stop = Stop::PeerClose(close::reply_code(code.map(|c| c.code)));
                    break;
                }
            }
        }
        let input_len = input.len();
        if matches!(stop, Stop::Gone) {
            out.clear();
            self.ws_out = out;
            return;
        }
        // Input not read yet (answers are awaited) stays, ahead of anything
        // that arrived meanwhile.
        if matches!(stop, Stop::Done) && pos < input.len() {
            let c = &mut self.conns[idx];
            let later = std::mem::take(&mut c.inbuf);
            input.drain(..pos);
            input.extend_from_slice(&later);
            c.inbuf = input;
        }
        if matches!(stop, Stop::Done) {
            // An incomplete frame or message gets --body-timeout from its start.
            let since = if since == 0 { self.now } else { since };
            if self.ws.keep(idx, gen, dec, buf, since) != 0 {
                let d = since + self.shared.config.body_timeout.as_millis() as u64;
                let d = match self.conns[idx].deadline {
                    0 => d,
                    hb => hb.min(d),
                };
                self.set_conn_deadline(idx, d);
            }
        }
        let ok = self.ws_answer(idx, &out);
        out.clear();
        self.ws_out = out;
        if !ok {
            return;
        }
        match stop {
            Stop::Done | Stop::Gone => {
                let c = &mut self.conns[idx];
                if c.inbuf.is_empty() {
                    if c.read_paused {
                        self.read_ready(idx);
                    }
                    return;
                }
                // Input that came while this ran (a TLS record decrypted
                // while writing), unless it waits for answers.
                let full = self
                    .pipes
                    .get(idx)
                    .is_some_and(|p| p.len() >= super::pipe::MAX_IN_FLIGHT);
                if pos >= input_len && !full {
                    self.ws_input(idx);
                }
            }
            Stop::Close(code, reason) => self.ws_close(idx, code, reason),
            Stop::PeerClose(code) => {
                let mut frame = Vec::with_capacity(4);
                push_close(&mut frame, code, "");
                if self.write_conn(idx, &frame) && self.conns[idx].pending_out() == 0 {
                    // Everything is out: the session is held with what the
                    // client's TCP confirmed (`close_conn`).
                    self.close_conn(idx, CloseReason::PeerClosed);
                } else if let Some(c) = self.conns.get_mut(idx) {
                    c.close_after_flush = true;
                }
            }
        }
    }

    /// Writes the answers of a batch, then what the pipe has ready. False if
    /// the connection closed. (`out` holds only answers read while the
    /// connection had no pipe, all before its first slot: a slot reserved in
    /// the batch took the answers before it along, `push_awaited`.)
    fn ws_answer(&mut self, idx: usize, out: &[u8]) -> bool {
        if !out.is_empty() && !self.write_conn(idx, out) {
            return false;
        }
        self.drain_pipe(idx) && self.conns.contains(idx)
    }

    /// The timer of WebSocket connection `idx` fired: a message not
    /// completed within `--body-timeout` ends the connection (1008);
    /// otherwise it is the heartbeat's.
    pub(super) fn ws_timeout(&mut self, idx: usize) {
        let gen = self.conns[idx].gen;
        let limit = self.shared.config.body_timeout.as_millis() as u64;
        match self.ws.began(idx, gen) {
            Some(since) if self.now >= since + limit => {
                let reason = "message not completed in time";
                self.ws_close(idx, close::POLICY_VIOLATION, reason);
            }
            Some(since) => {
                self.heartbeat(idx);
                if let Some(c) = self.conns.get(idx) {
                    let d = c.deadline.min(since + limit);
                    self.set_conn_deadline(idx, d);
                }
            }
            None => self.heartbeat(idx),
        }
    }

    /// Ends WebSocket connection `idx` with a Close frame (`code`, `reason`),
    /// closing it once that is written. Input after it is discarded.
    pub(super) fn ws_close(&mut self, idx: usize, code: u16, reason: &str) {
        let mut frame = Vec::with_capacity(4 + reason.len());
        push_close(&mut frame, code, reason);
        log::info!(
            "{} websocket closed by the server: {code} {reason}",
            self.conns[idx].sid
        );
        self.conns[idx].close_after_flush = true;
        self.conns[idx].inbuf = Vec::new();
        self.ws.remove(idx);
        if self.write_conn(idx, &frame) && self.conns[idx].pending_out() == 0 {
            self.finish_close(idx);
        }
    }

    /// Carries out one command of session `sidx`'s client. Its answer goes to
    /// `out` (or, behind answers still awaited, to the pipe). False if the
    /// connection closed.
    fn ws_command(&mut self, idx: usize, sidx: usize, text: &[u8], out: &mut Vec<u8>) -> bool {
        WorkerStats::add(&self.shared.stats[self.id].ws_commands, 1);
        let cmd = match ws_msg::parse(text, self.shared.config.max_message) {
            Ok(c) => c,
            Err(e) => {
                self.shared.stats[self.id].error(e.status(), e.code());
                log::debug!(
                    "{} websocket command refused: {}",
                    self.conns[idx].sid,
                    e.code()
                );
                let mut answer = Vec::new();
                frame(&mut answer, |o| e.encode(o));
                return self.ws_push(idx, out, &answer);
            }
        };
        let Some((account, from)) = self.ws_sender(idx, sidx) else {
            return true;
        };
        match cmd {
            Command::Send { to, body, ref_ } => {
                let body = (body.bytes.into_owned().into_boxed_slice(), body.json);
                self.ws_send(idx, (&account, &from), &to, body, ref_.as_deref(), out)
            }
            Command::Clients { ref_ } => self.ws_list(idx, &account, ref_.as_deref(), out),
        }
    }

    /// Queues an answer: in `out` unless answers are awaited (then behind
    /// them in the pipe).
    fn ws_push(&mut self, idx: usize, out: &mut Vec<u8>, answer: &[u8]) -> bool {
        match self.pipes.get_mut(idx) {
            Some(p) => p.push_ready(answer, false),
            None => out.extend_from_slice(answer),
        }
        self.conns.contains(idx)
    }

    /// The account and client id of WebSocket connection `idx` (session
    /// `sidx`), the sender of its commands; kept for the connection that
    /// sent last, so a batch of commands allocates them once.
    fn ws_sender(&mut self, idx: usize, sidx: usize) -> Option<(Arc<str>, Arc<str>)> {
        let gen = self.conns[idx].gen;
        if let Some(w) = &self.ws_from {
            if w.0 == idx && w.1 == gen {
                return Some((w.2.clone(), w.3.clone()));
            }
        }
        let s = self.relay.get(sidx)?;
        let (account, from): (Arc<str>, Arc<str>) = (s.account().into(), s.client().into());
        self.ws_from = Some((idx, gen, account.clone(), from.clone()));
        Some((account, from))
    }

    /// A `send` command: delivered here at once when this worker holds the
    /// recipient, else handed to its worker or node with a slot for the answer.
    fn ws_send(
        &mut self,
        idx: usize,
        (account, from): (&str, &Arc<str>),
        to: &str,
        (body, json): (Box<[u8]>, bool),
        ref_: Option<&str>,
        out: &mut Vec<u8>,
    ) -> bool {
        let owner = self.shared.owner(account, to);
        let token = self.token_of(idx);
        if owner == self.id {
            let found = self.relay.find(account, to);
            let remote = self.shared.cluster.is_some()
                && found.is_none_or(|i| !self.relay.session(i).online());
            if !remote {
                let r = match found {
                    Some(sidx) => self.deliver_to(sidx, account, from, to, body, json),
                    None => self.deliver(account, from, to, body, json),
                };
                if let Err(e) = r {
                    let (status, code, _) = e.answer();
                    self.shared.stats[self.id].error(status, code);
                }
                if !self.conns.contains(idx) {
                    return false;
                }
                let mut answer = std::mem::take(&mut self.json_scratch);
                answer.clear();
                render_send(&mut answer, ref_, r);
                let live = self.ws_push(idx, out, &answer);
                self.json_scratch = answer;
                return live;
            }
            let seq = self.reserve_ws_slot(idx, ref_, out);
            let reply = ReplyTo {
                worker: self.id,
                token,
                seq,
            };
            let body = (body, json);
            self.deliver_or_forward(found, account, from, to, body, reply, false);
            return self.conns.contains(idx);
        }
        let seq = self.reserve_ws_slot(idx, ref_, out);
        let reply = ReplyTo {
            worker: self.id,
            token,
            seq,
        };
        let env = Envelope::Deliver {
            account: account.into(),
            from: from.clone(),
            to: to.into(),
            body,
            json,
            reply,
            checked: false,
        };
        if self.post(owner, env).is_err() {
            self.send_done(reply, Err(SendError::Overloaded));
        } else {
            WorkerStats::add(&self.shared.stats[self.id].cross_worker_sends, 1);
        }
        self.conns.contains(idx)
    }

    /// A `clients` command: the clients of the account, from every worker
    /// that may hold some (or the cluster's presence table).
    fn ws_list(
        &mut self,
        idx: usize,
        account: &str,
        ref_: Option<&str>,
        out: &mut Vec<u8>,
    ) -> bool {
        let token = self.token_of(idx);
        if let Some(b) = self.shared.cluster.clone() {
            let seq = self.reserve_ws_list(idx, ref_, 1, out);
            let cmd = super::bridge::BridgeCmd::List {
                account: account.into(),
                reply: ReplyTo {
                    worker: self.id,
                    token,
                    seq,
                },
            };
            if !b.submit(cmd) {
                self.ws_list_part(idx, seq, None);
            }
            return self.conns.contains(idx);
        }
        let sender = self.conns_session_client(idx);
        let holder = (self.shared.config.shard_by == crate::config::ShardBy::Account)
            .then(|| self.shared.owner(account, &sender));
        let mut clients = if holder.is_none_or(|h| h == self.id) {
            self.list_clients(account)
        } else {
            Vec::new()
        };
        let others: Vec<usize> = (0..self.shared.peers.len())
            .filter(|&w| w != self.id && holder.is_none_or(|h| h == w))
            .collect();
        if others.is_empty() {
            let mut answer = Vec::new();
            render_clients(&mut answer, ref_, Some(&mut clients));
            return self.ws_push(idx, out, &answer);
        }
        let seq = self.reserve_ws_list(idx, ref_, others.len() + 1, out);
        self.ws_list_part(idx, seq, Some(clients));
        for w in others {
            let env = Envelope::List {
                account: account.into(),
                reply: ReplyTo {
                    worker: self.id,
                    token,
                    seq,
                },
            };
            if self.post(w, env).is_err() {
                self.ws_list_part(idx, seq, None);
            }
        }
        self.conns.contains(idx)
    }

    /// The client id of WebSocket connection `idx`'s session.
    fn conns_session_client(&self, idx: usize) -> String {
        match self.conns[idx].state {
            State::Receive { sess, .. } => self
                .relay
                .get(sess as usize)
                .map(|s| s.client().to_string())
                .unwrap_or_default(),
            _ => String::new(),
        }
    }
}

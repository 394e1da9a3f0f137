//! Request handling: turns buffered input into requests (with the sans-IO
//! parsers), authenticates them and routes them to receive, send and list.

use std::sync::Arc;

use super::bridge::BridgeCmd;
use super::conn::State;
use super::worker::Worker;
use super::{Attach, Envelope, Handoff, Moving, ReplyTo, SendError};
use crate::auth::{AuthError, Identity};
use crate::proto::head::RequestHead;
use crate::proto::route::Route;

/// Verified tokens remembered per worker.
const TOKEN_CACHE: usize = 1024;

/// Stop processing pipelined requests while this much output is unsent.
const MAX_PIPELINE_OUT: usize = 64 * 1024;

impl Worker {
    /// Processes buffered input of connection `idx` until it needs more bytes,
    /// waits for another worker, or becomes a receive connection.
    ///
    /// Output for `idx` is held back while this runs and written once, after
    /// the loop iteration's events (`park`): the answers to pipelined requests
    /// that are read together go out in one `send`, as Redis does with
    /// pipelined commands. The events for recipients are written as usual,
    /// except that those of the second and later requests wait for the end of
    /// the loop iteration (`Worker::pipelined`).
    pub fn process(&mut self, idx: usize) {
        // Only one connection is held back at a time: should this run inside
        // another connection's processing, that one's output goes out first.
        if let Some(other) = self.cork.filter(|&o| o != idx) {
            self.uncork(other);
        }
        // Answers parked by an earlier run in this iteration go first.
        if !self.unpark(idx) {
            return;
        }
        self.cork = Some(idx);
        let mut go_on;
        loop {
            // Answers that waited for pipelined sends, then new requests.
            go_on = self.drain_pipe(idx) && self.process_requests(idx);
            if !go_on || !self.pipe_front_ready(idx) {
                break;
            }
        }
        // The answers wait for the end of the iteration, after its events
        // (`park`), unless the connection is closing or has more to send.
        self.park_or_uncork(idx);
        if !go_on {
            return;
        }
        if let Some(c) = self.conns.get_mut(idx) {
            if c.inbuf.is_empty() && c.inbuf.capacity() > 0 {
                c.inbuf = Vec::new();
            }
            if c.read_paused {
                self.read_ready(idx);
            }
        }
        self.finish_if_half_closed(idx);
    }

    /// A request body began on connection `idx`: it must be complete within
    /// `--body-timeout` (whether it began in `feed` or in a large read handed
    /// to `RequestReader::begin_body`).
    pub(super) fn arm_body_timeout(&mut self, idx: usize) {
        let d = self.now + self.shared.config.body_timeout.as_millis() as u64;
        self.set_conn_deadline(idx, d);
    }

    /// The request loop of [`Worker::process`]; false if the connection was
    /// answered with an error and is closing.
    ///
    /// The input of the requests handled is removed from the front of `inbuf`
    /// once, when the loop ends: removing each request's bytes as it was handled
    /// moved the rest of a pipelined batch down every time, quadratic in the
    /// batch (7,000 small requests written at once cost 2.5 times the CPU;
    /// docs/perf-history.md, 2026-12-02, 62726b6).
    /// While a request is dispatched, `Worker::consumed` says how much of the
    /// front is done, for `release_conn`, which takes the input along. The
    /// code that clears the input (a receive connection's start, linger) also
    /// leaves the request state, after which the input is never parsed again,
    /// so what the final removal takes from it does not matter.
    fn process_requests(&mut self, idx: usize) -> bool {
        let Some(mut gen) = self.conns.get(idx).map(|c| c.gen) else {
            return false;
        };
        let mut nth = 0u32;
        let mut skip = 0usize;
        let ok = loop {
            let Some(c) = self.conns.get_mut(idx) else {
                return false;
            };
            if c.gen != gen {
                // Handed away and taken back into the same slot: its input was
                // settled when it left (`release_conn`).
                gen = c.gen;
                skip = 0;
            }
            // A body received straight into its buffer completes with no input left.
            let complete = matches!(&c.state, State::Request(r) if r.body_complete());
            if c.close_after_flush
                || (c.inbuf.len() <= skip && !complete)
                || c.pending_out() > MAX_PIPELINE_OUT
            {
                break true;
            }
            if let Some(p) = self.pipes.get(idx) {
                if p.len() >= super::pipe::MAX_IN_FLIGHT || p.closing() {
                    break true;
                }
            }
            let c = &mut self.conns[idx];
            let State::Request(reader) = &mut c.state else {
                break true;
            };
            let was_in_body = reader.in_body();
            let cfg = &self.shared.config;
            let input = c.inbuf.get(skip..).unwrap_or_default();
            match reader.feed(input, &cfg.head_limits, cfg.max_message) {
                Ok((n, req)) => {
                    skip += n.min(input.len());
                    match req {
                        Some(req) => {
                            // Later requests of a batch read together defer their events.
                            self.pipelined = nth > 0;
                            nth += 1;
                            let outer = self.consumed.replace((idx, skip));
                            self.dispatch(idx, req.head, req.body);
                            // The input may have been taken along meanwhile (`settle_consumed`).
                            skip = match std::mem::replace(&mut self.consumed, outer) {
                                Some((i, s)) if i == idx => s,
                                _ => 0,
                            };
                            self.pipelined = false;
                        }
                        None => {
                            if !was_in_body && reader.in_body() {
                                let expect = reader.take_expect().cloned();
                                self.arm_body_timeout(idx);
                                if let Some(head) = expect {
                                    if !self.answer_expect(idx, &head) {
                                        break false;
                                    }
                                }
                            }
                            break true;
                        }
                    }
                }
                Err(e) => {
                    log::debug!("{} bad request: {}", c.sid, e.message());
                    self.respond_error(idx, e.status(), e.code(), &e.message(), true);
                    break false;
                }
            }
        };
        if let Some(c) = self.conns.get_mut(idx).filter(|c| c.gen == gen) {
            c.inbuf.drain(..skip.min(c.inbuf.len()));
        }
        ok
    }

    /// A request whose head asked for `100 Continue` (and whose declared
    /// length is within the limit, or it would not have opened its body):
    /// checks its route and token now, before its body is read. If they are
    /// good, writes `100 Continue` (unless answers to earlier pipelined
    /// requests are still due, which must come first: the client then sends
    /// the body after its own wait). Otherwise answers the final error at once
    /// and closes the connection, since the body may still be on its way and
    /// the next request could not be told from it; false then.
    fn answer_expect(&mut self, idx: usize, head: &RequestHead) -> bool {
        let checked = match crate::proto::route::route(head) {
            Ok((route, token)) => self
                .verify_cached(
                    &token,
                    !matches!(route, Route::Receive { .. } | Route::Connect { .. }),
                )
                .map(|_| ())
                .map_err(|e| (401, e.code(), e.message())),
            Err(e) => Err((e.status(), e.code(), e.message(head.path()))),
        };
        match checked {
            Ok(()) => {
                if !self.pipes.contains(idx) {
                    return self.write_conn(idx, crate::proto::response::CONTINUE);
                }
                true
            }
            Err((status, code, message)) => {
                log::info!(
                    "{} refused before its body (Expect: 100-continue): {code}",
                    self.conns[idx].sid
                );
                self.respond_error(idx, status, code, &message, true);
                false
            }
        }
    }

    /// Removes the input already handled from the front of connection `idx`'s
    /// `inbuf`, if its requests are being dispatched (see `process_requests`),
    /// before the input is taken.
    pub(super) fn settle_consumed(&mut self, idx: usize) {
        if let Some((i, skip)) = self.consumed {
            if i == idx {
                if let Some(c) = self.conns.get_mut(idx) {
                    c.inbuf.drain(..skip.min(c.inbuf.len()));
                }
                self.consumed = Some((idx, 0));
            }
        }
    }

    /// Verifies a token, remembering recently verified ones: a keep-alive
    /// sender repeats the same token on every request, and the HMAC, base64 and
    /// JSON work is the largest cost of a small send. A hit still checks
    /// expiry. The cache is keyed by the whole token with a randomly seeded
    /// hash, so a guessed token never reaches a comparison with a cached one
    /// except by a full hash collision.
    ///
    /// Only tokens of requests that repeat (`remember`: sends, listings) are
    /// kept: a receive connection presents its token once and then stays for
    /// hours, and caching it would cost an idle connection about 400 bytes
    /// (the token, its identity and the table slot) for nothing.
    fn verify_cached(
        &mut self,
        token: &str,
        remember: bool,
    ) -> Result<std::sync::Arc<Identity>, AuthError> {
        let now = self.wall_ms / 1000;
        if let Some(id) = self.token_cache.get(token) {
            if now < id.exp {
                return Ok(id.clone());
            }
        }
        let id = std::sync::Arc::new(self.shared.verifier.verify(token, now)?);
        if !remember {
            return Ok(id);
        }
        if self.token_cache.len() >= TOKEN_CACHE {
            self.token_cache.clear();
        }
        self.token_cache.insert(token.into(), id.clone());
        Ok(id)
    }

    /// Routes one complete request.
    fn dispatch(&mut self, idx: usize, head: RequestHead, body: Vec<u8>) {
        // A refused WebSocket handshake ends the connection: its client
        // would not know what to send on it next.
        let close = head.close || head.websocket;
        #[cfg(feature = "fault-injection")]
        match head.path() {
            // Test-only: a panic inside one connection's handling.
            "/v1/debug/panic" => panic!("fault injection: panic in connection handling"),
            // Test-only: a panic outside connection handling (in the worker's envelope handling).
            "/v1/debug/panic-worker" => {
                let _ = self.post(self.id, super::Envelope::Panic);
            }
            // Test-only: every other worker stalls for `?ms=` milliseconds (default 1000).
            "/v1/debug/stall-others" => {
                let ms = crate::proto::head::query_param(head.query().unwrap_or(""), "ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000);
                let me = self.id;
                for w in (0..self.shared.config.workers).filter(|&w| w != me) {
                    let _ = self.post(w, super::Envelope::Stall(ms));
                }
            }
            _ => {}
        }
        // Cross-origin requests first: one from an origin that is not allowed
        // never gets to its token, let alone a session.
        let checked = self
            .shared
            .config
            .allowed_origins
            .check(head.origin(), head.same_origin());
        match checked {
            Ok(allow) => self.set_cors(idx, allow),
            Err(e) => {
                let origin = head.origin().unwrap_or_default();
                log::info!("{} refused origin {origin:?}", self.conns[idx].sid);
                self.set_cors(idx, Default::default());
                self.respond_error(idx, e.status(), e.code(), &e.message(origin), close);
                return;
            }
        }
        let (route, token) = match crate::proto::route::route(&head) {
            Ok(r) => r,
            Err(e) => {
                use crate::proto::route::RouteError;
                if let RouteError::Token(t) = &e {
                    log::info!("{} unauthorized: {}", self.conns[idx].sid, t.code());
                }
                // A WebSocket client would not know what to do with the connection next.
                let (close, extra) = match &e {
                    RouteError::WebSocketUnsupported => (true, ""),
                    RouteError::Handshake(h) => (true, h.extra_headers()),
                    _ => (close, ""),
                };
                let answer = (e.status(), e.code(), &*e.message(head.path()));
                self.respond_error_with(idx, answer, close, extra);
                return;
            }
        };
        if route == Route::Preflight {
            let close = self.must_close(idx, close);
            let mut out = std::mem::take(&mut self.stage);
            out.clear();
            let allow = self.cors_of(idx);
            let origins = &self.shared.config.allowed_origins;
            crate::proto::cors::write_preflight(&mut out, allow, origins, close);
            self.answer(idx, &out, close);
            self.stage = out;
            return;
        }
        let remember = !matches!(route, Route::Receive { .. } | Route::Connect { .. });
        let ident = match self.verify_cached(&token, remember) {
            Ok(i) => {
                if !self.conns[idx].authed {
                    self.conns[idx].authed = true;
                    self.unauth.left();
                }
                i
            }
            Err(e) => {
                log::info!("{} unauthorized: {}", self.conns[idx].sid, e.code());
                self.respond_error(idx, 401, e.code(), &e.message(), close);
                return;
            }
        };
        match route {
            Route::Receive { .. } | Route::Connect { .. } => {
                let req = match route {
                    Route::Connect {
                        last_event_id,
                        accept,
                    } => super::StreamReq {
                        last_event_id,
                        framing: crate::proto::stream::Framing::WebSocket,
                        ws: Some(accept),
                    },
                    Route::Receive { last_event_id } => super::StreamReq {
                        last_event_id,
                        framing: crate::proto::stream::Framing::for_version(head.version_minor),
                        ws: None,
                    },
                    _ => return, // matched above
                };
                let ident = std::sync::Arc::unwrap_or_clone(ident);
                if self.pipes.contains(idx) {
                    // Pipelined sends are still being answered: the stream starts after them.
                    self.conns[idx].state = State::ReceiveAfter(Box::new((ident, req)));
                    return;
                }
                self.start_receive(idx, ident, req)
            }
            // A keep-alive send connection counts against its account's cap.
            Route::Send { .. } | Route::Clients if !self.count_sender(idx, &ident.account) => {}
            Route::Send { to } => {
                // A JSON body goes on compact, flagged to be delivered as a
                // value; anything else (and any other content type) as it is.
                let mut body = body;
                let json = head.json && crate::proto::json_body::take_json(&mut body);
                self.start_send(idx, &ident, &to, (body, json), close)
            }
            Route::Clients => self.start_list(idx, &ident, close),
            Route::Preflight => {} // answered above
        }
    }

    /// Turns connection `idx` into a receive connection on the worker that owns its client.
    pub fn start_receive(&mut self, idx: usize, ident: Identity, req: super::StreamReq) {
        // Answers to requests pipelined before this one go out first, and the
        // stream is never held back: its byte counts tell which events the
        // client's TCP acknowledged, and another worker may take the socket.
        if !self.uncork(idx) {
            return;
        }
        // A stream counts for its account by itself (`attach_with`).
        self.uncount_sender(idx);
        let owner = self.shared.owner(&ident.account, &ident.client);
        if owner == self.id {
            self.attach_receive(idx, ident, req);
            return;
        }
        let Some(conn) = self.release_conn(idx) else {
            return;
        };
        log::debug!(
            "{} handing receive connection of {}/{} to worker {owner}",
            conn.sid,
            ident.account,
            ident.client
        );
        let env = Envelope::Attach(Box::new(Attach { conn, ident, req }));
        if let Err(Envelope::Attach(a)) = self.post(owner, env) {
            self.take_back_overloaded(a.conn);
        }
    }

    /// Takes connection `idx` off this worker (slab, timer, poll, count) to
    /// hand it to another one.
    fn release_conn(&mut self, idx: usize) -> Option<Moving> {
        // Only the input not handled yet moves with the connection.
        self.settle_consumed(idx);
        let cors = self.cors_of(idx);
        // Its count against its account moves with it.
        let sender = self.senders.remove(&idx);
        let mut c = self.remove_conn(idx)?;
        let _ = self.poll.registry().deregister(&mut c.stream);
        super::stats::WorkerStats::sub(&self.shared.stats[self.id].open, 1);
        Some(Moving {
            stream: c.stream,
            tls: c.tls,
            bytes: (c.bytes_in, c.bytes_out),
            out: c.out,
            inbuf: c.inbuf,
            requests: c.requests,
            sid: c.sid,
            since_ms: c.since_ms,
            cors,
            sender,
        })
    }

    /// Registers a connection handed here by another worker (or taken back)
    /// with what moved with it; its slab index.
    pub(super) fn adopt_conn(&mut self, m: Moving) -> Option<usize> {
        let idx = self.insert_conn(m.stream, m.sid, m.since_ms)?;
        let c = &mut self.conns[idx];
        c.tls = m.tls;
        c.out = m.out;
        c.inbuf = m.inbuf;
        c.requests = m.requests;
        // Only connections that made a request with a valid token move.
        c.authed = true;
        (c.bytes_in, c.bytes_out) = m.bytes;
        self.set_cors(idx, m.cors);
        if let Some(account) = m.sender {
            self.senders.insert(idx, account);
        }
        Some(idx)
    }

    /// A connection being handed to a worker whose inbox is full comes back
    /// here and is answered `503 overloaded` and closed.
    fn take_back_overloaded(&mut self, m: Moving) {
        let Some(idx) = self.adopt_conn(m) else {
            return;
        };
        let msg = "the node is overloaded; retry later";
        self.respond_error(idx, 503, "overloaded", msg, true);
    }

    /// Starts the send of `body` (and whether it is JSON, delivered as a
    /// value) from `ident` to `to`, read on connection `idx`.
    fn start_send(
        &mut self,
        idx: usize,
        ident: &Arc<Identity>,
        to: &str,
        (body, json): (Vec<u8>, bool),
        close: bool,
    ) {
        // `to` is a valid client id (checked by the router).
        let owner = self.shared.owner(&ident.account, to);
        if owner != self.id && !close && self.may_hand_over(idx) {
            self.hand_over_send(idx, owner, ident.clone(), to, (body, json));
            return;
        }
        let token = self.token_of(idx);
        if owner == self.id {
            // In a cluster, a recipient with no session here may be on another
            // node: its answer comes back from the bridge, and like an answer
            // from another worker it need not stop the connection's reading.
            let found = self.relay.find(&ident.account, to);
            // A held recipient is accepted only once the cluster confirmed
            // that this node still owns it (`deliver_or_forward`).
            let remote = self.shared.cluster.is_some()
                && found.is_none_or(|i| !self.relay.session(i).online());
            let reply = ReplyTo {
                worker: self.id,
                token,
                seq: self.await_send_answer(idx, close, remote),
            };
            self.deliver_or_forward(
                found,
                &ident.account,
                &ident.client,
                to,
                (body.into_boxed_slice(), json),
                reply,
                false,
            );
            return;
        }
        // Another worker owns the recipient.
        let reply = ReplyTo {
            worker: self.id,
            token,
            seq: self.await_send_answer(idx, close, true),
        };
        let env = Envelope::Deliver {
            account: ident.account.as_str().into(),
            from: ident.client.clone(),
            to: to.into(),
            body: body.into_boxed_slice(),
            json,
            reply,
            checked: false,
        };
        if self.post(owner, env).is_err() {
            self.send_done(reply, Err(SendError::Overloaded));
        } else {
            super::stats::WorkerStats::add(&self.shared.stats[self.id].cross_worker_sends, 1);
        }
    }

    /// True if send connection `idx` may move to the worker that owns its
    /// account: sharding by account (then all its sends go to that worker),
    /// no answer awaited from another worker or node, and not closing or
    /// draining.
    fn may_hand_over(&self, idx: usize) -> bool {
        let c = &self.conns[idx];
        self.shared.config.shard_by == crate::config::ShardBy::Account
            && matches!(c.state, State::Request(_))
            && !c.close_after_flush
            && !c.peer_eof
            && !self.pipes.contains(idx)
            && !self
                .shared
                .draining
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Hands send connection `idx`, with the send just read and any input
    /// after it, to worker `owner`, which owns the sender's account (and so
    /// every recipient it may send to): the send is delivered there, and the
    /// connection's later sends never cross workers.
    fn hand_over_send(
        &mut self,
        idx: usize,
        owner: usize,
        ident: Arc<Identity>,
        to: &str,
        (body, json): (Vec<u8>, bool),
    ) {
        // Answers to requests read before this one go out (or are queued) first.
        if !self.uncork(idx) {
            return;
        }
        let Some(conn) = self.release_conn(idx) else {
            return;
        };
        log::debug!(
            "{} handing send connection of {}/{} to worker {owner}",
            conn.sid,
            ident.account,
            ident.client
        );
        let env = Envelope::Handoff(Box::new(Handoff {
            conn,
            ident,
            to: to.into(),
            body,
            json,
        }));
        if let Err(Envelope::Handoff(h)) = self.post(owner, env) {
            // Input read after the send is dropped with the connection.
            self.take_back_overloaded(h.conn);
        }
    }

    /// Takes over a send connection another worker handed here (see
    /// [`Worker::hand_over_send`]): delivers its send, then processes the
    /// input that came with it, as if both had been read here.
    pub(super) fn take_over_send(&mut self, h: Handoff) {
        let Some(idx) = self.adopt_conn(h.conn) else {
            return;
        };
        super::stats::WorkerStats::add(&self.shared.stats[self.id].moved_in, 1);
        log::debug!(
            "{} took over send connection of {}/{}",
            self.conns[idx].sid,
            h.ident.account,
            h.ident.client
        );
        let (ident, to, body) = (h.ident, h.to, (h.body, h.json));
        let token = self.token_of(idx);
        self.guarded(token, move |me| {
            // Its answer is held back like one read here (see `process`).
            if let Some(other) = me.cork.filter(|&o| o != idx) {
                me.uncork(other);
            }
            me.cork = Some(idx);
            me.start_send(idx, &ident, &to, body, false);
            me.process(idx);
        });
    }

    /// Prepares connection `idx` for the answer to the send just read: with
    /// `pipelined` (the answer comes from another worker or node) and unless
    /// the request is the connection's last, a slot in its pipe, so that
    /// reading goes on (returns the slot's sequence number); otherwise the
    /// connection waits for this answer alone (returns 0).
    fn await_send_answer(&mut self, idx: usize, close: bool, pipelined: bool) -> u64 {
        if pipelined && !close {
            return self.reserve_slot(idx);
        }
        self.conns[idx].state = State::Waiting { close };
        self.await_answer(idx);
        0
    }

    /// Answers a send whose delivery finished (here or on another worker).
    /// The caller resumes processing of pipelined input if it is not already
    /// doing so (that also writes an answer that went into the pipe).
    pub fn send_done(&mut self, reply: ReplyTo, result: Result<crate::ids::EventId, SendError>) {
        let Some(idx) = self.conn_by_token(reply.token) else {
            return;
        };
        if reply.seq != 0 {
            self.fill_slot(idx, reply.seq, result);
            return;
        }
        let State::Waiting { close } = self.conns[idx].state else {
            return;
        };
        let close = self.must_close(idx, close);
        let mut out = std::mem::take(&mut self.stage);
        out.clear();
        self.render_send_answer(result, close, &mut out);
        self.add_cors(idx, &mut out, 0);
        self.answer(idx, &out, close);
        self.stage = out;
    }

    fn start_list(&mut self, idx: usize, ident: &Identity, close: bool) {
        let token = self.token_of(idx);
        if let Some(b) = self.shared.cluster.clone() {
            // The whole account, across the cluster, from the presence table.
            let cmd = BridgeCmd::List {
                account: ident.account.as_str().into(),
                reply: ReplyTo {
                    worker: self.id,
                    token,
                    seq: 0,
                },
            };
            if !b.submit(cmd) {
                let msg = "the cluster cannot be reached; retry later";
                self.respond_error(idx, 503, "cluster_unavailable", msg, close);
                return;
            }
            let l = super::conn::Listing {
                pending: 1,
                clients: Vec::new(),
                close,
            };
            self.conns[idx].state = State::Listing(Box::new(l));
            self.await_answer(idx);
            return;
        }
        // By account, one worker holds every session of the account: only it
        // is asked (none, if it is this one). By client, every worker is.
        let holder = (self.shared.config.shard_by == crate::config::ShardBy::Account)
            .then(|| self.shared.owner(&ident.account, &ident.client));
        let clients = if holder.is_none_or(|h| h == self.id) {
            self.list_clients(&ident.account)
        } else {
            Vec::new()
        };
        let mut pending = 0;
        for w in 0..self.shared.peers.len() {
            if w == self.id || holder.is_some_and(|h| h != w) {
                continue;
            }
            let env = Envelope::List {
                account: ident.account.as_str().into(),
                reply: ReplyTo {
                    worker: self.id,
                    token,
                    seq: 0,
                },
            };
            if self.post(w, env).is_err() {
                self.respond_error(
                    idx,
                    503,
                    "overloaded",
                    "the node is overloaded; retry later",
                    close,
                );
                return;
            }
            pending += 1;
        }
        self.conns[idx].state = State::Listing(Box::new(super::conn::Listing {
            pending,
            clients,
            close,
        }));
        if pending == 0 {
            self.finish_list(idx);
        } else {
            self.await_answer(idx);
        }
    }

    /// Adds one worker's part of a `/v1/clients` answer; answers when all are in.
    pub fn list_done(&mut self, token: usize, seq: u64, more: Option<Vec<super::ClientInfo>>) {
        let Some(idx) = self.conn_by_token(token) else {
            return;
        };
        if seq != 0 {
            self.ws_list_part(idx, seq, more);
            return;
        }
        let State::Listing(l) = &mut self.conns[idx].state else {
            return;
        };
        let Some(mut more) = more else {
            let close = l.close;
            let msg = "the cluster cannot be reached; retry later";
            self.respond_error(idx, 503, "cluster_unavailable", msg, close);
            return;
        };
        l.clients.append(&mut more);
        l.pending = l.pending.saturating_sub(1);
        if l.pending == 0 {
            self.finish_list(idx);
        }
    }

    fn finish_list(&mut self, idx: usize) {
        let State::Listing(l) = &mut self.conns[idx].state else {
            return;
        };
        let close = l.close;
        let mut clients = std::mem::take(&mut l.clients);
        clients.sort_by(|a, b| a.client.cmp(&b.client));
        let list: Vec<_> = clients
            .iter()
            .map(|c| {
                serde_json::json!({
                    "client": c.client,
                    "role": c.role.as_str(),
                    "state": if c.online { "online" } else { "held" },
                    "since_ms": c.since_ms,
                })
            })
            .collect();
        let body = serde_json::json!({ "clients": list }).to_string();
        self.respond_json(idx, 200, body.as_bytes(), close);
    }
}

//! Attaching a receive connection to its client's session: replacement of
//! an older connection, per-account caps, the cluster hand-over, and the
//! stream head, `ready`, gap notice and replay.

use super::conn::State;
use super::stats::WorkerStats;
use super::worker::Worker;
use super::ReplyTo;
use super::StreamReq;
use crate::auth::Identity;
use crate::proto::stream::Framing;
use crate::proto::{events, response};
use crate::relay::core::Attached;
use crate::relay::retained::import_snapshot;
use crate::relay::session::Session;
use crate::relay::session_index::make_key;

/// SSE reconnection hint sent at the start of every stream (ms).
const RETRY_MS: u64 = 2000;

impl Worker {
    /// Makes connection `idx` the receive connection of `ident`'s session
    /// (creating it if needed), then writes the stream head, the `ready` event,
    /// any gap notice and the replay.
    pub fn attach_receive(&mut self, idx: usize, ident: Identity, req: StreamReq) {
        if self.relay.find(&ident.account, &ident.client).is_none() {
            if let Some(b) = self.shared.cluster.clone() {
                // Another node may hold this client's session: ask for it first.
                let token = self.token_of(idx);
                let cmd = super::bridge::BridgeCmd::Takeover {
                    account: ident.account.as_str().into(),
                    client: ident.client[..].into(),
                    reply: ReplyTo {
                        worker: self.id,
                        token,
                        seq: 0,
                    },
                };
                if b.submit(cmd) {
                    self.conns[idx].state = State::Attaching(Box::new((ident, req)));
                    self.await_answer(idx);
                    return;
                }
                // Redis is away: serve here; a resuming client learns its session may be lost.
                let lost = req.last_event_id.is_some().then_some("cluster_unavailable");
                self.attach_with(idx, ident, req, None, lost);
                return;
            }
        }
        self.attach_with(idx, ident, req, None, None);
    }

    /// Attaches with an optional session handed over by another node
    /// (`import`), or a reason why a previous session is lost (`lost`).
    pub fn attach_with(
        &mut self,
        idx: usize,
        ident: Identity,
        req: StreamReq,
        import: Option<Vec<u8>>,
        lost: Option<&'static str>,
    ) {
        let StreamReq {
            last_event_id,
            framing,
            ws,
        } = req;
        if ws.is_some() {
            // What follows the handshake in the input is the client's first frames.
            self.settle_consumed(idx);
        }
        let now = self.now;
        let conn_gen = self.conns[idx].gen;
        let sid = self.conns[idx].sid;
        // Per-account cap on connections (send connections count too: `senders`);
        // replacing one's own receive connection is always allowed.
        let replacing = self
            .relay
            .find(&ident.account, &ident.client)
            .is_some_and(|i| self.relay.get(i).is_some_and(|s| s.is_online()));
        if !self.shared.accounts.acquire(&ident.account, replacing) {
            if let Some(more) = self.noisy(super::throttle::Noisy::AccountLimit) {
                log::warn!(
                    "{sid} refused: account {} has {} connections (limit {}){more}",
                    ident.account,
                    self.shared.accounts.get(&ident.account),
                    self.shared.config.max_account_connections
                );
            }
            self.conns[idx].state = State::Request(crate::proto::request::RequestReader::new());
            let msg = super::senders::OVER_CAP;
            self.respond_error(idx, 503, "account_connection_limit", msg, true);
            return;
        }
        let sidx = match self.relay.find(&ident.account, &ident.client) {
            Some(s) => s,
            None => {
                let key = make_key(&ident.account, &ident.client).into_boxed_str();
                let gen = self.next_gen();
                let mut s = Session::blank(key, ident.account.len());
                s.gen = gen;
                s.sid = sid;
                s.role = ident.role;
                if let Some(bytes) = &import {
                    if let Err(e) = import_snapshot(&mut s, bytes, now) {
                        log::warn!(
                            "{sid} session handed over for {} is corrupt ({e:?}); starting afresh",
                            s.key
                        );
                    }
                }
                self.relay.insert(s)
            }
        };
        // Replace an older receive connection of the same client.
        let data =
            serde_json::json!({"session": sid.to_string(), "node": self.shared.config.node_id})
                .to_string();
        self.evict_conn(sidx, &data);
        let st = &self.shared.stats[self.id];
        // Where the replay starts and whether a gap must be reported first.
        let conn = (idx as u32, conn_gen);
        let leid = last_event_id.as_deref();
        let wall = super::epoch_ms();
        let Some(a) = self.relay.attach(sidx, conn, leid, lost, now, wall) else {
            return;
        };
        self.publish_sessions();
        WorkerStats::add(&st.receive_open, 1);
        let s = self.relay.session_mut(sidx);
        s.role = ident.role;
        s.sid = sid;
        let Attached {
            sess_gen,
            epoch,
            from,
            gaps,
            deadline,
        } = a;

        let mut out = std::mem::take(&mut self.stage);
        out.clear();
        let cors = match self.cors.is_empty() {
            true => Default::default(),
            false => self.cors.remove(&idx).unwrap_or_default(), // a stream answers nothing more
        };
        match &ws {
            // A browser checks no CORS headers on a WebSocket handshake (the
            // origin was checked against --allowed-origins before the token).
            Some(accept) => accept.write_response(&mut out),
            None => {
                response::write_sse_head(&mut out, framing == Framing::Chunked);
                let origins = &self.shared.config.allowed_origins;
                crate::proto::cors::insert_headers(&mut out, 0, cors, origins);
            }
        }
        // The ready event, any gap notice and the replay: the first chunk.
        let mark = framing.begin(&mut out);
        events::retry(&mut out, framing, RETRY_MS);
        let ready = serde_json::json!({
            "session": sid.to_string(),
            "account": ident.account,
            "client": &*ident.client,
            "node": self.shared.config.node_id,
            "heartbeat_ms": self.shared.config.heartbeat.as_millis() as u64,
            "epoch": format!("{epoch:x}"),
        })
        .to_string();
        events::encode(&mut out, framing, None, "ready", &ready);
        if last_event_id.is_some() {
            WorkerStats::add(&st.resumes, 1);
        }
        for (after, reason) in &gaps {
            WorkerStats::add(&st.gaps, 1);
            let data = serde_json::json!({"after": after, "reason": reason}).to_string();
            events::encode(&mut out, framing, None, "gap", &data);
            log::info!("{sid} resume gap after {after}: {reason}");
        }
        // Wire offsets of the replayed frames (exact on plain TCP; TLS adds record overhead).
        let base = self.conns[idx].bytes_out + self.conns[idx].pending_out() as u64;
        let replayed = s.write_after(from, base, framing, &mut out);
        let start = framing.finish(&mut out, mark);
        fix_wire_ends(s.log.iter_mut().filter(|e| e.seq > from), start, framing);
        WorkerStats::add(&st.replayed, replayed as u64);
        log::info!(
            "{sid} {} {}/{} role={} epoch={epoch:x} replayed={replayed}{}",
            if ws.is_some() { "websocket" } else { "receive" },
            ident.account,
            ident.client,
            ident.role.as_str(),
            if last_event_id.is_some() {
                " resumed"
            } else {
                ""
            }
        );

        {
            let c = &mut self.conns[idx];
            c.state = State::Receive {
                sess: sidx as u32,
                sess_gen,
                framing,
            };
            c.requests += 1;
            if ws.is_none() {
                c.inbuf = Vec::new();
            }
        }
        let hb = self.now + self.shared.config.heartbeat.as_millis() as u64;
        self.set_conn_deadline(idx, hb);
        self.set_session_deadline(sidx, deadline);
        self.announce(sidx, crate::cluster::PresenceState::Online, true);
        let live = self.write_conn(idx, &out[start..]);
        self.stage = out;
        if live && ws.is_some() {
            WorkerStats::add(&self.shared.stats[self.id].ws_open, 1);
            // Frames the client sent right behind its handshake.
            if !self.conns[idx].inbuf.is_empty() {
                self.ws_input(idx);
            }
        }
    }
}

/// Corrects the wire offsets of the events of one write (`entries`, in
/// order) once its framing is done (`start` from [`Framing::finish`]): they
/// were taken as positions in the write's buffer. The last event of a chunk
/// ends after the chunk's CRLF, which a client's decoder may wait for.
pub(super) fn fix_wire_ends<'a>(
    entries: impl Iterator<Item = &'a mut crate::relay::retained::Entry>,
    start: usize,
    framing: Framing,
) {
    if framing != Framing::Chunked {
        return;
    }
    let mut last = None;
    for e in entries {
        e.wire_end -= start as u64;
        last = Some(e);
    }
    if let Some(e) = last {
        e.wire_end += crate::proto::stream::CHUNK_END.len() as u64;
    }
}

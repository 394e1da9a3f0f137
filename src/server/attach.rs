//! Attaching a receive connection to its client's session: replacement of
//! an older connection, per-account caps, the cluster hand-over, and the
//! stream head, `ready`, gap notice and replay.

use super::conn::State;
use super::retained::import_snapshot;
use super::session::{session_deadline, Session};
use super::session_index::make_key;
use super::stats::WorkerStats;
use super::worker::Worker;
use super::ReplyTo;
use super::StreamReq;
use crate::auth::Identity;
use crate::ids::EventId;
use crate::proto::stream::Framing;
use crate::proto::{response, sse};

/// SSE reconnection hint sent at the start of every stream (ms).
const RETRY_MS: u64 = 2000;

impl Worker {
    /// Makes connection `idx` the receive connection of `ident`'s session
    /// (creating it if needed), then writes the stream head, the `ready` event,
    /// any gap notice and the replay.
    pub fn attach_receive(&mut self, idx: usize, ident: Identity, req: StreamReq) {
        if self.sessions.find(&ident.account, &ident.client).is_none() {
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
        } = req;
        let now = self.now;
        let conn_gen = self.conns[idx].gen;
        let sid = self.conns[idx].sid;
        // Per-account cap on connections (send connections count too: `senders`);
        // replacing one's own receive connection is always allowed.
        let replacing = self
            .sessions
            .find(&ident.account, &ident.client)
            .is_some_and(|i| self.sessions.get(i).is_some_and(|s| s.is_online()));
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
        let sidx = match self.sessions.find(&ident.account, &ident.client) {
            Some(s) => s,
            None => {
                let key = make_key(&ident.account, &ident.client).into_boxed_str();
                let gen = self.next_gen();
                WorkerStats::add(&self.shared.stats[self.id].sessions, 1);
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
                self.sessions.insert(s)
            }
        };
        // Replace an older receive connection of the same client.
        let data =
            serde_json::json!({"session": sid.to_string(), "node": self.shared.config.node_id})
                .to_string();
        self.evict_conn(sidx, &data);
        let st = &self.shared.stats[self.id];
        let Some(s) = self.sessions.get_mut(sidx) else {
            return;
        };
        if s.held_since > 0 {
            WorkerStats::sub(&st.held, 1);
        }
        WorkerStats::add(&st.receive_open, 1);
        s.role = ident.role;
        s.sid = sid;
        s.conn = (idx as u32, conn_gen);
        s.held_since = 0;
        s.since_ms = super::epoch_ms();
        let sess_gen = s.gen;
        let epoch = s.epoch;

        // Decide where the replay starts and whether a gap must be reported first.
        let mut gap: Option<(String, &'static str)> = None;
        let from = match last_event_id.as_deref() {
            _ if lost.is_some() => {
                gap = lost.map(|r| (last_event_id.clone().unwrap_or_default(), r));
                0
            }
            Some(text) => match EventId::parse(text) {
                Some(id) if id.epoch == epoch => {
                    let first = s.log.front().map_or(s.last_seq + 1, |e| e.seq);
                    if id.seq < s.last_seq && first > id.seq + 1 {
                        gap = Some((
                            text.to_string(),
                            s.log.lost().map_or(s.trim_reason(), |l| l.1),
                        ));
                    }
                    id.seq.min(s.last_seq)
                }
                _ => {
                    gap = Some((text.to_string(), "unknown_epoch"));
                    0
                }
            },
            None => {
                if let Some((after, reason)) = s.log.lost() {
                    gap = Some((EventId { epoch, seq: after }.to_string(), reason));
                }
                s.delivered
            }
        };
        s.log.clear_lost();

        let mut out = std::mem::take(&mut self.stage);
        out.clear();
        response::write_sse_head(&mut out, framing == Framing::Chunked);
        let cors = match self.cors.is_empty() {
            true => Default::default(),
            false => self.cors.remove(&idx).unwrap_or_default(), // a stream answers nothing more
        };
        crate::proto::cors::insert_headers(&mut out, 0, cors, &self.shared.config.allowed_origins);
        // The ready event, any gap notice and the replay: the first chunk.
        let mark = framing.begin(&mut out);
        sse::encode_retry(&mut out, RETRY_MS);
        let ready = serde_json::json!({
            "session": sid.to_string(),
            "account": ident.account,
            "client": &*ident.client,
            "node": self.shared.config.node_id,
            "heartbeat_ms": self.shared.config.heartbeat.as_millis() as u64,
            "epoch": format!("{epoch:x}"),
        })
        .to_string();
        sse::encode_event(&mut out, None, Some("ready"), &ready);
        if last_event_id.is_some() {
            WorkerStats::add(&st.resumes, 1);
        }
        if let Some((after, reason)) = &gap {
            WorkerStats::add(&st.gaps, 1);
            let data = serde_json::json!({"after": after, "reason": reason}).to_string();
            sse::encode_event(&mut out, None, Some("gap"), &data);
            log::info!("{sid} resume gap after {after}: {reason}");
        }
        let mut replayed = 0usize;
        // Wire offsets of the replayed frames (exact on plain TCP; TLS adds record overhead).
        let base = self.conns[idx].bytes_out + self.conns[idx].pending_out() as u64;
        for e in s.log.iter_mut().filter(|e| e.seq > from) {
            e.encode(epoch, &mut out);
            e.wire_end = base + out.len() as u64;
            replayed += 1;
        }
        let start = framing.finish(&mut out, mark);
        fix_wire_ends(s.log.iter_mut().filter(|e| e.seq > from), start, framing);
        s.attach_from = from;
        s.delivered = s.last_seq;
        WorkerStats::add(&st.replayed, replayed as u64);
        let deadline = session_deadline(s, &self.shared.config, now);
        log::info!(
            "{sid} receive {}/{} role={} epoch={epoch:x} replayed={replayed}{}",
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
            c.inbuf = Vec::new();
        }
        let hb = self.now + self.shared.config.heartbeat.as_millis() as u64;
        self.set_conn_deadline(idx, hb);
        self.set_session_deadline(sidx, deadline);
        self.announce(sidx, crate::cluster::PresenceState::Online, true);
        self.write_conn(idx, &out[start..]);
        self.stage = out;
    }
}

/// Corrects the wire offsets of the events of one write (`entries`, in
/// order) once its framing is done (`start` from [`Framing::finish`]): they
/// were taken as positions in the write's buffer. The last event of a chunk
/// ends after the chunk's CRLF, which a client's decoder may wait for.
pub(super) fn fix_wire_ends<'a>(
    entries: impl Iterator<Item = &'a mut super::retained::Entry>,
    start: usize,
    framing: Framing,
) {
    if framing == Framing::Plain {
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

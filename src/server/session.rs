//! Sessions: one per client (account + client id) owned by this worker, with
//! the retained message log used for holding and Last-Event-ID replay, and the
//! conversation partners that get `peer-gone`.

use std::collections::VecDeque;

use hashbrown::HashMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use slab::Slab;

use super::conn::{CloseReason, State};
use super::stats::WorkerStats;
use super::worker::Worker;
use super::{ClientInfo, Envelope, ReplyTo, SendError};
use crate::auth::{Identity, Role};
use crate::ids::{random_u64, EventId, SessionId};
use crate::proto::{response, sse};

/// Most conversation partners remembered per client.
const MAX_PARTNERS: usize = 4096;
/// SSE reconnection hint sent at the start of every stream (ms).
const RETRY_MS: u64 = 2000;

/// What a retained log entry carries.
pub(super) enum EntryKind {
    Message {
        from: Box<str>,
        body: Box<[u8]>,
    },
    PeerGone {
        peer: Box<str>,
        reason: &'static str,
    },
}

/// One retained event of a session.
pub(super) struct Entry {
    seq: u64,
    /// Monotonic ms when it was accepted.
    at: u64,
    /// Where its frame ended in the byte stream of the receive connection it
    /// was last written to (to tell, when that connection ends, whether the
    /// client's TCP acknowledged it).
    wire_end: u64,
    kind: EntryKind,
}

impl Entry {
    fn size(&self) -> usize {
        match &self.kind {
            EntryKind::Message { from, body } => from.len() + body.len(),
            EntryKind::PeerGone { peer, .. } => peer.len(),
        }
    }

    /// Appends the SSE encoding of this entry.
    fn encode(&self, epoch: u64, out: &mut Vec<u8>) {
        let id = EventId {
            epoch,
            seq: self.seq,
        }
        .to_string();
        match &self.kind {
            EntryKind::Message { from, body } => {
                sse::encode_event(
                    out,
                    Some(&id),
                    Some("message"),
                    &sse::message_json(from, body),
                );
            }
            EntryKind::PeerGone { peer, reason } => {
                let data = serde_json::json!({"peer": peer, "reason": reason}).to_string();
                sse::encode_event(out, Some(&id), Some("peer-gone"), &data);
            }
        }
    }
}

/// A client's session on its owner worker.
pub(super) struct Session {
    pub gen: u32,
    /// Session id of the latest receive connection (for logs).
    pub sid: SessionId,
    /// `account/client` (`/` cannot occur in ids).
    key: Box<str>,
    split: u8,
    pub role: Role,
    /// Random per session incarnation; part of every event id.
    pub epoch: u64,
    /// Sequence number of the newest entry.
    pub last_seq: u64,
    /// Sequence number of the newest entry handed to a receive connection.
    pub delivered: u64,
    /// The current receive connection was sent the entries after this one.
    pub attach_from: u64,
    /// The receive connection (slab index, generation); generation 0 = none.
    pub conn: (u32, u32),
    /// Wall-clock ms of the last change between online and held.
    pub since_ms: u64,
    /// Monotonic ms when the session became held; 0 while online.
    pub held_since: u64,
    pub deadline: u64,
    pub armed: u64,
    /// Retained events; no allocation while empty.
    log: Log,
    /// Conversation partners and when (monotonic ms) a message was last exchanged.
    partners: Option<Box<HashMap<Box<str>, u64>>>,
}

impl Session {
    pub fn account(&self) -> &str {
        &self.key[..self.split as usize]
    }
    pub fn client(&self) -> &str {
        &self.key[self.split as usize + 1..]
    }
    fn online(&self) -> bool {
        self.conn.1 != 0
    }
}

/// The sessions owned by one worker, indexed by account and client.
pub(super) struct Sessions {
    slab: Slab<Session>,
    /// Slab indices, hashed by `account/client`.
    index: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
}

fn make_key(account: &str, client: &str) -> String {
    let mut k = String::with_capacity(account.len() + 1 + client.len());
    k.push_str(account);
    k.push('/');
    k.push_str(client);
    k
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions {
            slab: Slab::new(),
            index: HashTable::new(),
            hasher: Default::default(),
        }
    }

    /// The slab index of the session of `client` in `account`.
    pub fn find(&self, account: &str, client: &str) -> Option<usize> {
        let key = make_key(account, client);
        let h = self.hasher.hash_one(key.as_str());
        self.index
            .find(h, |&i| &*self.slab[i as usize].key == key.as_str())
            .map(|&i| i as usize)
    }

    pub fn get_mut(&mut self, idx: usize) -> Option<&mut Session> {
        self.slab.get_mut(idx)
    }

    pub fn get(&self, idx: usize) -> Option<&Session> {
        self.slab.get(idx)
    }

    fn insert(&mut self, s: Session) -> usize {
        let h = self.hasher.hash_one(&*s.key);
        let idx = self.slab.insert(s);
        let slab = &self.slab;
        let hasher = &self.hasher;
        self.index
            .insert_unique(h, idx as u32, |&i| hasher.hash_one(&*slab[i as usize].key));
        idx
    }

    /// Shrinks the tables when they are mostly empty (after a peak).
    pub fn shrink(&mut self) {
        if self.slab.capacity() > 1024 && self.slab.len() < self.slab.capacity() / 4 {
            self.slab.shrink_to_fit();
            let slab = &self.slab;
            let hasher = &self.hasher;
            self.index
                .shrink_to_fit(|&i| hasher.hash_one(&*slab[i as usize].key));
        }
    }

    /// All sessions with their slab indices.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Session)> {
        self.slab.iter()
    }

    pub fn remove(&mut self, idx: usize) -> Option<Session> {
        let s = self.slab.try_remove(idx)?;
        let h = self.hasher.hash_one(&*s.key);
        if let Ok(e) = self.index.find_entry(h, |&i| i as usize == idx) {
            e.remove();
        }
        Some(s)
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.slab.len()
    }
}

impl Worker {
    /// Makes connection `idx` the receive connection of `ident`'s session
    /// (creating it if needed), then writes the stream head, the `ready` event,
    /// any gap notice and the replay.
    pub fn attach_receive(&mut self, idx: usize, ident: Identity, last_event_id: Option<String>) {
        if self.sessions.find(&ident.account, &ident.client).is_none() {
            if let Some(b) = self.shared.cluster.clone() {
                // Another node may hold this client's session: ask for it first.
                let token = self.token_of(idx);
                let cmd = super::bridge::BridgeCmd::Takeover {
                    account: ident.account.as_str().into(),
                    client: ident.client.as_str().into(),
                    reply: ReplyTo {
                        worker: self.id,
                        token,
                    },
                };
                if b.submit(cmd) {
                    self.conns[idx].state = State::Attaching(Box::new((ident, last_event_id)));
                    self.await_answer(idx);
                    return;
                }
                // Redis is away: serve here; a resuming client learns its session may be lost.
                let lost = last_event_id.is_some().then_some("cluster_unavailable");
                self.attach_with(idx, ident, last_event_id, None, lost);
                return;
            }
        }
        self.attach_with(idx, ident, last_event_id, None, None);
    }

    /// Attaches with an optional session handed over by another node
    /// (`import`), or a reason why a previous session is lost (`lost`).
    pub fn attach_with(
        &mut self,
        idx: usize,
        ident: Identity,
        last_event_id: Option<String>,
        import: Option<Vec<u8>>,
        lost: Option<&'static str>,
    ) {
        let now = self.now;
        let conn_gen = self.conns[idx].gen;
        let sid = self.conns[idx].sid;
        // Per-account cap on receive connections; replacing one's own is always allowed.
        let replacing = self
            .sessions
            .find(&ident.account, &ident.client)
            .is_some_and(|i| self.sessions.slab[i].online());
        if !self.shared.accounts.acquire(&ident.account, replacing) {
            log::warn!(
                "{sid} refused: account {} has {} receive connections (limit {})",
                ident.account,
                self.shared.accounts.get(&ident.account),
                self.shared.config.max_account_connections
            );
            self.conns[idx].state = State::Request(crate::proto::request::RequestReader::new());
            let msg = "too many receive connections for this account on this node; try another node or later";
            self.respond_error(idx, 503, "account_connection_limit", msg, true);
            return;
        }
        let sidx = match self.sessions.find(&ident.account, &ident.client) {
            Some(s) => s,
            None => {
                let key = make_key(&ident.account, &ident.client).into_boxed_str();
                let gen = self.next_gen();
                WorkerStats::add(&self.shared.stats[self.id].sessions, 1);
                let mut s = Session {
                    gen,
                    sid,
                    split: ident.account.len() as u8,
                    key,
                    role: ident.role,
                    epoch: random_u64() >> 12,
                    last_seq: 0,
                    delivered: 0,
                    attach_from: 0,
                    conn: (0, 0),
                    since_ms: 0,
                    held_since: 0,
                    deadline: 0,
                    armed: 0,
                    log: Log::default(),
                    partners: None,
                };
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
                            s.log.lost().map_or(s.log.trim_reason(), |l| l.1),
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
        response::write_sse_head(&mut out);
        sse::encode_retry(&mut out, RETRY_MS);
        let ready = serde_json::json!({
            "session": sid.to_string(),
            "account": ident.account,
            "client": ident.client,
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
            };
            c.requests += 1;
            c.inbuf = Vec::new();
        }
        let hb = self.now + self.shared.config.heartbeat.as_millis() as u64;
        self.set_conn_deadline(idx, hb);
        self.set_session_deadline(sidx, deadline);
        self.announce(sidx, crate::cluster::PresenceState::Online);
        self.write_conn(idx, &out);
        self.stage = out;
    }

    /// Accepts a message for `to` (owned by this worker): retains it and writes
    /// it to the receive connection if there is one.
    pub fn deliver(
        &mut self,
        account: &str,
        from: &str,
        to: &str,
        body: Box<[u8]>,
    ) -> Result<EventId, SendError> {
        let st = &self.shared.stats[self.id];
        let Some(sidx) = self.sessions.find(account, to) else {
            WorkerStats::add(&st.offline, 1);
            return Err(SendError::Offline);
        };
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
                from: from.into(),
                body,
            },
        );
        self.note_partner(sidx, from);
        // The sender remembers the recipient too, on whichever worker owns it.
        let owner = self.shared.owner(account, from);
        if owner == self.id {
            self.touch(account, from, to, false);
        } else {
            // Best effort: a full channel only costs a possible missed peer-gone.
            let _ = self.post(
                owner,
                Envelope::Touch {
                    account: account.into(),
                    client: from.into(),
                    peer: to.into(),
                    remote: false,
                },
            );
        }
        Ok(id)
    }

    /// Appends an entry to session `sidx`'s log, enforcing the limits, and
    /// writes it out if the client is online.
    fn append(&mut self, sidx: usize, kind: EntryKind) -> EventId {
        let cfg = &self.shared.config;
        let now = self.now;
        let st = &self.shared.stats[self.id];
        let s = &mut self.sessions.slab[sidx];
        s.last_seq += 1;
        let entry = Entry {
            seq: s.last_seq,
            at: now,
            wire_end: 0,
            kind,
        };
        let id = EventId {
            epoch: s.epoch,
            seq: entry.seq,
        };
        s.log.push(entry);
        while s.log.len() > cfg.hold_max_messages
            || (s.log.bytes() > cfg.hold_max_bytes && s.log.len() > 1)
        {
            let Some(e) = s.log.pop_front() else { break };
            if drop_entry(s, e, "hold_limit") {
                WorkerStats::add(&st.dropped, 1);
            }
        }
        s.log.compact();
        let online = s.online();
        let (ci, cg) = s.conn;
        let deadline = session_deadline(s, cfg, now);
        self.set_session_deadline(sidx, deadline);
        if online && self.conns.get(ci as usize).is_some_and(|c| c.gen == cg) {
            let s = &mut self.sessions.slab[sidx];
            let c = &self.conns[ci as usize];
            let base = c.bytes_out + c.pending_out() as u64;
            let epoch = s.epoch;
            if let Some(e) = s.log.back_mut() {
                let mut out = std::mem::take(&mut self.stage);
                out.clear();
                e.encode(epoch, &mut out);
                e.wire_end = base + out.len() as u64;
                s.delivered = e.seq;
                self.write_conn(ci as usize, &out);
                self.stage = out;
            }
        }
        id
    }

    fn note_partner(&mut self, sidx: usize, peer: &str) {
        let now = self.now;
        let ttl = self.shared.config.conversation_ttl.as_millis() as u64;
        let Some(s) = self.sessions.get_mut(sidx) else {
            return;
        };
        if peer == s.client() {
            return;
        }
        let p = s.partners.get_or_insert_with(Default::default);
        if let Some(t) = p.get_mut(peer) {
            *t = now;
            return;
        }
        if p.len() >= MAX_PARTNERS {
            p.retain(|_, t| now.saturating_sub(*t) <= ttl);
            if p.len() >= MAX_PARTNERS {
                if let Some(oldest) = p.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                    p.remove(&oldest);
                }
            }
        }
        p.insert(peer.into(), now);
    }

    /// `client` (owned here) exchanged a message with `peer`.
    /// On a cluster, a `client` not held here may be held by another node:
    /// the touch is forwarded there (unless it came from there).
    pub fn touch(&mut self, account: &str, client: &str, peer: &str, remote: bool) {
        if let Some(sidx) = self.sessions.find(account, client) {
            self.note_partner(sidx, peer);
        } else if let (false, Some(b)) = (remote, self.shared.cluster.clone()) {
            // The same pair is forwarded at most once per half conversation-ttl:
            // each forward costs the cluster a look-up.
            let ttl = self.shared.config.conversation_ttl.as_millis() as u64;
            let key = format!("{account}/{client}/{peer}");
            if self
                .touches_sent
                .get(key.as_str())
                .is_some_and(|t| self.now.saturating_sub(*t) < ttl / 2)
            {
                return;
            }
            if self.touches_sent.len() >= 8192 {
                self.touches_sent.clear();
            }
            self.touches_sent.insert(key.into_boxed_str(), self.now);
            b.submit(super::bridge::BridgeCmd::Touch {
                account: account.into(),
                client: client.into(),
                peer: peer.into(),
            });
        }
    }

    /// Tells `to` (owned here) that `peer` went offline.
    pub fn peer_gone(&mut self, account: &str, to: &str, peer: &str, reason: &'static str) {
        let Some(sidx) = self.sessions.find(account, to) else {
            return;
        };
        if let Some(p) = self.sessions.slab[sidx].partners.as_mut() {
            p.remove(peer);
        }
        log::debug!(
            "{} peer-gone {account}/{peer} -> {to}: {reason}",
            self.sessions.slab[sidx].sid
        );
        WorkerStats::add(&self.shared.stats[self.id].peer_gone, 1);
        self.append(
            sidx,
            EntryKind::PeerGone {
                peer: peer.into(),
                reason,
            },
        );
    }

    /// The clients of `account` owned by this worker.
    pub fn list_clients(&self, account: &str) -> Vec<ClientInfo> {
        self.sessions
            .slab
            .iter()
            .filter(|(_, s)| s.account() == account)
            .map(|(_, s)| ClientInfo {
                client: s.client().to_string(),
                role: s.role,
                online: s.online(),
                since_ms: s.since_ms,
            })
            .collect()
    }

    /// Sends a `List` answer back to the asking worker.
    pub fn reply_listed(&mut self, reply: ReplyTo, clients: Vec<ClientInfo>) {
        if reply.worker == self.id {
            self.list_done(reply.token, Some(clients));
        } else if self
            .post(
                reply.worker,
                Envelope::Listed {
                    token: reply.token,
                    clients: Some(clients),
                },
            )
            .is_err()
        {
            log::warn!(
                "worker {}: could not answer a client list (worker {} channel full)",
                self.id,
                reply.worker
            );
        }
    }

    /// Sends a `Deliver` answer back to the asking worker.
    pub fn reply_delivered(&mut self, reply: ReplyTo, result: Result<EventId, SendError>) {
        if reply.worker == self.id {
            self.send_done(reply.token, result);
        } else if self
            .post(
                reply.worker,
                Envelope::Delivered {
                    token: reply.token,
                    result,
                },
            )
            .is_err()
        {
            log::warn!(
                "worker {}: could not answer a send (worker {} channel full)",
                self.id,
                reply.worker
            );
        }
    }

    /// The receive connection of session `sidx` ended: the session becomes held.
    /// `acked` is how far the client's TCP acknowledged the connection's byte
    /// stream (`None` if unknown). Entries written but not acknowledged count
    /// as undelivered, so a reconnect without Last-Event-ID gets them again
    /// (at-least-once); after a slow-consumer cut everything written on the
    /// connection does, since an unread receive buffer was acknowledged too.
    pub fn receive_closed(
        &mut self,
        sidx: usize,
        sess_gen: u32,
        conn_idx: usize,
        conn_gen: u32,
        acked: Option<u64>,
        reason: CloseReason,
    ) {
        let now = self.now;
        let cfg = &self.shared.config;
        let Some(s) = self.sessions.get_mut(sidx) else {
            return;
        };
        if s.gen != sess_gen || s.conn != (conn_idx as u32, conn_gen) {
            return; // replaced by a newer connection
        }
        s.conn = (0, 0);
        self.shared.accounts.release(s.account());
        let from = s.attach_from;
        let confirmed = match acked {
            _ if reason == CloseReason::SlowConsumer => from,
            Some(acked) => {
                let mut d = from;
                for e in s.log.iter().filter(|e| e.seq > from) {
                    if e.wire_end > acked {
                        break;
                    }
                    d = e.seq;
                }
                d
            }
            None => s.delivered,
        };
        if confirmed < s.delivered {
            log::info!(
                "{} {} messages written but not confirmed by the client; they will be sent again",
                s.sid,
                s.delivered - confirmed
            );
            s.delivered = confirmed;
            // Some of them may already have left the log: the next stream must say so.
            let first = s.log.front().map_or(s.last_seq + 1, |e| e.seq);
            if first > confirmed + 1 && s.log.lost().is_none() {
                let reason = s.log.trim_reason();
                s.log.set_lost(confirmed, reason);
            }
        }
        s.held_since = now.max(1);
        s.since_ms = super::epoch_ms();
        WorkerStats::add(&self.shared.stats[self.id].held, 1);
        log::info!(
            "{} session {} held ({}), {} retained",
            s.sid,
            s.key,
            reason.as_str(),
            s.log.len()
        );
        let deadline = session_deadline(s, cfg, now);
        self.set_session_deadline(sidx, deadline);
        self.announce(sidx, crate::cluster::PresenceState::Held);
    }

    /// A session timer fired: trim expired log entries, and end a held session whose hold ran out.
    pub fn session_timeout(&mut self, sidx: usize) {
        let now = self.now;
        let cfg = &self.shared.config;
        let hold = cfg.hold.as_millis() as u64;
        let st = &self.shared.stats[self.id];
        let Some(s) = self.sessions.get_mut(sidx) else {
            return;
        };
        while s.log.front().is_some_and(|e| e.at + hold <= now) {
            if let Some(e) = s.log.pop_front() {
                if drop_entry(s, e, "retention_expired") {
                    WorkerStats::add(&st.dropped, 1);
                }
            }
        }
        s.log.compact();
        if s.held_since > 0 && s.held_since + hold <= now {
            self.expire_session(sidx);
            return;
        }
        let deadline = session_deadline(s, cfg, now);
        self.set_session_deadline(sidx, deadline);
    }

    /// Removes a session whose client did not come back, telling its recent partners.
    fn expire_session(&mut self, sidx: usize) {
        let Some(s) = self.sessions.remove(sidx) else {
            return;
        };
        let st = &self.shared.stats[self.id];
        WorkerStats::sub(&st.sessions, 1);
        WorkerStats::sub(&st.held, 1);
        let ttl = self.shared.config.conversation_ttl.as_millis() as u64;
        let pending = s.log.iter().filter(|e| e.seq > s.delivered).count();
        log::info!(
            "{} session {} gone after hold; {pending} undelivered messages dropped",
            s.sid,
            s.key
        );
        let account = s.account();
        let client = s.client();
        if let Some(b) = self.shared.cluster.clone() {
            b.submit(super::bridge::BridgeCmd::Presence {
                account: account.into(),
                client: client.into(),
                role: s.role,
                state: crate::cluster::PresenceState::Gone,
                since_ms: super::epoch_ms(),
            });
            // Every node (this one included) tells the partners it holds.
            let gone = super::bridge::BridgeCmd::Gone {
                account: account.into(),
                client: client.into(),
                reason: "offline",
            };
            if b.submit(gone) {
                return;
            }
        }
        if let Some(p) = &s.partners {
            for (peer, t) in p.iter() {
                if self.now.saturating_sub(*t) > ttl {
                    continue;
                }
                let owner = self.shared.owner(account, peer);
                if owner == self.id {
                    self.peer_gone(account, peer, client, "offline");
                } else {
                    let env = Envelope::PeerGone {
                        account: account.into(),
                        to: peer.clone(),
                        peer: client.into(),
                        reason: "offline",
                    };
                    if self.post(owner, env).is_err() {
                        log::warn!(
                            "peer-gone for {account}/{peer} dropped: worker {owner} channel full"
                        );
                    }
                }
            }
        }
    }

    /// Writes a heartbeat to receive connection `idx` if it has been quiet for a heartbeat interval.
    pub fn heartbeat(&mut self, idx: usize) {
        let hb = self.shared.config.heartbeat.as_millis() as u64;
        let due = self.conns[idx].last_write + hb;
        if self.now >= due {
            WorkerStats::add(&self.shared.stats[self.id].heartbeats, 1);
            if !self.write_conn(idx, b":\n\n") {
                return;
            }
            let d = self.now + hb;
            self.set_conn_deadline(idx, d);
        } else {
            self.set_conn_deadline(idx, due);
        }
    }

    /// Closes every connection and drops all sessions (node shutdown).
    pub fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.close_conn(k, CloseReason::Shutdown);
        }
    }
}

impl Worker {
    /// Tells the receive connection of session `sidx` (if any) that it was
    /// replaced (`data` says by what) and closes it after that; the session
    /// keeps going without it.
    pub fn evict_conn(&mut self, sidx: usize, data: &str) {
        let old = self.sessions.get(sidx).map(|s| s.conn).unwrap_or((0, 0));
        if old.1 == 0 {
            return;
        }
        if let Some(s) = self.sessions.get_mut(sidx) {
            s.conn = (0, 0);
            self.shared.accounts.release(s.account());
        }
        let oi = old.0 as usize;
        if !self.conns.get(oi).is_some_and(|c| c.gen == old.1) {
            return;
        }
        let mut out = std::mem::take(&mut self.stage);
        out.clear();
        sse::encode_event(&mut out, None, Some("replaced"), data);
        log::info!("{} replaced: {data}", self.conns[oi].sid);
        // Still a receive connection (so a slow one is cut, not buffered), but no longer the session's.
        self.conns[oi].close_after_flush = true;
        self.write_conn(oi, &out);
        self.stage = out;
    }
}

/// Records that entry `e` left the log for `reason`; remembers a loss (and
/// returns true) if it was never handed out.
fn drop_entry(s: &mut Session, e: Entry, reason: &'static str) -> bool {
    s.log.set_trim_reason(reason);
    if e.seq > s.delivered {
        let after = s.log.lost().map_or(e.seq - 1, |l| l.0.min(e.seq - 1));
        s.log.set_lost(after, reason);
        return true;
    }
    false
}

/// A session's retained events. Boxed, and only while there is something in
/// it, so an idle session pays one pointer for it.
#[derive(Default)]
pub(super) struct Log(Option<Box<LogInner>>);

struct LogInner {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Entries never handed to the client were dropped after this sequence number, for this reason.
    lost: Option<(u64, &'static str)>,
    /// Why entries were last dropped.
    trim_reason: &'static str,
}

impl Log {
    fn inner(&mut self) -> &mut LogInner {
        self.0.get_or_insert_with(|| {
            Box::new(LogInner {
                entries: VecDeque::new(),
                bytes: 0,
                lost: None,
                trim_reason: "retention_limit",
            })
        })
    }
    fn push(&mut self, e: Entry) {
        let l = self.inner();
        l.bytes += e.size();
        l.entries.push_back(e);
    }
    fn pop_front(&mut self) -> Option<Entry> {
        let l = self.0.as_mut()?;
        let e = l.entries.pop_front()?;
        l.bytes -= e.size();
        Some(e)
    }
    fn front(&self) -> Option<&Entry> {
        self.0.as_ref()?.entries.front()
    }
    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.0.iter_mut().flat_map(|l| l.entries.iter_mut())
    }
    fn back_mut(&mut self) -> Option<&mut Entry> {
        self.0.as_mut()?.entries.back_mut()
    }
    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.0.iter().flat_map(|l| l.entries.iter())
    }
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |l| l.entries.len())
    }
    fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |l| l.bytes)
    }
    fn lost(&self) -> Option<(u64, &'static str)> {
        self.0.as_ref()?.lost
    }
    fn set_lost(&mut self, after: u64, reason: &'static str) {
        self.inner().lost = Some((after, reason));
    }
    fn clear_lost(&mut self) {
        if let Some(l) = self.0.as_mut() {
            l.lost = None;
        }
        self.compact();
    }
    fn trim_reason(&self) -> &'static str {
        self.0.as_ref().map_or("retention_limit", |l| l.trim_reason)
    }
    fn set_trim_reason(&mut self, r: &'static str) {
        self.inner().trim_reason = r;
    }
    /// Gives memory back: frees the log when nothing is in it, shrinks it after a burst.
    fn compact(&mut self) {
        let Some(l) = self.0.as_mut() else { return };
        if l.entries.is_empty() && l.lost.is_none() {
            self.0 = None;
        } else if l.entries.capacity() > 64 && l.entries.len() < l.entries.capacity() / 4 {
            l.entries.shrink_to(l.entries.len() * 2);
        }
    }
}

/// When session `s` next needs attention: hold expiry if held, else log trimming; 0 = never.
fn session_deadline(s: &Session, cfg: &crate::config::Config, now: u64) -> u64 {
    let hold = cfg.hold.as_millis() as u64;
    let mut d = 0u64;
    if s.held_since > 0 {
        d = s.held_since + hold;
    }
    if let Some(e) = s.log.front() {
        let t = e.at + hold;
        d = if d == 0 { t } else { d.min(t) };
    }
    if d != 0 {
        d = d.max(now);
    }
    d
}

impl Worker {
    /// This worker's connections matching `f`: how many matched, and the first `f.limit`.
    pub(super) fn inspect(&self, f: &super::InspectFilter) -> (usize, Vec<super::ConnInfo>) {
        let mut matched = 0;
        let mut out = Vec::new();
        for (_, c) in self.conns.iter() {
            let sess = match c.state {
                State::Receive { sess, sess_gen } => self
                    .sessions
                    .get(sess as usize)
                    .filter(|s| s.gen == sess_gen),
                _ => None,
            };
            let account = sess.map(|s| s.account());
            let client = sess.map(|s| s.client());
            if f.account.as_deref().is_some_and(|a| account != Some(a))
                || f.client.as_deref().is_some_and(|x| client != Some(x))
            {
                continue;
            }
            matched += 1;
            if out.len() >= f.limit {
                continue;
            }
            out.push(super::ConnInfo {
                sid: c.sid,
                account: account.map(str::to_string),
                client: client.map(str::to_string),
                role: sess.map(|s| s.role),
                kind: match c.state {
                    State::Receive { .. } => "receive",
                    State::Linger => "closing",
                    _ => "send",
                },
                remote: c.stream.peer_addr().ok(),
                since_ms: c.since_ms,
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
                queued_bytes: c.pending_out(),
                messages_queued: sess.map_or(0, |s| {
                    s.log.iter().filter(|e| e.seq > s.delivered).count() as u64
                }),
                worker: self.id,
            });
        }
        (matched, out)
    }
}

impl Session {
    /// True if `peer` exchanged a message with this client within `ttl_ms` of `now`.
    pub fn recent_partner(&self, peer: &str, now: u64, ttl_ms: u64) -> bool {
        self.partners
            .as_ref()
            .and_then(|p| p.get(peer))
            .is_some_and(|t| now.saturating_sub(*t) <= ttl_ms)
    }

    /// True while a receive connection is attached.
    pub fn is_online(&self) -> bool {
        self.online()
    }
}

/// Encodes a session for handing it to another node: epoch, sequence
/// numbers, retained events (with their ages) and conversation partners.
pub(super) fn export_snapshot(s: &Session, now: u64) -> Vec<u8> {
    use crate::cluster::wire::Writer;
    let mut w = Writer::default();
    w.u64(s.epoch).u64(s.last_seq).u64(s.delivered);
    match s.log.lost() {
        Some((after, reason)) => w.u8(1).u64(after).str(reason),
        None => w.u8(0),
    };
    w.str(s.log.trim_reason());
    w.u64(s.log.len() as u64);
    for e in s.log.iter() {
        w.u64(e.seq).u64(now.saturating_sub(e.at));
        match &e.kind {
            EntryKind::Message { from, body } => w.u8(0).str(from).bytes(body),
            EntryKind::PeerGone { peer, reason } => w.u8(1).str(peer).str(reason),
        };
    }
    let partners: Vec<(&str, u64)> = s
        .partners
        .iter()
        .flat_map(|p| p.iter())
        .map(|(k, t)| (&**k, now.saturating_sub(*t)))
        .collect();
    w.u64(partners.len() as u64);
    for (k, age) in partners {
        w.str(k).u64(age);
    }
    w.0
}

/// Maps a reason received from another node to one of ours (all static strings).
fn known_reason(r: &str) -> &'static str {
    match r {
        "hold_limit" => "hold_limit",
        "retention_expired" => "retention_expired",
        "offline" => "offline",
        "node_lost" => "node_lost",
        _ => "retention_limit",
    }
}

/// Fills a fresh session from a snapshot made by [`export_snapshot`].
pub(super) fn import_snapshot(
    s: &mut Session,
    bytes: &[u8],
    now: u64,
) -> Result<(), crate::cluster::wire::WireError> {
    use crate::cluster::wire::{Reader, WireError};
    let mut r = Reader::new(bytes);
    let epoch = r.u64()?;
    let last_seq = r.u64()?;
    let delivered = r.u64()?;
    let lost = match r.u8()? {
        0 => None,
        _ => Some((r.u64()?, known_reason(&r.string()?))),
    };
    let trim = known_reason(&r.string()?);
    let n = r.u64()?;
    let mut log = Log::default();
    for _ in 0..n {
        let seq = r.u64()?;
        let age = r.u64()?;
        let kind = match r.u8()? {
            0 => EntryKind::Message {
                from: r.string()?.into(),
                body: r.bytes()?.into(),
            },
            _ => EntryKind::PeerGone {
                peer: r.string()?.into(),
                reason: known_reason(&r.string()?),
            },
        };
        log.push(Entry {
            wire_end: 0,
            seq,
            at: now.saturating_sub(age),
            kind,
        });
    }
    let np = r.u64()?;
    let mut partners: HashMap<Box<str>, u64> = HashMap::default();
    for _ in 0..np {
        let k = r.string()?;
        let age = r.u64()?;
        if partners.len() < MAX_PARTNERS {
            partners.insert(k.into(), now.saturating_sub(age));
        }
    }
    r.finish()?;
    if delivered > last_seq || log.iter().any(|e| e.seq > last_seq) {
        return Err(WireError::TrailingBytes);
    }
    s.epoch = epoch;
    s.last_seq = last_seq;
    s.delivered = delivered;
    if let Some((after, reason)) = lost {
        log.set_lost(after, reason);
    }
    log.set_trim_reason(trim);
    log.compact();
    s.log = log;
    s.partners = (!partners.is_empty()).then(|| Box::new(partners));
    Ok(())
}

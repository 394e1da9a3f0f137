//! Sessions: one per client (account + client id) owned by this worker, with
//! the retained message log used for holding and Last-Event-ID replay, and the
//! conversation partners that get `peer-gone`.

use super::conn::{CloseReason, State};
use super::stats::WorkerStats;
use super::worker::Worker;
use super::{ClientInfo, Envelope, ReplyTo, SendError};
use crate::ids::EventId;
use crate::proto::events;
use crate::relay::core::{Timer, TouchKey};
use crate::relay::retained::EntryKind;
use crate::relay::session::Session;
use crate::relay::stream::StreamEnd;

impl Worker {
    /// `client` (owned here) exchanged a message with `peer`.
    /// On a cluster, a `client` not held here may be held by another node:
    /// the touch is forwarded there (unless it came from there).
    pub fn touch(&mut self, account: &str, client: &str, peer: &str, remote: bool) {
        if let Some(sidx) = self.relay.find(account, client) {
            self.relay.note_partner(sidx, peer, self.now);
        } else if let (false, Some(b)) = (remote, self.shared.cluster.clone()) {
            // Forwarding costs the cluster a look-up: the same pair goes at most once per few seconds.
            let key = TouchKey::Forward(account, client, peer);
            if !self.relay.touch_due(key, self.now) {
                return;
            }
            b.submit(super::bridge::BridgeCmd::Touch {
                account: account.into(),
                client: client.into(),
                peer: peer.into(),
            });
        }
    }

    /// Tells `to` (owned here) that `peer` went offline.
    pub fn peer_gone(&mut self, account: &str, to: &str, peer: &str, reason: &'static str) {
        let Some(sidx) = self.relay.find(account, to) else {
            return;
        };
        let s = self.relay.session_mut(sidx);
        if let Some(p) = s.partners.as_mut() {
            p.remove(peer);
        }
        let (epoch, sid) = (s.epoch, s.sid);
        // A new conversation with `peer` (a new session of it) must be noted at once.
        self.relay
            .touch_forget(TouchKey::Pair(account, peer, to, epoch));
        log::debug!("{sid} peer-gone {account}/{peer} -> {to}: {reason}");
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
        self.relay
            .of_account(account)
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
            self.list_done(reply.token, reply.seq, Some(clients));
        } else if self
            .post(
                reply.worker,
                Envelope::Listed {
                    token: reply.token,
                    seq: reply.seq,
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
            self.send_done(reply, result);
        } else if self
            .post(reply.worker, Envelope::Delivered { reply, result })
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
        let end = match reason {
            CloseReason::SlowConsumer => StreamEnd::SlowConsumer,
            _ => StreamEnd::Acked(acked),
        };
        let conn = (conn_idx as u32, conn_gen);
        let wall = super::epoch_ms();
        let Some(held) = self
            .relay
            .stream_closed(sidx, sess_gen, conn, end, self.now, wall)
        else {
            return; // replaced by a newer connection
        };
        let s = self.relay.session(sidx);
        self.shared.accounts.release(s.account());
        if held.rewound > 0 {
            log::info!(
                "{} {} messages written but not confirmed by the client; they will be sent again",
                s.sid,
                held.rewound
            );
        }
        log::info!(
            "{} session {} held ({}), {} retained",
            s.sid,
            s.key,
            reason.as_str(),
            s.log.len()
        );
        self.publish_sessions();
        self.set_session_deadline(sidx, held.deadline);
        self.announce(sidx, crate::cluster::PresenceState::Held, false);
    }

    /// A session timer fired: trim expired log entries, and end a held session
    /// whose hold ran out. True if anything was freed (entries or the session).
    pub fn session_timeout(&mut self, sidx: usize) -> bool {
        match self.relay.timer(sidx, self.now) {
            Timer::Rearm { deadline, freed } => {
                self.set_session_deadline(sidx, deadline);
                freed
            }
            Timer::Expired(s) => {
                self.disarm_session(sidx, &s);
                self.publish_sessions();
                self.expire_session(*s);
                true
            }
        }
    }

    /// Removes a session whose client did not come back, telling its recent partners.
    fn expire_session(&mut self, s: Session) {
        let ttl = self.shared.config.conversation_ttl.as_millis() as u64;
        let pending = s.undelivered();
        log::info!(
            "{} session {} gone after hold; {pending} undelivered messages dropped",
            s.sid,
            s.key
        );
        let account = s.account();
        let client = s.client();
        if let Some(b) = self.shared.cluster.clone() {
            // Every node (this one included) tells the partners it holds, if
            // the presence table still names this node; if another node owns
            // the client now, it gets what this session had not delivered.
            let gone = super::bridge::BridgeCmd::Gone {
                account: account.into(),
                client: client.into(),
                snapshot: (pending > 0)
                    .then(|| crate::relay::retained::export_snapshot(&s, self.now)),
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
            let beat = self.conns[idx].framing().heartbeat();
            if !self.write_conn(idx, beat) {
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
        let old = self.relay.get(sidx).map(|s| s.conn).unwrap_or((0, 0));
        if old.1 == 0 {
            return;
        }
        let oi = old.0 as usize;
        let live = self.conns.get(oi).is_some_and(|c| c.gen == old.1);
        // What the old connection's client confirmed so far counts as
        // delivered; the rest is sent again to a stream that resumes without
        // an id (what the old one still delivers may then come twice).
        let acked = if live {
            super::conn::acked_bytes(&self.conns[oi])
        } else {
            None
        };
        if let Some((_, back)) = self.relay.replace_stream(sidx, StreamEnd::Acked(acked)) {
            let s = self.relay.session(sidx);
            self.shared.accounts.release(s.account());
            if back > 0 {
                log::info!(
                    "{} {back} messages written to the replaced connection but not confirmed; \
                     they will be sent again",
                    s.sid
                );
            }
        }
        if !live {
            return;
        }
        let mut out = std::mem::take(&mut self.stage);
        out.clear();
        let framing = self.conns[oi].framing();
        let mark = framing.begin(&mut out);
        events::encode(&mut out, framing, None, "replaced", data);
        let start = framing.finish(&mut out, mark);
        // The stream ends here, cleanly.
        events::end(
            &mut out,
            framing,
            crate::proto::ws::close::NORMAL,
            "replaced",
        );
        log::info!("{} replaced: {data}", self.conns[oi].sid);
        // Still a receive connection (so a slow one is cut, not buffered), but no longer the session's.
        self.conns[oi].close_after_flush = true;
        self.write_conn(oi, &out[start..]);
        self.stage = out;
    }
}

impl Worker {
    /// This worker's connections matching `f`: how many matched, and the first `f.limit`.
    pub(super) fn inspect(&self, f: &super::InspectFilter) -> (usize, Vec<super::ConnInfo>) {
        let mut matched = 0;
        let mut out = Vec::new();
        for (_, c) in self.conns.iter() {
            let sess = match c.state {
                State::Receive { sess, sess_gen, .. } => {
                    self.relay.get(sess as usize).filter(|s| s.gen == sess_gen)
                }
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
                transport: match c.state {
                    State::Receive { framing, .. } if framing.is_websocket() => Some("websocket"),
                    State::Receive { .. } => Some("sse"),
                    _ => None,
                },
                remote: c.stream.peer_addr().ok(),
                since_ms: c.since_ms,
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
                queued_bytes: c.pending_out(),
                messages_queued: sess.map_or(0, |s| s.undelivered() as u64),
                worker: self.id,
            });
        }
        (matched, out)
    }
}

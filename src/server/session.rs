//! Sessions: one per client (account + client id) owned by this worker, with
//! the retained message log used for holding and Last-Event-ID replay, and the
//! conversation partners that get `peer-gone`.

use std::hash::BuildHasher;

use super::conn::{CloseReason, State};
use super::stats::WorkerStats;
use super::worker::Worker;
use super::{ClientInfo, Envelope, ReplyTo, SendError};
use crate::ids::EventId;
use crate::proto::sse;
use crate::relay::retained::EntryKind;
use crate::relay::session::{remember_partner, MAX_PARTNERS};
use crate::relay::stream::StreamEnd;
/// A conversation note for the same pair is passed on at most once per this long.
const TOUCH_WINDOW_MS: u64 = 5_000;

/// What a throttled conversation note is about (see [`Worker::touch_due`]).
#[derive(Hash)]
pub(super) enum TouchKey<'a> {
    /// A message from `.1` to `.2` in account `.0`, whose session has epoch `.3`.
    Pair(&'a str, &'a str, &'a str, u64),
    /// Passing on to the cluster that `.1` talked to `.2` in account `.0`.
    Forward(&'a str, &'a str, &'a str),
}

impl Worker {
    pub(super) fn note_partner(&mut self, sidx: usize, peer: &str) {
        let now = self.now;
        let ttl = self.shared.config.conversation_ttl.as_millis() as u64;
        let Some(s) = self.sessions.get_mut(sidx) else {
            return;
        };
        if peer == s.client() {
            return;
        }
        let p = s.partners.get_or_insert_with(Default::default);
        remember_partner(p, peer, now, ttl, MAX_PARTNERS);
    }

    /// `client` (owned here) exchanged a message with `peer`.
    /// On a cluster, a `client` not held here may be held by another node:
    /// the touch is forwarded there (unless it came from there).
    pub fn touch(&mut self, account: &str, client: &str, peer: &str, remote: bool) {
        if let Some(sidx) = self.sessions.find(account, client) {
            self.note_partner(sidx, peer);
        } else if let (false, Some(b)) = (remote, self.shared.cluster.clone()) {
            // Forwarding costs the cluster a look-up: the same pair goes at most once per few seconds.
            if !self.touch_due(TouchKey::Forward(account, client, peer)) {
                return;
            }
            b.submit(super::bridge::BridgeCmd::Touch {
                account: account.into(),
                client: client.into(),
                peer: peer.into(),
            });
        }
    }

    /// True if the conversation note `key` is due now: the same note was not
    /// passed on within the last few seconds (at most half the
    /// `--conversation-ttl`, at most 5 s). Conversation times are then at most
    /// that much stale, against a `--conversation-ttl` of minutes. The memory
    /// of recent notes is lossy in the safe direction (`pairs::RecentPairs`).
    pub fn touch_due(&mut self, key: TouchKey<'_>) -> bool {
        let window =
            (self.shared.config.conversation_ttl.as_millis() as u64 / 2).min(TOUCH_WINDOW_MS);
        let h = self.touch_hasher.hash_one(key);
        self.recent_pairs.due(h, self.now, window)
    }

    /// Forgets the conversation note `key`: the next one is due at once.
    fn touch_forget(&mut self, key: TouchKey<'_>) {
        let h = self.touch_hasher.hash_one(key);
        self.recent_pairs.forget(h);
    }

    /// Tells `to` (owned here) that `peer` went offline.
    pub fn peer_gone(&mut self, account: &str, to: &str, peer: &str, reason: &'static str) {
        let Some(sidx) = self.sessions.find(account, to) else {
            return;
        };
        if let Some(p) = self.sessions.slab[sidx].partners.as_mut() {
            p.remove(peer);
        }
        // A new conversation with `peer` (a new session of it) must be noted at once.
        let epoch = self.sessions.slab[sidx].epoch;
        self.touch_forget(TouchKey::Pair(account, peer, to, epoch));
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
        let now = self.now;
        let hold = self.shared.config.hold.as_millis() as u64;
        let Some(s) = self.sessions.get_mut(sidx) else {
            return;
        };
        if s.gen != sess_gen || s.conn != (conn_idx as u32, conn_gen) {
            return; // replaced by a newer connection
        }
        s.conn = (0, 0);
        self.shared.accounts.release(s.account());
        let end = match reason {
            CloseReason::SlowConsumer => StreamEnd::SlowConsumer,
            _ => StreamEnd::Acked(acked),
        };
        let back = s.stream_ended(end);
        if back > 0 {
            log::info!(
                "{} {back} messages written but not confirmed by the client; they will be sent again",
                s.sid
            );
        }
        s.held_since = now.max(1);
        s.since_ms = super::epoch_ms();
        let mark = (sidx as u32, s.gen, s.held_since);
        WorkerStats::add(&self.shared.stats[self.id].held, 1);
        log::info!(
            "{} session {} held ({}), {} retained",
            s.sid,
            s.key,
            reason.as_str(),
            s.log.len()
        );
        let deadline = s.deadline(hold, now);
        let sessions = &self.sessions.slab;
        let held = self.shared.stats[self.id]
            .held
            .load(std::sync::atomic::Ordering::Relaxed);
        self.held_order.push(mark, held as usize, |m| {
            crate::relay::held_order::is_held(sessions, m)
        });
        self.set_session_deadline(sidx, deadline);
        self.announce(sidx, crate::cluster::PresenceState::Held, false);
    }

    /// A session timer fired: trim expired log entries, and end a held session
    /// whose hold ran out. True if anything was freed (entries or the session).
    pub fn session_timeout(&mut self, sidx: usize) -> bool {
        let now = self.now;
        let cfg = &self.shared.config;
        let hold = cfg.hold.as_millis() as u64;
        let st = &self.shared.stats[self.id];
        let Some(s) = self.sessions.get_mut(sidx) else {
            return false;
        };
        let (gone, lost) = s.expire(now, hold);
        if lost > 0 {
            WorkerStats::add(&st.dropped, lost as u64);
        }
        let freed = gone > 0;
        if s.held_since > 0 && s.held_since + hold <= now {
            self.expire_session(sidx);
            return true;
        }
        let deadline = s.deadline(hold, now);
        self.set_session_deadline(sidx, deadline);
        freed
    }

    /// Removes a session whose client did not come back, telling its recent partners.
    fn expire_session(&mut self, sidx: usize) {
        let Some(s) = self.remove_session(sidx) else {
            return;
        };
        let st = &self.shared.stats[self.id];
        WorkerStats::sub(&st.sessions, 1);
        WorkerStats::sub(&st.held, 1);
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
        let old = self.sessions.get(sidx).map(|s| s.conn).unwrap_or((0, 0));
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
        if let Some(s) = self.sessions.get_mut(sidx) {
            s.conn = (0, 0);
            self.shared.accounts.release(s.account());
            let back = s.stream_ended(StreamEnd::Acked(acked));
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
        sse::encode_event(&mut out, None, Some("replaced"), data);
        let start = framing.finish(&mut out, mark);
        // The stream ends here, cleanly.
        out.extend_from_slice(framing.end());
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
                State::Receive { sess, sess_gen, .. } => self
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
                messages_queued: sess.map_or(0, |s| s.undelivered() as u64),
                worker: self.id,
            });
        }
        (matched, out)
    }
}

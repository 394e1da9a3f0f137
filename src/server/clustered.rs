//! The workers' side of clustering: forwarding sends for clients held by
//! other nodes, handing sessions over, announcing presence, and peer-gone for
//! clients that went offline on other nodes. Everything goes through the
//! bridge, which never makes a worker wait.

use super::bridge::{BridgeCmd, Takeover};
use super::conn::State;
use super::retained::export_snapshot;
use super::stats::WorkerStats;
use super::worker::Worker;
use super::{ReplyTo, SendError};
use crate::cluster::PresenceState;

impl Worker {
    /// Delivers to `to` if a session for it is here (`found`, the caller's
    /// look-up of `account`/`to`); otherwise, on a cluster, forwards to the
    /// node that holds it. The answer goes to `reply`.
    pub fn deliver_or_forward(
        &mut self,
        found: Option<usize>,
        account: &str,
        from: &std::sync::Arc<str>,
        to: &str,
        body: Box<[u8]>,
        reply: ReplyTo,
    ) {
        if let Some(sidx) = found {
            let r = self.deliver_to(sidx, account, from, to, body);
            self.reply_delivered(reply, r);
            return;
        }
        let Some(b) = self.shared.cluster.clone() else {
            let r = self.deliver(account, from, to, body); // counts the offline answer
            self.reply_delivered(reply, r);
            return;
        };
        let cmd = BridgeCmd::Send {
            account: account.into(),
            from: from[..].into(),
            to: to.into(),
            body,
            reply,
            fresh: false,
        };
        if !b.submit(cmd) {
            let e = if b.ok() {
                SendError::Overloaded
            } else {
                SendError::ClusterUnavailable
            };
            self.reply_delivered(reply, Err(e));
        }
    }

    /// Tells the cluster about a change of session `sidx`.
    pub fn announce(&self, sidx: usize, state: PresenceState) {
        let (Some(b), Some(s)) = (&self.shared.cluster, self.sessions.get(sidx)) else {
            return;
        };
        b.submit(BridgeCmd::Presence {
            account: s.account().into(),
            client: s.client().into(),
            role: s.role,
            state,
            since_ms: s.since_ms,
        });
    }

    /// Another node asks for the session of `client`: hand it over and forget it here.
    pub fn takeover_req(&mut self, account: &str, client: &str, node: String, req: u64) {
        let Some(b) = self.shared.cluster.clone() else {
            return;
        };
        let Some(sidx) = self.sessions.find(account, client) else {
            b.submit(BridgeCmd::SnapshotReply {
                node,
                req,
                session: None,
            });
            return;
        };
        let data = serde_json::json!({"session": null, "node": node}).to_string();
        self.evict_conn(sidx, &data);
        let Some(s) = self.remove_session(sidx) else {
            return;
        };
        let st = &self.shared.stats[self.id];
        WorkerStats::sub(&st.sessions, 1);
        if s.held_since > 0 {
            WorkerStats::sub(&st.held, 1);
        }
        log::info!(
            "{} session {account}/{client} handed over to node {node}",
            s.sid
        );
        let snapshot = export_snapshot(&s, self.now);
        if !b.submit(BridgeCmd::SnapshotReply {
            node,
            req,
            session: Some(snapshot),
        }) {
            log::warn!(
                "{} session {account}/{client}: hand-over could not be sent; its messages are lost",
                s.sid
            );
        }
    }

    /// The cluster answered a takeover for receive connection `idx`.
    pub fn takeover_done(&mut self, idx: usize, result: Takeover) {
        let State::Attaching(_) = self.conns[idx].state else {
            return;
        };
        let State::Attaching(a) = std::mem::replace(&mut self.conns[idx].state, State::Linger)
        else {
            return;
        };
        let (ident, req) = *a;
        match result {
            Takeover::None => self.attach_with(idx, ident, req, None, None),
            Takeover::Session(bytes) => self.attach_with(idx, ident, req, Some(bytes), None),
            Takeover::Lost(reason) => self.attach_with(idx, ident, req, None, Some(reason)),
        }
    }

    /// `client` went offline for good on some node: its recent partners held here get peer-gone.
    pub fn remote_gone(&mut self, account: &str, client: &str, reason: &'static str) {
        let ttl = self.shared.config.conversation_ttl.as_millis() as u64;
        let now = self.now;
        let to: Vec<String> = self
            .sessions
            .of_account(account)
            .filter(|(_, s)| s.client() != client && s.recent_partner(client, now, ttl))
            .map(|(_, s)| s.client().to_string())
            .collect();
        for t in to {
            self.peer_gone(account, &t, client, reason);
        }
    }

    /// Announces every session again (Redis lost what happened while it was away).
    pub fn reannounce(&mut self) {
        let all: Vec<(usize, bool)> = self
            .sessions
            .iter()
            .map(|(i, s)| (i, s.is_online()))
            .collect();
        for (i, online) in all {
            self.announce(
                i,
                if online {
                    PresenceState::Online
                } else {
                    PresenceState::Held
                },
            );
        }
    }
}

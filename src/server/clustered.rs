//! The workers' side of clustering: forwarding sends for clients held by
//! other nodes, handing sessions over, announcing presence, and peer-gone for
//! clients that went offline on other nodes. Everything goes through the
//! bridge, which never makes a worker wait.

use super::bridge::{BridgeCmd, Takeover};
use super::conn::State;
use super::worker::Worker;
use super::{ReplyTo, SendError};
use crate::cluster::PresenceState;
use crate::relay::retained::{export_snapshot, import_snapshot, EntryKind};
use crate::relay::session::Session;
use crate::relay::session_index::make_key;

impl Worker {
    /// Delivers to `to` if a session for it is here (`found`, the caller's
    /// look-up of `account`/`to`); otherwise, on a cluster, forwards to the
    /// node that holds it. The answer goes to `reply`. On a cluster, a session
    /// held here (no receive connection) takes the message only once the
    /// presence table confirmed that this node still owns the client
    /// (`checked`, or the bridge is asked first): its client may have
    /// reconnected to another node while this one could not hear of it.
    #[allow(clippy::too_many_arguments)]
    pub fn deliver_or_forward(
        &mut self,
        found: Option<usize>,
        account: &str,
        from: &std::sync::Arc<str>,
        to: &str,
        (body, json): (Box<[u8]>, bool),
        reply: ReplyTo,
        checked: bool,
    ) {
        let cluster = self.shared.cluster.clone();
        let held = match (found, &cluster) {
            (Some(sidx), Some(_)) if !checked => {
                let s = self.relay.session(sidx);
                (!s.online()).then_some((s.role(), s.since_ms()))
            }
            _ => None,
        };
        if let (Some(sidx), None) = (found, held) {
            let r = self.deliver_to(sidx, account, from, to, body, json);
            self.reply_delivered(reply, r);
            return;
        }
        let Some(b) = cluster else {
            let r = self.deliver(account, from, to, body, json); // counts the offline answer
            self.reply_delivered(reply, r);
            return;
        };
        let cmd = BridgeCmd::Send {
            account: account.into(),
            from: from[..].into(),
            to: to.into(),
            body,
            json,
            reply,
            fresh: checked,
            held,
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

    /// Claims session `sidx`'s client in the cluster's presence table:
    /// `take` when a receive connection just attached here, else keep it
    /// unless another node owns the client now (then the session is yielded
    /// to that node).
    pub fn announce(&self, sidx: usize, state: PresenceState, take: bool) {
        let (Some(b), Some(s)) = (&self.shared.cluster, self.relay.get(sidx)) else {
            return;
        };
        b.submit(BridgeCmd::Presence {
            account: s.account().into(),
            client: s.client().into(),
            role: s.role(),
            state,
            since_ms: s.since_ms(),
            take,
        });
    }

    /// Another node asks for the session of `client`: hand it over and forget it here.
    pub fn takeover_req(&mut self, account: &str, client: &str, node: String, req: u64) {
        let Some(b) = self.shared.cluster.clone() else {
            return;
        };
        let Some(sidx) = self.relay.find(account, client) else {
            if req != 0 {
                b.submit(BridgeCmd::SnapshotReply {
                    node,
                    req,
                    account: account.into(),
                    client: client.into(),
                    session: None,
                });
            }
            return;
        };
        let data = serde_json::json!({"session": null, "node": node}).to_string();
        self.evict_conn(sidx, &data);
        let Some(s) = self.remove_session(sidx) else {
            return;
        };
        self.publish_sessions();
        log::info!(
            "{} session {account}/{client} handed over to node {node}",
            s.sid()
        );
        let snapshot = export_snapshot(&s, self.now);
        if !b.submit(BridgeCmd::SnapshotReply {
            node,
            req,
            account: account.into(),
            client: client.into(),
            session: Some(snapshot),
        }) {
            log::warn!(
                "{} session {account}/{client}: hand-over could not be sent; its messages are lost",
                s.sid()
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
            .relay
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
        let all: Vec<(usize, bool)> = self.relay.iter().map(|(i, s)| (i, s.is_online())).collect();
        for (i, online) in all {
            let state = if online {
                PresenceState::Online
            } else {
                PresenceState::Held
            };
            self.announce(i, state, false);
        }
    }

    /// Node `node` owns `client` now (the presence table says so): the
    /// session here is handed to it and forgotten, with no peer-gone (the
    /// client is not gone, it is elsewhere); then `resend`, a send that found
    /// the session stale, goes on to the owner, after the session's messages.
    pub fn yield_session(
        &mut self,
        account: &str,
        client: &str,
        node: String,
        resend: Option<Box<super::Resend>>,
    ) {
        if let Some(sidx) = self.relay.find(account, client) {
            log::info!(
                "{} session {account}/{client} is owned by node {node} now; handing it over",
                self.relay.session(sidx).sid()
            );
            self.takeover_req(account, client, node, 0);
        }
        let Some(r) = resend else { return };
        let (from, (body, json), reply) = *r;
        let cmd = BridgeCmd::Send {
            account: account.into(),
            from: from[..].into(),
            to: client.into(),
            body,
            json,
            reply,
            fresh: true,
            held: None,
        };
        match &self.shared.cluster {
            Some(b) if b.submit(cmd) => {}
            _ => self.reply_delivered(reply, Err(SendError::ClusterUnavailable)),
        }
    }

    /// Another node handed over a session of `client` that this node owns:
    /// what that session had not delivered is appended to the one here, in
    /// its order, and written out like any new message.
    pub fn merge_session(&mut self, account: &str, client: &str, bytes: &[u8]) {
        let mut old = Session::blank(make_key(account, client).into_boxed_str(), account.len());
        if let Err(e) = import_snapshot(&mut old, bytes, self.now) {
            log::warn!("session {account}/{client} handed over late is corrupt ({e:?}); dropped");
            return;
        }
        let undelivered: Vec<EntryKind> = old.take_undelivered();
        if undelivered.is_empty() {
            return;
        }
        let Some(sidx) = self.relay.find(account, client) else {
            // The client's session ended here too (its hold ran out): its
            // partners were told it is gone.
            log::warn!(
                "session {account}/{client} handed over late with {} undelivered messages, \
                 but it has no session here any more; dropped",
                undelivered.len()
            );
            return;
        };
        let n = undelivered.len();
        let mut refused = 0usize;
        for kind in undelivered {
            match kind {
                EntryKind::Message { from, body, json } => {
                    if self
                        .deliver_to(sidx, account, &from, client, body, json)
                        .is_err()
                    {
                        refused += 1;
                    }
                }
                kind @ EntryKind::PeerGone { .. } => {
                    self.append(sidx, kind);
                }
            }
        }
        let sid = self.relay.session(sidx).sid();
        if refused > 0 {
            log::warn!(
                "{sid} session {account}/{client}: {refused} of {n} messages handed over late could not be taken"
            );
        } else {
            log::info!(
                "{sid} session {account}/{client}: took {n} undelivered events handed over late by another node"
            );
        }
    }
}

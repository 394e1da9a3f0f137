//! Requests waiting for another node's answer: hand-overs kept until they
//! are confirmed (and published again), expiry of unanswered requests, and
//! the answers to everything queued when Redis is away.

use super::*;

/// Answers everything queued with "cluster unavailable" (Redis is away).
pub(super) fn fail_all(shared: &Shared, rx: &Receiver<BridgeCmd>, batch: &mut Vec<BridgeCmd>) {
    let b = bridge(shared);
    batch.extend(rx.try_iter());
    for cmd in batch.drain(..) {
        fail(shared, cmd);
    }
    let all: Vec<(u64, (Instant, Pending))> = match b.pending.lock() {
        // Hand-overs stay, to be published again once Redis is back.
        Ok(mut p) => {
            let keys: Vec<u64> = p
                .iter()
                .filter(|(_, (_, v))| !matches!(v, Pending::Handover { .. }))
                .map(|(k, _)| *k)
                .collect();
            keys.into_iter()
                .filter_map(|k| p.remove(&k).map(|v| (k, v)))
                .collect()
        }
        Err(_) => Vec::new(),
    };
    for (_, (_, p)) in all {
        fail_pending(shared, p);
    }
}

/// Most times a hand-over is published before it is given up (logged).
const HANDOVER_TRIES: u32 = 10;

/// Encodes a session handed to `node` and keeps it until `node` confirms it;
/// returns the message to publish.
pub(super) fn handover(
    b: &Bridge,
    node: &str,
    req: u64,
    account: &str,
    client: &str,
    session: Vec<u8>,
) -> Vec<u8> {
    let ack = b.next_req.fetch_add(1, Relaxed);
    let msg = Wire::Snapshot {
        req,
        ack,
        reply_node: b.node.clone(),
        account: account.into(),
        client: client.into(),
        session: Some(session),
    }
    .encode();
    let p = Pending::Handover {
        node: node.to_string(),
        msg: msg.clone(),
        tries: 1,
    };
    if let Ok(mut m) = b.pending.lock() {
        m.insert(ack, (Instant::now() + b.cfg.timeout, p));
    }
    msg
}

fn fail(shared: &Shared, cmd: BridgeCmd) {
    match cmd {
        BridgeCmd::Send { reply, .. } => post(
            shared,
            reply.worker,
            Envelope::Delivered {
                reply,
                result: Err(SendError::ClusterUnavailable),
            },
        ),
        BridgeCmd::Takeover { reply, .. } => post(
            shared,
            reply.worker,
            Envelope::TakeoverDone {
                token: reply.token,
                result: Takeover::Lost("cluster_unavailable"),
            },
        ),
        BridgeCmd::List { reply, .. } => post(
            shared,
            reply.worker,
            Envelope::Listed {
                token: reply.token,
                seq: reply.seq,
                clients: None,
            },
        ),
        BridgeCmd::Presence { .. } | BridgeCmd::Gone { .. } => {
            bridge(shared).resync.store(true, Relaxed)
        }
        BridgeCmd::SnapshotReply {
            node,
            req,
            account,
            client,
            session: Some(s),
        } => {
            // Kept, to be published once Redis is back.
            let _ = handover(bridge(shared), &node, req, &account, &client, s);
        }
        _ => {}
    }
}

fn fail_pending(shared: &Shared, p: Pending) {
    match p {
        Pending::Send(reply, _) => post(
            shared,
            reply.worker,
            Envelope::Delivered {
                reply,
                result: Err(SendError::ClusterUnavailable),
            },
        ),
        Pending::Takeover(reply) => post(
            shared,
            reply.worker,
            Envelope::TakeoverDone {
                token: reply.token,
                result: Takeover::Lost("session_lost"),
            },
        ),
        Pending::Handover { node, tries, .. } => log::error!(
            "cluster: node {node} never confirmed a session handed to it ({tries} tries); \
             what that session had not delivered is lost"
        ),
    }
}

/// Answers requests whose remote node did not reply in time; returns the
/// hand-overs to publish again, (node, message).
pub(super) fn expire_pending(shared: &Shared) -> Vec<(String, Vec<u8>)> {
    let b = bridge(shared);
    let now = Instant::now();
    let mut again = Vec::new();
    let expired: Vec<Pending> = match b.pending.lock() {
        Ok(mut p) => {
            let keys: Vec<u64> = p
                .iter()
                .filter(|(_, (d, _))| *d <= now)
                .map(|(k, _)| *k)
                .collect();
            let mut expired = Vec::new();
            for k in keys {
                match p.remove(&k) {
                    Some((_, Pending::Handover { node, msg, tries })) if tries < HANDOVER_TRIES => {
                        again.push((node.clone(), msg.clone()));
                        let h = Pending::Handover {
                            node,
                            msg,
                            tries: tries + 1,
                        };
                        p.insert(k, (now + b.cfg.timeout, h));
                    }
                    Some((_, v)) => expired.push(v),
                    None => {}
                }
            }
            expired
        }
        Err(_) => Vec::new(),
    };
    for p in expired {
        fail_pending(shared, p);
    }
    again
}

pub(super) fn add_pending(b: &Bridge, p: Pending) -> u64 {
    let req = b.next_req.fetch_add(1, Relaxed);
    if let Ok(mut m) = b.pending.lock() {
        m.insert(req, (Instant::now() + b.cfg.timeout, p));
    }
    req
}

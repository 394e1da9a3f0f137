//! Running a batch of the workers' commands: their look-ups in one round
//! trip, then every command, claim and publish in one pipeline.

use super::lookup::{lookup_cmd, names_unknown_node, node_of, Lookup, LookupKind, PresenceMemo};
use super::pending::{add_pending, handover};
use super::*;
use crate::server::bridge::claims::{add_claim, add_gone, beat_and_live, AfterClaim, Claim, Mode};

pub(super) fn run_batch(
    shared: &Shared,
    con: &mut redis::Connection,
    live: &mut HashSet<String>,
    memo: &mut PresenceMemo,
    routes: &mut PresenceMemo,
    batch: &mut Vec<BridgeCmd>,
) -> redis::RedisResult<()> {
    let b = bridge(shared);
    let ttl_ms = b.cfg.node_ttl.as_millis() as u64;
    let mut pipe = redis::pipe();
    // The claims whose answers are acted on, in the order of their answers.
    let mut after: Vec<AfterClaim> = Vec::new();
    let cmds: Vec<BridgeCmd> = std::mem::take(batch);
    // Every look-up of the batch in one round trip. If Redis fails here, the
    // whole batch goes back to the caller, which answers it (`fail_all`).
    let mut lookups = redis::pipe();
    let mut kinds = Vec::with_capacity(cmds.len());
    let now = Instant::now();
    for c in &cmds {
        if let BridgeCmd::Touch {
            account, client, ..
        } = c
        {
            if let Some(node) = memo.get(account, client, now) {
                kinds.push(LookupKind::Known(node.clone()));
                continue;
            }
        }
        if let BridgeCmd::Send {
            account,
            to,
            fresh: false,
            ..
        } = c
        {
            if let Some(Some(node)) = routes.get(account, to, now) {
                if live.contains(node) {
                    kinds.push(LookupKind::Cached(node.to_string()));
                    continue;
                }
            }
        }
        kinds.push(lookup_cmd(&mut lookups, c));
    }
    let values: Vec<redis::Value> = if kinds
        .iter()
        .any(|k| matches!(k, LookupKind::Node | LookupKind::All))
    {
        match lookups.query(con) {
            Ok(v) => v,
            Err(e) => {
                batch.extend(cmds);
                return Err(e);
            }
        }
    } else {
        Vec::new()
    };
    // A node that started since the last heartbeat is not in `live` yet: look
    // again before calling its clients offline (a new node is routed to at once).
    if values.iter().any(|v| names_unknown_node(v, live, &b.node)) {
        *live = beat_and_live(con, None, ttl_ms)?;
    }
    let live: &HashSet<String> = live;
    let mut values = values.into_iter();
    for (cmd, kind) in cmds.into_iter().zip(kinds) {
        let cached = matches!(kind, LookupKind::Cached(_));
        let mut found = match kind {
            LookupKind::Cached(node) => Lookup::Node(Some((node, true))),
            LookupKind::None => Lookup::None,
            LookupKind::Known(node) => Lookup::Node(node.map(|n| {
                let alive = live.contains(&n);
                (n, alive)
            })),
            LookupKind::Node => {
                let n = values.next().and_then(|v| node_of(&v, live));
                match &cmd {
                    BridgeCmd::Touch {
                        account, client, ..
                    } => memo.put(account, client, n.as_ref().map(|(n, _)| n.clone()), now),
                    BridgeCmd::Send { account, to, .. } => {
                        // Only routes to other live nodes (a send reaches the bridge
                        // when this node does not hold the client).
                        match n.as_ref().filter(|(n, alive)| *alive && *n != b.node) {
                            Some((node, _)) => routes.put(account, to, Some(node.clone()), now),
                            None => routes.forget(account, to),
                        }
                    }
                    _ => {}
                }
                Lookup::Node(n)
            }
            LookupKind::All => Lookup::All(
                values
                    .next()
                    .and_then(|v| redis::from_redis_value(&v).ok())
                    .unwrap_or_default(),
            ),
        };
        match cmd {
            BridgeCmd::Presence {
                account,
                client,
                role,
                state,
                since_ms,
                take,
            } => {
                add_claim(
                    &mut pipe,
                    Claim {
                        account: &account,
                        client: &client,
                        node: &b.node,
                        value: PresenceEntry::encode(&b.node, role, state, since_ms),
                        state: state.as_str(),
                        since_ms,
                        mode: if take { Mode::Take } else { Mode::Keep },
                        ttl_ms,
                    },
                );
                if !take {
                    after.push(AfterClaim::Keep { account, client });
                }
            }
            BridgeCmd::Gone {
                account,
                client,
                snapshot,
            } => {
                add_gone(&mut pipe, &b.node, &account, &client);
                after.push(AfterClaim::Gone {
                    account,
                    client,
                    snapshot,
                });
            }
            BridgeCmd::Send {
                account,
                from,
                to,
                body,
                json,
                reply,
                held: Some((role, since_ms)),
                ..
            } => {
                let state = PresenceState::Held;
                add_claim(
                    &mut pipe,
                    Claim {
                        account: &account,
                        client: &to,
                        node: &b.node,
                        value: PresenceEntry::encode(&b.node, role, state, since_ms),
                        state: state.as_str(),
                        since_ms,
                        mode: Mode::Check,
                        ttl_ms,
                    },
                );
                after.push(AfterClaim::Check {
                    account,
                    from,
                    to,
                    body,
                    json,
                    reply,
                });
            }
            BridgeCmd::Send {
                account,
                from,
                to,
                body,
                json,
                reply,
                ..
            } => match found.node() {
                Some((node, true)) if node != b.node => {
                    let retry = cached.then(|| {
                        Box::new(super::Retry {
                            account: account.clone(),
                            from: from.clone(),
                            to: to.clone(),
                            body: body.clone(),
                            json,
                        })
                    });
                    let req = add_pending(b, Pending::Send(reply, retry));
                    let w = Wire::Deliver {
                        req,
                        reply_node: b.node.clone(),
                        account: account.into(),
                        from: from.into(),
                        to: to.into(),
                        body: body.into(),
                        json,
                    };
                    pipe.cmd("PUBLISH")
                        .arg(format!("sb:n:{node}"))
                        .arg(w.encode())
                        .ignore();
                }
                _ => post(
                    shared,
                    reply.worker,
                    Envelope::Delivered {
                        reply,
                        result: Err(SendError::Offline),
                    },
                ),
            },
            BridgeCmd::DeliverReply { node, req, result } => {
                let (status, id) = match result {
                    Ok(id) => (0, id.to_string()),
                    Err(SendError::Offline) => (1, String::new()),
                    Err(_) => (2, String::new()),
                };
                pipe.cmd("PUBLISH")
                    .arg(format!("sb:n:{node}"))
                    .arg(Wire::Delivered { req, status, id }.encode())
                    .ignore();
            }
            BridgeCmd::Takeover {
                account,
                client,
                reply,
            } => match found.node() {
                Some((node, true)) if node != b.node => {
                    let req = add_pending(b, Pending::Takeover(reply));
                    let w = Wire::Takeover {
                        req,
                        reply_node: b.node.clone(),
                        account: account.into(),
                        client: client.into(),
                    };
                    pipe.cmd("PUBLISH")
                        .arg(format!("sb:n:{node}"))
                        .arg(w.encode())
                        .ignore();
                }
                Some((node, false)) if node != b.node => {
                    log::info!("cluster: {account}/{client} was on node {node}, which is gone");
                    post(
                        shared,
                        reply.worker,
                        Envelope::TakeoverDone {
                            token: reply.token,
                            result: Takeover::Lost("session_lost"),
                        },
                    );
                }
                _ => post(
                    shared,
                    reply.worker,
                    Envelope::TakeoverDone {
                        token: reply.token,
                        result: Takeover::None,
                    },
                ),
            },
            BridgeCmd::SnapshotReply {
                node,
                req,
                account,
                client,
                session,
            } => {
                let msg = match session {
                    Some(s) => handover(b, &node, req, &account, &client, s),
                    None => Wire::Snapshot {
                        req,
                        ack: 0,
                        reply_node: b.node.clone(),
                        account: account.into(),
                        client: client.into(),
                        session: None,
                    }
                    .encode(),
                };
                pipe.cmd("PUBLISH")
                    .arg(format!("sb:n:{node}"))
                    .arg(msg)
                    .ignore();
            }
            BridgeCmd::Touch {
                account,
                client,
                peer,
            } => {
                if let Some((node, true)) = found.node() {
                    if node != b.node {
                        let w = Wire::Touch {
                            account: account.into(),
                            client: client.into(),
                            peer: peer.into(),
                        };
                        pipe.cmd("PUBLISH")
                            .arg(format!("sb:n:{node}"))
                            .arg(w.encode())
                            .ignore();
                    }
                }
            }
            BridgeCmd::List { reply, .. } => {
                let all = found.all();
                let clients = all
                    .into_iter()
                    .filter_map(|(client, v)| {
                        let e = PresenceEntry::decode(&v)?;
                        live.contains(&e.node).then_some(crate::server::ClientInfo {
                            client,
                            role: e.role,
                            online: e.online,
                            since_ms: e.since_ms,
                        })
                    })
                    .collect();
                post(
                    shared,
                    reply.worker,
                    Envelope::Listed {
                        token: reply.token,
                        seq: reply.seq,
                        clients: Some(clients),
                    },
                );
            }
        }
    }
    let answers: Vec<redis::Value> = match pipe.query(con) {
        Ok(v) => v,
        Err(e) => {
            for a in after {
                a.fail(shared);
            }
            return Err(e);
        }
    };
    for (a, v) in after.into_iter().zip(answers) {
        a.done(shared, v);
    }
    Ok(())
}

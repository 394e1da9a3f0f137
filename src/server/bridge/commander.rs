//! The bridge's command thread: every Redis command and publish (batched into
//! pipelines), the node heartbeat, expiry of unanswered requests, and the
//! reaper of dead nodes.

use super::claims::{add_claim, add_gone, beat_and_live, AfterClaim, Claim, Mode};
use super::*;

/// Runs the commands the workers queue, plus heartbeats and the reaper.
pub(super) fn commander(shared: Arc<Shared>, rx: Receiver<BridgeCmd>) {
    let b = bridge(&shared);
    let ttl_ms = b.cfg.node_ttl.as_millis() as u64;
    let beat = (b.cfg.node_ttl / 3).max(Duration::from_millis(100));
    let mut backoff = Duration::from_millis(100);
    let mut batch: Vec<BridgeCmd> = Vec::with_capacity(BATCH);
    // When the last heartbeat was written.
    let mut last_beat: Option<Instant> = None;
    loop {
        if shared.shutdown.load(Relaxed) {
            return;
        }
        let mut con = match connect(&b.cfg) {
            Ok(c) => c,
            Err(e) => {
                log::warn!(
                    "cluster: cannot reach Redis at {}: {e}; retrying in {backoff:?}",
                    b.cfg.redis_url
                );
                b.cmd_ok.store(false, Relaxed);
                fail_all(&shared, &rx, &mut batch);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let mut live: HashSet<String> = HashSet::new();
        let mut memo = PresenceMemo::new(Duration::from_secs(2), 16_384);
        let mut routes = PresenceMemo::new(Duration::from_secs(1), 65_536);
        let mut next_beat = Instant::now();
        let mut next_reap = Instant::now() + b.cfg.node_ttl;
        let result: redis::RedisResult<()> = (|| loop {
            if shared.shutdown.load(Relaxed) {
                // What the workers queued last (hand-overs of a drained node) goes out first.
                batch.extend(rx.try_iter());
                if !batch.is_empty() {
                    run_batch(
                        &shared,
                        &mut con,
                        &mut live,
                        &mut memo,
                        &mut routes,
                        &mut batch,
                    )?;
                }
                // Leave the cluster cleanly: others stop routing here at once.
                let _: redis::RedisResult<()> = redis::cmd("ZREM")
                    .arg("sb:nodes")
                    .arg(&b.node)
                    .query(&mut con);
                return Ok(());
            }
            if Instant::now() >= next_beat {
                live = beat_and_live(&mut con, Some(&b.node), ttl_ms)?;
                next_beat = Instant::now() + beat;
                let was_ok = b.ok();
                b.cmd_ok.store(true, Relaxed);
                // A heartbeat older than --node-ttl (the process was paused,
                // or cut off from Redis) let the other nodes call this one
                // lost and remove its presence: claim every session again.
                if let Some(lapse) = last_beat.map(|t| t.elapsed()) {
                    if lapse > b.cfg.node_ttl {
                        log::warn!(
                            "cluster: no heartbeat for {} ms (longer than --node-ttl): other nodes may have \
                             called this node lost; claiming its clients again",
                            lapse.as_millis()
                        );
                        b.resync.store(true, Relaxed);
                    }
                }
                last_beat = Some(Instant::now());
                if b.ok() && (!was_ok || b.resync.load(Relaxed)) {
                    reannounce(&shared);
                }
            }
            if Instant::now() >= next_reap {
                reap(&mut con, b, ttl_ms)?;
                next_reap = Instant::now() + b.cfg.node_ttl / 2;
            }
            for (node, msg) in expire_pending(&shared) {
                log::info!("cluster: node {node} has not confirmed a session handed to it; publishing it again");
                redis::cmd("PUBLISH")
                    .arg(format!("sb:n:{node}"))
                    .arg(msg)
                    .query::<()>(&mut con)?;
            }
            match rx.recv_timeout(Duration::from_millis(100).min(beat)) {
                Ok(cmd) => batch.push(cmd),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            run_batch(
                &shared,
                &mut con,
                &mut live,
                &mut memo,
                &mut routes,
                &mut batch,
            )?;
        })();
        match result {
            Ok(()) => return,
            Err(e) => {
                log::warn!("cluster: Redis command failed: {e}; reconnecting");
                b.cmd_ok.store(false, Relaxed);
                b.resync.store(true, Relaxed);
                fail_all(&shared, &rx, &mut batch);
            }
        }
    }
}

/// Answers everything queued with "cluster unavailable" (Redis is away).
fn fail_all(shared: &Shared, rx: &Receiver<BridgeCmd>, batch: &mut Vec<BridgeCmd>) {
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
fn handover(
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
fn expire_pending(shared: &Shared) -> Vec<(String, Vec<u8>)> {
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

fn add_pending(b: &Bridge, p: Pending) -> u64 {
    let req = b.next_req.fetch_add(1, Relaxed);
    if let Ok(mut m) = b.pending.lock() {
        m.insert(req, (Instant::now() + b.cfg.timeout, p));
    }
    req
}

pub(super) fn account_key(account: &str) -> String {
    format!("sb:a:{account}")
}

/// Removes `account/client` from the presence table if it still points at `node`.
const HDEL_IF: &str = "local v = redis.call('HGET', KEYS[1], ARGV[1]) \
    if v and string.sub(v, 1, string.len(ARGV[2]) + 1) == ARGV[2] .. '|' then return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0";

/// What a command needed to look up in Redis before it can run.
enum Lookup {
    None,
    /// Which node holds the client (and whether that node is alive).
    Node(Option<(String, bool)>),
    /// An account's whole presence table.
    All(HashMap<String, String>),
}

impl Lookup {
    fn node(&mut self) -> Option<(String, bool)> {
        match std::mem::replace(self, Lookup::None) {
            Lookup::Node(n) => n,
            _ => None,
        }
    }
    fn all(&mut self) -> HashMap<String, String> {
        match std::mem::replace(self, Lookup::None) {
            Lookup::All(a) => a,
            _ => HashMap::new(),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
enum LookupKind {
    None,
    Node,
    All,
    /// A note answered from the [`PresenceMemo`]: the node last seen holding the client.
    Known(Option<String>),
    /// A send routed from the [`PresenceMemo`] of routes to this (live) node.
    Cached(String),
}

/// (account, client).
type ClientKey = (Box<str>, Box<str>);

/// Recent answers to presence look-ups (which node holds a client), reused
/// for a short time instead of another `HGET`. Two are kept:
///
/// - routes for sends, 1 s, positive answers only: a node forwarding many
///   messages to the same clients would otherwise do one `HGET` per message.
///   A cached route can be stale (the client moved); the node it names then
///   answers "not here", and the send is retried once with a fresh look-up
///   (`Pending::Send` keeps the message for that). Routes to nodes that are
///   not alive are not used.
/// - answers for conversation notes (`Touch`), 2 s, "no node" included: notes
///   are best effort, and a busy sender whose session is on no node would
///   otherwise cost one `HGET` per note.
struct PresenceMemo {
    map: HashMap<ClientKey, (Option<String>, Instant)>,
    ttl: Duration,
    /// Most answers remembered (the memo is cleared when it is full).
    max: usize,
}

impl PresenceMemo {
    fn new(ttl: Duration, max: usize) -> PresenceMemo {
        PresenceMemo {
            map: HashMap::new(),
            ttl,
            max,
        }
    }

    /// The remembered answer, if still fresh.
    fn get(&self, account: &str, client: &str, now: Instant) -> Option<&Option<String>> {
        // Tuple keys of boxes cannot be borrowed as (&str, &str): build the key.
        let (node, at) = self.map.get(&(account.into(), client.into()))?;
        (now.duration_since(*at) < self.ttl).then_some(node)
    }

    fn put(&mut self, account: &str, client: &str, node: Option<String>, now: Instant) {
        if self.map.len() >= self.max {
            self.map.clear();
        }
        self.map
            .insert((account.into(), client.into()), (node, now));
    }

    fn forget(&mut self, account: &str, client: &str) {
        self.map.remove(&(account.into(), client.into()));
    }
}

/// Adds the Redis look-up a command needs to `pipe`, and says which kind.
fn lookup_cmd(pipe: &mut redis::Pipeline, cmd: &BridgeCmd) -> LookupKind {
    match cmd {
        BridgeCmd::Send {
            account,
            to: client,
            ..
        }
        | BridgeCmd::Takeover {
            account, client, ..
        }
        | BridgeCmd::Touch {
            account, client, ..
        } => {
            pipe.cmd("HGET").arg(account_key(account)).arg(&**client);
            LookupKind::Node
        }
        BridgeCmd::List { account, .. } => {
            pipe.cmd("HGETALL").arg(account_key(account));
            LookupKind::All
        }
        _ => LookupKind::None,
    }
}

/// The node a presence value names, and whether that node is alive.
fn node_of(v: &redis::Value, live: &HashSet<String>) -> Option<(String, bool)> {
    let s: Option<String> = redis::from_redis_value(v).ok()?;
    let e = PresenceEntry::decode(&s?)?;
    let alive = live.contains(&e.node);
    Some((e.node, alive))
}

fn run_batch(
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

/// True if a presence look-up's answer names a node other than `me` that is
/// not in `live`.
fn names_unknown_node(v: &redis::Value, live: &HashSet<String>, me: &str) -> bool {
    let unknown =
        |s: &str| PresenceEntry::decode(s).is_some_and(|e| e.node != me && !live.contains(&e.node));
    if let Ok(Some(s)) = redis::from_redis_value::<Option<String>>(v) {
        return unknown(&s);
    }
    redis::from_redis_value::<HashMap<String, String>>(v)
        .is_ok_and(|all| all.values().any(|s| unknown(s)))
}

/// Removes the presence of nodes whose heartbeat expired (one reaper per dead
/// node, chosen with SET NX) and broadcasts their clients as gone.
fn reap(con: &mut redis::Connection, b: &Bridge, ttl_ms: u64) -> redis::RedisResult<()> {
    // Redis's clock, as the heartbeats are stamped with it.
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(con)?;
    let now = secs * 1000 + micros / 1000;
    let dead: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg("sb:nodes")
        .arg("-inf")
        .arg(format!("({}", now.saturating_sub(ttl_ms)))
        .query(con)?;
    for node in dead {
        if node == b.node {
            continue;
        }
        let won: Option<String> = redis::cmd("SET")
            .arg(format!("sb:reap:{node}"))
            .arg(&b.node)
            .arg("NX")
            .arg("EX")
            .arg(60)
            .query(con)?;
        if won.is_none() {
            continue;
        }
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("sb:nc:{node}"))
            .query(con)?;
        log::info!(
            "cluster: node {node} is gone; reaping {} presence entries",
            members.len()
        );
        // Remove the entries that still point at the dead node; a client that
        // already moved to a live node is not gone.
        let pairs: Vec<(&str, &str)> = members.iter().filter_map(|m| m.split_once('/')).collect();
        let mut pipe = redis::pipe();
        for (account, client) in &pairs {
            pipe.cmd("EVAL")
                .arg(HDEL_IF)
                .arg(1)
                .arg(account_key(account))
                .arg(*client)
                .arg(&node);
        }
        let removed: Vec<i64> = if pairs.is_empty() {
            Vec::new()
        } else {
            pipe.query(con)?
        };
        let mut pipe = redis::pipe();
        for ((account, client), n) in pairs.iter().zip(removed) {
            if n == 1 {
                let w = Wire::Gone {
                    account: (*account).into(),
                    client: (*client).into(),
                    reason: "node_lost".into(),
                };
                pipe.cmd("PUBLISH").arg("sb:gone").arg(w.encode()).ignore();
            }
        }
        pipe.cmd("DEL").arg(format!("sb:nc:{node}")).ignore();
        pipe.cmd("ZREM").arg("sb:nodes").arg(&node).ignore();
        pipe.query::<()>(con)?;
    }
    Ok(())
}

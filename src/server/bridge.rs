//! The Redis bridge of a clustered node: two threads (a subscriber that
//! receives what other nodes publish to this node, and a commander that runs
//! every Redis command and publish), between the workers and Redis. Workers
//! hand it [`BridgeCmd`]s over a bounded channel and never wait for Redis;
//! answers come back as envelopes in the workers' inboxes.
//!
//! Redis layout (all keys under `sb:`):
//! - `sb:nodes`: sorted set, node id -> last heartbeat (epoch ms). A node is
//!   alive while its heartbeat is younger than `--node-ttl`.
//! - `sb:a:<account>`: hash, client -> `node|role|state|since_ms`. Entries of
//!   dead nodes are ignored by readers at once and removed by the reaper.
//! - `sb:nc:<node>`: set of `account/client` a node announced, for the reaper.
//! - channel `sb:n:<node>`: messages for one node; channel `sb:gone`: broadcast
//!   of clients that went offline for good (for peer-gone).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{Envelope, ReplyTo, SendError, Shared};
use crate::auth::Role;
use crate::cluster::wire::Wire;
use crate::cluster::{ClusterConfig, PresenceEntry, PresenceState};
use crate::ids::EventId;

/// Capacity of the channel from the workers to the bridge.
pub const BRIDGE_CAPACITY: usize = 65_536;
/// Most commands run in one Redis pipeline.
const BATCH: usize = 512;
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Work for the bridge.
pub(super) enum BridgeCmd {
    /// A local client's session changed state.
    Presence {
        account: Box<str>,
        client: Box<str>,
        role: Role,
        state: PresenceState,
        since_ms: u64,
    },
    /// Deliver to a client that no worker of this node holds.
    Send {
        account: Box<str>,
        from: Box<str>,
        to: Box<str>,
        body: Box<[u8]>,
        reply: ReplyTo,
    },
    /// The answer to a remote `Deliver`.
    DeliverReply {
        node: String,
        req: u64,
        result: Result<EventId, SendError>,
    },
    /// A client connected here; fetch its session from the node that holds it, if any.
    Takeover {
        account: Box<str>,
        client: Box<str>,
        reply: ReplyTo,
    },
    /// The answer to a remote `Takeover`.
    SnapshotReply {
        node: String,
        req: u64,
        session: Option<Vec<u8>>,
    },
    /// A client whose session is on another node exchanged a message with `peer`.
    Touch {
        account: Box<str>,
        client: Box<str>,
        peer: Box<str>,
    },
    /// A local client went offline for good: tell every node.
    Gone {
        account: Box<str>,
        client: Box<str>,
        reason: &'static str,
    },
    /// List an account's clients across the cluster.
    List { account: Box<str>, reply: ReplyTo },
}

/// How a takeover ended.
pub(super) enum Takeover {
    /// No node had a session for the client.
    None,
    /// The previous node handed the session over (encoded snapshot).
    Session(Vec<u8>),
    /// The session was on a node that is gone or did not answer: its messages are lost.
    Lost(&'static str),
}

enum Pending {
    Send(ReplyTo),
    Takeover(ReplyTo),
}

/// The bridge's state shared by its two threads and the node.
pub struct Bridge {
    cfg: ClusterConfig,
    node: String,
    tx: Sender<BridgeCmd>,
    /// Both Redis connections are up.
    sub_ok: AtomicBool,
    cmd_ok: AtomicBool,
    /// Presence updates were lost while Redis was away: re-announce on reconnect.
    resync: AtomicBool,
    next_req: AtomicU64,
    pending: Mutex<HashMap<u64, (Instant, Pending)>>,
}

impl Bridge {
    /// True while the node can reach Redis.
    pub fn ok(&self) -> bool {
        self.sub_ok.load(Relaxed) && self.cmd_ok.load(Relaxed)
    }

    /// Queues a command without blocking; false if the bridge is full or Redis is away.
    pub(super) fn submit(&self, cmd: BridgeCmd) -> bool {
        if !self.ok() {
            if matches!(cmd, BridgeCmd::Presence { .. }) {
                self.resync.store(true, Relaxed);
            }
            return false;
        }
        // Bounded by a length check on an unbounded (block-list) channel, so
        // memory follows the queue's actual depth.
        if self.tx.len() >= BRIDGE_CAPACITY {
            if matches!(cmd, BridgeCmd::Presence { .. }) {
                self.resync.store(true, Relaxed);
            }
            return false;
        }
        match self.tx.try_send(cmd) {
            Ok(()) => true,
            Err(e) => {
                if matches!(e.into_inner(), BridgeCmd::Presence { .. }) {
                    self.resync.store(true, Relaxed);
                }
                false
            }
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }
}

/// Creates the bridge (not yet running).
pub(super) fn new(cfg: ClusterConfig, node: String) -> (Arc<Bridge>, Receiver<BridgeCmd>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let b = Bridge {
        cfg,
        node,
        tx,
        sub_ok: AtomicBool::new(false),
        cmd_ok: AtomicBool::new(false),
        resync: AtomicBool::new(false),
        next_req: AtomicU64::new(1),
        pending: Mutex::new(HashMap::new()),
    };
    (Arc::new(b), rx)
}

/// Starts the bridge threads.
pub(super) fn start(shared: Arc<Shared>, rx: Receiver<BridgeCmd>) -> std::io::Result<()> {
    let s2 = shared.clone();
    std::thread::Builder::new()
        .name("bridge-sub".into())
        .spawn(move || subscriber(s2))?;
    std::thread::Builder::new()
        .name("bridge-cmd".into())
        .spawn(move || commander(shared, rx))?;
    Ok(())
}

fn bridge(shared: &Shared) -> &Bridge {
    // Only started when the node has a bridge.
    shared
        .cluster
        .as_deref()
        .expect("bridge threads run only on clustered nodes")
}

fn connect(cfg: &ClusterConfig) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(cfg.redis_url.as_str())?;
    let con = client.get_connection_with_timeout(cfg.timeout)?;
    con.set_read_timeout(Some(cfg.timeout))?;
    con.set_write_timeout(Some(cfg.timeout))?;
    Ok(con)
}

/// Receives what other nodes publish for this node and hands it to the workers.
fn subscriber(shared: Arc<Shared>) {
    let b = bridge(&shared);
    let mut backoff = Duration::from_millis(100);
    loop {
        if shared.shutdown.load(Relaxed) {
            return;
        }
        let mut con = match connect(&b.cfg) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("cluster: subscriber cannot reach Redis: {e}; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let mut ps = con.as_pubsub();
        let own = format!("sb:n:{}", b.node);
        if let Err(e) = ps.subscribe(&[own.as_str(), "sb:gone"]) {
            log::warn!("cluster: subscribe failed: {e}");
            std::thread::sleep(backoff);
            continue;
        }
        let _ = ps.set_read_timeout(Some(Duration::from_millis(500)));
        backoff = Duration::from_millis(100);
        let was_ok = b.ok();
        b.sub_ok.store(true, Relaxed);
        log::info!("cluster: subscribed to {own} and sb:gone");
        if !was_ok && b.ok() {
            reannounce(&shared);
        }
        loop {
            if shared.shutdown.load(Relaxed) {
                return;
            }
            match ps.get_message() {
                Ok(msg) => match Wire::decode(msg.get_payload_bytes()) {
                    Ok(w) => incoming(&shared, w),
                    Err(e) => log::warn!(
                        "cluster: undecodable message on {}: {e:?}",
                        msg.get_channel_name()
                    ),
                },
                Err(e) if e.is_timeout() => continue,
                Err(e) => {
                    log::warn!("cluster: subscription lost: {e}");
                    b.sub_ok.store(false, Relaxed);
                    break;
                }
            }
        }
    }
}

/// Asks every worker to announce its sessions again (after Redis was away).
fn reannounce(shared: &Shared) {
    let b = bridge(shared);
    if b.resync.swap(false, Relaxed) {
        log::info!("cluster: Redis is back; re-announcing this node's clients");
        for w in 0..shared.peers.len() {
            if shared.send_to(w, Envelope::Reannounce).is_ok() {
                shared.wake(w);
            }
        }
    }
}

fn post(shared: &Shared, worker: usize, env: Envelope) {
    if shared.send_to(worker, env).is_ok() {
        shared.wake(worker);
    } else {
        log::warn!("cluster: worker {worker} inbox full; dropped a message from Redis");
    }
}

/// Dispatches one message from another node.
fn incoming(shared: &Shared, w: Wire) {
    let b = bridge(shared);
    match w {
        Wire::Deliver {
            req,
            reply_node,
            account,
            from,
            to,
            body,
        } => {
            let owner = shared.owner(&account, &to);
            let env = Envelope::RemoteDeliver {
                account: account.into(),
                from: from.into(),
                to: to.into(),
                body: body.into(),
                node: reply_node,
                req,
            };
            post(shared, owner, env);
        }
        Wire::Delivered { req, status, id } => {
            let Some(Pending::Send(reply)) = take_pending(b, req) else {
                return;
            };
            let result = match (status, EventId::parse(&id)) {
                (0, Some(id)) => Ok(id),
                (1, _) => Err(SendError::Offline),
                _ => Err(SendError::Overloaded),
            };
            post(
                shared,
                reply.worker,
                Envelope::Delivered {
                    token: reply.token,
                    result,
                },
            );
        }
        Wire::Takeover {
            req,
            reply_node,
            account,
            client,
        } => {
            let owner = shared.owner(&account, &client);
            post(
                shared,
                owner,
                Envelope::TakeoverReq {
                    account: account.into(),
                    client: client.into(),
                    node: reply_node,
                    req,
                },
            );
        }
        Wire::Snapshot { req, session } => {
            let Some(Pending::Takeover(reply)) = take_pending(b, req) else {
                return;
            };
            let result = match session {
                Some(s) => Takeover::Session(s),
                None => Takeover::None,
            };
            post(
                shared,
                reply.worker,
                Envelope::TakeoverDone {
                    token: reply.token,
                    result,
                },
            );
        }
        Wire::Touch {
            account,
            client,
            peer,
        } => {
            let owner = shared.owner(&account, &client);
            post(
                shared,
                owner,
                Envelope::Touch {
                    account: account.into(),
                    client: client.into(),
                    peer: peer.into(),
                    remote: true,
                },
            );
        }
        Wire::Gone {
            account,
            client,
            reason,
        } => {
            let reason: &'static str = match reason.as_str() {
                "node_lost" => "node_lost",
                _ => "offline",
            };
            for w in 0..shared.peers.len() {
                post(
                    shared,
                    w,
                    Envelope::RemoteGone {
                        account: account.as_str().into(),
                        client: client.as_str().into(),
                        reason,
                    },
                );
            }
        }
    }
}

fn take_pending(b: &Bridge, req: u64) -> Option<Pending> {
    b.pending.lock().ok()?.remove(&req).map(|p| p.1)
}

/// Runs the commands the workers queue, plus heartbeats and the reaper.
fn commander(shared: Arc<Shared>, rx: Receiver<BridgeCmd>) {
    let b = bridge(&shared);
    let ttl_ms = b.cfg.node_ttl.as_millis() as u64;
    let beat = (b.cfg.node_ttl / 3).max(Duration::from_millis(100));
    let mut backoff = Duration::from_millis(100);
    let mut batch: Vec<BridgeCmd> = Vec::with_capacity(BATCH);
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
        let mut next_beat = Instant::now();
        let mut next_reap = Instant::now() + b.cfg.node_ttl;
        let result: redis::RedisResult<()> = (|| loop {
            if shared.shutdown.load(Relaxed) {
                // Leave the cluster cleanly: others stop routing here at once.
                let _: redis::RedisResult<()> = redis::cmd("ZREM")
                    .arg("sb:nodes")
                    .arg(&b.node)
                    .query(&mut con);
                return Ok(());
            }
            if Instant::now() >= next_beat {
                let now = super::epoch_ms();
                redis::cmd("ZADD")
                    .arg("sb:nodes")
                    .arg(now)
                    .arg(&b.node)
                    .query::<()>(&mut con)?;
                let alive: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                    .arg("sb:nodes")
                    .arg(now.saturating_sub(ttl_ms))
                    .arg("+inf")
                    .query(&mut con)?;
                live = alive.into_iter().collect();
                next_beat = Instant::now() + beat;
                let was_ok = b.ok();
                b.cmd_ok.store(true, Relaxed);
                if !was_ok && b.ok() {
                    reannounce(&shared);
                }
            }
            if Instant::now() >= next_reap {
                reap(&mut con, b, ttl_ms)?;
                next_reap = Instant::now() + b.cfg.node_ttl / 2;
            }
            expire_pending(&shared);
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
            run_batch(&shared, &mut con, &live, &mut batch)?;
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
        Ok(mut p) => p.drain().collect(),
        Err(_) => Vec::new(),
    };
    for (_, (_, p)) in all {
        fail_pending(shared, p);
    }
}

fn fail(shared: &Shared, cmd: BridgeCmd) {
    match cmd {
        BridgeCmd::Send { reply, .. } => post(
            shared,
            reply.worker,
            Envelope::Delivered {
                token: reply.token,
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
        BridgeCmd::Presence { .. } => bridge(shared).resync.store(true, Relaxed),
        _ => {}
    }
}

fn fail_pending(shared: &Shared, p: Pending) {
    match p {
        Pending::Send(reply) => post(
            shared,
            reply.worker,
            Envelope::Delivered {
                token: reply.token,
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
    }
}

/// Answers requests whose remote node did not reply in time.
fn expire_pending(shared: &Shared) {
    let b = bridge(shared);
    let now = Instant::now();
    let expired: Vec<Pending> = match b.pending.lock() {
        Ok(mut p) => {
            let keys: Vec<u64> = p
                .iter()
                .filter(|(_, (d, _))| *d <= now)
                .map(|(k, _)| *k)
                .collect();
            keys.into_iter()
                .filter_map(|k| p.remove(&k))
                .map(|v| v.1)
                .collect()
        }
        Err(_) => Vec::new(),
    };
    for p in expired {
        fail_pending(shared, p);
    }
}

fn add_pending(b: &Bridge, p: Pending) -> u64 {
    let req = b.next_req.fetch_add(1, Relaxed);
    if let Ok(mut m) = b.pending.lock() {
        m.insert(req, (Instant::now() + b.cfg.timeout, p));
    }
    req
}

fn account_key(account: &str) -> String {
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum LookupKind {
    None,
    Node,
    All,
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
    live: &HashSet<String>,
    batch: &mut Vec<BridgeCmd>,
) -> redis::RedisResult<()> {
    let b = bridge(shared);
    let mut pipe = redis::pipe();
    let mut publishes = 0usize;
    let cmds: Vec<BridgeCmd> = std::mem::take(batch);
    // Every look-up of the batch in one round trip. If Redis fails here, the
    // whole batch goes back to the caller, which answers it (`fail_all`).
    let mut lookups = redis::pipe();
    let mut kinds = Vec::with_capacity(cmds.len());
    for c in &cmds {
        kinds.push(lookup_cmd(&mut lookups, c));
    }
    let values: Vec<redis::Value> = if kinds.iter().any(|k| *k != LookupKind::None) {
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
    let mut values = values.into_iter();
    for (cmd, kind) in cmds.into_iter().zip(kinds) {
        let mut found = match kind {
            LookupKind::None => Lookup::None,
            LookupKind::Node => Lookup::Node(values.next().and_then(|v| node_of(&v, live))),
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
            } => {
                let member = format!("{account}/{client}");
                if state == PresenceState::Gone {
                    pipe.cmd("EVAL")
                        .arg(HDEL_IF)
                        .arg(1)
                        .arg(account_key(&account))
                        .arg(&*client)
                        .arg(&b.node)
                        .ignore();
                    pipe.cmd("SREM")
                        .arg(format!("sb:nc:{}", b.node))
                        .arg(member)
                        .ignore();
                } else {
                    let v = PresenceEntry::encode(&b.node, role, state, since_ms);
                    pipe.cmd("HSET")
                        .arg(account_key(&account))
                        .arg(&*client)
                        .arg(v)
                        .ignore();
                    pipe.cmd("SADD")
                        .arg(format!("sb:nc:{}", b.node))
                        .arg(member)
                        .ignore();
                }
            }
            BridgeCmd::Send {
                account,
                from,
                to,
                body,
                reply,
            } => match found.node() {
                Some((node, true)) if node != b.node => {
                    let req = add_pending(b, Pending::Send(reply));
                    let w = Wire::Deliver {
                        req,
                        reply_node: b.node.clone(),
                        account: account.into(),
                        from: from.into(),
                        to: to.into(),
                        body: body.into(),
                    };
                    pipe.cmd("PUBLISH")
                        .arg(format!("sb:n:{node}"))
                        .arg(w.encode())
                        .ignore();
                    publishes += 1;
                }
                _ => post(
                    shared,
                    reply.worker,
                    Envelope::Delivered {
                        token: reply.token,
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
                publishes += 1;
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
                    publishes += 1;
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
            BridgeCmd::SnapshotReply { node, req, session } => {
                pipe.cmd("PUBLISH")
                    .arg(format!("sb:n:{node}"))
                    .arg(Wire::Snapshot { req, session }.encode())
                    .ignore();
                publishes += 1;
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
            BridgeCmd::Gone {
                account,
                client,
                reason,
            } => {
                let w = Wire::Gone {
                    account: account.into(),
                    client: client.into(),
                    reason: reason.into(),
                };
                pipe.cmd("PUBLISH").arg("sb:gone").arg(w.encode()).ignore();
            }
            BridgeCmd::List { reply, .. } => {
                let all = found.all();
                let clients = all
                    .into_iter()
                    .filter_map(|(client, v)| {
                        let e = PresenceEntry::decode(&v)?;
                        live.contains(&e.node).then_some(super::ClientInfo {
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
    let _ = publishes;
    pipe.query::<()>(con)
}

/// Removes the presence of nodes whose heartbeat expired (one reaper per dead
/// node, chosen with SET NX) and broadcasts their clients as gone.
fn reap(con: &mut redis::Connection, b: &Bridge, ttl_ms: u64) -> redis::RedisResult<()> {
    let now = super::epoch_ms();
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

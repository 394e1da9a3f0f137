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
    /// A local client's session is online or held here: claim it in the
    /// presence table. `take`: a receive connection just attached here, so
    /// this node is the owner whatever the table said (the node it displaces
    /// is asked to hand over what it still has). Otherwise the claim keeps
    /// ownership only if no other live node took the client meanwhile (see
    /// docs/cluster.md, "Who owns a client"); if one did, the worker is told
    /// to yield its session to that node.
    Presence {
        account: Box<str>,
        client: Box<str>,
        role: Role,
        state: PresenceState,
        since_ms: u64,
        take: bool,
    },
    /// Deliver to a client that no worker of this node holds.
    Send {
        account: Box<str>,
        from: Box<str>,
        to: Box<str>,
        body: Box<[u8]>,
        /// The body is compact JSON, delivered as a value.
        json: bool,
        reply: ReplyTo,
        /// Look the recipient up in Redis even if its node is in the route
        /// cache (a retry after the cached node answered "not here").
        fresh: bool,
        /// A worker of this node holds the recipient's session, held (no
        /// receive connection here): accept into it only if the presence
        /// table still says this node owns the client (role and since of the
        /// session, to restore an entry Redis lost).
        held: Option<(Role, u64)>,
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
    /// The answer to a remote `Takeover` (or, with `req` 0, a session handed
    /// unasked to the node that owns its client).
    SnapshotReply {
        node: String,
        req: u64,
        account: Box<str>,
        client: Box<str>,
        session: Option<Vec<u8>>,
    },
    /// A client whose session is on another node exchanged a message with `peer`.
    Touch {
        account: Box<str>,
        client: Box<str>,
        peer: Box<str>,
    },
    /// The hold of a local client ran out: remove its presence and tell
    /// every node (peer-gone), but only if the presence table still names
    /// this node; if another live node owns the client, hand it what the
    /// session had not delivered (`snapshot`) instead.
    Gone {
        account: Box<str>,
        client: Box<str>,
        snapshot: Option<Vec<u8>>,
    },
    /// List an account's clients across the cluster.
    List { account: Box<str>, reply: ReplyTo },
}

impl BridgeCmd {
    fn is_presence(&self) -> bool {
        matches!(self, BridgeCmd::Presence { .. } | BridgeCmd::Gone { .. })
    }
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
    /// A forwarded send; with the message kept when its route came from the
    /// route cache, to send it again after a fresh look-up if that node
    /// answers "not here".
    Send(ReplyTo, Option<Box<Retry>>),
    Takeover(ReplyTo),
    /// A session handed to `node` (the encoded `Snapshot`), published again
    /// until that node confirms it; `tries` so far.
    Handover {
        node: String,
        msg: Vec<u8>,
        tries: u32,
    },
}

/// A forwarded send kept for one retry (see [`Pending::Send`]).
struct Retry {
    account: Box<str>,
    from: Box<str>,
    to: Box<str>,
    body: Box<[u8]>,
    json: bool,
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
    /// Hand-overs taken, by (sending node, ack), so that one published again
    /// (its confirmation lost) is not taken twice.
    taken: Mutex<HashMap<(String, u64), Instant>>,
}

impl Bridge {
    /// True while the node can reach Redis.
    pub fn ok(&self) -> bool {
        self.sub_ok.load(Relaxed) && self.cmd_ok.load(Relaxed)
    }

    /// Queues a command without blocking; false if the bridge is full or Redis is away.
    pub(super) fn submit(&self, cmd: BridgeCmd) -> bool {
        // Bounded by a length check on an unbounded (block-list) channel, so
        // memory follows the queue's actual depth.
        let cmd = if !self.ok() || self.tx.len() >= BRIDGE_CAPACITY {
            cmd
        } else {
            match self.tx.try_send(cmd) {
                Ok(()) => return true,
                Err(e) => e.into_inner(),
            }
        };
        if cmd.is_presence() {
            // Lost presence is written again once Redis is back.
            self.resync.store(true, Relaxed);
        }
        false
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// True the first time hand-over `ack` of `node` arrives (remembered for a minute).
    fn first_handover(&self, node: &str, ack: u64) -> bool {
        let Ok(mut t) = self.taken.lock() else {
            return true;
        };
        let now = Instant::now();
        if t.len() >= 1024 {
            t.retain(|_, at| now.duration_since(*at) < Duration::from_secs(60));
        }
        t.insert((node.to_string(), ack), now).is_none()
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
        taken: Mutex::new(HashMap::new()),
    };
    (Arc::new(b), rx)
}

/// Starts the bridge threads; returns the commander's, which runs what the
/// workers queued before it leaves the cluster (so a node that drained still
/// sends its last hand-overs).
pub(super) fn start(
    shared: Arc<Shared>,
    rx: Receiver<BridgeCmd>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let s2 = shared.clone();
    std::thread::Builder::new()
        .name("bridge-sub".into())
        .spawn(move || subscriber(s2))?;
    std::thread::Builder::new()
        .name("bridge-cmd".into())
        .spawn(move || commander(shared, rx))
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
                // A read interrupted by a signal (SIGSTOP/SIGCONT make a read
                // with a timeout fail with EINTR) lost nothing: the parser keeps
                // what it had, as after a timeout.
                Err(e) if e.is_timeout() || interrupted(&e) => continue,
                Err(e) => {
                    // What other nodes published meanwhile is gone (hand-over
                    // requests included): once subscribed again, every session
                    // is claimed again, and a node that took one of our clients
                    // meanwhile gets what we still hold for it.
                    log::warn!("cluster: subscription lost: {e}; subscribing again");
                    b.sub_ok.store(false, Relaxed);
                    b.resync.store(true, Relaxed);
                    break;
                }
            }
        }
    }
}

/// True if a Redis read failed only because a signal interrupted it.
fn interrupted(e: &redis::RedisError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::Interrupted)
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
            json,
        } => {
            let owner = shared.owner(&account, &to);
            let env = Envelope::RemoteDeliver {
                account: account.into(),
                from: from.into(),
                to: to.into(),
                body: body.into(),
                json,
                node: reply_node,
                req,
            };
            post(shared, owner, env);
        }
        Wire::Delivered { req, status, id } => {
            let Some(Pending::Send(reply, retry)) = take_pending(b, req) else {
                return;
            };
            if let (1, Some(r)) = (status, retry) {
                // The cached route was stale: look the recipient up again.
                let cmd = BridgeCmd::Send {
                    account: r.account,
                    from: r.from,
                    to: r.to,
                    body: r.body,
                    json: r.json,
                    reply,
                    fresh: true,
                    held: None,
                };
                if !b.submit(cmd) {
                    post(
                        shared,
                        reply.worker,
                        Envelope::Delivered {
                            reply,
                            result: Err(SendError::ClusterUnavailable),
                        },
                    );
                }
                return;
            }
            let result = match (status, EventId::parse(&id)) {
                (0, Some(id)) => Ok(id),
                (1, _) => Err(SendError::Offline),
                _ => Err(SendError::Overloaded),
            };
            post(shared, reply.worker, Envelope::Delivered { reply, result });
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
        Wire::Snapshot {
            req,
            ack,
            reply_node,
            account,
            client,
            session,
        } => {
            #[cfg(feature = "fault-injection")]
            if ack != 0 && fault_drop_handover() {
                log::warn!(
                    "fault injection: hand-over {ack} from node {reply_node} dropped unread"
                );
                return;
            }
            if ack != 0 {
                // Confirm it (the sender publishes it again until then), and take it once.
                b.submit(BridgeCmd::DeliverReply {
                    node: reply_node.clone(),
                    req: ack,
                    result: Ok(EventId { epoch: 0, seq: 0 }),
                });
                if !b.first_handover(&reply_node, ack) {
                    return;
                }
            }
            let Some(Pending::Takeover(reply)) = take_pending(b, req) else {
                // Unasked, or too late for the takeover that asked for it: the
                // session's client is ours now; take what it had not delivered.
                if let (Some(session), false) = (session, account.is_empty()) {
                    let owner = shared.owner(&account, &client);
                    let env = Envelope::Merge {
                        account: account.into(),
                        client: client.into(),
                        session,
                    };
                    post(shared, owner, env);
                }
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

mod claims;
mod commander;
use commander::commander;

/// Test-only: `SWITCHBOARD_FAULT_DROP_HANDOVERS=N` makes the node drop the
/// first N session hand-overs it receives, unconfirmed, as if their
/// publication was lost (the sender must publish them again).
#[cfg(feature = "fault-injection")]
fn fault_drop_handover() -> bool {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static LEFT: OnceLock<AtomicU32> = OnceLock::new();
    let left = LEFT.get_or_init(|| {
        let n = std::env::var("SWITCHBOARD_FAULT_DROP_HANDOVERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        AtomicU32::new(n)
    });
    left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

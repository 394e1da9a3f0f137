//! Who owns a client: the claims a node makes in the presence table, and what
//! it does with their answers (docs/cluster.md, "Who owns a client").
//!
//! A client is owned by the node its presence entry names. A node writes that
//! entry only through the scripts below, which run atomically in Redis and
//! judge node liveness by Redis's own clock (`TIME`), as the heartbeats are
//! stamped with it, so the nodes' clocks do not matter:
//!
//! - **take** (a receive connection attached here): the entry names this node,
//!   whatever it said; a node it displaces is sent a `Takeover` (request 0) so
//!   that it hands over whatever it still holds for the client.
//! - **keep** (a session became held here, or every session after Redis or the
//!   subscription was away): the entry is (re)written only if it names this
//!   node, nobody, or a node that is not alive, or if this node has the client
//!   online and the other only held it (or online since earlier). Otherwise the
//!   other node owns the client, and this node yields its session to it.
//! - **check** (a send to a client held here): as keep, but an entry that names
//!   this node is left as it is. Only if the claim holds is the message
//!   accepted here; otherwise the session is yielded and the message sent on
//!   to the owner, after what the session had (same Redis connection, same
//!   channel, so in order).
//!
//! A session yielded, or handed over too late for the takeover that asked for
//! it, reaches the owner as a `Snapshot`, and the owner appends what it had not
//! delivered to the client's current session ([`super::super::Envelope::Merge`]).
//! A snapshot is published again until the owner confirms it.

use std::collections::HashSet;

use super::{post, BridgeCmd, Shared};
use crate::cluster::wire::Wire;
use crate::server::{Envelope, ReplyTo, SendError};

/// Heartbeat (`ARGV[1]`, the node, or '' for none) stamped with Redis's clock;
/// returns the nodes whose heartbeat is younger than `ARGV[2]` ms.
const BEAT: &str = "if redis.replicate_commands then redis.replicate_commands() end \
local t = redis.call('TIME') \
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[1], now, ARGV[1]) end \
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '+inf')";

/// The claim. KEYS: `sb:a:<account>`, `sb:nc:<node>`, `sb:nodes`. ARGV: client,
/// node, entry value, mode (take/keep/check), node TTL ms, `account/client`,
/// the `Takeover` to publish to a displaced node, this node's state, its
/// since_ms. Returns `{1, displaced node or ''}` or `{0, owner}`.
const CLAIM: &str = "if redis.replicate_commands then redis.replicate_commands() end \
local cur = redis.call('HGET', KEYS[1], ARGV[1]) \
local other = nil \
if cur then \
  local node, role, st, since = string.match(cur, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)') \
  if node == ARGV[2] then \
    if ARGV[4] == 'check' then return {1, ''} end \
  elseif node then \
    other = node \
    if ARGV[4] ~= 'take' then \
      local score = redis.call('ZSCORE', KEYS[3], node) \
      local t = redis.call('TIME') \
      local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
      if score and tonumber(score) >= now - tonumber(ARGV[5]) then \
        local wins = ARGV[8] == 'online' and (st ~= 'online' or tonumber(ARGV[9]) > (tonumber(since) or 0)) \
        if not wins then return {0, node} end \
      end \
    end \
  end \
end \
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) \
redis.call('SADD', KEYS[2], ARGV[6]) \
if other then redis.call('PUBLISH', 'sb:n:' .. other, ARGV[7]) end \
return {1, other or ''}";

/// The end of a hold. KEYS: `sb:a:<account>`, `sb:nc:<node>`. ARGV: client,
/// node, `account/client`, the `Gone` to broadcast. The entry is removed and
/// the client reported gone only if it names this node (or nobody); if
/// another node owns the client, nobody is told it is gone, and the script
/// returns that node (to hand it what the session had not delivered).
const GONE: &str = "local cur = redis.call('HGET', KEYS[1], ARGV[1]) \
redis.call('SREM', KEYS[2], ARGV[3]) \
local node = cur and string.match(cur, '^([^|]*)|') \
if node and node ~= ARGV[2] then return node end \
if cur then redis.call('HDEL', KEYS[1], ARGV[1]) end \
redis.call('PUBLISH', 'sb:gone', ARGV[4]) \
return ''";

/// Writes this node's heartbeat (`node`, or none) and returns the live nodes,
/// both by Redis's clock.
pub(super) fn beat_and_live(
    con: &mut redis::Connection,
    node: Option<&str>,
    ttl_ms: u64,
) -> redis::RedisResult<HashSet<String>> {
    let alive: Vec<String> = redis::cmd("EVAL")
        .arg(BEAT)
        .arg(1)
        .arg("sb:nodes")
        .arg(node.unwrap_or(""))
        .arg(ttl_ms)
        .query(con)?;
    Ok(alive.into_iter().collect())
}

/// How a claim is made.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Take,
    Keep,
    Check,
}

/// A claim whose answer the bridge acts on.
pub(super) enum AfterClaim {
    /// A `keep`: if lost, the worker yields the session.
    Keep { account: Box<str>, client: Box<str> },
    /// The end of a hold: if another node owns the client, it gets `snapshot`.
    Gone {
        account: Box<str>,
        client: Box<str>,
        snapshot: Option<Vec<u8>>,
    },
    /// A `check` for a send to a held client: accepted here, or sent on.
    Check {
        account: Box<str>,
        from: Box<str>,
        to: Box<str>,
        body: Box<[u8]>,
        json: bool,
        reply: ReplyTo,
    },
}

/// The fields of one claim.
pub(super) struct Claim<'a> {
    pub account: &'a str,
    pub client: &'a str,
    pub node: &'a str,
    pub value: String,
    pub state: &'a str,
    pub since_ms: u64,
    pub mode: Mode,
    pub ttl_ms: u64,
}

/// Adds a claim to `pipe` (its answer is read unless it is a `take`).
pub(super) fn add_claim(pipe: &mut redis::Pipeline, c: Claim<'_>) {
    let takeover = Wire::Takeover {
        req: 0,
        reply_node: c.node.to_string(),
        account: c.account.to_string(),
        client: c.client.to_string(),
    };
    let cmd = pipe
        .cmd("EVAL")
        .arg(CLAIM)
        .arg(3)
        .arg(super::commander::account_key(c.account))
        .arg(format!("sb:nc:{}", c.node))
        .arg("sb:nodes")
        .arg(c.client)
        .arg(c.node)
        .arg(c.value)
        .arg(match c.mode {
            Mode::Take => "take",
            Mode::Keep => "keep",
            Mode::Check => "check",
        })
        .arg(c.ttl_ms)
        .arg(format!("{}/{}", c.account, c.client))
        .arg(takeover.encode())
        .arg(c.state)
        .arg(c.since_ms);
    if c.mode == Mode::Take {
        cmd.ignore();
    }
}

/// Adds the end of a hold to `pipe` (see [`GONE`]); its answer is read.
pub(super) fn add_gone(pipe: &mut redis::Pipeline, node: &str, account: &str, client: &str) {
    let gone = Wire::Gone {
        account: account.into(),
        client: client.into(),
        reason: "offline".into(),
    };
    pipe.cmd("EVAL")
        .arg(GONE)
        .arg(2)
        .arg(super::commander::account_key(account))
        .arg(format!("sb:nc:{node}"))
        .arg(client)
        .arg(node)
        .arg(format!("{account}/{client}"))
        .arg(gone.encode());
}

impl AfterClaim {
    /// Acts on the claim's answer `v` (`{1, ...}` held, `{0, owner}` lost).
    pub(super) fn done(self, shared: &Shared, v: redis::Value) {
        if let AfterClaim::Gone {
            account,
            client,
            snapshot: Some(session),
        } = self
        {
            let owner: String = redis::from_redis_value(&v).unwrap_or_default();
            if !owner.is_empty() {
                let b = super::bridge(shared);
                b.submit(BridgeCmd::SnapshotReply {
                    node: owner,
                    req: 0,
                    account,
                    client,
                    session: Some(session),
                });
            }
            return;
        }
        let (won, owner): (i64, String) = redis::from_redis_value(&v).unwrap_or((1, String::new()));
        match self {
            AfterClaim::Gone { .. } => {}
            AfterClaim::Keep { account, client } => {
                if won == 0 {
                    let w = shared.owner(&account, &client);
                    post(
                        shared,
                        w,
                        Envelope::Yield {
                            account,
                            client,
                            node: owner,
                            resend: None,
                        },
                    );
                }
            }
            AfterClaim::Check {
                account,
                from,
                to,
                body,
                json,
                reply,
            } => {
                let w = shared.owner(&account, &to);
                let env = if won == 0 {
                    Envelope::Yield {
                        account,
                        client: to,
                        node: owner,
                        resend: Some(Box::new((from.into(), (body, json), reply))),
                    }
                } else {
                    Envelope::Deliver {
                        account,
                        from: from.into(),
                        to,
                        body,
                        json,
                        reply,
                        checked: true,
                    }
                };
                post(shared, w, env);
            }
        }
    }

    /// Redis failed before the claim's answer came.
    pub(super) fn fail(self, shared: &Shared) {
        match self {
            AfterClaim::Keep { .. } | AfterClaim::Gone { .. } => super::bridge(shared)
                .resync
                .store(true, std::sync::atomic::Ordering::Relaxed),
            AfterClaim::Check { reply, .. } => post(
                shared,
                reply.worker,
                Envelope::Delivered {
                    reply,
                    result: Err(SendError::ClusterUnavailable),
                },
            ),
        }
    }
}

//! The reaper of dead nodes: removes their presence entries and broadcasts
//! their clients as gone.

use super::*;

/// Removes `account/client` from the presence table if it still points at `node`.
const HDEL_IF: &str = "local v = redis.call('HGET', KEYS[1], ARGV[1]) \
    if v and string.sub(v, 1, string.len(ARGV[2]) + 1) == ARGV[2] .. '|' then return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0";

/// Removes the presence of nodes whose heartbeat expired (one reaper per dead
/// node, chosen with SET NX) and broadcasts their clients as gone.
pub(super) fn reap(con: &mut redis::Connection, b: &Bridge, ttl_ms: u64) -> redis::RedisResult<()> {
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

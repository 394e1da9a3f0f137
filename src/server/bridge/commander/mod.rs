//! The bridge's command thread: every Redis command and publish (batched into
//! pipelines), the node heartbeat, expiry of unanswered requests, and the
//! reaper of dead nodes.
//!
//! This module holds the command loop; `pending` the requests waiting for
//! another node's answer (expiry, hand-overs published again) and the
//! answers when Redis is away, `lookup` the presence look-ups and their
//! memo, `batch` the running of a batch of commands in pipelines, `reap`
//! the reaper of dead nodes.

mod batch;
mod lookup;
mod pending;
mod reap;

use super::claims::beat_and_live;
use super::*;
use batch::run_batch;
use lookup::PresenceMemo;
use pending::{expire_pending, fail_all};
use reap::reap;

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
pub(super) fn account_key(account: &str) -> String {
    format!("sb:a:{account}")
}

//! The node's retained bytes (each worker's tally, published once per loop
//! iteration) and, past `--hold-total-bytes`, which held clients lose their
//! messages. The
//! client held the longest goes first, node-wide: each worker evicts from its
//! own held sessions in the order they became held ([`HeldOrder`]), and when
//! another worker holds a client that has been gone longer, it asks that
//! worker to make the room instead.
//!
//! Between workers, two atomics per worker do it (no channel messages, so no
//! allocation and nothing to lose when a channel is full):
//! - `oldest_held`: the monotonic ms at which this worker's longest-held
//!   session became held (0: none); near the limit, of the longest-held one
//!   that still retains messages. Workers share one clock origin, so these
//!   compare across workers.
//! - `evict_asked`: bytes other workers asked this worker to drop from its
//!   longest-held sessions. The asking worker publishes its own tally first
//!   and wakes the asked one; the asked worker takes the whole amount at the
//!   end of its next loop iteration, and asks what its own held clients did
//!   not have of the worker with the next longest-held client.
//!
//! What is asked for and not yet done stays on the node until then: at most
//! one eighth of the limit per asked worker (past it, a worker makes room
//! itself), usually one loop iteration's worth.
//!
//! [`HeldOrder`]: crate::relay::held_order::HeldOrder

use std::sync::atomic::Ordering;

use super::deliver::warn_budget;
use super::stats::WorkerStats;
use super::worker::Worker;
use crate::relay::held_order::is_held;
use crate::relay::retained;

impl Worker {
    /// What the other workers retain, as they last published it.
    pub(super) fn published_by_others(&self) -> usize {
        self.shared
            .stats
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.id)
            .map(|(_, s)| s.retained_bytes.load(Ordering::Relaxed) as usize)
            .sum()
    }

    /// Publishes this worker's retained bytes and messages (its thread-local
    /// tally) for the other workers and the admin thread.
    pub(super) fn publish_retained(&self) {
        let (bytes, entries) = retained::thread_tally();
        let st = &self.shared.stats[self.id];
        st.retained_bytes.store(bytes as u64, Ordering::Relaxed);
        st.retained_messages
            .store(entries as u64, Ordering::Relaxed);
    }

    /// Message bytes retained on the node: this worker's own tally and what
    /// the others last published.
    pub fn node_retained(&self) -> usize {
        retained::node_bytes(self.others_retained)
    }

    /// Past `--hold-total-bytes`: drops up to `budget` bytes of the retained
    /// entries of this worker's held sessions, oldest first, starting with
    /// the session held the longest (the least likely to come back), while
    /// the node is past the limit. Returns the bytes freed. Amortised O(1):
    /// within one episode of memory pressure, sessions found empty are not
    /// visited again.
    pub(super) fn evict_held(&mut self, hard: usize, budget: usize) -> usize {
        let others = self.others_retained;
        let over = || retained::node_bytes(others) > hard;
        let st = &self.shared.stats[self.id];
        let mut freed = 0;
        while over() && freed < budget {
            let Some(mark) = self.held_order.at_cursor() else {
                break;
            };
            if !is_held(&self.sessions.slab, mark) {
                self.held_order.advance();
                continue;
            }
            let s = &mut self.sessions.slab[mark.0 as usize];
            let mut lost = 0u64;
            while freed < budget && over() {
                let Some((bytes, undelivered)) = s.drop_front("memory_limit") else {
                    break;
                };
                freed += bytes;
                WorkerStats::add(&st.memory_trims, 1);
                if undelivered {
                    WorkerStats::add(&st.dropped, 1);
                    lost += 1;
                }
            }
            s.log.compact();
            if lost > 0 && !self.budget_dropping {
                self.budget_dropping = true;
                warn_budget(s, hard, lost);
            }
            if s.log.len() == 0 {
                self.held_order.advance();
            }
        }
        freed
    }

    /// A held session of this worker, held since `mine` (monotonic ms), is to
    /// make room for `bytes` it just received: if another worker holds a
    /// client gone longer, asks that worker to drop `bytes` of its held
    /// clients' messages instead, and returns true. Returns false (this
    /// worker makes the room itself) when no worker holds an older client,
    /// or when the one that does has not yet done an eighth of the limit
    /// asked of it.
    pub(super) fn ask_older_worker(&mut self, mine: u64, bytes: usize) -> bool {
        if self.shared.stats.len() < 2 || bytes == 0 {
            return false;
        }
        let Some(w) = self.oldest_other(mine) else {
            return false;
        };
        let cap = (self.shared.config.hold_total_bytes / 8) as u64;
        let pending = self.shared.stats[w].evict_asked.load(Ordering::Relaxed);
        if pending != 0 && pending.saturating_add(bytes as u64) > cap {
            return false;
        }
        self.ask(w, bytes);
        true
    }

    /// The other worker whose longest-held client became held the earliest,
    /// before `before` (monotonic ms), as the workers last published it.
    fn oldest_other(&self, before: u64) -> Option<usize> {
        self.shared
            .stats
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != self.id)
            .map(|(i, st)| (st.oldest_held.load(Ordering::Relaxed), i))
            .filter(|&(since, _)| since != 0 && since < before)
            .min()
            .map(|(_, i)| i)
    }

    /// Asks worker `w` to drop `bytes` of its held clients' messages, and
    /// wakes it at the end of this iteration.
    fn ask(&mut self, w: usize, bytes: usize) {
        // The asked worker drops only while the node is past the limit, so it
        // must see the bytes that made this worker ask: publish the tally
        // before the ask (the ask's Release pairs with its Acquire).
        self.publish_retained();
        self.shared.stats[w]
            .evict_asked
            .fetch_add(bytes as u64, Ordering::Release);
        self.wakes[w] = true;
    }

    /// End of a loop iteration: drops what other workers asked of this one
    /// (see [`Worker::ask_older_worker`]), then publishes when this worker's
    /// longest-held client became held. What it could not drop (its held
    /// clients had less than asked) is asked of the worker with the next
    /// longest-held client, if the node is still past the limit.
    pub(super) fn serve_evictions(&mut self) {
        if self.shared.stats.len() < 2 {
            return;
        }
        let hard = self.shared.config.hold_total_bytes;
        let slot = &self.shared.stats[self.id].evict_asked;
        // A load first: a swap on every iteration would be a locked
        // instruction per iteration for nothing.
        if slot.load(Ordering::Relaxed) != 0 {
            let asked = slot.swap(0, Ordering::Acquire);
            self.others_retained = self.published_by_others();
            let asked = usize::try_from(asked).unwrap_or(usize::MAX);
            let short = asked.saturating_sub(self.evict_held(hard, asked));
            if short > 0 && self.node_retained() > hard {
                if let Some(w) = self.oldest_other(u64::MAX) {
                    self.ask(w, short);
                }
            }
        }
        let sessions = &self.sessions.slab;
        self.held_order.prune(|m| is_held(sessions, m));
        // Near the limit, the longest-held client that still has messages;
        // otherwise the longest-held one (kept O(1) while nothing is evicted),
        // and the next episode of pressure starts from it and warns again (as
        // in `trim`, for a worker whose clients receive nothing).
        let oldest = if self.node_retained() > super::deliver::soft_limit(&self.shared.config) {
            self.oldest_with_messages()
        } else {
            self.held_order.rewind();
            self.budget_dropping = false;
            self.held_order.at_cursor().map_or(0, |(_, _, since)| since)
        };
        let slot = &self.shared.stats[self.id].oldest_held;
        if slot.load(Ordering::Relaxed) != oldest {
            slot.store(oldest, Ordering::Relaxed);
        }
    }

    /// When the session at the eviction cursor became held, after moving the
    /// cursor past sessions that are no longer held or retain nothing (they
    /// have nothing to give in this episode of memory pressure, as in
    /// [`Worker::evict_held`]); 0 if there is none.
    fn oldest_with_messages(&mut self) -> u64 {
        while let Some(mark) = self.held_order.at_cursor() {
            let has = is_held(&self.sessions.slab, mark)
                && self.sessions.slab[mark.0 as usize].log.len() > 0;
            if has {
                return mark.2;
            }
            self.held_order.advance();
        }
        0
    }
}

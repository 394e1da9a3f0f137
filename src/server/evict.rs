//! The node's retained bytes (each worker's tally, published once per loop
//! iteration) and, past `--hold-total-bytes`, which held clients lose their
//! messages. The
//! client held the longest goes first, node-wide: each worker evicts from its
//! own held sessions in the order they became held ([`HeldOrder`]; the
//! rules are [`Relay`]'s), and when
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
//! [`Relay`]: crate::relay::core::Relay

use std::sync::atomic::Ordering;

use super::worker::Worker;
use super::Shared;
use crate::relay::core::Board;
use crate::relay::retained;

/// The other workers as worker `id` sees them: their published atomics, and
/// the wake-ups it owes at the end of its iteration.
pub(super) struct WorkerBoard<'a> {
    shared: &'a Shared,
    id: usize,
    wakes: &'a mut [bool],
}

impl<'a> WorkerBoard<'a> {
    pub fn new(shared: &'a Shared, id: usize, wakes: &'a mut [bool]) -> WorkerBoard<'a> {
        WorkerBoard { shared, id, wakes }
    }
}

impl Board for WorkerBoard<'_> {
    fn shared(&self) -> bool {
        self.shared.stats.len() > 1
    }

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

    fn asked_of(&self, w: usize) -> u64 {
        self.shared.stats[w].evict_asked.load(Ordering::Relaxed)
    }

    fn ask(&mut self, w: usize, bytes: usize) {
        // The asked worker drops only while the node is past the limit, so it
        // must see the bytes that made this worker ask: publish the tally
        // before the ask (the ask's Release pairs with its Acquire).
        publish_retained(self.shared, self.id);
        self.shared.stats[w]
            .evict_asked
            .fetch_add(bytes as u64, Ordering::Release);
        self.wakes[w] = true;
    }
}

/// Publishes worker `id`'s retained bytes and messages (its thread-local
/// tally) for the other workers and the admin thread.
fn publish_retained(shared: &Shared, id: usize) {
    let (bytes, entries) = retained::thread_tally();
    let st = &shared.stats[id];
    st.retained_bytes.store(bytes as u64, Ordering::Relaxed);
    st.retained_messages
        .store(entries as u64, Ordering::Relaxed);
}

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

    /// Publishes this worker's retained bytes and messages, and what its
    /// relay counted, for the other workers and the admin thread.
    pub(super) fn publish_retained(&mut self) {
        publish_retained(&self.shared, self.id);
        let c = self.relay.take_counters();
        let st = &self.shared.stats[self.id];
        if c.dropped > 0 {
            super::stats::WorkerStats::add(&st.dropped, c.dropped);
        }
        if c.memory_trims > 0 {
            super::stats::WorkerStats::add(&st.memory_trims, c.memory_trims);
        }
    }

    /// Publishes how many sessions this worker has and how many are held:
    /// called where they change, before anything is written about it.
    pub(super) fn publish_sessions(&self) {
        let st = &self.shared.stats[self.id];
        st.sessions
            .store(self.relay.len() as u64, Ordering::Relaxed);
        st.held.store(self.relay.held() as u64, Ordering::Relaxed);
    }

    /// End of a loop iteration: drops what other workers asked of this one
    /// (see [`Relay::serve_evictions`](crate::relay::core::Relay::serve_evictions)),
    /// then publishes when this worker's longest-held client became held.
    pub(super) fn serve_evictions(&mut self) {
        if self.shared.stats.len() < 2 {
            return;
        }
        let slot = &self.shared.stats[self.id].evict_asked;
        // A load first: a swap on every iteration would be a locked
        // instruction per iteration for nothing.
        let mut asked = 0;
        if slot.load(Ordering::Relaxed) != 0 {
            let a = slot.swap(0, Ordering::Acquire);
            let others = self.published_by_others();
            self.relay.set_others_retained(others);
            asked = usize::try_from(a).unwrap_or(usize::MAX);
        }
        let mut board = WorkerBoard::new(&self.shared, self.id, &mut self.wakes);
        let oldest = self.relay.serve_evictions(asked, &mut board);
        let slot = &self.shared.stats[self.id].oldest_held;
        if slot.load(Ordering::Relaxed) != oldest {
            slot.store(oldest, Ordering::Relaxed);
        }
    }
}

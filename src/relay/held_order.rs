//! The order in which a worker's sessions became held, oldest first. When
//! retained messages pass `--hold-total-bytes`, the clients that have been
//! gone the longest (the least likely to come back) lose their messages
//! first (`Worker::evict_held`). Pure bookkeeping, no IO.

use std::collections::VecDeque;

use slab::Slab;

use super::session::Session;

/// One session becoming held: its slab index, generation and the monotonic
/// ms it became held at. An entry is current while the session it names is
/// still held since that time; otherwise it is stale and skipped.
pub(crate) type HeldMark = (u32, u32, u64);

/// Whether `mark` still names a held session of `sessions`.
pub(crate) fn is_held(sessions: &Slab<Session>, (sidx, gen, since): HeldMark) -> bool {
    sessions
        .get(sidx as usize)
        .is_some_and(|s| s.gen == gen && s.held_since == since)
}

/// Held sessions in the order they became held, with a cursor for eviction.
///
/// Entries are pushed when a session becomes held and removed lazily: stale
/// ones at the front go on every push (a held session is reaped or resumes
/// within `--hold`, so the front is never older than that), and when stale
/// entries behind the front make up more than half of the queue, a push
/// sweeps them all out (amortised O(1)): clients that drop and come back
/// again and again cost at most twice the held sessions, plus 64 entries.
#[derive(Debug, Default)]
pub(crate) struct HeldOrder {
    q: VecDeque<HeldMark>,
    /// Entries before this position had nothing left to drop when eviction
    /// passed them in the current episode of memory pressure.
    cursor: usize,
}

impl HeldOrder {
    /// Records that a session became held; `held` is how many sessions are
    /// held now (this one included). `current` tells whether an entry still
    /// names a held session; stale entries are dropped first (see the type).
    pub fn push(&mut self, mark: HeldMark, held: usize, current: impl Fn(HeldMark) -> bool) {
        self.prune(&current);
        if self.q.len() >= held.saturating_mul(2).saturating_add(64) {
            let cursor = self.cursor;
            let (mut i, mut before) = (0, 0);
            self.q.retain(|&m| {
                let keep = current(m);
                if keep && i < cursor {
                    before += 1;
                }
                i += 1;
                keep
            });
            self.cursor = before;
        }
        self.q.push_back(mark);
    }

    /// Drops stale entries from the front.
    pub fn prune(&mut self, current: impl Fn(HeldMark) -> bool) {
        while let Some(&m) = self.q.front() {
            if current(m) {
                break;
            }
            self.q.pop_front();
            self.cursor = self.cursor.saturating_sub(1);
        }
    }

    /// The entry at the cursor, if any (the next one eviction looks at).
    pub fn at_cursor(&self) -> Option<HeldMark> {
        self.q.get(self.cursor).copied()
    }

    /// Eviction is done with the entry at the cursor (its session has nothing
    /// left, or it is stale): the next one comes next.
    pub fn advance(&mut self) {
        self.cursor = (self.cursor + 1).min(self.q.len());
    }

    /// The episode of memory pressure is over: the next one starts again
    /// from the longest-held session.
    pub fn rewind(&mut self) {
        self.cursor = 0;
    }

    /// Entries in the queue (current or not yet pruned).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Gives back the queue's memory after a peak.
    pub fn shrink(&mut self) {
        if self.q.capacity() > 64 && self.q.len() < self.q.capacity() / 4 {
            self.q.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn stale_entries_leave_from_the_front_on_push() {
        let mut h = HeldOrder::default();
        let mut held: HashSet<HeldMark> = HashSet::new();
        for i in 0..5u32 {
            let m = (i, 1, 100 + u64::from(i));
            held.insert(m);
            h.push(m, held.len(), |m| held.contains(&m));
        }
        assert_eq!(h.len(), 5);
        // Sessions 0 and 1 resume, 3 expires: 0 and 1 go at the next push;
        // 3 stays until it reaches the front.
        for m in [(0, 1, 100), (1, 1, 101), (3, 1, 103)] {
            held.remove(&m);
        }
        let m = (9, 1, 200);
        held.insert(m);
        h.push(m, held.len(), |m| held.contains(&m));
        assert_eq!(h.len(), 4);
        assert_eq!(h.at_cursor(), Some((2, 1, 102)));
        held.remove(&(2, 1, 102));
        h.prune(|m| held.contains(&m));
        assert_eq!(
            h.at_cursor(),
            Some((4, 1, 104)),
            "3 was stale at the front too"
        );
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn the_same_slot_held_again_is_a_new_entry() {
        let mut h = HeldOrder::default();
        let mut held: HashSet<HeldMark> = HashSet::new();
        held.insert((7, 1, 10));
        h.push((7, 1, 10), held.len(), |m| held.contains(&m));
        // Resumed, then held again later: the first entry is stale.
        held.clear();
        held.insert((7, 1, 50));
        h.push((7, 1, 50), held.len(), |m| held.contains(&m));
        assert_eq!(h.len(), 1);
        assert_eq!(h.at_cursor(), Some((7, 1, 50)));
    }

    #[test]
    fn the_cursor_moves_forward_and_follows_pruning() {
        let mut h = HeldOrder::default();
        let mut held: HashSet<HeldMark> = HashSet::new();
        for i in 0..4u32 {
            let m = (i, 1, u64::from(i) + 1);
            held.insert(m);
            h.push(m, held.len(), |m| held.contains(&m));
        }
        h.advance();
        h.advance();
        assert_eq!(h.at_cursor(), Some((2, 1, 3)));
        // The front goes: the cursor still names the same entry.
        held.remove(&(0, 1, 1));
        h.prune(|m| held.contains(&m));
        assert_eq!(h.at_cursor(), Some((2, 1, 3)));
        h.advance();
        h.advance();
        h.advance();
        assert_eq!(h.at_cursor(), None, "past the end");
        h.rewind();
        assert_eq!(h.at_cursor(), Some((1, 1, 2)));
    }

    #[test]
    fn stale_entries_behind_a_long_held_front_are_swept() {
        let mut h = HeldOrder::default();
        let mut held: HashSet<HeldMark> = HashSet::new();
        // One client stays held; another drops and comes back 1,000 times.
        let front = (0, 1, 1);
        held.insert(front);
        h.push(front, held.len(), |m| held.contains(&m));
        let mut most = 0;
        for t in 2..1_002u64 {
            let m = (1, 1, t);
            held.insert(m);
            h.push(m, held.len(), |m| held.contains(&m));
            held.remove(&m);
            most = most.max(h.len());
        }
        assert!(most <= 2 * 2 + 64 + 1, "queue grew to {most}");
        assert_eq!(h.at_cursor(), Some(front), "the front is kept");
        // The cursor keeps naming the same entry across a sweep.
        let a = (2, 1, 5_000);
        held.insert(a);
        h.push(a, held.len(), |m| held.contains(&m));
        while h.at_cursor() != Some(a) {
            h.advance();
        }
        for t in 5_001..5_200u64 {
            let m = (3, 1, t);
            held.insert(m);
            h.push(m, held.len(), |m| held.contains(&m));
            held.remove(&m);
        }
        assert_eq!(h.at_cursor(), Some(a));
    }
}

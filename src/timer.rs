//! A hashed timer wheel: O(1) insert, expiry in slot order, lazy cancellation.
//!
//! Entries carry a small `Copy` payload (for example a slab key plus a
//! generation). There is no remove: the owner cancels a timer by making the
//! payload stale (bumping a generation or changing a stored deadline) and
//! ignores stale payloads when they fire. Time is passed in as milliseconds
//! from an arbitrary monotonic origin.

/// A hashed timer wheel with `slots` buckets of `tick_ms` each.
pub struct TimerWheel<T: Copy> {
    _p: std::marker::PhantomData<T>,
}

impl<T: Copy> TimerWheel<T> {
    /// A wheel whose clock starts at `now_ms`. `tick_ms` >= 1, `slots` >= 1.
    pub fn new(now_ms: u64, tick_ms: u64, slots: usize) -> Self {
        let _ = (now_ms, tick_ms, slots);
        todo!()
    }

    /// Schedules `payload` to fire at `deadline_ms` (rounded up to the next tick;
    /// a deadline in the past fires on the next [`advance`](Self::advance)).
    pub fn insert(&mut self, deadline_ms: u64, payload: T) {
        let _ = (deadline_ms, payload);
        todo!()
    }

    /// Moves the clock to `now_ms` and appends every payload whose deadline is
    /// `<= now_ms` to `fired` (in deadline order by tick). Work is proportional
    /// to the ticks passed (capped at one lap of the wheel) plus the entries
    /// examined in those slots.
    pub fn advance(&mut self, now_ms: u64, fired: &mut Vec<T>) {
        let _ = (now_ms, fired);
        todo!()
    }

    /// Milliseconds from `now_ms` until the next tick that has at least one
    /// entry in its slot (an upper bound on when `advance` will next fire
    /// something), or `None` if the wheel is empty.
    pub fn next_timeout_ms(&self, now_ms: u64) -> Option<u64> {
        let _ = now_ms;
        todo!()
    }

    /// Number of scheduled entries (including stale ones not yet fired).
    pub fn len(&self) -> usize {
        todo!()
    }

    /// True if nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

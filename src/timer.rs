//! A hashed timer wheel: O(1) insert, expiry in slot order, lazy cancellation.
//!
//! Entries carry a small `Copy` payload (for example a slab key plus a
//! generation). The owner usually cancels a timer by making the payload stale
//! (bumping a generation or changing a stored deadline) and ignores stale
//! payloads when they fire; an owner that goes away for good can also remove
//! its entry with [`TimerWheel::cancel`] (cost: one slot). Time is passed in as milliseconds
//! from an arbitrary monotonic origin.
//!
//! Layout: time is cut into ticks of `tick_ms`; an entry due at tick `t` lives
//! in slot `t % slots` together with its tick, so one slot can hold entries of
//! several laps. [`TimerWheel::advance`] visits the slots of the ticks that
//! passed and fires only the entries whose tick has been reached; the others
//! stay for a later lap. Deadlines are rounded *up* to a tick boundary, so an
//! entry never fires before its deadline and fires at most one tick late
//! (relative to the times passed to `advance`).

/// A slot whose capacity exceeds this is shrunk once it is mostly empty, so
/// memory is returned after a burst of timers.
const SHRINK_THRESHOLD: usize = 8;

/// A hashed timer wheel with `slots` buckets of `tick_ms` each.
pub struct TimerWheel<T: Copy> {
    /// `slots[t % slots.len()]` holds `(t, payload)` for entries due at tick `t`.
    slots: Vec<Vec<(u64, T)>>,
    /// One bit per slot, set while the slot is not empty, so that finding the
    /// next non-empty slot scans `slots / 64` words instead of every slot.
    occupied: Vec<u64>,
    /// `(deadline_ms, payload)` for entries inserted with a deadline at or
    /// before the wheel's clock; they fire on the very next `advance`, whatever
    /// time it is given.
    overdue: Vec<(u64, T)>,
    /// Width of one tick in milliseconds (>= 1).
    tick_ms: u64,
    /// The wheel's clock: the largest `now_ms` seen so far.
    now_ms: u64,
    /// The last tick already processed (`now_ms / tick_ms`).
    current_tick: u64,
    /// Number of scheduled entries, in `slots` and `overdue`.
    len: usize,
}

impl<T: Copy> TimerWheel<T> {
    /// A wheel whose clock starts at `now_ms`. `tick_ms` >= 1, `slots` >= 1.
    ///
    /// Out-of-range arguments are clamped to 1 rather than panicking.
    pub fn new(now_ms: u64, tick_ms: u64, slots: usize) -> Self {
        let tick_ms = tick_ms.max(1);
        let slots = slots.max(1);
        TimerWheel {
            slots: (0..slots).map(|_| Vec::new()).collect(),
            occupied: vec![0; slots.div_ceil(64)],
            overdue: Vec::new(),
            tick_ms,
            now_ms,
            current_tick: now_ms / tick_ms,
            len: 0,
        }
    }

    /// Schedules `payload` to fire at `deadline_ms` (rounded up to the next tick;
    /// a deadline in the past fires on the next [`advance`](Self::advance)).
    ///
    /// "The past" is relative to the wheel's clock, i.e. the creation time or
    /// the latest `now_ms` given to `advance`. A deadline in the last partial
    /// tick of the `u64` range (whose rounded-up boundary exceeds `u64::MAX`)
    /// never fires: it is treated as "never" rather than fired early.
    pub fn insert(&mut self, deadline_ms: u64, payload: T) {
        self.len += 1;
        if deadline_ms <= self.now_ms {
            self.overdue.push((deadline_ms, payload));
            return;
        }
        // deadline_ms > now_ms >= current_tick * tick_ms, so the rounded-up
        // tick is already > current_tick; the `max` only documents that.
        let tick = deadline_ms
            .div_ceil(self.tick_ms)
            .max(self.current_tick.saturating_add(1));
        let idx = self.slot_index(tick);
        self.slots[idx].push((tick, payload));
        self.occupied[idx / 64] |= 1 << (idx % 64);
    }

    /// Moves the clock to `now_ms` and appends every payload whose deadline is
    /// `<= now_ms` to `fired` (in deadline order by tick). Work is proportional
    /// to the ticks passed (capped at one lap of the wheel) plus the entries
    /// examined in those slots.
    ///
    /// Entries due at the same tick fire in insertion order. A `now_ms` earlier
    /// than the wheel's clock is treated as "no time passed" (overdue entries
    /// still fire).
    pub fn advance(&mut self, now_ms: u64, fired: &mut Vec<T>) {
        // Overdue entries were due at or before the old clock, hence before
        // anything still in the slots (all due after the old clock). They were
        // appended in insertion order; a stable sort puts them in deadline order.
        if !self.overdue.is_empty() {
            self.len -= self.overdue.len();
            self.overdue.sort_by_key(|&(deadline, _)| deadline);
            fired.extend(self.overdue.drain(..).map(|(_, p)| p));
            shrink_if_sparse(&mut self.overdue);
        }

        if now_ms <= self.now_ms {
            return;
        }
        self.now_ms = now_ms;
        let target = now_ms / self.tick_ms;
        if target <= self.current_tick {
            return;
        }
        let start = self.current_tick + 1;
        self.current_tick = target;
        if self.len == 0 {
            return;
        }

        let n = self.slots.len() as u64;
        if target - start + 1 >= n {
            // A full lap (or more) passed: every slot is visited once. Slots
            // are not visited in tick order, so sort the batch by tick (the
            // sort is stable, keeping insertion order within a tick).
            let mut batch: Vec<(u64, T)> = Vec::new();
            for (i, slot) in self.slots.iter_mut().enumerate() {
                fire_slot(slot, target, |tick, p| batch.push((tick, p)));
                mark_emptied(&mut self.occupied, i, slot);
            }
            batch.sort_by_key(|&(tick, _)| tick);
            self.len -= batch.len();
            fired.extend(batch.into_iter().map(|(_, p)| p));
        } else {
            // Fewer ticks than slots: each visited slot can only hold due
            // entries for exactly its tick (earlier laps already fired), so
            // visiting in tick order yields tick order.
            let before = fired.len();
            for tick in start..=target {
                let idx = self.slot_index(tick);
                fire_slot(&mut self.slots[idx], target, |_, p| fired.push(p));
                mark_emptied(&mut self.occupied, idx, &self.slots[idx]);
            }
            self.len -= fired.len() - before;
        }
    }

    /// Milliseconds from `now_ms` until the next tick that has at least one
    /// entry in its slot (an upper bound on when `advance` will next fire
    /// something), or `None` if the wheel is empty.
    ///
    /// The slot found may only hold entries for a later lap, in which case the
    /// caller wakes up early and finds nothing to fire; it never wakes up late.
    /// Returns `Some(0)` if something is already due. Cost: O(slots) in the
    /// worst case (a scan of at most one lap of mostly empty slots).
    pub fn next_timeout_ms(&self, now_ms: u64) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        if !self.overdue.is_empty() {
            return Some(0);
        }
        let start = self.current_tick.saturating_add(1);
        let first = self.slot_index(start);
        let ahead = self.next_occupied(first)?;
        let tick = start.saturating_add(ahead as u64);
        Some(tick.saturating_mul(self.tick_ms).saturating_sub(now_ms))
    }

    /// How many slots after `from` (0 = `from` itself, wrapping around) the
    /// first non-empty slot is, by scanning the occupancy bitmap a word at a time.
    fn next_occupied(&self, from: usize) -> Option<usize> {
        let n = self.slots.len();
        // The first occupied slot in [lo, hi).
        let first_in = |lo: usize, hi: usize| -> Option<usize> {
            let mut i = lo;
            while i < hi {
                let w = i / 64;
                let word = self.occupied[w] >> (i % 64);
                if word != 0 {
                    let f = i + word.trailing_zeros() as usize;
                    return (f < hi).then_some(f);
                }
                i = (w + 1) * 64;
            }
            None
        };
        if let Some(f) = first_in(from, n) {
            return Some(f - from);
        }
        first_in(0, from).map(|f| f + n - from)
    }

    /// Removes one entry that was inserted with `deadline_ms` and whose payload
    /// matches `is_it`, if it has not fired yet; returns whether one was
    /// removed. Only the slot of that deadline (or the overdue list) is
    /// searched, so the cost is the length of one slot. Entries due at the same
    /// tick keep their relative order.
    ///
    /// Lazy cancellation (a stale payload ignored when it fires) stays valid;
    /// this is for owners that go away for good (a closed connection), so that
    /// their entries do not hold memory until they would have fired.
    pub fn cancel(&mut self, deadline_ms: u64, is_it: impl Fn(&T) -> bool) -> bool {
        let tick = deadline_ms.div_ceil(self.tick_ms);
        if tick > self.current_tick {
            let idx = self.slot_index(tick);
            let slot = &mut self.slots[idx];
            if let Some(i) = slot.iter().position(|(t, p)| *t == tick && is_it(p)) {
                slot.remove(i);
                shrink_if_sparse(slot);
                mark_emptied(&mut self.occupied, idx, slot);
                self.len -= 1;
                return true;
            }
        }
        if let Some(i) = self
            .overdue
            .iter()
            .position(|(d, p)| *d == deadline_ms && is_it(p))
        {
            self.overdue.remove(i);
            self.len -= 1;
            return true;
        }
        false
    }

    /// Gives back memory held by slots after a burst: empty slots release
    /// their storage, others shrink to fit. O(slots); meant to run rarely.
    pub fn shrink(&mut self) {
        for slot in &mut self.slots {
            if slot.is_empty() {
                if slot.capacity() > 0 {
                    *slot = Vec::new();
                }
            } else if slot.capacity() > 2 * slot.len() {
                slot.shrink_to_fit();
            }
        }
    }

    /// Number of scheduled entries (including stale ones not yet fired).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Index of the slot holding entries due at `tick`.
    fn slot_index(&self, tick: u64) -> usize {
        // The remainder is < slots.len(), so it fits in usize.
        (tick % self.slots.len() as u64) as usize
    }
}

/// Clears slot `idx`'s bit in the occupancy bitmap if `slot` is now empty.
fn mark_emptied<E>(occupied: &mut [u64], idx: usize, slot: &[E]) {
    if slot.is_empty() {
        occupied[idx / 64] &= !(1 << (idx % 64));
    }
}

/// Removes the entries of `slot` due at or before `target`, passing each to
/// `on_fire` in insertion order; later-lap entries stay in place.
fn fire_slot<T: Copy>(slot: &mut Vec<(u64, T)>, target: u64, mut on_fire: impl FnMut(u64, T)) {
    if slot.is_empty() {
        return;
    }
    slot.retain(|&(tick, payload)| {
        if tick <= target {
            on_fire(tick, payload);
            false
        } else {
            true
        }
    });
    shrink_if_sparse(slot);
}

/// Gives memory back after a burst: a vector that grew past
/// [`SHRINK_THRESHOLD`] and is now at most a quarter full is shrunk (freed
/// entirely when empty).
fn shrink_if_sparse<E>(v: &mut Vec<E>) {
    if v.capacity() > SHRINK_THRESHOLD && v.len() <= v.capacity() / 4 {
        v.shrink_to(v.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// xorshift64*: tiny deterministic PRNG for the property tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
    }

    fn advance(w: &mut TimerWheel<u32>, now: u64) -> Vec<u32> {
        let mut fired = Vec::new();
        w.advance(now, &mut fired);
        fired
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let mut w = TimerWheel::new(0, 10, 8);
        w.insert(25, 1);
        assert!(advance(&mut w, 24).is_empty());
        assert!(
            advance(&mut w, 29).is_empty(),
            "rounded up to tick 3 (30 ms)"
        );
        assert_eq!(advance(&mut w, 30), vec![1]);
        assert!(w.is_empty());

        w.insert(40, 2); // exactly on a tick boundary
        assert!(advance(&mut w, 39).is_empty());
        assert_eq!(advance(&mut w, 40), vec![2]);
    }

    #[test]
    fn deadlines_multiple_laps_ahead() {
        // 4 slots of 10 ms: one lap is 40 ms.
        let mut w = TimerWheel::new(0, 10, 4);
        w.insert(10, 1);
        w.insert(50, 2); // same slot as 10, one lap later
        w.insert(90, 3); // two laps later
        w.insert(170, 4); // four laps later
        assert_eq!(w.len(), 4);
        let mut now = 0;
        let mut log = Vec::new();
        while now < 200 {
            now += 10;
            for p in advance(&mut w, now) {
                log.push((p, now));
            }
        }
        assert_eq!(log, vec![(1, 10), (2, 50), (3, 90), (4, 170)]);
        assert!(w.is_empty());
    }

    #[test]
    fn past_deadline_fires_on_next_advance() {
        let mut w = TimerWheel::new(1_000, 10, 16);
        w.insert(500, 1);
        w.insert(1_000, 2); // == clock: also "in the past"
        assert_eq!(w.next_timeout_ms(1_000), Some(0));
        // Even an advance that does not move the clock fires them.
        assert_eq!(advance(&mut w, 1_000), vec![1, 2]);
        assert!(w.is_empty());

        // Inserted mid-tick with a deadline just passed.
        assert!(advance(&mut w, 1_005).is_empty());
        w.insert(1_003, 3);
        assert_eq!(advance(&mut w, 1_006), vec![3]);
        // A deadline later in the current tick waits for the next boundary.
        w.insert(1_008, 4);
        assert!(advance(&mut w, 1_009).is_empty());
        assert_eq!(advance(&mut w, 1_010), vec![4]);
    }

    #[test]
    fn large_jump_fires_everything_due_in_order() {
        let mut w = TimerWheel::new(0, 1, 8);
        // Inserted in scrambled order across several laps.
        for (d, p) in [
            (70, 7),
            (3, 0),
            (9, 1),
            (25, 4),
            (11, 2),
            (12, 3),
            (33, 5),
            (64, 6),
        ] {
            w.insert(d, p);
        }
        w.insert(10_000, 99);
        assert_eq!(advance(&mut w, 1_000), vec![0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(w.len(), 1);
        assert!(advance(&mut w, 9_999).is_empty());
        assert_eq!(advance(&mut w, 1_000_000), vec![99]);
        assert!(w.is_empty());
    }

    #[test]
    fn same_tick_keeps_insertion_order() {
        let mut w = TimerWheel::new(0, 10, 4);
        for p in 0..5 {
            w.insert(31 + p as u64, p); // all round up to 40
        }
        assert_eq!(advance(&mut w, 45), vec![0, 1, 2, 3, 4]);
        for p in 0..5 {
            w.insert(100 + p as u64 * 100, p);
        }
        assert_eq!(advance(&mut w, 10_000), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn len_accounting() {
        let mut w = TimerWheel::new(0, 5, 3);
        assert!(w.is_empty());
        assert_eq!(w.next_timeout_ms(0), None);
        for i in 0..10u32 {
            w.insert(u64::from(i) * 7, i);
        }
        assert_eq!(w.len(), 10);
        let mut total = 0;
        for now in [0, 6, 13, 14, 40, 41, 100] {
            total += advance(&mut w, now).len();
            assert_eq!(w.len() + total, 10);
        }
        assert!(w.is_empty());
        assert_eq!(w.next_timeout_ms(100), None);
    }

    #[test]
    fn next_timeout_values() {
        let mut w = TimerWheel::new(1_000, 10, 8);
        w.insert(1_035, 1);
        assert_eq!(w.next_timeout_ms(1_000), Some(40)); // tick at 1040
        assert_eq!(w.next_timeout_ms(1_033), Some(7));
        assert_eq!(w.next_timeout_ms(2_000), Some(0), "late caller: fire now");
        w.insert(1_011, 2);
        assert_eq!(w.next_timeout_ms(1_000), Some(20)); // tick at 1020
        assert_eq!(advance(&mut w, 1_020), vec![2]);
        assert_eq!(w.next_timeout_ms(1_020), Some(20));
        assert_eq!(advance(&mut w, 1_040), vec![1]);
        assert_eq!(w.next_timeout_ms(1_040), None);

        // An entry several laps away: the answer never exceeds the real wait.
        w.insert(1_040 + 500, 3);
        let t = w.next_timeout_ms(1_040).expect("non-empty");
        assert!(t > 0 && t <= 500, "{t}");
    }

    #[test]
    fn huge_and_extreme_values() {
        let mut w = TimerWheel::new(u64::MAX - 100, 1, 5);
        w.insert(u64::MAX, 1);
        let t = w.next_timeout_ms(u64::MAX - 100).expect("non-empty");
        assert!(t > 0 && t <= 100, "{t}");
        assert!(advance(&mut w, u64::MAX - 50).is_empty());
        assert_eq!(advance(&mut w, u64::MAX), vec![1]);
        w.insert(u64::MAX, 2);
        assert_eq!(advance(&mut w, u64::MAX), vec![2]);

        // u64::MAX is 1 (mod 7): its tick boundary is not representable, so
        // the entry never fires (rather than firing early) and acts as "never".
        let mut w = TimerWheel::new(u64::MAX - 100, 7, 5);
        w.insert(u64::MAX, 1);
        w.insert(u64::MAX - 1, 2);
        assert_eq!(advance(&mut w, u64::MAX), vec![2]);
        assert_eq!(w.len(), 1);
        assert_eq!(w.next_timeout_ms(u64::MAX), Some(0));

        // Degenerate parameters are clamped instead of panicking.
        let mut w = TimerWheel::new(0, 0, 0);
        w.insert(3, 1);
        assert!(advance(&mut w, 2).is_empty());
        assert_eq!(advance(&mut w, 3), vec![1]);
    }

    #[test]
    fn time_going_backwards_is_ignored() {
        let mut w = TimerWheel::new(100, 10, 4);
        w.insert(150, 1);
        assert!(advance(&mut w, 120).is_empty());
        assert!(advance(&mut w, 50).is_empty());
        assert_eq!(advance(&mut w, 150), vec![1]);
    }

    #[test]
    fn memory_returned_after_burst() {
        let mut w = TimerWheel::new(0, 1, 4);
        for i in 0..10_000u32 {
            w.insert(2, i);
        }
        assert!(w.slots[2].capacity() >= 10_000);
        assert_eq!(advance(&mut w, 2).len(), 10_000);
        assert!(w.slots[2].capacity() <= SHRINK_THRESHOLD);

        for i in 0..10_000u32 {
            w.insert(1, i); // in the past: overdue list
        }
        assert_eq!(advance(&mut w, 2).len(), 10_000);
        assert!(w.overdue.capacity() <= SHRINK_THRESHOLD);
    }

    /// Random deadlines, random advance steps (including jumps of several
    /// laps): nothing fires early, nothing is overdue after an advance,
    /// batches are tick-ordered, `len` and `next_timeout_ms` stay consistent.
    #[test]
    fn property_random_schedules() {
        let mut fired_total = 0usize;
        for seed in [0x9E37_79B9_7F4A_7C15u64, 1, 0xDEAD_BEEF] {
            let mut rng = Rng(seed);
            for &(tick_ms, slots) in &[(1u64, 1usize), (1, 8), (10, 3), (7, 16), (3, 64), (50, 5)] {
                let lap = tick_ms * slots as u64;
                let start = rng.below(1_000_000);
                let mut w = TimerWheel::new(start, tick_ms, slots);
                let mut now = start;
                // id -> (deadline, time at which advance must fire it: the next
                // advance for a deadline already past when inserted, else the
                // deadline rounded up to a tick boundary).
                let mut pending: HashMap<u32, (u64, u64)> = HashMap::new();
                let mut next_id = 0u32;
                for _round in 0..500 {
                    for _ in 0..rng.below(8) {
                        let deadline = match rng.below(10) {
                            0 => now.saturating_sub(rng.below(3 * lap + 1)), // past
                            1..=2 => now + rng.below(6 * lap + 1),           // several laps
                            _ => now + rng.below(lap + 1),
                        };
                        let due = if deadline <= now {
                            now
                        } else {
                            deadline.div_ceil(tick_ms) * tick_ms
                        };
                        w.insert(deadline, next_id);
                        pending.insert(next_id, (deadline, due));
                        next_id += 1;
                    }
                    assert_eq!(w.len(), pending.len());

                    // next_timeout_ms must never let the caller sleep past the
                    // earliest point at which something becomes due.
                    let earliest = pending.values().map(|&(_, due)| due).min();
                    match (w.next_timeout_ms(now), earliest) {
                        (None, None) => {}
                        (Some(t), Some(e)) => {
                            assert!(now + t <= e, "sleep {t} from {now} past {e}")
                        }
                        (got, want) => panic!("next_timeout {got:?} vs earliest {want:?}"),
                    }

                    let step = match rng.below(20) {
                        0 => rng.below(5 * lap + 1), // jump over whole laps
                        1 => 0,
                        _ => rng.below(2 * tick_ms + 1),
                    };
                    now += step;
                    let fired = advance(&mut w, now);
                    fired_total += fired.len();
                    let mut last_tick = 0;
                    for id in fired {
                        let (deadline, due) =
                            pending.remove(&id).expect("fired once, only scheduled ids");
                        assert!(deadline <= now, "fired early: deadline {deadline} at {now}");
                        assert!(due <= now);
                        let tick = deadline.div_ceil(tick_ms);
                        assert!(tick >= last_tick, "batch out of tick order");
                        last_tick = tick;
                    }
                    for &(deadline, due) in pending.values() {
                        assert!(
                            due > now,
                            "deadline {deadline} (due {due}) still pending at {now}"
                        );
                    }
                    assert_eq!(w.len(), pending.len());
                }
                // Drain everything.
                now += 10 * lap + 1_000_000;
                for id in advance(&mut w, now) {
                    assert!(pending.remove(&id).is_some());
                }
                assert!(pending.is_empty() && w.is_empty());
            }
        }
        assert!(fired_total > 10_000, "{fired_total}");
    }

    #[test]
    fn cancel_removes_only_the_matching_entry() {
        let mut w = TimerWheel::new(0, 10, 8);
        w.insert(25, 1);
        w.insert(25, 2);
        w.insert(25 + 80, 3); // same slot, next lap
        w.insert(25, 4);
        assert_eq!(w.len(), 4);
        assert!(!w.cancel(25, |&p| p == 3), "3 is due a lap later");
        assert!(w.cancel(105, |&p| p == 3));
        assert!(w.cancel(25, |&p| p == 2));
        assert!(!w.cancel(25, |&p| p == 2), "already removed");
        assert_eq!(w.len(), 2);
        assert_eq!(advance(&mut w, 200), vec![1, 4], "order kept");
        assert!(w.is_empty());
        assert!(!w.cancel(25, |&p| p == 1), "already fired");
    }

    #[test]
    fn cancel_overdue_entry() {
        let mut w = TimerWheel::new(100, 10, 8);
        w.insert(50, 7); // in the past: overdue
        w.insert(100, 8); // at the clock: overdue too
        assert!(w.cancel(50, |&p| p == 7));
        assert_eq!(w.len(), 1);
        assert_eq!(advance(&mut w, 100), vec![8]);
    }

    #[test]
    fn cancel_against_a_model() {
        // Random inserts, cancels and advances; what fires must be exactly the
        // inserted entries that were not cancelled, each at or after its deadline.
        let mut rng = Rng(0x5eed);
        let mut w = TimerWheel::new(0, 10, 16);
        let mut live: HashMap<u32, u64> = HashMap::new();
        let mut now = 0u64;
        for id in 0..5000u32 {
            match rng.below(4) {
                0 | 1 => {
                    let d = now + rng.below(500);
                    w.insert(d, id);
                    live.insert(id, d);
                }
                2 => {
                    if let Some((&victim, &d)) = live.iter().next() {
                        assert!(w.cancel(d, |&p| p == victim));
                        live.remove(&victim);
                    }
                }
                _ => {
                    now += rng.below(40);
                    for p in advance(&mut w, now) {
                        let d = live.remove(&p).expect("fired entry was live");
                        assert!(d <= now, "fired early");
                    }
                }
            }
            assert_eq!(w.len(), live.len());
        }
    }

    /// The slot scan `next_timeout_ms` did before the occupancy bitmap.
    fn next_timeout_by_scan(w: &TimerWheel<u32>, now_ms: u64) -> Option<u64> {
        if w.len == 0 {
            return None;
        }
        if !w.overdue.is_empty() {
            return Some(0);
        }
        let n = w.slots.len() as u64;
        let start = w.current_tick.saturating_add(1);
        (0..n)
            .map(|i| start.saturating_add(i))
            .find(|&tick| !w.slots[w.slot_index(tick)].is_empty())
            .map(|tick| tick.saturating_mul(w.tick_ms).saturating_sub(now_ms))
    }

    #[test]
    fn next_timeout_matches_a_full_scan() {
        for slots in [1usize, 7, 64, 100, 128, 4096] {
            let mut rng = Rng(slots as u64 * 7919 + 1);
            let mut w = TimerWheel::new(0, 10, slots);
            let mut now = 0u64;
            let mut live: Vec<(u32, u64)> = Vec::new();
            for id in 0..3000u32 {
                match rng.below(5) {
                    0 | 1 => {
                        let d = now + rng.below(slots as u64 * 25 + 50);
                        w.insert(d, id);
                        live.push((id, d));
                    }
                    2 if !live.is_empty() => {
                        let i = rng.below(live.len() as u64) as usize;
                        let (victim, d) = live.swap_remove(i);
                        w.cancel(d, |&p| p == victim);
                    }
                    _ => {
                        now += rng.below(slots as u64 * 10 + 30);
                        for p in advance(&mut w, now) {
                            live.retain(|&(q, _)| q != p);
                        }
                    }
                }
                let probe = now + rng.below(10);
                assert_eq!(
                    w.next_timeout_ms(probe),
                    next_timeout_by_scan(&w, probe),
                    "slots {slots}, step {id}"
                );
            }
        }
    }
}

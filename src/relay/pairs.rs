//! A lossy, fixed-size memory of recently noted conversation pairs, used to
//! pass a conversation note on at most about once per window per pair.
//!
//! Set-associative: a pair's 64-bit hash picks one set of 8 slots (low bits;
//! a set is one 64-byte cache line) and is recognised there by a 36-bit tag
//! (high bits); a slot also holds when the pair was last noted, in 64 ms
//! units. A look-up touches one cache line, which matters on the relay path:
//! a hash map of tens of thousands of pairs cost two cache misses per
//! message. Being lossy is safe in the direction it errs: a pair pushed out
//! of its set (the set's oldest entry goes) is only noted again early (an
//! extra note); a wrong "recent" needs a full tag match.

/// Sets (a power of two) x 8 slots x 8 bytes: 512 KiB per worker, allocated on first use.
const SETS: usize = 1 << 13;
/// Time unit of the stored stamp, in milliseconds.
const UNIT_MS: u64 = 64;
/// Bits of the stored stamp (2^28 x 64 ms, about 198 days, before it wraps).
const TIME_BITS: u32 = 28;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// One cache line of slots; 0 is an empty slot.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Set([u64; 8]);

/// See the module documentation.
#[derive(Default)]
pub(crate) struct RecentPairs {
    sets: Vec<Set>,
}

impl RecentPairs {
    /// True if the pair with hash `h` was not noted within `window_ms` before
    /// `now_ms`; it then counts as noted now.
    pub fn due(&mut self, h: u64, now_ms: u64, window_ms: u64) -> bool {
        if self.sets.is_empty() {
            self.sets = vec![Set::default(); SETS];
        }
        let set = &mut self.sets[(h as usize) & (SETS - 1)].0;
        let tag = h >> TIME_BITS;
        // Offset by one so that a slot written at the clock's start is not 0
        // ("empty"); an all-zero slot after a wrap only reads as empty (due).
        let stamp = (now_ms / UNIT_MS + 1) & TIME_MASK;
        let age = |slot: u64| stamp.wrapping_sub(slot & TIME_MASK) & TIME_MASK;
        let entry = (tag << TIME_BITS) | stamp;
        if let Some(slot) = set.iter_mut().find(|s| **s != 0 && **s >> TIME_BITS == tag) {
            if age(*slot).saturating_mul(UNIT_MS) < window_ms {
                return false;
            }
            *slot = entry;
            return true;
        }
        // Not there: take an empty slot, else the one noted longest ago.
        let victim = match set.iter().position(|s| *s == 0) {
            Some(i) => i,
            None => (0..set.len()).max_by_key(|&i| age(set[i])).unwrap_or(0),
        };
        set[victim] = entry;
        true
    }

    /// Forgets the pair with hash `h` (its next note is due at once).
    pub fn forget(&mut self, h: u64) {
        let tag = h >> TIME_BITS;
        if let Some(set) = self.sets.get_mut((h as usize) & (SETS - 1)) {
            for slot in set.0.iter_mut() {
                if *slot != 0 && *slot >> TIME_BITS == tag {
                    *slot = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_window() {
        let mut r = RecentPairs::default();
        let h = 0x1234_5678_9abc_def0;
        assert!(r.due(h, 10_000, 5_000));
        assert!(!r.due(h, 10_000, 5_000));
        assert!(!r.due(h, 14_000, 5_000));
        assert!(r.due(h, 15_100, 5_000), "window passed");
        assert!(!r.due(h, 15_200, 5_000));
    }

    #[test]
    fn forget_makes_it_due() {
        let mut r = RecentPairs::default();
        let h = 42 << 40 | 7;
        assert!(r.due(h, 1_000, 5_000));
        r.forget(h);
        assert!(r.due(h, 1_001, 5_000));
        // Forgetting another pair in the same slot leaves this one alone.
        r.forget(h ^ (1 << 50));
        assert!(!r.due(h, 1_002, 5_000));
    }

    #[test]
    fn a_full_set_evicts_the_oldest_and_never_suppresses() {
        let mut r = RecentPairs::default();
        // Nine pairs in the same set (same low bits), different tags.
        let pair = |i: u64| (i + 1) << 40 | 3;
        for i in 0..8 {
            assert!(r.due(pair(i), i * 100, 5_000));
        }
        for i in 0..8 {
            assert!(!r.due(pair(i), 900, 5_000), "all eight fit");
        }
        assert!(
            r.due(pair(8), 1_000, 5_000),
            "the ninth is not mistaken for another"
        );
        assert!(
            r.due(pair(0), 1_100, 5_000),
            "the oldest was evicted: noted again early"
        );
        assert!(!r.due(pair(7), 1_200, 5_000), "younger ones stay");
    }

    #[test]
    fn time_zero_and_clock_start_work() {
        let mut r = RecentPairs::default();
        assert!(r.due(77, 0, 5_000));
        assert!(!r.due(77, 10, 5_000));
    }
}

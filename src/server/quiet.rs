//! Noticing that a worker has gone quiet after a busy period, so that it can
//! give back what the busy period left cached (`Worker::settle`). Pure logic,
//! time passed in.

/// When a worker has gone quiet after being busy: the decision behind
/// `Worker::settle`, kept apart from the event loop so it can be tested.
#[derive(Debug, Clone, Copy)]
pub(super) struct QuietClock {
    /// Monotonic ms of the last iteration that had I/O events or envelopes.
    last_busy: u64,
    /// Busy since the last settle.
    unsettled: bool,
    /// How long without I/O counts as quiet.
    quiet_ms: u64,
}

impl QuietClock {
    /// A clock that starts settled (a new worker has nothing cached).
    pub fn new(now: u64, quiet_ms: u64) -> QuietClock {
        QuietClock {
            last_busy: now,
            unsettled: false,
            quiet_ms,
        }
    }

    /// Records one loop iteration at `now`; true if the worker should settle
    /// now (it was busy, and has had no I/O for `quiet_ms` since).
    pub fn tick(&mut self, now: u64, busy: bool) -> bool {
        if busy {
            self.last_busy = now;
            self.unsettled = true;
            return false;
        }
        if self.unsettled && now >= self.last_busy.saturating_add(self.quiet_ms) {
            self.unsettled = false;
            return true;
        }
        false
    }

    /// Milliseconds the event loop may sleep before the next `tick` is due,
    /// `None` if nothing is pending.
    pub fn timeout(&self, now: u64) -> Option<u64> {
        self.unsettled.then(|| {
            self.last_busy
                .saturating_add(self.quiet_ms)
                .saturating_sub(now)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::QuietClock;

    #[test]
    fn settles_once_after_each_busy_period() {
        let mut q = QuietClock::new(0, 500);
        // A new worker has nothing to give back: no deadline, no settle.
        assert_eq!(q.timeout(0), None);
        assert!(!q.tick(10_000, false));
        // Busy at 1,000: due 500 ms after the last busy iteration.
        assert!(!q.tick(1_000, true));
        assert_eq!(q.timeout(1_000), Some(500));
        assert!(!q.tick(1_200, true));
        assert_eq!(q.timeout(1_300), Some(400));
        assert!(!q.tick(1_699, false), "not quiet for 500 ms yet");
        assert!(q.tick(1_700, false), "quiet for 500 ms");
        // Once per busy period.
        assert_eq!(q.timeout(1_700), None);
        assert!(!q.tick(5_000, false));
        // A late loop (a long poll) still settles, with a zero timeout meanwhile.
        assert!(!q.tick(6_000, true));
        assert_eq!(q.timeout(9_000), Some(0));
        assert!(q.tick(9_000, false));
    }

    #[test]
    fn clock_extremes_do_not_overflow() {
        let mut q = QuietClock::new(0, u64::MAX);
        assert!(!q.tick(u64::MAX - 1, true));
        assert_eq!(q.timeout(u64::MAX - 1), Some(1));
        assert!(q.tick(u64::MAX, false));
    }
}

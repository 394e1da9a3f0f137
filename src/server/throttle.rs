//! Log lines that one event per connection would write, at most one per
//! `--log-throttle` per worker and kind.
//!
//! Refusals under overload (`--max-connections`, `--max-account-connections`)
//! and answers that did not come in time (the cluster or another worker is
//! down) happen once per connection: a reconnect storm or an outage would
//! write thousands of warnings a second, each a write to the log from the
//! event loop, when the node can least afford it. The first of a kind is
//! logged with its session id; the rest within the interval are counted, and
//! the count is logged with the next line of that kind or, if none comes, at
//! the worker's next housekeeping. Every one of them is still counted in
//! `switchboard_request_errors_total` and `switchboard_connections_closed_total`.

/// The kinds of per-connection warnings that are throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Noisy {
    /// A connection refused past `--max-connections`.
    Overloaded = 0,
    /// A connection refused past `--max-account-connections`.
    AccountLimit = 1,
    /// A request whose answer (from another worker or the cluster) did not come in time.
    NoAnswer = 2,
    /// A connection closed before its first request to make room.
    Evicted = 3,
    /// A connection refused past `--max-new-connections-per-address`.
    RateLimited = 4,
}

impl Noisy {
    /// Every kind, in index order.
    pub const ALL: [Noisy; 5] = [
        Noisy::Overloaded,
        Noisy::AccountLimit,
        Noisy::NoAnswer,
        Noisy::Evicted,
        Noisy::RateLimited,
    ];

    /// What the suppressed lines were about, for the summary line.
    pub fn what(self) -> &'static str {
        match self {
            Noisy::Overloaded => "connections refused past --max-connections",
            Noisy::AccountLimit => "connections refused past --max-account-connections",
            Noisy::NoAnswer => "requests answered 503 for want of an answer in time",
            Noisy::Evicted => "connections closed before their first request to make room",
            Noisy::RateLimited => "connections refused past --max-new-connections-per-address",
        }
    }
}

/// One kind's throttle (sans-IO: times in ms of a monotonic clock).
#[derive(Debug, Default)]
pub(super) struct LogThrottle {
    /// When the next line may be written.
    next_at: u64,
    /// Events not logged since the last line.
    suppressed: u64,
}

impl LogThrottle {
    /// An event at `now`: `Some(n)` if it is to be logged, `n` being how many
    /// were not logged before it; `None` (and counted) if not. With an
    /// interval of 0 every event is logged.
    pub fn allow(&mut self, now: u64, interval_ms: u64) -> Option<u64> {
        if interval_ms == 0 || now >= self.next_at {
            self.next_at = now.saturating_add(interval_ms);
            return Some(std::mem::take(&mut self.suppressed));
        }
        self.suppressed += 1;
        None
    }

    /// The count of events not logged, once the interval since the last line
    /// has passed (the summary no further event would carry); `None` if there
    /// is none or it is not yet time.
    pub fn flush(&mut self, now: u64, interval_ms: u64) -> Option<u64> {
        if self.suppressed == 0 || now < self.next_at {
            return None;
        }
        self.next_at = now.saturating_add(interval_ms);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The text a logged line ends with when `suppressed` lines of its kind were
/// not logged before it.
pub(super) fn suffix(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} more like this since the last such line, not logged)")
    }
}

impl super::worker::Worker {
    /// Whether a warning of `kind` is to be written now: `Some(suffix)` to end
    /// it with (naming how many of its kind were not logged before it), or
    /// `None` (counted) within `--log-throttle` of the last one.
    pub(super) fn noisy(&mut self, kind: Noisy) -> Option<String> {
        let interval = self.shared.config.log_throttle.as_millis() as u64;
        self.log_throttle[kind as usize]
            .allow(self.now, interval)
            .map(suffix)
    }

    /// Logs the counts of throttled warnings that no later line carried (from housekeeping).
    pub(super) fn flush_noisy(&mut self) {
        let interval = self.shared.config.log_throttle.as_millis() as u64;
        for kind in Noisy::ALL {
            if let Some(n) = self.log_throttle[kind as usize].flush(self.now, interval) {
                log::warn!(
                    "worker {}: {n} more {} since the last such line (not logged one by one)",
                    self.id,
                    kind.what()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_counted() {
        let mut t = LogThrottle::default();
        assert_eq!(t.allow(1_000, 10_000), Some(0));
        assert_eq!(t.allow(1_001, 10_000), None);
        assert_eq!(t.allow(5_000, 10_000), None);
        assert_eq!(t.flush(9_000, 10_000), None, "not yet time");
        assert_eq!(
            t.allow(11_000, 10_000),
            Some(2),
            "the next line carries the count"
        );
        assert_eq!(t.flush(30_000, 10_000), None, "nothing left to report");
    }

    #[test]
    fn a_count_no_later_line_carries_is_flushed_once() {
        let mut t = LogThrottle::default();
        assert_eq!(t.allow(0, 1_000), Some(0));
        assert_eq!(t.allow(10, 1_000), None);
        assert_eq!(t.flush(999, 1_000), None);
        assert_eq!(t.flush(1_000, 1_000), Some(1));
        assert_eq!(t.flush(5_000, 1_000), None);
        // The flush started a new interval: an event right after it is counted.
        assert_eq!(t.allow(1_500, 1_000), None);
        assert_eq!(t.allow(2_000, 1_000), Some(1));
    }

    #[test]
    fn interval_zero_logs_everything() {
        let mut t = LogThrottle::default();
        for now in [5, 5, 5, 6] {
            assert_eq!(t.allow(now, 0), Some(0));
        }
        assert_eq!(t.flush(7, 0), None);
    }

    #[test]
    fn suffix_names_the_count() {
        assert_eq!(suffix(0), "");
        assert!(suffix(3).contains("3 more"));
    }
}

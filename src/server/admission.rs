//! The rate of new connections per source address
//! (`--max-new-connections-per-address`), so that one address opening
//! connections in a loop cannot take over the node's budget of connections
//! that have not authenticated yet (`--max-unauthenticated`, `unauth`).
//!
//! A fixed table of [`SLOTS`] cells shared by every worker, whatever the
//! number of addresses: an address (an IPv6 one by its /64, which one client
//! usually holds whole) is hashed with a per-process random key to a cell,
//! which holds a GCRA "theoretical arrival time" (a token bucket in one
//! word): an address may open `rate` connections at once, then `rate` per
//! second. Two addresses that share a cell share its rate: with 8192 cells
//! that happens to an address with a chance of about one in 8192 per other
//! active address, and the random key keeps a flooder from choosing whom it
//! shares with. Each cell also counts the refusals since its last admitted
//! connection: past [`FLOOD_REFUSALS`], the address is over its rate many
//! times over, and its connections are closed at accept without an answer
//! (cheaper against a flood than an answer and a linger each).

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Cells in the table (8 bytes each: 64 KiB for the node).
pub const SLOTS: usize = 8192;
/// How much of the rate may come at once: one second's worth.
const BURST_US: u64 = 1_000_000;
/// Refusals since an address's last admitted connection past which its
/// connections are closed without an answer.
pub const FLOOD_REFUSALS: u64 = 8;
/// Bits of a cell that hold the arrival time (µs; 2^48 µs is 8.9 years).
const TIME_BITS: u32 = 48;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Within its address's rate.
    Yes,
    /// Over it: answer `429 rate_limited`, with `Retry-After` in seconds.
    Limited { retry_after_s: u64 },
    /// Far over it: close at once.
    Flood,
}

/// The per-address rate table (see the module documentation).
pub struct AddressRate {
    /// Microseconds between two connections at the sustained rate; 0 = off.
    interval_us: u64,
    slots: Box<[AtomicU64]>,
    key: std::collections::hash_map::RandomState,
}

impl AddressRate {
    /// A table for `per_second` new connections per address (0 = no limit,
    /// and no table).
    pub fn new(per_second: u32) -> AddressRate {
        let on = per_second > 0;
        AddressRate {
            interval_us: if on { 1_000_000 / per_second as u64 } else { 0 },
            slots: (0..if on { SLOTS } else { 0 })
                .map(|_| AtomicU64::new(0))
                .collect(),
            key: Default::default(),
        }
    }

    fn cell(&self, ip: IpAddr) -> &AtomicU64 {
        let h = match ip {
            IpAddr::V4(v4) => self.key.hash_one(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.key.hash_one(v4.octets()),
                None => self.key.hash_one(&v6.octets()[..8]),
            },
        };
        &self.slots[(h as usize) % self.slots.len()]
    }

    /// A new connection from `ip` at `now_us` (microseconds of a monotonic clock).
    pub fn check(&self, ip: IpAddr, now_us: u64) -> Admit {
        if self.slots.is_empty() {
            return Admit::Yes;
        }
        let now_us = now_us & TIME_MASK;
        let cell = self.cell(ip);
        let mut cur = cell.load(Ordering::Relaxed);
        loop {
            let (tat, refused) = (cur & TIME_MASK, cur >> TIME_BITS);
            let next = tat.max(now_us) + self.interval_us;
            let (new, verdict) = if next - now_us <= BURST_US {
                (next, Admit::Yes)
            } else if refused >= FLOOD_REFUSALS {
                // Nothing changes: the flood stays a flood until a slot frees.
                return Admit::Flood;
            } else {
                let wait = next - now_us - BURST_US;
                let verdict = Admit::Limited {
                    retry_after_s: wait.div_ceil(1_000_000).max(1),
                };
                (tat | ((refused + 1) << TIME_BITS), verdict)
            };
            match cell.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return verdict,
                Err(seen) => cur = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn a_burst_of_the_rate_then_the_rate() {
        let r = AddressRate::new(10);
        let t = 5_000_000;
        for i in 0..10 {
            assert_eq!(r.check(A, t), Admit::Yes, "connection {i} of the burst");
        }
        assert_eq!(r.check(A, t), Admit::Limited { retry_after_s: 1 });
        // Another address has its own rate (unless it shares A's cell).
        if !std::ptr::eq(r.cell(A), r.cell(B)) {
            assert_eq!(r.check(B, t), Admit::Yes);
        }
        // One interval later, one more.
        assert_eq!(r.check(A, t + 100_000), Admit::Yes);
        assert!(matches!(r.check(A, t + 100_000), Admit::Limited { .. }));
        // A second later the whole burst is back.
        for _ in 0..10 {
            assert_eq!(r.check(A, t + 1_200_000), Admit::Yes);
        }
    }

    #[test]
    fn far_over_the_rate_is_a_flood_until_a_slot_frees() {
        let r = AddressRate::new(2);
        let t = 1_000_000;
        assert_eq!(r.check(A, t), Admit::Yes);
        assert_eq!(r.check(A, t), Admit::Yes);
        for _ in 0..FLOOD_REFUSALS {
            assert!(matches!(r.check(A, t), Admit::Limited { .. }));
        }
        assert_eq!(r.check(A, t), Admit::Flood);
        assert_eq!(r.check(A, t + 100_000), Admit::Flood);
        // Once a slot frees (half a second at 2 per second), admitted again,
        // and the refusals start counting afresh.
        assert_eq!(r.check(A, t + 500_000), Admit::Yes);
        assert!(matches!(r.check(A, t + 500_000), Admit::Limited { .. }));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_prefix_and_mapped_ipv4_as_ipv4() {
        let r = AddressRate::new(1);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(r.check(a, 1_000_000), Admit::Yes);
        assert!(matches!(r.check(b, 1_000_000), Admit::Limited { .. }));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(r.check(A, 1_000_000), Admit::Yes);
        assert!(matches!(r.check(mapped, 1_000_000), Admit::Limited { .. }));
    }

    #[test]
    fn off_admits_everything_without_a_table() {
        let r = AddressRate::new(0);
        assert!(r.slots.is_empty());
        for _ in 0..10_000 {
            assert_eq!(r.check(A, 0), Admit::Yes);
        }
    }

    #[test]
    fn the_retry_after_covers_the_wait() {
        let r = AddressRate::new(1);
        assert_eq!(r.check(A, 1_000_000), Admit::Yes);
        assert_eq!(r.check(A, 1_000_000), Admit::Limited { retry_after_s: 1 });
    }
}

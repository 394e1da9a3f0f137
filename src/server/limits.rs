//! Per-account limits shared by all workers: how many connections each
//! account has open (receive streams, and send connections from their first
//! request: `senders`). Touched only when a connection starts or stops
//! counting, not per message; sharded so workers rarely meet on a lock.

use std::collections::HashMap;
use std::sync::Mutex;

const SHARDS: usize = 64;

/// Open connections per account, with a cap.
pub struct AccountCounts {
    max: usize,
    shards: Vec<Mutex<HashMap<Box<str>, u32>>>,
}

impl AccountCounts {
    /// Counts with at most `max` connections per account (0 = no limit).
    pub fn new(max: usize) -> AccountCounts {
        AccountCounts {
            max,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, account: &str) -> &Mutex<HashMap<Box<str>, u32>> {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in account.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        &self.shards[(h % SHARDS as u64) as usize]
    }

    /// Counts one more connection for `account` unless that passes the cap (`force` ignores the cap).
    pub fn acquire(&self, account: &str, force: bool) -> bool {
        let Ok(mut m) = self.shard(account).lock() else {
            return true;
        };
        let n = m.get(account).copied().unwrap_or(0);
        if !force && self.max > 0 && n as usize >= self.max {
            return false;
        }
        *m.entry(account.into()).or_insert(0) += 1;
        true
    }

    /// Counts one connection of `account` less.
    pub fn release(&self, account: &str) {
        let Ok(mut m) = self.shard(account).lock() else {
            return;
        };
        if let Some(n) = m.get_mut(account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(account);
            }
        }
    }

    /// Open connections of `account`.
    pub fn get(&self, account: &str) -> u32 {
        self.shard(account)
            .lock()
            .ok()
            .and_then(|m| m.get(account).copied())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_and_release() {
        let c = AccountCounts::new(2);
        assert!(c.acquire("a", false));
        assert!(c.acquire("a", false));
        assert!(!c.acquire("a", false), "third connection is over the cap");
        assert!(c.acquire("b", false), "other accounts are separate");
        assert!(c.acquire("a", true), "a replacement is always allowed");
        c.release("a");
        c.release("a");
        assert_eq!(c.get("a"), 1);
        c.release("a");
        c.release("a");
        assert_eq!(c.get("a"), 0);
        let unlimited = AccountCounts::new(0);
        for _ in 0..1000 {
            assert!(unlimited.acquire("x", false));
        }
    }
}

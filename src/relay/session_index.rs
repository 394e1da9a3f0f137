//! The sessions owned by one worker: a slab, indexed by `account/client` for
//! delivery and by account for client lists.
//!
//! The sessions of one account are linked into a list through their slab
//! entries (two `u32` per session), with one table entry per account holding
//! the list's head. Listing an account then visits only that account's
//! sessions instead of every session of the worker, and costs nothing extra
//! per message.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use slab::Slab;

use super::session::Session;

/// End of an account list.
const NIL: u32 = u32::MAX;

/// A session's neighbours in its account's list (slab indices, [`NIL`] at the ends).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AccountLinks {
    prev: u32,
    next: u32,
}

impl Default for AccountLinks {
    fn default() -> Self {
        AccountLinks {
            prev: NIL,
            next: NIL,
        }
    }
}

/// The sessions owned by one worker, indexed by account and client.
pub(crate) struct Sessions {
    pub(crate) slab: Slab<Session>,
    /// Slab indices, hashed by `account/client`.
    index: HashTable<u32>,
    /// The first session (slab index) of each account's list, hashed by account.
    accounts: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
}

/// `account/client`, the key a session is stored under (`/` cannot occur in ids).
pub(crate) fn make_key(account: &str, client: &str) -> String {
    let mut k = String::with_capacity(account.len() + 1 + client.len());
    k.push_str(account);
    k.push('/');
    k.push_str(client);
    k
}

/// Hash of a session key from its parts (no `account/client` string is built for a look-up).
fn key_hash(hasher: &hashbrown::DefaultHashBuilder, account: &str, client: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = hasher.build_hasher();
    h.write(account.as_bytes());
    h.write_u8(b'/');
    h.write(client.as_bytes());
    h.finish()
}

/// [`key_hash`] of a stored session.
fn session_hash(hasher: &hashbrown::DefaultHashBuilder, s: &Session) -> u64 {
    key_hash(hasher, s.account(), s.client())
}

/// Hash of an account name (the `accounts` table).
fn account_hash(hasher: &hashbrown::DefaultHashBuilder, account: &str) -> u64 {
    hasher.hash_one(account)
}

impl Sessions {
    /// No sessions; nothing allocated until the first one.
    pub fn new() -> Sessions {
        Sessions {
            slab: Slab::new(),
            index: HashTable::new(),
            accounts: HashTable::new(),
            hasher: Default::default(),
        }
    }

    /// The slab index of the session of `client` in `account`.
    pub fn find(&self, account: &str, client: &str) -> Option<usize> {
        let h = key_hash(&self.hasher, account, client);
        self.index
            .find(h, |&i| {
                let s = &self.slab[i as usize];
                s.account() == account && s.client() == client
            })
            .map(|&i| i as usize)
    }

    /// The session at slab index `idx`, if there is one.
    pub fn get_mut(&mut self, idx: usize) -> Option<&mut Session> {
        self.slab.get_mut(idx)
    }

    /// The session at slab index `idx`, if there is one.
    pub fn get(&self, idx: usize) -> Option<&Session> {
        self.slab.get(idx)
    }

    /// Stores a new session (its key must not be stored yet) and returns its slab index.
    pub fn insert(&mut self, mut s: Session) -> usize {
        let h = session_hash(&self.hasher, &s);
        let ah = account_hash(&self.hasher, s.account());
        let idx = self.slab.vacant_key();
        // The new session becomes the head of its account's list.
        let slab = &mut self.slab;
        let old_head = match self
            .accounts
            .find_mut(ah, |&i| slab[i as usize].account() == s.account())
        {
            Some(head) => Some(std::mem::replace(head, idx as u32)),
            None => None,
        };
        s.links = AccountLinks {
            prev: NIL,
            next: old_head.unwrap_or(NIL),
        };
        if let Some(old) = old_head {
            slab[old as usize].links.prev = idx as u32;
        }
        let stored = slab.insert(s);
        debug_assert_eq!(stored, idx);
        let (slab, hasher) = (&self.slab, &self.hasher);
        if old_head.is_none() {
            self.accounts.insert_unique(ah, idx as u32, |&i| {
                account_hash(hasher, slab[i as usize].account())
            });
        }
        self.index
            .insert_unique(h, idx as u32, |&i| session_hash(hasher, &slab[i as usize]));
        idx
    }

    /// Shrinks the tables when they are mostly empty (after a peak).
    pub fn shrink(&mut self) {
        if self.slab.capacity() > 1024 && self.slab.len() < self.slab.capacity() / 4 {
            // Slab keeps the keys of occupied entries when it shrinks.
            self.slab.shrink_to_fit();
            let (slab, hasher) = (&self.slab, &self.hasher);
            self.index
                .shrink_to_fit(|&i| session_hash(hasher, &slab[i as usize]));
            self.accounts
                .shrink_to_fit(|&i| account_hash(hasher, slab[i as usize].account()));
        }
    }

    /// The sessions of `account` with their slab indices, newest first.
    pub fn of_account<'a>(&'a self, account: &str) -> impl Iterator<Item = (usize, &'a Session)> {
        let ah = account_hash(&self.hasher, account);
        let head = self
            .accounts
            .find(ah, |&i| self.slab[i as usize].account() == account)
            .copied()
            .unwrap_or(NIL);
        let slab = &self.slab;
        std::iter::successors(
            (head != NIL).then(|| (head as usize, &slab[head as usize])),
            move |(_, s)| {
                let next = s.links.next;
                (next != NIL).then(|| (next as usize, &slab[next as usize]))
            },
        )
    }

    /// All sessions with their slab indices.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Session)> {
        self.slab.iter()
    }

    /// Removes and returns the session at `idx`.
    pub fn remove(&mut self, idx: usize) -> Option<Session> {
        let s = self.slab.try_remove(idx)?;
        let h = session_hash(&self.hasher, &s);
        if let Ok(e) = self.index.find_entry(h, |&i| i as usize == idx) {
            e.remove();
        }
        let AccountLinks { prev, next } = s.links;
        if next != NIL {
            self.slab[next as usize].links.prev = prev;
        }
        if prev != NIL {
            self.slab[prev as usize].links.next = next;
        } else {
            // It was its account's head: the next one takes its place, or the account goes.
            let ah = account_hash(&self.hasher, s.account());
            if let Ok(e) = self.accounts.find_entry(ah, |&i| i as usize == idx) {
                if next != NIL {
                    *e.into_mut() = next;
                } else {
                    e.remove();
                }
            }
        }
        Some(s)
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Number of accounts with a session here.
    #[cfg(test)]
    pub fn accounts(&self) -> usize {
        self.accounts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(account: &str, client: &str) -> Session {
        Session::blank(make_key(account, client).into_boxed_str(), account.len())
    }

    /// The clients of `account`, sorted, by the index and by a scan of every session.
    fn listed(t: &Sessions, account: &str) -> (Vec<String>, Vec<String>) {
        let mut by_index: Vec<String> = t
            .of_account(account)
            .map(|(_, s)| s.client().to_string())
            .collect();
        let mut by_scan: Vec<String> = t
            .slab
            .iter()
            .filter(|(_, s)| s.account() == account)
            .map(|(_, s)| s.client().to_string())
            .collect();
        by_index.sort();
        by_scan.sort();
        (by_index, by_scan)
    }

    #[test]
    fn lists_only_the_accounts_own_sessions() {
        let mut t = Sessions::new();
        for c in ["a", "b", "c"] {
            t.insert(session("acme", c));
        }
        t.insert(session("acm", "e/x"));
        t.insert(session("other", "a"));
        assert_eq!(listed(&t, "acme").0, ["a", "b", "c"]);
        assert_eq!(listed(&t, "acm").0, ["e/x"]);
        assert_eq!(listed(&t, "other").0, ["a"]);
        assert!(listed(&t, "nobody").0.is_empty());
        assert_eq!(t.accounts(), 3);
        assert_eq!(t.find("acme", "b").map(|i| t.slab[i].client()), Some("b"));
    }

    #[test]
    fn removing_the_head_the_middle_and_the_tail_keeps_the_list_whole() {
        let mut t = Sessions::new();
        let idx: Vec<usize> = (0..5)
            .map(|i| t.insert(session("acme", &format!("c{i}"))))
            .collect();
        // Newest first: c4 is the head, c0 the tail.
        let order: Vec<&str> = t.of_account("acme").map(|(_, s)| s.client()).collect();
        assert_eq!(order, ["c4", "c3", "c2", "c1", "c0"]);
        t.remove(idx[4]); // head
        t.remove(idx[2]); // middle
        t.remove(idx[0]); // tail
        let order: Vec<&str> = t.of_account("acme").map(|(_, s)| s.client()).collect();
        assert_eq!(order, ["c3", "c1"]);
        t.remove(idx[3]);
        t.remove(idx[1]);
        assert_eq!(t.of_account("acme").count(), 0);
        assert_eq!(
            t.accounts(),
            0,
            "an account without sessions leaves no entry"
        );
        assert!(t.remove(idx[1]).is_none(), "a second removal is a no-op");
    }

    /// Random inserts and removals over a few accounts, with slab slots reused and a
    /// shrink after a peak: the index always agrees with a scan.
    #[test]
    fn agrees_with_a_scan_through_random_inserts_removals_and_shrinks() {
        let mut t = Sessions::new();
        let mut live: Vec<usize> = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let accounts = ["a", "b", "ab", "c"];
        for round in 0..6_000u32 {
            let grow = if round < 3_000 { 3 } else { 1 };
            if live.is_empty() || rand() % 4 < grow {
                let account = accounts[(rand() % 4) as usize];
                let client = format!("k{round}");
                live.push(t.insert(session(account, &client)));
            } else {
                let i = (rand() as usize) % live.len();
                let idx = live.swap_remove(i);
                assert!(t.remove(idx).is_some());
            }
            if round % 500 == 499 {
                t.shrink();
                for a in accounts {
                    let (by_index, by_scan) = listed(&t, a);
                    assert_eq!(by_index, by_scan, "account {a} after round {round}");
                }
            }
        }
        while let Some(idx) = live.pop() {
            t.remove(idx);
        }
        assert_eq!(t.len(), 0);
        assert_eq!(t.accounts(), 0);
    }
}

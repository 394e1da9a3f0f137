//! A client's session: who it is, where its stream stands (sequence numbers
//! of what was accepted, written and confirmed), its retained log and its
//! conversation partners. Pure state and rules, no I/O: the worker in
//! `crate::server` owns the sessions and moves bytes.

use hashbrown::HashMap;

use super::retained::Log;
use super::session_index::AccountLinks;
use crate::auth::Role;
use crate::ids::SessionId;

/// Most conversation partners remembered per client.
pub(crate) const MAX_PARTNERS: usize = 4096;

/// A client's session on its owner worker.
pub(crate) struct Session {
    pub(in crate::relay) gen: u32,
    /// Session id of the latest receive connection (for logs).
    pub(in crate::relay) sid: SessionId,
    /// `account/client` (`/` cannot occur in ids).
    pub(in crate::relay) key: Box<str>,
    pub(in crate::relay) split: u8,
    pub(in crate::relay) role: Role,
    /// Random per session incarnation; part of every event id.
    pub(in crate::relay) epoch: u64,
    /// Sequence number of the newest entry.
    pub(in crate::relay) last_seq: u64,
    /// Sequence number of the newest entry handed to a receive connection.
    pub(in crate::relay) delivered: u64,
    /// The current receive connection was sent the entries after this one.
    pub(in crate::relay) attach_from: u64,
    /// The receive connection (slab index, generation); generation 0 = none.
    pub(in crate::relay) conn: (u32, u32),
    /// Wall-clock ms of the last change between online and held.
    pub(in crate::relay) since_ms: u64,
    /// Monotonic ms when the session became held; 0 while online.
    pub(in crate::relay) held_since: u64,
    pub(in crate::relay) deadline: u64,
    pub(in crate::relay) armed: u64,
    /// Retained events; no allocation while empty.
    pub(in crate::relay) log: Log,
    /// Conversation partners and when (monotonic ms) a message was last exchanged.
    pub(in crate::relay) partners: Option<Box<HashMap<Box<str>, u64>>>,
    /// Why entries last left the log early: an index into
    /// [`TRIM_REASONS`](super::retained::TRIM_REASONS), kept here because
    /// the log is freed when it is empty.
    pub(in crate::relay) trim: u8,
    /// Entries appended in this loop iteration wait in the worker's
    /// `to_flush` list, to be written in one go (see [`Worker::flush_sessions`]).
    pub(in crate::relay) flush_queued: bool,
    /// Neighbours in this worker's list of the account's sessions (kept by
    /// [`Sessions`](super::session_index::Sessions)).
    pub(in crate::relay) links: AccountLinks,
}

/// What the worker reads and sets of a session: its identity for logs and
/// listings, where its stream stands, and its entry in the worker's timer
/// wheel (the wheel is the worker's; the relay says the deadlines). The rest
/// of a session is the relay's (`Relay`).
impl Session {
    pub(crate) fn gen(&self) -> u32 {
        self.gen
    }

    pub(crate) fn sid(&self) -> SessionId {
        self.sid
    }

    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// The session's incarnation, part of every event id.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Wall-clock ms of the last change between online and held.
    pub(crate) fn since_ms(&self) -> u64 {
        self.since_ms
    }

    /// `account/client`.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The receive connection (slab index, generation); generation 0 = none.
    pub(crate) fn conn(&self) -> (u32, u32) {
        self.conn
    }

    /// Sequence numbers of the newest entry handed to the receive
    /// connection and of the newest entry.
    pub(crate) fn written(&self) -> (u64, u64) {
        (self.delivered, self.last_seq)
    }

    /// Entries retained.
    pub(crate) fn retained(&self) -> usize {
        self.log.len()
    }

    /// The newest `n` entries, oldest first, for the writer that notes
    /// where each ends on the wire.
    pub(crate) fn newest_mut(
        &mut self,
        n: usize,
    ) -> impl Iterator<Item = &mut super::retained::Entry> {
        self.log.newest_mut(n)
    }

    /// The newest entry was written to the receive connection by the
    /// caller (from where it is kept, `Worker::write_newest`).
    pub(crate) fn newest_written(&mut self) {
        self.delivered = self.last_seq;
    }

    /// Who the latest receive connection is (for logs and listings).
    pub(crate) fn set_identity(&mut self, sid: SessionId, role: Role) {
        self.sid = sid;
        self.role = role;
    }

    /// A new session's generation (its slot's timer entries name it).
    pub(crate) fn set_gen(&mut self, gen: u32) {
        self.gen = gen;
    }

    /// Forgets `peer` as a conversation partner (it is gone).
    pub(crate) fn forget_partner(&mut self, peer: &str) {
        if let Some(p) = self.partners.as_mut() {
            p.remove(peer);
        }
    }

    /// The conversation partners and when (monotonic ms) a message was last exchanged.
    pub(crate) fn partners(&self) -> impl Iterator<Item = (&str, u64)> {
        self.partners
            .iter()
            .flat_map(|p| p.iter().map(|(k, t)| (&**k, *t)))
    }

    /// The undelivered entries of a session that is taken apart (one
    /// handed over late, merged into this node's), oldest first.
    pub(crate) fn take_undelivered(&mut self) -> Vec<super::retained::EntryKind> {
        let mut out = Vec::new();
        while let Some(e) = self.log.pop_front() {
            if e.seq > self.delivered {
                out.push(e.kind);
            }
        }
        out
    }

    /// The timer wheel entry: the deadline the session's timer should act
    /// at, and the deadline its live wheel entry was armed for (0: none).
    pub(crate) fn timer(&self) -> (u64, u64) {
        (self.deadline, self.armed)
    }

    pub(crate) fn set_deadline(&mut self, deadline: u64) {
        self.deadline = deadline;
    }

    pub(crate) fn set_armed(&mut self, armed: u64) {
        self.armed = armed;
    }

    pub fn account(&self) -> &str {
        &self.key[..self.split as usize]
    }
    pub fn client(&self) -> &str {
        &self.key[self.split as usize + 1..]
    }
    pub(crate) fn online(&self) -> bool {
        self.conn.1 != 0
    }
    /// Why entries last left the log early, as a `gap` event names it.
    pub(crate) fn trim_reason(&self) -> &'static str {
        let reasons = &super::retained::TRIM_REASONS;
        reasons
            .get(self.trim as usize)
            .copied()
            .unwrap_or(reasons[0])
    }
    /// Records why entries are leaving the log early.
    pub(crate) fn set_trim_reason(&mut self, reason: &str) {
        self.trim = super::retained::trim_index(reason);
    }

    /// A session with key `account/client` (`split` = the account's length) and
    /// nothing else set yet: no connection, no entries, a fresh epoch.
    pub(crate) fn blank(key: Box<str>, split: usize) -> Session {
        Session {
            gen: 0,
            sid: SessionId(0),
            split: split as u8,
            key,
            role: Role::Agent,
            epoch: crate::ids::random_u64() >> 12,
            last_seq: 0,
            delivered: 0,
            attach_from: 0,
            conn: (0, 0),
            since_ms: 0,
            held_since: 0,
            deadline: 0,
            armed: 0,
            log: Log::default(),
            partners: None,
            trim: 0,
            flush_queued: false,
            links: AccountLinks::default(),
        }
    }
}

impl Session {
    /// True if `peer` exchanged a message with this client within `ttl_ms` of `now`.
    pub fn recent_partner(&self, peer: &str, now: u64, ttl_ms: u64) -> bool {
        self.partners
            .as_ref()
            .and_then(|p| p.get(peer))
            .is_some_and(|t| now.saturating_sub(*t) <= ttl_ms)
    }

    /// True while a receive connection is attached.
    pub fn is_online(&self) -> bool {
        self.online()
    }
}

/// Records that `peer` exchanged a message at `now` in a partner table of at most
/// `cap` entries. A full table first forgets the partners last seen more than
/// `ttl` ago; if it is still full, its oldest eighth. So the scan a full table
/// takes is paid once per `cap / 8` new partners, not on every new one (a console
/// talking to more than `cap` agents within `ttl` would otherwise scan the whole
/// table on each message to a new one).
pub(crate) fn remember_partner(
    p: &mut HashMap<Box<str>, u64>,
    peer: &str,
    now: u64,
    ttl: u64,
    cap: usize,
) {
    if let Some(t) = p.get_mut(peer) {
        *t = now;
        return;
    }
    if p.len() >= cap {
        p.retain(|_, t| now.saturating_sub(*t) <= ttl);
    }
    if p.len() >= cap {
        let forget = (cap / 8).max(1).min(p.len());
        let mut times: Vec<u64> = p.values().copied().collect();
        let (_, &mut cutoff, _) = times.select_nth_unstable(forget - 1);
        // Everything older than the cutoff goes, and as many of the entries
        // seen exactly at the cutoff as it takes to forget `forget` in all.
        let older = times.iter().filter(|&&t| t < cutoff).count();
        let mut at_cutoff = forget - older;
        p.retain(|_, t| {
            if *t < cutoff {
                return false;
            }
            if *t == cutoff && at_cutoff > 0 {
                at_cutoff -= 1;
                return false;
            }
            true
        });
    }
    p.insert(peer.into(), now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, u64)]) -> HashMap<Box<str>, u64> {
        entries.iter().map(|&(k, t)| (k.into(), t)).collect()
    }

    #[test]
    fn a_known_partner_is_refreshed_not_added() {
        let mut p = table(&[("a", 1), ("b", 2)]);
        remember_partner(&mut p, "a", 50, 1_000, 2);
        assert_eq!(p.len(), 2);
        assert_eq!(p["a"], 50);
    }

    #[test]
    fn a_full_table_forgets_expired_partners_first() {
        let mut p = table(&[("old", 0), ("x", 900), ("y", 950), ("z", 990)]);
        remember_partner(&mut p, "new", 1_000, 500, 4);
        let mut keys: Vec<&str> = p.keys().map(|k| &**k).collect();
        keys.sort();
        assert_eq!(keys, ["new", "x", "y", "z"]);
    }

    #[test]
    fn a_full_table_forgets_its_oldest_eighth_at_once_then_takes_new_ones_without_scanning() {
        let cap = 64;
        let mut p: HashMap<Box<str>, u64> = (0..cap as u64)
            .map(|i| (format!("p{i}").into(), 100 + i))
            .collect();
        remember_partner(&mut p, "n0", 1_000, 10_000, cap);
        // The 8 oldest (p0..p7) are gone, everything newer stays.
        assert_eq!(p.len(), cap - 8 + 1);
        for i in 0..cap {
            assert_eq!(p.contains_key(format!("p{i}").as_str()), i >= 8, "p{i}");
        }
        // The next 7 fit without forgetting anyone.
        for i in 1..8 {
            remember_partner(&mut p, &format!("n{i}"), 1_000 + i, 10_000, cap);
        }
        assert_eq!(p.len(), cap);
        assert!(p.contains_key("p8"));
    }

    #[test]
    fn ties_at_the_cutoff_forget_only_an_eighth() {
        // Every partner seen in the same millisecond: an eighth goes, not all.
        let cap = 64;
        let mut p: HashMap<Box<str>, u64> =
            (0..cap).map(|i| (format!("p{i}").into(), 500)).collect();
        remember_partner(&mut p, "new", 600, 10_000, cap);
        assert_eq!(p.len(), cap - 8 + 1);
        assert_eq!(p["new"], 600);
    }

    #[test]
    fn the_table_never_passes_its_cap() {
        let cap = 40;
        let mut p = HashMap::default();
        for i in 0..1_000u64 {
            remember_partner(&mut p, &format!("c{}", i * 7 % 97), i, 50, cap);
            assert!(p.len() <= cap, "{} entries after {i}", p.len());
        }
    }
}

//! One worker's relay state and its rules, with no I/O: the sessions and
//! their index, the order in which they became held, the memory of recent
//! conversation notes, the sessions owed a write at the end of the loop
//! iteration, and the node-wide retention limit (`--hold-total-bytes`).
//!
//! The worker in [`crate::server`] owns one [`Relay`] and calls it with the
//! time and what happened (a message accepted, a stream ended, a timer); the
//! answer says what is owed (a write now or at the end of the iteration, a
//! deadline to arm, what was lost). What other workers publish comes in and
//! goes out through a [`Board`], so the same rules run between real threads
//! and inside the simulation ([`super::sim`]).

use std::hash::BuildHasher;

use super::held_order::{is_held, HeldMark, HeldOrder};
use super::pairs::RecentPairs;
use super::retained::{self, EntryKind};
use super::session::{remember_partner, Session, MAX_PARTNERS};
use super::session_index::Sessions;
use super::stream::{LogLimits, Pressure, Resume, StreamEnd};
use crate::ids::EventId;

/// A conversation note for the same pair is passed on at most once per this long.
const TOUCH_WINDOW_MS: u64 = 5_000;

/// The limits the relay's rules apply, from the configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    /// Per-session retention limits (`--hold-max-messages`, `--hold-max-bytes`).
    pub log: LogLimits,
    /// How long a client is held and its messages kept (`--hold`), in ms.
    pub hold_ms: u64,
    /// `--hold-total-bytes`: retained message bytes on the whole node.
    pub hard: usize,
    /// How long a conversation partner is remembered (`--conversation-ttl`), in ms.
    pub conversation_ttl_ms: u64,
}

impl Rules {
    /// Three quarters of `--hold-total-bytes`: past it, delivered entries
    /// make room (see [`Relay::append`]).
    pub fn soft(&self) -> usize {
        self.hard / 4 * 3
    }
}

/// What the relay counted since the worker last published its statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Retained messages dropped before they were handed to the client.
    pub dropped: u64,
    /// Retained messages dropped early for `--hold-total-bytes`.
    pub memory_trims: u64,
}

/// What one worker sees of the others, and how it asks them to make room
/// for retained messages (see `server::evict` for the atomics behind it).
pub(crate) trait Board {
    /// True when there are other workers.
    fn shared(&self) -> bool;
    /// The other worker whose longest-held client became held the earliest,
    /// before `before` (monotonic ms), as the workers last published it.
    fn oldest_other(&self, before: u64) -> Option<usize>;
    /// Bytes already asked of worker `w` and not yet dropped by it.
    fn asked_of(&self, w: usize) -> u64;
    /// Asks worker `w` to drop `bytes` of its held clients' messages. This
    /// worker's tally is published first: `w` drops only while the node is
    /// past the limit, so it must see the bytes that made this worker ask.
    fn ask(&mut self, w: usize, bytes: usize);
}

/// A worker alone on its node: nobody to ask.
#[cfg(test)]
pub(crate) struct Alone;

#[cfg(test)]
impl Board for Alone {
    fn shared(&self) -> bool {
        false
    }
    fn oldest_other(&self, _: u64) -> Option<usize> {
        None
    }
    fn asked_of(&self, _: usize) -> u64 {
        0
    }
    fn ask(&mut self, _: usize, _: usize) {}
}

/// What a throttled conversation note is about (see [`Relay::touch_due`]).
#[derive(Hash)]
pub(crate) enum TouchKey<'a> {
    /// A message from `.1` to `.2` in account `.0`, whose session has epoch `.3`.
    Pair(&'a str, &'a str, &'a str, u64),
    /// Passing on to the cluster that `.1` talked to `.2` in account `.0`.
    Forward(&'a str, &'a str, &'a str),
}

/// What [`Relay::append`] did.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Appended {
    /// The new entry's event id.
    pub id: EventId,
    /// The session's client is online and this is its first entry of the
    /// loop iteration: write it now (the rest are written by the end of the
    /// iteration, see [`Relay::take_flush`]).
    pub write_now: bool,
    /// The session's timer deadline (monotonic ms; 0 = none).
    pub deadline: u64,
}

/// What [`Relay::stream_closed`] did.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Held {
    /// Entries written but not confirmed, to be sent again.
    pub rewound: u64,
    /// The session's timer deadline (monotonic ms; 0 = none).
    pub deadline: u64,
}

/// What [`Relay::attach`] did.
#[derive(Debug)]
pub(crate) struct Attached {
    /// The session's generation and epoch.
    pub sess_gen: u32,
    pub epoch: u64,
    /// The stream is written the entries after this sequence number.
    pub from: u64,
    /// `gap` events to write first: after which event id, and why.
    pub gaps: Vec<(String, &'static str)>,
    /// The session's timer deadline (monotonic ms; 0 = none).
    pub deadline: u64,
}

/// What a session timer did ([`Relay::timer`]).
pub(crate) enum Timer {
    /// Not due, or nothing to do; arm the deadline again (0 = none).
    Rearm { deadline: u64, freed: bool },
    /// The hold ran out: the session was removed and is handed back.
    Expired(Box<Session>),
}

/// See the module documentation.
pub(crate) struct Relay {
    sessions: Sessions,
    /// This worker's sessions in the order they became held (who loses
    /// messages first past `--hold-total-bytes`).
    held_order: HeldOrder,
    /// Conversation pairs noted recently (see [`Relay::touch_due`]).
    pairs: RecentPairs,
    /// Seeded hasher for `pairs` keys.
    pair_hasher: hashbrown::DefaultHashBuilder,
    /// Sessions that had an entry appended in this iteration (slab index,
    /// generation); whatever followed their first entry is written at its end.
    to_flush: Vec<(u32, u32)>,
    /// Message bytes the other workers retain, as they last published them
    /// (read once per loop iteration): with this worker's own tally, what
    /// `--hold-total-bytes` limits.
    others_retained: usize,
    /// Undelivered messages were dropped for the limit since retained
    /// messages were last under three quarters of it (so that is logged
    /// once, not per message).
    budget_dropping: bool,
    /// Sessions held now.
    held: usize,
    rules: Rules,
    counters: Counters,
}

impl Relay {
    pub fn new(rules: Rules) -> Relay {
        Relay {
            sessions: Sessions::new(),
            held_order: HeldOrder::default(),
            pairs: RecentPairs::default(),
            pair_hasher: Default::default(),
            to_flush: Vec::new(),
            others_retained: 0,
            budget_dropping: false,
            held: 0,
            rules,
            counters: Counters::default(),
        }
    }

    /// What was counted since the last call.
    pub fn take_counters(&mut self) -> Counters {
        std::mem::take(&mut self.counters)
    }

    // ----- The session table -----

    pub fn find(&self, account: &str, client: &str) -> Option<usize> {
        self.sessions.find(account, client)
    }

    pub fn get(&self, sidx: usize) -> Option<&Session> {
        self.sessions.get(sidx)
    }

    pub fn get_mut(&mut self, sidx: usize) -> Option<&mut Session> {
        self.sessions.get_mut(sidx)
    }

    /// Session `sidx`, which must exist.
    pub fn session(&self, sidx: usize) -> &Session {
        &self.sessions.slab[sidx]
    }

    /// Session `sidx`, which must exist.
    pub fn session_mut(&mut self, sidx: usize) -> &mut Session {
        &mut self.sessions.slab[sidx]
    }

    pub fn insert(&mut self, s: Session) -> usize {
        self.sessions.insert(s)
    }

    /// Takes session `sidx` out (the caller disarms its timer).
    pub fn remove(&mut self, sidx: usize) -> Option<Session> {
        let s = self.sessions.remove(sidx)?;
        if s.held_since > 0 {
            self.held = self.held.saturating_sub(1);
        }
        Some(s)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions held now.
    pub fn held(&self) -> usize {
        self.held
    }

    pub fn of_account<'a>(&'a self, account: &str) -> impl Iterator<Item = (usize, &'a Session)> {
        self.sessions.of_account(account)
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &Session)> {
        self.sessions.iter()
    }

    /// Gives memory back after a peak (housekeeping).
    pub fn shrink(&mut self) {
        self.sessions.shrink();
        let sessions = &self.sessions.slab;
        self.held_order.prune(|m| is_held(sessions, m));
        self.held_order.shrink();
    }

    // ----- Messages -----

    /// Message bytes retained on the node: this worker's own tally and what
    /// the others last published.
    pub fn node_retained(&self) -> usize {
        retained::node_bytes(self.others_retained)
    }

    /// What the other workers retain, as read at the start of an iteration.
    pub fn set_others_retained(&mut self, bytes: usize) {
        self.others_retained = bytes;
    }

    /// Appends an entry to session `sidx`'s log and enforces the limits.
    /// `live`: the session's receive connection is open (its unsent entries
    /// are not dropped: they are written by the end of the iteration).
    ///
    /// The first event an iteration appends for an online client is written
    /// at once (no added latency; `write_now`). Any further ones wait in the
    /// log until the end of the iteration and then go out together, in one
    /// write (and one read for the client) instead of one each: a burst for
    /// one client costs two writes, not one per event.
    pub fn append(
        &mut self,
        sidx: usize,
        kind: EntryKind,
        now: u64,
        live: impl Fn(&Session) -> bool,
        board: &mut impl Board,
    ) -> Appended {
        let s = &mut self.sessions.slab[sidx];
        let (id, grown) = s.push_entry(now, kind);
        let write_now = s.online() && !s.flush_queued;
        if write_now {
            s.flush_queued = true;
            self.to_flush.push((sidx as u32, s.gen));
        }
        self.trim(sidx, grown, live, board);
        let deadline = self.sessions.slab[sidx].deadline(self.rules.hold_ms, now);
        Appended {
            id,
            write_now,
            deadline,
        }
    }

    /// The sessions owed a write at the end of the iteration, as `(slab
    /// index, generation)`: write each for which [`Relay::flush_due`] says
    /// so, then give the list back with [`Relay::flushed`].
    pub fn take_flush(&mut self) -> Vec<(u32, u32)> {
        std::mem::take(&mut self.to_flush)
    }

    /// Whether an entry of [`Relay::take_flush`]'s list is still owed its
    /// write (the session is the same and was not written since); it then
    /// no longer is.
    #[inline]
    pub fn flush_due(&mut self, (sidx, gen): (u32, u32)) -> bool {
        match self.sessions.get_mut(sidx as usize) {
            Some(s) if s.gen == gen && s.flush_queued => {
                s.flush_queued = false;
                true
            }
            _ => false,
        }
    }

    /// The list [`Relay::take_flush`] handed out, written.
    pub fn flushed(&mut self, mut list: Vec<(u32, u32)>) {
        list.clear();
        // Keep the list's memory unless a burst made it large.
        if list.capacity() <= 1024 && self.to_flush.is_empty() {
            self.to_flush = list;
        }
    }

    /// Trims session `sidx`'s log if it is over the limits: entries held back
    /// from trimming until they were written (see [`Relay::trim`]).
    #[inline]
    pub fn trim_if_over(
        &mut self,
        sidx: usize,
        live: impl Fn(&Session) -> bool,
        board: &mut impl Board,
    ) {
        let over_budget = self.node_retained() > self.rules.soft();
        if self
            .sessions
            .get(sidx)
            .is_some_and(|s| over_budget || s.over_limits(self.rules.log))
        {
            self.trim(sidx, 0, live, board);
        }
    }

    /// Enforces the retention limits on session `sidx`'s log, oldest entries
    /// first; `grown` is what the entry just appended to it added to the
    /// retained bytes (0 when trimming after a write). Entries a live receive
    /// connection has not been sent yet are not dropped: they wait for the end
    /// of the loop iteration, are written, and the log is trimmed again then
    /// (so it can exceed the limits by one iteration's burst for a moment).
    /// Dropping an entry that was never handed out (the client is offline)
    /// records a gap for its next stream.
    ///
    /// `--hold-total-bytes` is kept in steps, run when a session receives:
    /// past three quarters of it, the session's delivered entries (kept only
    /// for replay) go. Past all of it, a held session's new entry makes room
    /// for itself, no more: `grown` bytes are taken from this worker's held
    /// sessions in the order they became held, oldest entries first
    /// ([`Relay::evict_held`]; the receiving session in its place in that
    /// order, or first if eviction has already passed it), then from the
    /// receiving session itself; or by another worker, from its own held
    /// sessions, if it holds a client gone longer ([`Relay::ask_older_worker`]).
    /// A live session's entries never push out a held session's (they leave
    /// after their write), and another worker's overshoot does not empty this
    /// worker's sessions. Retained memory so passes the limit by no more than
    /// one iteration's burst per worker (the other workers' part is read once
    /// per iteration).
    fn trim(
        &mut self,
        sidx: usize,
        grown: usize,
        live: impl Fn(&Session) -> bool,
        board: &mut impl Board,
    ) {
        let (hard, soft) = (self.rules.hard, self.rules.soft());
        // Retained on the node: this worker's tally, which the steps below
        // change, and the other workers' part as read this iteration.
        let node = self.node_retained();
        let s = &mut self.sessions.slab[sidx];
        if !s.over_limits(self.rules.log) && node <= soft {
            s.log.compact();
            self.budget_dropping = false;
            self.held_order.rewind();
            return;
        }
        let held_since = s.held_since;
        self.trim_own(sidx, 0, &live);
        if held_since > 0 && self.node_retained() > hard {
            let mut budget = grown;
            // Eviction went past this session earlier in this episode (it
            // was empty then), or reached sessions held in the same
            // millisecond: its turn is now, before those held later.
            let cursor = self.held_order.at_cursor().map(|(_, _, since)| since);
            let passed = cursor.is_none_or(|since| held_since <= since);
            // When the session whose turn it is here became held.
            let mine = cursor.map_or(held_since, |since| since.min(held_since));
            if self.ask_older_worker(mine, budget, board) {
                // Another worker holds a client gone longer: it makes the room.
                budget = 0;
            } else if passed {
                budget = budget.saturating_sub(self.trim_own(sidx, budget, &live));
            }
            budget = budget.saturating_sub(self.evict_held(budget));
            self.trim_own(sidx, budget, &live);
        }
        if self.node_retained() <= soft {
            self.budget_dropping = false;
            self.held_order.rewind();
        }
    }

    /// One pass of [`Relay::trim`] over session `sidx`'s own log: entries
    /// past its own limits and its delivered entries while the node is past
    /// three quarters of `--hold-total-bytes`; then, if its client is not
    /// connected, up to `budget` bytes of its other entries while the node is
    /// past the whole limit. Returns the bytes freed against `budget`.
    fn trim_own(&mut self, sidx: usize, budget: usize, live: impl Fn(&Session) -> bool) -> usize {
        let rules = self.rules;
        let pressure = Pressure {
            soft: rules.soft(),
            hard: rules.hard,
            others: self.others_retained,
        };
        let s = &mut self.sessions.slab[sidx];
        let live = live(s);
        let t = s.trim(rules.log, pressure, live, budget);
        self.counters.memory_trims += t.memory_trims;
        self.counters.dropped += t.lost;
        if t.lost_for_memory > 0 && !self.budget_dropping {
            self.budget_dropping = true;
            warn_budget(s, rules.hard, t.lost_for_memory);
        }
        t.freed
    }

    /// Past `--hold-total-bytes`: drops up to `budget` bytes of the retained
    /// entries of this worker's held sessions, oldest first, starting with
    /// the session held the longest (the least likely to come back), while
    /// the node is past the limit. Returns the bytes freed. Amortised O(1):
    /// within one episode of memory pressure, sessions found empty are not
    /// visited again.
    pub fn evict_held(&mut self, budget: usize) -> usize {
        let (hard, others) = (self.rules.hard, self.others_retained);
        let over = || retained::node_bytes(others) > hard;
        let mut freed = 0;
        while over() && freed < budget {
            let Some(mark) = self.held_order.at_cursor() else {
                break;
            };
            if !is_held(&self.sessions.slab, mark) {
                self.held_order.advance();
                continue;
            }
            let s = &mut self.sessions.slab[mark.0 as usize];
            let mut lost = 0u64;
            while freed < budget && over() {
                let Some((bytes, undelivered)) = s.drop_front("memory_limit") else {
                    break;
                };
                freed += bytes;
                self.counters.memory_trims += 1;
                if undelivered {
                    self.counters.dropped += 1;
                    lost += 1;
                }
            }
            s.log.compact();
            if lost > 0 && !self.budget_dropping {
                self.budget_dropping = true;
                warn_budget(s, hard, lost);
            }
            if s.log.len() == 0 {
                self.held_order.advance();
            }
        }
        freed
    }

    /// A held session of this worker, held since `mine` (monotonic ms), is to
    /// make room for `bytes` it just received: if another worker holds a
    /// client gone longer, asks that worker to drop `bytes` of its held
    /// clients' messages instead, and returns true. Returns false (this
    /// worker makes the room itself) when no worker holds an older client,
    /// or when the one that does has not yet done an eighth of the limit
    /// asked of it.
    fn ask_older_worker(&mut self, mine: u64, bytes: usize, board: &mut impl Board) -> bool {
        if !board.shared() || bytes == 0 {
            return false;
        }
        let Some(w) = board.oldest_other(mine) else {
            return false;
        };
        let cap = (self.rules.hard / 8) as u64;
        let pending = board.asked_of(w);
        if pending != 0 && pending.saturating_add(bytes as u64) > cap {
            return false;
        }
        board.ask(w, bytes);
        true
    }

    /// End of a loop iteration: drops `asked` bytes other workers asked of
    /// this one (see [`Relay::ask_older_worker`]); what its held clients did
    /// not have is asked of the worker with the next longest-held client, if
    /// the node is still past the limit. Returns when this worker's
    /// longest-held client became held, for the others (0: none): near the
    /// limit, of the longest-held one that still retains messages.
    pub fn serve_evictions(&mut self, asked: usize, board: &mut impl Board) -> u64 {
        let hard = self.rules.hard;
        if asked > 0 {
            let short = asked.saturating_sub(self.evict_held(asked));
            if short > 0 && self.node_retained() > hard {
                if let Some(w) = board.oldest_other(u64::MAX) {
                    board.ask(w, short);
                }
            }
        }
        let sessions = &self.sessions.slab;
        self.held_order.prune(|m| is_held(sessions, m));
        // Near the limit, the longest-held client that still has messages;
        // otherwise the longest-held one (kept O(1) while nothing is evicted),
        // and the next episode of pressure starts from it and warns again (as
        // in `trim`, for a worker whose clients receive nothing).
        if self.node_retained() > self.rules.soft() {
            self.oldest_with_messages()
        } else {
            self.held_order.rewind();
            self.budget_dropping = false;
            self.held_order.at_cursor().map_or(0, |(_, _, since)| since)
        }
    }

    /// When the session at the eviction cursor became held, after moving the
    /// cursor past sessions that are no longer held or retain nothing (they
    /// have nothing to give in this episode of memory pressure, as in
    /// [`Relay::evict_held`]); 0 if there is none.
    fn oldest_with_messages(&mut self) -> u64 {
        while let Some(mark) = self.held_order.at_cursor() {
            let has = is_held(&self.sessions.slab, mark)
                && self.sessions.slab[mark.0 as usize].log.len() > 0;
            if has {
                return mark.2;
            }
            self.held_order.advance();
        }
        0
    }

    // ----- Streams ending, timers -----

    /// The receive connection `conn` of session `sidx` (generation
    /// `sess_gen`) ended at `now` (`wall_ms` on the wall clock): the session
    /// becomes held. `None` if the session is gone or has a newer connection.
    /// Entries written but not confirmed count as undelivered (see
    /// [`Session::stream_ended`]).
    pub fn stream_closed(
        &mut self,
        sidx: usize,
        sess_gen: u32,
        conn: (u32, u32),
        end: StreamEnd,
        now: u64,
        wall_ms: u64,
    ) -> Option<Held> {
        let s = self.sessions.get_mut(sidx)?;
        if s.gen != sess_gen || s.conn != conn || conn.1 == 0 {
            return None; // replaced by a newer connection
        }
        s.conn = (0, 0);
        let rewound = s.stream_ended(end);
        s.held_since = now.max(1);
        s.since_ms = wall_ms;
        let mark: HeldMark = (sidx as u32, s.gen, s.held_since);
        let deadline = s.deadline(self.rules.hold_ms, now);
        self.held += 1;
        let sessions = &self.sessions.slab;
        self.held_order
            .push(mark, self.held, |m| is_held(sessions, m));
        Some(Held { rewound, deadline })
    }

    /// Session `sidx`, held, got a receive connection again: it is online.
    fn resumed(&mut self, sidx: usize) {
        if let Some(s) = self.sessions.get_mut(sidx) {
            if s.held_since > 0 {
                s.held_since = 0;
                self.held = self.held.saturating_sub(1);
            }
        }
    }

    /// A newer receive connection of session `sidx`'s client arrived: its
    /// current stream stops being the session's (the caller tells it so and
    /// closes it). What its client's TCP did not confirm (`end`) is taken
    /// back, so a stream that resumes without an id is sent it again.
    /// Returns the connection it had and how many entries were taken back;
    /// `None` if it had no stream.
    pub fn replace_stream(&mut self, sidx: usize, end: StreamEnd) -> Option<((u32, u32), u64)> {
        let s = self.sessions.get_mut(sidx)?;
        if s.conn.1 == 0 {
            return None;
        }
        let old = std::mem::take(&mut s.conn);
        Some((old, s.stream_ended(end)))
    }

    /// Attaches receive connection `conn` to session `sidx` at `now`
    /// (`wall_ms` on the wall clock): the session is online, and the new
    /// stream starts where `last_event_id` (or, without one, what was
    /// confirmed) says, after the gaps it must be told first; `lost` says
    /// why an earlier session may be lost (see [`Session::resume`]). The
    /// session's previous stream must have been replaced first
    /// ([`Relay::replace_stream`]). The caller writes the stream's head, the
    /// gaps, then [`Session::write_after`]`(from)`.
    pub fn attach(
        &mut self,
        sidx: usize,
        conn: (u32, u32),
        last_event_id: Option<&str>,
        lost: Option<&'static str>,
        now: u64,
        wall_ms: u64,
    ) -> Option<Attached> {
        self.resumed(sidx);
        let s = self.sessions.get_mut(sidx)?;
        debug_assert_eq!(s.conn.1, 0, "the previous stream was not replaced");
        s.conn = conn;
        s.since_ms = wall_ms;
        let Resume { from, gaps } = s.resume(last_event_id, lost);
        s.stream_started(from);
        Some(Attached {
            sess_gen: s.gen,
            epoch: s.epoch,
            from,
            gaps,
            deadline: s.deadline(self.rules.hold_ms, now),
        })
    }

    /// Session `sidx`'s timer fired at `now`: expired log entries go, and a
    /// held session whose hold ran out is removed and handed back.
    pub fn timer(&mut self, sidx: usize, now: u64) -> Timer {
        let hold = self.rules.hold_ms;
        let Some(s) = self.sessions.get_mut(sidx) else {
            return Timer::Rearm {
                deadline: 0,
                freed: false,
            };
        };
        let (gone, lost) = s.expire(now, hold);
        self.counters.dropped += lost as u64;
        if s.held_since > 0 && s.held_since + hold <= now {
            return match self.remove(sidx) {
                Some(s) => Timer::Expired(Box::new(s)),
                None => Timer::Rearm {
                    deadline: 0,
                    freed: false,
                },
            };
        }
        Timer::Rearm {
            deadline: s.deadline(hold, now),
            freed: gone > 0,
        }
    }

    // ----- Conversations -----

    /// Session `sidx` exchanged a message with `peer` at `now`.
    pub fn note_partner(&mut self, sidx: usize, peer: &str, now: u64) {
        let ttl = self.rules.conversation_ttl_ms;
        let Some(s) = self.sessions.get_mut(sidx) else {
            return;
        };
        if peer == s.client() {
            return;
        }
        let p = s.partners.get_or_insert_with(Default::default);
        remember_partner(p, peer, now, ttl, MAX_PARTNERS);
    }

    /// True if the conversation note `key` is due at `now`: the same note was
    /// not passed on within the last few seconds (at most half the
    /// `--conversation-ttl`, at most 5 s). Conversation times are then at most
    /// that much stale, against a `--conversation-ttl` of minutes. The memory
    /// of recent notes is lossy in the safe direction ([`RecentPairs`]).
    pub fn touch_due(&mut self, key: TouchKey<'_>, now: u64) -> bool {
        let window = (self.rules.conversation_ttl_ms / 2).min(TOUCH_WINDOW_MS);
        let h = self.pair_hasher.hash_one(key);
        self.pairs.due(h, now, window)
    }

    /// Forgets the conversation note `key`: the next one is due at once.
    pub fn touch_forget(&mut self, key: TouchKey<'_>) {
        let h = self.pair_hasher.hash_one(key);
        self.pairs.forget(h);
    }
}

/// The warning, once per episode of memory pressure, that held clients are
/// losing messages to `--hold-total-bytes`.
fn warn_budget(s: &Session, hard: usize, lost: u64) {
    log::warn!(
        "{} retained messages reached --hold-total-bytes ({} bytes); {} undelivered \
         message(s) of held client {} dropped, oldest first (its next stream starts with a \
         gap); clients held the longest lose theirs first",
        s.sid,
        hard,
        lost,
        s.key
    );
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;

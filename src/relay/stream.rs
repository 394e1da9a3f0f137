//! The rules of one session's stream of events, with no I/O: entries are
//! appended with the next sequence number; a receive stream is written the
//! entries after its resume point; when it ends, what its client's TCP did
//! not acknowledge counts as undelivered again; entries that leave the log
//! before they were handed out leave a gap, which the next stream reports
//! first. Time is passed in (monotonic milliseconds).
//!
//! The worker (`crate::server`) decides when to write and encodes the
//! events; [`crate::relay::sim`] checks these rules against a plain model
//! over seeded random schedules.

use super::retained::{Entry, EntryKind};
use super::session::Session;
use crate::ids::EventId;
use crate::proto::stream::Framing;

/// Where a new receive stream starts, and what it must be told first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resume {
    /// The stream is written the entries after this sequence number.
    pub from: u64,
    /// `gap` events to send before them: after which event id, and why
    /// (at most two: the client's previous session, then this one).
    pub gaps: Vec<(String, &'static str)>,
}

/// How a receive stream ended, as far as its delivery goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// The client's TCP acknowledged the stream's bytes up to here (`None`:
    /// not known; what was written counts as delivered).
    Acked(Option<u64>),
    /// Cut as a slow consumer: nothing written on it counts as delivered
    /// (an unread receive buffer is acknowledged too).
    SlowConsumer,
}

/// The retention limits of one session's log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogLimits {
    /// Most entries a log keeps.
    pub max_messages: usize,
    /// Most message bytes a log keeps (a single entry is always kept).
    pub max_bytes: usize,
}

/// Retained memory on the node, for trimming a log: past `soft` (three
/// quarters of `--hold-total-bytes`) delivered entries kept only for replay
/// go; past `hard`, a held client's undelivered ones make room too.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pressure {
    pub soft: usize,
    pub hard: usize,
    /// What the other workers retain (this worker's part is its thread's tally).
    pub others: usize,
}

/// What one [`Session::trim`] took out of a log.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Trimmed {
    /// Bytes freed against the budget.
    pub freed: usize,
    /// Entries that left for memory (`memory_limit`).
    pub memory_trims: u64,
    /// Entries that left before they were handed out (a gap for the client).
    pub lost: u64,
    /// Of those, the ones that left for memory.
    pub lost_for_memory: u64,
}

impl Session {
    /// Appends an entry accepted at `now`; returns its event id and the
    /// bytes it adds to the retained tally.
    pub(crate) fn push_entry(&mut self, now: u64, kind: EntryKind) -> (EventId, usize) {
        self.last_seq += 1;
        let e = Entry {
            seq: self.last_seq,
            at: now,
            wire_end: 0,
            kind,
        };
        let bytes = e.retained_bytes();
        self.log.push(e);
        let id = EventId {
            epoch: self.epoch,
            seq: self.last_seq,
        };
        (id, bytes)
    }

    /// Entries appended and not yet handed to a receive stream.
    pub(crate) fn undelivered(&self) -> usize {
        self.log.iter().filter(|e| e.seq > self.delivered).count()
    }

    /// The log holds more than `limits` allow.
    pub(crate) fn over_limits(&self, limits: LogLimits) -> bool {
        self.log.len() > limits.max_messages
            || (self.log.bytes() > limits.max_bytes && self.log.len() > 1)
    }

    /// Takes the oldest entry out of the log for `reason`. If it was never
    /// handed out, the loss is remembered for the next stream's `gap`.
    /// Returns the entry's retained bytes and whether it was undelivered.
    pub(crate) fn drop_front(&mut self, reason: &'static str) -> Option<(usize, bool)> {
        let e = self.log.pop_front()?;
        let bytes = e.retained_bytes();
        Some((bytes, self.forget(e, reason)))
    }

    /// Records that entry `e` left the log for `reason`; remembers a loss
    /// (and returns true) if it was never handed out.
    fn forget(&mut self, e: Entry, reason: &'static str) -> bool {
        self.set_trim_reason(reason);
        if e.seq > self.delivered {
            let after = self.log.lost().map_or(e.seq - 1, |l| l.0.min(e.seq - 1));
            self.log.set_lost(after, reason);
            return true;
        }
        false
    }

    /// Takes entries out of the log, oldest first: those past the log's own
    /// `limits` (`hold_limit`), delivered ones while the node is past
    /// `pressure.soft`, then, while it is past `pressure.hard`, up to
    /// `budget` bytes of the others (`memory_limit`). Entries a live stream
    /// (`live`) was not written yet stay: they are written at the end of
    /// the loop iteration and trimmed then.
    pub(crate) fn trim(
        &mut self,
        limits: LogLimits,
        pressure: Pressure,
        live: bool,
        budget: usize,
    ) -> Trimmed {
        let mut t = Trimmed::default();
        while let Some(front) = self.log.front() {
            let delivered = front.seq <= self.delivered;
            let total = super::retained::node_bytes(pressure.others);
            let (reason, counted) = if self.over_limits(limits) {
                ("hold_limit", false)
            } else if delivered && total > pressure.soft {
                ("memory_limit", false)
            } else if total > pressure.hard && t.freed < budget {
                ("memory_limit", true)
            } else {
                break;
            };
            if live && !delivered {
                break;
            }
            let Some((bytes, undelivered)) = self.drop_front(reason) else {
                break;
            };
            if counted {
                t.freed += bytes;
            }
            let memory = reason == "memory_limit";
            t.memory_trims += memory as u64;
            t.lost += undelivered as u64;
            t.lost_for_memory += (undelivered && memory) as u64;
        }
        self.log.compact();
        t
    }

    /// Drops the entries accepted `hold_ms` or longer before `now`. Returns
    /// how many left and how many of those were never handed out.
    pub(crate) fn expire(&mut self, now: u64, hold_ms: u64) -> (usize, usize) {
        let (mut gone, mut lost) = (0, 0);
        while self.log.front().is_some_and(|e| e.at + hold_ms <= now) {
            if let Some((_, undelivered)) = self.drop_front("retention_expired") {
                gone += 1;
                lost += undelivered as usize;
            }
        }
        self.log.compact();
        (gone, lost)
    }

    /// Where a new receive stream resumes, given the client's
    /// `Last-Event-ID` (if any) or a reason its previous session is known
    /// to be lost (`lost`, e.g. the cluster could not be asked for it).
    /// A resume from an id of this session's epoch starts after it (a gap
    /// first if entries after it already left the log); an id of another
    /// epoch is an unknown session (`unknown_epoch`); no id resumes after
    /// what was last confirmed, with a gap first if the log lost entries
    /// never handed out. The loss is then forgotten: if the stream ends
    /// before its client confirmed the `gap`, [`Session::stream_ended`]
    /// takes back what it was written and records the loss again.
    pub(crate) fn resume(
        &mut self,
        last_event_id: Option<&str>,
        lost: Option<&'static str>,
    ) -> Resume {
        let mut gaps = Vec::new();
        let first = self.log.front().map_or(self.last_seq + 1, |e| e.seq);
        // The client comes from another session (or one that may be lost).
        let mut foreign = lost.is_some();
        let from = match last_event_id {
            _ if lost.is_some() => {
                if let Some(r) = lost {
                    gaps.push((last_event_id.unwrap_or_default().to_string(), r));
                }
                0
            }
            Some(text) => match EventId::parse(text) {
                Some(id) if id.epoch == self.epoch => {
                    if id.seq < self.last_seq && first > id.seq + 1 {
                        let reason = self.log.lost().map_or(self.trim_reason(), |l| l.1);
                        gaps.push((text.to_string(), reason));
                    }
                    id.seq.min(self.last_seq)
                }
                _ => {
                    gaps.push((text.to_string(), "unknown_epoch"));
                    foreign = true;
                    0
                }
            },
            None => {
                if let Some((after, reason)) = self.log.lost() {
                    let id = EventId {
                        epoch: self.epoch,
                        seq: after,
                    };
                    gaps.push((id.to_string(), reason));
                }
                self.delivered
            }
        };
        // A client that comes from another session starts this one from
        // its beginning: entries of this session that already left the log
        // are a gap of their own.
        if foreign && first > 1 {
            let reason = self.log.lost().map_or(self.trim_reason(), |l| l.1);
            let id = EventId {
                epoch: self.epoch,
                seq: 0,
            };
            gaps.push((id.to_string(), reason));
        }
        self.log.clear_lost();
        Resume { from, gaps }
    }

    /// A new receive stream starts after `from` (see [`Session::resume`]);
    /// [`Session::write_after`] writes it what follows.
    pub(crate) fn stream_started(&mut self, from: u64) {
        self.attach_from = from;
        self.delivered = from.min(self.last_seq);
    }

    /// Encodes the entries after `from` into `out` for the receive stream,
    /// noting where each ends on the wire (`base` plus its end in `out`; the
    /// caller corrects that for framing it adds), and counts them as
    /// delivered. Returns how many were written.
    pub(crate) fn write_after(
        &mut self,
        from: u64,
        base: u64,
        framing: Framing,
        out: &mut Vec<u8>,
    ) -> usize {
        let n = self.last_seq.saturating_sub(from) as usize;
        let epoch = self.epoch;
        let mut written = 0;
        for e in self.log.newest_mut(n) {
            if e.seq > from {
                e.encode(epoch, framing, out);
                e.wire_end = base + out.len() as u64;
                written += 1;
            }
        }
        self.delivered = self.last_seq;
        written
    }

    /// The session's receive stream ended (`end` says how). Entries written
    /// to it that its client did not confirm count as undelivered again, so
    /// that a stream that resumes without an id is sent them again; if some
    /// of those already left the log, the next stream reports a gap.
    /// Returns how many entries were taken back.
    pub(crate) fn stream_ended(&mut self, end: StreamEnd) -> u64 {
        let from = self.attach_from;
        let delivered = self.delivered;
        let confirmed = match end {
            StreamEnd::SlowConsumer => from,
            StreamEnd::Acked(Some(acked)) => {
                let mut d = from;
                // Only what was written to this stream: entries after
                // `delivered` were not (their wire ends are not of it).
                for e in self
                    .log
                    .iter()
                    .filter(|e| e.seq > from && e.seq <= delivered)
                {
                    if e.wire_end > acked {
                        break;
                    }
                    d = e.seq;
                }
                d
            }
            StreamEnd::Acked(None) => self.delivered,
        };
        if confirmed >= self.delivered {
            return 0;
        }
        let back = self.delivered - confirmed;
        self.delivered = confirmed;
        let first = self.log.front().map_or(self.last_seq + 1, |e| e.seq);
        if first > confirmed + 1 && self.log.lost().is_none() {
            let reason = self.trim_reason();
            self.log.set_lost(confirmed, reason);
        }
        back
    }

    /// When the session next needs attention: the end of its hold if it is
    /// held, else when its oldest entry expires; 0 = never.
    pub(crate) fn deadline(&self, hold_ms: u64, now: u64) -> u64 {
        let mut d = 0u64;
        if self.held_since > 0 {
            d = self.held_since + hold_ms;
        }
        if let Some(e) = self.log.front() {
            let t = e.at + hold_ms;
            d = if d == 0 { t } else { d.min(t) };
        }
        if d != 0 {
            d = d.max(now);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: u64) -> EntryKind {
        EntryKind::Message {
            from: "tx".into(),
            body: n.to_string().into_bytes().into_boxed_slice(),
            json: false,
        }
    }

    fn session() -> Session {
        let mut s = Session::blank("acme/rx".into(), 4);
        s.epoch = 0xabc;
        s
    }

    /// A gap whose stream ended before its client's TCP confirmed anything
    /// after it is reported again to a stream that resumes without an id
    /// (at least once: with nothing after it to confirm, it is told again).
    #[test]
    fn an_unconfirmed_gap_is_reported_again() {
        let mut s = session();
        for n in 1..=3 {
            s.push_entry(0, message(n));
        }
        // Held: all three leave the log before they were handed out.
        while s.drop_front("hold_limit").is_some() {}
        let r = s.resume(None, None);
        assert_eq!(r.gaps, [("abc-0".to_string(), "hold_limit")]);
        s.stream_started(r.from);
        let _ = s.write_after(r.from, 40, Framing::Plain, &mut Vec::new());
        s.stream_ended(StreamEnd::Acked(Some(10)));
        let again = s.resume(None, None);
        assert_eq!(again.gaps, r.gaps, "the gap the client never got");
        // Once a message after the gap is confirmed, the loss is not told again.
        s.stream_started(again.from);
        s.push_entry(0, message(4));
        let mut out = Vec::new();
        s.write_after(again.from, 40, Framing::Plain, &mut out);
        s.stream_ended(StreamEnd::Acked(Some(40 + out.len() as u64)));
        assert!(s.resume(None, None).gaps.is_empty(), "confirmed: told once");
    }

    /// What a stream was written and its client's TCP did not acknowledge
    /// counts as undelivered once it ends; a slow-consumer cut takes back
    /// everything written on it.
    #[test]
    fn unacknowledged_entries_are_taken_back() {
        let mut s = session();
        let r = s.resume(None, None);
        s.stream_started(r.from);
        let mut out = Vec::new();
        for n in 1..=4 {
            s.push_entry(0, message(n));
            let from = s.delivered;
            s.write_after(from, 0, Framing::Plain, &mut out);
        }
        let ends: Vec<u64> = s.log.iter().map(|e| e.wire_end).collect();
        assert_eq!(s.stream_ended(StreamEnd::Acked(Some(ends[1]))), 2);
        assert_eq!(s.delivered, 2);
        let r = s.resume(None, None);
        assert_eq!(r.from, 2);
        s.stream_started(r.from);
        let mut out = Vec::new();
        assert_eq!(s.write_after(r.from, 0, Framing::Plain, &mut out), 2);
        assert_eq!(s.stream_ended(StreamEnd::SlowConsumer), 2);
        assert_eq!(s.delivered, 2);
    }

    /// A client resuming with an id of an older session hears of that one
    /// (`unknown_epoch`) and of this session's own first entries that left
    /// the log before it came.
    #[test]
    fn a_foreign_id_gets_two_gaps_when_this_session_lost_its_start() {
        let mut s = session();
        for n in 1..=3 {
            s.push_entry(0, message(n));
        }
        s.drop_front("retention_expired");
        let r = s.resume(Some("def-7"), None);
        assert_eq!(r.from, 0);
        assert_eq!(
            r.gaps,
            [
                ("def-7".to_string(), "unknown_epoch"),
                ("abc-0".to_string(), "retention_expired")
            ]
        );
    }

    /// Dropping an entry never handed out records the loss; dropping a
    /// delivered one does not.
    #[test]
    fn only_undelivered_drops_are_losses() {
        let mut s = session();
        s.push_entry(0, message(1));
        s.push_entry(0, message(2));
        s.stream_started(0);
        s.write_after(0, 0, Framing::Plain, &mut Vec::new());
        s.push_entry(0, message(3));
        assert_eq!(s.drop_front("memory_limit").map(|d| d.1), Some(false));
        assert_eq!(s.log.lost(), None);
        s.drop_front("memory_limit");
        assert_eq!(s.drop_front("memory_limit").map(|d| d.1), Some(true));
        assert_eq!(s.log.lost(), Some((2, "memory_limit")));
    }
}

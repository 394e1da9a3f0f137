//! A session's retained events (for holding and Last-Event-ID replay), and
//! the encoding of a whole session for handing it to another node.

use std::cell::Cell;
use std::collections::VecDeque;

use hashbrown::HashMap;

use super::session::{Session, MAX_PARTNERS};
use crate::ids::EventId;
use crate::proto::events;
use crate::proto::stream::Framing;

/// What a retained log entry carries.
pub(crate) enum EntryKind {
    Message {
        /// The sender's id, shared by all its retained messages when it
        /// came from a verified token (`Identity::client`).
        from: std::sync::Arc<str>,
        body: Box<[u8]>,
        /// The body is compact JSON, delivered as a value (`"json"`), not
        /// as a string (see `proto::json_body`). In the padding after the
        /// enum's tag: entries are no larger for it (see the test
        /// `an_entry_is_64_bytes`).
        json: bool,
    },
    PeerGone {
        peer: Box<str>,
        reason: &'static str,
    },
}

/// One retained event of a session.
pub(crate) struct Entry {
    pub(crate) seq: u64,
    /// Monotonic ms when it was accepted.
    pub(crate) at: u64,
    /// Where its frame ended in the byte stream of the receive connection it
    /// was last written to (to tell, when that connection ends, whether the
    /// client's TCP acknowledged it).
    pub(crate) wire_end: u64,
    pub(crate) kind: EntryKind,
}

impl Entry {
    pub(crate) fn size(&self) -> usize {
        match &self.kind {
            EntryKind::Message { from, body, .. } => from.len() + body.len(),
            EntryKind::PeerGone { peer, .. } => peer.len(),
        }
    }

    /// What this entry counts for in the tally (and against
    /// `--hold-total-bytes`): its message bytes and [`ENTRY_OVERHEAD`].
    pub(crate) fn retained_bytes(&self) -> usize {
        self.size() + ENTRY_OVERHEAD
    }

    /// Appends this entry's event, encoded for the stream's transport.
    pub(crate) fn encode(&self, epoch: u64, framing: Framing, out: &mut Vec<u8>) {
        let id = EventId {
            epoch,
            seq: self.seq,
        };
        match &self.kind {
            EntryKind::Message { from, body, json } => {
                events::message(out, framing, id, from, body, *json)
            }
            EntryKind::PeerGone { peer, reason } => {
                let id = id.to_string();
                let data = serde_json::json!({"peer": peer, "reason": reason}).to_string();
                events::encode(out, framing, Some(&id), "peer-gone", &data);
            }
        }
    }
}

thread_local! {
    /// Bytes ([`Entry::size`]) and number of the entries retained in every
    /// log of this thread: a worker's sessions live on its thread only (a
    /// session handed to another worker or node travels as a snapshot), so
    /// this is the worker's total, kept without touching the worker.
    static TALLY: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// What the tally counts for an entry besides its message bytes: the entry
/// itself in its log's ring (the body's allocation adds a little more).
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>();

/// Bytes and entries retained in all the logs of the calling thread (a
/// worker's sessions): what `--hold-total-bytes` limits. The bytes are the
/// messages' (body and sender id) plus [`ENTRY_OVERHEAD`] each.
pub(crate) fn thread_tally() -> (usize, usize) {
    TALLY.with(|t| t.get())
}

/// Retained bytes on the node: this thread's tally plus `others`, what the
/// other workers last published.
pub(crate) fn node_bytes(others: usize) -> usize {
    thread_tally().0 + others
}

fn tally_add(bytes: usize, n: usize) {
    TALLY.with(|t| {
        let (b, e) = t.get();
        t.set((b + bytes, e + n));
    });
}

fn tally_sub(bytes: usize, n: usize) {
    TALLY.with(|t| {
        let (b, e) = t.get();
        t.set((b.saturating_sub(bytes), e.saturating_sub(n)));
    });
}

/// A session's retained events. Boxed, and only while there is something in
/// it, so an idle session pays one pointer for it.
#[derive(Default)]
pub(crate) struct Log(Option<Box<LogInner>>);

struct LogInner {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Entries never handed to the client were dropped after this sequence number, for this reason.
    lost: Option<(u64, &'static str)>,
}

impl Drop for LogInner {
    /// A log that goes (its session ended, or it was emptied) leaves the tally.
    fn drop(&mut self) {
        let n = self.entries.len();
        tally_sub(self.bytes + n * ENTRY_OVERHEAD, n);
    }
}

impl Log {
    fn inner(&mut self) -> &mut LogInner {
        self.0.get_or_insert_with(|| {
            Box::new(LogInner {
                entries: VecDeque::new(),
                bytes: 0,
                lost: None,
            })
        })
    }
    pub(crate) fn push(&mut self, e: Entry) {
        let l = self.inner();
        l.bytes += e.size();
        tally_add(e.retained_bytes(), 1);
        l.entries.push_back(e);
    }
    pub(crate) fn pop_front(&mut self) -> Option<Entry> {
        let l = self.0.as_mut()?;
        let e = l.entries.pop_front()?;
        l.bytes -= e.size();
        tally_sub(e.retained_bytes(), 1);
        Some(e)
    }
    pub(crate) fn front(&self) -> Option<&Entry> {
        self.0.as_ref()?.entries.front()
    }
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.0.iter_mut().flat_map(|l| l.entries.iter_mut())
    }
    /// The newest `n` entries (all of them if there are fewer), oldest first.
    pub(crate) fn newest_mut(&mut self, n: usize) -> impl Iterator<Item = &mut Entry> {
        self.0.iter_mut().flat_map(move |l| {
            let from = l.entries.len().saturating_sub(n);
            l.entries.range_mut(from..)
        })
    }
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.0.iter().flat_map(|l| l.entries.iter())
    }
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |l| l.entries.len())
    }
    pub(crate) fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |l| l.bytes)
    }
    pub(crate) fn lost(&self) -> Option<(u64, &'static str)> {
        self.0.as_ref()?.lost
    }
    pub(crate) fn set_lost(&mut self, after: u64, reason: &'static str) {
        self.inner().lost = Some((after, reason));
    }
    pub(crate) fn clear_lost(&mut self) {
        if let Some(l) = self.0.as_mut() {
            l.lost = None;
        }
        self.compact();
    }
    /// Gives memory back: frees the log when nothing is in it, shrinks it after a burst.
    pub(crate) fn compact(&mut self) {
        let Some(l) = self.0.as_mut() else { return };
        if l.entries.is_empty() && l.lost.is_none() {
            self.0 = None;
        } else if l.entries.capacity() > 64 && l.entries.len() < l.entries.capacity() / 4 {
            l.entries.shrink_to(l.entries.len() * 2);
        }
    }
}

/// Encodes a session for handing it to another node: epoch, sequence
/// numbers, retained events (with their ages) and conversation partners;
/// then, only if some retained messages are JSON (`EntryKind::Message`'s
/// `json`), their positions in the log (a count, then each). A snapshot
/// without JSON messages is byte for byte what nodes before 2026-12-07 made;
/// one with them is refused whole by such a node (bytes after the partners),
/// rather than read as something else.
pub(crate) fn export_snapshot(s: &Session, now: u64) -> Vec<u8> {
    use crate::cluster::wire::Writer;
    let mut w = Writer::default();
    w.u64(s.epoch).u64(s.last_seq).u64(s.delivered);
    match s.log.lost() {
        Some((after, reason)) => w.u8(1).u64(after).str(reason),
        None => w.u8(0),
    };
    w.str(s.trim_reason());
    w.u64(s.log.len() as u64);
    for e in s.log.iter() {
        w.u64(e.seq).u64(now.saturating_sub(e.at));
        match &e.kind {
            EntryKind::Message { from, body, .. } => w.u8(0).str(from).bytes(body),
            EntryKind::PeerGone { peer, reason } => w.u8(1).str(peer).str(reason),
        };
    }
    let partners: Vec<(&str, u64)> = s
        .partners
        .iter()
        .flat_map(|p| p.iter())
        .map(|(k, t)| (&**k, now.saturating_sub(*t)))
        .collect();
    w.u64(partners.len() as u64);
    for (k, age) in partners {
        w.str(k).u64(age);
    }
    let json = || {
        s.log
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.kind, EntryKind::Message { json: true, .. }))
            .map(|(i, _)| i as u64)
    };
    let n = json().count();
    if n > 0 {
        w.u64(n as u64);
        for i in json() {
            w.u64(i);
        }
    }
    w.0
}

/// Why entries leave a log early, as `gap` events name it. A session keeps
/// the index of the latest in `Session::trim`, so that the reason outlives
/// the log (freed when it is empty: a client that resumes from an id whose
/// entries all went is still told why). 0, `retention_limit`: none recorded
/// (or one another node named that this one does not know).
pub(crate) const TRIM_REASONS: [&str; 4] = [
    "retention_limit",
    "hold_limit",
    "memory_limit",
    "retention_expired",
];

/// The index of `r` in [`TRIM_REASONS`] (0 if it is not there).
pub(crate) fn trim_index(r: &str) -> u8 {
    TRIM_REASONS.iter().position(|&t| t == r).unwrap_or(0) as u8
}

/// Maps a reason received from another node to one of ours (all static strings).
fn known_reason(r: &str) -> &'static str {
    match r {
        "hold_limit" => "hold_limit",
        "memory_limit" => "memory_limit",
        "retention_expired" => "retention_expired",
        "offline" => "offline",
        "node_lost" => "node_lost",
        _ => "retention_limit",
    }
}

/// Fills a fresh session from a snapshot made by [`export_snapshot`].
pub(crate) fn import_snapshot(
    s: &mut Session,
    bytes: &[u8],
    now: u64,
) -> Result<(), crate::cluster::wire::WireError> {
    use crate::cluster::wire::{Reader, WireError};
    let mut r = Reader::new(bytes);
    let epoch = r.u64()?;
    let last_seq = r.u64()?;
    let delivered = r.u64()?;
    let lost = match r.u8()? {
        0 => None,
        _ => Some((r.u64()?, known_reason(&r.string()?))),
    };
    let trim = known_reason(&r.string()?);
    let n = r.u64()?;
    let mut log = Log::default();
    for _ in 0..n {
        let seq = r.u64()?;
        let age = r.u64()?;
        let kind = match r.u8()? {
            0 => EntryKind::Message {
                from: r.string()?.into(),
                body: r.bytes()?.into(),
                json: false,
            },
            _ => EntryKind::PeerGone {
                peer: r.string()?.into(),
                reason: known_reason(&r.string()?),
            },
        };
        log.push(Entry {
            wire_end: 0,
            seq,
            at: now.saturating_sub(age),
            kind,
        });
    }
    let np = r.u64()?;
    let mut partners: HashMap<Box<str>, u64> = HashMap::default();
    for _ in 0..np {
        let k = r.string()?;
        let age = r.u64()?;
        if partners.len() < MAX_PARTNERS {
            partners.insert(k.into(), now.saturating_sub(age));
        }
    }
    if !r.is_empty() {
        // The positions of the JSON messages, in increasing order.
        let n = r.u64()?;
        let mut entries = log.iter_mut().enumerate();
        for _ in 0..n {
            let at = r.u64()?;
            match entries.find(|(i, _)| *i as u64 == at) {
                Some((_, e)) => match &mut e.kind {
                    EntryKind::Message { json, .. } => *json = true,
                    EntryKind::PeerGone { .. } => return Err(WireError::TrailingBytes),
                },
                None => return Err(WireError::TrailingBytes),
            }
        }
    }
    r.finish()?;
    if delivered > last_seq || log.iter().any(|e| e.seq > last_seq) {
        return Err(WireError::TrailingBytes);
    }
    s.epoch = epoch;
    s.last_seq = last_seq;
    s.delivered = delivered;
    if let Some((after, reason)) = lost {
        log.set_lost(after, reason);
    }
    s.set_trim_reason(trim);
    log.compact();
    s.log = log;
    s.partners = (!partners.is_empty()).then(|| Box::new(partners));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, len: usize) -> Entry {
        Entry {
            seq,
            at: 0,
            wire_end: 0,
            kind: EntryKind::Message {
                from: "console-1".into(),
                body: vec![b'x'; len].into_boxed_slice(),
                json: false,
            },
        }
    }

    fn json_message(seq: u64, body: &str) -> Entry {
        Entry {
            seq,
            at: 0,
            wire_end: 0,
            kind: EntryKind::Message {
                from: "console-1".into(),
                body: body.as_bytes().into(),
                json: true,
            },
        }
    }

    /// The JSON flag of a message lives in the padding after the enum's tag:
    /// an entry is as large as it was without it (what the density and the
    /// `--hold-total-bytes` tally count per entry).
    #[test]
    fn an_entry_is_64_bytes() {
        assert_eq!(std::mem::size_of::<EntryKind>(), 40);
        assert_eq!(std::mem::size_of::<Entry>(), 64);
    }

    /// What a session's log says of its messages: (seq, json, body).
    fn messages(s: &Session) -> Vec<(u64, bool, Vec<u8>)> {
        s.log
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Message { body, json, .. } => Some((e.seq, *json, body.to_vec())),
                EntryKind::PeerGone { .. } => None,
            })
            .collect()
    }

    /// JSON messages keep their flag through a hand-over, among plain
    /// messages and a peer-gone; a snapshot without any is exactly the
    /// layout of nodes before 2026-12-07 (no trailing section), and such a
    /// snapshot still imports, its messages plain.
    #[test]
    fn json_messages_survive_a_handoff_and_old_snapshots_still_import() {
        let mut s = Session::blank("acme/agent-1".into(), 4);
        s.last_seq = 4;
        s.log.push(message(1, 3));
        s.log.push(json_message(2, "{\"cmd\":\"backup\"}"));
        s.log.push(Entry {
            seq: 3,
            at: 0,
            wire_end: 0,
            kind: EntryKind::PeerGone {
                peer: "x".into(),
                reason: "offline",
            },
        });
        s.log.push(json_message(4, "[1,2]"));
        let bytes = export_snapshot(&s, 0);
        let mut t = Session::blank("acme/agent-1".into(), 4);
        import_snapshot(&mut t, &bytes, 0).expect("import");
        assert_eq!(messages(&t), messages(&s));
        assert_eq!(
            messages(&t).iter().map(|m| (m.0, m.1)).collect::<Vec<_>>(),
            [(1, false), (2, true), (4, true)]
        );
        // Encoded in the trailing section: count 2, positions 1 and 3.
        let mut tail = Vec::new();
        for v in [2u64, 1, 3] {
            tail.extend_from_slice(&v.to_le_bytes());
        }
        assert!(bytes.ends_with(&tail));
        let old_layout = &bytes[..bytes.len() - tail.len()];
        let mut u = Session::blank("acme/agent-1".into(), 4);
        import_snapshot(&mut u, old_layout, 0).expect("old layout imports");
        assert_eq!(
            messages(&u).iter().map(|m| (m.0, m.1)).collect::<Vec<_>>(),
            [(1, false), (2, false), (4, false)]
        );
        // Without JSON messages, nothing is added.
        let mut v = Session::blank("acme/agent-1".into(), 4);
        v.last_seq = 1;
        v.log.push(message(1, 3));
        let plain = export_snapshot(&v, 0);
        let mut w = Session::blank("acme/agent-1".into(), 4);
        import_snapshot(&mut w, &plain, 0).expect("import");
        assert_eq!(messages(&w), messages(&v));
        assert!(plain.ends_with(&0u64.to_le_bytes()), "ends with 0 partners");
        // A position that is not a message, or past the log, is refused.
        for bad in [[1u64, 2], [1, 4]] {
            let mut b = old_layout.to_vec();
            for x in bad {
                b.extend_from_slice(&x.to_le_bytes());
            }
            let mut x = Session::blank("acme/agent-1".into(), 4);
            assert!(import_snapshot(&mut x, &b, 0).is_err(), "{bad:?}");
        }
        for n in 1..tail.len() {
            let mut x = Session::blank("acme/agent-1".into(), 4);
            assert!(import_snapshot(&mut x, &bytes[..bytes.len() - n], 0).is_err());
        }
    }

    /// The thread's tally follows every way an entry enters or leaves a log,
    /// dropping a whole log included (each test runs on a thread of its own).
    #[test]
    fn the_tally_follows_push_pop_and_drop() {
        let base = thread_tally();
        let mut a = Log::default();
        let mut b = Log::default();
        a.push(message(1, 100));
        a.push(message(2, 200));
        b.push(message(1, 50));
        let each = |len: usize| len + "console-1".len() + ENTRY_OVERHEAD;
        assert_eq!(
            thread_tally(),
            (base.0 + each(100) + each(200) + each(50), base.1 + 3)
        );
        let e = a.pop_front().expect("entry");
        assert_eq!(e.seq, 1);
        assert_eq!(thread_tally(), (base.0 + each(200) + each(50), base.1 + 2));
        drop(b);
        assert_eq!(thread_tally(), (base.0 + each(200), base.1 + 1));
        a.pop_front();
        a.compact();
        assert_eq!(thread_tally(), base);
        a.push(message(3, 10));
        drop(a);
        assert_eq!(thread_tally(), base);
    }

    /// A session handed to another node keeps a `memory_limit` loss (so the
    /// client's next stream there names it) and its entries, and the
    /// receiving thread's tally counts them; a failed import leaves no trace.
    #[test]
    fn a_memory_limit_loss_survives_a_handoff() {
        let base = thread_tally();
        let mut s = Session::blank("acme/agent-1".into(), 4);
        s.last_seq = 7;
        s.delivered = 3;
        s.log.push(message(6, 100));
        s.log.push(message(7, 50));
        s.log.set_lost(5, "memory_limit");
        s.set_trim_reason("memory_limit");
        let bytes = export_snapshot(&s, 1_000);
        drop(s);
        assert_eq!(thread_tally(), base);

        let mut t = Session::blank("acme/agent-1".into(), 4);
        import_snapshot(&mut t, &bytes, 2_000).expect("import");
        assert_eq!(t.log.lost(), Some((5, "memory_limit")));
        assert_eq!(t.trim_reason(), "memory_limit");
        assert_eq!(t.log.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7]);
        assert_eq!(thread_tally().1, base.1 + 2);
        drop(t);
        assert_eq!(thread_tally(), base);

        let mut u = Session::blank("acme/agent-1".into(), 4);
        assert!(import_snapshot(&mut u, &bytes[..bytes.len() - 3], 2_000).is_err());
        drop(u);
        assert_eq!(
            thread_tally(),
            base,
            "a truncated snapshot leaves no entries counted"
        );
    }
}

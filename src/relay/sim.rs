//! Deterministic simulation of one client's session against a plain model.
//!
//! A seeded schedule drives the session's rules ([`super::stream`]) the way
//! the worker does, with a simulated clock and a simulated receive stream
//! whose client reads part of what was written and whose TCP acknowledged
//! part of that: sends (written at once or at the end of an iteration),
//! partial reads, clean closes, resets with unacknowledged bytes, slow
//! consumer cuts, a newer connection replacing the stream, resumes with the
//! last event id received or without one (a client that restarted), time
//! passing (entries expire, a hold runs out), the per-session retention
//! limits and node-wide memory pressure.
//!
//! After every schedule the client makes one last resume with its last id
//! and reads everything; then every accepted message must have reached it
//! once, in order, or be covered by a `gap` it was told, or have gone with
//! a session whose hold ran out (its partners are told `peer-gone`). A
//! message may arrive twice only where the documented at-least-once rule
//! allows it: the client resumed without an id and the message was
//! written but not confirmed by its TCP. Retained bytes must return to zero.
//!
//! `cargo test` runs [`SEEDS`] seeds; `tools/sim SECONDS` runs seeds for
//! that long; `SIM_SEED=<n>` replays one seed with its trace printed.

use std::collections::{HashMap, HashSet};

use super::retained::{thread_tally, EntryKind};
use super::session::Session;
use super::stream::{LogLimits, Pressure, StreamEnd};
use crate::ids::EventId;
use crate::proto::sse;

/// Seeds `cargo test` runs.
pub const SEEDS: u64 = 4_000;
/// Steps of one schedule.
const STEPS: usize = 300;

/// splitmix64: small, fast and the same everywhere.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in `lo..=hi`.
    pub(super) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// An event as the client parses it.
#[derive(Debug, Clone)]
pub(super) enum Seen {
    /// Message number `.0` with event id `.1`.
    Message(u64, EventId),
    /// A `gap` event: after which id (as sent), and why.
    Gap(String, &'static str),
}

/// The receive stream, as both ends see it.
#[derive(Default)]
pub(super) struct Stream {
    /// Bytes the server wrote.
    pub(super) written: u64,
    /// Each event and where it ends in the byte stream, in order.
    pub(super) events: Vec<(u64, Seen)>,
    /// Bytes the client read (and parsed).
    pub(super) read: u64,
    /// Events the client has taken.
    pub(super) taken: usize,
}

impl Stream {
    /// The client reads up to `upto` bytes (at most what was written);
    /// returns the events that became complete.
    pub(super) fn read_to(&mut self, upto: u64) -> Vec<Seen> {
        self.read = self.read.max(upto.min(self.written));
        let mut got = Vec::new();
        while let Some((end, ev)) = self.events.get(self.taken) {
            if *end > self.read {
                break;
            }
            got.push(ev.clone());
            self.taken += 1;
        }
        got
    }
}

/// What the client received, and what the model allows it.
#[derive(Default)]
pub(super) struct Client {
    /// Message numbers in the order they arrived (repeats included).
    pub(super) got: Vec<u64>,
    pub(super) received: HashSet<u64>,
    /// The id of the last message received (what an EventSource resumes with).
    pub(super) last_id: Option<String>,
    /// Gaps received and not closed by a later message: (epoch, after seq,
    /// to the end of the epoch).
    pub(super) open_gaps: Vec<(u64, u64, bool)>,
    /// Messages covered by a gap the client was told.
    pub(super) covered: HashSet<u64>,
    /// Messages the client may receive again (at-least-once after a resume without id).
    pub(super) may_repeat: HashSet<u64>,
}

impl Client {
    /// The client parses event `ev`; `accepted` are the messages accepted
    /// for it so far. Returns a line for the trace.
    pub(super) fn receive(&mut self, ev: Seen, accepted: &[(u64, EventId)]) -> Option<String> {
        match ev {
            Seen::Gap(after, reason) => {
                let line = format!("client: gap after {after} ({reason})");
                let to_end = reason == "unknown_epoch";
                if let Some(id) = EventId::parse(&after) {
                    self.open_gaps.push((id.epoch, id.seq, to_end));
                }
                Some(line)
            }
            Seen::Message(n, id) => {
                let line = format!("client: #{n} ({id})");
                // A gap covers what follows its id up to the next event
                // with a higher id of the same session (or, for an unknown
                // epoch, the rest of that session).
                let open = std::mem::take(&mut self.open_gaps);
                for (epoch, after, to_end) in open {
                    if id.epoch == epoch && id.seq <= after {
                        self.open_gaps.push((epoch, after, to_end));
                        continue;
                    }
                    for &(m, mid) in accepted {
                        let before_this = to_end || mid.epoch != id.epoch || mid.seq < id.seq;
                        if mid.epoch == epoch && mid.seq > after && before_this {
                            self.covered.insert(m);
                        }
                    }
                }
                self.got.push(n);
                self.received.insert(n);
                self.last_id = Some(id.to_string());
                Some(line)
            }
        }
    }

    /// Every message of `accepted` arrived once and in order, or was
    /// covered by a gap, or went with a session whose hold ran out (`gone`);
    /// it arrived twice only if it may (at-least-once without an id).
    pub(super) fn check(
        &self,
        accepted: &[(u64, EventId)],
        gone: &HashSet<u64>,
    ) -> Result<(), String> {
        let c = self;
        let mut seen = HashSet::new();
        let mut newest = 0;
        for &n in &c.got {
            if !seen.insert(n) {
                if !c.may_repeat.contains(&n) {
                    return Err(format!("message #{n} arrived twice"));
                }
                continue;
            }
            if n < newest {
                return Err(format!("message #{n} arrived after #{newest}"));
            }
            newest = n;
        }
        for &(n, id) in accepted {
            if !c.received.contains(&n) && !c.covered.contains(&n) && !gone.contains(&n) {
                return Err(format!(
                    "message #{n} ({id}) was accepted, never arrived and no gap covered it"
                ));
            }
        }
        Ok(())
    }
}

/// A schedule's failure: what went wrong and the trace that led there.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub what: String,
    pub trace: Vec<String>,
}

struct Sim {
    rng: Rng,
    now: u64,
    hold_ms: u64,
    limits: LogLimits,
    pressure: Pressure,
    session: Option<Session>,
    /// The session's stream, while one is attached.
    stream: Option<Stream>,
    client: Client,
    /// Accepted messages: number -> event id.
    accepted: Vec<(u64, EventId)>,
    by_id: HashMap<(u64, u64), u64>,
    /// Messages whose session's hold ran out before they were delivered.
    gone_with_session: HashSet<u64>,
    /// Written on the stream that ended last, with where they ended, and
    /// what its client's TCP acknowledged (None: a slow-consumer cut).
    last_stream: Vec<(u64, u64)>,
    last_acked: Option<u64>,
    tally_base: (usize, usize),
    trace: Vec<String>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let hold_ms = rng.between(500, 5_000);
        let limits = LogLimits {
            max_messages: rng.between(2, 40) as usize,
            max_bytes: rng.between(200, 4_000) as usize,
        };
        let hard = rng.between(1_000, 20_000) as usize;
        let pressure = Pressure {
            soft: hard / 4 * 3,
            hard,
            others: 0,
        };
        Sim {
            rng,
            now: 1,
            hold_ms,
            limits,
            pressure,
            session: None,
            stream: None,
            client: Client::default(),
            accepted: Vec::new(),
            by_id: HashMap::new(),
            gone_with_session: HashSet::new(),
            last_stream: Vec::new(),
            last_acked: None,
            tally_base: thread_tally(),
            trace: Vec::new(),
        }
    }

    fn note(&mut self, s: String) {
        self.trace.push(format!("t={} {s}", self.now));
    }

    /// The worker's retention step after an append (`Worker::trim` for one session).
    fn trim(&mut self, grown: usize) {
        let live = self.stream.is_some();
        let (limits, p) = (self.limits, self.pressure);
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let node = super::retained::node_bytes(p.others);
        if !s.over_limits(limits) && node <= p.soft {
            s.log.compact();
            return;
        }
        let t = s.trim(limits, p, live, 0);
        let mut lost = t.lost;
        if s.held_since > 0 && super::retained::node_bytes(p.others) > p.hard {
            lost += s.trim(limits, p, live, grown).lost;
        }
        if lost > 0 {
            self.note(format!("trim dropped {lost} undelivered"));
        }
    }

    fn send(&mut self, write_now: bool) {
        let n = self.accepted.len() as u64 + 1;
        let now = self.now;
        let Some(s) = self.session.as_mut() else {
            return; // 404: not accepted, nothing to account for
        };
        let kind = EntryKind::Message {
            from: "sender".into(),
            // A number is JSON too: every other message is sent as JSON.
            body: n.to_string().into_bytes().into_boxed_slice(),
            json: n.is_multiple_of(2),
        };
        let (id, grown) = s.push_entry(now, kind);
        self.accepted.push((n, id));
        self.by_id.insert((id.epoch, id.seq), n);
        self.note(format!("send #{n} -> {id}"));
        self.trim(grown);
        if write_now {
            self.flush();
        }
    }

    /// Writes what the stream was not written yet (the end of a loop iteration).
    fn flush(&mut self) {
        let Some(st) = self.stream.as_mut() else {
            return;
        };
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if s.delivered >= s.last_seq {
            return;
        }
        let from = s.delivered;
        let mut out = Vec::new();
        s.write_after(
            from,
            st.written,
            crate::proto::stream::Framing::Plain,
            &mut out,
        );
        record(st, s, from, out.len());
        // Entries held back from trimming until written are trimmed now.
        self.trim(0);
    }

    fn attach(&mut self, with_id: bool) {
        if self.stream.is_some() {
            self.replace();
        }
        if self.session.is_none() {
            let mut s = Session::blank("acme/rx".into(), 4);
            s.epoch = self.rng.below(1 << 40) + 1;
            self.note(format!("new session epoch {:x}", s.epoch));
            self.session = Some(s);
        }
        let leid = if with_id {
            self.client.last_id.clone()
        } else {
            None
        };
        if leid.is_none() {
            // A client that lost its place may be written again what it
            // read and its TCP had not confirmed.
            let acked = self.last_acked;
            for &(n, end) in &self.last_stream {
                if acked.is_none_or(|a| end > a) {
                    self.client.may_repeat.insert(n);
                }
            }
        }
        let Some(s) = self.session.as_mut() else {
            return;
        };
        s.held_since = 0;
        let r = s.resume(leid.as_deref(), None);
        let mut st = Stream::default();
        let mut out = Vec::new();
        for (after, reason) in &r.gaps {
            let data = format!("{{\"after\":\"{after}\",\"reason\":\"{reason}\"}}");
            sse::encode_event(&mut out, None, Some("gap"), &data);
            st.events
                .push((out.len() as u64, Seen::Gap(after.clone(), reason)));
        }
        s.stream_started(r.from);
        let head = out.len();
        s.write_after(r.from, 0, crate::proto::stream::Framing::Plain, &mut out);
        st.written = head as u64;
        record(&mut st, s, r.from, out.len() - head);
        self.note(format!(
            "attach leid={leid:?} from={} gaps={:?}",
            r.from, r.gaps
        ));
        self.stream = Some(st);
        self.last_stream.clear();
        self.last_acked = None;
        self.trim(0);
    }

    /// The client reads up to `upto` bytes of its stream and parses what is complete.
    fn read(&mut self, upto: u64) {
        let Some(st) = self.stream.as_mut() else {
            return;
        };
        let got = st.read_to(upto);
        for ev in got {
            self.receive(ev);
        }
    }

    fn receive(&mut self, ev: Seen) {
        if let Some(line) = self.client.receive(ev, &self.accepted) {
            self.note(line);
        }
    }

    /// The stream ends: `acked` is what the client's TCP acknowledged
    /// (`None`: a slow-consumer cut, nothing confirmed).
    fn end_stream(&mut self, acked: Option<u64>) {
        let Some(st) = self.stream.take() else {
            return;
        };
        self.last_stream = st
            .events
            .iter()
            .take(st.taken)
            .filter_map(|(end, e)| match e {
                Seen::Message(n, _) => Some((*n, *end)),
                Seen::Gap(..) => None,
            })
            .collect();
        self.last_acked = acked;
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let end = match acked {
            Some(a) => StreamEnd::Acked(Some(a)),
            None => StreamEnd::SlowConsumer,
        };
        let back = s.stream_ended(end);
        s.held_since = self.now;
        self.note(format!(
            "stream ended acked={acked:?} read={} written={} taken back={back}",
            st.read, st.written
        ));
    }

    /// A newer connection of the same client replaces the stream.
    fn replace(&mut self) {
        let Some(st) = self.stream.as_ref() else {
            return;
        };
        let (read, written) = (st.read, st.written);
        let acked = self.rng.between(0, read);
        self.note("replaced by a newer connection".into());
        self.end_stream(Some(acked));
        let _ = written;
    }

    fn close(&mut self) {
        let Some(st) = self.stream.as_ref() else {
            return;
        };
        let (read, written) = (st.read, st.written);
        match self.rng.below(3) {
            0 => {
                // Clean: the client read everything, its TCP acknowledged it.
                self.read(written);
                self.end_stream(Some(written));
            }
            1 => {
                // Reset: the client got at least what its TCP acknowledged.
                let acked = self.rng.between(0, written);
                let upto = self.rng.between(acked.max(read), written.max(read));
                self.read(upto);
                self.end_stream(Some(acked));
            }
            _ => {
                // Slow consumer: cut, whatever the client read counts for nothing.
                self.end_stream(None);
            }
        }
    }

    /// Time passes; entries expire and a hold may run out (the session timer).
    fn tick(&mut self, ms: u64) {
        // Time passes between loop iterations, and each ends with a flush.
        self.flush();
        self.now += ms;
        let (now, hold) = (self.now, self.hold_ms);
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let (gone, lost) = s.expire(now, hold);
        let over = (s.held_since > 0 && s.held_since + hold <= now).then_some(s.epoch);
        if gone > 0 {
            self.note(format!("{gone} entries expired ({lost} undelivered)"));
        }
        if let Some(epoch) = over {
            self.session = None;
            for &(n, id) in &self.accepted {
                if id.epoch == epoch && !self.client.received.contains(&n) {
                    self.gone_with_session.insert(n);
                }
            }
            self.note("hold ran out: session gone".into());
        }
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=34 => {
                let now = self.rng.chance(60);
                self.send(now);
            }
            35..=44 => self.flush(),
            45..=64 => {
                let upto = match self.stream.as_ref() {
                    Some(st) => self.rng.between(st.read, st.written),
                    None => 0,
                };
                self.read(upto);
            }
            65..=72 => self.close(),
            73..=82 => {
                let with_id = self.rng.chance(75);
                self.attach(with_id);
            }
            83..=93 => {
                let ms = self.rng.between(1, self.hold_ms / 2);
                self.tick(ms);
            }
            _ => {
                // Other workers' retained bytes rise or fall.
                self.pressure.others = match self.rng.below(3) {
                    0 => 0,
                    _ => self.rng.between(0, self.pressure.hard as u64 * 2) as usize,
                };
            }
        }
        self.check_tally();
    }

    fn check_tally(&self) {
        let logged: (usize, usize) = self.session.as_ref().map_or((0, 0), |s| {
            s.log
                .iter()
                .fold((0, 0), |(b, n), e| (b + e.retained_bytes(), n + 1))
        });
        let t = thread_tally();
        assert_eq!(
            (t.0 - self.tally_base.0, t.1 - self.tally_base.1),
            logged,
            "the tally disagrees with the log"
        );
    }

    /// The end of a schedule: the client resumes with its id and reads all.
    fn finish(&mut self) -> Result<(), String> {
        self.pressure.others = 0;
        if self.stream.is_some() {
            let written = self.stream.as_ref().map_or(0, |s| s.written);
            self.read(written);
            self.end_stream(Some(written));
        }
        self.attach(true);
        self.flush();
        let written = self.stream.as_ref().map_or(0, |s| s.written);
        self.read(written);
        for (epoch, after, _) in std::mem::take(&mut self.client.open_gaps) {
            for &(m, id) in &self.accepted {
                if id.epoch == epoch && id.seq > after {
                    self.client.covered.insert(m);
                }
            }
        }
        self.check()
    }

    fn check(&self) -> Result<(), String> {
        self.client.check(&self.accepted, &self.gone_with_session)
    }
}

/// Records the events `write_after(from, ..)` just wrote (`len` bytes).
pub(super) fn record(st: &mut Stream, s: &Session, from: u64, len: usize) {
    let base = st.written;
    for e in s.log.iter().filter(|e| e.seq > from) {
        if let EntryKind::Message { body, .. } = &e.kind {
            let n = std::str::from_utf8(body)
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let id = EventId {
                epoch: s.epoch,
                seq: e.seq,
            };
            debug_assert!(e.wire_end > base);
            st.events.push((e.wire_end, Seen::Message(n, id)));
        }
    }
    st.written = base + len as u64;
}

/// Runs the schedule of `seed`; `Err` with the trace if the model disagrees.
pub fn run(seed: u64) -> Result<(), Failure> {
    let mut sim = Sim::new(seed);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..STEPS {
            sim.step();
        }
        let r = sim.finish();
        sim.session = None;
        sim.check_tally();
        r
    }));
    let what = match outcome {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(what)) => what,
        Err(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()),
    };
    Err(Failure {
        seed,
        what,
        trace: std::mem::take(&mut sim.trace),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(f: &Failure) -> String {
        let tail: Vec<&String> = f.trace.iter().rev().take(60).rev().collect();
        format!(
            "seed {} failed: {}\nreplay: SIM_SEED={} cargo test --release --lib relay::sim::tests::replay -- --nocapture\nlast steps:\n{}",
            f.seed,
            f.what,
            f.seed,
            tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        )
    }

    #[test]
    fn every_accepted_message_arrives_once_in_order_or_is_covered_by_a_gap() {
        for seed in 0..SEEDS {
            if let Err(f) = run(seed) {
                panic!("{}", report(&f));
            }
        }
    }

    /// `SIM_SEED=<n>` replays one schedule with its trace.
    #[test]
    fn replay() {
        let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) else {
            return;
        };
        match run(seed) {
            Ok(()) => println!("seed {seed}: ok"),
            Err(f) => {
                println!("{}", f.trace.join("\n"));
                panic!("{}", report(&f))
            }
        }
    }

    /// `tools/sim SECONDS`: seeds from a random start for that long.
    #[test]
    #[ignore]
    fn soak() {
        let secs: u64 = std::env::var("SIM_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60);
        let start = std::time::Instant::now();
        let first = crate::ids::random_u64() >> 16;
        let mut n = 0u64;
        while start.elapsed().as_secs() < secs {
            if let Err(f) = run(first + n) {
                panic!("{}", report(&f));
            }
            n += 1;
        }
        println!("{n} schedules from seed {first}: all held");
    }
}

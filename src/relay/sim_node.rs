//! Deterministic simulation of one node's workers: several [`Relay`]s, each
//! owning the sessions of some clients, driven the way the workers drive
//! them, against the same plain model of each client as [`super::sim`].
//!
//! What it adds to the one-session simulation: the relay's own bookkeeping
//! (the flush list, held order, hold timers, held count) and the node-wide
//! retention limit shared by the workers, with eviction across them through
//! a [`Board`] (the oldest held client loses first, whichever worker holds
//! it; a worker asked to make room does so at the end of its iteration).
//! The schedule mixes sends written at once or at the end of an iteration
//! (pipelined), partial reads, clean closes, resets with unacknowledged
//! bytes, slow-consumer cuts, replacement by a newer connection, resumes with
//! and without an id, time passing, and iterations ending on each worker.
//!
//! After every schedule, each client resumes with its last id and reads
//! everything; each accepted message must have reached its client once, in
//! order, or be covered by a gap it was told, or have gone with a session
//! whose hold ran out. Every session is then removed, and the retained
//! tally and the held count must return to zero.
//!
//! `cargo test` runs [`SEEDS`] seeds; `tools/sim SECONDS` runs both
//! simulations for that long; `SIM_SEED=<n>` replays one seed with its trace.

use std::collections::HashSet;

use super::core::{Board, Relay, Rules, Timer};
use super::retained::{thread_tally, EntryKind};
use super::session::Session;
use super::sim::{record, Client, Failure, Rng, Seen, Stream};
use super::stream::{LogLimits, StreamEnd};
use crate::ids::EventId;
use crate::proto::sse;

/// Seeds `cargo test` runs.
pub const SEEDS: u64 = 1_500;
/// Steps of one schedule.
const STEPS: usize = 400;

/// The workers as each sees the others: when each one's longest-held client
/// became held (published at the end of its iterations), and what was asked
/// of each and not yet done.
struct Cells {
    oldest: Vec<u64>,
    asked: Vec<u64>,
}

/// [`Cells`] as worker `me` sees them.
struct SimBoard<'a> {
    me: usize,
    cells: &'a mut Cells,
}

impl Board for SimBoard<'_> {
    fn shared(&self) -> bool {
        self.cells.oldest.len() > 1
    }
    fn oldest_other(&self, before: u64) -> Option<usize> {
        let c = &self.cells.oldest;
        (0..c.len())
            .filter(|&i| i != self.me && c[i] != 0 && c[i] < before)
            .min_by_key(|&i| c[i])
    }
    fn asked_of(&self, w: usize) -> u64 {
        self.cells.asked[w]
    }
    fn ask(&mut self, w: usize, bytes: usize) {
        self.cells.asked[w] += bytes as u64;
    }
}

/// One client: the worker that owns it, its session there, its stream and
/// what it received.
#[derive(Default)]
struct Lane {
    worker: usize,
    /// Its session (slab index, generation) on its worker, if it has one.
    session: Option<(usize, u32)>,
    /// The connection its session is attached to (generation 0: none).
    conn: (u32, u32),
    stream: Option<Stream>,
    client: Client,
    /// Messages accepted for it: number -> event id.
    accepted: Vec<(u64, EventId)>,
    /// Messages whose session's hold ran out before they were delivered.
    gone: HashSet<u64>,
    /// Written on the stream that ended last, with where they ended, and
    /// what its client's TCP acknowledged (None: a slow-consumer cut).
    last_stream: Vec<(u64, u64)>,
    last_acked: Option<u64>,
}

struct NodeSim {
    rng: Rng,
    now: u64,
    hold_ms: u64,
    relays: Vec<Relay>,
    cells: Cells,
    lanes: Vec<Lane>,
    /// Numbers messages across clients, so each client's are increasing.
    sent: u64,
    next_gen: u32,
    tally_base: (usize, usize),
    trace: Vec<String>,
}

impl NodeSim {
    fn new(seed: u64) -> NodeSim {
        let mut rng = Rng(seed ^ 0x6e6f_6465);
        let workers = rng.between(2, 3) as usize;
        let clients = rng.between(2, 6) as usize;
        let rules = Rules {
            log: LogLimits {
                max_messages: rng.between(3, 40) as usize,
                max_bytes: rng.between(300, 4_000) as usize,
            },
            hold_ms: rng.between(500, 5_000),
            hard: rng.between(500, 3_000) as usize,
            conversation_ttl_ms: 60_000,
        };
        let lanes = (0..clients)
            .map(|c| Lane {
                worker: c % workers,
                ..Lane::default()
            })
            .collect();
        NodeSim {
            rng,
            now: 1,
            hold_ms: rules.hold_ms,
            relays: (0..workers).map(|_| Relay::new(rules)).collect(),
            cells: Cells {
                oldest: vec![0; workers],
                asked: vec![0; workers],
            },
            lanes,
            sent: 0,
            next_gen: 1,
            tally_base: thread_tally(),
            trace: Vec::new(),
        }
    }

    fn note(&mut self, s: String) {
        self.trace.push(format!("t={} {s}", self.now));
    }

    fn gen(&mut self) -> u32 {
        self.next_gen += 1;
        self.next_gen
    }

    /// Client `c`'s session on its worker, if it still has one.
    fn sidx(&self, c: usize) -> Option<usize> {
        let (sidx, gen) = self.lanes[c].session?;
        let w = self.lanes[c].worker;
        self.relays[w]
            .get(sidx)
            .filter(|s| s.gen == gen)
            .map(|_| sidx)
    }

    fn send(&mut self, c: usize, write_now: bool) {
        let Some(sidx) = self.sidx(c) else {
            return; // 404: not accepted, nothing to account for
        };
        self.sent += 1;
        let n = self.sent;
        let w = self.lanes[c].worker;
        let live = self.lanes[c].stream.is_some();
        let kind = EntryKind::Message {
            from: "sender".into(),
            body: n.to_string().into_bytes().into_boxed_slice(),
            json: n.is_multiple_of(3),
        };
        let mut board = SimBoard {
            me: w,
            cells: &mut self.cells,
        };
        let a = self.relays[w].append(sidx, kind, self.now, |_| live, &mut board);
        self.lanes[c].accepted.push((n, a.id));
        self.note(format!("send #{n} -> client {c} on w{w} ({})", a.id));
        if a.write_now && write_now {
            self.write(c);
        }
    }

    /// Writes what client `c`'s stream was not written yet, then trims what
    /// was held back for it.
    fn write(&mut self, c: usize) {
        let Some(sidx) = self.sidx(c) else {
            return;
        };
        let w = self.lanes[c].worker;
        let lane = &mut self.lanes[c];
        let Some(st) = lane.stream.as_mut() else {
            return;
        };
        let s = self.relays[w].session_mut(sidx);
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
        let mut board = SimBoard {
            me: w,
            cells: &mut self.cells,
        };
        self.relays[w].trim_if_over(sidx, |_| true, &mut board);
    }

    /// The end of worker `w`'s loop iteration: what its sessions are owed is
    /// written, it serves what other workers asked of it and publishes when
    /// its longest-held client became held.
    fn end_iteration(&mut self, w: usize) {
        let list = self.relays[w].take_flush();
        for &(sidx, gen) in &list {
            if !self.relays[w].flush_due((sidx, gen)) {
                continue;
            }
            let c = self
                .lanes
                .iter()
                .position(|l| l.worker == w && l.session == Some((sidx as usize, gen)));
            if let Some(c) = c {
                self.write(c);
            }
        }
        self.relays[w].flushed(list);
        // Whatever was appended for an online client is written by the end
        // of the iteration.
        for (c, lane) in self.lanes.iter().enumerate() {
            let Some((sidx, gen)) = lane.session else {
                continue;
            };
            let s = self.relays[w].get(sidx).filter(|s| s.gen == gen);
            if let (Some(s), true, true) = (s, lane.worker == w, lane.stream.is_some()) {
                assert_eq!(
                    s.delivered, s.last_seq,
                    "client {c}: online and not written by the end of the iteration"
                );
            }
        }
        let asked = std::mem::take(&mut self.cells.asked[w]) as usize;
        let mut board = SimBoard {
            me: w,
            cells: &mut self.cells,
        };
        let oldest = self.relays[w].serve_evictions(asked, &mut board);
        self.cells.oldest[w] = oldest;
        if asked > 0 {
            self.note(format!("w{w} served an eviction of {asked} bytes"));
        }
    }

    fn attach(&mut self, c: usize, with_id: bool) {
        if self.lanes[c].stream.is_some() {
            self.replace(c);
        }
        let w = self.lanes[c].worker;
        let sidx = match self.sidx(c) {
            Some(sidx) => sidx,
            None => {
                let mut s = Session::blank(format!("acme/c{c}").into_boxed_str(), 4);
                s.gen = self.gen();
                s.epoch = self.rng.below(1 << 40) + 1;
                let gen = s.gen;
                self.note(format!("client {c}: new session epoch {:x}", s.epoch));
                let sidx = self.relays[w].insert(s);
                self.lanes[c].session = Some((sidx, gen));
                sidx
            }
        };
        let lane = &mut self.lanes[c];
        let leid = if with_id {
            lane.client.last_id.clone()
        } else {
            None
        };
        if leid.is_none() {
            // A client that lost its place may be written again what it
            // read and its TCP had not confirmed.
            let acked = lane.last_acked;
            for &(n, end) in &lane.last_stream {
                if acked.is_none_or(|a| end > a) {
                    lane.client.may_repeat.insert(n);
                }
            }
        }
        let conn = (self.next_gen, 1);
        self.next_gen += 1;
        let now = self.now;
        let Some(r) = self.relays[w].attach(sidx, conn, leid.as_deref(), None, now, 0) else {
            panic!("client {c}: its session vanished");
        };
        let s = self.relays[w].session_mut(sidx);
        let mut st = Stream::default();
        let mut out = Vec::new();
        for (after, reason) in &r.gaps {
            let data = format!("{{\"after\":\"{after}\",\"reason\":\"{reason}\"}}");
            sse::encode_event(&mut out, None, Some("gap"), &data);
            st.events
                .push((out.len() as u64, Seen::Gap(after.clone(), reason)));
        }
        let head = out.len();
        s.write_after(r.from, 0, crate::proto::stream::Framing::Plain, &mut out);
        st.written = head as u64;
        record(&mut st, s, r.from, out.len() - head);
        let lane = &mut self.lanes[c];
        lane.conn = conn;
        lane.stream = Some(st);
        lane.last_stream.clear();
        lane.last_acked = None;
        self.note(format!(
            "client {c}: attach leid={leid:?} from={} gaps={:?}",
            r.from, r.gaps
        ));
        let mut board = SimBoard {
            me: w,
            cells: &mut self.cells,
        };
        self.relays[w].trim_if_over(sidx, |_| true, &mut board);
    }

    /// Client `c` reads up to `upto` bytes of its stream.
    fn read(&mut self, c: usize, upto: u64) {
        let lane = &mut self.lanes[c];
        let Some(st) = lane.stream.as_mut() else {
            return;
        };
        let got = st.read_to(upto);
        for ev in got {
            let lane = &mut self.lanes[c];
            if let Some(line) = lane.client.receive(ev, &lane.accepted) {
                self.note(format!("client {c}: {line}"));
            }
        }
    }

    /// Client `c`'s stream ends; `acked` as in [`super::sim`]. `replaced`:
    /// by a newer connection (the session is not held).
    fn end_stream(&mut self, c: usize, acked: Option<u64>, replaced: bool) {
        let lane = &mut self.lanes[c];
        let Some(st) = lane.stream.take() else {
            return;
        };
        lane.last_stream = st
            .events
            .iter()
            .take(st.taken)
            .filter_map(|(end, e)| match e {
                Seen::Message(n, _) => Some((*n, *end)),
                Seen::Gap(..) => None,
            })
            .collect();
        lane.last_acked = acked;
        let conn = std::mem::take(&mut lane.conn);
        let end = match acked {
            Some(a) => StreamEnd::Acked(Some(a)),
            None => StreamEnd::SlowConsumer,
        };
        let Some(sidx) = self.sidx(c) else {
            return;
        };
        let w = self.lanes[c].worker;
        if replaced {
            // `Worker::evict_conn`: the old stream's unconfirmed entries are
            // taken back; the new connection attaches at once.
            let back = self.relays[w].replace_stream(sidx, end).map(|r| r.1);
            self.note(format!(
                "client {c}: replaced acked={acked:?} back={back:?}"
            ));
            return;
        }
        let gen = self.relays[w].session(sidx).gen;
        let held = self.relays[w].stream_closed(sidx, gen, conn, end, self.now, 0);
        let Some(held) = held else {
            panic!("client {c}: its own stream's end was refused");
        };
        self.note(format!(
            "client {c}: stream ended acked={acked:?} back={} deadline={}",
            held.rewound, held.deadline
        ));
    }

    fn replace(&mut self, c: usize) {
        let read = self.lanes[c].stream.as_ref().map_or(0, |s| s.read);
        let acked = self.rng.between(0, read);
        self.end_stream(c, Some(acked), true);
    }

    fn close(&mut self, c: usize) {
        let Some(st) = self.lanes[c].stream.as_ref() else {
            return;
        };
        let (read, written) = (st.read, st.written);
        match self.rng.below(3) {
            0 => {
                self.read(c, written);
                self.end_stream(c, Some(written), false);
            }
            1 => {
                let acked = self.rng.between(0, written);
                let upto = self.rng.between(acked.max(read), written.max(read));
                self.read(c, upto);
                self.end_stream(c, Some(acked), false);
            }
            _ => self.end_stream(c, None, false),
        }
    }

    /// Time passes: every worker ends its iteration, then session timers run.
    fn tick(&mut self, ms: u64) {
        for w in 0..self.relays.len() {
            self.end_iteration(w);
        }
        self.now += ms;
        for c in 0..self.lanes.len() {
            let Some(sidx) = self.sidx(c) else {
                continue;
            };
            let w = self.lanes[c].worker;
            if let Timer::Expired(s) = self.relays[w].timer(sidx, self.now) {
                let lane = &mut self.lanes[c];
                lane.session = None;
                for &(n, id) in &lane.accepted {
                    if id.epoch == s.epoch && !lane.client.received.contains(&n) {
                        lane.gone.insert(n);
                    }
                }
                self.note(format!("client {c}: hold ran out, session gone"));
            }
        }
    }

    fn step(&mut self) {
        let c = self.rng.below(self.lanes.len() as u64) as usize;
        match self.rng.below(100) {
            0..=34 => {
                let now = self.rng.chance(60);
                self.send(c, now);
            }
            35..=44 => {
                let w = self.rng.below(self.relays.len() as u64) as usize;
                self.end_iteration(w);
            }
            45..=62 => {
                let upto = match self.lanes[c].stream.as_ref() {
                    Some(st) => self.rng.between(st.read, st.written),
                    None => 0,
                };
                self.read(c, upto);
            }
            63..=70 => self.close(c),
            71..=83 => {
                let with_id = self.rng.chance(75);
                self.attach(c, with_id);
            }
            _ => {
                let ms = self.rng.between(1, self.hold_ms / 6);
                self.tick(ms);
            }
        }
        self.check_accounting();
    }

    /// The tally equals what the logs hold, and each relay's held count the
    /// sessions that are held.
    fn check_accounting(&self) {
        let mut logged = (0, 0);
        for r in &self.relays {
            let mut held = 0;
            for (_, s) in r.iter() {
                for e in s.log.iter() {
                    logged.0 += e.retained_bytes();
                    logged.1 += 1;
                }
                held += usize::from(s.held_since > 0);
            }
            assert_eq!(r.held(), held, "the held count disagrees with the sessions");
        }
        let t = thread_tally();
        assert_eq!(
            (t.0 - self.tally_base.0, t.1 - self.tally_base.1),
            logged,
            "the tally disagrees with the logs"
        );
    }

    /// The end of a schedule: each client resumes with its id and reads all.
    fn finish(&mut self) -> Result<(), String> {
        for c in 0..self.lanes.len() {
            if let Some(st) = self.lanes[c].stream.as_ref() {
                let written = st.written;
                self.read(c, written);
                self.end_stream(c, Some(written), false);
            }
            self.attach(c, true);
        }
        for w in 0..self.relays.len() {
            self.end_iteration(w);
        }
        for c in 0..self.lanes.len() {
            let written = self.lanes[c].stream.as_ref().map_or(0, |s| s.written);
            self.read(c, written);
            let lane = &mut self.lanes[c];
            for (epoch, after, _) in std::mem::take(&mut lane.client.open_gaps) {
                for &(m, id) in &lane.accepted {
                    if id.epoch == epoch && id.seq > after {
                        lane.client.covered.insert(m);
                    }
                }
            }
            lane.client
                .check(&lane.accepted, &lane.gone)
                .map_err(|e| format!("client {c}: {e}"))?;
        }
        Ok(())
    }

    /// Removes every session: nothing may stay counted.
    fn clear(&mut self) {
        for c in 0..self.lanes.len() {
            if let Some(sidx) = self.sidx(c) {
                let w = self.lanes[c].worker;
                self.relays[w].remove(sidx);
            }
            self.lanes[c].session = None;
        }
        for r in &self.relays {
            assert_eq!((r.len(), r.held()), (0, 0), "sessions left counted");
        }
        let t = thread_tally();
        assert_eq!(t, self.tally_base, "retained bytes left counted");
    }
}

/// Runs the schedule of `seed`; `Err` with the trace if the model disagrees.
pub fn run(seed: u64) -> Result<(), Failure> {
    let (r, trace) = trace(seed);
    r.map_err(|what| Failure { seed, what, trace })
}

/// Runs the schedule of `seed` and returns its trace, whatever the outcome
/// (a panic's message as the error).
fn trace(seed: u64) -> (Result<(), String>, Vec<String>) {
    let mut sim = NodeSim::new(seed);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..STEPS {
            sim.step();
        }
        let r = sim.finish();
        sim.clear();
        r
    }));
    let r = outcome.unwrap_or_else(|p| {
        Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()))
    });
    (r, std::mem::take(&mut sim.trace))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seed: u64, what: &str) -> String {
        let (_, trace) = trace(seed);
        let tail: Vec<&String> = trace.iter().rev().take(60).rev().collect();
        format!(
            "seed {seed} failed: {what}\nreplay: SIM_SEED={seed} cargo test --release --lib relay::sim_node::tests::replay -- --nocapture\nlast steps:\n{}",
            tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        )
    }

    #[test]
    fn across_workers_every_accepted_message_arrives_once_in_order_or_is_covered_by_a_gap() {
        for seed in 0..SEEDS {
            if let Err(f) = run(seed) {
                panic!("{}", report(f.seed, &f.what));
            }
        }
    }

    /// The schedules reach what they are meant to: evictions across
    /// workers, gaps, expired holds, replacements and slow-consumer cuts.
    #[test]
    fn the_schedules_reach_the_rules_they_check() {
        let mut seen = [0usize; 5];
        let marks = [
            "served an eviction",
            "client: gap",
            "hold ran out",
            "replaced",
            "acked=None",
        ];
        for seed in 0..200 {
            let (r, trace) = trace(seed);
            assert!(r.is_ok(), "seed {seed}");
            for line in &trace {
                for (i, m) in marks.iter().enumerate() {
                    seen[i] += usize::from(line.contains(m));
                }
            }
        }
        for (m, n) in marks.iter().zip(seen) {
            assert!(n >= 20, "{m}: only {n} times in 200 schedules");
        }
    }

    /// `SIM_SEED=<n>` replays one schedule with its trace.
    #[test]
    fn replay() {
        let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) else {
            return;
        };
        let (r, trace) = trace(seed);
        println!("{}", trace.join("\n"));
        if let Err(what) = r {
            panic!("{}", report(seed, &what));
        }
        println!("seed {seed}: ok");
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
                panic!("{}", report(f.seed, &f.what));
            }
            n += 1;
        }
        println!("{n} node schedules from seed {first}: all held");
    }
}

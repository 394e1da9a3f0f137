//! The relay core's rules, driven directly: no sockets, no worker.

use std::sync::Arc;

use super::*;
use crate::relay::session_index::make_key;

const HOLD: u64 = 10_000;

fn rules(hard: usize) -> Rules {
    Rules {
        log: LogLimits {
            max_messages: 1000,
            max_bytes: 1 << 20,
        },
        hold_ms: HOLD,
        hard,
        conversation_ttl_ms: 60_000,
    }
}

/// A session for `client`, online on connection `(idx, 1)` if `conn` is `Some(idx)`.
fn add(r: &mut Relay, client: &str, gen: u32, conn: Option<u32>) -> usize {
    let mut s = Session::blank(make_key("acct", client).into_boxed_str(), 4);
    s.gen = gen;
    if let Some(c) = conn {
        s.conn = (c, 1);
    }
    r.insert(s)
}

fn message(body: &[u8]) -> EntryKind {
    EntryKind::Message {
        from: Arc::from("console"),
        body: body.into(),
        json: false,
    }
}

#[test]
fn the_first_event_of_an_iteration_is_written_now_and_the_rest_at_its_end() {
    let mut r = Relay::new(rules(1 << 30));
    let online = add(&mut r, "agent-1", 1, Some(7));
    let held = add(&mut r, "agent-2", 2, None);
    let a = r.append(online, message(b"one"), 100, |_: &Session| true, &mut Alone);
    let b = r.append(online, message(b"two"), 100, |_: &Session| true, &mut Alone);
    let c = r.append(
        held,
        message(b"three"),
        100,
        |_: &Session| false,
        &mut Alone,
    );
    assert!(a.write_now && !b.write_now && !c.write_now);
    assert_eq!((a.id.seq, b.id.seq, c.id.seq), (1, 2, 1));
    // Only the online session is owed a write, once, with its flag cleared.
    let list = r.take_flush();
    assert_eq!(list, vec![(online as u32, 1)]);
    assert!(r.flush_due(list[0]));
    assert!(!r.flush_due(list[0]), "written once");
    assert!(!r.session(online).flush_queued);
    r.flushed(list);
    assert!(r.take_flush().is_empty());
    // A session replaced in the slab after it was queued is not written.
    let d = r.append(
        online,
        message(b"four"),
        101,
        |_: &Session| true,
        &mut Alone,
    );
    assert!(d.write_now);
    r.remove(online);
    let again = add(&mut r, "agent-3", 9, Some(8));
    assert_eq!(again, online, "the slab reuses the slot");
    let list = r.take_flush();
    assert!(list.iter().all(|&e| !r.flush_due(e)));
}

#[test]
fn a_closed_stream_holds_its_session_until_the_hold_runs_out() {
    let mut r = Relay::new(rules(1 << 30));
    let s = add(&mut r, "agent-1", 3, Some(5));
    r.append(s, message(b"kept"), 10, |_: &Session| true, &mut Alone);
    // A connection that is no longer the session's changes nothing.
    let end = StreamEnd::Acked(None);
    assert!(r.stream_closed(s, 3, (6, 1), end, 20, 0).is_none());
    assert!(r.stream_closed(s, 4, (5, 1), end, 20, 0).is_none());
    let held = r.stream_closed(s, 3, (5, 1), end, 20, 1234).expect("held");
    assert_eq!(r.held(), 1);
    // The entry expires before the hold runs out.
    assert_eq!(held.deadline, 10 + HOLD);
    assert_eq!(r.session(s).since_ms, 1234);
    assert!(!r.session(s).online());
    match r.timer(s, 10 + HOLD - 1) {
        Timer::Rearm { deadline, freed } => assert_eq!((deadline, freed), (10 + HOLD, false)),
        Timer::Expired(_) => panic!("expired early"),
    }
    match r.timer(s, 10 + HOLD) {
        Timer::Rearm { deadline, freed } => assert_eq!((deadline, freed), (20 + HOLD, true)),
        Timer::Expired(_) => panic!("expired early"),
    }
    assert_eq!(r.take_counters().dropped, 1, "it was never handed out");
    match r.timer(s, 20 + HOLD) {
        Timer::Expired(gone) => assert_eq!(gone.undelivered(), 0, "the entry expired first"),
        Timer::Rearm { .. } => panic!("the hold ran out"),
    }
    assert_eq!((r.len(), r.held()), (0, 0));
    assert_eq!(crate::relay::retained::thread_tally(), (0, 0));
}

#[test]
fn a_session_that_resumes_is_no_longer_held() {
    let mut r = Relay::new(rules(1 << 30));
    let s = add(&mut r, "agent-1", 3, Some(5));
    r.stream_closed(s, 3, (5, 1), StreamEnd::Acked(None), 20, 0)
        .expect("held");
    assert_eq!(r.held(), 1);
    let a = r.attach(s, (9, 1), None, None, 25, 0).expect("attached");
    assert_eq!((a.sess_gen, a.from), (3, 0));
    assert_eq!(r.held(), 0);
    assert_eq!(r.session(s).held_since, 0);
    assert_eq!(r.session(s).conn, (9, 1));
    // Replaced by a newer connection: not held, and the old one is handed back.
    assert_eq!(
        r.replace_stream(s, StreamEnd::Acked(None)),
        Some(((9, 1), 0))
    );
    assert_eq!(r.replace_stream(s, StreamEnd::Acked(None)), None);
    assert_eq!(r.held(), 0);
    r.attach(s, (10, 1), None, None, 26, 0).expect("attached");
    assert_eq!(r.held(), 0);
    // A session without a connection has no stream to close.
    assert!(r
        .stream_closed(s, 3, (0, 0), StreamEnd::Acked(None), 30, 0)
        .is_none());
    // Removing a held session counts it out as well.
    let t = add(&mut r, "agent-2", 4, Some(6));
    r.stream_closed(t, 4, (6, 1), StreamEnd::Acked(None), 40, 0)
        .expect("held");
    assert_eq!(r.held(), 1);
    r.remove(t);
    assert_eq!(r.held(), 0);
}

/// Two workers' boards over plain cells: when each one's longest-held
/// client became held, and what was asked of each.
struct Pair {
    me: usize,
    oldest: [u64; 2],
    asked: [u64; 2],
}

impl Board for Pair {
    fn shared(&self) -> bool {
        true
    }
    fn oldest_other(&self, before: u64) -> Option<usize> {
        let o = 1 - self.me;
        (self.oldest[o] != 0 && self.oldest[o] < before).then_some(o)
    }
    fn asked_of(&self, w: usize) -> u64 {
        self.asked[w]
    }
    fn ask(&mut self, w: usize, bytes: usize) {
        self.asked[w] += bytes as u64;
    }
}

#[test]
fn past_the_limit_the_client_held_longest_loses_first_across_workers() {
    // Both relays run on this thread, so the thread's tally is the node's.
    let size = {
        let mut r = Relay::new(rules(1 << 30));
        let s = add(&mut r, "probe", 1, None);
        let before = crate::relay::retained::thread_tally().0;
        r.append(s, message(&[b'x'; 100]), 0, |_: &Session| false, &mut Alone);
        crate::relay::retained::thread_tally().0 - before
    };
    let hard = size * 10;
    let mut w0 = Relay::new(rules(hard));
    let mut w1 = Relay::new(rules(hard));
    // Worker 0's client was held first, worker 1's later.
    let old = add(&mut w0, "old", 1, Some(1));
    w0.stream_closed(old, 1, (1, 1), StreamEnd::Acked(None), 5, 0)
        .expect("held");
    let new = add(&mut w1, "new", 1, Some(1));
    w1.stream_closed(new, 1, (1, 1), StreamEnd::Acked(None), 50, 0)
        .expect("held");
    let mut board = Pair {
        me: 0,
        oldest: [0, 0],
        asked: [0, 0],
    };
    for i in 0..6 {
        w0.append(
            old,
            message(&[b'o'; 100]),
            60 + i,
            |_: &Session| false,
            &mut board,
        );
    }
    board.oldest[0] = w0.serve_evictions(0, &mut board);
    assert_eq!(board.oldest[0], 5);
    let mut asks = 0;
    for i in 0..8 {
        board.me = 1;
        w1.append(
            new,
            message(&[b'n'; 100]),
            70 + i,
            |_: &Session| false,
            &mut board,
        );
        // Past the limit, worker 1 asks worker 0, whose client has been
        // gone longer, to make the room; worker 0 does at the end of its
        // next iteration.
        let asked = std::mem::take(&mut board.asked[0]) as usize;
        asks += usize::from(asked > 0);
        board.me = 0;
        board.oldest[0] = w0.serve_evictions(asked, &mut board);
    }
    assert!(asks >= 4, "worker 0 was asked {asks} times");
    assert_eq!(
        w1.session(new).log.len(),
        8,
        "the newer client lost nothing"
    );
    assert_eq!(w0.session(old).log.len(), 2, "the older client paid");
    assert!(
        w0.session(old).log.lost().is_some(),
        "and will be told by a gap"
    );
    assert!(w1.session(new).log.lost().is_none());
    let c = w0.take_counters();
    assert!(c.dropped > 0 && c.dropped == c.memory_trims);
    assert!(crate::relay::retained::thread_tally().0 <= hard + size);
}

#[test]
fn conversation_notes_are_throttled_per_pair_and_forgotten_on_demand() {
    let mut r = Relay::new(rules(1 << 30));
    let key = || TouchKey::Pair("acct", "console", "agent-1", 7);
    assert!(r.touch_due(key(), 1_000));
    assert!(!r.touch_due(key(), 1_100));
    assert!(r.touch_due(TouchKey::Pair("acct", "console", "agent-1", 8), 1_100));
    r.touch_forget(key());
    assert!(r.touch_due(key(), 1_200));
    assert!(r.touch_due(key(), 1_200 + TOUCH_WINDOW_MS + 64));
    let s = add(&mut r, "agent-1", 1, Some(1));
    r.note_partner(s, "console", 5);
    r.note_partner(s, "agent-1", 5);
    let p = r.session(s).partners.as_ref().expect("partners");
    assert_eq!(p.len(), 1, "a client is not its own partner");
}

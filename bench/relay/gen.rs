//! The generator's event loop: keep-alive senders and receive streams of one
//! thread, multiplexed on one mio `Poll` (`--threads` runs several).

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::RelayArgs;
use crate::proto::{self, Got, HeadCheck, HttpResponses, RespParser, StreamParser, Target};
use crate::{mqtt, ws};

/// State shared by the generator threads and the controller.
pub(super) struct Shared {
    pub(super) origin: Instant,
    pub(super) recv_up: AtomicUsize,
    pub(super) send_up: AtomicUsize,
    pub(super) conn_failed: AtomicUsize,
    pub(super) go: AtomicBool,
    pub(super) go_ns: AtomicU64,
    pub(super) sending: AtomicBool,
    pub(super) stop: AtomicBool,
    pub(super) sent: AtomicU64,
    pub(super) acked: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) received: AtomicU64,
}

enum Role {
    Recv {
        head: Vec<u8>,
        up: bool,
        parser: StreamParser,
    },
    Send {
        s: usize,
        seq: u64,
        inflight: VecDeque<u64>,
        http: HttpResponses,
        resp: Vec<u8>,
        auth: String,
        up: bool,
        /// Sequence numbers to send again first: the requests a connection the
        /// server closed had not answered (see `Gen::close`).
        resend: VecDeque<u64>,
    },
}

struct Conn {
    stream: TcpStream,
    role: Role,
    connected: bool,
    out: Vec<u8>,
    out_pos: usize,
}

#[derive(Default)]
pub(super) struct ThreadOut {
    pub(super) lat_ns: Vec<u64>,
    pub(super) recv_keys: Vec<u64>,
    pub(super) acked_keys: Vec<u64>,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) other_events: u64,
}

/// Bits of a message key that hold the sender's sequence number.
const SEQ_BITS: u32 = 40;

/// The key of a sender's message: sender index above [`SEQ_BITS`], sequence number below.
fn key(s: usize, seq: u64) -> u64 {
    ((s as u64) << SEQ_BITS) | seq
}

/// The sequence number in a message key.
fn seq_of(key: u64) -> u64 {
    key & ((1 << SEQ_BITS) - 1)
}

struct Gen {
    a: RelayArgs,
    sh: Arc<Shared>,
    poll: Poll,
    conns: Slab<Conn>,
    senders: Vec<usize>,
    out: ThreadOut,
    scratch: Vec<u8>,
    body: Vec<u8>,
    /// The receiver name of the message being built (`r<N>`), reused.
    to: Vec<u8>,
    send_host: String,
    srcs: Vec<std::net::Ipv4Addr>,
    src_next: usize,
    // Messages started by this thread (for the rate cap).
    started: u64,
    // Where the next pass over the senders starts: under a rate cap the budget
    // is handed out in turn, so no sender starves while the first ones take it all.
    next_sender: usize,
    n_threads: usize,
    local_recv: u64,
    local_sent: u64,
    local_acked: u64,
    local_rejected: u64,
}

impl Gen {
    fn err(&mut self, what: String) {
        *self.out.errors.entry(what).or_default() += 1;
    }

    fn open(&mut self, role: Role, req: Vec<u8>) {
        let src = if self.srcs.is_empty() {
            None
        } else {
            self.src_next += 1;
            Some(self.srcs[self.src_next % self.srcs.len()])
        };
        let server = match role {
            Role::Send { .. } => self.a.send_server.unwrap_or(self.a.server),
            Role::Recv { .. } => self.a.server,
        };
        let stream = match proto::connect(server, src) {
            Ok(s) => s,
            Err(e) => {
                self.sh.conn_failed.fetch_add(1, Relaxed);
                self.err(format!("connect: {}", proto::err_name(&e)));
                return;
            }
        };
        let e = self.conns.vacant_entry();
        let k = e.key();
        let mut c = Conn {
            stream,
            role,
            connected: false,
            out: req,
            out_pos: 0,
        };
        if let Err(e) = self.poll.registry().register(
            &mut c.stream,
            Token(k),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.sh.conn_failed.fetch_add(1, Relaxed);
            self.err(format!("register: {e}"));
            return;
        }
        if matches!(c.role, Role::Send { .. }) {
            self.senders.push(k);
        }
        e.insert(c);
    }

    fn close(&mut self, k: usize, why: String) {
        let mut c = self.conns.remove(k);
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.senders.retain(|&s| s != k);
        let (kind, up) = match c.role {
            Role::Recv { up, .. } => ("receiver", up),
            // A sender that was up reconnects, as a client would: the server
            // closes keep-alive send connections (--send-lifetime, 10 min by
            // default, and on a drain), and a run longer than that would
            // otherwise stop sending. The requests it had not had answered
            // were not carried out (an answer with `Connection: close` ends
            // the connection's requests) and go again, first, with the same
            // sequence numbers, so the exactly-once check still holds.
            Role::Send {
                s,
                seq,
                inflight,
                auth,
                up: true,
                mut resend,
                ..
            } if !self.sh.stop.load(Relaxed) => {
                self.sh.send_up.fetch_sub(1, Relaxed);
                self.err(format!("sender reconnected after: {why}"));
                let mut again: VecDeque<u64> = inflight.iter().map(|&kk| seq_of(kk)).collect();
                again.append(&mut resend);
                let hello =
                    proto::sender_hello(self.a.target, &format!("s{s}"), &self.send_host, &auth);
                self.open(
                    Role::Send {
                        s,
                        seq,
                        inflight: VecDeque::new(),
                        http: HttpResponses::default(),
                        resp: Vec::new(),
                        auth,
                        up: false,
                        resend: again,
                    },
                    hello,
                );
                return;
            }
            Role::Send { up, .. } => ("sender", up),
        };
        if !up {
            self.sh.conn_failed.fetch_add(1, Relaxed);
        }
        self.err(format!("{kind} closed: {why}"));
    }

    /// Writes pending output; false if the connection failed.
    fn flush(&mut self, k: usize) -> bool {
        let c = &mut self.conns[k];
        while c.out_pos < c.out.len() {
            match c.stream.write(&c.out[c.out_pos..]) {
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let r = format!("write: {}", proto::err_name(&e));
                    self.close(k, r);
                    return false;
                }
            }
        }
        c.out.clear();
        c.out_pos = 0;
        true
    }

    /// Handles one readiness event. Like the server, a read shorter than the
    /// buffer ends the reading (the socket is drained, and edge-triggered
    /// epoll reports new data with a new event) unless the event reported a
    /// hang-up, which only a read to EOF sees: one `recv` per event instead
    /// of two, so the generator takes less of the CPU it shares with the server.
    fn handle(&mut self, k: usize, readable: bool, hup: bool, writable: bool) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        if !c.connected {
            if let Ok(Some(e)) | Err(e) = c.stream.take_error() {
                self.close(k, format!("connect: {}", proto::err_name(&e)));
                return;
            }
            match c.stream.peer_addr() {
                Ok(_) => c.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    self.close(k, format!("connect: {}", proto::err_name(&e)));
                    return;
                }
            }
            // A WebSocket sender is up at its `ready` event (see `sender_ws_up`).
            if let Role::Send { up, .. } = &mut c.role {
                if self.a.target != Target::SwitchboardWs {
                    *up = true;
                    self.sh.send_up.fetch_add(1, Relaxed);
                }
            }
        }
        if (writable || !self.conns[k].out.is_empty()) && !self.flush(k) {
            return;
        }
        if !readable {
            return;
        }
        loop {
            let c = &mut self.conns[k];
            let n = match c.stream.read(&mut self.scratch) {
                Ok(0) => {
                    self.close(k, "eof".into());
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let r = format!("read: {}", proto::err_name(&e));
                    self.close(k, r);
                    return;
                }
            };
            let drained = n < self.scratch.len() && !hup;
            let target = self.a.target;
            let check = self.a.check;
            let data = &self.scratch[..n];
            match &mut c.role {
                Role::Recv { head, up, parser } => {
                    if !*up {
                        head.extend_from_slice(data);
                        match proto::check_ready(target, head) {
                            HeadCheck::More if drained => return,
                            HeadCheck::More => continue,
                            HeadCheck::Ready(at) => {
                                *up = true;
                                if matches!(target, Target::Switchboard | Target::Nchan) {
                                    parser.set_chunking(proto::chunking_at(head, at));
                                }
                                parser.push(&head[at..]);
                                *head = Vec::new();
                                self.sh.recv_up.fetch_add(1, Relaxed);
                            }
                            HeadCheck::Bad(r) => {
                                self.close(k, r);
                                return;
                            }
                        }
                    } else {
                        parser.push(data);
                    }
                    // Receive time of this read (the clock is read only for receivers).
                    let now = self.sh.origin.elapsed().as_nanos() as u64;
                    let out = &mut self.out;
                    let mut got = 0u64;
                    let r = parser.drain(|g| match g {
                        Got::Msg(ts, s, q) => {
                            out.lat_ns.push(now.saturating_sub(ts));
                            if check {
                                out.recv_keys.push(key(s, q));
                            }
                            got += 1;
                        }
                        Got::Other => out.other_events += 1,
                    });
                    self.local_recv += got;
                    if let Err(e) = r {
                        self.close(k, e);
                        return;
                    }
                }
                Role::Send {
                    inflight,
                    http,
                    resp,
                    up,
                    ..
                } => {
                    let mut results: Vec<Result<Option<u64>, String>> = Vec::new();
                    if target == Target::SwitchboardWs {
                        // Before `ready`, `data` goes into `resp` with the head.
                        let mut data = data;
                        if !*up {
                            resp.extend_from_slice(data);
                            match proto::check_ready(target, resp) {
                                HeadCheck::More if drained => return,
                                HeadCheck::More => continue,
                                HeadCheck::Ready(at) => {
                                    resp.drain(..at);
                                    data = &[];
                                    *up = true;
                                    self.sh.send_up.fetch_add(1, Relaxed);
                                }
                                HeadCheck::Bad(r) => {
                                    self.close(k, r);
                                    return;
                                }
                            }
                        }
                        drain_answers(resp, data, &mut results, |b| {
                            Ok(ws::frame(b)
                                .map_err(|e| e.to_string())?
                                .map(|(m, f)| (m, ws_answer(f))))
                        });
                    } else if target == Target::Mosquitto {
                        drain_answers(resp, data, &mut results, |b| {
                            Ok(mqtt::packet(b)?.map(|(m, first, body)| {
                                (
                                    m,
                                    mqtt::sender_answer(first, body).map(|r| r.map(|()| None)),
                                )
                            }))
                        });
                    } else if target == Target::Redis {
                        drain_answers(resp, data, &mut results, |b| {
                            Ok(RespParser.next(b)?.map(|(m, items)| {
                                let n: i64 = items
                                    .first()
                                    .and_then(|i| std::str::from_utf8(i).ok())
                                    .and_then(|s| s.parse().ok())
                                    .unwrap_or(-1);
                                let r = if n >= 1 {
                                    Ok(None)
                                } else {
                                    Err(format!("publish reached {n} subscribers"))
                                };
                                (m, Some(r))
                            }))
                        });
                    } else {
                        http.push(data);
                        loop {
                            match http.next() {
                                Ok(Some(st)) if (200..300).contains(&st) => results.push(Ok(None)),
                                Ok(Some(st)) => results.push(Err(format!("status {st}"))),
                                Ok(None) => break,
                                Err(e) => {
                                    results.push(Err(e));
                                    break;
                                }
                            }
                        }
                    }
                    for r in results {
                        let Some(kk) = inflight.pop_front() else {
                            *self
                                .out
                                .errors
                                .entry("answer without request".into())
                                .or_default() += 1;
                            continue;
                        };
                        match r {
                            // A WebSocket answer names its command: answers come in order.
                            Ok(Some(r)) if r != seq_of(kk) => {
                                self.local_rejected += 1;
                                *self
                                    .out
                                    .errors
                                    .entry("answer out of order".into())
                                    .or_default() += 1;
                            }
                            Ok(_) => {
                                self.local_acked += 1;
                                if check {
                                    self.out.acked_keys.push(kk);
                                }
                            }
                            Err(e) => {
                                self.local_rejected += 1;
                                *self.out.errors.entry(e).or_default() += 1;
                            }
                        }
                    }
                }
            }
            if drained {
                return;
            }
        }
    }

    /// Tops up every sender's window (within the rate cap).
    fn send_more(&mut self, since_go: Duration) {
        let mut budget = match self.a.rate {
            Some(rate) => {
                let allowed = (since_go.as_secs_f64() * rate / self.n_threads as f64) as u64 + 1;
                allowed.saturating_sub(self.started)
            }
            None => u64::MAX,
        };
        let origin = self.sh.origin;
        let n = self.senders.len();
        let first = if n == 0 { 0 } else { self.next_sender % n };
        for i in (first..n).chain(0..first) {
            // A failed write closes its sender and shortens the list.
            let Some(&k) = self.senders.get(i) else {
                continue;
            };
            let Some(c) = self.conns.get_mut(k) else {
                continue;
            };
            let Role::Send {
                s,
                seq,
                inflight,
                auth,
                up,
                resend,
                ..
            } = &mut c.role
            else {
                continue;
            };
            if !*up || inflight.len() >= self.a.window || budget == 0 {
                continue;
            }
            // The send time, read once per sender that has room (a clock read
            // for every sender on every loop iteration cost the generator ~8%).
            let now = origin.elapsed().as_nanos() as u64;
            let mut wrote = false;
            while inflight.len() < self.a.window && budget > 0 {
                // A request a closed connection left unanswered goes first,
                // and counts as sent once (when it was first sent).
                let (q, again) = match resend.pop_front() {
                    Some(q) => (q, true),
                    None => {
                        let q = *seq;
                        *seq += 1;
                        (q, false)
                    }
                };
                self.to.clear();
                self.to.push(b'r');
                proto::push_decimal(&mut self.to, self.a.recipient(*s, q) as u64);
                // Only ASCII digits follow the 'r'.
                let to = std::str::from_utf8(&self.to).unwrap_or("r");
                proto::make_body(&mut self.body, self.a.size, now, *s, q);
                proto::push_send(
                    self.a.target,
                    &mut c.out,
                    &self.send_host,
                    auth,
                    to,
                    &self.body,
                    q,
                );
                inflight.push_back(key(*s, q));
                if !again {
                    budget -= 1;
                    self.started += 1;
                    self.local_sent += 1;
                }
                wrote = true;
            }
            if wrote {
                self.next_sender = i + 1;
                self.flush(k);
            }
        }
    }

    fn publish(&mut self) {
        self.sh
            .received
            .fetch_add(std::mem::take(&mut self.local_recv), Relaxed);
        self.sh
            .sent
            .fetch_add(std::mem::take(&mut self.local_sent), Relaxed);
        self.sh
            .acked
            .fetch_add(std::mem::take(&mut self.local_acked), Relaxed);
        self.sh
            .rejected
            .fetch_add(std::mem::take(&mut self.local_rejected), Relaxed);
    }
}

/// One answer parsed from a sender's buffer: bytes used, and the result for the
/// oldest message in flight (`None`: the packet answers no message); a
/// WebSocket answer's result holds the `ref` it echoes.
type Answer = (usize, Option<Result<Option<u64>, String>>);

/// What a frame on a Switchboard WebSocket sender answers: `accepted` (with
/// its `ref`) and `error` answer the oldest command; the rest (pings, events
/// of the sender's own stream, a Close, after which the server ends the
/// connection and `Gen::close` sends again what was unanswered) answer none.
fn ws_answer(f: ws::Frame<'_>) -> Option<Result<Option<u64>, String>> {
    if f.opcode != ws::OP_TEXT {
        return None;
    }
    match ws::event(f.payload)? {
        ws::Event::Accepted(r) => Some(
            std::str::from_utf8(r)
                .ok()
                .and_then(|r| r.parse().ok())
                .map(Some)
                .ok_or_else(|| format!("accepted with ref {:?}", String::from_utf8_lossy(r))),
        ),
        ws::Event::Error(_, code) => Some(Err(format!("error {}", String::from_utf8_lossy(code)))),
        _ => None,
    }
}

/// Appends `data` to a sender's answer buffer and moves every complete
/// answer's result to `results` (RESP and MQTT senders). `next` parses one
/// answer at the start of a buffer: `(bytes used, result)`, where a `None`
/// result is a packet that answers no message (MQTT's CONNACK). A parse error
/// ends the buffer: its result is the error.
fn drain_answers(
    buf: &mut Vec<u8>,
    data: &[u8],
    results: &mut Vec<Result<Option<u64>, String>>,
    next: impl Fn(&[u8]) -> Result<Option<Answer>, String>,
) {
    buf.extend_from_slice(data);
    let mut pos = 0;
    loop {
        match next(&buf[pos..]) {
            Ok(Some((m, r))) => {
                results.extend(r);
                pos += m;
            }
            Ok(None) => break,
            Err(e) => {
                results.push(Err(e));
                pos = buf.len();
                break;
            }
        }
    }
    buf.drain(..pos);
}

pub(super) fn run_thread(a: RelayArgs, sh: Arc<Shared>, t: usize, n_threads: usize) -> ThreadOut {
    let send_host = a.send_server.unwrap_or(a.server).to_string();
    let mut g = Gen {
        poll: Poll::new().expect("epoll"),
        conns: Slab::new(),
        senders: Vec::new(),
        out: ThreadOut::default(),
        scratch: vec![0; 256 * 1024],
        body: Vec::with_capacity(a.size + 64),
        to: Vec::with_capacity(16),
        send_host,
        srcs: proto::sources(a.sources),
        src_next: t,
        started: 0,
        next_sender: 0,
        n_threads,
        local_recv: 0,
        local_sent: 0,
        local_acked: 0,
        local_rejected: 0,
        sh,
        a,
    };
    let mut events = Events::with_capacity(1024);
    // Receivers r = t, t+T, ...; senders likewise. Connects go out in batches of 256.
    let mut todo: VecDeque<(bool, usize)> = (t..g.a.receivers)
        .step_by(n_threads)
        .map(|r| (true, r))
        .chain((t..g.a.senders).step_by(n_threads).map(|s| (false, s)))
        .collect();
    let mut sending_seen = false;
    loop {
        if g.sh.stop.load(Relaxed) {
            break;
        }
        // Connect phase: keep at most 256 receivers in setup.
        let pending = g.conns.len() as i64
            - g.sh.recv_up.load(Relaxed) as i64 / n_threads as i64
            - g.senders.len() as i64;
        if !todo.is_empty() && pending < 256 {
            for _ in 0..256 {
                let Some((is_recv, i)) = todo.pop_front() else {
                    break;
                };
                if is_recv {
                    let name = format!("r{i}");
                    let req = proto::receive_request(
                        g.a.target,
                        g.a.server,
                        &g.a.secret,
                        &g.a.account_of(i),
                        &name,
                    );
                    g.open(
                        Role::Recv {
                            head: Vec::new(),
                            up: false,
                            parser: StreamParser::new(g.a.target),
                        },
                        req,
                    );
                } else {
                    let auth = if g.a.target.is_switchboard() {
                        format!(
                            "Authorization: Bearer {}\r\n",
                            proto::token(&g.a.secret, &g.a.account_of(i), &format!("s{i}"))
                        )
                    } else {
                        String::new()
                    };
                    let hello =
                        proto::sender_hello(g.a.target, &format!("s{i}"), &g.send_host, &auth);
                    g.open(
                        Role::Send {
                            s: i,
                            seq: 0,
                            inflight: VecDeque::new(),
                            http: HttpResponses::default(),
                            resp: Vec::new(),
                            auth,
                            up: false,
                            resend: VecDeque::new(),
                        },
                        hello,
                    );
                }
            }
        }
        // Under a rate cap, wake every millisecond (epoll's resolution) so the
        // budget is handed out in small steps: with a longer wait, a whole wait's
        // worth of messages left at once and queued behind each other in the
        // server, and latency at a fixed rate measured that burst, not the server.
        let wait = match (g.a.rate, sending_seen) {
            (Some(_), true) => Duration::from_millis(1),
            _ => Duration::from_millis(5),
        };
        let _ = g.poll.poll(&mut events, Some(wait));
        for ev in events.iter() {
            g.handle(
                ev.token().0,
                ev.is_readable() || ev.is_read_closed(),
                ev.is_read_closed() || ev.is_error(),
                ev.is_writable(),
            );
        }
        if g.sh.go.load(Relaxed) {
            let sending = g.sh.sending.load(Relaxed);
            if sending {
                sending_seen = true;
                let go = Duration::from_nanos(g.sh.go_ns.load(Relaxed));
                let since = g.sh.origin.elapsed().saturating_sub(go);
                g.send_more(since);
            } else if !sending_seen {
                // `go` and `sending` are set together; nothing to do.
            }
        }
        g.publish();
    }
    g.publish();
    g.out
}

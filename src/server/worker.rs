//! One worker: a `mio` event loop over its listener, its connections, its
//! channel from the other workers and its timer wheel.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::conn::Conn;
use super::quiet::QuietClock;
use super::{Envelope, Shared};
use crate::relay::core::Relay;
use crate::timer::TimerWheel;

/// Token of the listener.
pub const LISTENER_TOKEN: Token = Token(usize::MAX);
/// Token of the waker that other workers use.
pub const WAKER_TOKEN: Token = Token(usize::MAX - 1);

/// Timer wheel granularity.
const TICK_MS: u64 = 10;
/// Timer wheel slots (4096 x 10 ms = a 41 s lap; longer timers wait laps).
const WHEEL_SLOTS: usize = 4096;
/// Size of the per-worker read buffer.
const SCRATCH: usize = 64 * 1024;
/// Most envelopes handled per loop iteration (the rest wait for the next one).
const CHANNEL_BATCH: usize = 4096;
/// How often a worker gives back memory left over from busier times.
const HOUSEKEEPING_MS: u64 = 10_000;
/// A worker that has seen no I/O for this long after being busy gives its
/// cached free memory back (see `settle`).
const QUIET_RELEASE_MS: u64 = 500;

/// What a timer entry refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerRef {
    /// A connection: slab index, generation, and the deadline the entry was armed for.
    Conn { idx: u32, gen: u32, at: u64 },
    /// A session: slab index, generation, and the deadline the entry was armed for.
    Session { idx: u32, gen: u32, at: u64 },
}

impl TimerRef {
    fn conn(idx: usize, gen: u32, at: u64) -> TimerRef {
        TimerRef::Conn {
            idx: idx as u32,
            gen,
            at,
        }
    }

    fn session(idx: usize, gen: u32, at: u64) -> TimerRef {
        TimerRef::Session {
            idx: idx as u32,
            gen,
            at,
        }
    }
}

/// A zeroed buffer whose pages are already resident, so that the worker's
/// fixed memory is paid at start rather than by its first connections.
fn prefaulted(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for i in (0..len).step_by(4096) {
        // A volatile write so the page is really touched (calloc'd pages are mapped lazily).
        // SAFETY: `i < len`, so the pointer is inside the vector's initialised buffer.
        unsafe { std::ptr::write_volatile(v.as_mut_ptr().add(i), 0) };
    }
    v
}

/// Builds a non-blocking `SO_REUSEPORT` listener on `addr`.
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(TcpListener::from_std(sock.into()))
}

/// A worker thread's state.
pub(super) struct Worker {
    pub id: usize,
    pub poll: Poll,
    /// The client listener; `None` once draining.
    pub listener: Option<TcpListener>,
    pub conns: Slab<Conn>,
    /// The relay's state and rules for this worker's sessions (no I/O).
    pub relay: Relay,
    pub wheel: TimerWheel<TimerRef>,
    pub rx: Receiver<Envelope>,
    pub shared: Arc<Shared>,
    /// Read buffer shared by all connections of this worker.
    pub scratch: Vec<u8>,
    /// Output staging buffer shared by all connections of this worker.
    pub stage: Vec<u8>,
    /// Ciphertext staging buffer (TLS) shared by all connections of this worker.
    pub tls_out: Vec<u8>,
    /// Scratch buffer for small JSON answer bodies.
    pub json_scratch: Vec<u8>,
    /// The connection whose input is being processed: its output is collected
    /// in `corked` and written once when processing stops (see `Worker::process`).
    pub cork: Option<usize>,
    /// Output held back for `cork`.
    pub corked: Vec<u8>,
    /// Answers held back until the iteration's events are out (`park`).
    pub parked: Vec<u8>,
    /// (connection, its generation, start, end) of each connection's answers
    /// in `parked`, in the order they were parked.
    pub parked_at: Vec<(usize, u32, usize, usize)>,
    /// Answers to sends pipelined across workers, per connection (`pipe`).
    pub pipes: super::pipe::Pipes,
    /// CORS kind of the current request of connections whose request is an
    /// allowed cross-origin one, by slab index (`Worker::cors_of`).
    pub cors: std::collections::HashMap<usize, crate::proto::cors::Allow>,
    /// Account that each send connection counts for against
    /// `--max-account-connections`, by slab index (see `senders`).
    pub senders: std::collections::HashMap<usize, Box<str>>,
    /// Last sequence number given to a pipe slot.
    pub pipe_seq: u64,
    /// Monotonic milliseconds, refreshed once per loop iteration.
    pub now: u64,
    /// Wall-clock milliseconds since the Unix epoch, refreshed once per loop
    /// iteration, for the per-request checks (token expiry, send lifetime):
    /// reading the clock for each request cost two reads per relayed message.
    pub wall_ms: u64,
    next_gen: u32,
    /// Workers to wake at the end of this iteration.
    pub(super) wakes: Vec<bool>,
    /// The request being handled is the second or a later one of a pipelined
    /// batch read together: the events it appends wait for the end of the
    /// iteration (measured with 8 pipelined messages per sender: 8.0 instead of
    /// 8.8 writes per 8 messages; PERF.md, 2026-12-02). One request at a time
    /// is never held back: deferring every first event cost p99 under load.
    pub pipelined: bool,
    /// While a connection's request is dispatched: the connection and how many
    /// bytes at the front of its `inbuf` were already handled (removed when its
    /// request loop ends; see `process_requests`).
    pub consumed: Option<(usize, usize)>,
    /// While accepts are paused after a failure: when they resume (monotonic ms; 0 = not paused).
    pub(super) accept_paused_until: u64,
    /// The current streak of failed accepts, for its two log lines.
    pub(super) accept_streak: super::accept::AcceptStreak,
    /// Throttles of the per-connection warnings, by [`super::throttle::Noisy`].
    pub(super) log_throttle: [super::throttle::LogThrottle; super::throttle::Noisy::ALL.len()],
    fired: Vec<TimerRef>,
    /// When housekeeping next runs (monotonic ms).
    next_housekeeping: u64,
    /// When the worker last went quiet (see `settle`).
    quiet: QuietClock,
    /// Recently verified tokens (see `verify_cached`).
    pub token_cache: hashbrown::HashMap<Box<str>, std::sync::Arc<crate::auth::Identity>>,
    /// Connections without a verified token yet, oldest first (see `unauth`).
    pub unauth: super::unauth::Unauthenticated,
    /// Draining state, once the node started draining.
    pub drain: Option<super::drain::Drain>,
    /// Incomplete frames of WebSocket connections (`ws`).
    pub(super) ws: super::ws::Partials,
    /// Answers to the WebSocket commands of one read (`ws_input`).
    pub(super) ws_out: Vec<u8>,
    /// The account and client id of the WebSocket connection that sent last
    /// (by slab index and generation), shared by its messages (`ws_sender`).
    pub(super) ws_from: Option<(usize, u32, Arc<str>, Arc<str>)>,
}

impl Worker {
    /// Sets up a worker; registers its listener.
    pub fn new(
        id: usize,
        poll: Poll,
        mut listener: TcpListener,
        rx: Receiver<Envelope>,
        shared: Arc<Shared>,
    ) -> io::Result<Worker> {
        poll.registry()
            .register(&mut listener, LISTENER_TOKEN, Interest::READABLE)?;
        let now = shared.now_ms();
        let n = shared.peers.len();
        Ok(Worker {
            id,
            poll,
            listener: Some(listener),
            drain: None,
            ws: Default::default(),
            ws_out: Vec::new(),
            ws_from: None,
            token_cache: hashbrown::HashMap::default(),
            unauth: Default::default(),
            next_housekeeping: now + HOUSEKEEPING_MS,
            quiet: QuietClock::new(now, QUIET_RELEASE_MS),
            conns: Slab::new(),
            relay: Relay::new(super::deliver::rules(&shared.config)),
            wheel: TimerWheel::new(now, TICK_MS, WHEEL_SLOTS),
            rx,
            scratch: prefaulted(SCRATCH),
            stage: Vec::with_capacity(4096),
            tls_out: Vec::new(),
            json_scratch: Vec::with_capacity(128),
            cork: None,
            corked: Vec::new(),
            parked: Vec::new(),
            parked_at: Vec::new(),
            pipes: Default::default(),
            cors: Default::default(),
            senders: Default::default(),
            pipe_seq: 0,
            now,
            wall_ms: super::epoch_ms(),
            next_gen: 1,
            wakes: vec![false; n],
            pipelined: false,
            consumed: None,
            accept_paused_until: 0,
            accept_streak: Default::default(),
            log_throttle: Default::default(),
            fired: Vec::new(),
            shared,
        })
    }

    /// Runs the event loop until the node shuts down or finishes draining.
    /// A panic outside the handling of one connection ends the process.
    pub fn run(mut self) {
        let id = self.id;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.event_loop()));
        if r.is_err() {
            log::error!("worker {id} panicked outside connection handling; exiting the process");
            std::process::exit(70);
        }
    }

    fn event_loop(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut backlog = false;
        loop {
            if self.shared.shutdown.load(Ordering::Relaxed) {
                break;
            }
            let mut timeout = self.wheel.next_timeout_ms(self.now);
            let mut soonest = |t: u64| timeout = Some(timeout.map_or(t, |x: u64| x.min(t)));
            if self.accept_paused_until > 0 {
                soonest(self.accept_paused_until.saturating_sub(self.now));
            }
            if let Some(t) = self.drain_next() {
                soonest(t.saturating_sub(self.now));
            }
            soonest(self.next_housekeeping.saturating_sub(self.now));
            if let Some(t) = self.quiet.timeout(self.now) {
                soonest(t);
            }
            if backlog {
                timeout = Some(0);
            }
            let timeout = timeout.map(Duration::from_millis);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("worker {}: poll failed: {e}", self.id);
                    break;
                }
            }
            // One monotonic reading serves the loop's clock and the busy-time statistic.
            let busy_from = std::time::Instant::now();
            self.now = self.shared.ms_at(busy_from);
            self.wall_ms = super::epoch_ms();
            let others = self.published_by_others();
            self.relay.set_others_retained(others);
            for ev in events.iter() {
                match ev.token() {
                    LISTENER_TOKEN => self.accept_all(),
                    WAKER_TOKEN => {}
                    t => {
                        let (r, hup, w) = (
                            ev.is_readable(),
                            ev.is_read_closed() || ev.is_error(),
                            ev.is_writable(),
                        );
                        self.guarded(t.0, |me| me.conn_event(t.0, r, hup, w));
                    }
                }
            }
            let had_events = !events.is_empty();
            backlog = self.drain_channel();
            if self.accept_paused_until > 0 && self.now >= self.accept_paused_until {
                self.accept_paused_until = 0;
                self.accept_all();
            }
            let reaped = self.run_timers();
            if self.now >= self.next_housekeeping {
                self.housekeeping();
            }
            // Sessions reaped and retained messages expired by a timer count
            // as work: the memory they held goes back once the worker is quiet
            // (a wave of held clients expiring after a burst of disconnects),
            // not at the next housekeeping.
            if self.quiet.tick(self.now, had_events || backlog || reaped) {
                self.settle();
            }
            // What this iteration appended to sessions after their first entry
            // goes out now, one write per receive connection, before any drain
            // notice. Nothing after this point appends to a session.
            self.flush_sessions();
            // Then the answers to the requests that produced those events.
            self.flush_parked();
            if self.shared.draining.load(Ordering::Relaxed) && self.drain_step() {
                break;
            }
            self.serve_evictions();
            self.flush_wakes();
            if had_events && self.shared.peers.len() > 1 {
                // Workers that share a core (more workers than free cores)
                // take turns after each loop iteration, not after each
                // scheduler slice: a busy worker rarely sleeps in `poll`, and
                // the other one's clients would wait a whole slice (about
                // 4 ms: p99 4.4 ms against 0.9 ms with this, 2 workers on one
                // core, docs/perf-history.md, 2026-12-02, e307776). Alone on its core, the call
                // returns at once.
                // SAFETY: sched_yield takes no arguments and cannot fail on Linux.
                unsafe { libc::sched_yield() };
            }
            let st = &self.shared.stats[self.id];
            st.iterations.fetch_add(1, Ordering::Relaxed);
            st.busy_ns
                .fetch_add(busy_from.elapsed().as_nanos() as u64, Ordering::Relaxed);
            st.timers.store(self.wheel.len() as u64, Ordering::Relaxed);
            self.publish_retained();
        }
        self.flush_wakes();
        log::debug!(
            "worker {} stopping: {} connections, {} sessions",
            self.id,
            self.conns.len(),
            self.relay.len()
        );
        self.close_all();
    }

    /// Runs `f` (the handling of the connection behind `token`); if it panics,
    /// the panic is logged with the session id, that connection is closed, and
    /// the worker carries on with every other connection.
    pub fn guarded(&mut self, token: usize, f: impl FnOnce(&mut Worker)) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        if r.is_ok() {
            return;
        }
        super::stats::WorkerStats::add(&self.shared.stats[self.id].panics, 1);
        // Output held back for the connection whose handling panicked goes
        // with it; the next connection starts uncorked.
        self.cork = None;
        self.corked.clear();
        self.pipelined = false;
        let Some(idx) = self.conn_by_token(token) else {
            log::error!(
                "worker {}: panic while handling a connection that is already gone",
                self.id
            );
            return;
        };
        let sid = self.conns[idx].sid;
        log::error!("{sid} panic while handling this connection; closing it (other connections are unaffected)");
        let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.close_conn(idx, super::conn::CloseReason::Panic)
        }));
        if again.is_err() {
            // Closing panicked too: drop the connection without touching its session.
            if let Some(mut c) = self.remove_conn(idx) {
                if !c.authed {
                    self.unauth.left();
                }
                let _ = self.poll.registry().deregister(&mut c.stream);
                self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Gives memory back after a peak: shrinks the connection and session
    /// tables when they are mostly empty, and (worker 0) returns freed
    /// heap pages to the kernel, so a node that once held many connections
    /// does not keep their memory for months.
    fn housekeeping(&mut self) {
        self.next_housekeeping = self.now + HOUSEKEEPING_MS;
        if self.conns.capacity() > 1024 && self.conns.len() < self.conns.capacity() / 4 {
            self.conns.shrink_to_fit();
        }
        self.relay.shrink();
        self.wheel.shrink();
        self.pipes.shrink();
        self.ws.shrink();
        if self.cors.capacity() > 64 && self.cors.len() < self.cors.capacity() / 4 {
            self.cors.shrink_to_fit();
        }
        self.shrink_senders();
        // A cache: keep-alive senders verify their token again once per period.
        self.token_cache = hashbrown::HashMap::default();
        self.flush_noisy();
        crate::alloc::flush_thread_cache();
        if self.id == 0 {
            crate::alloc::release_free_memory();
        }
    }

    /// Gives back what a burst of work left cached once the worker has gone
    /// quiet: this thread's allocator cache, then the free pages of every
    /// heap arena. Without it, memory freed after a burst (request buffers of
    /// a thousand new connections, say) stays resident until the next
    /// housekeeping, and a worker that stays quiet never runs its thread
    /// cache's garbage collection at all. Runs at most once per busy period.
    fn settle(&mut self) {
        crate::alloc::flush_thread_cache();
        crate::alloc::release_free_memory();
    }

    /// A fresh generation for a new slab entry.
    pub fn next_gen(&mut self) -> u32 {
        let g = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        g
    }

    /// Queues `env` for worker `to`, waking it at the end of this iteration.
    pub fn post(&mut self, to: usize, env: Envelope) -> Result<(), Envelope> {
        self.shared.send_to(to, env)?;
        self.wakes[to] = true;
        Ok(())
    }

    /// Wakes every worker that was sent something in this iteration (one syscall each).
    pub fn flush_wakes(&mut self) {
        for i in 0..self.wakes.len() {
            if std::mem::take(&mut self.wakes[i]) && i != self.id {
                self.shared.wake(i);
            }
        }
    }

    /// Registers `stream` in the slab and with the poll; `None` (stream dropped) if registration fails.
    pub fn insert_conn(
        &mut self,
        mut stream: TcpStream,
        sid: crate::ids::SessionId,
        since_ms: u64,
    ) -> Option<usize> {
        let gen = self.next_gen();
        let entry = self.conns.vacant_entry();
        let idx = entry.key();
        let token = Token(((gen as usize) << 32) | idx);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("{sid} register failed: {e}");
            self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        entry.insert(Conn::new(stream, gen, sid, since_ms, self.now));
        super::stats::WorkerStats::add(&self.shared.stats[self.id].open, 1);
        Some(idx)
    }

    /// How long a request may wait for another worker or the cluster before it gets 503.
    pub fn wait_limit_ms(&self) -> u64 {
        let t = self
            .shared
            .config
            .cluster
            .as_ref()
            .map_or(std::time::Duration::ZERO, |c| c.timeout * 2);
        (t + std::time::Duration::from_secs(5)).as_millis() as u64
    }

    /// Starts the wait for an answer from another worker or the cluster.
    pub fn await_answer(&mut self, idx: usize) {
        let d = self.now + self.wait_limit_ms();
        self.set_conn_deadline(idx, d);
    }

    /// Takes connection `idx` out of the slab, with its pending timer entry
    /// (so a closed connection holds no timer memory until its deadline).
    pub fn remove_conn(&mut self, idx: usize) -> Option<Conn> {
        let c = self.conns.try_remove(idx)?;
        self.pipes.remove(idx);
        self.ws.remove(idx);
        self.set_cors(idx, Default::default());
        self.uncount_sender(idx);
        self.disarm(TimerRef::conn(idx, c.gen, c.armed));
        Some(c)
    }

    /// Takes session `idx` out of the table, with its pending timer entry.
    pub fn remove_session(&mut self, idx: usize) -> Option<crate::relay::session::Session> {
        let s = self.relay.remove(idx)?;
        self.disarm(TimerRef::session(idx, s.gen, s.armed));
        Some(s)
    }

    /// Removes the wheel entry of session `idx`, taken out of the table as `s`.
    pub fn disarm_session(&mut self, idx: usize, s: &crate::relay::session::Session) {
        self.disarm(TimerRef::session(idx, s.gen, s.armed));
    }

    /// Removes the wheel entry `r` (armed for `r`'s deadline; 0 = not armed).
    fn disarm(&mut self, r: TimerRef) {
        let (TimerRef::Conn { at, .. } | TimerRef::Session { at, .. }) = r;
        if at != 0 {
            self.wheel.cancel(at, |t| *t == r);
        }
    }

    /// Sets the deadline of connection `idx`. Its single wheel entry is moved
    /// only when the deadline comes earlier than the entry; a later deadline
    /// is picked up when the entry fires (see `run_timers`), so a busy
    /// keep-alive connection costs the wheel one entry per wait period, not
    /// one per request.
    pub fn set_conn_deadline(&mut self, idx: usize, deadline: u64) {
        let c = &mut self.conns[idx];
        c.deadline = deadline;
        if c.armed == 0 || deadline < c.armed {
            let (gen, old) = (c.gen, std::mem::replace(&mut c.armed, deadline));
            self.disarm(TimerRef::conn(idx, gen, old));
            self.wheel
                .insert(deadline, TimerRef::conn(idx, gen, deadline));
        }
    }

    /// Arms (or moves) the single timer of session `idx`; 0 disarms.
    pub fn set_session_deadline(&mut self, idx: usize, deadline: u64) {
        let Some(s) = self.relay.get_mut(idx) else {
            return;
        };
        s.deadline = deadline;
        if deadline != 0 && (s.armed == 0 || deadline < s.armed) {
            let (gen, old) = (s.gen, std::mem::replace(&mut s.armed, deadline));
            self.disarm(TimerRef::session(idx, gen, old));
            self.wheel
                .insert(deadline, TimerRef::session(idx, gen, deadline));
        }
    }

    /// Runs the timers that are due. True if a session timer freed memory
    /// (retained messages expired or a held session was removed).
    fn run_timers(&mut self) -> bool {
        let mut reaped = false;
        let mut fired = std::mem::take(&mut self.fired);
        self.wheel.advance(self.now, &mut fired);
        for t in fired.drain(..) {
            match t {
                TimerRef::Conn { idx, gen, at } => {
                    let idx = idx as usize;
                    let Some(c) = self.conns.get_mut(idx) else {
                        continue;
                    };
                    if c.gen != gen || c.armed != at {
                        continue; // stale entry
                    }
                    c.armed = 0;
                    if c.deadline > self.now {
                        let d = c.deadline;
                        self.set_conn_deadline(idx, d);
                    } else {
                        let token = self.token_of(idx);
                        self.guarded(token, |me| me.conn_timeout(idx));
                    }
                }
                TimerRef::Session { idx, gen, at } => {
                    let idx = idx as usize;
                    let Some(s) = self.relay.get_mut(idx) else {
                        continue;
                    };
                    if s.gen != gen || s.armed != at {
                        continue;
                    }
                    s.armed = 0;
                    if s.deadline == 0 {
                        continue;
                    }
                    if s.deadline > self.now {
                        let d = s.deadline;
                        self.set_session_deadline(idx, d);
                    } else {
                        reaped |= self.session_timeout(idx);
                    }
                }
            }
        }
        self.fired = fired;
        reaped
    }

    /// Handles up to a batch of envelopes; true if more are waiting.
    fn drain_channel(&mut self) -> bool {
        for _ in 0..CHANNEL_BATCH {
            match self.rx.try_recv() {
                Ok(env) => self.envelope(env),
                Err(_) => return false,
            }
        }
        !self.rx.is_empty()
    }

    fn envelope(&mut self, env: Envelope) {
        match env {
            Envelope::Attach(a) => {
                let a = *a;
                let Some(idx) = self.adopt_conn(a.conn) else {
                    return;
                };
                super::stats::WorkerStats::add(&self.shared.stats[self.id].moved_in, 1);
                self.attach_receive(idx, a.ident, a.req);
            }
            Envelope::Handoff(h) => self.take_over_send(*h),
            Envelope::Deliver {
                account,
                from,
                to,
                body,
                json,
                reply,
                checked,
            } => {
                let found = self.relay.find(&account, &to);
                let body = (body, json);
                self.deliver_or_forward(found, &account, &from, &to, body, reply, checked);
            }
            Envelope::RemoteDeliver {
                account,
                from,
                to,
                body,
                json,
                node,
                req,
            } => {
                let result = self.deliver(&account, &from.into(), &to, body, json);
                if let Some(b) = &self.shared.cluster {
                    b.submit(super::bridge::BridgeCmd::DeliverReply { node, req, result });
                }
            }
            Envelope::TakeoverReq {
                account,
                client,
                node,
                req,
            } => self.takeover_req(&account, &client, node, req),
            Envelope::TakeoverDone { token, result } => {
                if let Some(idx) = self.conn_by_token(token) {
                    let t = self.token_of(idx);
                    self.guarded(t, |me| me.takeover_done(idx, result));
                }
            }
            Envelope::RemoteGone {
                account,
                client,
                reason,
            } => self.remote_gone(&account, &client, reason),
            Envelope::Reannounce => self.reannounce(),
            Envelope::Yield {
                account,
                client,
                node,
                resend,
            } => self.yield_session(&account, &client, node, resend),
            Envelope::Merge {
                account,
                client,
                session,
            } => self.merge_session(&account, &client, &session),
            Envelope::Delivered { reply, result } => {
                self.send_done(reply, result);
                self.resume(reply.token);
            }
            Envelope::Touch {
                account,
                client,
                peer,
                remote,
            } => self.touch(&account, &client, &peer, remote),
            Envelope::PeerGone {
                account,
                to,
                peer,
                reason,
            } => self.peer_gone(&account, &to, &peer, reason),
            Envelope::List { account, reply } => {
                let clients = self.list_clients(&account);
                self.reply_listed(reply, clients);
            }
            #[cfg(feature = "fault-injection")]
            Envelope::Panic => panic!("fault injection: panic outside connection handling"),
            #[cfg(feature = "fault-injection")]
            Envelope::Stall(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
            Envelope::Inspect { filter, reply } => {
                let _ = reply.send(self.inspect(&filter));
            }
            Envelope::Listed {
                token,
                seq,
                clients,
            } => {
                self.list_done(token, seq, clients);
                self.resume(token);
            }
        }
    }

    /// Continues with pipelined input of a connection that got its answer.
    fn resume(&mut self, token: usize) {
        if let Some(idx) = self.conn_by_token(token) {
            self.process_any(idx);
        }
    }

    /// Goes on with connection `idx`'s input: its requests, or the frames
    /// of a WebSocket connection.
    pub fn process_any(&mut self, idx: usize) {
        if self.conns[idx].framing().is_websocket() {
            self.ws_input(idx);
        } else {
            self.process(idx);
        }
    }

    /// Looks up a connection by its token (slab index plus generation).
    pub fn conn_by_token(&self, token: usize) -> Option<usize> {
        let idx = token & 0xffff_ffff;
        let gen = (token >> 32) as u32;
        match self.conns.get(idx) {
            Some(c) if c.gen == gen => Some(idx),
            _ => None,
        }
    }

    /// The token of connection `idx`.
    pub fn token_of(&self, idx: usize) -> usize {
        ((self.conns[idx].gen as usize) << 32) | idx
    }
}

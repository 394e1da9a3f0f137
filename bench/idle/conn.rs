//! The connection generator: one single-threaded mio event loop that opens
//! receive connections (plain or TLS), waits for each one's `ready` event,
//! then keeps reading and discarding until the end.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tls::tls_config;
use super::IdleArgs;
use crate::proto::{self, err_name, set_bind_address_no_port, Target};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

enum Phase {
    Connecting,
    Sending,
    Head,
    Up,
}

struct Client {
    id: usize,
    stream: TcpStream,
    /// The TLS session, with --tls.
    tls: Option<Box<rustls::ClientConnection>>,
    phase: Phase,
    req: Vec<u8>,
    sent: usize,
    buf: Vec<u8>,
}

/// Outcome counters of a generator.
#[derive(Debug, Default, Clone)]
pub(super) struct Counts {
    pub(super) established: usize,
    pub(super) failed: usize,
    /// Established connections the server closed later.
    pub(super) dropped: usize,
    /// Failures (including retried ones) by reason.
    pub(super) reasons: BTreeMap<String, u64>,
}

/// One single-threaded event loop driving up to `n` connections.
pub(super) struct Gen {
    poll: Poll,
    events: Events,
    clients: Slab<Client>,
    pub(super) n: usize,
    next: usize,
    retry: VecDeque<usize>,
    attempts: Vec<u8>,
    pub(super) inflight: usize,
    started: u64,
    pub(super) counts: Counts,
    scratch: Vec<u8>,
    sources: Vec<Ipv4Addr>,
    src_next: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
    tls_name: rustls::pki_types::ServerName<'static>,
    a: IdleArgs,
    pub(super) t0: Instant,
    pub(super) last_up: Instant,
}

impl Gen {
    pub(super) fn new(a: IdleArgs) -> io::Result<Gen> {
        let sources = (0..a.sources)
            .map(|i| Ipv4Addr::new(127, 0, ((2 + i) >> 8) as u8, ((2 + i) & 0xff) as u8))
            .collect();
        let now = Instant::now();
        let tls = match (&a.tls, &a.ca) {
            (true, Some(ca)) => Some(tls_config(ca)?),
            (true, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "--tls needs --ca",
                ))
            }
            _ => None,
        };
        let tls_name = rustls::pki_types::ServerName::try_from(a.tls_name.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--tls-name: {e}")))?;
        Ok(Gen {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            clients: Slab::with_capacity(a.connections),
            n: a.connections,
            next: 0,
            retry: VecDeque::new(),
            attempts: vec![0; a.connections],
            inflight: 0,
            started: 0,
            counts: Counts::default(),
            scratch: vec![0; 64 * 1024],
            sources,
            src_next: 0,
            tls,
            tls_name,
            a,
            t0: now,
            last_up: now,
        })
    }

    pub(super) fn done_connecting(&self) -> bool {
        self.counts.established + self.counts.failed >= self.n
    }

    fn fail(&mut self, id: usize, reason: String) {
        *self.counts.reasons.entry(reason).or_default() += 1;
        self.attempts[id] = self.attempts[id].saturating_add(1);
        if (self.attempts[id] as u32) <= self.a.retries {
            self.retry.push_back(id);
        } else {
            self.counts.failed += 1;
        }
    }

    /// Starts a connection for client index `id`.
    fn start(&mut self, id: usize) {
        self.started += 1;
        let stream = match self.open_socket() {
            Ok(s) => s,
            Err(e) => {
                self.fail(id, format!("connect: {}", err_name(&e)));
                return;
            }
        };
        let client = format!("c{}", self.a.offset + id);
        let req = proto::receive_request(
            self.a.target,
            self.a.server,
            &self.a.secret,
            &self.a.account,
            &client,
        );
        let tls = match &self.tls {
            Some(cfg) => match rustls::ClientConnection::new(cfg.clone(), self.tls_name.clone()) {
                Ok(t) => Some(Box::new(t)),
                Err(e) => {
                    self.fail(id, format!("tls: {e}"));
                    return;
                }
            },
            None => None,
        };
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        let mut c = Client {
            id,
            stream,
            tls,
            phase: Phase::Connecting,
            req,
            sent: 0,
            buf: Vec::new(),
        };
        if let Err(e) = self.poll.registry().register(
            &mut c.stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.fail(id, format!("register: {}", err_name(&e)));
            return;
        }
        entry.insert(c);
        self.inflight += 1;
    }

    fn open_socket(&mut self) -> io::Result<TcpStream> {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        sock.set_nonblocking(true)?;
        if !self.sources.is_empty() {
            let ip = self.sources[self.src_next % self.sources.len()];
            self.src_next += 1;
            // Pick the port at connect() by the whole 4-tuple, not at bind():
            // a bind to port 0 must find a port unused on this address, which
            // gets slow (system time) and runs out with many connections and
            // TIME_WAIT sockets of earlier runs.
            set_bind_address_no_port(&sock)?;
            sock.bind(&SockAddr::from(SocketAddrV4::new(ip, 0)))?;
        }
        match sock.connect(&SockAddr::from(self.a.server)) {
            Ok(()) => {}
            Err(e)
                if e.raw_os_error() == Some(libc::EINPROGRESS)
                    || e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        Ok(TcpStream::from_std(std::net::TcpStream::from(sock)))
    }

    /// Starts as many connections as the in-flight cap and rate allow.
    /// Returns true if it stopped only because of the rate limit.
    fn start_more(&mut self) -> bool {
        loop {
            if self.inflight >= self.a.inflight {
                return false;
            }
            let id = if let Some(id) = self.retry.pop_front() {
                id
            } else if self.next < self.n {
                self.next += 1;
                self.next - 1
            } else {
                return false;
            };
            if let Some(rate) = self.a.rate {
                let allowed = (self.t0.elapsed().as_secs_f64() * rate) as u64 + 1;
                if self.started >= allowed {
                    self.retry.push_front(id);
                    return true;
                }
            }
            self.start(id);
        }
    }

    /// Removes client `key`, counting a failure (in flight) or a drop (established).
    fn remove(&mut self, key: usize, reason: String) {
        let mut c = self.clients.remove(key);
        let _ = self.poll.registry().deregister(&mut c.stream);
        if matches!(c.phase, Phase::Up) {
            self.counts.dropped += 1;
            *self
                .counts
                .reasons
                .entry(format!("dropped: {reason}"))
                .or_default() += 1;
        } else {
            self.inflight -= 1;
            self.fail(c.id, reason);
        }
    }

    fn handle(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if matches!(c.phase, Phase::Connecting) {
            if let Ok(Some(e)) | Err(e) = c.stream.take_error() {
                let r = format!("connect: {}", err_name(&e));
                self.remove(key, r);
                return;
            }
            match c.stream.peer_addr() {
                Ok(_) => c.phase = Phase::Sending,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    let r = format!("connect: {}", err_name(&e));
                    self.remove(key, r);
                    return;
                }
            }
        }
        if c.tls.is_some() {
            self.handle_tls(key, readable);
            return;
        }
        if matches!(c.phase, Phase::Sending) && (writable || c.sent == 0) {
            while c.sent < c.req.len() {
                match c.stream.write(&c.req[c.sent..]) {
                    Ok(n) => c.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let r = format!("write: {}", err_name(&e));
                        self.remove(key, r);
                        return;
                    }
                }
            }
            if c.sent == c.req.len() {
                c.req = Vec::new();
                c.phase = Phase::Head;
            }
        }
        if !readable || matches!(c.phase, Phase::Sending) {
            return;
        }
        loop {
            let c = &mut self.clients[key];
            match c.stream.read(&mut self.scratch) {
                Ok(0) => {
                    let r = if matches!(c.phase, Phase::Up) {
                        "eof".to_string()
                    } else {
                        head_reason(self.a.target, &c.buf, "eof before ready")
                    };
                    self.remove(key, r);
                    return;
                }
                Ok(n) => {
                    if matches!(c.phase, Phase::Head) {
                        c.buf.extend_from_slice(&self.scratch[..n]);
                        match check_head(self.a.target, &c.buf) {
                            HeadCheck::More if c.buf.len() > 64 * 1024 => {
                                self.remove(key, "response too long without ready".into());
                                return;
                            }
                            HeadCheck::More => {}
                            HeadCheck::Ready => {
                                c.buf = Vec::new();
                                c.phase = Phase::Up;
                                self.inflight -= 1;
                                self.counts.established += 1;
                                self.last_up = Instant::now();
                            }
                            HeadCheck::Bad(r) => {
                                self.remove(key, r);
                                return;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let r = format!("read: {}", err_name(&e));
                    self.remove(key, r);
                    return;
                }
            }
        }
    }

    /// Handles an event of a connected TLS client: queues the request (rustls
    /// holds it until the handshake is done), reads and decrypts whatever
    /// arrived, then writes out what rustls has to send. WRITABLE interest
    /// stays registered (edge-triggered), so a blocked write resumes on the
    /// next writable event.
    fn handle_tls(&mut self, key: usize, readable: bool) {
        let c = &mut self.clients[key];
        let tls = c.tls.as_mut().unwrap();
        if matches!(c.phase, Phase::Sending) {
            if let Err(e) = tls.writer().write_all(&c.req) {
                let r = format!("tls write: {e}");
                self.remove(key, r);
                return;
            }
            c.req = Vec::new();
            c.phase = Phase::Head;
        }
        if readable {
            if let Err(r) = self.read_tls(key) {
                self.remove(key, r);
                return;
            }
        }
        let c = &mut self.clients[key];
        let tls = c.tls.as_mut().unwrap();
        while tls.wants_write() {
            match tls.write_tls(&mut c.stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let r = format!("write: {}", err_name(&e));
                    self.remove(key, r);
                    return;
                }
            }
        }
    }

    /// Reads ciphertext until the socket would block, decrypting as it goes
    /// and checking (before `ready`) or discarding (after) the plaintext.
    /// Err: the reason the connection is over.
    fn read_tls(&mut self, key: usize) -> Result<(), String> {
        let target = self.a.target;
        loop {
            let c = &mut self.clients[key];
            let tls = c.tls.as_mut().unwrap();
            let eof = match tls.read_tls(&mut c.stream) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {}", err_name(&e))),
            };
            let state = tls.process_new_packets();
            // Take what was decrypted before any error (it may hold the reason).
            let mut closed = false;
            loop {
                match tls.reader().read(&mut self.scratch) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        if matches!(c.phase, Phase::Head) {
                            c.buf.extend_from_slice(&self.scratch[..n]);
                            match check_head(target, &c.buf) {
                                HeadCheck::More if c.buf.len() > 64 * 1024 => {
                                    return Err("response too long without ready".into())
                                }
                                HeadCheck::More => {}
                                HeadCheck::Ready => {
                                    c.buf = Vec::new();
                                    c.phase = Phase::Up;
                                    self.inflight -= 1;
                                    self.counts.established += 1;
                                    self.last_up = Instant::now();
                                }
                                HeadCheck::Bad(r) => return Err(r),
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        closed = true;
                        break;
                    }
                    Err(e) => return Err(format!("tls read: {e}")),
                }
            }
            if let Err(e) = state {
                // Send the alert rustls queued, best effort.
                let _ = tls.write_tls(&mut c.stream);
                return Err(format!("tls: {e}"));
            }
            if eof || closed {
                return Err(if matches!(c.phase, Phase::Up) {
                    "eof".to_string()
                } else {
                    head_reason(target, &c.buf, "eof before ready")
                });
            }
        }
    }

    /// Runs the event loop for up to `dur`, starting connections as allowed.
    pub(super) fn turn(&mut self, dur: Duration) {
        let end = Instant::now() + dur;
        loop {
            let rate_limited = self.start_more();
            let now = Instant::now();
            if now >= end {
                return;
            }
            let mut timeout = end - now;
            if rate_limited {
                timeout = timeout.min(Duration::from_millis(5));
            }
            if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("switchboard-bench: poll: {e}");
                    std::process::exit(1);
                }
            }
            let evs: Vec<(usize, bool, bool)> = self
                .events
                .iter()
                .map(|e| {
                    (
                        e.token().0,
                        e.is_readable() || e.is_read_closed() || e.is_error(),
                        e.is_writable(),
                    )
                })
                .collect();
            for (k, r, w) in evs {
                self.handle(k, r, w);
            }
        }
    }
}

enum HeadCheck {
    More,
    Ready,
    Bad(String),
}

fn check_head(t: Target, buf: &[u8]) -> HeadCheck {
    match proto::check_ready(t, buf) {
        proto::HeadCheck::More => HeadCheck::More,
        proto::HeadCheck::Ready(_) => HeadCheck::Ready,
        proto::HeadCheck::Bad(r) => HeadCheck::Bad(r),
    }
}

fn head_reason(t: Target, buf: &[u8], default: &str) -> String {
    match check_head(t, buf) {
        HeadCheck::Bad(r) => r,
        _ => default.to_string(),
    }
}

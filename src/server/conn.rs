//! A client connection and the byte-moving half of the event loop: reads into
//! the worker's scratch buffer, writes straight to the socket and buffers only
//! what the kernel would not take.

use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use mio::net::TcpStream;

use super::stats::WorkerStats;
use super::worker::Worker;
use super::ClientInfo;
use crate::ids::SessionId;
use crate::proto::cors::Allow;
use crate::proto::request::RequestReader;
use crate::proto::response;
use crate::proto::stream::Framing;

/// A read at least this long that starts a request with a `Content-Length`
/// body is handed to the body directly (`RequestReader::begin_body`). Shorter reads
/// go through the input buffer: they are small requests, whose head would
/// otherwise be parsed twice, and copying them costs little.
const LARGE_READ: usize = 16 * 1024;
/// First read of a request on a connection whose requests so far averaged
/// [`LARGE_READ`] bytes or more (`sends_large`): enough for a request head,
/// so that the body that follows goes from the kernel straight into the
/// body's buffer instead of through the worker's scratch buffer (for a
/// 64 KiB message, a system call in place of a 64 KiB copy). A request that
/// fits is read whole all the same, with no extra call.
const HEAD_READ: usize = 2 * 1024;

/// Most unprocessed input bytes buffered for one connection (pipelined requests).
const MAX_INBUF: usize = 256 * 1024;
/// Most output held back for one connection while its pipelined requests are
/// processed (`Worker::process`); more is written at once.
const CORK_LIMIT: usize = 16 * 1024;
/// How long a connection that was answered and closed may keep sending before it is cut.
const LINGER_MS: u64 = 2_000;

/// What a connection is doing.
pub(super) enum State {
    /// Reading a request (head, then body).
    Request(RequestReader),
    /// Waiting for the answer to a send before reading on: a send for a
    /// client of this worker (answered at once unless the cluster is asked)
    /// or one that is the connection's last request. Other sends take a slot
    /// in the connection's pipe instead (`pipe`).
    Waiting { close: bool },
    /// Gathering `/v1/clients` answers from the workers.
    Listing(Box<Listing>),
    /// A receive connection waiting for the cluster to hand its session over.
    Attaching(Box<(crate::auth::Identity, super::StreamReq)>),
    /// A receive request read behind pipelined sends; it starts once they are answered.
    ReceiveAfter(Box<(crate::auth::Identity, super::StreamReq)>),
    /// An open receive connection of session `sess`, its body framed by `framing`.
    Receive {
        sess: u32,
        sess_gen: u32,
        framing: Framing,
    },
    /// Answered and write side shut; discarding input until EOF or the linger deadline.
    Linger,
}

/// A `/v1/clients` answer being gathered from the workers.
pub(super) struct Listing {
    /// Workers that have not answered yet.
    pub pending: usize,
    pub clients: Vec<ClientInfo>,
    pub close: bool,
}

/// One client connection. Holds no buffer while idle.
pub(super) struct Conn {
    pub stream: TcpStream,
    pub gen: u32,
    pub sid: SessionId,
    pub state: State,
    /// Unprocessed input (empty, with no allocation, while idle).
    pub inbuf: Vec<u8>,
    /// Output the kernel has not taken yet; `None` (no allocation) while idle.
    pub out: Option<Box<OutBuf>>,
    /// TLS state, on a TLS listener.
    pub tls: Option<super::sysbox::SysBox<super::tls::TlsConn>>,
    /// Wall-clock ms when the connection was accepted.
    pub since_ms: u64,
    /// Monotonic ms of the last write (heartbeat timing).
    pub last_write: u64,
    /// When this connection's timer should act (monotonic ms).
    pub deadline: u64,
    /// Deadline of the live wheel entry, 0 if none.
    pub armed: u64,
    /// Requests answered on this connection.
    pub requests: u32,
    /// Close once `out` is flushed.
    pub close_after_flush: bool,
    /// Stopped reading because `inbuf` is full; read again after processing.
    pub read_paused: bool,
    /// The client closed its sending side (EOF); close once its requests are answered.
    pub peer_eof: bool,
    /// Answers wait in `Worker::parked` for the end of the loop iteration (`park`).
    pub parked: bool,
    /// A request with a valid token was made on this connection.
    pub authed: bool,
    /// Bytes received and sent (for introspection).
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Conn {
    pub fn new(stream: TcpStream, gen: u32, sid: SessionId, since_ms: u64, now: u64) -> Conn {
        Conn {
            stream,
            gen,
            sid,
            state: State::Request(RequestReader::new()),
            inbuf: Vec::new(),
            out: None,
            tls: None,
            since_ms,
            last_write: now,
            deadline: 0,
            armed: 0,
            requests: 0,
            close_after_flush: false,
            read_paused: false,
            peer_eof: false,
            parked: false,
            authed: false,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// How the body of this connection's stream is framed (receive connections).
    pub fn framing(&self) -> Framing {
        match self.state {
            State::Receive { framing, .. } => framing,
            _ => Framing::Plain,
        }
    }

    /// Bytes queued but not yet written.
    pub fn pending_out(&self) -> usize {
        self.out.as_ref().map_or(0, |o| o.buf.len() - o.pos)
    }
}

/// True if the requests answered on `c` so far averaged at least
/// [`LARGE_READ`] bytes each (see [`HEAD_READ`]). Kept as the ratio of two
/// counters the connection has anyway: a flag would make every idle
/// connection's entry 8 bytes larger.
fn sends_large(c: &Conn) -> bool {
    c.requests > 0 && c.bytes_in >= c.requests as u64 * LARGE_READ as u64
}

/// How far the client's TCP acknowledged this connection's output: bytes
/// written minus what the kernel still holds unacknowledged (TIOCOUTQ).
/// `None` on TLS (record overhead makes offsets inexact) or if the kernel
/// will not say; then only a fully acknowledged stream counts as delivered.
pub(super) fn acked_bytes(c: &Conn) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let mut outq: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int through the pointer; the fd is open (owned by `c`).
    let r = unsafe { libc::ioctl(c.stream.as_raw_fd(), libc::TIOCOUTQ, &mut outq) };
    if r != 0 {
        return None;
    }
    let acked = c.bytes_out.saturating_sub(outq.max(0) as u64);
    if c.tls.is_some() {
        // Exact only when nothing is outstanding.
        return Some(if outq == 0 && c.pending_out() == 0 {
            u64::MAX
        } else {
            0
        });
    }
    Some(acked)
}

/// Output waiting for the socket to become writable.
pub(super) struct OutBuf {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
}

/// Sends `parts`, in order, on connection `c`, which has no output queued:
/// as much as the kernel takes now (one `send`, or one `sendmsg` for pieces
/// in separate buffers), the rest is queued for when the socket is writable
/// again. The caller handles an error ([`Worker::after_send`]).
pub(super) fn send_now(c: &mut Conn, st: &WorkerStats, parts: &[&[u8]]) -> io::Result<()> {
    debug_assert_eq!(c.pending_out(), 0);
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let fd = c.stream.as_raw_fd();
    let mut off = 0;
    while off < total {
        let r = match parts {
            [one] => super::sys::send(fd, &one[off..]),
            _ => super::sys::send_parts(fd, parts, off),
        };
        match r {
            Ok(0) => break,
            Ok(n) => {
                off += n;
                c.bytes_out += n as u64;
                WorkerStats::add(&st.bytes_out, n as u64);
                WorkerStats::add(&st.socket_writes, 1);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if off < total {
        let mut buf = Vec::with_capacity(total - off);
        let mut skip = off;
        for p in parts {
            let k = skip.min(p.len());
            buf.extend_from_slice(&p[k..]);
            skip -= k;
        }
        c.out = Some(Box::new(OutBuf { buf, pos: 0 }));
    }
    Ok(())
}

/// Why a connection was closed (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    PeerClosed,
    ReadError,
    WriteError,
    HandshakeTimeout,
    IdleTimeout,
    Answered,
    SlowConsumer,
    Shutdown,
    Panic,
    TlsError,
    /// Closed before its first request to make room for a newer connection
    /// (at `--max-connections` or `--max-unauthenticated`).
    Evicted,
}

impl CloseReason {
    /// Number of reasons.
    pub const COUNT: usize = 11;
    /// Every reason, in index order.
    pub const ALL: [CloseReason; Self::COUNT] = [
        CloseReason::PeerClosed,
        CloseReason::ReadError,
        CloseReason::WriteError,
        CloseReason::HandshakeTimeout,
        CloseReason::IdleTimeout,
        CloseReason::Answered,
        CloseReason::SlowConsumer,
        CloseReason::Shutdown,
        CloseReason::Panic,
        CloseReason::TlsError,
        CloseReason::Evicted,
    ];

    /// Position in [`CloseReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::ReadError => "read_error",
            CloseReason::WriteError => "write_error",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Answered => "answered",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Panic => "panic",
            CloseReason::TlsError => "tls_error",
            CloseReason::Evicted => "evicted_unauthenticated",
        }
    }
}

impl Worker {
    /// Handles readiness of the connection behind `token`; stale tokens are ignored.
    pub fn conn_event(&mut self, token: usize, readable: bool, hup: bool, writable: bool) {
        let Some(idx) = self.conn_by_token(token) else {
            return;
        };
        if writable && !self.flush(idx) {
            return;
        }
        if readable || hup {
            self.read_some(idx, hup);
        }
    }

    /// Reads everything available. Receive and lingering connections discard
    /// what they read; others buffer it and process requests.
    pub fn read_ready(&mut self, idx: usize) {
        self.read_some(idx, true);
    }

    /// Reads what connection `idx` has. With `to_block` false (a readable event
    /// without hang-up or error), a read shorter than the buffer ends the loop:
    /// the socket's receive queue was emptied by it, and anything arriving later
    /// raises a new edge (epoll(7), "Do I need to continuously read/write a file
    /// descriptor until EAGAIN"), so the extra read that would only say
    /// `WouldBlock` is saved. With `to_block` true (a hang-up or error was
    /// reported, or reading resumes after a pause without a new event) it reads
    /// until `WouldBlock` or end of stream.
    fn read_some(&mut self, idx: usize, to_block: bool) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut tls_out = std::mem::take(&mut self.tls_out);
        let mut sink = std::mem::take(&mut self.stage);
        tls_out.clear();
        let mut eof = false;
        let mut error = None;
        let mut got = false;
        let mut established = false;
        let mut body_started = false;
        {
            let c = &mut self.conns[idx];
            c.read_paused = false;
            let keep = !matches!(c.state, State::Receive { .. } | State::Linger);
            loop {
                if keep && c.inbuf.len() >= MAX_INBUF {
                    c.read_paused = true;
                    break;
                }
                // The rest of a request body goes straight into the body's own
                // buffer (one copy fewer than through `scratch` and `inbuf`).
                let fd = c.stream.as_raw_fd();
                let direct = match (&c.tls, c.inbuf.is_empty(), &mut c.state) {
                    (None, true, State::Request(r)) => match r.body_target() {
                        Some((body, want)) => {
                            let res = super::sys::recv_append(fd, body, want);
                            if let Ok(n) = res {
                                r.body_received(n);
                            }
                            Some((res, want))
                        }
                        None => None,
                    },
                    _ => None,
                };
                let into_body = direct.is_some();
                // A new request on a connection that sends large bodies: its
                // head first (see `HEAD_READ`).
                let head_first = !into_body
                    && sends_large(c)
                    && c.tls.is_none()
                    && c.inbuf.is_empty()
                    && matches!(&c.state, State::Request(r) if !r.in_body());
                let room = if head_first { HEAD_READ } else { scratch.len() };
                let (res, room) =
                    direct.unwrap_or_else(|| (super::sys::recv(fd, &mut scratch[..room]), room));
                match res {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        let drained = !to_block && n < room;
                        c.bytes_in += n as u64;
                        super::stats::WorkerStats::add(
                            &self.shared.stats[self.id].bytes_in,
                            n as u64,
                        );
                        if into_body {
                            got = true;
                        } else if let Some(t) = c.tls.as_mut() {
                            let was = t.established();
                            sink.clear();
                            let plain = if keep { &mut c.inbuf } else { &mut sink };
                            match t.feed(&scratch[..n], plain, &mut tls_out) {
                                Ok(p) => {
                                    established |= p.established && !was;
                                    eof |= p.closed;
                                }
                                Err(e) => {
                                    error = Some(io::Error::other(e.to_string()));
                                    break;
                                }
                            }
                            got |= keep && !c.inbuf.is_empty();
                        } else if keep {
                            // A large read that starts a request with a body goes
                            // to the body at once, not through `inbuf` (one copy of
                            // it fewer); only what follows the body is buffered, and
                            // the rest of an unfinished body comes by direct reads.
                            let cfg = &self.shared.config;
                            let large = n >= LARGE_READ || head_first;
                            let taken = match &mut c.state {
                                State::Request(r) if large && c.inbuf.is_empty() => r
                                    .begin_body(&scratch[..n], &cfg.head_limits, cfg.max_message)
                                    .map(|k| (k, !r.body_complete())),
                                _ => None,
                            };
                            let (k, unfinished) = taken.unwrap_or((0, false));
                            body_started |= unfinished;
                            c.inbuf.extend_from_slice(&scratch[k..n]);
                            got = true;
                        }
                        if drained {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
        }
        self.scratch = scratch;
        sink.clear();
        self.stage = sink;
        // Handshake records go out first, in order.
        if !tls_out.is_empty() && !self.write_raw(idx, &tls_out) {
            self.tls_out = tls_out;
            return;
        }
        self.tls_out = tls_out;
        if established && self.conns[idx].requests == 0 {
            log::debug!("{} tls established", self.conns[idx].sid);
            let d = self.now + self.shared.config.handshake_timeout.as_millis() as u64;
            self.set_conn_deadline(idx, d);
        }
        if body_started {
            self.arm_body_timeout(idx);
        }
        if got {
            self.process(idx);
        }
        if let Some(e) = error {
            if self.conns.contains(idx) {
                let tls = self.conns[idx].tls.is_some() && e.kind() == io::ErrorKind::Other;
                log::debug!("{} read error: {e}", self.conns[idx].sid);
                self.close_conn(
                    idx,
                    if tls {
                        CloseReason::TlsError
                    } else {
                        CloseReason::ReadError
                    },
                );
            }
            return;
        }
        if eof && self.conns.contains(idx) {
            if matches!(self.conns[idx].state, State::Receive { .. } | State::Linger) {
                self.close_conn(idx, CloseReason::PeerClosed);
            } else {
                // A client may half-close after its last requests and still wait
                // for the answers: finish what is buffered, then close.
                self.conns[idx].peer_eof = true;
                self.finish_if_half_closed(idx);
            }
        }
    }

    /// For a client that closed its sending side: once no request is in
    /// progress or buffered, close (after the output is flushed).
    pub fn finish_if_half_closed(&mut self, idx: usize) {
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        if !c.peer_eof || c.close_after_flush {
            return;
        }
        let idle = matches!(&c.state, State::Request(_))
            && (c.inbuf.is_empty() || c.pending_out() == 0)
            && !self.pipes.contains(idx);
        if !idle {
            return;
        }
        // Buffered bytes that never became a complete request cannot complete now.
        if c.pending_out() == 0 && !c.parked {
            self.close_conn(idx, CloseReason::PeerClosed);
        } else {
            c.close_after_flush = true;
        }
    }

    /// Writes application data to connection `idx` (encrypted first on a TLS
    /// connection). Returns false if the connection was closed.
    pub fn write_conn(&mut self, idx: usize, bytes: &[u8]) -> bool {
        if self.conns[idx].tls.is_none() {
            return self.write_raw(idx, bytes);
        }
        let mut cipher = std::mem::take(&mut self.tls_out);
        cipher.clear();
        let c = &mut self.conns[idx];
        let Conn {
            tls, inbuf, state, ..
        } = c;
        let r = match tls.as_mut() {
            Some(t) => t.encrypt(bytes, inbuf, &mut cipher),
            None => Ok(()),
        };
        if matches!(state, State::Receive { .. } | State::Linger) {
            inbuf.clear();
        }
        if let Err(e) = r {
            log::debug!("{} {e}", c.sid);
            self.tls_out = cipher;
            self.close_conn(idx, CloseReason::WriteError);
            return false;
        }
        let ok = self.write_raw(idx, &cipher);
        self.tls_out = cipher;
        ok
    }

    /// Writes `bytes` to the socket of connection `idx` now, buffering what the
    /// kernel will not take. Returns false if the connection was closed.
    pub fn write_raw(&mut self, idx: usize, bytes: &[u8]) -> bool {
        if self.cork == Some(idx) {
            // Its input is being processed: answers to pipelined requests go
            // out together when processing stops (`Worker::process`).
            if self.corked.len() + bytes.len() <= CORK_LIMIT {
                self.corked.extend_from_slice(bytes);
                return true;
            }
            // Too much to hold: what is held goes first, then this, uncorked.
            self.uncork(idx);
            let ok = self.write_raw(idx, bytes);
            self.cork = Some(idx);
            return ok;
        }
        // Answers parked for the end of the iteration go first.
        if self.conns[idx].parked && !self.unpark(idx) {
            return false;
        }
        let max_out = self.shared.config.max_outbound;
        let c = &mut self.conns[idx];
        c.last_write = self.now;
        if c.pending_out() > 0 {
            if let Some(o) = c.out.as_mut() {
                o.buf.extend_from_slice(bytes);
            }
            if c.pending_out() > max_out && matches!(c.state, State::Receive { .. }) {
                log::info!(
                    "{} slow consumer: {} bytes queued (limit {max_out})",
                    c.sid,
                    c.pending_out()
                );
                self.close_conn(idx, CloseReason::SlowConsumer);
                return false;
            }
            return true;
        }
        let r = send_now(c, &self.shared.stats[self.id], &[bytes]);
        self.after_send(idx, r)
    }

    /// What follows [`send_now`] on connection `idx`: on an error the
    /// connection is closed; once all is out, a connection waiting for that
    /// is closed. Returns false if the connection was closed.
    pub(super) fn after_send(&mut self, idx: usize, r: io::Result<()>) -> bool {
        let c = &mut self.conns[idx];
        match r {
            Err(e) => {
                log::debug!("{} write error: {e}", c.sid);
                self.close_conn(idx, CloseReason::WriteError);
                false
            }
            Ok(()) if c.pending_out() == 0 && c.close_after_flush => {
                self.finish_close(idx);
                false
            }
            Ok(()) => true,
        }
    }

    /// Ends the cork on connection `idx`: writes the output held back for it
    /// (in one `send` if the kernel takes it). Returns false if the connection
    /// was closed.
    pub fn uncork(&mut self, idx: usize) -> bool {
        if self.cork != Some(idx) {
            return self.conns.contains(idx);
        }
        self.cork = None;
        if self.corked.is_empty() {
            return self.conns.contains(idx);
        }
        let mut held = std::mem::take(&mut self.corked);
        let ok = self.conns.contains(idx) && self.write_raw(idx, &held);
        held.clear();
        if held.capacity() <= 2 * CORK_LIMIT {
            self.corked = held;
        }
        ok
    }

    /// Writes buffered output. Returns false if the connection was closed.
    pub fn flush(&mut self, idx: usize) -> bool {
        let c = &mut self.conns[idx];
        let Some(o) = c.out.as_mut() else { return true };
        while o.pos < o.buf.len() {
            match super::sys::send(c.stream.as_raw_fd(), &o.buf[o.pos..]) {
                Ok(0) => break,
                Ok(n) => {
                    o.pos += n;
                    c.bytes_out += n as u64;
                    let st = &self.shared.stats[self.id];
                    super::stats::WorkerStats::add(&st.bytes_out, n as u64);
                    super::stats::WorkerStats::add(&st.socket_writes, 1);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("{} write error: {e}", c.sid);
                    self.close_conn(idx, CloseReason::WriteError);
                    return false;
                }
            }
        }
        if o.pos >= o.buf.len() {
            // Drained: give the memory back, an idle connection holds no buffer.
            c.out = None;
            if c.close_after_flush {
                self.finish_close(idx);
                return false;
            }
            // Not while this connection's requests are being dispatched: its
            // request loop goes on by itself.
            let dispatching = self.consumed.is_some_and(|(i, _)| i == idx);
            if !matches!(c.state, State::Receive { .. }) && !c.inbuf.is_empty() && !dispatching {
                self.process(idx);
                if !self.conns.contains(idx) {
                    return false;
                }
            }
        }
        true
    }

    /// Output is complete for a connection that must close: shut the write
    /// side and discard input for a short while so the client reads the answer
    /// instead of a reset.
    pub(super) fn finish_close(&mut self, idx: usize) {
        if matches!(self.conns[idx].state, State::Linger) {
            return;
        }
        self.detach_receive(idx, CloseReason::Answered);
        let c = &mut self.conns[idx];
        let _ = c.stream.shutdown(Shutdown::Write);
        c.state = State::Linger;
        c.inbuf = Vec::new();
        c.close_after_flush = false;
        let d = self.now + LINGER_MS;
        self.set_conn_deadline(idx, d);
        self.read_ready(idx);
    }

    /// Writes a JSON error answer; closes afterwards when `close`.
    pub fn respond_error(
        &mut self,
        idx: usize,
        status: u16,
        code: &'static str,
        message: &str,
        close: bool,
    ) {
        self.shared.stats[self.id].error(status, code);
        let close = self.must_close(idx, close);
        let mut out = std::mem::take(&mut self.stage);
        out.clear();
        response::write_json_error(&mut out, status, code, message, close);
        self.add_cors(idx, &mut out, 0);
        self.answer(idx, &out, close);
        self.stage = out;
    }

    /// Writes a JSON answer; closes afterwards when `close`.
    pub fn respond_json(&mut self, idx: usize, status: u16, body: &[u8], close: bool) {
        let close = self.must_close(idx, close);
        let mut out = std::mem::take(&mut self.stage);
        out.clear();
        response::write_response(&mut out, status, "application/json", body, close);
        self.add_cors(idx, &mut out, 0);
        self.answer(idx, &out, close);
        self.stage = out;
    }

    /// Adds the CORS headers of connection `idx`'s current request (if it is
    /// an allowed cross-origin one) to the answer that starts at `start` in `out`.
    pub(super) fn add_cors(&self, idx: usize, out: &mut Vec<u8>, start: usize) {
        let allow = self.cors_of(idx);
        crate::proto::cors::insert_headers(out, start, allow, &self.shared.config.allowed_origins);
    }

    /// The CORS kind of connection `idx`'s current request. Only connections
    /// whose current request is an allowed cross-origin one have an entry in
    /// `Worker::cors` (browsers' send connections and streams being set up),
    /// so the others, agents above all, pay nothing for it.
    pub(super) fn cors_of(&self, idx: usize) -> Allow {
        if self.cors.is_empty() {
            return Allow::Plain;
        }
        self.cors.get(&idx).copied().unwrap_or_default()
    }

    /// Sets the CORS kind of connection `idx`'s current request.
    pub(super) fn set_cors(&mut self, idx: usize, allow: Allow) {
        if allow != Allow::Plain {
            self.cors.insert(idx, allow);
        } else if !self.cors.is_empty() {
            self.cors.remove(&idx);
        }
    }

    /// Whether the answer about to be written must be the connection's last
    /// (and say `Connection: close`): the request asked for it, the node is
    /// draining, or the connection outlived --send-lifetime.
    pub(super) fn must_close(&self, idx: usize, close: bool) -> bool {
        let too_old = self.conns[idx].since_ms
            + self.shared.config.send_lifetime.as_millis() as u64
            <= self.wall_ms;
        close || too_old || self.shared.draining.load(Ordering::Relaxed)
    }

    /// Writes the answer to the request just read (behind the connection's
    /// pipe if it has one); closes afterwards when `close`.
    pub(super) fn answer(&mut self, idx: usize, bytes: &[u8], close: bool) {
        if let Some(pipe) = self.pipes.get_mut(idx) {
            // Earlier pipelined sends are still being answered: this one comes after them.
            pipe.push_ready(bytes, close);
            let c = &mut self.conns[idx];
            c.requests += 1;
            if !matches!(c.state, State::Receive { .. } | State::Request(_)) {
                c.state = State::Request(RequestReader::new());
            }
            return;
        }
        {
            let c = &mut self.conns[idx];
            c.requests += 1;
            if close {
                c.close_after_flush = true;
            } else if !matches!(c.state, State::Receive { .. }) {
                c.state = State::Request(RequestReader::new());
            }
        }
        if !self.write_conn(idx, bytes) {
            return;
        }
        if !close && self.conns.contains(idx) {
            let d = self.now + self.shared.config.idle_timeout.as_millis() as u64;
            self.set_conn_deadline(idx, d);
        }
    }

    /// Handles an expired connection timer.
    pub fn conn_timeout(&mut self, idx: usize) {
        if self.pipes.contains(idx) {
            // Pipelined sends whose answers did not come in time get 503; what
            // waited behind them goes on.
            self.fail_pipe(idx);
            self.process(idx);
            return;
        }
        let c = &self.conns[idx];
        match c.state {
            State::Receive { .. } => self.heartbeat(idx),
            State::Request(ref r) if r.in_body() => {
                log::info!("{} body timeout", c.sid);
                self.respond_error(
                    idx,
                    408,
                    "request_timeout",
                    "request body not received in time",
                    true,
                );
            }
            State::Request(_) if c.requests == 0 => {
                log::info!("{} handshake timeout", c.sid);
                self.close_conn(idx, CloseReason::HandshakeTimeout);
            }
            State::Request(_) => {
                if c.inbuf.is_empty() {
                    log::debug!("{} idle timeout", c.sid);
                    self.close_conn(idx, CloseReason::IdleTimeout);
                } else {
                    log::info!("{} request head timeout", c.sid);
                    self.close_conn(idx, CloseReason::HandshakeTimeout);
                }
            }
            State::Waiting { .. }
            | State::Listing(_)
            | State::Attaching(_)
            | State::ReceiveAfter(_) => {
                // The answer (from another worker, or the cluster) did not come in time.
                let sid = c.sid;
                if let Some(more) = self.noisy(super::throttle::Noisy::NoAnswer) {
                    log::warn!("{sid} no answer from the cluster or another worker in time{more}");
                }
                let msg = "no answer in time from the node that holds the recipient; retry later";
                self.respond_error(idx, 503, "cluster_unavailable", msg, true);
            }
            State::Linger => self.close_conn(idx, CloseReason::Answered),
        }
    }

    /// Removes connection `idx`: deregisters and closes the socket, and moves its session (if any) to held.
    pub fn close_conn(&mut self, idx: usize, reason: CloseReason) {
        let Some(mut c) = self.remove_conn(idx) else {
            return;
        };
        if !c.authed {
            self.unauth.left();
        }
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
        let st = &self.shared.stats[self.id];
        super::stats::WorkerStats::add(&st.closed[reason.index()], 1);
        super::stats::WorkerStats::sub(&st.open, 1);
        if !matches!(
            reason,
            CloseReason::Answered | CloseReason::IdleTimeout | CloseReason::PeerClosed
        ) || matches!(c.state, State::Receive { .. })
        {
            log::info!("{} closed: {}", c.sid, reason.as_str());
        } else {
            log::debug!("{} closed: {}", c.sid, reason.as_str());
        }
        if let State::Receive { sess, sess_gen, .. } = c.state {
            super::stats::WorkerStats::sub(&self.shared.stats[self.id].receive_open, 1);
            let acked = acked_bytes(&c);
            self.receive_closed(sess as usize, sess_gen, idx, c.gen, acked, reason);
        }
    }

    /// A receive connection that is about to close after its last output:
    /// its session becomes held now (if it is still the session's connection).
    fn detach_receive(&mut self, idx: usize, reason: CloseReason) {
        let c = &mut self.conns[idx];
        if let State::Receive { sess, sess_gen, .. } = c.state {
            c.state = State::Linger;
            let gen = c.gen;
            super::stats::WorkerStats::sub(&self.shared.stats[self.id].receive_open, 1);
            self.receive_closed(sess as usize, sess_gen, idx, gen, None, reason);
        }
    }
}

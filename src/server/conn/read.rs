//! Reading a connection: into the worker's scratch buffer, or straight into a
//! request body's own buffer; end of stream and half-closed clients.

use std::io;
use std::os::fd::AsRawFd;

use super::{CloseReason, Conn, State};
use crate::server::worker::Worker;

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

/// True if the requests answered on `c` so far averaged at least
/// [`LARGE_READ`] bytes each (see [`HEAD_READ`]). Kept as the ratio of two
/// counters the connection has anyway: a flag would make every idle
/// connection's entry 8 bytes larger.
fn sends_large(c: &Conn) -> bool {
    c.requests > 0 && c.bytes_in >= c.requests as u64 * LARGE_READ as u64
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
        let mut websocket = false;
        {
            let c = &mut self.conns[idx];
            c.read_paused = false;
            // A WebSocket connection's input is its client's frames.
            let keep = match c.state {
                State::Receive { framing, .. } => {
                    websocket = framing.is_websocket();
                    websocket
                }
                State::Linger => false,
                _ => true,
            };
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
                            let res = crate::server::sys::recv_append(fd, body, want);
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
                let (res, room) = direct
                    .unwrap_or_else(|| (crate::server::sys::recv(fd, &mut scratch[..room]), room));
                match res {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        let drained = !to_block && n < room;
                        c.bytes_in += n as u64;
                        crate::server::stats::WorkerStats::add(
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
            if websocket {
                self.ws_input(idx);
            } else {
                self.process(idx);
            }
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
}

//! Writing a connection: straight to the socket, the rest buffered until it
//! is writable; TLS encryption, corking of pipelined answers, flushing.

use std::io;
use std::os::fd::AsRawFd;

use super::{CloseReason, Conn, OutBuf, State};
use crate::server::stats::WorkerStats;
use crate::server::worker::Worker;

/// Most output held back for one connection while its pipelined requests are
/// processed (`Worker::process`); more is written at once.
const CORK_LIMIT: usize = 16 * 1024;

/// Sends `parts`, in order, on connection `c`, which has no output queued:
/// as much as the kernel takes now (one `send`, or one `sendmsg` for pieces
/// in separate buffers), the rest is queued for when the socket is writable
/// again. The caller handles an error ([`Worker::after_send`]).
pub(in crate::server) fn send_now(
    c: &mut Conn,
    st: &WorkerStats,
    parts: &[&[u8]],
) -> io::Result<()> {
    debug_assert_eq!(c.pending_out(), 0);
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let fd = c.stream.as_raw_fd();
    let mut off = 0;
    while off < total {
        let r = match parts {
            [one] => crate::server::sys::send(fd, &one[off..]),
            _ => crate::server::sys::send_parts(fd, parts, off),
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
impl Worker {
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
        // Input that arrives meanwhile is kept only where it is read (not on
        // an SSE stream or a closing connection).
        let discard = match state {
            State::Receive { framing, .. } => !framing.is_websocket(),
            State::Linger => true,
            _ => false,
        };
        if discard {
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
    pub(in crate::server) fn after_send(&mut self, idx: usize, r: io::Result<()>) -> bool {
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
            match crate::server::sys::send(c.stream.as_raw_fd(), &o.buf[o.pos..]) {
                Ok(0) => break,
                Ok(n) => {
                    o.pos += n;
                    c.bytes_out += n as u64;
                    let st = &self.shared.stats[self.id];
                    crate::server::stats::WorkerStats::add(&st.bytes_out, n as u64);
                    crate::server::stats::WorkerStats::add(&st.socket_writes, 1);
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
}

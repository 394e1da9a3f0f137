//! A client connection and the byte-moving half of the event loop: reads into
//! the worker's scratch buffer, writes straight to the socket and buffers only
//! what the kernel would not take.
//!
//! This module holds the connection (`Conn`), its state and why it closed;
//! `read` has the reads, `write` the writes and flushes, `answer` the answers
//! to requests and `close` the timeouts and closing.

mod answer;
mod close;
mod read;
mod write;

pub(super) use write::send_now;

use mio::net::TcpStream;

use super::ClientInfo;
use crate::ids::SessionId;
use crate::proto::request::RequestReader;
use crate::proto::stream::Framing;

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

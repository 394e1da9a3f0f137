//! The thread-per-core event loop.
//!
//! Each worker thread owns a `mio::Poll`, its own `SO_REUSEPORT` listener, a
//! slab of connections, the sessions of the clients hashed to it, and a timer
//! wheel. A receive connection accepted on one worker is handed (socket and
//! all) to the worker that owns its client; a send to a client owned by another
//! worker travels as an [`Envelope`] over that worker's bounded channel and the
//! answer comes back the same way. There is no lock on the message path.

mod accept;
pub mod admin;
mod admission;
mod attach;
pub mod bridge;
mod clustered;
mod conn;
mod deliver;
mod drain;
mod evict;
mod http;
pub mod limits;
mod park;
mod pipe;
mod quiet;
mod senders;
mod session;
pub mod stats;
mod sys;
mod sysbox;
mod throttle;
pub mod tls;
mod unauth;
mod worker;
mod ws;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Poll, Waker};

use crate::auth::{Identity, Verifier};
use crate::config::Config;
use crate::ids::{EventId, SessionId};

pub use worker::WAKER_TOKEN;

/// Capacity of each worker's inbound channel.
const CHANNEL_CAPACITY: usize = 65_536;

/// State shared (read-only, or atomics) by all workers of a node.
pub struct Shared {
    /// The node's configuration.
    pub config: Config,
    verifier: Verifier,
    peers: Vec<Peer>,
    /// Monotonic origin of every worker's millisecond clock.
    origin: Instant,
    /// Set when the node is shutting down.
    pub shutdown: AtomicBool,
    /// Set when the node drains before exit: no new connections, clients told to go elsewhere.
    pub draining: AtomicBool,
    /// Unix time (s) the node started.
    pub start_epoch_s: u64,
    /// Open client connections on this node (all workers).
    pub open_connections: AtomicUsize,
    /// One statistics block per worker.
    pub stats: Vec<stats::WorkerStats>,
    /// The Redis bridge, on a clustered node.
    pub cluster: Option<Arc<bridge::Bridge>>,
    /// Certificate and key, when the client port speaks TLS.
    pub tls: Option<tls::TlsFiles>,
    /// Open receive and keep-alive send connections per account.
    pub accounts: limits::AccountCounts,
    /// New connections per source address (`--max-new-connections-per-address`).
    address_rate: admission::AddressRate,
}

struct Peer {
    tx: Sender<Envelope>,
    waker: Arc<Waker>,
}

impl Shared {
    /// Milliseconds since the node started (monotonic).
    pub fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Milliseconds from the node's start to `t` (0 for an earlier instant).
    pub fn ms_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// The worker that owns the sessions of `client` in `account`: with
    /// `--shard-by account` (the default) the one its account hashes to, so
    /// that a message, which never leaves its account, stays on one worker;
    /// with `--shard-by client` the one `account/client` hashes to.
    fn owner(&self, account: &str, client: &str) -> usize {
        // FNV-1a: stable, cheap, and the input is already authenticated.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |bytes: &[u8]| {
            for &b in bytes {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        mix(account.as_bytes());
        if self.config.shard_by == crate::config::ShardBy::Client {
            mix(b"/");
            mix(client.as_bytes());
        }
        (h % self.peers.len() as u64) as usize
    }

    /// Queues `env` for worker `to` without blocking. The worker is woken by the
    /// caller (see [`worker::Worker::flush_wakes`]). Gives the envelope back when full.
    fn send_to(&self, to: usize, env: Envelope) -> Result<(), Envelope> {
        // The channel is a linked list of small blocks that are freed as they
        // drain (a preallocated ring would keep every page it ever touched);
        // the bound is enforced here.
        if self.peers[to].tx.len() >= CHANNEL_CAPACITY {
            return Err(env);
        }
        match self.peers[to].tx.try_send(env) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(e)) | Err(TrySendError::Disconnected(e)) => Err(e),
        }
    }

    fn wake(&self, to: usize) {
        if let Err(e) = self.peers[to].waker.wake() {
            log::error!("waking worker {to}: {e}");
        }
    }
}

/// Starts draining the node behind `shared` (see [`Server::drain`]).
pub fn drain(shared: &Shared) {
    if !shared.draining.swap(true, Ordering::SeqCst) {
        for i in 0..shared.peers.len() {
            shared.wake(i);
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where to send an answer: a worker and a connection token on it.
#[derive(Debug, Clone, Copy)]
struct ReplyTo {
    worker: usize,
    token: usize,
    /// The answer's slot in the connection's pipe ([`pipe`]); 0 if the
    /// connection waits for this answer alone.
    seq: u64,
}

/// Why a message could not be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendError {
    /// The recipient has no receive connection and is not held.
    Offline,
    /// The recipient's worker could not take the message.
    Overloaded,
    /// The recipient may be on another node, and Redis cannot be reached.
    ClusterUnavailable,
    /// The worker or node that holds the recipient did not answer in time.
    Timeout,
}

impl SendError {
    /// The HTTP status, error code and message a sender gets.
    fn answer(self) -> (u16, &'static str, &'static str) {
        match self {
            SendError::Offline => (
                404,
                "recipient_offline",
                "no such client is connected or held in your account",
            ),
            SendError::Overloaded => (503, "overloaded", "the node is overloaded; retry later"),
            SendError::ClusterUnavailable => (
                503,
                "cluster_unavailable",
                "the recipient may be on another node and the cluster cannot be reached; retry later",
            ),
            SendError::Timeout => (
                503,
                "cluster_unavailable",
                "no answer in time from the node that holds the recipient; retry later",
            ),
        }
    }
}

/// A client in a `/v1/clients` answer.
#[derive(Debug, Clone)]
struct ClientInfo {
    client: String,
    role: crate::auth::Role,
    online: bool,
    since_ms: u64,
}

/// Work passed between workers.
enum Envelope {
    /// A receive connection handed to the worker that owns its client.
    Attach(Box<Attach>),
    /// A send connection handed to the worker that owns its account.
    Handoff(Box<Handoff>),
    /// A message for a client owned by the receiving worker.
    Deliver {
        account: Box<str>,
        /// The sender's id, shared with its identity (see [`Identity::client`]).
        from: Arc<str>,
        to: Box<str>,
        body: Box<[u8]>,
        /// The body is compact JSON, delivered as a value (`proto::json_body`).
        json: bool,
        reply: ReplyTo,
        /// The presence table confirmed that this node owns the recipient
        /// (on a cluster, a held recipient is accepted only then).
        checked: bool,
    },
    /// The answer to a `Deliver`.
    Delivered {
        reply: ReplyTo,
        result: Result<EventId, SendError>,
    },
    /// `client` exchanged a message with `peer` (conversation tracking for peer-gone).
    Touch {
        account: Box<str>,
        client: Box<str>,
        peer: Box<str>,
        /// It came from another node (do not forward it again).
        remote: bool,
    },
    /// A message from another node for a client owned by the receiving worker;
    /// the answer goes back to `node` with `req`.
    RemoteDeliver {
        account: Box<str>,
        from: Box<str>,
        to: Box<str>,
        body: Box<[u8]>,
        json: bool,
        node: String,
        req: u64,
    },
    /// Another node wants the session of `client` (its client reconnected there).
    TakeoverReq {
        account: Box<str>,
        client: Box<str>,
        node: String,
        req: u64,
    },
    /// The end of a takeover this node asked for.
    TakeoverDone {
        token: usize,
        result: bridge::Takeover,
    },
    /// `client` went offline for good somewhere in the cluster: tell its partners held here.
    RemoteGone {
        account: Box<str>,
        client: Box<str>,
        reason: &'static str,
    },
    /// Announce every session to the cluster again (Redis came back).
    Reannounce,
    /// Node `node` owns `client` now: hand it the session (what it has not
    /// delivered), forget it here, then send `resend` (a message that found
    /// the session stale) on to the owner.
    Yield {
        account: Box<str>,
        client: Box<str>,
        node: String,
        resend: Option<Box<Resend>>,
    },
    /// A session of `client` handed over unasked (or too late) by another
    /// node: what it had not delivered joins the client's session here.
    Merge {
        account: Box<str>,
        client: Box<str>,
        session: Vec<u8>,
    },
    /// `peer` went offline; tell `to` if it still exists.
    PeerGone {
        account: Box<str>,
        to: Box<str>,
        peer: Box<str>,
        reason: &'static str,
    },
    /// List the clients of `account` held by the receiving worker.
    List { account: Box<str>, reply: ReplyTo },
    /// The answer to a `List`.
    Listed {
        token: usize,
        /// The answer's slot in a WebSocket connection's pipe (0: an HTTP listing).
        seq: u64,
        /// `None`: the cluster could not be asked.
        clients: Option<Vec<ClientInfo>>,
    },
    /// Test-only: panic in the worker outside any connection's handling.
    #[cfg(feature = "fault-injection")]
    Panic,
    /// Test-only: the worker does nothing for this many milliseconds (a busy
    /// or stuck worker, as its peers see it).
    #[cfg(feature = "fault-injection")]
    Stall(u64),
    /// Describe this worker's connections (admin `/connections`): (matched, first `limit`).
    Inspect {
        filter: InspectFilter,
        reply: Sender<(usize, Vec<ConnInfo>)>,
    },
}

/// A send to pass on after a yield: sender, body and whether it is JSON,
/// where the answer goes.
type Resend = (Arc<str>, (Box<[u8]>, bool), ReplyTo);

/// Which connections `/connections` asks for.
#[derive(Debug, Clone)]
struct InspectFilter {
    account: Option<String>,
    client: Option<String>,
    limit: usize,
}

/// One connection as `/connections` shows it.
#[derive(Debug, Clone)]
struct ConnInfo {
    sid: SessionId,
    account: Option<String>,
    client: Option<String>,
    role: Option<crate::auth::Role>,
    kind: &'static str,
    /// How a receive connection's events travel: `sse` or `websocket` (`None` otherwise).
    transport: Option<&'static str>,
    remote: Option<SocketAddr>,
    since_ms: u64,
    bytes_in: u64,
    bytes_out: u64,
    queued_bytes: usize,
    messages_queued: u64,
    worker: usize,
}

/// What of a connection moves when it is handed from one worker to another
/// (`Worker::release_conn`, `Worker::adopt_conn`); the rest (slab slot,
/// generation, timer, poll registration) is made anew by the worker taking it.
struct Moving {
    stream: mio::net::TcpStream,
    tls: Option<sysbox::SysBox<tls::TlsConn>>,
    /// Bytes read and written so far (the counters move with the connection).
    bytes: (u64, u64),
    /// Output the kernel had not taken yet (answers to requests read before
    /// the one that moves it); it goes out first.
    out: Option<Box<conn::OutBuf>>,
    /// Input read after the request that moves it, processed after that request.
    inbuf: Vec<u8>,
    /// Requests answered on the connection so far.
    requests: u32,
    sid: SessionId,
    since_ms: u64,
    /// CORS headers of the request that moves it (its answer is written there).
    cors: crate::proto::cors::Allow,
    /// The account it counts for as a send connection (`Worker::senders`).
    sender: Option<Box<str>>,
}

/// A receive connection on its way to its owner worker.
struct Attach {
    conn: Moving,
    ident: Identity,
    req: StreamReq,
}

/// What a receive request asks of its stream: where to resume (the
/// `Last-Event-ID`, if any), and how its body is framed (by its HTTP version).
pub(super) struct StreamReq {
    pub last_event_id: Option<String>,
    pub framing: crate::proto::stream::Framing,
    /// A WebSocket handshake to answer (`GET /v1/connect`) instead of the SSE head.
    pub ws: Option<Box<crate::proto::ws::handshake::Accept>>,
}

/// A keep-alive send connection on its way to the worker that owns its
/// account (`--shard-by account`), with the send it has just read: that worker
/// delivers the send and reads the connection from then on, so the sender's
/// later messages never cross workers.
struct Handoff {
    conn: Moving,
    /// The sender, as its token was verified.
    ident: Arc<Identity>,
    to: Box<str>,
    body: Vec<u8>,
    /// The body is compact JSON, delivered as a value.
    json: bool,
}

/// A running node: its workers and the address they listen on.
pub struct Server {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// The bridge's command thread, on a clustered node.
    bridge_thread: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl Server {
    /// Binds the listeners and starts one worker thread per configured worker.
    pub fn start(config: Config, secret: &[u8]) -> io::Result<Server> {
        let cluster = config
            .cluster
            .clone()
            .map(|c| bridge::new(c, config.node_id.clone()));
        let accounts = limits::AccountCounts::new(config.max_account_connections);
        let address_rate = admission::AddressRate::new(config.max_new_connections_per_address);
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls::TlsFiles::load(cert, key)?),
            None => None,
        };
        let n = config.workers.max(1);
        let mut polls = Vec::with_capacity(n);
        let mut peers = Vec::with_capacity(n);
        let mut rxs: Vec<Receiver<Envelope>> = Vec::with_capacity(n);
        for _ in 0..n {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
            let (tx, rx) = crossbeam_channel::unbounded();
            polls.push(poll);
            peers.push(Peer { tx, waker });
            rxs.push(rx);
        }
        // The first listener fixes the port (which may have been 0); the others share it.
        let mut listeners = Vec::with_capacity(n);
        let first = worker::bind_listener(config.listen)?;
        let local_addr = first.local_addr()?;
        listeners.push(first);
        for _ in 1..n {
            listeners.push(worker::bind_listener(local_addr)?);
        }
        let shared = Arc::new(Shared {
            verifier: Verifier::new(secret),
            config,
            peers,
            origin: Instant::now(),
            shutdown: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            start_epoch_s: epoch_ms() / 1000,
            open_connections: AtomicUsize::new(0),
            stats: (0..n).map(|_| stats::WorkerStats::default()).collect(),
            cluster: cluster.as_ref().map(|c| c.0.clone()),
            accounts,
            address_rate,
            tls,
        });
        let bridge_thread = match cluster {
            Some((_, rx)) => Some(bridge::start(shared.clone(), rx)?),
            None => None,
        };
        let mut threads = Vec::with_capacity(n);
        for (id, ((poll, rx), listener)) in polls.into_iter().zip(rxs).zip(listeners).enumerate() {
            let w = worker::Worker::new(id, poll, listener, rx, shared.clone())?;
            let t = std::thread::Builder::new()
                .name(format!("worker-{id}"))
                .spawn(move || w.run())?;
            threads.push(t);
        }
        Ok(Server {
            shared,
            threads,
            bridge_thread,
            local_addr,
        })
    }

    /// The address the client listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node's shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Starts the admin listener on `addr`; returns the bound address.
    pub fn start_admin(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        admin::start(addr, self.shared.clone())
    }

    /// Starts draining: stop accepting, tell receive connections to reconnect
    /// elsewhere spread over the drain timeout, finish in-flight requests; the
    /// workers exit when their connections are gone or the timeout passes.
    pub fn drain(&self) {
        drain(&self.shared);
    }

    /// Asks every worker to stop and waits for them.
    pub fn stop(self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for i in 0..self.shared.peers.len() {
            self.shared.wake(i);
        }
        for t in self.threads {
            let _ = t.join();
        }
        if let Some(t) = self.bridge_thread {
            let _ = t.join();
        }
    }

    /// Waits for the workers to exit (they run until [`Server::stop`], the end
    /// of a drain, or a fatal error), then for the bridge to send what they
    /// left it and leave the cluster.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(t) = self.bridge_thread {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod size_tests {
    /// Prints the per-connection structure sizes (run with --nocapture); guards against accidental growth.
    #[test]
    fn per_connection_structures_stay_small() {
        let conn = std::mem::size_of::<super::conn::Conn>();
        let sess = std::mem::size_of::<crate::relay::session::Session>();
        let timer = std::mem::size_of::<(u64, super::worker::TimerRef)>();
        println!("conn slab entry {conn} B, session slab entry {sess} B, timer entry {timer} B");
        assert!(conn <= 192, "Conn grew to {conn} bytes");
        assert!(sess <= 256, "Session grew to {sess} bytes");
    }
}

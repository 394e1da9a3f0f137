//! `switchboard-bench idle`: many idle receive connections from one
//! single-threaded mio event loop (or several such processes), and the
//! server's memory per connection.
//!
//! Each connection: nonblocking connect (optionally from one of several
//! loopback source addresses, to get past one address's ephemeral port
//! range), `GET /v1/receive` with a token for client `c{offset+i}`, read until
//! the response head and the `event: ready` event have arrived (established),
//! then keep reading and discarding (heartbeats) until the end.
//!
//! With `--tls --ca FILE` each connection is a `rustls::ClientConnection`
//! (TLS 1.3 or 1.2, ALPN http/1.1, no session resumption) driven over the
//! same nonblocking socket; the server certificate is verified against the
//! certificates in FILE (a self-signed certificate that is itself in FILE is
//! accepted even if it is marked as a CA, as `openssl req -x509` does).
//!
//! One process can hold at most RLIMIT_NOFILE (hard limit) connections; with
//! `--procs P` the tool re-executes itself as P generator processes with
//! disjoint client ids and aggregates their progress, while it measures the
//! server itself.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::mem;
use crate::proto::{self, err_name, raise_nofile, set_bind_address_no_port, Target};
use clap::Args;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Flags of `switchboard-bench idle`.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub server: SocketAddr,
    /// The server's HS256 token secret (Switchboard only).
    #[arg(
        long,
        env = "SWITCHBOARD_SECRET",
        hide_env_values = true,
        default_value = ""
    )]
    pub secret: String,
    /// System under test: its receive/subscribe request shape.
    #[arg(long, value_enum, default_value = "switchboard")]
    pub target: Target,
    /// Number of idle receive connections to open.
    #[arg(long)]
    pub connections: usize,
    /// Number of loopback source addresses 127.0.0.2, 127.0.0.3, ... to bind client sockets to (0 = let the kernel choose).
    #[arg(long, default_value_t = 0)]
    pub sources: usize,
    /// Server process id, for memory measurement (VmRSS/RssAnon from /proc/PID/status).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Seconds to keep the connections open after all are up (and memory was measured).
    #[arg(long, default_value_t = 5)]
    pub hold: u64,
    /// Most new connections started per second (default: unlimited).
    #[arg(long)]
    pub rate: Option<f64>,
    /// First client id number: connections use clients c{offset}..c{offset+N-1}.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Account of all clients.
    #[arg(long, default_value = "bench")]
    pub account: String,
    /// Most connections in flight (connecting, not yet `ready`), per generator process.
    #[arg(long, default_value_t = 500)]
    pub inflight: usize,
    /// Attempts per connection after a failure before it counts as failed.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// Give up on the connect phase after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Longest wait (seconds) for the server's RSS to become stable before the "after" reading.
    #[arg(long, default_value_t = 10)]
    pub settle_max: u64,
    /// Shortest wait (seconds) before the baseline and "after" readings, so that a
    /// server's periodic clean-up of idle clients has run (Redis frees an idle
    /// client's query buffer after about 2 s): the readings are of the steady state.
    #[arg(long, default_value_t = 5)]
    pub settle_min: u64,
    /// Generator processes to spread the connections over (each holds at most its fd limit).
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    /// Connect with TLS (rustls); needs --ca.
    #[arg(long, requires = "ca")]
    pub tls: bool,
    /// PEM file with the certificate(s) to trust for --tls (a CA, or the server's self-signed certificate).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Server name for --tls (SNI and certificate check).
    #[arg(long, default_value = "localhost")]
    pub tls_name: String,
    /// Connections opened, and kept open, before the baseline reading, so that a
    /// server's one-time costs of its first connections (code paged in, first-use
    /// tables, thread stacks and caches) are not counted per connection; they use
    /// clients after the measured ones. 0 = measure from a cold server. The cold
    /// numbers are reported too (`*_per_conn_cold`).
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// Internal: run as a generator process of a `--procs` parent.
    #[arg(long, hide = true)]
    pub child: bool,
}

/// The warm-up connections (kept open while they exist) and the server's
/// memory before they were opened.
struct Warm {
    gen: Option<Gen>,
    cold: Option<Reading>,
    established: usize,
}

/// Opens `--warmup` connections (clients after the measured ones) and waits
/// for the server's memory to settle; see [`IdleArgs::warmup`].
fn warm_up(a: &IdleArgs) -> Warm {
    let cold = read_mem(a.pid);
    if a.warmup == 0 {
        return Warm {
            gen: None,
            cold,
            established: 0,
        };
    }
    let mut wa = a.clone();
    wa.connections = a.warmup;
    wa.offset = a.offset + a.connections;
    let mut g = match Gen::new(wa) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("switchboard-bench idle: warm-up: {e}");
            return Warm {
                gen: None,
                cold,
                established: 0,
            };
        }
    };
    let deadline = Instant::now() + Duration::from_secs(a.timeout.min(60));
    while !g.done_connecting() && Instant::now() < deadline {
        g.turn(Duration::from_millis(50));
    }
    let established = g.counts.established;
    eprintln!(
        "[idle] warm-up: {established}/{} connections up; settling before the baseline",
        a.warmup
    );
    // Let the server finish whatever the warm-up started (caches, deferred frees).
    let _ = settle(a.pid, a.settle_min, a.settle_max, |d| g.turn(d));
    Warm {
        gen: Some(g),
        cold,
        established,
    }
}

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
struct Counts {
    established: usize,
    failed: usize,
    /// Established connections the server closed later.
    dropped: usize,
    /// Failures (including retried ones) by reason.
    reasons: BTreeMap<String, u64>,
}

/// One single-threaded event loop driving up to `n` connections.
struct Gen {
    poll: Poll,
    events: Events,
    clients: Slab<Client>,
    n: usize,
    next: usize,
    retry: VecDeque<usize>,
    attempts: Vec<u8>,
    inflight: usize,
    started: u64,
    counts: Counts,
    scratch: Vec<u8>,
    sources: Vec<Ipv4Addr>,
    src_next: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
    tls_name: rustls::pki_types::ServerName<'static>,
    a: IdleArgs,
    t0: Instant,
    last_up: Instant,
}

impl Gen {
    fn new(a: IdleArgs) -> io::Result<Gen> {
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

    fn done_connecting(&self) -> bool {
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
    fn turn(&mut self, dur: Duration) {
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

/// The client configuration of --tls: TLS 1.3 and 1.2 (ring), ALPN
/// http/1.1, no resumption, trusting the certificates in `ca`.
fn tls_config(ca: &Path) -> io::Result<Arc<rustls::ClientConfig>> {
    let inval = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let pem = std::fs::read(ca).map_err(|e| inval(format!("{}: {e}", ca.display())))?;
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| inval(format!("{}: {e}", ca.display())))?;
    if certs.is_empty() {
        return Err(inval(format!("{}: no certificates", ca.display())));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in &certs {
        roots
            .add(c.clone())
            .map_err(|e| inval(format!("{}: {e}", ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| inval(format!("{}: {e}", ca.display())))?;
    let verifier = Arc::new(CaFileVerifier {
        webpki,
        pinned: certs,
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| inval(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// WebPKI verification against the --ca certificates, except that a server
/// certificate that is byte for byte one of them is accepted if it is valid
/// for the server name (a self-signed certificate from `openssl req -x509` is
/// marked CA:TRUE, which WebPKI refuses as an end-entity certificate).
#[derive(Debug)]
struct CaFileVerifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl rustls::client::danger::ServerCertVerifier for CaFileVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
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

/// A memory reading of the server and the kernel.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    proc: mem::ProcMem,
    slab_kb: u64,
}

fn read_mem(pid: Option<u32>) -> Option<Reading> {
    let pid = pid?;
    match mem::proc_mem(pid) {
        Ok(p) => Some(Reading {
            proc: p,
            slab_kb: mem::slab_kb(),
        }),
        Err(e) => {
            eprintln!("switchboard-bench: cannot read /proc/{pid}/status: {e}");
            None
        }
    }
}

/// Waits until the server's VmRSS has changed by at most 8 kB over 1 s (or
/// `max` passed), calling `tick` to keep the generators serviced.
/// Returns the final reading and the seconds waited.
fn settle(
    pid: Option<u32>,
    min_secs: u64,
    max_secs: u64,
    mut tick: impl FnMut(Duration),
) -> (Option<Reading>, f64) {
    let (min, max) = (
        Duration::from_secs(min_secs),
        Duration::from_secs(max_secs.max(min_secs)),
    );
    let t = Instant::now();
    let mut window: VecDeque<u64> = VecDeque::new();
    loop {
        let Some(r) = read_mem(pid) else {
            return (None, 0.0);
        };
        window.push_back(r.proc.vm_rss_kb);
        if window.len() > 5 {
            window.pop_front();
        }
        let stable =
            window.len() == 5 && window.iter().max().unwrap() - window.iter().min().unwrap() <= 8;
        if (stable && t.elapsed() >= min) || t.elapsed() >= max {
            return (read_mem(pid), t.elapsed().as_secs_f64());
        }
        tick(Duration::from_millis(250));
    }
}

fn per_conn(before_kb: u64, after_kb: u64, n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    ((after_kb as f64 - before_kb as f64) * 1024.0 / n as f64 * 10.0).round() / 10.0
}

/// Result of the connect phase (of all generators).
struct Outcome {
    counts: Counts,
    connect_secs: f64,
    timed_out: bool,
}

/// Prints the JSON summary; success if every connection was established.
fn report(
    a: &IdleArgs,
    nofile: u64,
    warm: &Warm,
    [before, after, end]: [Option<Reading>; 3],
    settle_secs: f64,
    o: &Outcome,
) -> ExitCode {
    let v = summary(a, nofile, warm, before, after, end, settle_secs, o);
    println!(
        "{}",
        serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
    );
    if o.counts.established == a.connections {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[allow(clippy::too_many_arguments)]
fn summary(
    a: &IdleArgs,
    nofile: u64,
    warm: &Warm,
    before: Option<Reading>,
    after: Option<Reading>,
    end: Option<Reading>,
    settle_secs: f64,
    o: &Outcome,
) -> serde_json::Value {
    let est = o.counts.established;
    let mut v = serde_json::json!({
        "scenario": "idle",
        "target": a.target.name(),
        "server": a.server.to_string(),
        "connections": a.connections,
        "loadavg_1m": mem::loadavg(),
        "established": est,
        "failed": o.counts.failed,
        "dropped_after_established": o.counts.dropped,
        "failure_reasons": o.counts.reasons,
        "connect_timed_out": o.timed_out,
        "procs": a.procs.max(1),
        "sources": a.sources,
        "offset": a.offset,
        "nofile_limit_per_proc": nofile,
        "connect_secs": (o.connect_secs * 1000.0).round() / 1000.0,
        "connect_rate_per_sec": if o.connect_secs > 0.0 { (est as f64 / o.connect_secs).round() } else { 0.0 },
        "hold_secs": a.hold,
        "tls": a.tls,
        "warmup": a.warmup,
        "warmup_established": warm.established,
    });
    if let (Some(b), Some(af)) = (before, after) {
        let m = v.as_object_mut().unwrap();
        m.insert("server_pid".into(), a.pid.into());
        m.insert(
            "settle_secs".into(),
            ((settle_secs * 100.0).round() / 100.0).into(),
        );
        m.insert("rss_before_kb".into(), b.proc.vm_rss_kb.into());
        m.insert("rss_after_kb".into(), af.proc.vm_rss_kb.into());
        m.insert("rss_anon_before_kb".into(), b.proc.rss_anon_kb.into());
        m.insert("rss_anon_after_kb".into(), af.proc.rss_anon_kb.into());
        m.insert("pss_before_kb".into(), b.proc.pss_kb.into());
        m.insert("pss_after_kb".into(), af.proc.pss_kb.into());
        m.insert("slab_before_kb".into(), b.slab_kb.into());
        m.insert("slab_after_kb".into(), af.slab_kb.into());
        for (name, kb) in [
            ("pss", (b.proc.pss_kb, af.proc.pss_kb)),
            ("rss", (b.proc.vm_rss_kb, af.proc.vm_rss_kb)),
            ("rss_anon", (b.proc.rss_anon_kb, af.proc.rss_anon_kb)),
            ("slab", (b.slab_kb, af.slab_kb)),
        ] {
            m.insert(
                format!("{name}_bytes_per_conn"),
                per_conn(kb.0, kb.1, est).into(),
            );
        }
        if let Some(e) = end {
            m.insert("rss_end_of_hold_kb".into(), e.proc.vm_rss_kb.into());
        }
        // From a cold server: the warm-up's one-time costs spread over all connections.
        if let Some(c) = warm.cold {
            let all = est + warm.established;
            m.insert("pss_before_warmup_kb".into(), c.proc.pss_kb.into());
            m.insert(
                "rss_anon_before_warmup_kb".into(),
                c.proc.rss_anon_kb.into(),
            );
            for (name, kb) in [
                ("pss", (c.proc.pss_kb, af.proc.pss_kb)),
                ("rss_anon", (c.proc.rss_anon_kb, af.proc.rss_anon_kb)),
            ] {
                m.insert(
                    format!("{name}_bytes_per_conn_cold"),
                    per_conn(kb.0, kb.1, all).into(),
                );
            }
        }
    }
    v
}

pub fn run(mut a: IdleArgs) -> ExitCode {
    let nofile = raise_nofile();
    if a.connections == 0 {
        eprintln!("switchboard-bench idle: --connections must be > 0");
        return ExitCode::from(2);
    }
    a.inflight = a.inflight.max(1);
    if a.child {
        return run_child(a);
    }
    if a.procs > 1 {
        return run_parent(a, nofile);
    }
    if (a.connections as u64) + 16 > nofile {
        eprintln!(
            "switchboard-bench idle: warning: {} connections need more fds than this process's limit {nofile}; use --procs",
            a.connections
        );
    }
    let mut warm = warm_up(&a);
    let before = read_mem(a.pid);
    let mut g = match Gen::new(a.clone()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("switchboard-bench idle: {e}");
            return ExitCode::from(1);
        }
    };
    let deadline = g.t0 + Duration::from_secs(a.timeout);
    let mut last_print = (Instant::now(), 0usize);
    while !g.done_connecting() && Instant::now() < deadline {
        g.turn(Duration::from_millis(100));
        if last_print.0.elapsed() >= Duration::from_secs(1) {
            let up = g.counts.established;
            eprintln!(
                "[idle] t={:.1}s up={up}/{} inflight={} failed={} ({:.0}/s)",
                g.t0.elapsed().as_secs_f64(),
                g.n,
                g.inflight,
                g.counts.failed,
                (up - last_print.1) as f64 / last_print.0.elapsed().as_secs_f64()
            );
            last_print = (Instant::now(), up);
        }
    }
    let timed_out = !g.done_connecting();
    let connect_secs = (g.last_up - g.t0).as_secs_f64();
    eprintln!(
        "[idle] connect phase over: up={} failed={} in {connect_secs:.2}s; settling",
        g.counts.established, g.counts.failed
    );
    let (after, settle_secs) = settle(a.pid, a.settle_min, a.settle_max, |d| {
        g.turn(d);
        if let Some(w) = warm.gen.as_mut() {
            w.turn(Duration::ZERO);
        }
    });
    eprintln!("[idle] holding {}s", a.hold);
    g.turn(Duration::from_secs(a.hold));
    let end = read_mem(a.pid);
    let o = Outcome {
        counts: g.counts.clone(),
        connect_secs,
        timed_out,
    };
    report(&a, nofile, &warm, [before, after, end], settle_secs, &o)
}

/// A generator process of a `--procs` parent: reports progress on stdout as
/// `up ESTABLISHED FAILED DROPPED SECS` lines, `done ...` once every
/// connection is up or failed, holds until stdin closes, then `final ...`.
fn run_child(a: IdleArgs) -> ExitCode {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = io::stdin().read_to_end(&mut sink);
            stop.store(true, Ordering::SeqCst);
        });
    }
    let mut g = match Gen::new(a.clone()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("switchboard-bench idle (child): {e}");
            return ExitCode::from(1);
        }
    };
    let out = io::stdout();
    let report = |g: &Gen, word: &str| {
        let mut o = out.lock();
        let _ = writeln!(
            o,
            "{word} {} {} {} {:.6} {}",
            g.counts.established,
            g.counts.failed,
            g.counts.dropped,
            (g.last_up - g.t0).as_secs_f64(),
            serde_json::to_string(&g.counts.reasons).unwrap()
        );
        let _ = o.flush();
    };
    let deadline = g.t0 + Duration::from_secs(a.timeout);
    while !g.done_connecting() && Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        g.turn(Duration::from_millis(250));
        report(&g, "up");
    }
    report(&g, "done");
    while !stop.load(Ordering::SeqCst) {
        g.turn(Duration::from_millis(250));
    }
    report(&g, "final");
    ExitCode::SUCCESS
}

struct ChildState {
    est: usize,
    failed: usize,
    dropped: usize,
    secs: f64,
    reasons: BTreeMap<String, u64>,
    done: bool,
    fin: bool,
}

fn parse_child_line(line: &str, st: &mut ChildState) {
    let mut it = line.splitn(6, ' ');
    let word = it.next().unwrap_or("");
    let nums: Vec<&str> = it.by_ref().take(4).collect();
    if nums.len() < 4 {
        return;
    }
    st.est = nums[0].parse().unwrap_or(st.est);
    st.failed = nums[1].parse().unwrap_or(st.failed);
    st.dropped = nums[2].parse().unwrap_or(st.dropped);
    st.secs = nums[3].parse().unwrap_or(st.secs);
    if let Some(r) = it.next().and_then(|j| serde_json::from_str(j).ok()) {
        st.reasons = r;
    }
    match word {
        "done" => st.done = true,
        "final" => {
            st.done = true;
            st.fin = true;
        }
        _ => {}
    }
}

fn run_parent(a: IdleArgs, nofile: u64) -> ExitCode {
    let procs = a.procs;
    let per = a.connections.div_ceil(procs);
    if (per as u64) + 16 > nofile {
        eprintln!("switchboard-bench idle: warning: {per} connections per process exceed the fd limit {nofile}; use more --procs");
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("switchboard-bench idle: cannot find own executable: {e}");
            return ExitCode::from(1);
        }
    };
    let warm = warm_up(&a);
    let before = read_mem(a.pid);
    let t0 = Instant::now();
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let mut children = Vec::new();
    let mut states = Vec::new();
    let mut assigned = 0;
    for i in 0..procs {
        let n = per.min(a.connections - assigned);
        if n == 0 {
            break;
        }
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("idle")
            .arg("--child")
            .args(["--server", &a.server.to_string()])
            .args(["--connections", &n.to_string()])
            .args(["--offset", &(a.offset + assigned).to_string()])
            .args(["--sources", &a.sources.to_string()])
            .args(["--account", &a.account])
            .args(["--target", a.target.name()])
            .args(["--inflight", &a.inflight.to_string()])
            .args(["--retries", &a.retries.to_string()])
            .args(["--timeout", &a.timeout.to_string()])
            .args(["--tls-name", &a.tls_name])
            .env("SWITCHBOARD_SECRET", &a.secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if a.tls {
            cmd.arg("--tls");
        }
        if let Some(ca) = &a.ca {
            cmd.arg("--ca").arg(ca);
        }
        if let Some(r) = a.rate {
            cmd.args(["--rate", &(r / procs as f64).to_string()]);
        }
        assigned += n;
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("switchboard-bench idle: cannot start generator {i}: {e}");
                return ExitCode::from(1);
            }
        };
        let stdout = child.stdout.take().unwrap();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((i, line)).is_err() {
                    break;
                }
            }
        });
        children.push(child);
        states.push(ChildState {
            est: 0,
            failed: 0,
            dropped: 0,
            secs: 0.0,
            reasons: BTreeMap::new(),
            done: false,
            fin: false,
        });
    }
    drop(tx);
    let pump = |states: &mut Vec<ChildState>, dur: Duration| {
        let end = Instant::now() + dur;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok((i, line)) => parse_child_line(&line, &mut states[i]),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(left);
                    break;
                }
            }
        }
    };
    let deadline = t0 + Duration::from_secs(a.timeout + 5);
    let mut last = (Instant::now(), 0usize);
    while !states.iter().all(|s| s.done) && Instant::now() < deadline {
        pump(&mut states, Duration::from_millis(1000));
        let up: usize = states.iter().map(|s| s.est).sum();
        let failed: usize = states.iter().map(|s| s.failed).sum();
        eprintln!(
            "[idle] t={:.1}s up={up}/{} failed={failed} procs_done={}/{} ({:.0}/s)",
            t0.elapsed().as_secs_f64(),
            a.connections,
            states.iter().filter(|s| s.done).count(),
            states.len(),
            (up - last.1) as f64 / last.0.elapsed().as_secs_f64()
        );
        last = (Instant::now(), up);
    }
    let timed_out = !states.iter().all(|s| s.done);
    // Children start within milliseconds of each other; the slowest one's time to its last connection.
    let connect_secs = states.iter().map(|s| s.secs).fold(0.0, f64::max);
    eprintln!("[idle] connect phase over; settling");
    let (after, settle_secs) = settle(a.pid, a.settle_min, a.settle_max, |d| pump(&mut states, d));
    eprintln!("[idle] holding {}s", a.hold);
    pump(&mut states, Duration::from_secs(a.hold));
    let end = read_mem(a.pid);
    for c in children.iter_mut() {
        drop(c.stdin.take()); // closing stdin ends the generator
    }
    while !states.iter().all(|s| s.fin) {
        let before_fin = states.iter().filter(|s| s.fin).count();
        pump(&mut states, Duration::from_secs(2));
        if states.iter().filter(|s| s.fin).count() == before_fin {
            break;
        }
    }
    for c in children.iter_mut() {
        let _ = c.wait();
    }
    let mut counts = Counts::default();
    for s in &states {
        counts.established += s.est;
        counts.failed += s.failed;
        counts.dropped += s.dropped;
        for (k, v) in &s.reasons {
            *counts.reasons.entry(k.clone()).or_default() += v;
        }
    }
    let o = Outcome {
        counts,
        connect_secs,
        timed_out,
    };
    report(&a, nofile, &warm, [before, after, end], settle_secs, &o)
}

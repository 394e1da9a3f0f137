//! `switchboard-bench relay`: S keep-alive senders post fixed-size messages
//! to R receivers for a fixed time; delivered messages/s, end-to-end latency
//! and an exactly-once check.
//!
//! Every message body is `@@<ns since the run's origin>,<sender>,<seq>,`
//! padded with letters to `--size` bytes. Senders and receivers live in the
//! same process (one or more mio event loops, `--threads`), so the send
//! timestamp and the receive time come from one monotonic clock. Sender `s`
//! sends its message `seq` to receiver `(s + seq) % R`; with `--window 1`
//! (default) each sender waits for the answer (Switchboard 202, nchan 201/202,
//! Redis `:n`) before the next message. Sent-and-acknowledged messages are
//! compared with the received ones: none missing, none twice.
//!
//! `--send-server` points the senders at another cluster node than the
//! receivers' `--server`, so that every message crosses nodes through Redis
//! (`bench/cluster.sh`); `--pid` may then list every node (and Redis).

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::mem;
use crate::mqtt;
use crate::proto::{self, Got, HeadCheck, HttpResponses, RespParser, StreamParser, Target};

/// Flags of `switchboard-bench relay`.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub server: SocketAddr,
    /// Address the senders post to (default: --server). With a cluster, another node than
    /// the receivers' one: every message then crosses nodes (Switchboard only).
    #[arg(long)]
    pub send_server: Option<SocketAddr>,
    /// The server's HS256 token secret (Switchboard only).
    #[arg(
        long,
        env = "SWITCHBOARD_SECRET",
        hide_env_values = true,
        default_value = ""
    )]
    pub secret: String,
    /// System under test.
    #[arg(long, value_enum, default_value = "switchboard")]
    pub target: Target,
    /// Receive connections (SSE streams / SUBSCRIBE connections).
    #[arg(long, default_value_t = 1000)]
    pub receivers: usize,
    /// Keep-alive sender connections.
    #[arg(long, default_value_t = 50)]
    pub senders: usize,
    /// Message body size in bytes (at least 40).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Messages in flight per sender (1 = wait for each answer; more = HTTP/RESP pipelining).
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Total send rate cap in messages/s (default: as fast as the answers come).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Event-loop threads of the generator (receivers and senders are split over them).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Loopback source addresses 127.0.0.2, ... to spread connections over (0 = kernel's choice).
    #[arg(long, default_value_t = 2)]
    pub sources: usize,
    /// Server process id: memory and CPU time (process and descendants) are reported.
    /// Several (repeat the flag or give a comma list: cluster nodes, Redis) are summed,
    /// and each one's CPU time is listed.
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Account of all clients (Switchboard).
    #[arg(long, default_value = "bench")]
    pub account: String,
    /// Longest wait (seconds) after sending stops for outstanding answers and deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Give up if the connections are not all up after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub connect_timeout: u64,
    /// Record the key of every message for the exactly-once check (costs 16 B per message).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub check: bool,
}

/// State shared by the generator threads and the controller.
struct Shared {
    origin: Instant,
    recv_up: AtomicUsize,
    send_up: AtomicUsize,
    conn_failed: AtomicUsize,
    go: AtomicBool,
    go_ns: AtomicU64,
    sending: AtomicBool,
    stop: AtomicBool,
    sent: AtomicU64,
    acked: AtomicU64,
    rejected: AtomicU64,
    received: AtomicU64,
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
struct ThreadOut {
    lat_ns: Vec<u64>,
    recv_keys: Vec<u64>,
    acked_keys: Vec<u64>,
    errors: BTreeMap<String, u64>,
    other_events: u64,
}

fn key(s: usize, seq: u64) -> u64 {
    ((s as u64) << 40) | seq
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
    send_host: String,
    srcs: Vec<std::net::Ipv4Addr>,
    src_next: usize,
    // Messages started by this thread (for the rate cap).
    started: u64,
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
        let (kind, up) = match &c.role {
            Role::Recv { up, .. } => ("receiver", *up),
            Role::Send { up, .. } => ("sender", *up),
        };
        if !up {
            self.sh.conn_failed.fetch_add(1, Relaxed);
        }
        self.senders.retain(|&s| s != k);
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
            if let Role::Send { up, .. } = &mut c.role {
                *up = true;
                self.sh.send_up.fetch_add(1, Relaxed);
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
                    ..
                } => {
                    let mut results: Vec<Result<(), String>> = Vec::new();
                    if target == Target::Mosquitto {
                        drain_answers(resp, data, &mut results, |b| {
                            Ok(mqtt::packet(b)?
                                .map(|(m, first, body)| (m, mqtt::sender_answer(first, body))))
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
                                    Ok(())
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
                                Ok(Some(st)) if (200..300).contains(&st) => results.push(Ok(())),
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
                            Ok(()) => {
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
        let r = self.a.receivers.max(1);
        let mut budget = match self.a.rate {
            Some(rate) => {
                let allowed = (since_go.as_secs_f64() * rate / self.n_threads as f64) as u64 + 1;
                allowed.saturating_sub(self.started)
            }
            None => u64::MAX,
        };
        let origin = self.sh.origin;
        for i in 0..self.senders.len() {
            let k = self.senders[i];
            let Some(c) = self.conns.get_mut(k) else {
                continue;
            };
            let Role::Send {
                s,
                seq,
                inflight,
                auth,
                up,
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
                let to = format!("r{}", (*s + *seq as usize) % r);
                proto::make_body(&mut self.body, self.a.size, now, *s, *seq);
                proto::push_send(
                    self.a.target,
                    &mut c.out,
                    &self.send_host,
                    auth,
                    &to,
                    &self.body,
                    *seq,
                );
                inflight.push_back(key(*s, *seq));
                *seq += 1;
                budget -= 1;
                self.started += 1;
                self.local_sent += 1;
                wrote = true;
            }
            if wrote {
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
/// oldest message in flight (`None`: the packet answers no message).
type Answer = (usize, Option<Result<(), String>>);

/// Appends `data` to a sender's answer buffer and moves every complete
/// answer's result to `results` (RESP and MQTT senders). `next` parses one
/// answer at the start of a buffer: `(bytes used, result)`, where a `None`
/// result is a packet that answers no message (MQTT's CONNACK). A parse error
/// ends the buffer: its result is the error.
fn drain_answers(
    buf: &mut Vec<u8>,
    data: &[u8],
    results: &mut Vec<Result<(), String>>,
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

fn run_thread(a: RelayArgs, sh: Arc<Shared>, t: usize, n_threads: usize) -> ThreadOut {
    let send_host = a.send_server.unwrap_or(a.server).to_string();
    let mut g = Gen {
        poll: Poll::new().expect("epoll"),
        conns: Slab::new(),
        senders: Vec::new(),
        out: ThreadOut::default(),
        scratch: vec![0; 256 * 1024],
        body: Vec::with_capacity(a.size + 64),
        send_host,
        srcs: proto::sources(a.sources),
        src_next: t,
        started: 0,
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
                        &g.a.account,
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
                    let auth = if g.a.target == Target::Switchboard {
                        format!(
                            "Authorization: Bearer {}\r\n",
                            proto::token(&g.a.secret, &g.a.account, &format!("s{i}"))
                        )
                    } else {
                        String::new()
                    };
                    let hello = proto::sender_hello(g.a.target, &format!("s{i}"));
                    g.open(
                        Role::Send {
                            s: i,
                            seq: 0,
                            inflight: VecDeque::new(),
                            http: HttpResponses::default(),
                            resp: Vec::new(),
                            auth,
                            up: false,
                        },
                        hello,
                    );
                }
            }
        }
        let _ = g.poll.poll(&mut events, Some(Duration::from_millis(5)));
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

/// Memory summed over the given server processes (None if one cannot be read).
fn pids_mem(pids: &[u32]) -> Option<mem::ProcMem> {
    if pids.is_empty() {
        return None;
    }
    let mut t = mem::ProcMem::default();
    for &p in pids {
        let m = mem::proc_mem(p).ok()?;
        t.vm_rss_kb += m.vm_rss_kb;
        t.rss_anon_kb += m.rss_anon_kb;
        t.pss_kb += m.pss_kb;
    }
    Some(t)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Rounded to two decimals.
fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn run(a: RelayArgs) -> ExitCode {
    let nofile = proto::raise_nofile();
    if a.size < 40 {
        eprintln!("switchboard-bench relay: --size must be at least 40");
        return ExitCode::from(2);
    }
    if a.target == Target::Switchboard && a.secret.is_empty() {
        eprintln!(
            "switchboard-bench relay: --secret / SWITCHBOARD_SECRET is required for switchboard"
        );
        return ExitCode::from(2);
    }
    if (a.receivers + a.senders) as u64 + 32 > nofile {
        eprintln!(
            "switchboard-bench relay: {} connections exceed the fd limit {nofile}",
            a.receivers + a.senders
        );
        return ExitCode::from(2);
    }
    let threads = a.threads.max(1);
    let sh = Arc::new(Shared {
        origin: Instant::now(),
        recv_up: AtomicUsize::new(0),
        send_up: AtomicUsize::new(0),
        conn_failed: AtomicUsize::new(0),
        go: AtomicBool::new(false),
        go_ns: AtomicU64::new(0),
        sending: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        received: AtomicU64::new(0),
    });
    let tag = format!("[relay {} {}B]", a.target.name(), a.size);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let a = a.clone();
            let sh = sh.clone();
            std::thread::spawn(move || run_thread(a, sh, t, threads))
        })
        .collect();
    // Connect phase.
    let t0 = Instant::now();
    let mut last = Instant::now();
    loop {
        let up = sh.recv_up.load(Relaxed);
        let sup = sh.send_up.load(Relaxed);
        let failed = sh.conn_failed.load(Relaxed);
        if up == a.receivers && sup == a.senders {
            break;
        }
        if failed > 0 || t0.elapsed() > Duration::from_secs(a.connect_timeout) {
            eprintln!(
                "{tag} connect phase failed: receivers {up}/{} senders {sup}/{} failed {failed}",
                a.receivers, a.senders
            );
            sh.stop.store(true, Relaxed);
            let outs: Vec<ThreadOut> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let mut errs: BTreeMap<String, u64> = BTreeMap::new();
            for o in outs {
                for (k, v) in o.errors {
                    *errs.entry(k).or_default() += v;
                }
            }
            println!(
                "{}",
                serde_json::json!({"scenario": "relay", "target": a.target.name(), "error": "connect phase failed", "receivers_up": up, "senders_up": sup, "errors": errs})
            );
            return ExitCode::from(1);
        }
        if last.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "{tag} connecting: receivers {up}/{} senders {sup}/{}",
                a.receivers, a.senders
            );
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    // Let subscriptions settle (nchan registers the subscriber as it answers).
    std::thread::sleep(Duration::from_millis(300));
    let mem_before = pids_mem(&a.pid);
    let cpu0: Vec<(f64, f64)> = a.pid.iter().map(|&p| mem::cpu_split(p)).collect();
    let self_cpu0 = mem::self_cpu_split();
    let load0 = mem::loadavg();
    let go_at = sh.origin.elapsed();
    sh.go_ns.store(go_at.as_nanos() as u64, Relaxed);
    sh.sending.store(true, Relaxed);
    sh.go.store(true, Relaxed);
    let go = Instant::now();
    let dur = Duration::from_secs_f64(a.duration);
    let mut last = (Instant::now(), 0u64);
    let mut per_sec: Vec<f64> = Vec::new();
    while go.elapsed() < dur {
        std::thread::sleep(Duration::from_millis(100).min(dur.saturating_sub(go.elapsed())));
        if last.0.elapsed() >= Duration::from_secs(1) {
            let rcv = sh.received.load(Relaxed);
            let rate = (rcv - last.1) as f64 / last.0.elapsed().as_secs_f64();
            per_sec.push(rate.round());
            eprintln!(
                "{tag} t={:.0}s delivered={rcv} ({:.0}/s) acked={} rejected={}",
                go.elapsed().as_secs_f64(),
                rate,
                sh.acked.load(Relaxed),
                sh.rejected.load(Relaxed)
            );
            last = (Instant::now(), rcv);
        }
    }
    sh.sending.store(false, Relaxed);
    let window_secs = go.elapsed().as_secs_f64();
    let delivered_in_window = sh.received.load(Relaxed);
    let cpu1: Vec<(f64, f64)> = a.pid.iter().map(|&p| mem::cpu_split(p)).collect();
    let self_cpu1 = mem::self_cpu_split();
    let mem_after = pids_mem(&a.pid);
    // Drain: every sent message answered, every acknowledged one delivered.
    let dt = Instant::now();
    loop {
        let sent = sh.sent.load(Relaxed);
        let answered = sh.acked.load(Relaxed) + sh.rejected.load(Relaxed);
        let rcv = sh.received.load(Relaxed);
        if answered >= sent && rcv >= sh.acked.load(Relaxed) {
            break;
        }
        if dt.elapsed() > Duration::from_secs_f64(a.drain) {
            eprintln!("{tag} drain timed out: sent={sent} answered={answered} delivered={rcv}");
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // A little longer, to catch duplicates arriving late.
    std::thread::sleep(Duration::from_millis(200));
    sh.stop.store(true, Relaxed);
    let outs: Vec<ThreadOut> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut lat: Vec<u64> = Vec::new();
    let mut recv_keys: Vec<u64> = Vec::new();
    let mut acked_keys: Vec<u64> = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut other = 0;
    for o in outs {
        lat.extend(o.lat_ns);
        recv_keys.extend(o.recv_keys);
        acked_keys.extend(o.acked_keys);
        other += o.other_events;
        for (k, v) in o.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    lat.sort_unstable();
    let (mut missing, mut dups, mut unexpected) = (0u64, 0u64, 0u64);
    if a.check {
        recv_keys.sort_unstable();
        acked_keys.sort_unstable();
        let (mut i, mut j) = (0, 0);
        while i < acked_keys.len() || j < recv_keys.len() {
            if j < recv_keys.len() && j > 0 && recv_keys[j] == recv_keys[j - 1] {
                dups += 1;
                j += 1;
                continue;
            }
            match (acked_keys.get(i), recv_keys.get(j)) {
                (Some(x), Some(y)) if x == y => {
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x < y => {
                    missing += 1;
                    i += 1;
                }
                (Some(_), None) => {
                    missing += 1;
                    i += 1;
                }
                _ => {
                    unexpected += 1;
                    j += 1;
                }
            }
        }
    }
    let sent = sh.sent.load(Relaxed);
    let acked = sh.acked.load(Relaxed);
    let delivered = sh.received.load(Relaxed);
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&x| x as f64).sum::<f64>() / lat.len() as f64 / 1000.0
    };
    let cdf: Vec<(f64, f64)> = [
        0.0, 1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 97.5, 99.0,
        99.5, 99.9, 99.95, 99.99, 100.0,
    ]
    .iter()
    .map(|&p| (p, r1(pct(&lat, p))))
    .collect();
    let exactly_once = a.check && missing == 0 && dups == 0 && unexpected == 0 && acked == sent;
    let (bench_user, bench_sys) = (self_cpu1.0 - self_cpu0.0, self_cpu1.1 - self_cpu0.1);
    let mut v = serde_json::json!({
        "scenario": "relay",
        "target": a.target.name(),
        "server": a.server.to_string(),
        "send_server": a.send_server.unwrap_or(a.server).to_string(),
        "receivers": a.receivers,
        "senders": a.senders,
        "size": a.size,
        "window": a.window,
        "rate_cap": a.rate,
        "threads": threads,
        "duration_secs": r1(window_secs * 10.0) / 10.0,
        "connect_secs": (connect_secs * 1000.0).round() / 1000.0,
        "sent": sent,
        "acked": acked,
        "rejected": sh.rejected.load(Relaxed),
        "delivered": delivered,
        "delivered_in_window": delivered_in_window,
        "msgs_per_sec": (delivered_in_window as f64 / window_secs).round(),
        "msgs_per_sec_each_second": per_sec,
        "mbytes_per_sec": r1(delivered_in_window as f64 * a.size as f64 / window_secs / 1e6),
        "latency_us": {
            "p50": r1(pct(&lat, 50.0)),
            "p90": r1(pct(&lat, 90.0)),
            "p99": r1(pct(&lat, 99.0)),
            "p999": r1(pct(&lat, 99.9)),
            "max": r1(pct(&lat, 100.0)),
            "mean": r1(mean),
            "count": lat.len(),
        },
        "latency_cdf_us": cdf,
        "exactly_once": {
            "checked": a.check,
            "ok": exactly_once,
            "missing": missing,
            "duplicates": dups,
            "unexpected": unexpected,
        },
        "other_events": other,
        "errors": errors,
        "bench_cpu_secs": r2(bench_user + bench_sys),
        "bench_cpu_user_secs": r2(bench_user),
        "bench_cpu_sys_secs": r2(bench_sys),
        "loadavg_1m_before": load0,
        "loadavg_1m_after": mem::loadavg(),
    });
    if !a.pid.is_empty() {
        let m = v.as_object_mut().unwrap();
        let each: Vec<f64> = cpu0
            .iter()
            .zip(&cpu1)
            .map(|(c0, c1)| r2(c1.0 + c1.1 - c0.0 - c0.1))
            .collect();
        let user: f64 = cpu0.iter().zip(&cpu1).map(|(c0, c1)| c1.0 - c0.0).sum();
        let sys: f64 = cpu0.iter().zip(&cpu1).map(|(c0, c1)| c1.1 - c0.1).sum();
        let total = user + sys;
        m.insert("server_pid".into(), a.pid[0].into());
        if a.pid.len() > 1 {
            m.insert("server_pids".into(), a.pid.clone().into());
            m.insert("server_cpu_secs_each".into(), each.into());
        }
        m.insert("server_cpu_secs".into(), r2(total).into());
        m.insert("server_cpu_user_secs".into(), r2(user).into());
        m.insert("server_cpu_sys_secs".into(), r2(sys).into());
        if delivered_in_window > 0 {
            // CPU per delivered message, over the sending window only (set-up excluded).
            let per_msg = |secs: f64| r2(secs * 1e6 / delivered_in_window as f64);
            m.insert("server_cpu_us_per_msg".into(), per_msg(total).into());
            m.insert("server_cpu_user_us_per_msg".into(), per_msg(user).into());
            m.insert("server_cpu_sys_us_per_msg".into(), per_msg(sys).into());
        }
    }
    if delivered_in_window > 0 {
        let m = v.as_object_mut().unwrap();
        let per_msg = |secs: f64| r2(secs * 1e6 / delivered_in_window as f64);
        m.insert(
            "generator_cpu_us_per_msg".into(),
            per_msg(bench_user + bench_sys).into(),
        );
    }
    if let (Some(b), Some(af)) = (mem_before, mem_after) {
        let m = v.as_object_mut().unwrap();
        m.insert("server_pss_kb_before".into(), b.pss_kb.into());
        m.insert("server_pss_kb_after".into(), af.pss_kb.into());
        m.insert("server_rss_kb_after".into(), af.vm_rss_kb.into());
    }
    println!("{}", serde_json::to_string_pretty(&v).unwrap());
    eprintln!(
        "{tag} {:.0} msg/s, p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, exactly-once {}",
        delivered_in_window as f64 / window_secs,
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        pct(&lat, 99.9),
        if exactly_once { "ok" } else { "NOT ok" }
    );
    if exactly_once || !a.check {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

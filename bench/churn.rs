//! `switchboard-bench churn`: connect / receive / disconnect cycles at a
//! fixed rate, then a leak check.
//!
//! Each cycle: a nonblocking connect, `GET /v1/receive` as client
//! `c{offset+i}` (every cycle a new client), read until `event: ready` has
//! arrived, close. Cycles start at `--rate` per second with at most
//! `--inflight` open at once until `--cycles` are done (or `--max-secs`).
//! Before and after, the server's memory (/proc), open fds and connection
//! count (admin `/metrics`) are read; after the cycles the tool waits (up to
//! `--settle-max` s) for the connection count to return to the baseline and
//! the memory to stop moving. Pass: memory, fds and connections are within
//! `--tolerance` (10%) of the baseline (connections and fds: or within 2),
//! and sessions, timer wheel entries and retained bytes are not above it
//! (sessions of the gone clients reaped after the server's `--hold`).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::admin;
use crate::mem;
use crate::proto::{self, HeadCheck, Target};

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub server: SocketAddr,
    /// Admin address (for /metrics).
    #[arg(long)]
    pub admin: SocketAddr,
    /// The server's HS256 token secret.
    #[arg(long, env = "SWITCHBOARD_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Server process id (memory readings).
    #[arg(long)]
    pub pid: u32,
    /// Connect/receive/disconnect cycles.
    #[arg(long, default_value_t = 100_000)]
    pub cycles: usize,
    /// Cycles started per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Most cycles open at once.
    #[arg(long, default_value_t = 200)]
    pub inflight: usize,
    /// Loopback source addresses (client-side TIME_WAIT spreads over them).
    #[arg(long, default_value_t = 8)]
    pub sources: usize,
    /// First client id number.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Account.
    #[arg(long, default_value = "bench")]
    pub account: String,
    /// Stop starting cycles after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub max_secs: u64,
    /// Longest wait (s) after the cycles for the server to return to its baseline.
    #[arg(long, default_value_t = 60)]
    pub settle_max: u64,
    /// Shortest wait (s) after the cycles before the final reading (past the server's --hold).
    #[arg(long, default_value_t = 10)]
    pub settle_min: u64,
    /// Allowed relative difference from the baseline.
    #[arg(long, default_value_t = 0.10)]
    pub tolerance: f64,
    /// Cycles run (and not counted) before the baseline reading, to warm up allocator and code.
    #[arg(long, default_value_t = 1000)]
    pub warmup: usize,
}

struct C {
    stream: TcpStream,
    req: Vec<u8>,
    sent: usize,
    buf: Vec<u8>,
    connected: bool,
    t: Instant,
}

struct Churn {
    poll: Poll,
    conns: Slab<C>,
    srcs: Vec<std::net::Ipv4Addr>,
    done: usize,
    failed: usize,
    started: usize,
    reasons: BTreeMap<String, u64>,
    cycle_us: Vec<u32>,
    scratch: Vec<u8>,
}

impl Churn {
    fn start(&mut self, a: &ChurnArgs, id: usize) {
        self.started += 1;
        let src = if self.srcs.is_empty() {
            None
        } else {
            Some(self.srcs[id % self.srcs.len()])
        };
        let stream = match proto::connect(a.server, src) {
            Ok(s) => s,
            Err(e) => return self.fail(format!("connect: {}", proto::err_name(&e))),
        };
        let req = proto::receive_request(
            Target::Switchboard,
            a.server,
            &a.secret,
            &a.account,
            &format!("c{id}"),
        );
        let e = self.conns.vacant_entry();
        let mut c = C {
            stream,
            req,
            sent: 0,
            buf: Vec::new(),
            connected: false,
            t: Instant::now(),
        };
        if let Err(err) = self.poll.registry().register(
            &mut c.stream,
            Token(e.key()),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.fail(format!("register: {err}"));
        }
        e.insert(c);
    }

    fn fail(&mut self, r: String) {
        self.failed += 1;
        *self.reasons.entry(r).or_default() += 1;
    }

    fn finish(&mut self, k: usize, err: Option<String>) {
        let mut c = self.conns.remove(k);
        let _ = self.poll.registry().deregister(&mut c.stream);
        match err {
            None => {
                self.done += 1;
                self.cycle_us
                    .push(c.t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Some(r) => self.fail(r),
        }
        // Dropping the stream closes it (FIN).
    }

    fn handle(&mut self, k: usize) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        if !c.connected {
            if let Ok(Some(e)) | Err(e) = c.stream.take_error() {
                return self.finish(k, Some(format!("connect: {}", proto::err_name(&e))));
            }
            match c.stream.peer_addr() {
                Ok(_) => c.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.finish(k, Some(format!("connect: {}", proto::err_name(&e)))),
            }
        }
        while c.sent < c.req.len() {
            match c.stream.write(&c.req[c.sent..]) {
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => return self.finish(k, Some(format!("write: {}", proto::err_name(&e)))),
            }
        }
        loop {
            let c = &mut self.conns[k];
            match c.stream.read(&mut self.scratch) {
                Ok(0) => return self.finish(k, Some("eof before ready".into())),
                Ok(n) => {
                    c.buf.extend_from_slice(&self.scratch[..n]);
                    match proto::check_ready(Target::Switchboard, &c.buf) {
                        HeadCheck::More => {}
                        HeadCheck::Ready(_) => return self.finish(k, None),
                        HeadCheck::Bad(r) => return self.finish(k, Some(r)),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => return self.finish(k, Some(format!("read: {}", proto::err_name(&e)))),
            }
        }
    }

    /// Runs `n` cycles with ids from `first`, at `rate`; progress on stderr if `tag`.
    fn run(&mut self, a: &ChurnArgs, first: usize, n: usize, rate: f64, tag: Option<&str>) -> f64 {
        let mut events = Events::with_capacity(1024);
        let t0 = Instant::now();
        let (base_done, base_failed, base_started) = (self.done, self.failed, self.started);
        let mut next = 0;
        let mut last = Instant::now();
        let deadline = t0 + Duration::from_secs(a.max_secs);
        while (self.done + self.failed - base_done - base_failed) < n {
            let now = Instant::now();
            if now > deadline {
                break;
            }
            let allowed = ((t0.elapsed().as_secs_f64() * rate) as usize + 1).min(n);
            while next < allowed && self.conns.len() < a.inflight {
                self.start(a, first + next);
                next += 1;
            }
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(2)));
            for ev in events.iter() {
                self.handle(ev.token().0);
            }
            if let Some(tag) = tag {
                if last.elapsed() >= Duration::from_secs(2) {
                    let d = self.done - base_done;
                    eprintln!(
                        "[churn] {tag} t={:.0}s cycles={d}/{n} failed={} open={} ({:.0}/s)",
                        t0.elapsed().as_secs_f64(),
                        self.failed - base_failed,
                        self.conns.len(),
                        d as f64 / t0.elapsed().as_secs_f64()
                    );
                    last = Instant::now();
                }
            }
        }
        let _ = base_started;
        t0.elapsed().as_secs_f64()
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Snapshot {
    rss_kb: u64,
    rss_anon_kb: u64,
    pss_kb: u64,
    connections: u64,
    receive: u64,
    open_fds: u64,
    sessions: u64,
    timers: u64,
    retained_bytes: u64,
}

fn snapshot(a: &ChurnArgs) -> Option<Snapshot> {
    let m = mem::proc_mem(a.pid).ok()?;
    let g = admin::metrics(a.admin).ok()?;
    Some(Snapshot {
        rss_kb: m.vm_rss_kb,
        rss_anon_kb: m.rss_anon_kb,
        pss_kb: m.pss_kb,
        connections: g.connections(),
        receive: g.receive,
        open_fds: g.open_fds,
        sessions: g.sessions,
        timers: g.timers,
        retained_bytes: g.retained_bytes,
    })
}

fn within(base: u64, now: u64, tol: f64, slack: u64) -> bool {
    let diff = now.abs_diff(base);
    diff <= slack || (diff as f64) <= tol * base as f64
}

pub fn run(a: ChurnArgs) -> ExitCode {
    proto::raise_nofile();
    let mut ch = Churn {
        poll: Poll::new().expect("epoll"),
        conns: Slab::new(),
        srcs: proto::sources(a.sources),
        done: 0,
        failed: 0,
        started: 0,
        reasons: BTreeMap::new(),
        cycle_us: Vec::new(),
        scratch: vec![0; 16 * 1024],
    };
    let fresh = snapshot(&a);
    if a.warmup > 0 {
        eprintln!("[churn] warm-up: {} cycles", a.warmup);
        ch.run(&a, a.offset + a.cycles, a.warmup, a.rate, None);
        std::thread::sleep(Duration::from_secs(1));
    }
    let Some(base) = snapshot(&a) else {
        eprintln!("switchboard-bench churn: cannot read the server's memory or /metrics");
        return ExitCode::from(1);
    };
    eprintln!("[churn] baseline: {base:?}");
    let (d0, f0) = (ch.done, ch.failed);
    ch.cycle_us.clear();
    let secs = ch.run(&a, a.offset, a.cycles, a.rate, Some("run"));
    let done = ch.done - d0;
    let failed = ch.failed - f0;
    let peak = snapshot(&a);
    eprintln!("[churn] {done} cycles in {secs:.1}s ({failed} failed); waiting for the baseline");
    // Settle: connections and sessions back to baseline and RSS stable over 2 s, or settle_max.
    let t = Instant::now();
    let mut hist: Vec<u64> = Vec::new();
    let mut after = peak;
    while t.elapsed() < Duration::from_secs(a.settle_max) {
        std::thread::sleep(Duration::from_millis(500));
        after = snapshot(&a);
        let Some(s) = after else { break };
        hist.push(s.rss_kb);
        let stable = hist.len() >= 5 && {
            let w = &hist[hist.len() - 5..];
            w.iter().max().unwrap() - w.iter().min().unwrap() <= 16
        };
        if s.connections <= base.connections
            && s.open_fds <= base.open_fds + 2
            && s.sessions <= base.sessions + 2
            && s.retained_bytes <= base.retained_bytes
            && stable
            && t.elapsed() >= Duration::from_secs(a.settle_min)
        {
            break;
        }
    }
    let settle_secs = t.elapsed().as_secs_f64();
    let Some(af) = after else {
        eprintln!("switchboard-bench churn: lost the server");
        return ExitCode::from(1);
    };
    let ok_rss = within(base.rss_kb, af.rss_kb, a.tolerance, 0);
    let ok_fds = within(base.open_fds, af.open_fds, a.tolerance, 2);
    let ok_conns = within(base.connections, af.connections, a.tolerance, 2);
    // Every cycle is a new client: its session must be reaped after --hold,
    // with its timers and anything it retained.
    // (Fewer than at the baseline is fine: the warm-up's clients may still
    // have been held then.)
    let ok_sessions =
        af.sessions <= base.sessions || within(base.sessions, af.sessions, a.tolerance, 2);
    let ok_timers = af.timers <= base.timers || within(base.timers, af.timers, a.tolerance, 4);
    let ok_retained = af.retained_bytes <= base.retained_bytes;
    let pass =
        ok_rss && ok_fds && ok_conns && ok_sessions && ok_timers && ok_retained && done == a.cycles;
    ch.cycle_us.sort_unstable();
    let p = |q: f64| {
        ch.cycle_us
            .get(((ch.cycle_us.len().saturating_sub(1)) as f64 * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    let v = serde_json::json!({
        "scenario": "churn",
        "target": "switchboard",
        "cycles": a.cycles,
        "completed": done,
        "failed": failed,
        "failure_reasons": ch.reasons,
        "rate_target": a.rate,
        "rate_achieved": (done as f64 / secs).round(),
        "secs": (secs * 10.0).round() / 10.0,
        "warmup_cycles": a.warmup,
        "cycle_latency_us": {"p50": p(0.5), "p99": p(0.99), "max": p(1.0)},
        "fresh": fresh,
        "baseline": base,
        "at_end_of_cycles": peak,
        "after_settle": af,
        "settle_secs": (settle_secs * 10.0).round() / 10.0,
        "tolerance": a.tolerance,
        "rss_ratio": (af.rss_kb as f64 / base.rss_kb.max(1) as f64 * 1000.0).round() / 1000.0,
        "pass": {"rss": ok_rss, "open_fds": ok_fds, "connections": ok_conns,
                 "sessions": ok_sessions, "timers": ok_timers, "retained": ok_retained, "all": pass},
        "loadavg_1m": mem::loadavg(),
    });
    println!("{}", serde_json::to_string_pretty(&v).unwrap());
    eprintln!(
        "[churn] {}: RSS {} -> {} kB, fds {} -> {}, connections {} -> {}, sessions {} -> {}, timers {} -> {}",
        if pass { "PASS" } else { "FAIL" },
        base.rss_kb,
        af.rss_kb,
        base.open_fds,
        af.open_fds,
        base.connections,
        af.connections,
        base.sessions,
        af.sessions,
        base.timers,
        af.timers
    );
    if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

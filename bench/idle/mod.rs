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

mod conn;
mod memory;
mod procs;
mod report;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::proto::{raise_nofile, Target, Transport};
use clap::Args;
use conn::Gen;
use memory::{read_mem, settle, Reading};
use procs::{run_child, run_parent};
use report::{report, Outcome};

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
    /// The connections' transport: `ws` opens WebSocket connections (Switchboard's
    /// `/v1/connect` held at `ready`; the `*-ws` form of a peer target).
    #[arg(long, value_enum, default_value = "sse")]
    pub transport: Transport,
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

pub fn run(mut a: IdleArgs) -> ExitCode {
    let nofile = raise_nofile();
    if a.connections == 0 {
        eprintln!("switchboard-bench idle: --connections must be > 0");
        return ExitCode::from(2);
    }
    a.inflight = a.inflight.max(1);
    a.target = match a.target.with_transport(a.transport) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("switchboard-bench idle: {e}");
            return ExitCode::from(2);
        }
    };
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

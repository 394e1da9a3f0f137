//! `switchboard-bench detect`: how long the server takes to notice that
//! receive clients vanished.
//!
//! Per trial, `--count` receive connections are opened from one loopback
//! source address and held until the server's admin `/metrics` shows them.
//! Then they vanish, and `/metrics` is polled every `--poll-ms` until
//! `switchboard_connections{kind="receive"}` is back to the baseline:
//!
//! - clean: the client closes its sockets (FIN).
//! - silent: `--drop-cmd` is run (a shell command that makes the network drop
//!   every packet from and to the clients' source address, e.g. an nftables
//!   rule inside a network namespace; see `bench/detect.sh`), and the client
//!   keeps its sockets, so no FIN or RST ever reaches the server. After the
//!   measurement `--undrop-cmd` restores the network and the sockets are closed.
//!
//! Reported: time until the first and until the last connection was noticed.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::admin;
use crate::proto::{self, HeadCheck, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Clean,
    Silent,
    Both,
}

#[derive(Debug, Clone, Args)]
pub struct DetectArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub server: SocketAddr,
    /// Admin address (for /metrics).
    #[arg(long)]
    pub admin: SocketAddr,
    /// The server's HS256 token secret.
    #[arg(long, env = "SWITCHBOARD_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Which vanishing to measure.
    #[arg(long, value_enum, default_value = "clean")]
    pub mode: Mode,
    /// Receive connections per trial.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Trials per mode.
    #[arg(long, default_value_t = 3)]
    pub trials: usize,
    /// Source address of the clean-close clients.
    #[arg(long, default_value = "127.0.0.8")]
    pub clean_source: Ipv4Addr,
    /// Source address of the silently lost clients (the one --drop-cmd blackholes).
    #[arg(long, default_value = "127.0.0.9")]
    pub silent_source: Ipv4Addr,
    /// Shell command that starts dropping all packets from/to --silent-source.
    #[arg(long)]
    pub drop_cmd: Option<String>,
    /// Shell command that stops dropping them.
    #[arg(long)]
    pub undrop_cmd: Option<String>,
    /// /metrics polling interval (ms).
    #[arg(long, default_value_t = 5)]
    pub poll_ms: u64,
    /// Give up waiting for detection after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// Account.
    #[arg(long, default_value = "bench")]
    pub account: String,
}

struct Held {
    poll: Poll,
    conns: Vec<(TcpStream, Vec<u8>, usize, bool)>,
}

/// Opens `n` receive connections from `src` and waits until all are ready.
fn open(a: &DetectArgs, src: Ipv4Addr, n: usize, first: usize) -> io::Result<Held> {
    let mut h = Held {
        poll: Poll::new()?,
        conns: Vec::new(),
    };
    for i in 0..n {
        let mut s = proto::connect(a.server, Some(src))?;
        h.poll
            .registry()
            .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        let req = proto::receive_request(
            Target::Switchboard,
            a.server,
            &a.secret,
            &a.account,
            &format!("d{}", first + i),
        );
        h.conns.push((s, req, 0, false));
    }
    let mut events = Events::with_capacity(256);
    let mut scratch = vec![0u8; 16384];
    let t = Instant::now();
    let mut ready = 0;
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); n];
    while ready < n {
        if t.elapsed() > Duration::from_secs(30) {
            return Err(io::Error::other(format!("only {ready}/{n} ready")));
        }
        h.poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let (s, req, sent, up) = &mut h.conns[i];
            if *sent < req.len() {
                match s.write(&req[*sent..]) {
                    Ok(k) => *sent += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                    Err(e) => return Err(e),
                }
            }
            loop {
                match s.read(&mut scratch) {
                    Ok(0) => return Err(io::Error::other("eof before ready")),
                    Ok(k) => {
                        if !*up {
                            bufs[i].extend_from_slice(&scratch[..k]);
                            match proto::check_ready(Target::Switchboard, &bufs[i]) {
                                HeadCheck::Ready(_) => {
                                    *up = true;
                                    ready += 1;
                                }
                                HeadCheck::Bad(r) => return Err(io::Error::other(r)),
                                HeadCheck::More => {}
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(h)
}

fn receive_count(a: &DetectArgs) -> u64 {
    admin::metrics(a.admin)
        .map(|g| g.receive)
        .unwrap_or(u64::MAX)
}

fn shell(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// One trial; returns (first, last) detection times in seconds (None = not within the timeout).
fn trial(
    a: &DetectArgs,
    silent: bool,
    n: usize,
    first_id: usize,
) -> Result<(Option<f64>, Option<f64>), String> {
    let base = receive_count(a);
    let src = if silent {
        a.silent_source
    } else {
        a.clean_source
    };
    let h = open(a, src, n, first_id).map_err(|e| format!("open: {e}"))?;
    let t = Instant::now();
    while receive_count(a) < base + n as u64 {
        if t.elapsed() > Duration::from_secs(10) {
            return Err("server does not show the connections".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let held;
    let t0;
    if silent {
        let cmd = a
            .drop_cmd
            .as_deref()
            .ok_or("--drop-cmd is required for silent mode")?;
        if !shell(cmd) {
            return Err(format!("drop command failed: {cmd}"));
        }
        t0 = Instant::now();
        held = Some(h);
    } else {
        t0 = Instant::now();
        drop(h); // close(): FIN to the server
        held = None;
    }
    let top = base + n as u64;
    let mut first = None;
    let mut last_print = Instant::now();
    let last = loop {
        let c = receive_count(a);
        let el = t0.elapsed().as_secs_f64();
        if first.is_none() && c < top {
            first = Some(el);
        }
        if c <= base {
            break Some(el);
        }
        if t0.elapsed() > Duration::from_secs(a.timeout) {
            break None;
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "[detect] {} t={el:.0}s still {} of {n} connections open on the server",
                if silent { "silent" } else { "clean" },
                c.saturating_sub(base)
            );
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(a.poll_ms));
    };
    if silent {
        if let Some(u) = a.undrop_cmd.as_deref() {
            shell(u);
        }
        drop(held);
    }
    Ok((first, last))
}

pub fn run(a: DetectArgs) -> ExitCode {
    proto::raise_nofile();
    let modes: Vec<bool> = match a.mode {
        Mode::Clean => vec![false],
        Mode::Silent => vec![true],
        Mode::Both => vec![false, true],
    };
    let mut out = serde_json::Map::new();
    out.insert("scenario".into(), "detect".into());
    out.insert("target".into(), "switchboard".into());
    out.insert("count".into(), a.count.into());
    out.insert("poll_ms".into(), a.poll_ms.into());
    let mut ok = true;
    for (mi, silent) in modes.into_iter().enumerate() {
        let name = if silent { "silent" } else { "clean" };
        let mut trials = Vec::new();
        for t in 0..a.trials {
            eprintln!("[detect] {name} trial {}/{}", t + 1, a.trials);
            match trial(&a, silent, a.count, (mi * a.trials + t) * a.count) {
                Ok((f, l)) => {
                    eprintln!("[detect] {name}: first {f:?} s, last {l:?} s");
                    if l.is_none() {
                        ok = false;
                    }
                    trials.push(serde_json::json!({"first_secs": f, "all_secs": l}));
                }
                Err(e) => {
                    eprintln!("[detect] {name}: {e}");
                    ok = false;
                    trials.push(serde_json::json!({"error": e}));
                }
            }
            // Let the server forget the clients (and TIME_WAIT settle) between trials.
            std::thread::sleep(Duration::from_millis(500));
        }
        out.insert(name.into(), trials.into());
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(out)).unwrap()
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

//! `switchboard-bench floor`: the kernel's share of a relayed message, the
//! floor under any server's CPU per message: one `read` of the send and two
//! `write`s (the delivery to the receiver, the answer to the sender) on
//! loopback TCP, of the exact sizes the server reads and writes for a
//! message of `--size` bytes over `--transport` (built with the server's own
//! encoders), and nothing else.
//!
//! Two ways (`--mode`), on two loopback TCP connections (Nagle off, as the
//! server's):
//!
//! - `inline` (the floor): one thread plays the sender, the server and the
//!   receiver in turn; the send is written before the server's read, so no
//!   call waits. The CPU time of the server's three calls alone is read with
//!   `CLOCK_THREAD_CPUTIME_ID` around them (the cost of a clock read,
//!   measured, taken off): all of it is system time but a few instructions.
//!   No process waits on the sockets, so the wake-up of a waiting receiver is
//!   not in it: a lower bound.
//! - `threads`: a "server" thread does, per message, one blocking `read`
//!   of the send's size from the sender's socket (more when a read comes
//!   back short, counted), one `write` of the delivery to the receiver's
//!   socket and one `write` of the answer to the sender's socket; a sender
//!   thread keeps `--window` sends in flight, a receiver thread reads the
//!   deliveries. The server thread's own CPU time (`getrusage(RUSAGE_THREAD)`),
//!   user and system, divided by the messages. Here a `write` also wakes the
//!   waiting reader, as the server's writes do. With `--window 1` the `read`
//!   waits for each send (a sleep and a wake-up per message, which the server
//!   pays in `epoll_wait` when it keeps up); with a larger window the send is
//!   usually there already. This is the floor with the sleeps and wake-ups of
//!   three threads sharing the machine's cores, which on a busy or
//!   virtualised host can cost more than the calls themselves.
//!
//! On loopback a `write` also runs the receiving socket's TCP processing, as
//! the server's writes do. The server's `epoll_wait` calls are in neither
//! mode: under load it makes far fewer of them than messages (and reads and
//! writes several messages per call, which the floor does not).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use switchboard::ids::EventId;
use switchboard::proto::{response, sse, ws::encode as server_ws, ws_msg};

use crate::proto::{self, Target, Transport};
use crate::ws;

/// Flags of `switchboard-bench floor`.
#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// Message body size in bytes (at least 40), as `relay --size`.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Whose sizes: `sse` (an HTTP POST with a bearer token read, an SSE event in a
    /// chunk and a 202 written) or `ws` (a `send` frame read, a `message` and an
    /// `accepted` frame written).
    #[arg(long, value_enum, default_value = "sse")]
    pub transport: Transport,
    /// Messages relayed.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Sends the sender keeps in flight (`--mode threads`).
    #[arg(long, default_value_t = 1)]
    pub window: u64,
    /// `inline`: the three calls alone, nothing waits (the floor); `threads`: a server
    /// thread with blocking calls between sender and receiver threads.
    #[arg(long, value_enum, default_value = "inline")]
    pub mode: Mode,
}

/// How `floor` runs (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Inline,
    Threads,
}

/// This thread's CPU time in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Reads exactly `buf.len()` bytes; returns the number of `read` calls.
fn read_full(s: &mut TcpStream, buf: &mut [u8]) -> io::Result<u64> {
    let (mut got, mut calls) = (0, 0);
    while got < buf.len() {
        calls += 1;
        match s.read(&mut buf[got..])? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            k => got += k,
        }
    }
    Ok(calls)
}

/// `--mode inline`: (nanoseconds of the server's calls, reads, clock cost per message in ns).
fn inline(sizes: (usize, usize, usize), n: u64) -> io::Result<(u64, u64, u64)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let (mut sender, mut server_s) = pair(&l)?;
    let (mut receiver, mut server_r) = pair(&l)?;
    let send = vec![b's'; sizes.0];
    let event = vec![b'e'; sizes.1];
    let answer = vec![b'a'; sizes.2];
    let (mut inbuf, mut evbuf, mut ansbuf) =
        (vec![0u8; sizes.0], vec![0u8; sizes.1], vec![0u8; sizes.2]);
    let (mut ns, mut reads) = (0u64, 0u64);
    for _ in 0..n {
        sender.write_all(&send)?;
        let t0 = thread_ns();
        reads += read_full(&mut server_s, &mut inbuf)?;
        server_r.write_all(&event)?;
        server_s.write_all(&answer)?;
        ns += thread_ns() - t0;
        read_full(&mut receiver, &mut evbuf)?;
        read_full(&mut sender, &mut ansbuf)?;
    }
    // What two clock reads around nothing cost, per message.
    let mut clock = 0u64;
    for _ in 0..n {
        let t0 = thread_ns();
        clock += thread_ns() - t0;
    }
    Ok((ns, reads, clock / n))
}

/// The bytes the server reads and writes for one message: (send, delivery, answer).
fn wire_sizes(a: &FloorArgs) -> (usize, usize, usize) {
    let id = EventId {
        epoch: 0x5f3a_9c2e_1b4d_7e60,
        seq: 1_000_000,
    };
    let mut body = Vec::new();
    proto::make_body(&mut body, a.size, 1_000_000_000_000, 12, 1_000_000);
    let (mut send, mut event, mut answer) = (Vec::new(), Vec::new(), Vec::new());
    match a.transport {
        Transport::Ws => {
            ws::push_send(&mut send, b"r500", &body, 1_000_000);
            ws_msg::encode_message(&mut event, id, "s12", &body, false);
            ws_msg::encode_accepted(&mut answer, Some("1000000"), id);
            let mut framed = Vec::new();
            server_ws::push_text(&mut framed, &event);
            let n = framed.len();
            framed.clear();
            server_ws::push_text(&mut framed, &answer);
            (send.len(), n, framed.len())
        }
        Transport::Sse => {
            let tok = proto::token("floor-secret-floor-secret-floor!", "bench", "s12");
            let auth = format!("Authorization: Bearer {tok}\r\n");
            proto::push_send(
                Target::Switchboard,
                &mut send,
                "127.0.0.1:8080",
                &auth,
                "r500",
                &body,
                0,
            );
            sse::encode_message(&mut event, id, "s12", &body, false);
            // One chunk per write of events: `<hex size>\r\n<events>\r\n`.
            let chunked = format!("{:x}\r\n", event.len()).len() + event.len() + 2;
            let mut json = br#"{"status":"accepted","id":""#.to_vec();
            id.push_to(&mut json);
            json.extend_from_slice(br#""}"#);
            response::write_response(&mut answer, 202, "application/json", &json, false);
            (send.len(), chunked, answer.len())
        }
    }
}

/// A connected loopback pair (client end, server end), Nagle off.
fn pair(l: &TcpListener) -> io::Result<(TcpStream, TcpStream)> {
    let c = TcpStream::connect(l.local_addr()?)?;
    let (s, _) = l.accept()?;
    c.set_nodelay(true)?;
    s.set_nodelay(true)?;
    Ok((c, s))
}

/// This thread's CPU time so far: (user, system) seconds.
fn thread_cpu() -> (f64, f64) {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(ru.ru_utime), t(ru.ru_stime))
}

/// The server thread: `n` times one read of `send` bytes (plus more if short)
/// and two writes; returns (user s, system s, reads, wall s).
fn serve(
    mut from_sender: TcpStream,
    mut to_receiver: TcpStream,
    sizes: (usize, usize, usize),
    n: u64,
) -> io::Result<(f64, f64, u64, f64)> {
    let mut inbuf = vec![0u8; sizes.0];
    let event = vec![b'e'; sizes.1];
    let answer = vec![b'a'; sizes.2];
    let mut reads = 0u64;
    let t0 = Instant::now();
    let c0 = thread_cpu();
    for _ in 0..n {
        reads += read_full(&mut from_sender, &mut inbuf)?;
        to_receiver.write_all(&event)?;
        from_sender.write_all(&answer)?;
    }
    let c1 = thread_cpu();
    Ok((c1.0 - c0.0, c1.1 - c0.1, reads, t0.elapsed().as_secs_f64()))
}

fn run_floor(a: &FloorArgs) -> io::Result<serde_json::Value> {
    let sizes = wire_sizes(a);
    if a.mode == Mode::Inline {
        let n = a.messages;
        let (ns, reads, clock) = inline(sizes, n)?;
        let per = (ns as f64 / n as f64 - clock as f64).max(0.0);
        return Ok(serde_json::json!({
            "scenario": "floor",
            "mode": "inline",
            "transport": if a.transport == Transport::Ws { "ws" } else { "sse" },
            "size": a.size,
            "messages": n,
            "window": 1,
            "read_bytes": sizes.0,
            "delivery_bytes": sizes.1,
            "answer_bytes": sizes.2,
            "reads_per_msg": (reads as f64 / n as f64 * 1000.0).round() / 1000.0,
            "writes_per_msg": 2,
            "clock_ns_taken_off_per_msg": clock,
            "server_cpu_us_per_msg": (per / 10.0).round() / 100.0,
            "server_cpu_sys_us_per_msg": (per / 10.0).round() / 100.0,
            "server_cpu_user_us_per_msg": 0.0,
        }));
    }
    let l = TcpListener::bind("127.0.0.1:0")?;
    let (mut sender, server_s) = pair(&l)?;
    let (mut receiver, server_r) = pair(&l)?;
    let (n, window) = (a.messages, a.window.max(1));
    let rx = std::thread::spawn(move || -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = n * sizes.1 as u64;
        while left > 0 {
            match receiver.read(&mut buf)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                k => left -= k as u64,
            }
        }
        Ok(())
    });
    let tx = std::thread::spawn(move || -> io::Result<()> {
        let send = vec![b's'; sizes.0];
        let mut ans = vec![0u8; sizes.2];
        let mut sent = 0;
        while sent < n.min(window) {
            sender.write_all(&send)?;
            sent += 1;
        }
        for _ in 0..n {
            sender.read_exact(&mut ans)?;
            if sent < n {
                sender.write_all(&send)?;
                sent += 1;
            }
        }
        Ok(())
    });
    let (user, sys, reads, wall) = serve(server_s, server_r, sizes, n)?;
    let joined = |h: std::thread::JoinHandle<io::Result<()>>| {
        h.join()
            .unwrap_or_else(|_| Err(io::Error::other("peer thread panicked")))
    };
    joined(tx)?;
    joined(rx)?;
    let per = |s: f64| (s * 1e9 / n as f64).round() / 1e3;
    Ok(serde_json::json!({
        "scenario": "floor",
        "mode": "threads",
        "transport": if a.transport == Transport::Ws { "ws" } else { "sse" },
        "size": a.size,
        "messages": n,
        "window": window,
        "read_bytes": sizes.0,
        "delivery_bytes": sizes.1,
        "answer_bytes": sizes.2,
        "reads_per_msg": (reads as f64 / n as f64 * 1000.0).round() / 1000.0,
        "writes_per_msg": 2,
        "server_cpu_us_per_msg": per(user + sys),
        "server_cpu_user_us_per_msg": per(user),
        "server_cpu_sys_us_per_msg": per(sys),
        "msgs_per_sec": (n as f64 / wall).round(),
    }))
}

pub fn run(a: FloorArgs) -> ExitCode {
    if a.size < 40 || a.messages == 0 {
        eprintln!("switchboard-bench floor: --size must be at least 40 and --messages above 0");
        return ExitCode::from(2);
    }
    match run_floor(&a) {
        Ok(v) => {
            eprintln!(
                "[floor {} {} {}B window {}] {} us of server CPU per message ({} user, {} system), {} reads per message",
                v["mode"].as_str().unwrap_or(""), v["transport"].as_str().unwrap_or(""), a.size, v["window"], v["server_cpu_us_per_msg"],
                v["server_cpu_user_us_per_msg"], v["server_cpu_sys_us_per_msg"], v["reads_per_msg"]
            );
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchboard-bench floor: {e}");
            ExitCode::from(1)
        }
    }
}

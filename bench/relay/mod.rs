//! `switchboard-bench relay`: S keep-alive senders post fixed-size messages
//! to R receivers for a fixed time; delivered messages/s, end-to-end latency
//! and an exactly-once check.
//!
//! Every message body is `@@<ns since the run's origin>,<sender>,<seq>,`
//! padded with letters to `--size` bytes. Senders and receivers live in the
//! same process (one or more mio event loops, `--threads`), so the send
//! timestamp and the receive time come from one monotonic clock. Sender `s`
//! sends its message `seq` to a receiver picked by a fixed hash of `(s, seq)`
//! (`--pick random`, the default; `--pick diagonal` is the earlier
//! `(s + seq) % R`, see [`Pick`]); with `--window 1`
//! (default) each sender waits for the answer (Switchboard 202, nchan 201/202,
//! Redis `:n`) before the next message. Sent-and-acknowledged messages are
//! compared with the received ones: none missing, none twice.
//!
//! `--send-server` points the senders at another cluster node than the
//! receivers' `--server`, so that every message crosses nodes through Redis
//! (`bench/cluster.sh`); `--pid` may then list every node (and Redis).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use crate::mem;
use crate::proto::{self, Target, Transport};

/// How a sender picks the receiver of its next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pick {
    /// A fixed hash of (sender, sequence number): every receiver equally
    /// often, in no order a server could line up with.
    Random,
    /// Receiver `(sender + seq) % R` (the generator's choice until 2026-12-02).
    /// Senders whose sequence numbers differ by their index distance hit the
    /// same receivers at the same time, and keep doing so once a server answers
    /// them together: a server that writes all its answers at the end of a
    /// loop iteration (Redis) then writes two messages to one receiver in one
    /// system call far more often than traffic by chance would make it.
    Diagonal,
}

impl Pick {
    /// The receiver (0..r) of message `seq` of sender `s`.
    pub fn receiver(self, s: usize, seq: u64, r: usize) -> usize {
        let r = r.max(1);
        match self {
            Pick::Diagonal => (s + seq as usize) % r,
            Pick::Random => {
                // splitmix64 of (sender, seq): fixed, so runs are repeatable.
                let mut z = ((s as u64) << 40 ^ seq).wrapping_add(0x9e37_79b9_7f4a_7c15);
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                (z % r as u64) as usize
            }
        }
    }
}

impl RelayArgs {
    /// The account of receiver or sender `i`.
    pub fn account_of(&self, i: usize) -> String {
        if self.accounts <= 1 {
            self.account.clone()
        } else {
            format!("{}{}", self.account, i % self.accounts)
        }
    }

    /// The receiver (0..receivers) of message `seq` of sender `s`: picked
    /// with `--pick` among the receivers of the sender's account.
    pub fn recipient(&self, s: usize, seq: u64) -> usize {
        let n = self.accounts.max(1);
        let a = s % n;
        // Receivers a, a + n, a + 2n, .. are in the sender's account (at least
        // one: `run` checks that there are no more accounts than receivers).
        let in_account = (self.receivers.saturating_sub(a)).div_ceil(n).max(1);
        self.pick.receiver(s, seq, in_account) * n + a
    }
}

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
    /// The clients' transport: `ws` makes every sender and receiver a WebSocket
    /// connection to Switchboard's `/v1/connect` (sends are `send` commands with a
    /// `ref`, answered `accepted`); with `--target nchan`, nchan's WebSocket
    /// subscribers (`nchan-ws`).
    #[arg(long, value_enum, default_value = "sse")]
    pub transport: Transport,
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
    /// How each message's receiver is chosen.
    #[arg(long, value_enum, default_value = "random")]
    pub pick: Pick,
    /// Messages in flight per sender (1 = wait for each answer; more = HTTP/RESP pipelining,
    /// or unanswered WebSocket `send` commands).
    #[arg(long, visible_alias = "in-flight", default_value_t = 1)]
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
    /// Account of all clients (Switchboard); with `--accounts` N > 1 the
    /// prefix of N accounts (`<account>0` ..).
    #[arg(long, default_value = "bench")]
    pub account: String,
    /// Spread the clients over this many accounts: receiver `i` and sender `i`
    /// are in account `i % N`, and a sender sends only to receivers of its own
    /// account (Switchboard never relays between accounts). The same traffic
    /// pattern is used against every peer.
    #[arg(long, default_value_t = 1)]
    pub accounts: usize,
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

mod gen;

use gen::{run_thread, Shared, ThreadOut};

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

pub fn run(mut a: RelayArgs) -> ExitCode {
    let nofile = proto::raise_nofile();
    a.target = match a.target.with_transport(a.transport) {
        Ok(Target::MosquittoWs) => {
            eprintln!("switchboard-bench relay: Mosquitto over WebSocket is measured idle only");
            return ExitCode::from(2);
        }
        Ok(t) => t,
        Err(e) => {
            eprintln!("switchboard-bench relay: {e}");
            return ExitCode::from(2);
        }
    };
    if a.size < 40 {
        eprintln!("switchboard-bench relay: --size must be at least 40");
        return ExitCode::from(2);
    }
    if a.accounts == 0 || a.accounts > a.receivers.max(1) {
        eprintln!(
            "switchboard-bench relay: --accounts must be between 1 and --receivers ({})",
            a.receivers
        );
        return ExitCode::from(2);
    }
    if a.target.is_switchboard() && a.secret.is_empty() {
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
    let steal0 = mem::steal_secs();
    let go_at = sh.origin.elapsed();
    sh.go_ns.store(go_at.as_nanos() as u64, Relaxed);
    sh.sending.store(true, Relaxed);
    sh.go.store(true, Relaxed);
    let go = Instant::now();
    let dur = Duration::from_secs_f64(a.duration);
    let mut last = (Instant::now(), 0u64);
    let mut per_sec: Vec<f64> = Vec::new();
    // The hypervisor's steal time in each of those seconds: on a shared VM it
    // tells a slow second of the system under test from one the machine lost.
    let mut steal_each: Vec<f64> = Vec::new();
    let mut steal_last = steal0;
    while go.elapsed() < dur {
        std::thread::sleep(Duration::from_millis(100).min(dur.saturating_sub(go.elapsed())));
        if last.0.elapsed() >= Duration::from_secs(1) {
            let rcv = sh.received.load(Relaxed);
            let rate = (rcv - last.1) as f64 / last.0.elapsed().as_secs_f64();
            per_sec.push(rate.round());
            let steal = mem::steal_secs();
            steal_each.push(r2(steal - steal_last));
            steal_last = steal;
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
    let steal_secs = mem::steal_secs() - steal0;
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
        "transport": a.target.transport_name(),
        "server": a.server.to_string(),
        "send_server": a.send_server.unwrap_or(a.server).to_string(),
        "receivers": a.receivers,
        "senders": a.senders,
        "size": a.size,
        "pick": format!("{:?}", a.pick).to_lowercase(),
        "accounts": a.accounts,
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
        "steal_secs": r2(steal_secs),
        "steal_secs_each_second": steal_each,
    });
    // CPU per delivered message, over the sending window only (set-up excluded).
    let per_msg = |secs: f64| r2(secs * 1e6 / delivered_in_window as f64);
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
            m.insert("server_cpu_us_per_msg".into(), per_msg(total).into());
            m.insert("server_cpu_user_us_per_msg".into(), per_msg(user).into());
            m.insert("server_cpu_sys_us_per_msg".into(), per_msg(sys).into());
        }
    }
    if delivered_in_window > 0 {
        let m = v.as_object_mut().unwrap();
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
        "{tag} {:.0} msg/s, p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, exactly-once {}, \
         steal {:.2} s of CPU",
        delivered_in_window as f64 / window_secs,
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        pct(&lat, 99.9),
        if exactly_once { "ok" } else { "NOT ok" },
        steal_secs
    );
    if exactly_once || !a.check {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::Pick;

    #[test]
    fn random_pick_spreads_messages_over_every_receiver() {
        let r = 100;
        let mut hits = vec![0u32; r];
        for s in 0..50 {
            for seq in 0..200 {
                let to = Pick::Random.receiver(s, seq, r);
                assert!(to < r);
                hits[to] += 1;
            }
        }
        // 10,000 picks over 100 receivers: 100 each on average.
        assert!(hits.iter().all(|&h| (50..=150).contains(&h)), "{hits:?}");
        // The same message always goes to the same receiver (repeatable runs).
        assert_eq!(
            Pick::Random.receiver(7, 9, r),
            Pick::Random.receiver(7, 9, r)
        );
    }

    #[test]
    fn random_pick_does_not_line_senders_up_like_diagonal() {
        // Diagonal: sender s+1 one message behind sender s hits the same receiver.
        assert_eq!(
            Pick::Diagonal.receiver(3, 10, 1000),
            Pick::Diagonal.receiver(4, 9, 1000)
        );
        let same = (0..1000u64)
            .filter(|&k| Pick::Random.receiver(3, k + 1, 1000) == Pick::Random.receiver(4, k, 1000))
            .count();
        assert!(same < 10, "{same} of 1000");
    }
}

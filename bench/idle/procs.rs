//! `--procs P`: the parent re-executes itself as P generator processes with
//! disjoint client ids, aggregates their progress lines and measures the
//! server; each child runs one generator and reports on stdout.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::conn::{Counts, Gen};
use super::memory::{read_mem, settle};
use super::report::{report, Outcome};
use super::{warm_up, IdleArgs};

/// A generator process of a `--procs` parent: reports progress on stdout as
/// `up ESTABLISHED FAILED DROPPED SECS` lines, `done ...` once every
/// connection is up or failed, holds until stdin closes, then `final ...`.
pub(super) fn run_child(a: IdleArgs) -> ExitCode {
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

pub(super) fn run_parent(a: IdleArgs, nofile: u64) -> ExitCode {
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

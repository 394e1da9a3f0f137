//! The admin `/metrics` page (Prometheus text format).

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use super::super::conn::CloseReason;
use super::{open_fds, proc_status_kb, Admin};

impl Admin {
    pub(super) fn metrics(&self) -> String {
        let sh = &self.shared;
        let mut m = String::with_capacity(8192);
        let sum = |f: &dyn Fn(&super::super::stats::WorkerStats) -> u64| {
            sh.stats.iter().map(f).sum::<u64>()
        };
        let g = |m: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(
                m,
                "# HELP switchboard_{name} {help}\n# TYPE switchboard_{name} {kind}"
            );
        };
        let receive = sum(&|s| s.receive_open.load(Relaxed));
        let open = sum(&|s| s.open.load(Relaxed));
        g(
            &mut m,
            "connections",
            "Open client connections by kind.",
            "gauge",
        );
        let _ = writeln!(m, "switchboard_connections{{kind=\"receive\"}} {receive}");
        let _ = writeln!(
            m,
            "switchboard_connections{{kind=\"request\"}} {}",
            open.saturating_sub(receive)
        );
        let ws = sum(&|s| s.ws_open.load(Relaxed));
        g(
            &mut m,
            "stream_connections",
            "Open receive connections by transport: Server-Sent Events (GET /v1/receive) or WebSocket (GET /v1/connect).",
            "gauge",
        );
        let _ = writeln!(
            m,
            "switchboard_stream_connections{{transport=\"sse\"}} {}",
            receive.saturating_sub(ws)
        );
        let _ = writeln!(
            m,
            "switchboard_stream_connections{{transport=\"websocket\"}} {ws}"
        );
        g(
            &mut m,
            "websocket_commands_total",
            "Commands read on WebSocket connections (send, clients; answered or refused).",
            "counter",
        );
        let _ = writeln!(
            m,
            "switchboard_websocket_commands_total {}",
            sum(&|s| s.ws_commands.load(Relaxed))
        );
        g(
            &mut m,
            "websocket_protocol_errors_total",
            "WebSocket connections closed for breaking RFC 6455 or sending a binary message.",
            "counter",
        );
        let _ = writeln!(
            m,
            "switchboard_websocket_protocol_errors_total {}",
            sum(&|s| s.ws_protocol_errors.load(Relaxed))
        );
        g(
            &mut m,
            "connections_accepted_total",
            "Client connections accepted.",
            "counter",
        );
        let _ = writeln!(
            m,
            "switchboard_connections_accepted_total {}",
            sum(&|s| s.accepted.load(Relaxed))
        );
        g(
            &mut m,
            "accept_failures_total",
            "Accepts that failed for want of a resource (descriptors, memory), by listener; each is followed by a 100 ms pause.",
            "counter",
        );
        let _ = writeln!(
            m,
            "switchboard_accept_failures_total{{listener=\"client\"}} {}",
            sum(&|s| s.accept_failures.load(Relaxed))
        );
        let _ = writeln!(
            m,
            "switchboard_accept_failures_total{{listener=\"admin\"}} {}",
            self.accept_failures.load(Relaxed)
        );
        g(
            &mut m,
            "connections_rate_limited_total",
            "New client connections refused past --max-new-connections-per-address: answered 429 (answered), or closed at once, far over the rate (closed).",
            "counter",
        );
        let _ = writeln!(
            m,
            "switchboard_connections_rate_limited_total{{action=\"answered\"}} {}",
            sum(&|s| s.rate_limited.load(Relaxed))
        );
        let _ = writeln!(
            m,
            "switchboard_connections_rate_limited_total{{action=\"closed\"}} {}",
            sum(&|s| s.rate_flood.load(Relaxed))
        );
        g(
            &mut m,
            "admin_refused_total",
            "Admin requests refused: overloaded (every slot busy, 503), timeout (head not complete within its deadline, 408), host (Host does not name the listener, 421).",
            "counter",
        );
        for r in super::Refusal::ALL {
            let _ = writeln!(
                m,
                "switchboard_admin_refused_total{{reason=\"{}\"}} {}",
                r.as_str(),
                self.refused[r as usize].load(Relaxed)
            );
        }
        let (general, probe) = self.slots.busy();
        g(
            &mut m,
            "admin_connections",
            "Admin connections open, by slot (general: any path; probe: /healthz, /readyz, /metrics only, used when the general ones are busy).",
            "gauge",
        );
        let _ = writeln!(
            m,
            "switchboard_admin_connections{{slot=\"general\"}} {general}"
        );
        let _ = writeln!(m, "switchboard_admin_connections{{slot=\"probe\"}} {probe}");
        g(
            &mut m,
            "connections_closed_total",
            "Client connections closed, by reason.",
            "counter",
        );
        for r in CloseReason::ALL {
            let _ = writeln!(
                m,
                "switchboard_connections_closed_total{{reason=\"{}\"}} {}",
                r.as_str(),
                sum(&|s| s.closed[r.index()].load(Relaxed))
            );
        }
        type Counter = (
            &'static str,
            &'static str,
            fn(&super::super::stats::WorkerStats) -> u64,
        );
        let counters: [Counter; 18] = [
            ("messages_accepted_total", "Messages accepted (202).", |s| {
                s.accepted_messages.load(Relaxed)
            }),
            (
                "messages_relayed_total",
                "Messages written to a live receive connection at once.",
                |s| s.relayed.load(Relaxed),
            ),
            (
                "stream_writes_total",
                "Writes of new events to live receive connections (a burst for one client goes out in two).",
                |s| s.stream_writes.load(Relaxed),
            ),
            (
                "socket_writes_total",
                "send calls on client sockets (answers to pipelined requests read together go out in one).",
                |s| s.socket_writes.load(Relaxed),
            ),
            (
                "messages_held_total",
                "Messages accepted while the recipient was held.",
                |s| s.held_messages.load(Relaxed),
            ),
            (
                "messages_dropped_total",
                "Retained messages dropped before delivery (reported as gaps).",
                |s| s.dropped.load(Relaxed),
            ),
            (
                "retained_memory_trims_total",
                "Retained messages dropped early (delivered ones first) because retained messages passed --hold-total-bytes.",
                |s| s.memory_trims.load(Relaxed),
            ),
            (
                "sends_offline_total",
                "Sends refused because the recipient is offline.",
                |s| s.offline.load(Relaxed),
            ),
            (
                "resumes_total",
                "Receive connections that resumed with Last-Event-ID.",
                |s| s.resumes.load(Relaxed),
            ),
            (
                "replayed_messages_total",
                "Messages replayed to resuming receive connections.",
                |s| s.replayed.load(Relaxed),
            ),
            ("gaps_total", "Gap notices sent.", |s| s.gaps.load(Relaxed)),
            ("peer_gone_total", "peer-gone notices queued.", |s| {
                s.peer_gone.load(Relaxed)
            }),
            ("heartbeats_total", "Heartbeats written (SSE comments, WebSocket Pings).", |s| {
                s.heartbeats.load(Relaxed)
            }),
            ("bytes_in_total", "Bytes read from clients.", |s| {
                s.bytes_in.load(Relaxed)
            }),
            ("bytes_out_total", "Bytes written to clients.", |s| {
                s.bytes_out.load(Relaxed)
            }),
            (
                "cross_worker_sends_total",
                "Sends passed from the worker that read them to the one that owns the recipient.",
                |s| s.cross_worker_sends.load(Relaxed),
            ),
            (
                "connections_moved_total",
                "Connections handed to the worker that owns their client (receive) or account (send).",
                |s| s.moved_in.load(Relaxed),
            ),
            (
                "panics_total",
                "Panics caught while handling a connection (the connection was closed).",
                |s| s.panics.load(Relaxed),
            ),
        ];
        for (name, help, f) in counters {
            g(&mut m, name, help, "counter");
            let _ = writeln!(m, "switchboard_{name} {}", sum(&|s| f(s)));
        }
        g(&mut m, "sessions", "Client sessions by state.", "gauge");
        let sessions = sum(&|s| s.sessions.load(Relaxed));
        let held = sum(&|s| s.held.load(Relaxed));
        let _ = writeln!(
            m,
            "switchboard_sessions{{state=\"online\"}} {}",
            sessions.saturating_sub(held)
        );
        let _ = writeln!(m, "switchboard_sessions{{state=\"held\"}} {held}");
        let retention: [(&str, &str, u64); 3] = [
            (
                "retained_bytes",
                "Message bytes retained for held clients and Last-Event-ID replay (with 64 bytes of bookkeeping each).",
                sum(&|s| s.retained_bytes.load(Relaxed)),
            ),
            (
                "retained_messages",
                "Messages (and peer-gone notices) retained.",
                sum(&|s| s.retained_messages.load(Relaxed)),
            ),
            (
                "hold_total_bytes",
                "The limit on retained message bytes (--hold-total-bytes).",
                sh.config.hold_total_bytes as u64,
            ),
        ];
        for (name, help, v) in retention {
            g(&mut m, name, help, "gauge");
            let _ = writeln!(m, "switchboard_{name} {v}");
        }
        g(
            &mut m,
            "request_errors_total",
            "Requests answered with an error, by status and code.",
            "counter",
        );
        let mut errs: std::collections::BTreeMap<(u16, &str), u64> = Default::default();
        for s in &sh.stats {
            if let Ok(e) = s.errors.lock() {
                for (k, v) in e.iter() {
                    *errs.entry(*k).or_insert(0) += v;
                }
            }
        }
        for ((status, code), v) in errs {
            let _ = writeln!(
                m,
                "switchboard_request_errors_total{{status=\"{status}\",code=\"{code}\"}} {v}"
            );
        }
        g(
            &mut m,
            "timer_wheel_entries",
            "Timer wheel entries per worker.",
            "gauge",
        );
        for (i, s) in sh.stats.iter().enumerate() {
            let _ = writeln!(
                m,
                "switchboard_timer_wheel_entries{{worker=\"{i}\"}} {}",
                s.timers.load(Relaxed)
            );
        }
        g(
            &mut m,
            "worker_queue_depth",
            "Envelopes waiting in each worker's inbox.",
            "gauge",
        );
        for (i, p) in sh.peers.iter().enumerate() {
            let _ = writeln!(
                m,
                "switchboard_worker_queue_depth{{worker=\"{i}\"}} {}",
                p.tx.len()
            );
        }
        g(
            &mut m,
            "worker_iterations_total",
            "Event-loop iterations per worker.",
            "counter",
        );
        for (i, s) in sh.stats.iter().enumerate() {
            let _ = writeln!(
                m,
                "switchboard_worker_iterations_total{{worker=\"{i}\"}} {}",
                s.iterations.load(Relaxed)
            );
        }
        g(
            &mut m,
            "worker_busy_seconds_total",
            "Time each worker spent handling events (outside poll).",
            "counter",
        );
        for (i, s) in sh.stats.iter().enumerate() {
            let _ = writeln!(
                m,
                "switchboard_worker_busy_seconds_total{{worker=\"{i}\"}} {:.6}",
                s.busy_ns.load(Relaxed) as f64 / 1e9
            );
        }
        let (rss, _) = proc_status_kb();
        g(
            &mut m,
            "process_resident_memory_bytes",
            "Resident set size.",
            "gauge",
        );
        let _ = writeln!(
            m,
            "switchboard_process_resident_memory_bytes {}",
            rss * 1024
        );
        g(
            &mut m,
            "process_open_fds",
            "Open file descriptors.",
            "gauge",
        );
        let _ = writeln!(m, "switchboard_process_open_fds {}", open_fds());
        g(
            &mut m,
            "draining",
            "1 while the node drains before exit.",
            "gauge",
        );
        let _ = writeln!(
            m,
            "switchboard_draining {}",
            u8::from(sh.draining.load(Relaxed))
        );
        g(
            &mut m,
            "start_time_seconds",
            "Unix time the process started.",
            "gauge",
        );
        let _ = writeln!(m, "switchboard_start_time_seconds {}", sh.start_epoch_s);
        if let Some(b) = &sh.cluster {
            g(
                &mut m,
                "cluster_up",
                "1 while Redis (the cluster bridge) is reachable.",
                "gauge",
            );
            let _ = writeln!(m, "switchboard_cluster_up {}", u8::from(b.ok()));
        }
        m
    }
}

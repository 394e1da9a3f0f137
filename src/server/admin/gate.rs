//! What stands between a client and the admin endpoints: the slots (general
//! and probe-only), the deadline on the whole request head, and the check
//! that `Host` names this listener (a defence against DNS rebinding).

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::proto::head::{parse_head, HeadError, Limits, RequestHead};
use crate::proto::Parse;

/// Admin requests served at once in general slots (any path).
pub(super) const MAX_ADMIN_CONNS: usize = 16;
/// Extra slots taken only when every general slot is busy; a request in one
/// is answered only for [`PROBE_PATHS`].
pub(super) const MAX_PROBE_CONNS: usize = 8;
/// The whole request head must arrive within this time of the accept (a
/// general slot), however it is split.
pub(super) const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// The same for a probe slot: probes and scrapers send their head at once.
pub(super) const PROBE_HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// The paths answered in a probe slot.
pub(super) const PROBE_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The kind of slot an admin connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    General,
    Probe,
}

impl Slot {
    pub(super) fn head_deadline(self) -> Duration {
        match self {
            Slot::General => HEAD_DEADLINE,
            Slot::Probe => PROBE_HEAD_DEADLINE,
        }
    }

    /// Whether a request for `path` is answered in this slot.
    pub(super) fn serves(self, path: &str) -> bool {
        self == Slot::General || PROBE_PATHS.contains(&path)
    }
}

/// Counts of busy slots of each kind.
#[derive(Default)]
pub(super) struct Slots {
    general: AtomicUsize,
    probe: AtomicUsize,
}

impl Slots {
    /// Takes a general slot, else a probe slot; `None` when all are busy.
    /// Only the accept thread takes slots, so a check-then-add is exact.
    pub(super) fn take(&self) -> Option<Slot> {
        if self.general.load(Relaxed) < MAX_ADMIN_CONNS {
            self.general.fetch_add(1, Relaxed);
            Some(Slot::General)
        } else if self.probe.load(Relaxed) < MAX_PROBE_CONNS {
            self.probe.fetch_add(1, Relaxed);
            Some(Slot::Probe)
        } else {
            None
        }
    }

    pub(super) fn release(&self, slot: Slot) {
        match slot {
            Slot::General => self.general.fetch_sub(1, Relaxed),
            Slot::Probe => self.probe.fetch_sub(1, Relaxed),
        };
    }

    /// (general, probe) slots busy.
    pub(super) fn busy(&self) -> (usize, usize) {
        (self.general.load(Relaxed), self.probe.load(Relaxed))
    }
}

/// How reading an admin request head ended.
pub(super) enum HeadRead {
    Head(RequestHead),
    /// The peer closed before a whole head.
    Closed,
    /// The deadline passed first.
    TimedOut,
    Bad(HeadError),
}

/// Reads one request head from `stream`, giving up at `deadline`: each read
/// waits at most until then, so a client sending a byte now and then cannot
/// stretch it.
pub(super) fn read_head(
    stream: &mut TcpStream,
    deadline: Instant,
    limits: &Limits,
) -> io::Result<HeadRead> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        match parse_head(&buf, limits) {
            Ok(Parse::Complete(h)) => return Ok(HeadRead::Head(h)),
            Ok(Parse::Partial) => {}
            Err(e) => return Ok(HeadRead::Bad(e)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(HeadRead::TimedOut);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(HeadRead::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The `Host` values the admin listener answers (`--admin-hosts` and the
/// built-in ones), compared without port, case-insensitively.
#[derive(Debug, Clone)]
pub(super) struct AllowedHosts {
    names: Vec<String>,
    any: bool,
    admin_ip: Option<IpAddr>,
}

impl AllowedHosts {
    pub(super) fn new(configured: &[String], admin: Option<SocketAddr>) -> AllowedHosts {
        AllowedHosts {
            names: configured.iter().map(|h| normalize(h)).collect(),
            any: configured.iter().any(|h| h == "*"),
            admin_ip: admin.map(|a| a.ip()),
        }
    }

    /// Whether a request naming `host` (`None`: HTTP/1.0 without Host) that
    /// arrived on local address `local` is answered. Accepted: `localhost`,
    /// a loopback address, the address the connection arrived on, the
    /// configured `--admin` address, and the `--admin-hosts` names (`*` is
    /// any). The port is not compared (a port forward changes it).
    pub(super) fn allows(&self, host: Option<&str>, local: Option<SocketAddr>) -> bool {
        let Some(host) = host else {
            return true;
        };
        if self.any {
            return true;
        }
        let name = normalize(host);
        if name == "localhost" || self.names.contains(&name) {
            return true;
        }
        match name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => {
                ip.is_loopback()
                    || Some(ip) == local.map(|l| l.ip())
                    || Some(ip) == self.admin_ip
                    || is_mapped(ip, local)
            }
            Err(_) => false,
        }
    }
}

/// An IPv4 host reaching a dual-stack listener shows up as `::ffff:a.b.c.d`.
fn is_mapped(ip: IpAddr, local: Option<SocketAddr>) -> bool {
    match (ip, local.map(|l| l.ip())) {
        (IpAddr::V4(v4), Some(IpAddr::V6(l))) => l.to_ipv4_mapped() == Some(v4),
        _ => false,
    }
}

/// The host part of a `Host` value or `--admin-hosts` entry, lower-cased,
/// without port or trailing dot; an IPv6 literal keeps its brackets.
fn normalize(host: &str) -> String {
    let host = host.trim();
    let name = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(configured: &[&str], host: &str) -> bool {
        let configured: Vec<String> = configured.iter().map(|s| s.to_string()).collect();
        let admin: SocketAddr = "10.1.2.3:9090".parse().unwrap();
        let local: SocketAddr = "192.168.7.8:9090".parse().unwrap();
        AllowedHosts::new(&configured, Some(admin)).allows(Some(host), Some(local))
    }

    #[test]
    fn host_names_the_listener() {
        for h in [
            "localhost",
            "LOCALHOST:9090",
            "localhost.",
            "127.0.0.1:9090",
            "127.0.0.2",
            "[::1]:9090",
            "[::1]",
            "192.168.7.8:9090",
            "192.168.7.8:12345",
            "10.1.2.3:9090",
        ] {
            assert!(allowed(&[], h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:9090",
            "localhost.evil.example",
            "192.168.7.9:9090",
            "[::2]:9090",
            "",
            "127.0.0.1.evil.example",
        ] {
            assert!(!allowed(&[], h), "{h}");
        }
    }

    #[test]
    fn configured_names() {
        let list = ["Admin.Internal", "[fd00::1]", "ops.example:9090"];
        assert!(allowed(&list, "admin.internal:9090"));
        assert!(allowed(&list, "ADMIN.INTERNAL"));
        assert!(allowed(&list, "[fd00::1]:9090"));
        assert!(allowed(&list, "ops.example:8080"));
        assert!(!allowed(&list, "internal"));
        assert!(allowed(&["*"], "anything.example"));
    }

    #[test]
    fn http10_without_host_and_mapped_addresses() {
        let hosts = AllowedHosts::new(&[], None);
        assert!(hosts.allows(None, None));
        let local: SocketAddr = "[::ffff:10.0.0.5]:9090".parse().unwrap();
        assert!(hosts.allows(Some("10.0.0.5:9090"), Some(local)));
        assert!(!hosts.allows(Some("10.0.0.6:9090"), Some(local)));
    }

    #[test]
    fn slots_fill_general_then_probe() {
        let s = Slots::default();
        for _ in 0..MAX_ADMIN_CONNS {
            assert_eq!(s.take(), Some(Slot::General));
        }
        for _ in 0..MAX_PROBE_CONNS {
            assert_eq!(s.take(), Some(Slot::Probe));
        }
        assert_eq!(s.take(), None);
        s.release(Slot::Probe);
        assert_eq!(s.take(), Some(Slot::Probe));
        s.release(Slot::General);
        assert_eq!(s.take(), Some(Slot::General));
        assert!(Slot::Probe.serves("/healthz") && !Slot::Probe.serves("/connections"));
        assert!(Slot::General.serves("/connections"));
    }
}

//! Readings from Switchboard's admin listener (`/metrics`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The gauges the leak and detection checks look at.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Gauges {
    pub receive: u64,
    pub request: u64,
    pub open_fds: u64,
    /// Sessions, online and held (`switchboard_sessions`, both states).
    pub sessions: u64,
    /// Timer wheel entries, summed over the workers.
    pub timers: u64,
    /// Retained message bytes (`switchboard_retained_bytes`).
    pub retained_bytes: u64,
}

impl Gauges {
    pub fn connections(&self) -> u64 {
        self.receive + self.request
    }
}

/// `GET /metrics` on the admin listener.
pub fn metrics(admin: SocketAddr) -> std::io::Result<Gauges> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let mut g = Gauges::default();
    for l in body.lines() {
        let val = |l: &str| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        };
        if l.starts_with("switchboard_connections{kind=\"receive\"}") {
            g.receive = val(l);
        } else if l.starts_with("switchboard_connections{kind=\"request\"}") {
            g.request = val(l);
        } else if l.starts_with("switchboard_process_open_fds") {
            g.open_fds = val(l);
        } else if l.starts_with("switchboard_sessions{") {
            g.sessions += val(l);
        } else if l.starts_with("switchboard_timer_wheel_entries{") {
            g.timers += val(l);
        } else if l.starts_with("switchboard_retained_bytes ") {
            g.retained_bytes = val(l);
        }
    }
    Ok(g)
}

//! Wire shapes of the systems the bench drives: Switchboard, nginx + nchan,
//! Redis pub/sub and Mosquitto (MQTT 3.1.1), over HTTP/SSE or their own
//! protocol and over WebSocket (the framing is in `crate::ws`). Request
//! builders and incremental stream parsers, shared by the `idle`, `relay`,
//! `churn` and `detect` scenarios.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{SystemTime, UNIX_EPOCH};

use mio::net::TcpStream;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use switchboard::auth::{self, Role};

use crate::{mqtt, ws};

pub use crate::target::{Target, Transport};

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A bearer token for Switchboard client `client` of `account`.
pub fn token(secret: &str, account: &str, client: &str) -> String {
    match auth::sign(
        secret.as_bytes(),
        account,
        client,
        Role::Agent,
        now_secs(),
        24 * 3600,
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("switchboard-bench: cannot sign a token: {}", e.message());
            std::process::exit(2);
        }
    }
}

/// The request that opens a receive stream / subscription for `name`.
pub fn receive_request(
    t: Target,
    server: SocketAddr,
    secret: &str,
    account: &str,
    name: &str,
) -> Vec<u8> {
    match t {
        Target::Switchboard => format!(
            "GET /v1/receive HTTP/1.1\r\nHost: {server}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
            token(secret, account, name)
        )
        .into_bytes(),
        Target::Nchan => format!(
            "GET /sub/{name} HTTP/1.1\r\nHost: {server}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .into_bytes(),
        Target::Redis => format!("SUBSCRIBE {name}\r\n").into_bytes(),
        Target::Mosquitto => {
            let mut out = mqtt::connect(name);
            mqtt::subscribe(&mut out, 1, name);
            out
        }
        Target::SwitchboardWs => ws::upgrade_request(
            "/v1/connect",
            &server.to_string(),
            &format!(
                "Authorization: Bearer {}\r\n",
                token(secret, account, name)
            ),
        ),
        Target::NchanWs => ws::upgrade_request(&format!("/ws/{name}"), &server.to_string(), ""),
        Target::MosquittoWs => {
            // CONNECT and SUBSCRIBE follow the upgrade request at once, one
            // binary frame each (Mosquitto reads what follows the request as
            // frames), as the TCP form writes them at once.
            let mut out = ws::upgrade_request(
                "/mqtt",
                &server.to_string(),
                "Sec-WebSocket-Protocol: mqtt\r\n",
            );
            ws::push_frame(&mut out, ws::OP_BINARY, &mqtt::connect(name), ws::mask_key(0));
            let mut sub = Vec::new();
            mqtt::subscribe(&mut sub, 1, name);
            ws::push_frame(&mut out, ws::OP_BINARY, &sub, ws::mask_key(1));
            out
        }
    }
}

/// What a sender writes first on a new connection: MQTT's `CONNECT` (client
/// id `name`); Switchboard's WebSocket upgrade (to `host`, with the sender's
/// `Authorization` header line `auth`); nothing for the others.
pub fn sender_hello(t: Target, name: &str, host: &str, auth: &str) -> Vec<u8> {
    match t {
        Target::Mosquitto => mqtt::connect(name),
        Target::SwitchboardWs => ws::upgrade_request("/v1/connect", host, auth),
        _ => Vec::new(),
    }
}

/// Appends one send / publish of `body` to `to` on a keep-alive connection.
/// `auth` is the sender's `Authorization` header line (Switchboard only);
/// `seq` numbers the sender's messages (MQTT packet ids).
pub fn push_send(
    t: Target,
    out: &mut Vec<u8>,
    server: &str,
    auth: &str,
    to: &str,
    body: &[u8],
    seq: u64,
) {
    match t {
        Target::SwitchboardWs => {
            // The sequence number is the command's `ref`.
            ws::push_send(out, to.as_bytes(), body, seq);
            return;
        }
        Target::MosquittoWs => {
            // `relay` refuses this target before anything is sent.
            debug_assert!(false, "no relay over Mosquitto's websockets listener");
            return;
        }
        Target::Mosquitto => {
            // Packet ids are 1..=65535; the window is far smaller than that.
            mqtt::publish_qos1(out, (seq % 65535) as u16 + 1, to, body);
            return;
        }
        Target::Switchboard | Target::Nchan | Target::NchanWs => {
            let path: &[u8] = if t == Target::Switchboard {
                b"POST /v1/send/"
            } else {
                b"POST /pub/"
            };
            out.extend_from_slice(path);
            out.extend_from_slice(to.as_bytes());
            out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
            out.extend_from_slice(server.as_bytes());
            out.extend_from_slice(b"\r\n");
            if t == Target::Switchboard {
                out.extend_from_slice(auth.as_bytes());
            }
            out.extend_from_slice(b"Content-Type: text/plain\r\nContent-Length: ");
            push_decimal(out, body.len() as u64);
            out.extend_from_slice(b"\r\n\r\n");
        }
        Target::Redis => {
            out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n$");
            push_decimal(out, to.len() as u64);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(to.as_bytes());
            out.extend_from_slice(b"\r\n$");
            push_decimal(out, body.len() as u64);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
            return;
        }
    }
    out.extend_from_slice(body);
}

/// The position of the first `needle` in `hay` (`None` for an empty needle).
/// SIMD-accelerated (`memchr::memmem`): the generator scans every received
/// SSE event for its end, and a byte-by-byte search of 64 KB events made it
/// pay more per message for SSE systems than for length-prefixed protocols.
/// The searchers of the needles the generator looks for on every message are
/// built once (building one per call was ~5% of the generator's CPU at 64 B).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    static BLANK_LINE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));
    static HEAD_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\r\n\r\n"));
    static MARKER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"@@"));
    match needle {
        b"" => None,
        b"\n\n" => BLANK_LINE.find(hay),
        b"\r\n\r\n" => HEAD_END.find(hay),
        b"@@" => MARKER.find(hay),
        _ => memchr::memmem::find(hay, needle),
    }
}

/// Appends `n` in decimal (the per-message request builders use it instead
/// of `write!`, whose formatting machinery was ~8% of the generator's CPU).
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Result of checking the start of a receive stream.
pub enum HeadCheck {
    /// Need more bytes.
    More,
    /// The subscription is established; the stream continues at byte offset `usize`.
    Ready(usize),
    Bad(String),
}

/// Whether the bytes received so far on a new receive connection show an
/// established subscription.
pub fn check_ready(t: Target, buf: &[u8]) -> HeadCheck {
    match t {
        Target::Switchboard | Target::Nchan => {
            let Some(end) = find(buf, b"\r\n\r\n") else {
                return HeadCheck::More;
            };
            let status = buf
                .get(9..12)
                .and_then(|s| std::str::from_utf8(s).ok())
                .unwrap_or("???");
            if !buf.starts_with(b"HTTP/1.1 200") {
                return HeadCheck::Bad(format!("status {status}"));
            }
            if t == Target::Nchan {
                return HeadCheck::Ready(end + 4);
            }
            match find(&buf[end..], b"event: ready") {
                Some(p) => {
                    // Skip to the end of the ready event.
                    let from = end + p;
                    match find(&buf[from..], b"\n\n") {
                        Some(q) => HeadCheck::Ready(from + q + 2),
                        None => HeadCheck::More,
                    }
                }
                None => HeadCheck::More,
            }
        }
        Target::Mosquitto => mqtt::check_subscribed(buf),
        Target::SwitchboardWs | Target::NchanWs | Target::MosquittoWs => ws::check_ready(t, buf),
        Target::Redis => {
            let mut p = RespParser;
            match p.next(buf) {
                Ok(Some((n, v))) => {
                    if v.first()
                        .is_some_and(|k| k.eq_ignore_ascii_case(b"subscribe"))
                    {
                        HeadCheck::Ready(n)
                    } else {
                        HeadCheck::Bad(format!(
                            "unexpected reply {:?}",
                            String::from_utf8_lossy(&buf[..n.min(80)])
                        ))
                    }
                }
                Ok(None) => HeadCheck::More,
                Err(e) => HeadCheck::Bad(e),
            }
        }
    }
}

/// Minimal RESP2 parser for the replies a subscriber / publisher sees:
/// arrays of bulk strings / integers, integers, simple strings, errors.
#[derive(Default)]
pub struct RespParser;

impl RespParser {
    /// Parses one value at the start of `buf`: `(bytes consumed, items)`; an
    /// array yields its elements, a scalar yields one item.
    #[allow(clippy::type_complexity)]
    pub fn next<'a>(&mut self, buf: &'a [u8]) -> Result<Option<(usize, Vec<&'a [u8]>)>, String> {
        let Some((n, line)) = read_line(buf, 0) else {
            return Ok(None);
        };
        match line.first() {
            Some(b'*') => {
                let count: usize = parse_num(&line[1..]).ok_or("bad array length")?;
                let mut pos = n;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    match scalar(buf, pos)? {
                        Some((m, item)) => {
                            pos = m;
                            items.push(item);
                        }
                        None => return Ok(None),
                    }
                }
                Ok(Some((pos, items)))
            }
            Some(b'-') => Err(format!("redis error: {}", String::from_utf8_lossy(line))),
            _ => match scalar(buf, 0)? {
                Some((m, item)) => Ok(Some((m, vec![item]))),
                None => Ok(None),
            },
        }
    }
}

fn read_line(buf: &[u8], from: usize) -> Option<(usize, &[u8])> {
    let rest = buf.get(from..)?;
    let p = memchr_crlf(rest)?;
    Some((from + p + 2, &rest[..p]))
}

fn memchr_crlf(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'\r' && b[i + 1] == b'\n' {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn parse_num<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

#[allow(clippy::type_complexity)]
fn scalar(buf: &[u8], pos: usize) -> Result<Option<(usize, &[u8])>, String> {
    let Some((n, line)) = read_line(buf, pos) else {
        return Ok(None);
    };
    match line.first() {
        Some(b'$') => {
            let len: i64 = parse_num(&line[1..]).ok_or("bad bulk length")?;
            if len < 0 {
                return Ok(Some((n, &buf[n..n])));
            }
            let len = len as usize;
            if buf.len() < n + len + 2 {
                return Ok(None);
            }
            Ok(Some((n + len + 2, &buf[n..n + len])))
        }
        Some(b':') | Some(b'+') => Ok(Some((n, &line[1..]))),
        Some(b'-') => Err(format!("redis error: {}", String::from_utf8_lossy(line))),
        _ => Err(format!(
            "unexpected RESP: {:?}",
            String::from_utf8_lossy(&line[..line.len().min(40)])
        )),
    }
}

/// Opens a nonblocking TCP connection to `server`, bound to `src` (port chosen
/// at connect time with IP_BIND_ADDRESS_NO_PORT) if given.
pub fn connect(server: SocketAddr, src: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    let _ = sock.set_tcp_nodelay(true);
    if let Some(ip) = src {
        set_bind_address_no_port(&sock)?;
        sock.bind(&SockAddr::from(SocketAddrV4::new(ip, 0)))?;
    }
    match sock.connect(&SockAddr::from(server)) {
        Ok(()) => {}
        Err(e)
            if e.raw_os_error() == Some(libc::EINPROGRESS)
                || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(sock)))
}

pub fn set_bind_address_no_port(sock: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Loopback source addresses 127.0.0.2, 127.0.0.3, ...
pub fn sources(n: usize) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| Ipv4Addr::new(127, 0, ((2 + i) >> 8) as u8, ((2 + i) & 0xff) as u8))
        .collect()
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the resulting soft limit.
pub fn raise_nofile() -> u64 {
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                rl.rlim_cur = rl.rlim_max;
            }
        }
        rl.rlim_cur
    }
}

pub fn err_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE) => "EMFILE".into(),
        Some(libc::ENFILE) => "ENFILE".into(),
        Some(libc::EADDRINUSE) => "EADDRINUSE".into(),
        Some(libc::EADDRNOTAVAIL) => "EADDRNOTAVAIL".into(),
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::ECONNRESET) => "ECONNRESET".into(),
        Some(libc::ETIMEDOUT) => "ETIMEDOUT".into(),
        Some(libc::EPIPE) => "EPIPE".into(),
        _ => e.to_string(),
    }
}

/// Incremental HTTP/1.1 response reader for keep-alive senders: yields the
/// status of each complete response (Content-Length or chunked bodies).
#[derive(Default)]
pub struct HttpResponses {
    buf: Vec<u8>,
}

impl HttpResponses {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete response's status code, if any.
    pub fn next(&mut self) -> Result<Option<u16>, String> {
        let Some(end) = find(&self.buf, b"\r\n\r\n") else {
            if self.buf.len() > 64 * 1024 {
                return Err("response head too long".into());
            }
            return Ok(None);
        };
        let head = &self.buf[..end];
        let status: u16 = head
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                format!(
                    "bad response {:?}",
                    String::from_utf8_lossy(&head[..head.len().min(60)])
                )
            })?;
        let mut total = end + 4;
        if let Some(cl) = header_value(head, b"content-length") {
            let n: usize = std::str::from_utf8(cl)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or("bad content-length")?;
            total += n;
            if self.buf.len() < total {
                return Ok(None);
            }
        } else if header_value(head, b"transfer-encoding")
            .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        {
            match find(&self.buf[total..], b"0\r\n\r\n") {
                Some(p) => total += p + 5,
                None => return Ok(None),
            }
        }
        self.buf.drain(..total);
        Ok(Some(status))
    }
}

/// The value of header `name` (matched without regard to case) in a response
/// head (status line and header lines, without the final blank line).
fn header_value<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        (line.get(name.len()) == Some(&b':') && line[..name.len()].eq_ignore_ascii_case(name))
            .then(|| &line[name.len() + 1..])
    })
}

/// A message body: `@@<ts_ns>,<sender>,<seq>,` padded with letters to `size` bytes.
/// Byte `k` of the padding is `b'a' + k % 26`.
pub fn make_body(out: &mut Vec<u8>, size: usize, ts_ns: u64, sender: usize, seq: u64) {
    use std::io::Write;
    /// The letters a..z repeated: 64 periods (1,664 bytes), copied in pieces
    /// (a byte at a time was half the generator's CPU time at 64 KB).
    const PAD: [u8; 26 * 64] = {
        let mut p = [0u8; 26 * 64];
        let mut i = 0;
        while i < p.len() {
            p[i] = b'a' + (i % 26) as u8;
            i += 1;
        }
        p
    };
    out.clear();
    let _ = write!(out, "@@{ts_ns},{sender},{seq},");
    out.reserve(size.saturating_sub(out.len()));
    while out.len() < size {
        let k = out.len();
        let from = k % 26;
        let n = (size - k).min(PAD.len() - from);
        out.extend_from_slice(&PAD[from..from + n]);
    }
}

/// Parses the `@@ts,sender,seq,` marker in a received event or message.
pub fn parse_marker(b: &[u8]) -> Option<(u64, usize, u64)> {
    let p = find(b, b"@@")?;
    let mut it = b[p + 2..].splitn(4, |&c| c == b',');
    let ts = parse_num(it.next()?)?;
    let s = parse_num(it.next()?)?;
    let q = parse_num(it.next()?)?;
    Some((ts, s, q))
}

/// What a receive stream's parser found.
pub enum Got {
    /// A message carrying a marker.
    Msg(u64, usize, u64),
    /// Something else (heartbeat, control event).
    Other,
}

/// Where a chunked body's decoder is ([`Dechunk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In a size line: the size so far, whether a digit was seen.
    Size(u64, bool),
    /// In a chunk extension, or after the size line's CR.
    Ext(u64),
    /// In a chunk's data: bytes left.
    Data(u64),
    /// After a chunk's data: CR, then LF.
    Cr,
    Lf,
    /// In the trailer section: whether the current line is still empty.
    Trailer(bool),
    /// Past the last chunk.
    Done,
}

/// Streaming decoder of a chunked HTTP body (Switchboard serves receive
/// streams to HTTP/1.1 clients chunked): the data of each chunk is copied
/// out in one run, the framing bytes (a size line and CRLF per write of
/// events) are looked at one by one.
#[derive(Debug, Clone)]
pub struct Dechunk(Chunk);

impl Default for Dechunk {
    fn default() -> Self {
        Dechunk(Chunk::Size(0, false))
    }
}

impl Dechunk {
    /// Appends the data in `input` to `out`.
    pub fn decode(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while let Some(&b) = input.first() {
            if let Chunk::Data(left) = self.0 {
                let n = left.min(input.len() as u64) as usize;
                out.extend_from_slice(&input[..n]);
                input = &input[n..];
                self.0 = if left == n as u64 {
                    Chunk::Cr
                } else {
                    Chunk::Data(left - n as u64)
                };
                continue;
            }
            input = &input[1..];
            self.0 = match (self.0, b) {
                (Chunk::Size(n, _), b) if b.is_ascii_hexdigit() => {
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    let n = n.checked_mul(16).ok_or("chunk size overflows")?;
                    Chunk::Size(n + d, true)
                }
                (Chunk::Size(n, true), b';' | b'\r') => Chunk::Ext(n),
                (Chunk::Size(n, true) | Chunk::Ext(n), b'\n') if n == 0 => Chunk::Trailer(true),
                (Chunk::Size(n, true) | Chunk::Ext(n), b'\n') => Chunk::Data(n),
                (Chunk::Ext(n), _) => Chunk::Ext(n),
                (Chunk::Cr, b'\r') => Chunk::Lf,
                (Chunk::Lf, b'\n') => Chunk::Size(0, false),
                (Chunk::Trailer(true), b'\n') => Chunk::Done,
                (Chunk::Trailer(_), b'\n') => Chunk::Trailer(true),
                (Chunk::Trailer(e), b'\r') => Chunk::Trailer(e),
                (Chunk::Trailer(_), _) => Chunk::Trailer(false),
                (Chunk::Done, _) => Chunk::Done,
                (state, b) => return Err(format!("bad chunk framing: {b:#x} in {state:?}")),
            };
        }
        Ok(())
    }
}

/// For a receive stream whose subscription [`check_ready`] found up at
/// offset `at` of `buf`: a decoder where the stream continues if the
/// response is chunked (its body's bytes up to `at` already decoded), else
/// `None`.
pub fn chunking_at(buf: &[u8], at: usize) -> Option<Dechunk> {
    let end = find(buf, b"\r\n\r\n")?;
    let chunked = header_value(&buf[..end], b"transfer-encoding")
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    if !chunked {
        return None;
    }
    let mut d = Dechunk::default();
    let _ = d.decode(buf.get(end + 4..at).unwrap_or_default(), &mut Vec::new());
    Some(d)
}

/// Incremental parser of a receive stream after the subscription is up: SSE
/// events (`\n\n`-terminated) or RESP `message` arrays.
pub struct StreamParser {
    target: Target,
    buf: Vec<u8>,
    scan: usize,
    /// The body is chunked (Switchboard to an HTTP/1.1 client): decoded as it is pushed.
    chunks: Option<Dechunk>,
    /// The chunk framing was malformed (reported by `drain`).
    bad: Option<String>,
}

impl StreamParser {
    pub fn new(target: Target) -> StreamParser {
        StreamParser {
            target,
            buf: Vec::new(),
            scan: 0,
            chunks: None,
            bad: None,
        }
    }

    /// Decodes what is pushed from now on with `chunks` (see [`chunking_at`]).
    pub fn set_chunking(&mut self, chunks: Option<Dechunk>) {
        self.chunks = chunks;
    }

    pub fn push(&mut self, data: &[u8]) {
        match &mut self.chunks {
            None => self.buf.extend_from_slice(data),
            Some(d) => {
                if let Err(e) = d.decode(data, &mut self.buf) {
                    self.bad.get_or_insert(e);
                }
            }
        }
    }

    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Calls `f` for every complete item; returns an error on garbage.
    pub fn drain(&mut self, mut f: impl FnMut(Got)) -> Result<(), String> {
        if let Some(e) = self.bad.take() {
            return Err(e);
        }
        let mut pos = 0;
        match self.target {
            Target::Switchboard | Target::Nchan => {
                let mut from = self.scan;
                while let Some(p) = find(&self.buf[from..], b"\n\n") {
                    let ev = &self.buf[pos..from + p];
                    match parse_marker(ev) {
                        Some((t, s, q)) => f(Got::Msg(t, s, q)),
                        None => f(Got::Other),
                    }
                    pos = from + p + 2;
                    from = pos;
                }
                // Resume the search for "\n\n" one byte before the end next time.
                self.scan = self.buf.len().saturating_sub(1).max(pos) - pos;
            }
            Target::Redis => {
                let mut p = RespParser;
                while let Some((n, items)) = p.next(&self.buf[pos..])? {
                    if items.len() == 3 && items[0] == b"message" {
                        match parse_marker(items[2]) {
                            Some((t, s, q)) => f(Got::Msg(t, s, q)),
                            None => f(Got::Other),
                        }
                    } else {
                        f(Got::Other);
                    }
                    pos += n;
                }
            }
            Target::SwitchboardWs | Target::NchanWs | Target::MosquittoWs => {
                pos = ws::drain(self.target, &self.buf, &mut f)?;
            }
            Target::Mosquitto => {
                while let Some((n, kind, body)) = mqtt::packet(&self.buf[pos..])? {
                    match (kind >> 4, mqtt::publish_payload(kind, body)) {
                        (3, Some(payload)) => match parse_marker(payload) {
                            Some((t, s, q)) => f(Got::Msg(t, s, q)),
                            None => f(Got::Other),
                        },
                        (3, None) => return Err("malformed MQTT PUBLISH".into()),
                        _ => f(Got::Other),
                    }
                    pos += n;
                }
            }
        }
        if pos > 0 {
            self.buf.drain(..pos);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "proto_tests.rs"]
mod tests;

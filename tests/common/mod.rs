//! Helpers for the end-to-end tests: start the real binary, make tokens, and
//! speak HTTP and SSE over real sockets. Everything waits for conditions with
//! a deadline; nothing sleeps a fixed time.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchboard::auth::{self, Role};

/// The secret every test node uses.
pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// How long any single wait may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running `switchboard serve` process.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin listener (started on an ephemeral port unless `extra` sets `--admin`).
    pub admin: Option<SocketAddr>,
    /// Everything the node wrote to stderr so far (its log).
    pub log: Arc<Mutex<String>>,
}

impl Node {
    /// Starts the binary on an ephemeral port with `extra` flags.
    pub fn start(extra: &[&str]) -> Node {
        Node::start_env(extra, &[])
    }

    /// [`Node::start`] with extra environment variables for the node.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Node {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.envs(env.iter().copied());
        cmd.arg("serve").arg("--listen").arg("127.0.0.1:0");
        let own_admin = extra
            .iter()
            .any(|a| *a == "--admin" || a.starts_with("--admin="));
        if !own_admin {
            cmd.arg("--admin").arg("127.0.0.1:0");
        }
        cmd.args(extra);
        cmd.env("SWITCHBOARD_SECRET", SECRET)
            .env_remove("SWITCHBOARD_SECRET_FILE");
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn switchboard");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        spawn_log_reader(stderr, log.clone());
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("node exited before listening")
                .expect("read stdout");
            if let Some(rest) = line.strip_prefix("switchboard listening on http://") {
                break rest.trim().parse().expect("listen address");
            }
        };
        let mut admin = None;
        if !extra.contains(&"off") {
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("switchboard admin on http://") {
                    admin = rest.trim().parse().ok();
                    break;
                }
            }
        }
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Node {
            child,
            addr,
            admin,
            log,
        }
    }

    /// Waits until the node's log contains `needle`.
    pub fn wait_log(&self, needle: &str) -> bool {
        wait_until(WAIT, || self.log.lock().unwrap().contains(needle))
    }

    /// Sends SIGTERM-free kill and reaps.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_log_reader(stderr: ChildStderr, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(stderr);
        let mut line = String::new();
        while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if std::env::var_os("SWITCHBOARD_TEST_LOG").is_some() {
                eprint!("node: {line}");
            }
            log.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
}

/// Polls `cond` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A valid token for `client` in `account`.
pub fn token(account: &str, client: &str, role: Role) -> String {
    auth::sign(SECRET.as_bytes(), account, client, role, now_secs(), 3600).expect("sign")
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON: {e}: {:?}", self.data))
    }
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// In the size line: the size so far, and whether a digit was seen.
    Size(u64, bool),
    /// In a chunk extension (ignored) or after the size line's CR.
    Ext(u64),
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// After a chunk's data: expecting CR, then LF.
    DataCr,
    DataLf,
    /// In the trailer section: whether the current line is still empty.
    Trailer(bool),
    /// The last chunk and its trailer section were read.
    Done,
}

/// Decodes an HTTP/1.1 chunked body read from `inner` (streaming: the data
/// of a chunk is handed out as it arrives, as client libraries do). A read
/// timeout of `inner` leaves the state as it was; the end of `inner` is the
/// end of the body (a stream the server cut); malformed framing is an
/// `InvalidData` error.
pub struct Dechunk<R: BufRead> {
    inner: R,
    state: ChunkState,
}

impl<R: BufRead> Dechunk<R> {
    pub fn new(inner: R) -> Self {
        Dechunk {
            inner,
            state: ChunkState::Size(0, false),
        }
    }

    /// True once the last chunk (`0\r\n\r\n`) was read: the server ended the stream cleanly.
    pub fn ended(&self) -> bool {
        self.state == ChunkState::Done
    }
}

impl<R: BufRead> Read for Dechunk<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        loop {
            if self.state == ChunkState::Done || out.is_empty() {
                return Ok(0);
            }
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Ok(0);
            }
            if let ChunkState::Data(left) = self.state {
                let n = (left.min(buf.len() as u64) as usize).min(out.len());
                out[..n].copy_from_slice(&buf[..n]);
                self.inner.consume(n);
                self.state = if left == n as u64 {
                    ChunkState::DataCr
                } else {
                    ChunkState::Data(left - n as u64)
                };
                return Ok(n);
            }
            let b = buf[0];
            self.inner.consume(1);
            self.state = match (self.state, b) {
                (ChunkState::Size(n, _), b) if b.is_ascii_hexdigit() => {
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    let n = n
                        .checked_mul(16)
                        .ok_or_else(|| bad("chunk size overflows"))?;
                    ChunkState::Size(n + d, true)
                }
                (ChunkState::Size(n, true), b';' | b'\r') => ChunkState::Ext(n),
                (ChunkState::Size(n, true), b'\n') | (ChunkState::Ext(n), b'\n') => {
                    if n == 0 {
                        ChunkState::Trailer(true)
                    } else {
                        ChunkState::Data(n)
                    }
                }
                (ChunkState::Ext(n), _) => ChunkState::Ext(n),
                (ChunkState::DataCr, b'\r') => ChunkState::DataLf,
                (ChunkState::DataLf, b'\n') => ChunkState::Size(0, false),
                (ChunkState::Trailer(empty), b'\n') if empty => ChunkState::Done,
                (ChunkState::Trailer(_), b'\n') => ChunkState::Trailer(true),
                (ChunkState::Trailer(empty), b'\r') => ChunkState::Trailer(empty),
                (ChunkState::Trailer(_), _) => ChunkState::Trailer(false),
                (state, b) => return Err(bad(&format!("bad chunk framing: {b:#x} in {state:?}"))),
            };
        }
    }
}

/// A response body as a client reads it: chunked, or as it is up to EOF.
pub enum Body<R: BufRead> {
    Plain(R),
    Chunked(Dechunk<R>),
}

impl<R: BufRead> Body<R> {
    /// The body that follows response head `head` (status line and headers) on `inner`.
    pub fn after_head(head: &str, inner: R) -> Self {
        let chunked = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("transfer-encoding")
                    && v.trim().eq_ignore_ascii_case("chunked")
            })
        });
        if chunked {
            Body::Chunked(Dechunk::new(inner))
        } else {
            Body::Plain(inner)
        }
    }

    /// True if the body is chunked and its last chunk was read.
    pub fn ended(&self) -> bool {
        matches!(self, Body::Chunked(d) if d.ended())
    }
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Body::Plain(r) => r.read(out),
            Body::Chunked(d) => d.read(out),
        }
    }
}

/// The stream's body, as the tests read it.
pub type StreamBody = BufReader<Body<BufReader<TcpStream>>>;

/// An SSE receive connection.
pub struct Receiver {
    pub stream: TcpStream,
    reader: StreamBody,
    /// Status line and headers of the response.
    pub head: String,
    /// Number of heartbeat comments seen.
    pub heartbeats: usize,
}

impl Receiver {
    /// Opens `GET /v1/receive` with `token` and optional extra headers; panics unless 200.
    pub fn open(addr: SocketAddr, token: &str, extra_headers: &[(&str, &str)]) -> Receiver {
        let (r, status) = Receiver::try_open(addr, "/v1/receive", Some(token), extra_headers);
        assert_eq!(status, 200, "receive connection refused: {}", r.head);
        r
    }

    /// Opens `GET path` and reads the response head; returns the status.
    pub fn try_open(
        addr: SocketAddr,
        path: &str,
        token: Option<&str>,
        extra_headers: &[(&str, &str)],
    ) -> (Receiver, u16) {
        let stream = TcpStream::connect(addr).expect("connect");
        Receiver::start(stream, path, token, extra_headers)
    }

    /// Opens `GET /v1/receive` on a socket with a small receive buffer
    /// (`bytes`), so that events back up in the server's buffers while the
    /// client does not read; panics unless 200.
    pub fn open_small_rcvbuf(addr: SocketAddr, token: &str, bytes: usize) -> Receiver {
        let stream = connect_small_rcvbuf(addr, bytes);
        let (r, status) = Receiver::start(stream, "/v1/receive", Some(token), &[]);
        assert_eq!(status, 200, "receive connection refused: {}", r.head);
        r
    }

    /// Sends `GET path` on `stream` and reads the response head.
    fn start(
        mut stream: TcpStream,
        path: &str,
        token: Option<&str>,
        extra_headers: &[(&str, &str)],
    ) -> (Receiver, u16) {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in extra_headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("read response head");
            if n == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let reader = BufReader::new(Body::after_head(&head, reader));
        (
            Receiver {
                stream,
                reader,
                head,
                heartbeats: 0,
            },
            status,
        )
    }

    /// The next event (skipping heartbeats and `retry:` fields), or `None` on EOF/timeout.
    pub fn next_event(&mut self) -> Option<Event> {
        self.next_event_within(WAIT)
    }

    pub fn next_event_within(&mut self, timeout: Duration) -> Option<Event> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut ev = Event::default();
        let mut have = false;
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if have {
                    return Some(ev);
                }
                continue;
            }
            if line.starts_with(':') {
                self.heartbeats += 1;
                continue;
            }
            let (field, value) = line
                .split_once(':')
                .map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)))
                .unwrap_or((line, ""));
            match field {
                "id" => {
                    ev.id = Some(value.to_string());
                    have = true;
                }
                "event" => {
                    ev.event = value.to_string();
                    have = true;
                }
                "data" => {
                    if !ev.data.is_empty() {
                        ev.data.push('\n');
                    }
                    ev.data.push_str(value);
                    have = true;
                }
                _ => {}
            }
        }
    }

    /// Reads events until one named `name` arrives; panics if the stream ends first.
    pub fn expect_event(&mut self, name: &str) -> Event {
        loop {
            let ev = self
                .next_event()
                .unwrap_or_else(|| panic!("stream ended while waiting for event {name:?}"));
            if ev.event == name {
                return ev;
            }
        }
    }

    /// Waits until a heartbeat comment arrives; true if one did within `timeout`.
    pub fn wait_heartbeat(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return false,
                Ok(_) => {
                    if line.starts_with(':') {
                        self.heartbeats += 1;
                        return true;
                    }
                }
            }
        }
    }

    /// True if the stream is chunked and ended with its last chunk (a clean end).
    pub fn ended_cleanly(&self) -> bool {
        self.reader.get_ref().ended()
    }

    /// True if the server closed the stream (EOF) within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let end = Instant::now() + timeout;
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
            if Instant::now() > end {
                return false;
            }
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON: {e}: {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// A connection to `addr` with a receive buffer of `bytes` (set before
/// connecting, so the window the server sees is small from the start).
fn connect_small_rcvbuf(addr: SocketAddr, bytes: usize) -> TcpStream {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    sock.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    sock.connect(&addr.into()).expect("connect");
    sock.into()
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Http {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Http {
    pub fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Http { stream, reader }
    }

    /// Connects from the local address `src` (another loopback address, say
    /// 127.0.0.2, to be a second client machine).
    pub fn connect_from(addr: SocketAddr, src: std::net::IpAddr) -> Http {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
        sock.bind(&SocketAddr::new(src, 0).into())
            .expect("bind the source address");
        sock.connect(&addr.into()).expect("connect");
        let stream: TcpStream = sock.into();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Http { stream, reader }
    }

    /// Connects with a small receive buffer (`bytes`), so that the server's
    /// answers back up in its own buffers while the client does not read.
    pub fn connect_small_rcvbuf(addr: SocketAddr, bytes: usize) -> Http {
        let stream = connect_small_rcvbuf(addr, bytes);
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Http { stream, reader }
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    /// Reads one response (Content-Length bodies only); `None` on EOF.
    pub fn read_response(&mut self) -> Option<Response> {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).ok()?;
            if n == 0 {
                return None;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let mut r = Response {
            status,
            head,
            body: Vec::new(),
        };
        let len: usize = r
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        r.body = vec![0; len];
        self.reader.read_exact(&mut r.body).ok()?;
        Some(r)
    }

    /// Sends a request with `token` and `body` and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Response {
        // Host names the address connected to, as real clients do (the admin
        // listener refuses other names).
        let host = self
            .stream
            .peer_addr()
            .map_or_else(|_| "test".to_string(), |a| a.to_string());
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes);
        self.read_response().expect("response")
    }

    /// True if the server closed the connection within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// One-shot request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Response {
    Http::connect(addr).request(method, path, token, body)
}

/// POST /v1/send/<to> as `token`.
pub fn send(addr: SocketAddr, token: &str, to: &str, body: &str) -> Response {
    request(
        addr,
        "POST",
        &format!("/v1/send/{to}"),
        Some(token),
        body.as_bytes(),
    )
}

/// Sends and asserts 202; returns the id the sender got.
pub fn send_ok(addr: SocketAddr, token: &str, to: &str, body: &str) -> String {
    let r = send(addr, token, to, body);
    assert_eq!(
        r.status,
        202,
        "send {body:?} to {to} via {addr}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["id"].as_str().expect("id").to_string()
}

/// Sends one message per body to `to` as `token`, all pipelined in one write
/// on one keep-alive connection, and checks that every one is answered 202.
/// The text of one `POST /v1/send/<to>` request carrying `body`, for
/// pipelining several in one write.
pub fn send_text(to: &str, token: &str, body: &str) -> String {
    format!(
        "POST /v1/send/{to} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

pub fn send_burst(addr: SocketAddr, token: &str, to: &str, bodies: &[String]) {
    let batch: String = bodies.iter().map(|b| send_text(to, token, b)).collect();
    let mut http = Http::connect(addr);
    http.send_raw(batch.as_bytes());
    for i in 1..=bodies.len() {
        let r = http
            .read_response()
            .unwrap_or_else(|| panic!("no answer to send {i} of the burst"));
        assert_eq!(r.status, 202, "answer to send {i} of the burst");
    }
}

// ---------------------------------------------------------------------------
// Helpers added for the relay / resume / errors suites.
// ---------------------------------------------------------------------------

/// The `clients` array of `GET /v1/clients` as `token`.
pub fn clients(addr: SocketAddr, token: &str) -> Vec<serde_json::Value> {
    let r = request(addr, "GET", "/v1/clients", Some(token), b"");
    assert_eq!(
        r.status,
        200,
        "GET /v1/clients: {} {:?}",
        r.head,
        String::from_utf8_lossy(&r.body)
    );
    r.json()["clients"]
        .as_array()
        .expect("clients array")
        .clone()
}

/// The `state` of `client` in `token`'s account, or `None` if it is not listed.
pub fn client_state(addr: SocketAddr, token: &str, client: &str) -> Option<String> {
    clients(addr, token)
        .iter()
        .find(|c| c["client"] == client)
        .map(|c| c["state"].as_str().expect("state is a string").to_string())
}

/// Waits until `client` shows `state` in `/v1/clients`; true if it did within `timeout`.
pub fn wait_state(
    addr: SocketAddr,
    token: &str,
    client: &str,
    state: &str,
    timeout: Duration,
) -> bool {
    wait_until(timeout, || {
        client_state(addr, token, client).as_deref() == Some(state)
    })
}

/// Writes `bytes` on a fresh connection and reads one response.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (Option<Response>, Http) {
    let mut h = Http::connect(addr);
    h.send_raw(bytes);
    let r = h.read_response();
    (r, h)
}

/// Asserts `r` is a JSON error answer with `status` and error code `code`.
pub fn assert_error(r: &Response, status: u16, code: &str) {
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(
        r.status, status,
        "unexpected status; head {:?} body {body:?}",
        r.head
    );
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "error content-type {ct:?} (body {body:?})"
    );
    let j = r.json();
    assert_eq!(j["error"], code, "error code in {body}");
    let msg = j["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no string \"message\" in {body}"));
    assert!(!msg.is_empty(), "empty message in {body}");
}

/// Splits an event id `<epoch hex>-<seq>`; panics if it is not of that form.
pub fn parse_id(id: &str) -> (String, u64) {
    let (e, s) = id
        .split_once('-')
        .unwrap_or_else(|| panic!("event id {id:?} has no '-'"));
    assert!(
        !e.is_empty()
            && e.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "epoch part of {id:?} is not lowercase hex"
    );
    let seq = s
        .parse()
        .unwrap_or_else(|_| panic!("sequence part of {id:?} is not a number"));
    (e.to_string(), seq)
}

impl Receiver {
    /// Reads the `ready` event that starts every stream and returns its data.
    pub fn ready(&mut self) -> serde_json::Value {
        let ev = self
            .next_event()
            .expect("stream ended before the ready event");
        assert_eq!(ev.event, "ready", "first event is not ready: {ev:?}");
        assert!(ev.id.is_none(), "ready event carries an id: {ev:?}");
        ev.json()
    }

    /// Reads the next event and asserts it is a message from `from` with text `body`; returns it.
    pub fn expect_message(&mut self, from: &str, body: &str) -> Event {
        let ev = self
            .next_event()
            .unwrap_or_else(|| panic!("stream ended while waiting for message {body:?}"));
        assert_eq!(ev.event, "message", "expected message {body:?}, got {ev:?}");
        let j = ev.json();
        assert_eq!(j["from"], from, "sender of {ev:?}");
        assert_eq!(j["body"], body, "body of {ev:?}");
        assert!(ev.id.is_some(), "message without id: {ev:?}");
        ev
    }
}

/// The worker `/connections` shows for the connection from `local` (waits
/// until the connection is listed).
pub fn worker_of(node: &Node, local: SocketAddr) -> u64 {
    let mut worker = None;
    let found = wait_until(WAIT, || {
        let r = request(node.admin.unwrap(), "GET", "/connections", None, b"");
        worker = r.json()["connections"].as_array().and_then(|l| {
            l.iter()
                .find(|c| c["remote"] == local.to_string())
                .and_then(|c| c["worker"].as_u64())
        });
        worker.is_some()
    });
    assert!(found, "connection from {local} not in /connections");
    worker.unwrap()
}

/// The test decoder against chunked bodies split at every byte boundary,
/// with extensions, trailers and upper-case hex (every test crate that
/// includes these helpers runs it; it takes microseconds).
#[test]
fn dechunk_is_a_real_parser() {
    let wire = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nafter";
    for cut in 0..=wire.len() {
        // Delivered in two pieces, as two reads of a socket would.
        struct Two<'a>(Vec<&'a [u8]>);
        impl Read for Two<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let Some(first) = self.0.first_mut() else {
                    return Ok(0);
                };
                let n = first.len().min(out.len());
                out[..n].copy_from_slice(&first[..n]);
                *first = &first[n..];
                if first.is_empty() {
                    self.0.remove(0);
                }
                Ok(n)
            }
        }
        let parts = [&wire[..cut], &wire[cut..]];
        let two = Two(parts.into_iter().filter(|p| !p.is_empty()).collect());
        let mut d = Dechunk::new(BufReader::with_capacity(3, two));
        let mut got = Vec::new();
        d.read_to_end(&mut got).expect("valid");
        assert_eq!(got, b"hello 0123456789", "cut {cut}");
        assert!(d.ended());
    }
    for bad in [&b"x\r\n"[..], b"\r\n", b"3\r\nabcX"] {
        let mut d = Dechunk::new(BufReader::new(bad));
        assert!(d.read_to_end(&mut Vec::new()).is_err(), "{bad:?}");
    }
    // Cut off mid-stream: the body ends, not cleanly.
    let mut d = Dechunk::new(BufReader::new(&b"5\r\nhel"[..]));
    let mut got = Vec::new();
    d.read_to_end(&mut got).expect("ends");
    assert_eq!((got.as_slice(), d.ended()), (&b"hel"[..], false));
}

/// POST /v1/send/<to> as `token` with `Content-Type: <content_type>` and `body`.
pub fn send_typed(
    addr: SocketAddr,
    token: &str,
    to: &str,
    content_type: &str,
    body: &[u8],
) -> Response {
    let mut req = format!(
        "POST /v1/send/{to} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let mut http = Http::connect(addr);
    http.send_raw(&req);
    http.read_response().expect("response")
}

/// Sends `json` with `curl --json`-like headers (`Content-Type:
/// application/json`, the body from a file, byte for byte) as `token` to
/// `to`; returns the id of the 202 answer.
pub fn curl_send_json(addr: SocketAddr, token: &str, to: &str, json: &str) -> String {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-json-{}-{}",
        std::process::id(),
        switchboard::ids::random_u64()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("body.json");
    std::fs::write(&file, json).expect("write body");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .args(["-H", "Content-Type: application/json; charset=utf-8"])
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("http://{addr}/v1/send/{to}"))
        .output()
        .expect("run curl");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "curl failed: {text}");
    let (answer, code) = text.rsplit_once('\n').expect("status line");
    assert_eq!(code, "202", "curl send: {answer}");
    let v: serde_json::Value = serde_json::from_str(answer).expect("JSON answer");
    v["id"].as_str().expect("id").to_string()
}

impl Receiver {
    /// Reads the next event and asserts it is a message from `from` whose
    /// JSON body arrived as the value `json` (under `"json"`, no `body`), in
    /// one `data:` line whose text is `compact` exactly; returns it.
    pub fn expect_json_message(
        &mut self,
        from: &str,
        json: &serde_json::Value,
        compact: &str,
    ) -> Event {
        let ev = self
            .next_event()
            .unwrap_or_else(|| panic!("stream ended while waiting for JSON message {json}"));
        assert_eq!(ev.event, "message", "expected a JSON message, got {ev:?}");
        assert!(!ev.data.contains('\n'), "more than one data line: {ev:?}");
        let j = ev.json();
        assert_eq!(j["from"], from, "sender of {ev:?}");
        assert_eq!(&j["json"], json, "value of {ev:?}");
        assert!(
            j.get("body").is_none() && j.get("body_b64").is_none(),
            "{ev:?}"
        );
        let want = format!(
            "{{\"from\":{},\"json\":{compact}}}",
            serde_json::to_string(from).expect("JSON string")
        );
        assert_eq!(ev.data, want, "not the compact form");
        assert!(ev.id.is_some(), "message without id: {ev:?}");
        ev
    }
}

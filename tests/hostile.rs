//! Hostile clients: slowloris, oversized and malformed requests, forged
//! tokens, receivers that stop reading, connection caps, descriptor
//! exhaustion and connection churn. Every test also checks that other,
//! well-behaved connections are unaffected.
//!
//! The tests run one at a time (a shared lock): several of them measure
//! latency, CPU time or descriptor counts, which parallel tests would disturb.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use serde_json::json;
use switchboard::auth::Role;

const ACCT: &str = "acme";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn console_tok() -> String {
    token(ACCT, "console-1", Role::Console)
}

/// Opens `client`'s stream in `ACCT` and reads `ready`.
fn open_rx(node: &Node, client: &str) -> Receiver {
    let mut rx = Receiver::open(node.addr, &token(ACCT, client, Role::Agent), &[]);
    rx.ready();
    rx
}

/// Sends `body` to `to` and asserts it reaches `rx` within `limit`; returns the latency.
fn arrives_within(
    node: &Node,
    rx: &mut Receiver,
    to: &str,
    body: &str,
    limit: Duration,
) -> Duration {
    let t = Instant::now();
    let r = send(node.addr, &console_tok(), to, body);
    assert_eq!(
        r.status,
        202,
        "send {body:?}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let ev = rx
        .next_event_within(limit + Duration::from_secs(2))
        .unwrap_or_else(|| panic!("healthy receiver got nothing for {body:?}"));
    let el = t.elapsed();
    assert_eq!(ev.event, "message", "{ev:?}");
    assert_eq!(ev.json()["body"], body, "{ev:?}");
    assert!(el < limit, "message {body:?} took {el:?} (limit {limit:?})");
    el
}

/// The node's /metrics text.
fn metrics_text(node: &Node) -> String {
    let r = request(node.admin.expect("admin"), "GET", "/metrics", None, b"");
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).expect("utf-8 metrics")
}

/// The value of the sample `series` (name with labels exactly as printed).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no sample {series} in metrics"))
}

fn metric_now(node: &Node, series: &str) -> f64 {
    metric(&metrics_text(node), series)
}

fn assert_no_error_log(node: &Node) {
    let log = node.log.lock().unwrap().clone();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("[ERROR]")).collect();
    assert!(errors.is_empty(), "node logged errors: {errors:#?}");
}

/// Asserts a JSON error answer that says `Connection: close`, and that the server closes.
fn assert_closing_error(r: &Response, h: &mut Http, status: u16, code: &str) {
    assert_error(r, status, code);
    assert_eq!(
        r.header("connection")
            .map(|v| v.to_ascii_lowercase())
            .as_deref(),
        Some("close"),
        "{}",
        r.head
    );
    assert!(
        h.closed_within(Duration::from_secs(3)),
        "connection not closed after {status} {code}"
    );
}

// ---------------------------------------------------------------------------
// 1. Slowloris
// ---------------------------------------------------------------------------

/// Runs a client on a thread: connects, optionally drips `prefix` and then one
/// byte every 200 ms, and returns how long after connecting the server closed.
fn slow_client(addr: SocketAddr, drip: bool) -> std::thread::JoinHandle<Option<Duration>> {
    std::thread::spawn(move || {
        let t = Instant::now();
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let head = b"GET /v1/receive HTTP/1.1\r\nHost: t\r\nX-Slow: ";
        let mut i = 0;
        let mut buf = [0u8; 1024];
        while t.elapsed() < Duration::from_secs(6) {
            if drip {
                let b = if i < head.len() { head[i] } else { b'a' };
                i += 1;
                let _ = s.write_all(&[b]);
            }
            match s.read(&mut buf) {
                Ok(0) => return Some(t.elapsed()),
                Ok(_) => {} // an answer: keep reading until EOF
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Some(t.elapsed()),
            }
        }
        None
    })
}

#[test]
fn slowloris_is_cut_at_the_handshake_timeout() {
    let _g = serial();
    let node = Node::start(&["--workers", "2", "--handshake-timeout", "1s"]);
    let mut rx = open_rx(&node, "agent-1");

    let dripper = slow_client(node.addr, true);
    let silent = slow_client(node.addr, false);
    // While they linger, the healthy receiver keeps receiving promptly, and
    // new clients are served.
    let mut n = 0;
    let end = Instant::now() + Duration::from_secs(5);
    while !(dripper.is_finished() && silent.is_finished()) && Instant::now() < end {
        arrives_within(
            &node,
            &mut rx,
            "agent-1",
            &format!("during {n}"),
            Duration::from_millis(500),
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(150)); // pacing
    }
    let mut fresh = open_rx(&node, "agent-2");
    arrives_within(
        &node,
        &mut fresh,
        "agent-2",
        "fresh",
        Duration::from_millis(500),
    );

    let d = dripper
        .join()
        .unwrap()
        .expect("dripping connection never closed");
    let s = silent
        .join()
        .unwrap()
        .expect("silent connection never closed");
    for (what, el) in [("dripping", d), ("silent", s)] {
        assert!(
            el >= Duration::from_millis(900) && el <= Duration::from_millis(2500),
            "{what} connection closed after {el:?}, expected ~1 s"
        );
    }
    assert!(n >= 3, "only {n} health checks ran");
    let closed = metric_now(
        &node,
        "switchboard_connections_closed_total{reason=\"handshake_timeout\"}",
    );
    assert!(closed >= 2.0, "handshake_timeout closes: {closed}");
    arrives_within(
        &node,
        &mut rx,
        "agent-1",
        "after slowloris",
        Duration::from_millis(500),
    );
    assert_no_error_log(&node);
}

// ---------------------------------------------------------------------------
// 2. Oversized request line, head and body
// ---------------------------------------------------------------------------

/// Writes `prefix`, then `filler` in 1 KiB pieces (up to `total` bytes in
/// all), checking for an answer after each piece. Returns the bytes written
/// when the answer was first seen, the answer and the connection.
fn write_until_answered(
    addr: SocketAddr,
    prefix: &[u8],
    filler: &[u8],
    total: usize,
) -> (usize, Response, Http) {
    let mut h = Http::connect(addr);
    h.send_raw(prefix);
    let mut sent = prefix.len();
    let mut seen = None;
    let mut probe = [0u8; 1];
    h.stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    while sent < total {
        let mut piece = Vec::with_capacity(1024);
        while piece.len() < 1024 {
            piece.extend_from_slice(filler);
        }
        if h.stream.write_all(&piece).is_err() {
            break;
        }
        sent += piece.len();
        if let Ok(n) = h.stream.peek(&mut probe) {
            if n > 0 {
                seen = Some(sent);
                break;
            }
        }
    }
    h.stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let r = h
        .read_response()
        .expect("no answer to the oversized request");
    (seen.unwrap_or(sent), r, h)
}

#[test]
fn oversized_requests_are_refused_early() {
    let _g = serial();
    let node = Node::start(&["--workers", "2"]);
    let mut rx = open_rx(&node, "agent-1");
    let tok = console_tok();

    // 20 KiB of request line without a line end: 414 once past 8 KiB.
    let (at, r, mut h) = write_until_answered(node.addr, b"GET /", b"a", 20 * 1024);
    assert!(at <= 11 * 1024, "414 only seen after {at} bytes");
    assert_closing_error(&r, &mut h, 414, "uri_too_long");

    // A header that never ends: 431 once the head passes 16 KiB.
    let prefix = format!("GET /v1/clients HTTP/1.1\r\nAuthorization: Bearer {tok}\r\nX-Pad: ");
    let (at, r, mut h) = write_until_answered(node.addr, prefix.as_bytes(), b"p", 32 * 1024);
    assert!(at <= 19 * 1024, "431 only seen after {at} bytes");
    assert_closing_error(&r, &mut h, 431, "headers_too_large");

    // Header after header: 431 once past 64 fields (each filler piece holds 1 KiB of fields).
    let (at, r, mut h) = write_until_answered(
        node.addr,
        b"GET /v1/clients HTTP/1.1\r\n",
        b"X-Many-Headers: v\r\n",
        32 * 1024,
    );
    assert!(
        at <= 4 * 1024,
        "431 (too many fields) only seen after {at} bytes"
    );
    assert_closing_error(&r, &mut h, 431, "headers_too_large");

    // A body over --max-message (default 64 KiB): 413 right after the head,
    // on a keep-alive connection that already delivered a message.
    let mut h = Http::connect(node.addr);
    assert_eq!(
        h.request("POST", "/v1/send/agent-1", Some(&tok), b"first")
            .status,
        202
    );
    rx.expect_message("console-1", "first");
    let t = Instant::now();
    h.send_raw(
        format!("POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: 10000000\r\n\r\n")
            .as_bytes(),
    );
    let r = h.read_response().expect("no 413 before the body");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "413 took {:?}",
        t.elapsed()
    );
    assert_eq!(r.status, 413);
    // What the client sends as "body" now must not be taken as a request.
    let smuggled = format!(
        "POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: 8\r\n\r\nSMUGGLED"
    );
    let _ = h.stream.write_all(smuggled.as_bytes());
    assert_closing_error(&r, &mut h, 413, "payload_too_large");

    arrives_within(
        &node,
        &mut rx,
        "agent-1",
        "after oversized",
        Duration::from_millis(500),
    );
    assert_no_error_log(&node);
}

// ---------------------------------------------------------------------------
// 3. Malformed requests
// ---------------------------------------------------------------------------

#[test]
fn malformed_requests_get_json_errors_and_are_closed() {
    let _g = serial();
    let node = Node::start(&["--workers", "2"]);
    let mut rx = open_rx(&node, "agent-1");
    let tok = console_tok();
    // Appended to every case: if the server lost track of message framing it
    // would deliver this to agent-1.
    let smuggled = format!(
        "POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: 8\r\n\r\nSMUGGLED"
    );
    let post = |extra: &str, body: &str| -> Vec<u8> {
        format!("POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n{extra}\r\n{body}").into_bytes()
    };
    let chunked = "Transfer-Encoding: chunked\r\n";
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("bad method", format!("G@T /v1/clients HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("chunk size zz", post(chunked, "zz\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunked_body"),
        ("chunk size -1", post(chunked, "-1\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunked_body"),
        ("18-digit chunk size", post(chunked, "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunked_body"),
        ("17 zero digits", post(chunked, "00000000000000005\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunked_body"),
        ("chunk line over 4 KiB", post(chunked, &format!("5;ext={}\r\nhello\r\n0\r\n\r\n", "e".repeat(5000))), 400, "bad_chunked_body"),
        ("trailers over 4 KiB", post(chunked, &format!("5\r\nhello\r\n0\r\nX-Trailer: {}\r\n\r\n", "t".repeat(5000))), 400, "bad_chunked_body"),
        ("missing CRLF after chunk data", post(chunked, "5\r\nhelloXX0\r\n\r\n"), 400, "bad_chunked_body"),
        ("TE then CL", post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "5\r\nhello\r\n0\r\n\r\n"), 400, "conflicting_length"),
        ("CL then TE", post("Content-Length: 18\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), 400, "conflicting_length"),
        ("duplicate differing CL", post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"), 400, "bad_content_length"),
        ("CL list with differing values", post("Content-Length: 5, 6\r\n", "hello!"), 400, "bad_content_length"),
        ("negative CL", post("Content-Length: -5\r\n", "hello"), 400, "bad_content_length"),
        ("CL overflowing u64", post("Content-Length: 99999999999999999999999\r\n", "hello"), 400, "bad_content_length"),
        ("NUL in target", format!("GET /v1/cli\0ents HTTP/1.1\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("NUL in header value", format!("GET /v1/clients HTTP/1.1\r\nAuthorization: Bearer {tok}\r\nX-A: a\0b\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("bare CR in header value", format!("GET /v1/clients HTTP/1.1\r\nX-A: a\rb\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("space before colon", post("Content-Length : 5\r\n", "hello"), 400, "malformed_request"),
        ("obs-fold continuation line", format!("GET /v1/clients HTTP/1.1\r\nX-A: a\r\n folded\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("duplicate Authorization", format!("GET /v1/clients HTTP/1.1\r\nAuthorization: Bearer {tok}\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("TE on HTTP/1.0", format!("POST /v1/send/agent-1 HTTP/1.0\r\nAuthorization: Bearer {tok}\r\n{chunked}\r\n5\r\nhello\r\n0\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("TE gzip, chunked", post("Transfer-Encoding: gzip, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), 501, "unsupported_transfer_encoding"),
        ("TE chunked, chunked", post("Transfer-Encoding: chunked, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), 501, "unsupported_transfer_encoding"),
        ("TE identity", post("Transfer-Encoding: identity\r\n", "hello"), 501, "unsupported_transfer_encoding"),
    ];
    for (what, mut bytes, status, code) in cases {
        bytes.extend_from_slice(smuggled.as_bytes());
        let (r, mut h) = raw_exchange(node.addr, &bytes);
        let r = r.unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(
            r.status,
            status,
            "{what}: {} {:?}",
            r.head,
            String::from_utf8_lossy(&r.body)
        );
        let j = r.json();
        assert_eq!(j["error"], code, "{what}: {j}");
        assert!(
            j["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {j}"
        );
        assert_eq!(
            r.header("connection")
                .map(|v| v.to_ascii_lowercase())
                .as_deref(),
            Some("close"),
            "{what}: {}",
            r.head
        );
        assert!(
            h.closed_within(Duration::from_secs(3)),
            "{what}: connection not closed"
        );
    }
    // Nothing was smuggled: the next event is the marker.
    arrives_within(
        &node,
        &mut rx,
        "agent-1",
        "after malformed",
        Duration::from_millis(500),
    );
    assert_no_error_log(&node);
}

// ---------------------------------------------------------------------------
// 4. Bad tokens
// ---------------------------------------------------------------------------

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn sign_claims(alg: jsonwebtoken::Algorithm, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode")
}

fn good_claims() -> serde_json::Value {
    json!({"sub": "console-9", "acct": ACCT, "role": "console", "exp": now_secs() + 3600})
}

fn with(mut c: serde_json::Value, k: &str, v: serde_json::Value) -> serde_json::Value {
    c[k] = v;
    c
}

fn without(mut c: serde_json::Value, k: &str) -> serde_json::Value {
    c.as_object_mut().unwrap().remove(k);
    c
}

#[test]
fn forged_and_invalid_tokens_are_401_with_the_right_code() {
    use jsonwebtoken::Algorithm::{HS256, HS384, HS512};
    let _g = serial();
    let node = Node::start(&["--workers", "2"]);
    let mut rx = open_rx(&node, "agent-1");
    let now = now_secs();
    let claims = good_claims();

    let good = sign_claims(HS256, &claims);
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    let alg_none_sig = format!(
        "{}.{}",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        good.split_once('.').unwrap().1
    );
    let alg_none_lower = format!("{}.{}.", b64(&json!({"alg": "None"})), b64(&claims));
    let rs256 = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "RS256", "typ": "JWT"})),
        b64(&claims),
        URL_SAFE_NO_PAD.encode([7u8; 256])
    );
    // The HS256 signature under an RS256 header (key-confusion style).
    let rs256_hmac = {
        let h = b64(&json!({"alg": "RS256", "typ": "JWT"}));
        let p = b64(&claims);
        let hs = sign_claims(HS256, &claims);
        format!("{h}.{p}.{}", hs.rsplit('.').next().unwrap())
    };
    let flipped = {
        let (rest, sig) = good.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        raw[17] ^= 0x04;
        format!("{rest}.{}", URL_SAFE_NO_PAD.encode(raw))
    };
    let flipped_payload = {
        let mut parts: Vec<String> = good.split('.').map(String::from).collect();
        let mut raw = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
        let i = raw.iter().position(|&b| b == b'9').unwrap(); // console-9 -> console-8
        raw[i] ^= 0x01;
        parts[1] = URL_SAFE_NO_PAD.encode(raw);
        parts.join(".")
    };

    let cases: Vec<(&str, String, &str, Option<&str>)> = vec![
        ("alg none", alg_none, "bad_algorithm", None),
        (
            "alg none with a signature",
            alg_none_sig,
            "bad_algorithm",
            None,
        ),
        ("alg None", alg_none_lower, "bad_algorithm", None),
        ("HS384", sign_claims(HS384, &claims), "bad_algorithm", None),
        ("HS512", sign_claims(HS512, &claims), "bad_algorithm", None),
        ("RS256", rs256, "bad_algorithm", None),
        (
            "RS256 header, HS256 signature",
            rs256_hmac,
            "bad_algorithm",
            None,
        ),
        (
            "expired",
            sign_claims(HS256, &with(claims.clone(), "exp", json!(now - 10))),
            "token_expired",
            None,
        ),
        (
            "exp now",
            sign_claims(HS256, &with(claims.clone(), "exp", json!(now - 1))),
            "token_expired",
            None,
        ),
        (
            "nbf in the future",
            sign_claims(HS256, &with(claims.clone(), "nbf", json!(now + 3600))),
            "token_not_yet_valid",
            None,
        ),
        ("flipped signature bit", flipped, "bad_signature", None),
        (
            "flipped payload bit",
            flipped_payload,
            "bad_signature",
            None,
        ),
        (
            "missing sub",
            sign_claims(HS256, &without(claims.clone(), "sub")),
            "missing_claim",
            Some("sub"),
        ),
        (
            "missing acct",
            sign_claims(HS256, &without(claims.clone(), "acct")),
            "missing_claim",
            Some("acct"),
        ),
        (
            "missing exp",
            sign_claims(HS256, &without(claims.clone(), "exp")),
            "missing_claim",
            Some("exp"),
        ),
        (
            "exp as a string",
            sign_claims(
                HS256,
                &with(claims.clone(), "exp", json!((now + 3600).to_string())),
            ),
            "missing_claim",
            Some("exp"),
        ),
        (
            "sub as a number",
            sign_claims(HS256, &with(claims.clone(), "sub", json!(42))),
            "missing_claim",
            Some("sub"),
        ),
        (
            "sub as an array",
            sign_claims(HS256, &with(claims.clone(), "sub", json!(["console-9"]))),
            "missing_claim",
            Some("sub"),
        ),
        (
            "sub with a space",
            sign_claims(HS256, &with(claims.clone(), "sub", json!("a b"))),
            "bad_claim",
            Some("sub"),
        ),
        (
            "sub with a slash",
            sign_claims(HS256, &with(claims.clone(), "sub", json!("a/b"))),
            "bad_claim",
            Some("sub"),
        ),
        (
            "sub of 65 chars",
            sign_claims(HS256, &with(claims.clone(), "sub", json!("s".repeat(65)))),
            "bad_claim",
            Some("sub"),
        ),
        (
            "empty sub",
            sign_claims(HS256, &with(claims.clone(), "sub", json!(""))),
            "bad_claim",
            Some("sub"),
        ),
        (
            "acct with a newline",
            sign_claims(HS256, &with(claims.clone(), "acct", json!("ac\nme"))),
            "bad_claim",
            Some("acct"),
        ),
        (
            "role admin",
            sign_claims(HS256, &with(claims.clone(), "role", json!("admin"))),
            "bad_claim",
            Some("role"),
        ),
        (
            "two parts",
            good.rsplit_once('.').unwrap().0.to_string(),
            "malformed_token",
            None,
        ),
        ("four parts", format!("{good}.x"), "malformed_token", None),
        (
            "token over 8 KiB",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "HS256"})),
                "A".repeat(9000),
                "x"
            ),
            "malformed_token",
            None,
        ),
    ];
    // 65 chars is one too many; 64 is fine (checked below).
    let sub64 = sign_claims(HS256, &with(claims.clone(), "sub", json!("s".repeat(64))));

    // All on one keep-alive connection: a 401 does not close it.
    let mut http = Http::connect(node.addr);
    for (what, tok, code, claim) in &cases {
        let r = http.request("GET", "/v1/clients", Some(tok), b"");
        assert_eq!(
            r.status,
            401,
            "{what}: {} {:?}",
            r.head,
            String::from_utf8_lossy(&r.body)
        );
        assert_error(&r, 401, code);
        if let Some(c) = claim {
            let msg = r.json()["message"].as_str().unwrap().to_string();
            assert!(
                msg.contains(&format!("`{c}`")),
                "{what}: message {msg:?} does not name {c}"
            );
        }
        // The send and receive endpoints refuse it the same way.
        let r = send(node.addr, tok, "agent-1", &format!("forged: {what}"));
        assert_error(&r, 401, code);
        let (rcv, status) = Receiver::try_open(node.addr, "/v1/receive", Some(tok), &[]);
        assert_eq!(status, 401, "{what}: receive {}", rcv.head);
    }
    assert_eq!(
        http.request("GET", "/v1/clients", Some(&good), b"").status,
        200
    );
    assert_eq!(
        http.request("GET", "/v1/clients", Some(&sub64), b"").status,
        200
    );
    // No forged client ever showed up, and nothing forged was delivered.
    let listed = clients(node.addr, &good);
    assert_eq!(listed.len(), 1, "{listed:?}");
    arrives_within(
        &node,
        &mut rx,
        "agent-1",
        "after bad tokens",
        Duration::from_millis(500),
    );
    assert_no_error_log(&node);
}

// ---------------------------------------------------------------------------
// 5. A receiver that stops reading
// ---------------------------------------------------------------------------

/// A receive connection read by hand, byte-exact, so it can stop reading at a known message.
struct RawReceiver {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Id of the last complete message read.
    last_id: Option<String>,
}

impl RawReceiver {
    fn open(addr: SocketAddr, tok: &str, rcvbuf: usize) -> RawReceiver {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(rcvbuf).unwrap();
        sock.connect(&addr.into()).unwrap();
        let mut stream: TcpStream = sock.into();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
            .write_all(
                format!(
                    "GET /v1/receive HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
        let mut r = RawReceiver {
            stream,
            buf: Vec::new(),
            last_id: None,
        };
        let head = r.block(b"\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        loop {
            let block = r.block(b"\n\n");
            if block.contains("event: ready") {
                break;
            }
            assert!(
                block.starts_with("retry:") || block.starts_with(':'),
                "before ready: {block}"
            );
        }
        r
    }

    /// Reads until `sep` and returns the text before it (consumed with `sep`).
    fn block(&mut self, sep: &[u8]) -> String {
        loop {
            if let Some(p) = self.buf.windows(sep.len()).position(|w| w == sep) {
                let text = String::from_utf8_lossy(&self.buf[..p]).to_string();
                self.buf.drain(..p + sep.len());
                return text;
            }
            let mut chunk = [0u8; 512];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "stream ended");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads the next message event; records its id.
    fn message(&mut self) -> String {
        loop {
            let ev = self.block(b"\n\n");
            if ev.starts_with(':') || ev.starts_with("retry:") {
                continue;
            }
            let id = ev
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .expect("id")
                .to_string();
            self.last_id = Some(id.clone());
            let data = ev
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data");
            return serde_json::from_str::<serde_json::Value>(data).unwrap()["body"]
                .as_str()
                .unwrap()
                .to_string();
        }
    }
}

#[test]
fn a_receiver_that_stops_reading_is_cut_and_can_resume() {
    let _g = serial();
    let node = Node::start(&["--workers", "2", "--max-outbound", "64KiB", "--hold", "30s"]);
    let tok = console_tok();
    let mut fast = open_rx(&node, "fast");

    let mut slow = RawReceiver::open(node.addr, &token(ACCT, "slow", Role::Agent), 4096);
    for b in ["pre-1", "pre-2"] {
        assert_eq!(send(node.addr, &tok, "slow", b).status, 202);
        assert_eq!(slow.message(), b);
    }
    let last_read = slow.last_id.clone().unwrap();
    let (epoch, last_seq) = parse_id(&last_read);
    // From here on `slow` never reads again.

    let rss0 = metric_now(&node, "switchboard_process_resident_memory_bytes");
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let addr = node.addr;
        let tok = tok.clone();
        std::thread::spawn(move || {
            let body = vec![b'f'; 4096];
            let mut h = Http::connect(addr);
            let (mut accepted, mut refused, mut other) = (0u32, 0u32, 0u32);
            let mut last_id = None;
            let t = Instant::now();
            while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(4) {
                let r = h.request("POST", "/v1/send/slow", Some(&tok), &body);
                match r.status {
                    202 => {
                        accepted += 1;
                        last_id = Some(r.json()["id"].as_str().unwrap().to_string());
                    }
                    503 => refused += 1,
                    _ => other += 1,
                }
            }
            (accepted, refused, other, last_id)
        })
    };
    // During the flood the healthy receiver's messages arrive promptly.
    let mut fast_tx = Http::connect(node.addr);
    let mut worst = Duration::ZERO;
    let mut rss_max = rss0;
    let mut cut_after = None;
    let t = Instant::now();
    let mut i = 0;
    while t.elapsed() < Duration::from_secs(3) {
        let body = format!("fast {i}");
        let t0 = Instant::now();
        assert_eq!(
            fast_tx
                .request("POST", "/v1/send/fast", Some(&tok), body.as_bytes())
                .status,
            202
        );
        let ev = fast
            .next_event_within(Duration::from_secs(2))
            .expect("fast receiver starved");
        assert_eq!(ev.json()["body"], body.as_str());
        worst = worst.max(t0.elapsed());
        let m = metrics_text(&node);
        rss_max = rss_max.max(metric(&m, "switchboard_process_resident_memory_bytes"));
        if cut_after.is_none()
            && metric(
                &m,
                "switchboard_connections_closed_total{reason=\"slow_consumer\"}",
            ) >= 1.0
        {
            cut_after = Some(t.elapsed());
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(50)); // pacing
    }
    stop.store(true, Ordering::Relaxed);
    let (accepted, refused, other, last_sent) = flood.join().unwrap();
    eprintln!(
        "flood: {accepted} accepted, {refused} refused (503), {other} other; healthy worst latency {worst:?}; rss {:.1} -> {:.1} MB max",
        rss0 / 1e6,
        rss_max / 1e6
    );
    assert_eq!(other, 0, "flood sends answered with neither 202 nor 503");
    let cut_after = cut_after.expect("slow consumer not cut during the flood");
    assert!(
        cut_after < Duration::from_secs(2),
        "slow consumer cut only after {cut_after:?}"
    );
    assert!(accepted > 100, "only {accepted} flood messages accepted");
    assert!(
        worst < Duration::from_millis(500),
        "healthy receiver latency {worst:?} during the flood"
    );
    assert!(
        rss_max - rss0 < 100e6,
        "RSS grew by {:.1} MB",
        (rss_max - rss0) / 1e6
    );

    let m = metrics_text(&node);
    let cut = metric(
        &m,
        "switchboard_connections_closed_total{reason=\"slow_consumer\"}",
    );
    assert!(cut >= 1.0, "slow consumer not closed (slow_consumer={cut})");
    assert!(
        wait_state(node.addr, &tok, "slow", "held", WAIT),
        "slow client is not held"
    );
    assert!(node.log.lock().unwrap().contains("slow consumer"));
    assert_eq!(
        client_state(node.addr, &tok, "fast").as_deref(),
        Some("online")
    );
    drop(slow);

    // Resume from the last message read: the retained messages follow it
    // contiguously, or a gap event says what was lost. Never silence.
    let last_sent = last_sent.unwrap();
    let (_, last_sent_seq) = parse_id(&last_sent);
    let mut back = Receiver::open(
        node.addr,
        &token(ACCT, "slow", Role::Agent),
        &[("Last-Event-ID", &last_read)],
    );
    back.ready();
    let mut expect = last_seq + 1;
    let mut gaps = 0;
    let mut replayed = 0;
    loop {
        let ev = back
            .next_event()
            .unwrap_or_else(|| panic!("replay ended before seq {last_sent_seq} (at {expect})"));
        match ev.event.as_str() {
            "gap" => {
                assert_eq!(replayed, 0, "gap after messages were replayed: {ev:?}");
                gaps += 1;
                let j = ev.json();
                assert!(j["reason"].is_string(), "{j}");
                assert_eq!(
                    j["after"],
                    last_read.as_str(),
                    "gap does not start at the Last-Event-ID: {j}"
                );
                expect = 0; // set by the next message
            }
            "message" => {
                let (e, seq) = parse_id(ev.id.as_deref().unwrap());
                assert_eq!(e, epoch, "epoch changed");
                if expect == 0 {
                    assert!(
                        seq > last_seq + 1,
                        "gap reported but seq {seq} follows {last_seq}"
                    );
                } else {
                    assert_eq!(seq, expect, "silent hole in the replay (after {last_read})");
                }
                expect = seq + 1;
                replayed += 1;
                if seq == last_sent_seq {
                    break;
                }
            }
            other => panic!("unexpected event {other}: {ev:?}"),
        }
    }
    eprintln!("resume: {gaps} gap event(s), {replayed} messages replayed");
    assert!(gaps <= 1);
    // Everything keeps working.
    arrives_within(
        &node,
        &mut back,
        "slow",
        "slow is back",
        Duration::from_millis(500),
    );
    arrives_within(
        &node,
        &mut fast,
        "fast",
        "fast still fine",
        Duration::from_millis(500),
    );
    assert_no_error_log(&node);
}

// ---------------------------------------------------------------------------
// 6. Connection caps
// ---------------------------------------------------------------------------

#[test]
fn global_connection_cap_refuses_only_the_excess() {
    let _g = serial();
    let node = Node::start(&["--workers", "2", "--max-connections", "5"]);
    let tok = console_tok();
    let mut rx1 = open_rx(&node, "agent-1");
    let mut rx2 = open_rx(&node, "agent-2");
    let mut h: Vec<Http> = (0..3).map(|_| Http::connect(node.addr)).collect();
    for c in h.iter_mut() {
        assert_eq!(c.request("GET", "/v1/clients", Some(&tok), b"").status, 200);
    }
    // The sixth (and seventh) connection: 503 JSON, closed.
    for _ in 0..2 {
        let mut c = Http::connect(node.addr);
        c.send_raw(
            format!("GET /v1/clients HTTP/1.1\r\nAuthorization: Bearer {tok}\r\n\r\n").as_bytes(),
        );
        let r = c
            .read_response()
            .expect("no answer for the connection over the cap");
        assert_closing_error(&r, &mut c, 503, "overloaded");
    }
    let (r, status) = Receiver::try_open(
        node.addr,
        "/v1/receive",
        Some(&token(ACCT, "agent-3", Role::Agent)),
        &[],
    );
    assert_eq!(status, 503, "{}", r.head);
    // The admitted ones keep working (sending over the existing keep-alive connections).
    for (i, c) in h.iter_mut().enumerate() {
        let b = format!("capped {i}");
        assert_eq!(
            c.request("POST", "/v1/send/agent-1", Some(&tok), b.as_bytes())
                .status,
            202
        );
        rx1.expect_message("console-1", &b);
        assert_eq!(
            c.request("POST", "/v1/send/agent-2", Some(&tok), b.as_bytes())
                .status,
            202
        );
        rx2.expect_message("console-1", &b);
    }
    // One closes: a new connection is admitted again.
    drop(h.pop());
    let mut rx3 = None;
    assert!(
        wait_until(WAIT, || {
            let (mut r, status) = Receiver::try_open(
                node.addr,
                "/v1/receive",
                Some(&token(ACCT, "agent-3", Role::Agent)),
                &[],
            );
            if status == 200 {
                r.ready();
                rx3 = Some(r);
                true
            } else {
                false
            }
        }),
        "no connection admitted after one closed"
    );
    let mut rx3 = rx3.unwrap();
    assert_eq!(
        h[0].request("POST", "/v1/send/agent-3", Some(&tok), b"newcomer")
            .status,
        202
    );
    rx3.expect_message("console-1", "newcomer");
    assert_eq!(
        h[1].request("POST", "/v1/send/agent-1", Some(&tok), b"still")
            .status,
        202
    );
    rx1.expect_message("console-1", "still");
    assert_no_error_log(&node);
}

#[test]
fn per_account_receive_cap() {
    let _g = serial();
    let node = Node::start(&["--workers", "2", "--max-account-connections", "2"]);
    let a = |c: &str| token("acct-a", c, Role::Agent);
    let b = |c: &str| token("acct-b", c, Role::Agent);
    let a_console = token("acct-a", "console", Role::Console);
    let b_console = token("acct-b", "console", Role::Console);
    let msg = |to: &str, tokn: &str, body: &str, rx: &mut Receiver| {
        let r = send(node.addr, tokn, to, body);
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        rx.expect_message("console", body);
    };

    let mut a1 = Receiver::open(node.addr, &a("c1"), &[]);
    a1.ready();
    let mut a2 = Receiver::open(node.addr, &a("c2"), &[]);
    a2.ready();
    // A third client of account A: refused, closed.
    let (r, mut h) = raw_exchange(
        node.addr,
        format!(
            "GET /v1/receive HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\r\n",
            a("c3")
        )
        .as_bytes(),
    );
    let r = r.expect("no answer for the receive connection over the account cap");
    assert_closing_error(&r, &mut h, 503, "account_connection_limit");
    // The refused client does not exist for its account.
    assert_eq!(client_state(node.addr, &a_console, "c3"), None);
    // Account B is not affected.
    let mut b1 = Receiver::open(node.addr, &b("c1"), &[]);
    b1.ready();
    let mut b2 = Receiver::open(node.addr, &b("c2"), &[]);
    b2.ready();
    msg("c1", &b_console, "b1 ok", &mut b1);
    msg("c2", &b_console, "b2 ok", &mut b2);
    // A's client c1 replacing its own connection at the cap is allowed.
    let mut a1b = Receiver::open(node.addr, &a("c1"), &[]);
    a1b.ready();
    assert_eq!(a1.expect_event("replaced").event, "replaced");
    assert!(
        a1.closed_within(Duration::from_secs(3)),
        "replaced connection not closed"
    );
    msg("c1", &a_console, "a1 replaced ok", &mut a1b);
    msg("c2", &a_console, "a2 ok", &mut a2);
    // Still at the cap (the replacement did not leak a count).
    let (_r, status) = Receiver::try_open(node.addr, "/v1/receive", Some(&a("c3")), &[]);
    assert_eq!(status, 503, "cap not enforced after a replacement");
    // One of A's receivers closes: a new one is accepted.
    drop(a2);
    let mut a3 = None;
    assert!(
        wait_until(WAIT, || {
            let (mut r, status) = Receiver::try_open(node.addr, "/v1/receive", Some(&a("c3")), &[]);
            if status == 200 {
                r.ready();
                a3 = Some(r);
                true
            } else {
                false
            }
        }),
        "no receive connection admitted after one of account A closed"
    );
    let mut a3 = a3.unwrap();
    msg("c3", &a_console, "a3 ok", &mut a3);
    // And A is at the cap again.
    let (_r, status) = Receiver::try_open(node.addr, "/v1/receive", Some(&a("c4")), &[]);
    assert_eq!(status, 503, "cap not enforced after a close");
    msg("c1", &a_console, "a1 still ok", &mut a1b);
    msg("c1", &b_console, "b1 still ok", &mut b1);
    assert_no_error_log(&node);
}

// ---------------------------------------------------------------------------
// 7. Descriptor exhaustion
// ---------------------------------------------------------------------------

/// Starts the node under `ulimit -n nofile` (through `sh`, which execs it).
fn start_with_nofile(nofile: u32, extra: &[&str]) -> Node {
    let bin = env!("CARGO_BIN_EXE_switchboard");
    let mut script = format!("ulimit -n {nofile} || exit 99; exec '{bin}' serve --listen 127.0.0.1:0 --admin 127.0.0.1:0");
    for a in extra {
        script.push(' ');
        script.push_str(a);
    }
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("SWITCHBOARD_SECRET", SECRET)
        .env_remove("SWITCHBOARD_SECRET_FILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sh");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                log.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
    }
    let mut lines = BufReader::new(stdout).lines();
    let mut addr = None;
    let mut admin = None;
    for line in lines.by_ref() {
        let line = line.expect("stdout");
        if let Some(rest) = line.strip_prefix("switchboard listening on http://") {
            addr = Some(rest.trim().parse().expect("listen address"));
        } else if let Some(rest) = line.strip_prefix("switchboard admin on http://") {
            admin = rest.trim().parse().ok();
        }
        if addr.is_some() && admin.is_some() {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let addr =
        addr.unwrap_or_else(|| panic!("node exited before listening: {}", log.lock().unwrap()));
    Node {
        child,
        addr,
        admin,
        log,
    }
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

#[test]
fn descriptor_exhaustion_backs_off_and_recovers() {
    let _g = serial();
    let node = start_with_nofile(64, &["--workers", "1"]);
    let pid = node.child.id();
    let tok = console_tok();
    let mut rx = open_rx(&node, "agent-1");
    let mut sender = Http::connect(node.addr);
    assert_eq!(
        sender
            .request("POST", "/v1/send/agent-1", Some(&tok), b"warm")
            .status,
        202
    );
    rx.expect_message("console-1", "warm");

    // Open connections until one is not served any more.
    let req = format!("GET /v1/clients HTTP/1.1\r\nAuthorization: Bearer {tok}\r\n\r\n");
    let mut served: Vec<Http> = Vec::new();
    let mut pending: Vec<Http> = Vec::new();
    while served.len() < 100 {
        let mut c = Http::connect(node.addr);
        c.stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        c.send_raw(req.as_bytes());
        match c.read_response() {
            Some(r) => {
                assert_eq!(r.status, 200, "{}", r.head);
                served.push(c);
            }
            None => {
                pending.push(c);
                break;
            }
        }
    }
    assert!(
        !pending.is_empty(),
        "never ran out of descriptors ({} served)",
        served.len()
    );
    assert!(
        served.len() >= 30,
        "only {} connections served under ulimit 64",
        served.len()
    );
    for _ in 0..10 {
        let mut c = Http::connect(node.addr);
        c.send_raw(req.as_bytes());
        pending.push(c);
    }
    assert!(node.wait_log("accept failed"), "no accept failure logged");

    // While the excess connections wait, the node does not spin.
    let cpu0 = cpu_time(pid);
    let t0 = Instant::now();
    // ...and existing connections keep working.
    while t0.elapsed() < Duration::from_secs(1) {
        let t = Instant::now();
        assert_eq!(
            sender
                .request("POST", "/v1/send/agent-1", Some(&tok), b"exhausted")
                .status,
            202
        );
        rx.expect_message("console-1", "exhausted");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "existing connection slow: {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200)); // pacing
    }
    let used = cpu_time(pid) - cpu0;
    let wall = t0.elapsed();
    eprintln!(
        "{} served, {} pending; cpu {used:?} in {wall:?}",
        served.len(),
        pending.len()
    );
    assert!(
        used < Duration::from_millis(500),
        "node used {used:?} CPU in {wall:?} while out of descriptors"
    );

    // Free most descriptors: the waiting connections are served, and new ones too.
    let t = Instant::now();
    served.truncate(5);
    for (i, c) in pending.iter_mut().enumerate() {
        c.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let r = c
            .read_response()
            .unwrap_or_else(|| panic!("pending connection {i} never served"));
        assert_eq!(r.status, 200);
    }
    let mut fresh = open_rx(&node, "agent-2");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "recovery took {:?}",
        t.elapsed()
    );
    arrives_within(
        &node,
        &mut fresh,
        "agent-2",
        "recovered",
        Duration::from_millis(500),
    );
    arrives_within(
        &node,
        &mut rx,
        "agent-1",
        "survived",
        Duration::from_millis(500),
    );
    drop(pending);
    let fds = metric_now(&node, "switchboard_process_open_fds");
    assert!(fds < 64.0, "open fds {fds}");
    assert_no_error_log(&node);
}

// ---------------------------------------------------------------------------
// 8. Churn
// ---------------------------------------------------------------------------

#[test]
fn connection_churn_leaks_nothing() {
    let _g = serial();
    let node = Node::start(&["--workers", "2", "--hold", "1s"]);
    let mut rx = open_rx(&node, "agent-1");
    let series = [
        "switchboard_process_open_fds",
        "switchboard_connections{kind=\"receive\"}",
        "switchboard_connections{kind=\"request\"}",
        "switchboard_sessions{state=\"online\"}",
    ];
    let base_text = metrics_text(&node);
    let base: Vec<f64> = series.iter().map(|s| metric(&base_text, s)).collect();
    eprintln!("baseline {base:?}");

    let t = Instant::now();
    for i in 0..2000 {
        let tok = token(ACCT, &format!("churn-{}", i % 250), Role::Agent);
        let mut r = Receiver::open(node.addr, &tok, &[]);
        r.ready();
        drop(r);
        if i % 500 == 0 {
            arrives_within(
                &node,
                &mut rx,
                "agent-1",
                &format!("churn {i}"),
                Duration::from_millis(500),
            );
        }
    }
    eprintln!("2000 cycles in {:?}", t.elapsed());

    let mut last = Vec::new();
    let back = wait_until(Duration::from_secs(8), || {
        let m = metrics_text(&node);
        last = series.iter().map(|s| metric(&m, s)).collect();
        let held = metric(&m, "switchboard_sessions{state=\"held\"}");
        last.push(held);
        (last[0] - base[0]).abs() <= 2.0
            && last[1] == base[1]
            && last[2] <= base[2]
            && last[3] == base[3]
            && held == 0.0
    });
    assert!(
        back,
        "after churn: {series:?} + held = {last:?}, baseline {base:?}"
    );
    let m = metrics_text(&node);
    let refused: f64 = m
        .lines()
        .filter(|l| l.starts_with("switchboard_request_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 0.0, "errors during churn:\n{m}");
    arrives_within(
        &node,
        &mut rx,
        "agent-1",
        "after churn",
        Duration::from_millis(500),
    );
    assert_no_error_log(&node);
}

/// README: "An accepted message is delivered or reported, never silently
/// lost." A slow consumer is cut while messages sit unread in the kernel
/// socket buffers; its client reconnects without `Last-Event-ID`. The stream
/// must then start with what it did not read, or with a `gap` that says so.
#[test]
fn a_cut_slow_consumer_reconnecting_without_last_event_id_loses_nothing_silently() {
    let _g = serial();
    let node = Node::start(&[
        "--workers",
        "2",
        "--max-outbound",
        "64KiB",
        "--hold",
        "30s",
        "--hold-max-messages",
        "100000",
        "--hold-max-bytes",
        "256MiB",
    ]);
    let tok = console_tok();
    let mut slow = RawReceiver::open(node.addr, &token(ACCT, "slow", Role::Agent), 4096);
    assert_eq!(send(node.addr, &tok, "slow", "pre").status, 202);
    assert_eq!(slow.message(), "pre");
    let (_, last_seq) = parse_id(slow.last_id.as_deref().unwrap());
    // Hold limits far above what is sent, so nothing needs to be trimmed.
    let body = vec![b'g'; 4096];
    let mut h = Http::connect(node.addr);
    let mut last_sent = String::new();
    let mut n = 0;
    while client_state(node.addr, &tok, "slow").as_deref() == Some("online") {
        assert!(n < 20_000, "slow consumer not cut after {n} messages");
        for _ in 0..50 {
            let r = h.request("POST", "/v1/send/slow", Some(&tok), &body);
            assert_eq!(r.status, 202);
            last_sent = r.json()["id"].as_str().unwrap().to_string();
            n += 1;
        }
    }
    eprintln!("cut after {n} messages");
    drop(slow);
    let mut back = Receiver::open(node.addr, &token(ACCT, "slow", Role::Agent), &[]);
    back.ready();
    let ev = back.next_event().expect("nothing replayed");
    let (_, last_sent_seq) = parse_id(&last_sent);
    match ev.event.as_str() {
        "gap" => {}
        "message" => {
            // At-least-once without Last-Event-ID: the replay may repeat what the
            // client had read, but must start no later than the first unread
            // message and then run without holes up to the last one sent.
            let (_, first) = parse_id(ev.id.as_deref().unwrap());
            assert!(
                first <= last_seq + 1,
                "messages {}..{} (of {}..{last_sent_seq}) were never read and are neither replayed nor reported",
                last_seq + 1,
                first - 1,
                last_seq + 1
            );
            let mut expect = first + 1;
            while expect <= last_sent_seq {
                let ev = back.next_event().expect("replay ended early");
                assert_eq!(ev.event, "message");
                let (_, seq) = parse_id(ev.id.as_deref().unwrap());
                assert_eq!(seq, expect, "hole in the replay");
                expect += 1;
            }
        }
        other => panic!("unexpected first event {other}: {ev:?}"),
    }
}

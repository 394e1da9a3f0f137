//! TLS on the client port: a real rustls client against the real binary,
//! with a certificate generated at test time.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use switchboard::auth::Role;

struct Certs {
    dir: PathBuf,
    cert_der: Vec<u8>,
}

/// Writes a fresh self-signed certificate for localhost/127.0.0.1 to `dir/name.{crt,key}`.
fn make_cert(dir: &std::path::Path, name: &str) -> Certs {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("rcgen");
    std::fs::write(dir.join(format!("{name}.crt")), ck.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        ck.signing_key.serialize_pem(),
    )
    .unwrap();
    Certs {
        dir: dir.to_path_buf(),
        cert_der: ck.cert.der().to_vec(),
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("switchboard-tls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn client_config(
    trusted: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for der in trusted {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
            .unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(addr: std::net::SocketAddr, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(WAIT))?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, sock);
    // Drive the handshake now, so errors show up here.
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// Reads lines until `needle` shows up; returns everything read.
fn read_until(r: &mut BufReader<Tls>, needle: &str) -> String {
    let mut all = String::new();
    let end = Instant::now() + WAIT;
    while !all.contains(needle) {
        assert!(
            Instant::now() < end,
            "timed out waiting for {needle:?}; got {all:?}"
        );
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => panic!("stream ended waiting for {needle:?}; got {all:?}"),
            Ok(_) => all.push_str(&line),
            Err(e) => panic!("read error waiting for {needle:?}: {e}; got {all:?}"),
        }
    }
    all
}

fn https_request(s: &mut Tls, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    s.write_all(request_text(method, path, token, body).as_bytes())
        .unwrap();
    s.flush().unwrap();
    read_answer(&mut BufReader::new(s))
}

fn request_text(method: &str, path: &str, token: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one HTTP answer: its status and body.
fn read_answer<R: BufRead>(r: &mut R) -> (u16, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn start_tls_node(certs: &Certs, name: &str, extra: &[&str]) -> Node {
    let cert = certs.dir.join(format!("{name}.crt"));
    let key = certs.dir.join(format!("{name}.key"));
    let mut args = vec![
        "--workers",
        "2",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Node::start(&args)
}

/// A node with a fresh certificate (in a directory named after `tag`) and a
/// client configuration that trusts it, for TLS 1.3 and 1.2.
fn tls_node(tag: &str) -> (Certs, Node, Arc<rustls::ClientConfig>) {
    let certs = make_cert(&tmpdir(tag), "server");
    let node = start_tls_node(&certs, "server", &[]);
    let cfg = client_config(
        &[&certs.cert_der],
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    );
    (certs, node, cfg)
}

/// A receive connection over TLS for `client` of acme, read up to its
/// `ready` event: the reader, the client's local address and what was read.
fn open_tls_receiver(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    client: &str,
) -> (BufReader<Tls>, std::net::SocketAddr, String) {
    let tok = token("acme", client, Role::Agent);
    let mut rs = connect(addr, cfg).expect("tls connect");
    let local = rs.sock.local_addr().unwrap();
    write!(
        rs,
        "GET /v1/receive HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {tok}\r\n\r\n"
    )
    .unwrap();
    rs.flush().unwrap();
    let mut reader = BufReader::new(rs);
    let head = read_until(&mut reader, "event: ready");
    (reader, local, head)
}

#[test]
fn relay_over_tls_and_old_versions_refused() {
    let (certs, node, cfg) = tls_node("relay");

    // Receive over TLS.
    let (mut reader, _, head) = open_tls_receiver(node.addr, cfg.clone(), "agent-1");
    assert_eq!(
        reader.get_ref().conn.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "ALPN http/1.1"
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");

    // Send over TLS 1.2 (keep-alive, two messages) and over TLS 1.3.
    let console = token("acme", "console-1", Role::Console);
    let cfg12 = client_config(&[&certs.cert_der], &[&rustls::version::TLS12]);
    let mut s12 = connect(node.addr, cfg12).expect("tls 1.2 connect");
    assert_eq!(
        s12.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    for i in 0..2 {
        let (status, body) = https_request(
            &mut s12,
            "POST",
            "/v1/send/agent-1",
            &console,
            &format!("hello {i}"),
        );
        assert_eq!(status, 202, "{body}");
    }
    let mut s13 = connect(node.addr, cfg.clone()).expect("tls 1.3 connect");
    assert_eq!(
        s13.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let big = "x".repeat(40_000); // spans several TLS records
    let (status, _) = https_request(&mut s13, "POST", "/v1/send/agent-1", &console, &big);
    assert_eq!(status, 202);
    let got = read_until(&mut reader, &big);
    assert!(got.contains("hello 0") && got.contains("hello 1"), "{got}");

    // Plain HTTP on a TLS port gets nowhere, and the node is unaffected.
    let mut plain = Http::connect(node.addr);
    plain.send_raw(b"GET /v1/clients HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        plain.closed_within(Duration::from_secs(5)),
        "plain HTTP on the TLS port must be closed"
    );
    let (status, _) = https_request(&mut s13, "POST", "/v1/send/agent-1", &console, "after");
    assert_eq!(status, 202);
    read_until(&mut reader, "after");
}

/// A keep-alive TLS send connection accepted by the worker that does not own
/// its account moves there, TLS state and all, with its first send: later
/// sends on it are answered from there, and every message arrives in order.
#[test]
fn a_tls_send_connection_moves_to_its_accounts_worker() {
    let (_certs, node, cfg) = tls_node("handoff");
    let (mut reader, agent_local, _) = open_tls_receiver(node.addr, cfg.clone(), "agent-1");
    // The receive connection is on the worker that owns the account now.
    let home = worker_of(&node, agent_local);
    let console = token("acme", "console-1", Role::Console);
    // With two workers, about half of these are accepted by the other one.
    for c in 0..6 {
        let mut s = connect(node.addr, cfg.clone()).expect("tls connect");
        let local = s.sock.local_addr().unwrap();
        for i in 0..3 {
            let body = format!("tls c{c} m{i}");
            let (status, answer) =
                https_request(&mut s, "POST", "/v1/send/agent-1", &console, &body);
            assert_eq!(status, 202, "connection {c}, send {i}: {answer}");
            let w = worker_of(&node, local);
            assert_eq!(
                w, home,
                "connection {c} on worker {w} after send {i}, the account is on {home}"
            );
            read_until(&mut reader, &body);
        }
    }
}

/// Sends pipelined over TLS in one write (the connection may move to the
/// account's worker with the first of them, taking the rest along): every one
/// is answered once, in order, and delivered once, in order.
#[test]
fn sends_pipelined_over_tls_are_answered_and_delivered_once_in_order() {
    let (_certs, node, cfg) = tls_node("pipelined");
    let (mut reader, _, _) = open_tls_receiver(node.addr, cfg.clone(), "agent-1");
    let console = token("acme", "console-1", Role::Console);
    for c in 0..4 {
        let mut s = connect(node.addr, cfg.clone()).expect("tls connect");
        let bodies: Vec<String> = (0..40).map(|i| format!("p{c}-{i}")).collect();
        let batch: String = bodies
            .iter()
            .map(|b| request_text("POST", "/v1/send/agent-1", &console, b))
            .collect();
        s.write_all(batch.as_bytes()).unwrap();
        s.flush().unwrap();
        let mut r = BufReader::new(&mut s);
        for (i, b) in bodies.iter().enumerate() {
            let (status, answer) = read_answer(&mut r);
            assert_eq!(status, 202, "connection {c}, send {i} ({b}): {answer}");
        }
        // Each body once, in order: the next message read is the next one sent.
        for b in &bodies {
            let mut got = read_until(&mut reader, "\n\n");
            while !got.contains("event: message") {
                got = read_until(&mut reader, "\n\n"); // the rest of `ready`
            }
            assert!(
                got.contains(&format!("\"body\":\"{b}\"")),
                "expected {b} next, got {got:?}"
            );
        }
    }
}

#[test]
fn tls_client_that_never_finishes_its_handshake_is_closed() {
    let dir = tmpdir("slow");
    let certs = make_cert(&dir, "server");
    let node = start_tls_node(&certs, "server", &["--tls-handshake-timeout", "500ms"]);
    let cfg = client_config(&[&certs.cert_der], &[&rustls::version::TLS13]);
    // A receiver that is fine all along.
    let mut rs = connect(node.addr, cfg.clone()).unwrap();
    let agent = token("acme", "agent-1", Role::Agent);
    write!(
        rs,
        "GET /v1/receive HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {agent}\r\n\r\n"
    )
    .unwrap();
    rs.flush().unwrap();
    let mut reader = BufReader::new(rs);
    read_until(&mut reader, "event: ready");

    // A client that opens TCP and sends half a ClientHello, then nothing.
    let mut stalled = TcpStream::connect(node.addr).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let closed = loop {
        match stalled.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(closed, "stalled TLS handshake was not closed");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "closed only after {:?}",
        t0.elapsed()
    );

    // The healthy receiver still gets messages.
    let console = token("acme", "console-1", Role::Console);
    let mut s = connect(node.addr, cfg).unwrap();
    let (status, _) = https_request(&mut s, "POST", "/v1/send/agent-1", &console, "still here");
    assert_eq!(status, 202);
    read_until(&mut reader, "still here");
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = tmpdir("reload");
    let first = make_cert(&dir, "server");
    let node = start_tls_node(&first, "server", &[]);
    let cfg_first = client_config(&[&first.cert_der], &[&rustls::version::TLS13]);

    let agent = token("acme", "agent-1", Role::Agent);
    let mut rs = connect(node.addr, cfg_first.clone()).unwrap();
    write!(
        rs,
        "GET /v1/receive HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {agent}\r\n\r\n"
    )
    .unwrap();
    rs.flush().unwrap();
    let mut reader = BufReader::new(rs);
    read_until(&mut reader, "event: ready");

    // Replace the files with a new certificate and send SIGHUP.
    let second = make_cert(&dir, "next");
    std::fs::copy(dir.join("next.crt"), dir.join("server.crt")).unwrap();
    std::fs::copy(dir.join("next.key"), dir.join("server.key")).unwrap();
    let pid = node.child.id() as i32;
    // SAFETY: plain kill(2) on our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert!(
        node.wait_log("TLS certificate and key reloaded"),
        "no reload in the log"
    );

    // New connections get the new certificate (the old one is no longer trusted by this client)...
    let cfg_second = client_config(&[&second.cert_der], &[&rustls::version::TLS13]);
    let mut s = connect(node.addr, cfg_second.clone()).expect("handshake with the new certificate");
    assert!(
        connect(node.addr, cfg_first.clone()).is_err(),
        "old certificate still served"
    );
    // ...and the open receive connection is still there.
    let console = token("acme", "console-1", Role::Console);
    let (status, _) = https_request(&mut s, "POST", "/v1/send/agent-1", &console, "after reload");
    assert_eq!(status, 202);
    read_until(&mut reader, "after reload");

    // A broken file: reload fails, the working certificate stays.
    std::fs::write(dir.join("server.crt"), "not a certificate").unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert!(node.wait_log("TLS reload failed"), "bad file not reported");
    connect(node.addr, cfg_second).expect("still serving the last good certificate");
}

/// Writes one masked client text frame.
fn ws_write_text(s: &mut Tls, text: &str) {
    let p = text.as_bytes();
    let mut f = vec![0x81u8];
    match p.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    f.extend_from_slice(&mask);
    f.extend(p.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&f).unwrap();
    s.flush().unwrap();
}

/// Reads one server frame: its opcode and payload.
fn ws_read_frame<R: Read>(r: &mut R) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).expect("frame header");
    assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut p = vec![0u8; len];
    r.read_exact(&mut p).unwrap();
    (h[0] & 0x0f, p)
}

/// A WebSocket connection over TLS (`wss://`) receives its stream and sends
/// on the same connection, whichever worker accepted it (a connection that
/// moves to its client's worker takes its TLS state along), with messages
/// that span several TLS records; answers come in order.
#[test]
fn a_websocket_connection_over_tls_receives_and_sends() {
    let (_certs, node, cfg) = tls_node("websocket");
    let (mut sse, _, _) = open_tls_receiver(node.addr, cfg.clone(), "agent-1");
    for c in 0..4 {
        let client = format!("console-{c}");
        let tok = token("acme", &client, Role::Console);
        let mut s = connect(node.addr, cfg.clone()).expect("tls connect");
        write!(
            s,
            "GET /v1/connect?access_token={tok} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        s.flush().unwrap();
        let mut r = BufReader::new(s);
        let head = read_until(&mut r, "\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
        let (op, ready) = ws_read_frame(&mut r);
        assert_eq!(op, 1);
        let ready: serde_json::Value = serde_json::from_slice(&ready).unwrap();
        assert_eq!(ready["event"], "ready");
        assert_eq!(ready["client"], client.as_str());
        let big = "y".repeat(40_000);
        for (i, (to, body)) in [
            ("agent-1", "small"),
            (client.as_str(), &big[..]),
            ("agent-1", &big[..]),
        ]
        .into_iter()
        .enumerate()
        {
            let cmd =
                serde_json::json!({"type": "send", "to": to, "body": body, "ref": i.to_string()});
            ws_write_text(r.get_mut(), &cmd.to_string());
        }
        // Three answers in order; the message to itself arrives on the same connection.
        let (mut answers, mut own) = (Vec::new(), 0);
        while answers.len() < 3 || own < 1 {
            let (op, p) = ws_read_frame(&mut r);
            assert_eq!(op, 1, "{}", String::from_utf8_lossy(&p));
            let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
            match v["event"].as_str() {
                Some("accepted") => answers.push(v["ref"].as_str().unwrap().to_string()),
                Some("message") => {
                    assert_eq!(v["body"].as_str().map(str::len), Some(big.len()));
                    own += 1;
                }
                other => panic!("unexpected {other:?}: {v}"),
            }
        }
        assert_eq!(answers, ["0", "1", "2"]);
        let got = read_until(&mut sse, &big);
        assert!(got.contains("small"), "{got}");
    }
}

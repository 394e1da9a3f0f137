//! Large and mixed-size bodies: written from the retained log or escaped,
//! cut short by a small send buffer, and a burst longer than the retention limit.

use super::*;

/// A burst for one online client that is longer than its retention limit: the
/// events that wait for the end of the loop iteration are written before the
/// log is trimmed, so the live client still gets every one, in order.
#[test]
fn a_burst_longer_than_the_retention_limit_reaches_a_live_client_whole() {
    let node = Node::start(&["--workers", "1", "--hold-max-messages", "2"]);
    let (mut agent, console_tok) = agent_online(&node);
    let bodies: Vec<String> = (1..=6).map(|i| format!("m{i}")).collect();
    send_burst(node.addr, &console_tok, "agent-1", &bodies);
    for i in 1..=6 {
        agent.expect_message("console-1", &format!("m{i}"));
    }
}

/// Large messages arrive byte for byte whichever way they are written: a
/// body that JSON holds as it is (ASCII, or UTF-8 text without `"`, `\` and
/// control characters, from 4 KiB on) goes out from the retained log in one
/// `sendmsg` of head, body and tail; others are escaped into the event, or
/// sent as base64. Once to a receiver that reads at once, once to one with a
/// 4 KiB receive buffer that reads only after every send was answered; with
/// the server's send buffer at 16 KiB, its writes are cut short and the rest
/// is queued.
#[test]
fn large_bodies_arrive_exactly_whether_written_from_the_log_or_escaped() {
    // A small send buffer, so that the kernel takes only part of a large event.
    let node = Node::start(&["--workers", "1", "--send-buffer", "16KiB"]);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let letters = |n: usize| -> Vec<u8> { (0..n).map(|i| b'a' + (i % 26) as u8).collect() };
    let mut utf8 = String::new();
    while utf8.len() < 50_000 {
        utf8.push_str("caf\u{e9} \u{1F600} /~ ");
    }
    let mut quoted = letters(60_000);
    for (i, b) in quoted.iter_mut().enumerate().step_by(997) {
        *b = [b'"', b'\\', b'\n', 0x01][i % 4];
    }
    let mut quote_at_end = letters(20_000);
    quote_at_end.push(b'"');
    let mut binary = letters(30_000);
    binary[29_999] = 0xff;
    let bodies: Vec<Vec<u8>> = vec![
        letters(60_000),
        letters(4096),
        letters(4095),
        utf8.into_bytes(),
        quoted,
        quote_at_end,
        binary,
        letters(64 * 1024),
    ];
    for small in [false, true] {
        let name = if small { "agent-slow" } else { "agent-fast" };
        let tok = token(ACCT, name, Role::Agent);
        let mut rx = if small {
            Receiver::open_small_rcvbuf(node.addr, &tok, 4096)
        } else {
            Receiver::open(node.addr, &tok, &[])
        };
        rx.ready();
        let mut tx = Http::connect(node.addr);
        let path = format!("/v1/send/{name}");
        for (i, body) in bodies.iter().enumerate() {
            let r = tx.request("POST", &path, Some(&console_tok), body);
            assert_eq!(r.status, 202, "body {i} to {name}");
            if !small {
                check_large_body(&mut rx, body, i);
            }
        }
        if small {
            for (i, body) in bodies.iter().enumerate() {
                check_large_body(&mut rx, body, i);
            }
        }
    }
}

/// Reads the next event from `rx` and checks it carries `body` exactly (as
/// text if it is UTF-8, else as base64).
fn check_large_body(rx: &mut Receiver, body: &[u8], i: usize) {
    let ev = rx.expect_event("message");
    let j = ev.json();
    assert_eq!(j["from"], "console-1");
    match std::str::from_utf8(body) {
        Ok(text) => assert!(
            j["body"].as_str() == Some(text),
            "body {i} ({} bytes) differs",
            body.len()
        ),
        Err(_) => {
            let b64 = j["body_b64"].as_str().expect("body_b64");
            let got = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64");
            assert!(got == body, "binary body {i} differs");
        }
    }
}

/// A keep-alive sender whose bodies change size (large ones read with the
/// head in one large read and the rest straight into the body's buffer,
/// small ones through the input buffer; once the requests average 16 KiB or
/// more, each request's first read takes only 2 KiB, for its head): every
/// body arrives whole and in order, also when a head comes in pieces, when a
/// head is longer than that first read, and when two or more requests come
/// in one write.
#[test]
fn a_sender_alternating_large_and_small_bodies_is_read_right() {
    let node = Node::start(&["--workers", "1"]);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let mut rx = Receiver::open(node.addr, &agent_tok, &[]);
    rx.ready();
    let body = |i: usize, n: usize| -> String {
        let mut b = format!("#{i}#");
        while b.len() < n {
            b.push((b'a' + (b.len() % 26) as u8) as char);
        }
        b.truncate(n.max(4));
        b
    };
    let post = |b: &str| -> Vec<u8> {
        let mut r = format!(
            "POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {console_tok}\r\nContent-Length: {}\r\n\r\n",
            b.len()
        )
        .into_bytes();
        r.extend_from_slice(b.as_bytes());
        r
    };
    let mut tx = Http::connect(node.addr);
    let mut i = 0;
    for n in [
        60_000, 60_000, 100, 30_000, 5_000, 65_536, 10, 20_000, 3_000, 40_000,
    ] {
        let b = body(i, n);
        tx.send_raw(&post(&b));
        assert_eq!(tx.read_response().expect("answer").status, 202, "body {i}");
        rx.expect_message("console-1", &b);
        i += 1;
    }
    // After a large body: the next head in three pieces (the first read
    // holds only part of it).
    let b = body(i, 50_000);
    let req = post(&b);
    for piece in [&req[..10], &req[10..120], &req[120..]] {
        tx.send_raw(piece);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(tx.read_response().expect("answer").status, 202);
    rx.expect_message("console-1", &b);
    i += 1;
    // Two requests in one write, a large one first and a small one behind it.
    let (b1, b2) = (body(i, 30_000), body(i + 1, 50));
    let mut both = post(&b1);
    both.extend_from_slice(&post(&b2));
    tx.send_raw(&both);
    for b in [&b1, &b2] {
        assert_eq!(tx.read_response().expect("answer").status, 202);
        rx.expect_message("console-1", b);
    }
    i += 2;
    // A head of about 3 KiB, longer than the first read, before a large body.
    let b = body(i, 40_000);
    let mut long = post(&b);
    let pad = format!("X-Pad: {}\r\n", "p".repeat(3000));
    let at = long
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("request line")
        + 2;
    long.splice(at..at, pad.into_bytes());
    tx.send_raw(&long);
    assert_eq!(tx.read_response().expect("answer").status, 202);
    rx.expect_message("console-1", &b);
    i += 1;
    // Three small requests of 1,500 B in one write: the first read ends in
    // the second one's body.
    let small: Vec<String> = (0..3).map(|k| body(i + k, 1_500)).collect();
    let all: Vec<u8> = small.iter().flat_map(|b| post(b)).collect();
    tx.send_raw(&all);
    for b in &small {
        assert_eq!(tx.read_response().expect("answer").status, 202);
        rx.expect_message("console-1", b);
    }
}

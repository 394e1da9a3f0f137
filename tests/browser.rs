//! Cross-origin access with a real browser: headless Chromium, driven over
//! the DevTools protocol, loads pages from origins other than the gateway's.
//! An allowed page receives with `EventSource`, sends and lists with `fetch`,
//! reads an error answer, and after its stream is cut reconnects by itself
//! with `Last-Event-ID` and gets the message held meanwhile exactly once. A
//! page of an origin that is not allowed gets nothing and does not disturb
//! the live stream of the client whose token it uses.
//!
//! Needs Chromium (`chromium` on PATH, /usr/bin/chromium, or $CHROMIUM);
//! tools/test installs Debian's package when it is missing. Without it the
//! test fails: it is never skipped.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use switchboard::auth::Role;

/// How long Chromium may take to start and print its DevTools address.
const BROWSER_START: Duration = Duration::from_secs(20);

/// The Chromium binary: $CHROMIUM, else `chromium` on PATH, else /usr/bin/chromium.
fn chromium_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return p.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("Chromium not found (PATH, /usr/bin/chromium or $CHROMIUM); run tools/test, which installs it (apt-get install chromium)")
}

/// A headless Chromium with its own profile; killed (whole process group) on drop.
struct Browser {
    child: Child,
    profile: PathBuf,
    /// DevTools HTTP endpoint.
    devtools: SocketAddr,
}

impl Browser {
    fn start() -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "switchboard-chromium-{}-{}",
            std::process::id(),
            switchboard::ids::random_u64()
        ));
        std::fs::create_dir_all(&profile).expect("profile dir");
        let mut child = Command::new(chromium_binary())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                    break;
                }
            }
            for _ in lines {} // keep draining
        });
        let url = rx.recv_timeout(BROWSER_START).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("Chromium did not print its DevTools address within {BROWSER_START:?}")
        });
        // ws://127.0.0.1:PORT/devtools/browser/<id>
        let host = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .expect("DevTools address");
        Browser {
            child,
            profile,
            devtools: host.parse().expect("DevTools host:port"),
        }
    }

    /// Opens the DevTools protocol on the browser's first page.
    fn page(&self) -> Cdp {
        let mut url = None;
        wait_until(WAIT, || {
            let list = http_get(self.devtools, "/json/list");
            url = serde_json::from_str::<Value>(&list).ok().and_then(|v| {
                v.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                    .as_str()
                    .map(String::from)
            });
            url.is_some()
        });
        Cdp::connect(&url.expect("a page target"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: the browser and its renderer, GPU and utility processes.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `GET path`; the body (empty if there is none in time).
fn http_get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(WAIT));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return String::new();
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// A DevTools protocol connection to one page.
struct Cdp {
    ws: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let addr = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .expect("ws://host:port/...");
        let stream = TcpStream::connect(addr).expect("connect to DevTools");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let (ws, _) = tungstenite::client(url, stream).expect("DevTools WebSocket handshake");
        Cdp { ws, next_id: 0 }
    }

    /// Calls `method`; its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(tungstenite::Message::text(msg))
            .expect("DevTools send");
        loop {
            let m = self.ws.read().expect("DevTools answer");
            let Ok(text) = m.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise); its value, or
    /// `Value::Null` if it threw.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
        );
        if !r["exceptionDetails"].is_null() {
            return Value::Null;
        }
        r["result"]["value"].clone()
    }

    /// Loads `url` and waits until its script defined `window.api`.
    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        assert!(
            wait_until(WAIT, || self.eval("typeof window.api") == "function"),
            "{url} did not load"
        );
    }

    /// The page's record of what it saw (`window.r`).
    fn record(&mut self) -> Value {
        self.eval("window.r")
    }

    /// Waits until `cond` holds for the page's record; panics naming `what`.
    fn wait_record(&mut self, what: &str, mut cond: impl FnMut(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(WAIT, || {
            last = self.record();
            cond(&last)
        });
        assert!(ok, "page: {what}; record: {last}");
        last
    }
}

/// The page every test origin serves: receives with EventSource (token in the
/// query), records what it sees in `window.r`, and offers `api(method, path,
/// body)`, a `fetch` with `Authorization`.
fn page_html(gateway: &str, token: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>console</title></head><body><script>
const GW = "{gateway}", TOKEN = "{token}";
window.r = {{ opens: 0, errors: 0, replaced: 0, events: [], state: -1 }};
const es = new EventSource(GW + "/v1/receive?access_token=" + encodeURIComponent(TOKEN));
es.addEventListener("ready", () => {{ r.opens++; r.state = es.readyState; }});
es.addEventListener("message", (e) => {{
  r.events.push({{ id: e.lastEventId, data: JSON.parse(e.data) }});
}});
es.addEventListener("replaced", () => {{ r.replaced++; es.close(); }});
es.onerror = () => {{ r.errors++; r.state = es.readyState; }};
window.api = async (method, path, body) => {{
  try {{
    const res = await fetch(GW + path, {{
      method, body,
      headers: {{ "Authorization": "Bearer " + TOKEN, "Content-Type": "text/plain" }},
    }});
    return {{ status: res.status, body: await res.json() }};
  }} catch (e) {{
    return {{ failed: String(e) }};
  }}
}};
</script></body></html>"#
    )
}

/// A static HTTP server: answers every request on `listener` with `html`.
fn serve_page(listener: TcpListener, html: String) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let html = html.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(WAIT));
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                loop {
                    // One request head (the page has no body to send).
                    let mut line = String::new();
                    let mut first = true;
                    let mut path = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if first {
                            path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                            first = false;
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let (status, body) = if path == "/" {
                        ("200 OK", html.as_str())
                    } else {
                        ("404 Not Found", "")
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
                         Content-Length: {}\r\nCache-Control: no-store\r\n\r\n",
                        body.len()
                    );
                    if s.write_all(head.as_bytes()).is_err()
                        || s.write_all(body.as_bytes()).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
}

/// A TCP relay in front of the gateway, standing for the network between the
/// browser and it: `cut` closes every relayed connection (as a NAT or load
/// balancer dropping them would), and while `paused` new connections wait
/// before they reach the gateway.
struct Relay {
    addr: SocketAddr,
    paused: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().unwrap();
        let paused = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (p, o) = (paused.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (p, o) = (p.clone(), o.clone());
                std::thread::spawn(move || {
                    // Held while paused (bounded: the test unpauses or ends).
                    wait_until(Duration::from_secs(30), || !p.load(Ordering::SeqCst));
                    let Ok(server) = TcpStream::connect(to) else {
                        return;
                    };
                    {
                        let mut open = o.lock().unwrap();
                        open.push(client.try_clone().expect("clone"));
                        open.push(server.try_clone().expect("clone"));
                    }
                    let (c2, s2) = (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    );
                    std::thread::spawn(move || pump(c2, s2));
                    pump(server, client);
                });
            }
        });
        Relay { addr, paused, open }
    }

    /// Closes every relayed connection, both ways.
    fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` until either ends.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// How many of the page's events carry `body`.
fn count(record: &Value, body: &str) -> usize {
    record["events"].as_array().map_or(0, |e| {
        e.iter().filter(|e| e["data"]["body"] == body).count()
    })
}

#[test]
fn browser_pages_of_allowed_origins_work_and_others_disturb_nobody() {
    let page_listener = TcpListener::bind("127.0.0.1:0").expect("bind page");
    let bad_listener = TcpListener::bind("127.0.0.1:0").expect("bind page");
    let page_origin = format!("http://{}", page_listener.local_addr().unwrap());
    let bad_origin = format!("http://{}", bad_listener.local_addr().unwrap());
    let node = Node::start(&["--allowed-origins", &page_origin]);
    let relay = Relay::start(node.addr);
    let gateway = format!("http://{}", relay.addr);

    let console = token("acme", "console-1", Role::Console);
    let agent = token("acme", "agent-2", Role::Agent);
    serve_page(page_listener, page_html(&gateway, &console));
    // The page of the other origin tries the agent's token, directly on the gateway.
    serve_page(
        bad_listener,
        page_html(&format!("http://{}", node.addr), &agent),
    );
    let mut agent_rx = Receiver::open(node.addr, &agent, &[]);
    agent_rx.ready();

    let browser = Browser::start();
    let mut cdp = browser.page();

    // --- The allowed page.
    cdp.open(&format!("{page_origin}/"));
    cdp.wait_record("stream open", |r| r["opens"] == 1);
    // Send and list with fetch (preflighted: Authorization).
    let sent = cdp.eval(r#"api("POST", "/v1/send/agent-2", "from the page")"#);
    assert_eq!(sent["status"], 202, "{sent}");
    assert!(sent["body"]["id"].is_string(), "{sent}");
    agent_rx.expect_message("console-1", "from the page");
    let list = cdp.eval(r#"api("GET", "/v1/clients")"#);
    assert_eq!(list["status"], 200, "{list}");
    let names: Vec<&str> = list["body"]["clients"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["client"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["agent-2", "console-1"], "{list}");
    // An error answer is readable too.
    let err = cdp.eval(r#"api("POST", "/v1/send/nobody", "x")"#);
    assert_eq!(err["status"], 404, "{err}");
    assert_eq!(err["body"]["error"], "recipient_offline", "{err}");
    // Live delivery.
    send_ok(node.addr, &agent, "console-1", "live-1");
    cdp.wait_record("live-1", |r| count(r, "live-1") == 1);

    // Cut the stream; new connections wait until the message is held.
    relay.paused.store(true, Ordering::SeqCst);
    relay.cut();
    assert!(
        wait_state(node.addr, &agent, "console-1", "held", WAIT),
        "console-1 is not held after the cut"
    );
    send_ok(node.addr, &agent, "console-1", "held-1");
    relay.paused.store(false, Ordering::SeqCst);
    // EventSource reconnects by itself, with Last-Event-ID, and gets it once.
    cdp.wait_record("held-1 after reconnecting", |r| {
        r["opens"] == 2 && count(r, "held-1") == 1
    });
    assert!(
        node.wait_log("replayed=1 resumed"),
        "no resume with Last-Event-ID"
    );
    send_ok(node.addr, &agent, "console-1", "live-2");
    let r = cdp.wait_record("live-2", |r| count(r, "live-2") == 1);
    assert_eq!(
        (
            count(&r, "live-1"),
            count(&r, "held-1"),
            r["replaced"].as_u64()
        ),
        (1, 1, Some(0)),
        "{r}"
    );

    // --- The page of another origin, with the agent's token.
    cdp.open(&format!("{bad_origin}/"));
    // Its EventSource fails for good (no reconnect after a 403); its fetches are refused.
    let r = cdp.wait_record("stream refused", |r| {
        r["errors"].as_u64() >= Some(1) && r["state"] == 2
    });
    assert_eq!(r["opens"], 0, "{r}");
    let sent = cdp.eval(r#"api("POST", "/v1/send/console-1", "from elsewhere")"#);
    assert!(sent["failed"].is_string(), "{sent}");
    let list = cdp.eval(r#"api("GET", "/v1/clients")"#);
    assert!(list["failed"].is_string(), "{list}");
    // Nothing reached the agent's session: its stream goes on, not replaced.
    send_ok(
        node.addr,
        &token("acme", "console-9", Role::Console),
        "agent-2",
        "still yours",
    );
    agent_rx.expect_message("console-9", "still yours");
    assert!(node.wait_log(&format!("refused origin \"{bad_origin}\"")));
    // And nothing from that page arrived anywhere.
    let r = cdp.eval("window.r");
    assert_eq!(r["events"].as_array().map(Vec::len), Some(0), "{r}");
}

/// The page of the WebSocket test: one `WebSocket` to the gateway (token in
/// the query, subprotocol `switchboard.v1`) that receives and sends; what it
/// sees is recorded in `window.r`; `api(cmd)` sends a command.
fn ws_page_html(gateway: &str, token: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>ws console</title></head><body><script>
const GW = "{gateway}", TOKEN = "{token}";
window.r = {{ opens: 0, errors: 0, closes: [], events: [], protocol: null }};
const ws = new WebSocket(GW + "/v1/connect?access_token=" + encodeURIComponent(TOKEN), "switchboard.v1");
ws.onopen = () => {{ r.opens++; r.protocol = ws.protocol; }};
ws.onmessage = (e) => {{ r.events.push(JSON.parse(e.data)); }};
ws.onerror = () => {{ r.errors++; }};
ws.onclose = (e) => {{ r.closes.push({{ code: e.code, reason: e.reason }}); }};
window.api = (cmd) => {{ ws.send(JSON.stringify(cmd)); return true; }};
</script></body></html>"#
    )
}

/// The first event of the page's record satisfying `pred`.
fn ws_event(record: &Value, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    record["events"]
        .as_array()?
        .iter()
        .find(|e| pred(e))
        .cloned()
}

/// A page of an allowed origin receives and sends over one `WebSocket`
/// (`ready` first, `accepted` with its ref and the id the recipient sees, a
/// message sent to it); a page of another origin gets its `WebSocket`
/// refused (closed without ever opening), the node logs the origin, and the
/// session of the client whose token it used goes on undisturbed.
#[test]
fn browser_websocket_from_an_allowed_origin_works_and_others_are_refused() {
    let page_listener = TcpListener::bind("127.0.0.1:0").expect("bind page");
    let bad_listener = TcpListener::bind("127.0.0.1:0").expect("bind page");
    let page_origin = format!("http://{}", page_listener.local_addr().unwrap());
    let bad_origin = format!("http://{}", bad_listener.local_addr().unwrap());
    let node = Node::start(&["--allowed-origins", &page_origin]);
    let gateway = format!("ws://{}", node.addr);
    let console = token("acme", "console-1", Role::Console);
    let agent = token("acme", "agent-2", Role::Agent);
    serve_page(page_listener, ws_page_html(&gateway, &console));
    serve_page(bad_listener, ws_page_html(&gateway, &agent));
    let mut agent_rx = Receiver::open(node.addr, &agent, &[]);
    agent_rx.ready();

    let browser = Browser::start();
    let mut cdp = browser.page();

    // --- The allowed page.
    cdp.open(&format!("{page_origin}/"));
    let r = cdp.wait_record("WebSocket open, ready received", |r| {
        r["opens"] == 1 && !r["events"].as_array().is_none_or(Vec::is_empty)
    });
    assert_eq!(r["protocol"], "switchboard.v1", "{r}");
    assert_eq!(r["events"][0]["event"], "ready", "{r}");
    assert_eq!(r["events"][0]["client"], "console-1", "{r}");
    // Send over the WebSocket: accepted with the ref, the message arrives
    // with that id.
    cdp.eval(r#"api({type: "send", to: "agent-2", body: "from the page ws", ref: "b1"})"#);
    let r = cdp.wait_record("accepted", |r| {
        ws_event(r, |e| e["event"] == "accepted").is_some()
    });
    let acc = ws_event(&r, |e| e["event"] == "accepted").unwrap();
    assert_eq!(acc["ref"], "b1", "{r}");
    let ev = agent_rx.expect_message("console-1", "from the page ws");
    assert_eq!(ev.id.as_deref(), acc["id"].as_str(), "{r}");
    // A message to the page.
    let id = send_ok(node.addr, &agent, "console-1", "to the page ws");
    let r = cdp.wait_record("message", |r| {
        ws_event(r, |e| e["body"] == "to the page ws").is_some()
    });
    let m = ws_event(&r, |e| e["body"] == "to the page ws").unwrap();
    assert_eq!(
        (&m["event"], &m["from"], &m["id"]),
        (&json!("message"), &json!("agent-2"), &json!(id)),
        "{r}"
    );
    assert_eq!(r["errors"], 0, "{r}");

    // --- The page of another origin, with the agent's token.
    cdp.open(&format!("{bad_origin}/"));
    let r = cdp.wait_record("WebSocket refused", |r| {
        !r["closes"].as_array().is_none_or(Vec::is_empty)
    });
    assert_eq!(r["opens"], 0, "{r}");
    assert_eq!(r["errors"], 1, "{r}");
    assert_eq!(r["closes"][0]["code"], 1006, "{r}");
    assert!(node.wait_log(&format!("refused origin \"{bad_origin}\"")));
    // The agent's session was not touched.
    send_ok(node.addr, &console, "agent-2", "still yours");
    agent_rx.expect_message("console-1", "still yours");
}

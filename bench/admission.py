#!/usr/bin/env python3
"""Admission under flood: how often a legitimate client gets its receive
stream while another address floods the node (issue 23, item 6).

    bench/admission.py [BIN_DIR] [SECONDS]     (defaults: target/release 10)

Each scenario starts a fresh `switchboard serve` on loopback and runs for
SECONDS. The legitimate client (source address 127.0.0.2) opens a receive
stream every 20 ms, counts a success when `event: ready` arrives within 2 s,
and closes it. The attacker uses 127.0.0.1:
- idle: keeps 1,500 connections open that never send a byte (reopening
  those the node closes), against `--max-connections 1000`;
- rate: opens and drops connections in a tight loop (connect, close).
(The node also closes the oldest idle unauthenticated connection to make room
at `--max-connections`, with or without `--max-unauthenticated`.) Each flood
runs with the protection off and on (`--max-unauthenticated 200`
for idle, `--max-new-connections-per-address 100` for rate), and a baseline
runs without a flood. Prints one JSON line per scenario.
"""

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release"
SECS = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
SECRET = "admission-bench-secret-0123456789abcdef"
ENV = dict(os.environ, SWITCHBOARD_SECRET=SECRET)


def token():
    out = subprocess.run(
        [f"{BIN}/switchboard", "token", "--account", "acme", "--client", "legit"],
        env=ENV, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def start(port, extra):
    p = subprocess.Popen(
        [f"{BIN}/switchboard", "serve", "--listen", f"127.0.0.1:{port}",
         "--max-connections", "1000", "--log-throttle", "60s"] + extra,
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit("server did not start")


def legit_once(port, tok):
    s = socket.socket()
    s.settimeout(2.0)
    try:
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET /v1/receive HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n".encode())
        got = b""
        end = time.time() + 2.0
        while b"event: ready" not in got and time.time() < end:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        return b"event: ready" in got
    except OSError:
        return False
    finally:
        s.close()


COUNT = {"attacker": 0}


def idle_flood(port, stop):
    socks = []
    while not stop.is_set():
        while len(socks) < 1500 and not stop.is_set():
            try:
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                socks.append(s)
                COUNT["attacker"] += 1
            except OSError:
                break
        # Drop the ones the node closed, so they are reopened.
        alive = []
        for s in socks:
            try:
                if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    s.close()
                    continue
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                continue
            alive.append(s)
        socks = alive
        time.sleep(0.01)
    for s in socks:
        s.close()


def rate_flood(port, stop):
    while not stop.is_set():
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            COUNT["attacker"] += 1
        except OSError:
            pass
        s.close()


def scenario(name, extra, flood):
    port = random.randint(10000, 30000)  # below the ephemeral range the flood uses
    COUNT["attacker"] = 0
    p = start(port, extra)
    tok = token()
    stop = threading.Event()
    t = threading.Thread(target=flood, args=(port, stop)) if flood else None
    if t:
        t.start()
        time.sleep(1.0)
    ok = tries = 0
    end = time.time() + SECS
    while time.time() < end:
        tries += 1
        ok += legit_once(port, tok)
        time.sleep(0.02)
    stop.set()
    if t:
        t.join()
    p.terminate()
    p.wait()
    print(json.dumps({"scenario": name, "flags": extra, "attempts": tries,
                      "ready": ok, "success": round(ok / max(tries, 1), 3),
                      "attacker_connections_per_s": round(COUNT["attacker"] / (SECS + 1))}),
          flush=True)


scenario("baseline", [], None)
scenario("idle-flood-unprotected", [], idle_flood)
scenario("idle-flood", ["--max-unauthenticated", "200"], idle_flood)
scenario("rate-flood-unprotected", [], rate_flood)
scenario("rate-flood", ["--max-new-connections-per-address", "100"], rate_flood)

#!/usr/bin/env python3
"""The table and ratios of a tools/compare-ws run.

    python3 tools/compare_ws_summary.py OUTDIR

Prints memory per idle connection (sse, ws, nchan-ws, mosquitto-ws), relay
messages/s and p99 with 1 and 8 in flight, server CPU per message at the
fixed offered rate (total, user, system), the kernel's floor (one read and
two writes of the message's sizes), and the ratios against issue 26's goals;
writes OUTDIR/compare-ws.json. Several repetitions: medians.
"""
import glob
import json
import os
import re
import statistics
import sys

out = sys.argv[1]


def load(pattern):
    res = []
    for p in sorted(glob.glob(os.path.join(out, pattern))):
        try:
            with open(p) as f:
                d = json.load(f)
        except (OSError, ValueError):
            continue
        d["_name"] = os.path.basename(p)
        res.append(d)
    return res


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


idle = {}  # (sys, n) -> [pss bytes per conn]
for d in load("idle-*.json"):
    if d.get("established") == d.get("connections") and "pss_bytes_per_conn" in d:
        idle.setdefault((d["system"], d["connections"]), []).append(d["pss_bytes_per_conn"])

relay = {}  # (kind, sys, window) -> runs; kind "relay" (as fast as answered) or "fixed"
for d in load("relay-*.json"):
    if "msgs_per_sec" not in d or not d.get("exactly_once", {}).get("ok"):
        continue
    kind = "fixed" if re.match(r"relay-fixed-", d["_name"]) else "relay"
    relay.setdefault((kind, d["system"], d["window"]), []).append(d)

floor = {}  # (transport, mode, window) -> run
for d in load("floor-*.json"):
    floor[(d["transport"], d.get("mode", "threads"), d["window"])] = d


def row(kind, s, w):
    runs = relay.get((kind, s, w), [])
    if not runs:
        return None
    g = lambda k: med(r.get(k) for r in runs)
    return {
        "runs": len(runs),
        "msgs_per_sec": g("msgs_per_sec"),
        "p99_us": med(r["latency_us"]["p99"] for r in runs),
        "server_cpu_us_per_msg": g("server_cpu_us_per_msg"),
        "server_cpu_user_us_per_msg": g("server_cpu_user_us_per_msg"),
        "server_cpu_sys_us_per_msg": g("server_cpu_sys_us_per_msg"),
    }


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


summary = {"idle": {}, "relay": {}, "fixed": {}, "floor": {}, "goals": {}}
print("idle: PSS bytes per connection (after warm-up)")
for n in sorted({n for (_, n) in idle}):
    vals = {s: med(v) for (s, m), v in idle.items() if m == n}
    summary["idle"][n] = vals
    line = "  N=%-6d " % n + "  ".join("%s %.0f" % (s, v) for s, v in sorted(vals.items()))
    ws = vals.get("ws")
    for peer in ("sse", "nchan-ws", "mosquitto-ws"):
        if ws is not None and vals.get(peer):
            line += "  ws/%s %.2f" % (peer, ws / vals[peer])
    print(line)

windows = sorted({w for (_, _, w) in relay})
for kind, title in (("relay", "relay, as fast as answered"), ("fixed", "relay at the fixed rate")):
    print(title + ": msg/s, p99 us, server CPU us per message (user + system)")
    for w in windows:
        for s in ("sse", "ws", "nchan-ws"):
            r = row(kind, s, w)
            if r is None:
                continue
            summary[kind].setdefault(str(w), {})[s] = r
            cap = med(d.get("rate_cap") for d in relay[(kind, s, w)])
            short = cap and r["msgs_per_sec"] < 0.97 * cap
            r["below_offered_rate"] = bool(short)
            print("  w%-2d %-9s %8.0f msg/s  p99 %8.1f  cpu %s (%s + %s)%s" % (
                w, s, r["msgs_per_sec"], r["p99_us"], r["server_cpu_us_per_msg"],
                r["server_cpu_user_us_per_msg"], r["server_cpu_sys_us_per_msg"],
                "  BELOW THE OFFERED RATE %.0f: not an equal-load point" % cap if short else ""))
        rows = summary[kind].get(str(w), {})
        ws = rows.get("ws")
        for peer in ("sse", "nchan-ws"):
            if ws and peer in rows:
                p = rows[peer]
                print("      ws/%-8s msg/s %s  p99 %s  cpu %s (user %s, system %s)" % (
                    peer, ratio(ws["msgs_per_sec"], p["msgs_per_sec"]),
                    ratio(ws["p99_us"], p["p99_us"]),
                    ratio(ws["server_cpu_us_per_msg"], p["server_cpu_us_per_msg"]),
                    ratio(ws["server_cpu_user_us_per_msg"], p["server_cpu_user_us_per_msg"]),
                    ratio(ws["server_cpu_sys_us_per_msg"], p["server_cpu_sys_us_per_msg"])))

print("floor: one read + two writes of a relayed message's sizes (server thread's CPU us per message)")
for (t, mode, w), d in sorted(floor.items()):
    summary["floor"]["%s-%s-w%d" % (t, mode, w)] = d
    line = "  %-3s %-7s w%-2d %s us (user %s, system %s; %s B read, %s + %s B written)" % (
        t, mode, w, d["server_cpu_us_per_msg"], d["server_cpu_user_us_per_msg"],
        d["server_cpu_sys_us_per_msg"], d["read_bytes"], d["delivery_bytes"], d["answer_bytes"])
    print(line)
    # Its share of the server's CPU per message at the fixed rate, at each window.
    for fw in windows:
        fx = summary["fixed"].get(str(fw), {}).get(t)
        if fx and fx["server_cpu_us_per_msg"] and (mode == "inline" or fw == w):
            print("      %.0f %% of %s's server CPU per message at the fixed rate, w%d" % (
                100 * d["server_cpu_us_per_msg"] / fx["server_cpu_us_per_msg"], t, fw))

# Issue 26's goals, on the fixed-rate CPU per message.
for w, limit in ((8, 0.85), (1, 1.0)):
    rows = summary["fixed"].get(str(w), {})
    ws, sse, nchan = rows.get("ws"), rows.get("sse"), rows.get("nchan-ws")
    g = {}
    if ws and sse:
        r = ratio(ws["server_cpu_us_per_msg"], sse["server_cpu_us_per_msg"])
        g["ws_over_sse"] = r
        g["ws_over_sse_limit"] = limit
        g["ws_over_sse_met"] = r is not None and r <= limit
    if ws and nchan:
        r = ratio(ws["server_cpu_us_per_msg"], nchan["server_cpu_us_per_msg"])
        g["ws_over_nchan_ws"] = r
        g["ws_below_nchan_ws"] = r is not None and r < 1.0
    if g:
        summary["goals"]["w%d" % w] = g
        print("goal w%d: %s" % (w, json.dumps(g, sort_keys=True)))

with open(os.path.join(out, "compare-ws.json"), "w") as f:
    json.dump(summary, f, indent=2, sort_keys=True)

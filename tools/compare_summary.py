#!/usr/bin/env python3
"""Ratios (ours / peer) from the JSON summaries tools/compare wrote.

    python3 tools/compare_summary.py OUTDIR [RECEIVERS]

Prints a table on stdout (human) and writes OUTDIR/compare.json (machine).
Relay points with several repetitions use the median.
"""
import glob
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchstats import sign_test  # noqa: E402

out = sys.argv[1]
receivers = int(sys.argv[2]) if len(sys.argv) > 2 else 1000


def load(pattern):
    """JSON summaries matching `pattern`; each gets `_rep`, the repetition number
    that tools/compare puts last in the file name (1 when there is none)."""
    res = []
    for p in sorted(glob.glob(os.path.join(out, pattern))):
        try:
            with open(p) as f:
                d = json.load(f)
        except (OSError, ValueError):
            continue
        m = re.search(r"-(\d+)\.json$", p)
        d["_rep"] = int(m.group(1)) if m else 1
        d["_name"] = os.path.basename(p)
        res.append(d)
    return res


idle_runs = {}  # (sys, n) -> complete runs
for d in load("idle-*.json"):
    if "pss_bytes_per_conn" in d and d.get("established") == d.get("connections"):
        idle_runs.setdefault((d.get("system", d["target"]), d["connections"]), []).append(d)
# Several repetitions: the run with the median PSS per connection (the lower middle one
# of an even count), so that its other figures belong to the same run.
idle = {k: sorted(v, key=lambda d: d["pss_bytes_per_conn"])[(len(v) - 1) // 2]
        for k, v in idle_runs.items()}

relay = {}  # (sys, size, receivers) -> list of runs, as fast as the answers come
fixed = {}  # (sys, rate) -> list of runs at a fixed offered rate (64 B)
piped = {}  # (sys, window) -> list of runs of the pipelined point (relay-w<N>-*.json, 64 B)
for d in load("relay-*.json"):
    if "msgs_per_sec" not in d:
        continue
    s = d.get("system", d["target"])
    if d.get("rate_cap"):
        fixed.setdefault((s, round(d["rate_cap"])), []).append(d)
    elif re.match(r"relay-w\d+-", d["_name"]):
        piped.setdefault((s, d["window"]), []).append(d)
    else:
        relay.setdefault((s, d["size"], d["receivers"]), []).append(d)


def med(runs, f):
    return statistics.median(f(r) for r in runs)


def paired(ours, theirs):
    """msg/s ratios (ours / theirs) of the repetitions both have, in repetition order."""
    by_rep = {d["_rep"]: d["msgs_per_sec"] for d in theirs}
    return [d["msgs_per_sec"] / by_rep[d["_rep"]]
            for d in sorted(ours, key=lambda d: d["_rep"]) if by_rep.get(d["_rep"])]


def point_row(runs):
    """Medians of one relay point's repetitions (msg/s, latency, CPU per message)."""
    g = lambda k: med(runs, lambda d: d.get(k, 0))
    return {"msgs_per_sec": g("msgs_per_sec"), "runs": len(runs),
            "server_cpu_us_per_msg": g("server_cpu_us_per_msg"),
            "server_cpu_user_us_per_msg": g("server_cpu_user_us_per_msg"),
            "server_cpu_sys_us_per_msg": g("server_cpu_sys_us_per_msg"),
            "generator_cpu_us_per_msg": g("generator_cpu_us_per_msg"),
            "p50_us": med(runs, lambda d: d["latency_us"]["p50"]),
            "p99_us": med(runs, lambda d: d["latency_us"]["p99"]),
            "p999_us": med(runs, lambda d: d["latency_us"]["p999"]),
            "exactly_once": all(d["exactly_once"]["ok"] for d in runs)}


def relay_ratios(rs, key, ours, theirs, our_runs, their_runs):
    """Adds the ratios (ours / peer) of one relay point to `rs`: msg/s, p99, server CPU
    per message, and the msg/s of the paired repetitions."""
    if theirs["msgs_per_sec"]:
        rs[f"relay_msgs_per_sec_{key}"] = round(ours["msgs_per_sec"] / theirs["msgs_per_sec"], 3)
    if theirs["p99_us"]:
        rs[f"relay_p99_{key}"] = round(ours["p99_us"] / theirs["p99_us"], 3)
    if theirs["server_cpu_us_per_msg"]:
        # Server CPU per message at full speed (lower is better, like the fixed-rate one).
        rs[f"relay_server_cpu_per_msg_{key}"] = round(
            ours["server_cpu_us_per_msg"] / theirs["server_cpu_us_per_msg"], 3)
    # Paired repetitions: repetition i of each system ran in the same pass of
    # tools/compare (seconds apart), so their ratio is less exposed to the machine's
    # slower drifts in load than the ratio of medians is.
    pairs = paired(our_runs, their_runs)
    if len(pairs) > 1:
        ahead = sum(1 for x in pairs if x >= 1.0)
        rs[f"relay_msgs_per_sec_{key}_paired"] = {
            "median": round(statistics.median(pairs), 3),
            "min": round(min(pairs), 3), "max": round(max(pairs), 3),
            "ours_ahead": ahead, "pairs": len(pairs),
            "sign_test_p": round(sign_test(ahead, len(pairs)), 4)}


def relay_targets(t, pre, sfx, sb, nc, rd):
    """The relay targets of the issue for one of our relay points `sb` against nchan's
    (`nc`) and Redis's (`rd`) at the same point, as `t[pre + "_..." + sfx]`."""
    if nc:
        t[f"{pre}_msgs_ge_3x_nchan{sfx}"] = {"ratio": round(sb["msgs_per_sec"] / nc["msgs_per_sec"], 3),
                                             "met": sb["msgs_per_sec"] >= 3 * nc["msgs_per_sec"]}
    if rd:
        t[f"{pre}_msgs_ge_redis{sfx}"] = {"ratio": round(sb["msgs_per_sec"] / rd["msgs_per_sec"], 3),
                                          "met": sb["msgs_per_sec"] >= rd["msgs_per_sec"]}
    others = [x for x in (nc, rd) if x]
    if others:
        t[f"{pre}_p99_le_each_peer{sfx}"] = {"ours_us": sb["p99_us"],
                                             "peers_us": [x["p99_us"] for x in others],
                                             "met": all(sb["p99_us"] <= x["p99_us"] for x in others)}


def is_ours(s):
    """Switchboard, or a variant of it such as switchboard-1w (--workers 1)."""
    return s == "switchboard" or s.startswith("switchboard-")


systems = sorted({k[0] for k in list(idle) + list(relay) + list(fixed) + list(piped)},
                 key=lambda s: (not is_ours(s), s))
ours_all = [s for s in systems if is_ours(s)]
peers = [s for s in systems if not is_ours(s)]
summary = {"idle": {}, "relay": {}, "relay_fixed_rate": {}, "relay_pipelined": {}, "ratios": {}}

print("Idle receive connections: server memory per connection (PSS / RssAnon, bytes;"
      " after 100 warm-up connections; cold PSS from a fresh server in brackets)")
ns = sorted({k[1] for k in idle})
for n in ns:
    row = []
    for s in systems:
        d = idle.get((s, n))
        if d:
            cold = d.get("pss_bytes_per_conn_cold")
            row.append(f"{s} {d['pss_bytes_per_conn']:.0f} / {d['rss_anon_bytes_per_conn']:.0f}"
                       + (f" [{cold:.0f}]" if cold is not None else ""))
            summary["idle"].setdefault(s, {})[str(n)] = {
                "pss_bytes_per_conn": d["pss_bytes_per_conn"],
                "pss_bytes_per_conn_cold": cold,
                "warmup": d.get("warmup", 0),
                "runs": len(idle_runs[(s, n)]),
                "pss_bytes_per_conn_all_runs": sorted(r["pss_bytes_per_conn"] for r in idle_runs[(s, n)]),
                "rss_bytes_per_conn": d["rss_bytes_per_conn"],
                "rss_anon_bytes_per_conn": d["rss_anon_bytes_per_conn"],
                "connect_rate_per_sec": d["connect_rate_per_sec"],
            }
    print(f"  N={n:>6}: " + ", ".join(row))

print(f"Relay ({receivers} receivers unless noted): delivered msg/s, p50/p99/p99.9 us, exactly-once")
for (s, size, r), runs in sorted(relay.items(), key=lambda kv: (kv[0][1], kv[0][2], systems.index(kv[0][0]))):
    mps = med(runs, lambda d: d["msgs_per_sec"])
    p50 = med(runs, lambda d: d["latency_us"]["p50"])
    p99 = med(runs, lambda d: d["latency_us"]["p99"])
    p999 = med(runs, lambda d: d["latency_us"]["p999"])
    ok = all(d["exactly_once"]["ok"] for d in runs)
    summary["relay"].setdefault(s, {}).setdefault(str(size), {})[str(r)] = {
        "msgs_per_sec": mps, "p50_us": p50, "p99_us": p99, "p999_us": p999,
        "exactly_once": ok, "runs": len(runs),
        "server_cpu_us_per_msg": med(runs, lambda d: d.get("server_cpu_us_per_msg", 0)),
        # CPU time the hypervisor took during each run (a shared VM): runs it hit hard
        # are slow for a reason outside the system under test.
        "steal_secs_each_run": [d.get("steal_secs") for d in runs],
    }
    print(f"  {s:<14} size={size:>5} R={r:>5}: {mps:>8.0f} msg/s  {p50:>7.0f} / {p99:>7.0f} / {p999:>7.0f} us"
          f"  server {summary['relay'][s][str(size)][str(r)]['server_cpu_us_per_msg']:.1f} CPU-us/msg"
          f"  exactly-once {'ok' if ok else 'NOT OK'}"
          + (f"  steal {max(d['steal_secs'] for d in runs if 'steal_secs' in d):.1f} s at most"
             if any("steal_secs" in d for d in runs) else ""))

if fixed:
    print("Relay at a fixed offered rate (64 B): server CPU per delivered message, user + system"
          " (medians); generator CPU per message")
for (s, rate), runs in sorted(fixed.items(), key=lambda kv: (kv[0][1], systems.index(kv[0][0]))):
    row = point_row(runs)
    summary["relay_fixed_rate"].setdefault(s, {})[str(rate)] = row
    print(f"  {s:<14} rate={rate:>6}: {row['msgs_per_sec']:>7.0f} msg/s  server {row['server_cpu_us_per_msg']:.2f}"
          f" ({row['server_cpu_user_us_per_msg']:.2f} user + {row['server_cpu_sys_us_per_msg']:.2f} sys) CPU-us/msg"
          f"  generator {row['generator_cpu_us_per_msg']:.2f}  p50/p99 {row['p50_us']:.0f} / {row['p99_us']:.0f} us"
          f"  exactly-once {'ok' if row['exactly_once'] else 'NOT OK'}")

for (s, w), runs in sorted(piped.items(), key=lambda kv: (kv[0][1], systems.index(kv[0][0]))):
    row = point_row(runs)
    summary["relay_pipelined"].setdefault(s, {})[str(w)] = row
    print(f"  {s:<14} size=   64 R={receivers:>5} {w} in flight per sender: {row['msgs_per_sec']:>8.0f} msg/s"
          f"  {row['p50_us']:>7.0f} / {row['p99_us']:>7.0f} / {row['p999_us']:>7.0f} us"
          f"  server {row['server_cpu_us_per_msg']:.1f} CPU-us/msg  generator {row['generator_cpu_us_per_msg']:.1f}"
          f"  exactly-once {'ok' if row['exactly_once'] else 'NOT OK'}")

print("Ratios (ours / peer):")
for us in ours_all:
    for p in peers:
        rs = {}
        for n in ns:
            a, b = idle.get((us, n)), idle.get((p, n))
            if a and b and b["pss_bytes_per_conn"] > 0:
                rs[f"idle_memory_per_conn_N{n}"] = round(a["pss_bytes_per_conn"] / b["pss_bytes_per_conn"], 3)
        for (s, size, r), runs in relay.items():
            if s == us and (p, size, r) in relay:
                relay_ratios(rs, f"{size}B_R{r}", summary["relay"][us][str(size)][str(r)],
                             summary["relay"][p][str(size)][str(r)], runs, relay[(p, size, r)])
        for rate, ours in summary["relay_fixed_rate"].get(us, {}).items():
            theirs = summary["relay_fixed_rate"].get(p, {}).get(rate)
            if theirs and theirs["server_cpu_us_per_msg"]:
                # Ours needs this fraction of the peer's CPU per message (lower is better).
                rs[f"relay_server_cpu_per_msg_at_{rate}_per_s"] = round(
                    ours["server_cpu_us_per_msg"] / theirs["server_cpu_us_per_msg"], 3)
        for (s, w), runs in piped.items():
            if s == us and (p, w) in piped:
                relay_ratios(rs, f"64B_R{receivers}_w{w}", summary["relay_pipelined"][us][str(w)],
                             summary["relay_pipelined"][p][str(w)], runs, piped[(p, w)])
        # "switchboard" keeps its plain key (older summaries); variants are "<variant> vs <peer>".
        summary["ratios"][p if us == "switchboard" else f"{us} vs {p}"] = rs
        for k, v in sorted(rs.items()):
            if isinstance(v, dict):
                v = (f"median {v['median']:.3f} (min {v['min']:.3f}, max {v['max']:.3f};"
                     f" ours ahead in {v['ours_ahead']} of {v['pairs']}, sign test p {v['sign_test_p']})")
            else:
                v = f"{v:.3f}"
            print(f"  {us} vs {p:<6} {k:<36} {v}")

# Targets from the issue, for each of our configurations.
t = {}
for us in ours_all:
    sfx = "" if us == "switchboard" else f" ({us})"
    best_idle = {}
    for n in ns:
        peers_n = [idle[(p, n)]["pss_bytes_per_conn"] for p in peers if (p, n) in idle]
        if (us, n) in idle and peers_n:
            ratio = idle[(us, n)]["pss_bytes_per_conn"] / min(peers_n)
            best_idle[str(n)] = round(ratio, 3)
    if best_idle:
        t["idle_memory_vs_best_peer_le_0.5" + sfx] = {"ratios": best_idle,
                                                      "met": all(v <= 0.5 for v in best_idle.values())}
    sb = summary["relay"].get(us, {}).get("64", {}).get(str(receivers))
    if sb:
        relay_targets(t, "relay64", sfx, sb,
                      summary["relay"].get("nchan", {}).get("64", {}).get(str(receivers)),
                      summary["relay"].get("redis", {}).get("64", {}).get(str(receivers)))
    # The same relay targets with pipelining senders (tools/compare's PIPELINED point).
    for w, sb in sorted(summary["relay_pipelined"].get(us, {}).items()):
        relay_targets(t, f"relay64_w{w}", sfx, sb, summary["relay_pipelined"].get("nchan", {}).get(w),
                      summary["relay_pipelined"].get("redis", {}).get(w))
summary["targets"] = t
print("Targets:")
for k, v in t.items():
    print(f"  {k}: {'MET' if v['met'] else 'NOT MET'} {json.dumps({a: b for a, b in v.items() if a != 'met'})}")

try:
    with open(os.path.join(out, "machine.txt")) as f:
        summary["machine"] = dict(l.rstrip("\n").split(": ", 1) for l in f if ": " in l)
except OSError:
    pass
with open(os.path.join(out, "compare.json"), "w") as f:
    json.dump(summary, f, indent=1, sort_keys=True)
print(f"(JSON: {os.path.join(out, 'compare.json')})")

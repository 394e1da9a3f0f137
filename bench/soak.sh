#!/usr/bin/env bash
# Soak: relay and connection churn together for a long time, with the server's gauges
# sampled throughout, to see that nothing grows while a node carries steady mixed load
# (the churn scenario alone checks connect/disconnect; this adds messages, held clients
# and replay logs, and time).
#
#   bench/soak.sh [MINUTES] [OUTDIR]      (default 20 minutes; OUTDIR a new temp dir)
#
# Environment (defaults): RELAY_RATE=5000 msg/s (64 B, 1,000 receivers, 50 senders,
# account "bench"), CHURN_RATE=100 cycles/s (connect, GET /v1/receive until ready,
# close; new client ids in account "soak-churn", held --hold 5s then reaped),
# SAMPLE=10 (seconds between readings of /metrics), SERVER_ARGS (more server flags),
# BIN (tools/bench-build).
#
# Writes OUTDIR/metrics.csv (one row per reading), relay.json, churn.json and
# summary.json, and prints the summary. Pass (exit 0) when: the relay still sent at
# 80 % of its rate or more in the last tenth of the run; every message arrived
# exactly once; no churn cycle failed; under load, the median RSS of the last tenth of
# the run is within 10 % of that of its second tenth, and so are open descriptors; after the
# load, connections, sessions, retained bytes and timer entries are back to 0 (within
# the settle time) and descriptors to what they were before the load.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh
MINUTES=${1:-20}
OUT=${2:-$(mktemp -d "${TMPDIR:-/tmp}/switchboard-soak.XXXXXX")}
RELAY_RATE=${RELAY_RATE:-5000}
CHURN_RATE=${CHURN_RATE:-100}
SAMPLE=${SAMPLE:-10}
case "$MINUTES" in '' | *[!0-9]*) echo "usage: bench/soak.sh [MINUTES] [OUTDIR]" >&2; exit 2 ;; esac
[ "$MINUTES" -ge 1 ] || { echo "soak.sh: at least 1 minute" >&2; exit 2; }
mkdir -p "$OUT"
BIN=${BIN:-$(tools/bench-build)}
ulimit -n "$(ulimit -Hn)"
SWITCHBOARD_SECRET=${SWITCHBOARD_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export SWITCHBOARD_SECRET
SECS=$((MINUTES * 60))

"$BIN/switchboard" serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-level warn --hold 5s \
    ${SERVER_ARGS:-} >"$OUT/server.out" 2>"$OUT/server.log" &
PID=$!
PIDS=("$PID")
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
ADDR=$(wait_listening "$OUT/server.out") || { echo "soak.sh: server did not start" >&2; exit 1; }
for _ in $(seq 100); do grep -q "admin on" "$OUT/server.out" && break; sleep 0.05; done
ADMIN=$(sed -n 's|^switchboard admin on http://||p' "$OUT/server.out")
echo "soak.sh: server $PID on $ADDR (admin $ADMIN), $MINUTES min, relay $RELAY_RATE msg/s, churn $CHURN_RATE/s -> $OUT" >&2

scrape() { # one CSV row of the gauges
    python3 - "$ADMIN" "$1" <<'EOF'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=5)
s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
text = data.decode(errors="replace").split("\r\n\r\n", 1)[-1]
want = {
    "switchboard_process_resident_memory_bytes": "rss",
    "switchboard_process_open_fds": "fds",
    'switchboard_connections{kind="receive"}': "receive",
    'switchboard_connections{kind="request"}': "request",
    'switchboard_sessions{state="online"}': "online",
    'switchboard_sessions{state="held"}': "held",
    "switchboard_retained_bytes": "retained",
    "switchboard_messages_accepted_total": "accepted",
}
v = {k: 0.0 for k in want.values()}
v["timers"] = 0.0
for line in text.splitlines():
    if line.startswith("#") or " " not in line:
        continue
    name, val = line.rsplit(" ", 1)
    if name in want:
        v[want[name]] = float(val)
    elif name.startswith("switchboard_timer_wheel_entries"):
        v["timers"] += float(val)
cols = ["rss", "fds", "receive", "request", "online", "held", "retained", "timers", "accepted"]
print(",".join([sys.argv[2]] + [str(int(v[c])) for c in cols]))
EOF
}

echo "t,phase,rss,fds,receive,request,online,held,retained,timers,accepted" >"$OUT/metrics.csv"
START=$(date +%s)
echo "0,before,$(scrape 0 | cut -d, -f2-)" >>"$OUT/metrics.csv"
"$BIN/switchboard-bench" relay --server "$ADDR" --pid "$PID" --receivers 1000 --senders 50 --size 64 \
    --rate "$RELAY_RATE" --duration "$SECS" >"$OUT/relay.json" 2>"$OUT/relay.err" &
RP=$!
PIDS+=("$RP")
"$BIN/switchboard-bench" churn --server "$ADDR" --admin "$ADMIN" --pid "$PID" --account soak-churn \
    --cycles $((CHURN_RATE * SECS)) --rate "$CHURN_RATE" --max-secs "$SECS" --warmup 0 \
    --settle-min 1 --settle-max 1 --tolerance 1000 >"$OUT/churn.json" 2>"$OUT/churn.err" &
CP=$!
PIDS+=("$CP")
while kill -0 "$RP" 2>/dev/null || kill -0 "$CP" 2>/dev/null; do
    sleep "$SAMPLE"
    t=$(($(date +%s) - START))
    row=$(scrape "$t" | cut -d, -f2-) || continue
    echo "$t,load,$row" >>"$OUT/metrics.csv"
    [ $((t % 60)) -lt "$SAMPLE" ] && echo "soak.sh: t=${t}s rss=$(echo "$row" | cut -d, -f1) fds=$(echo "$row" | cut -d, -f2)" >&2
done
wait "$RP" || echo "soak.sh: relay exited with an error" >&2
wait "$CP" || true # churn's own verdict compares with a baseline taken under relay load; not used
# After the load: the held sessions expire (--hold 5s) and the server settles.
for _ in $(seq 30); do
    sleep 1
    t=$(($(date +%s) - START))
    row=$(scrape "$t" | cut -d, -f2-) || continue
    echo "$t,after,$row" >>"$OUT/metrics.csv"
    IFS=, read -r _ _ rec req onl hld ret tim _ <<<"$row"
    [ "$((rec + req + onl + hld + ret))" -eq 0 ] && [ "$tim" -le 8 ] && break
done

python3 - "$OUT" "$MINUTES" "$RELAY_RATE" <<'EOF'
import csv, json, statistics, sys
out, minutes = sys.argv[1], int(sys.argv[2])
rows = list(csv.DictReader(open(f"{out}/metrics.csv")))
num = lambda r, k: float(r[k])
before = rows[0]
load = [r for r in rows if r["phase"] == "load"]
after = [r for r in rows if r["phase"] == "after"]
end = max(int(r["t"]) for r in load)
# "Early": the second tenth of the run (minutes 2-4 of 20), past the warm-up of
# allocator, caches and replay logs; "late": the last tenth (at least 30 s).
early = [r for r in load if end * 0.1 <= int(r["t"]) <= end * 0.2] or load[:3]
late = [r for r in load if int(r["t"]) >= end - max(30, end // 10)]
med = lambda rs, k: statistics.median(num(r, k) for r in rs)
relay = json.load(open(f"{out}/relay.json"))
churn = json.load(open(f"{out}/churn.json"))
last = after[-1] if after else load[-1]
s = {
    "scenario": "soak", "minutes": minutes,
    "relay_msgs_per_sec": relay.get("msgs_per_sec"), "relay_delivered": relay.get("delivered"),
    "relay_exactly_once": relay.get("exactly_once", {}).get("ok"),
    "churn_cycles": churn.get("completed"), "churn_failed": churn.get("failed"),
    "rss_before": num(before, "rss"),
    "rss_second_tenth": med(early, "rss"), "rss_last_tenth": med(late, "rss"),
    "rss_growth": round(med(late, "rss") / med(early, "rss"), 3),
    "rss_max_under_load": max(num(r, "rss") for r in load),
    "fds_before": num(before, "fds"), "fds_second_tenth": med(early, "fds"),
    "fds_last_tenth": med(late, "fds"),
    "held_median_under_load": med(load, "held"), "retained_median_under_load": med(load, "retained"),
    "after": {k: num(last, k) for k in ("rss", "fds", "receive", "request", "online", "held", "retained", "timers")},
    "settle_secs": int(last["t"]) - end,
}
# Messages accepted per second over the last tenth: the relay must still be sending
# at its rate then (a generator that stopped early would make the rest meaningless).
span = int(late[-1]["t"]) - int(late[0]["t"])
s["msgs_per_sec_last_tenth"] = round((num(late[-1], "accepted") - num(late[0], "accepted")) / span) if span else 0
s["relay_rate"] = float(sys.argv[3])
checks = {
    "relay_to_the_end": s["msgs_per_sec_last_tenth"] >= 0.8 * s["relay_rate"],
    "exactly_once": s["relay_exactly_once"] is True,
    "no_churn_failures": s["churn_failed"] == 0,
    "rss_flat_under_load": s["rss_growth"] <= 1.10,
    "fds_flat_under_load": s["fds_last_tenth"] <= 1.10 * s["fds_second_tenth"] + 8,
    "back_to_empty": all(s["after"][k] == 0 for k in ("receive", "request", "online", "held", "retained")),
    "fds_back": s["after"]["fds"] <= s["fds_before"],
}
s["checks"] = checks
s["pass"] = all(checks.values())
json.dump(s, open(f"{out}/summary.json", "w"), indent=1)
print(json.dumps(s, indent=1))
sys.exit(0 if s["pass"] else 1)
EOF

#!/usr/bin/env bash
# Cross-node relay benchmark for a two-node Switchboard cluster.
#
#   bench/cluster.sh [SIZE] [RECEIVERS] [DURATION]      (defaults 64 B, 1000 receivers, 10 s)
#
# For every worker count in $WORKERS and every repetition, on a fresh cluster each run
# (a redis-server of our own on a free loopback port, `--save '' --appendonly no`, and nodes
# nA and nB started with `--redis` and `--workers W`):
#   single: receivers and senders both on node A (local delivery on a clustered node)
#   cross:  receivers on node A, senders on node B: every send is forwarded through Redis
#           (B looks the client up, publishes to A, A delivers and publishes the answer back)
# `switchboard-bench relay` runs with `--pid A,B,REDIS` (CPU of all three is reported;
# server_cpu_us_per_msg sums them).
# Redis commands are counted from `INFO commandstats` / `total_commands_processed` taken
# just before and after the bench process (so they include the connect phase's presence
# writes and the nodes' heartbeats) and divided by the bench's `delivered` count.
# Per-run JSON goes to $OUT (default bench/results/cluster); the summary JSON (medians
# over repetitions, ratio cross/single, Redis commands per relayed message) is printed and
# written to $OUT/summary.json.
#
# Environment (defaults): WORKERS="2 1" REPEAT=2 SENDERS=50 THREADS=1 (generator threads)
#   OUT=bench/results/cluster BUILD=head (see tools/bench-build) BENCH_ARGS="" SERVER_ARGS=""
#   BIN= (a directory holding `switchboard` and `switchboard-bench`, e.g. target/ab/bin-<commit>;
#   default: built by tools/bench-build)
# Everything listens on 127.0.0.1 only and every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-64}
RECEIVERS=${2:-1000}
DURATION=${3:-10}
WORKERS=${WORKERS:-2 1}
REPEAT=${REPEAT:-2}
SENDERS=${SENDERS:-50}
THREADS=${THREADS:-1}
OUT=${OUT:-bench/results/cluster}
BIN=${BIN:-$(tools/bench-build)}
BUILT_FROM=$(cat "$BIN/BUILT_FROM" 2>/dev/null || cat "$BIN/../BUILT_FROM" 2>/dev/null || git rev-parse --short HEAD)
ulimit -n "$(ulimit -Hn)"
SWITCHBOARD_SECRET=${SWITCHBOARD_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export SWITCHBOARD_SECRET
mkdir -p "$OUT"
DIR=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-cluster.XXXXXX")

REDIS_PID= A_PID= B_PID=
stop_all() { # the nodes first (they leave the cluster cleanly), then Redis
    for p in $A_PID $B_PID; do kill "$p" 2>/dev/null || true; done
    for p in $A_PID $B_PID; do wait "$p" 2>/dev/null || true; done
    [ -n "$REDIS_PID" ] && { kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; }
    A_PID= B_PID= REDIS_PID=
}
trap 'stop_all; rm -rf "$DIR"' EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_node NAME WORKERS -> sets NODE_PID NODE_ADDR
start_node() {
    local name=$1 w=$2
    "$BIN/switchboard" serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-level warn \
        --redis "redis://127.0.0.1:$REDIS_PORT" --node-id "$name" --workers "$w" ${SERVER_ARGS:-} \
        >"$DIR/$name.out" 2>>"$DIR/$name.log" &
    NODE_PID=$!
    NODE_ADDR=
    for _ in $(seq 200); do
        NODE_ADDR=$(sed -n 's|^switchboard listening on http://||p' "$DIR/$name.out" | head -1)
        [ -n "$NODE_ADDR" ] && grep -q "admin on" "$DIR/$name.out" && break
        sleep 0.05
    done
    [ -n "$NODE_ADDR" ] || { echo "cluster.sh: node $name did not start" >&2; cat "$DIR/$name.log" >&2; exit 1; }
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/${NODE_ADDR%:*}/${NODE_ADDR##*:}") 2>/dev/null && break
        sleep 0.05
    done
}

start_cluster() { # WORKERS
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --loglevel warning >"$DIR/redis.log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
        sleep 0.05
    done
    start_node nA "$1"; A_PID=$NODE_PID; A_ADDR=$NODE_ADDR
    start_node nB "$1"; B_PID=$NODE_PID; B_ADDR=$NODE_ADDR
    # Let both nodes register their heartbeats before the first lookup.
    sleep 0.5
}

redis_stats() { # FILE
    { redis-cli -p "$REDIS_PORT" info stats; redis-cli -p "$REDIS_PORT" info commandstats; } | tr -d '\r' >"$1"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "cluster.sh: $BUILT_FROM; size=$SIZE receivers=$RECEIVERS senders=$SENDERS duration=${DURATION}s workers='$WORKERS' repeat=$REPEAT load=$LOAD_START" >&2
for w in $WORKERS; do
    for rep in $(seq "$REPEAT"); do
        for mode in single cross; do
            start_cluster "$w"
            SEND=$A_ADDR
            [ "$mode" = cross ] && SEND=$B_ADDR
            name="$mode-w$w-$SIZE-$RECEIVERS-$rep"
            echo "== $name: receivers on nA $A_ADDR, senders on $SEND (redis :$REDIS_PORT, pids $A_PID,$B_PID,$REDIS_PID)" >&2
            redis_stats "$DIR/$name.redis0"
            timeout $((${DURATION%.*} + 120)) "$BIN/switchboard-bench" relay --server "$A_ADDR" --send-server "$SEND" \
                --pid "$A_PID,$B_PID,$REDIS_PID" --receivers "$RECEIVERS" --senders "$SENDERS" \
                --size "$SIZE" --duration "$DURATION" --threads "$THREADS" ${BENCH_ARGS:-} \
                >"$OUT/$name.json" || echo "cluster.sh: $name failed (exit $?)" >&2
            redis_stats "$DIR/$name.redis1"
            stop_all
            for n in nA nB; do
                if [ -s "$DIR/$n.log" ]; then echo "cluster.sh: $n log:" >&2; tail -5 "$DIR/$n.log" >&2; : >"$DIR/$n.log"; fi
            done
        done
    done
done

python3 - "$OUT" "$DIR" "$SIZE" "$RECEIVERS" "$SENDERS" "$DURATION" "$WORKERS" "$REPEAT" "$BUILT_FROM" "$LOAD_START" <<'EOF'
import json, os, statistics, sys
out, tmp, size, recv, senders, dur, workers, repeat, built, load = sys.argv[1:]
def stats(path):
    d = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("total_commands_processed:"):
            d["total"] = int(line.split(":")[1])
        elif line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            kv = dict(x.split("=") for x in rest.split(","))
            d[name] = int(kv["calls"])
    return d
runs, summary = [], {"scenario": "cluster-relay", "built_from": built, "size": int(size),
    "receivers": int(recv), "senders": int(senders), "duration_secs": float(dur),
    "loadavg_start": load, "target_ratio": 0.5, "by_workers": {}}
for w in workers.split():
    per = {}
    for mode in ("single", "cross"):
        rows = []
        for rep in range(1, int(repeat) + 1):
            name = f"{mode}-w{w}-{size}-{recv}-{rep}"
            try:
                j = json.load(open(os.path.join(out, name + ".json")))
            except Exception:
                continue
            if "msgs_per_sec" not in j:
                continue
            s0, s1 = stats(os.path.join(tmp, name + ".redis0")), stats(os.path.join(tmp, name + ".redis1"))
            # The two INFO calls of the "after" snapshot itself are not the run's.
            total = s1.get("total", 0) - s0.get("total", 0) - 2
            cmds = {k: s1[k] - s0.get(k, 0) for k in s1 if k not in ("total", "info") and s1[k] != s0.get(k, 0)}
            dl = max(j["delivered"], 1)
            rows.append({"rep": rep, "msgs_per_sec": j["msgs_per_sec"], "p50_us": j["latency_us"]["p50"],
                "p99_us": j["latency_us"]["p99"], "p999_us": j["latency_us"]["p999"],
                "exactly_once": j["exactly_once"]["ok"], "delivered": j["delivered"],
                "errors": j["errors"], "server_cpu_secs_each": j.get("server_cpu_secs_each"),
                "server_cpu_us_per_msg": j.get("server_cpu_us_per_msg"),
                "bench_cpu_secs": j.get("bench_cpu_secs"),
                "loadavg_1m_before": j.get("loadavg_1m_before"),
                "redis_commands": total, "redis_commands_per_msg": round(total / dl, 3),
                "redis_commands_per_msg_by_cmd": {k: round(v / dl, 4) for k, v in sorted(cmds.items())}})
        med = lambda k: round(statistics.median([r[k] for r in rows]), 3) if rows and all(r[k] is not None for r in rows) else None
        per[mode] = {"msgs_per_sec": med("msgs_per_sec"), "p50_us": med("p50_us"), "p99_us": med("p99_us"),
            "redis_commands_per_msg": med("redis_commands_per_msg"),
            "server_cpu_us_per_msg": med("server_cpu_us_per_msg"),
            "exactly_once": all(r["exactly_once"] for r in rows) if rows else None, "runs": rows}
    s, c = per["single"]["msgs_per_sec"], per["cross"]["msgs_per_sec"]
    per["ratio_cross_single"] = round(c / s, 3) if s and c else None
    per["target_met"] = per["ratio_cross_single"] is not None and per["ratio_cross_single"] >= 0.5
    summary["by_workers"][w] = per
txt = json.dumps(summary, indent=2)
open(os.path.join(out, "summary.json"), "w").write(txt + "\n")
print(txt)
for w, p in summary["by_workers"].items():
    print(f"cluster.sh: workers={w}: single {p['single']['msgs_per_sec']} msg/s p99 {p['single']['p99_us']} us | "
          f"cross {p['cross']['msgs_per_sec']} msg/s p99 {p['cross']['p99_us']} us | ratio {p['ratio_cross_single']} "
          f"(target >= 0.5: {'met' if p['target_met'] else 'NOT met'}) | redis cmds/msg cross {p['cross']['redis_commands_per_msg']}, "
          f"single {p['single']['redis_commands_per_msg']}", file=sys.stderr)
EOF

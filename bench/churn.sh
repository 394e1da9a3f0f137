#!/usr/bin/env bash
# Connection churn leak check for Switchboard.
#
#   bench/churn.sh [CYCLES] [RATE]     (defaults 100000 cycles at 1000/s)
#
# Starts `switchboard serve` (--hold 5s, so sessions of gone clients are reaped soon after
# the run; the default hold is 60 s, and every cycle is a new client id), runs
# `switchboard-bench churn` (connect, GET /v1/receive until `event: ready`, close; 1,000
# warm-up cycles before the baseline) and prints its JSON summary. Exit status 1 if the
# server's RSS, open fds or connection count did not return to within 10% of the baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES=${1:-100000}
RATE=${2:-1000}
BIN=${BIN:-$(tools/bench-build)}
ulimit -n "$(ulimit -Hn)"
SWITCHBOARD_SECRET=${SWITCHBOARD_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export SWITCHBOARD_SECRET
DIR=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-churn.XXXXXX")
"$BIN/switchboard" serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-level warn --hold 5s ${SERVER_ARGS:-} \
    >"$DIR/out" 2>"$DIR/log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "admin on" "$DIR/out" 2>/dev/null && break; sleep 0.05; done
ADDR=$(sed -n 's|^switchboard listening on http://||p' "$DIR/out")
ADMIN=$(sed -n 's|^switchboard admin on http://||p' "$DIR/out")
sleep 0.3
echo "churn.sh: server $PID on $ADDR (admin $ADMIN), $CYCLES cycles at $RATE/s" >&2
"$BIN/switchboard-bench" churn --server "$ADDR" --admin "$ADMIN" --pid "$PID" --cycles "$CYCLES" --rate "$RATE" ${BENCH_ARGS:-}

#!/usr/bin/env bash
# usage: idle1.sh BIN N  -> prints the bench's JSON summary
set -euo pipefail
BIN=$1 N=$2
cd /work/wt-sse
ulimit -n "$(ulimit -Hn)"
DIR=$(mktemp -d /tmp/sse-idle.XXXXXX)
export SWITCHBOARD_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
"$BIN" serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-level warn --workers 0 --heartbeat 60s >"$DIR/out" 2>"$DIR/log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT
for _ in $(seq 100); do ADDR=$(sed -n 's|^switchboard listening on http://||p' "$DIR/out" | head -1); [ -n "$ADDR" ] && break; sleep 0.1; done
target/release/switchboard-bench idle --server "$ADDR" --connections "$N" --sources 2 --procs 1 --pid "$PID"

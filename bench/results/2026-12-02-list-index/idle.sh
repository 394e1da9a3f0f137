#!/usr/bin/env bash
# idle.sh BINDIR N OUT : PSS per idle receive connection, 2 workers (default)
set -eu
cd /work/main; . tools/lib.sh
B=$1; N=$2; OUT=$3
export SWITCHBOARD_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
ulimit -n $(ulimit -Hn)
D=$(mktemp -d); : > $D/out
$B/switchboard serve --listen 127.0.0.1:0 --admin off --log-level warn --heartbeat 60s >$D/out 2>$D/log &
PID=$!; A=$(wait_listening $D/out)
$B/switchboard-bench idle --server $A --pid $PID --connections $N --sources 4 --hold 2 --warmup 100 > $OUT 2>/dev/null
kill $PID; wait $PID 2>/dev/null || true
python3 -c "import json; d=json.load(open('$OUT')); print('$B'.split('/')[-2], $N, d['pss_bytes_per_conn'], d['pss_bytes_per_conn_cold'])"

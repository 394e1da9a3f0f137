#!/usr/bin/env bash
# retmem.sh NAME BINDIR OUTDIR: 1 worker, 64 B relay for 20 s (1,000 receivers: each
# client's retained log fills to --hold-max-messages 1000), prints messages and server PSS after.
set -eu
cd /work/main; . tools/lib.sh
NAME=$1; BIN=$2; D=$3; mkdir -p $D
export SWITCHBOARD_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
ulimit -n $(ulimit -Hn)
: > $D/out-$NAME
$BIN/switchboard serve --listen 127.0.0.1:0 --admin off --log-level warn --heartbeat 60s --workers 1 >$D/out-$NAME 2>$D/log-$NAME &
PID=$!; A=$(wait_listening $D/out-$NAME)
/work/main/target/bench-head/release/switchboard-bench relay --server $A --pid $PID --size 64 --duration 20 > $D/relay-$NAME.json 2>/dev/null
kill $PID; wait $PID 2>/dev/null || true
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], 'delivered', d['delivered'], 'pss_before_kb', d['server_pss_kb_before'], 'pss_after_kb', d['server_pss_kb_after'], 'rss_after_kb', d['server_rss_kb_after'], 'exactly_once', d['exactly_once']['ok'])" $D/relay-$NAME.json $NAME

#!/usr/bin/env bash
# seg.sh TARGET : TCP segments per message on loopback (both ends), pinned
set -eu
cd /work/main; . tools/lib.sh
T=$1; D=$(mktemp -d)
BIN=${BIN:-$(tools/bench-build)}
export SWITCHBOARD_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
ulimit -n $(ulimit -Hn)
if [ $T = redis ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  taskset -c 0 redis-server --bind 127.0.0.1 --port $port --protected-mode no --save "" --appendonly no --maxclients 10000 >$D/out 2>&1 &
  PID=$!; A=127.0.0.1:$port; wait_connect $A 100
else
  : > $D/out
  taskset -c 0 $BIN/switchboard serve --listen 127.0.0.1:0 --admin off --log-level warn --heartbeat 60s --workers 1 >$D/out 2>$D/log &
  PID=$!; A=$(wait_listening $D/out)
fi
taskset -c 1 $BIN/switchboard-bench relay --target $T --server $A --pid $PID --size 64 --duration 10 > $D/relay.json 2>/dev/null &
BP=$!
sleep 3; nstat -n; sleep 5; nstat -z > $D/nstat.txt
wait $BP || true
kill $PID; wait $PID 2>/dev/null || true
python3 - $D <<'PY'
import json,sys,re
d=sys.argv[1]; r=json.load(open(d+'/relay.json')); n=r['msgs_per_sec']*5
print(r['msgs_per_sec'])
for l in open(d+'/nstat.txt'):
    f=l.split()
    if len(f)>=2 and f[0] in ('TcpInSegs','TcpOutSegs','TcpExtDelayedACKs','TcpExtTCPHPAcks','TcpExtTCPPureAcks','TcpExtTCPHPHits','TcpExtTCPAutoCorking','TcpExtTCPDelivered'):
        print(f"{f[0]:22s} {int(f[1])/n:.3f}")
PY

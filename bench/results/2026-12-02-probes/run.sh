#!/usr/bin/env bash
# usage: run.sh RATE [EXTRA server flags]   -> prints p50/p99 for switchboard-1w and redis
set -u
cd /work/main
BIN=${BIN:-target/release}
RATE=$1; shift
export SWITCHBOARD_SECRET=abcdefabcdefabcdefabcdef01234567
ulimit -n 20000
D=/tmp/lat/r$RATE; mkdir -p $D
for sys in sb redis; do
  if [ $sys = sb ]; then
    $BIN/switchboard serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-level warn --heartbeat 60s --workers ${WORKERS:-1} "$@" >$D/out 2>$D/log &
    PID=$!; source tools/lib.sh; A=$(wait_listening $D/out); T=switchboard
  else
    L=$(tools/peers start redis $D/redis); PID=$(echo $L | awk '{print $2}'); A=$(echo $L | awk '{print $3}'); T=redis
  fi
  $BIN/switchboard-bench relay --server $A --target $T --pid $PID --duration ${DUR:-6} ${RATE:+--rate $RATE} ${XB:-} > $D/$sys.json 2>/dev/null
  if [ $sys = sb ]; then kill $PID; wait $PID 2>/dev/null; else tools/peers stop $D/redis >/dev/null 2>&1; fi
  python3 - $D/$sys.json $sys <<'PY'
import json,sys
d=json.load(open(sys.argv[1])); l=d.get('latency_us',d)
print(sys.argv[2], int(d['msgs_per_sec']), {k:v for k,v in d.items() if k.startswith('latency') or k.startswith('p5') or k.startswith('p9')}, 'srv', d.get('server_cpu_us_per_msg'),'gen',d.get('generator_cpu_us_per_msg'))
PY
done

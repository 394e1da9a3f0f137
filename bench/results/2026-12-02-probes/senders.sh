#!/usr/bin/env bash
# usage: senders.sh "S1 S2.." CONFIGS...  (sb1 = 1 worker, sb = 2 workers, redis, nchan)
set -u
cd /work/main
BIN=${BIN:-target/release}
SL=$1; shift
export SWITCHBOARD_SECRET=abcdefabcdefabcdefabcdef01234567
ulimit -n 20000
source tools/lib.sh
D=${OUTD:-/tmp/lat/senders}; mkdir -p $D
for s in $SL; do
for cfg in "$@"; do
  case $cfg in
  redis|nchan) L=$(tools/peers start $cfg $D/$cfg); PID=$(echo $L | awk '{print $2}'); A=$(echo $L | awk '{print $3}'); T=$cfg ;;
  sb1|sb) W=0; [ $cfg = sb1 ] && W=1
    $BIN/switchboard serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-level warn --heartbeat 60s --workers $W >$D/out 2>$D/log &
    PID=$!; A=$(wait_listening $D/out); T=switchboard ;;
  esac
  $BIN/switchboard-bench relay --server $A --target $T --pid $PID --duration ${DUR:-7} --senders $s ${RATE:+--rate $RATE} --window ${WINDOW:-1} > $D/$cfg-$s.json 2>/dev/null
  case $cfg in redis|nchan) tools/peers stop $D/$cfg >/dev/null 2>&1 ;; *) kill $PID; wait $PID 2>/dev/null ;; esac
  python3 - $D $cfg-$s <<'PY'
import json,sys
D=sys.argv[1]; d=json.load(open(D+'/'+sys.argv[2]+'.json'))
l=d['latency_us']
print('%-10s %7d msg/s p50 %6.0f p99 %6.0f srv %.2f gen %.2f ok %s' % (sys.argv[2], d['msgs_per_sec'], l['p50'], l['p99'], d['server_cpu_us_per_msg'], d['generator_cpu_us_per_msg'], d.get('exactly_once',{}).get('ok')))
PY
done; done

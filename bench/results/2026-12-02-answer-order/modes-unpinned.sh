#!/usr/bin/env bash
# usage: modes.sh ROUNDS CONFIGS...   config = sb0 sb1 sb2 redis ; env RATE, WINDOW
set -u
cd /work/main
BIN=${BIN:-target/exp/release}
R=$1; shift
export SWITCHBOARD_SECRET=abcdefabcdefabcdefabcdef01234567
ulimit -n 20000
source tools/lib.sh
D=${D:-/tmp/lat/modes}; mkdir -p $D
EV='syscalls:sys_enter_epoll_wait,context-switches'
for r in $(seq $R); do
for cfg in "$@"; do
  if [ $cfg = redis ]; then
    L=$(tools/peers start redis $D/redis); PID=$(echo $L | awk '{print $2}'); A=$(echo $L | awk '{print $3}'); T=redis
  else
    SB_EXP=${cfg#sb} $BIN/switchboard serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-level warn --heartbeat 60s --workers ${WORKERS:-1} >$D/out 2>$D/log &
    PID=$!; A=$(wait_listening $D/out); T=switchboard
  fi
  /work/main/target/bench-head/release/switchboard-bench relay --server $A --target $T --pid $PID --duration 7 ${RATE:+--rate $RATE} --window ${WINDOW:-1} > $D/$cfg-$r.json 2>/dev/null &
  BP=$!
  sleep 3
  perf stat -x, -e $EV -p $BP -o $D/gen.txt -- sleep 3
  wait $BP
  if [ $cfg = redis ]; then tools/peers stop $D/redis >/dev/null 2>&1; else kill $PID; wait $PID 2>/dev/null; fi
  python3 - $D $cfg-$r <<'PY'
import json,sys
D=sys.argv[1]; d=json.load(open(D+'/'+sys.argv[2]+'.json')); n=d['msgs_per_sec']*3
ev={}
for l in open(D+'/gen.txt'):
    p=l.strip().split(',')
    if len(p)>3 and p[0].replace('.','').isdigit(): ev[p[2].replace('syscalls:sys_enter_','')]=float(p[0])/n
l=d['latency_us']
print('%-8s %7d msg/s p50 %6.0f p99 %6.0f p999 %6.0f srv %.2f gen %.2f gen_epoll/msg %.3f gen_cs/msg %.3f lost %s' % (sys.argv[2], d['msgs_per_sec'], l['p50'], l['p99'], l['p999'], d['server_cpu_us_per_msg'], d['generator_cpu_us_per_msg'], ev.get('epoll_wait',0), ev.get('context-switches',0), d.get('exactly_once', d.get('lost'))))
PY
done; done

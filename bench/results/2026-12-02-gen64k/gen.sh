#!/usr/bin/env bash
set -u
cd /work/main
export SWITCHBOARD_SECRET=abcdefabcdefabcdefabcdef01234567
ulimit -n 20000
source tools/lib.sh
D=/tmp/lat/gen; mkdir -p $D
SIZE=${SIZE:-65000}
for r in 1 2; do for g in old new; do for cfg in sb1 redis; do
  G=target/bench-head/release/switchboard-bench; [ $g = new ] && G=target/release/switchboard-bench
  if [ $cfg = redis ]; then L=$(tools/peers start redis $D/redis); PID=$(echo $L | awk '{print $2}'); A=$(echo $L | awk '{print $3}'); T=redis
  else target/release/switchboard serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-level warn --heartbeat 60s --workers 1 >$D/out 2>$D/log & PID=$!; A=$(wait_listening $D/out); T=switchboard; fi
  $G relay --server $A --target $T --pid $PID --duration 7 --size $SIZE > $D/$g-$cfg-$r.json 2>/dev/null
  if [ $cfg = redis ]; then tools/peers stop $D/redis >/dev/null 2>&1; else kill $PID; wait $PID 2>/dev/null; fi
  python3 -c "
import json; d=json.load(open('$D/$g-$cfg-$r.json')); print('$g $cfg $r', int(d['msgs_per_sec']), 'p99', d['latency_us']['p99'], 'srv', d['server_cpu_us_per_msg'], 'gen', d['generator_cpu_us_per_msg'], d['exactly_once']['ok'])"
done; done; done

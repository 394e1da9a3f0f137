#!/usr/bin/env bash
set -u
cd /work/main
export SWITCHBOARD_SECRET=abcdefabcdefabcdefabcdef01234567
ulimit -n 20000
source tools/lib.sh
D=${OUTD:-/tmp/lat/ab65}; mkdir -p $D
SIZE=${SIZE:-65000}
for r in 1 2 3; do for v in old new; do
  S=target/bench-head/release/switchboard; [ $v = new ] && S=target/release/switchboard
  $S serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-level warn --heartbeat 60s --workers ${WORKERS:-1} >$D/out 2>$D/log & PID=$!; A=$(wait_listening $D/out)
  target/release/switchboard-bench relay --server $A --pid $PID --duration 6 --size $SIZE > $D/$v-$r.json 2>/dev/null
  kill $PID; wait $PID 2>/dev/null
  python3 -c "
import json; d=json.load(open('$D/$v-$r.json')); print('$v $r', int(d['msgs_per_sec']), 'p99', d['latency_us']['p99'], 'srv', d['server_cpu_us_per_msg'], 'user', d['server_cpu_user_us_per_msg'], 'sys', d['server_cpu_sys_us_per_msg'], 'gen', d['generator_cpu_us_per_msg'], d['exactly_once']['ok'])"
done; done

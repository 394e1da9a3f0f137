#!/usr/bin/env bash
# spin.sh ROUNDS SPINS...  alternating switchboard(1 worker)/redis per spin value
set -u
cd /work/main; source tools/lib.sh
B=target/release; R=$1; shift
export SWITCHBOARD_SECRET=abcdefabcdefabcdefabcdef01234567
ulimit -n 20000
D=${OUTD:-/tmp/prof/spin}; mkdir -p $D
for r in $(seq $R); do for sp in "$@"; do for sys in sb redis; do
  if [ $sys = sb ]; then
    $B/switchboard serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-level warn --heartbeat 60s --workers 1 >$D/out 2>$D/log &
    PID=$!; A=$(wait_listening $D/out); T=switchboard
  else
    L=$(tools/peers start redis $D/redis); PID=$(echo $L | awk '{print $2}'); A=$(echo $L | awk '{print $3}'); T=redis
  fi
  $B/switchboard-bench relay --server $A --target $T --pid $PID --duration 8 --spin $sp > $D/$sys-spin$sp-$r.json 2>/dev/null
  if [ $sys = sb ]; then kill $PID; wait $PID 2>/dev/null; else tools/peers stop $D/redis >/dev/null 2>&1; fi
  python3 -c "
import json,sys; d=json.load(open(sys.argv[1])); m=d['delivered']
print(sys.argv[2], 'msg/s %6.0f'%d['msgs_per_sec'], 'p50 %5.0f p99 %5.0f'%(d['latency_us']['p50'],d['latency_us']['p99']), 'srv %.2f (sys %.2f)'%(d['server_cpu_us_per_msg'], d['server_cpu_sys_secs']*1e6/m), 'gen %.2f'%d['generator_cpu_us_per_msg'], 'ok', d['exactly_once']['ok'])" $D/$sys-spin$sp-$r.json $sys-spin$sp-$r
done; done; done

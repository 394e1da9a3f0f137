#!/usr/bin/env bash
# envab.sh REPS OUTDIR : same binary, SB_DEFER_ALL off/on alternating; pinned server cpu0, generator cpu1
set -eu
cd /work/main; . tools/lib.sh
N=$1; D=$2; mkdir -p $D
BIN=${BIN:-/tmp/g}
export SWITCHBOARD_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
ulimit -n $(ulimit -Hn)
for r in $(seq 1 $N); do for mode in off on; do
  : > $D/out
  if [ $mode = on ]; then export SB_DEFER_ALL=1; else unset SB_DEFER_ALL; fi
  ${SERVER_PIN:-taskset -c 0} $BIN/sb-exp serve --listen 127.0.0.1:0 --admin off --log-level warn --heartbeat 60s --workers 1 >$D/out 2>$D/log &
  PID=$!; A=$(wait_listening $D/out)
  unset SB_DEFER_ALL
  ${BENCH_PIN:-taskset -c 1} $BIN/switchboard-bench relay --target switchboard --server $A --pid $PID --size ${SIZE:-64} --window ${WINDOW:-1} --receivers ${RECEIVERS:-1000} --duration ${DURATION:-8} > $D/relay-$mode-$r.json 2>/dev/null
  kill $PID; wait $PID 2>/dev/null || true
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], d['msgs_per_sec'], d['latency_us']['p99'] if 'latency_us' in d else d.get('p99_us'), round(d.get('server_cpu_user_us_per_msg',0)+d.get('server_cpu_sys_us_per_msg',0),2))" $D/relay-$mode-$r.json $mode
done; done

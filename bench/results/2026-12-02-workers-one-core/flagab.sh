#!/usr/bin/env bash
# flagab.sh ROUNDS OUTDIR "flagsA" "flagsB": pinned relay runs alternating two flag sets
set -eu
cd /work/main; . tools/lib.sh
R=$1; D=$2; FA=$3; FB=$4; mkdir -p $D
BIN=${BIN:-$(tools/bench-build)}
export SWITCHBOARD_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
ulimit -n $(ulimit -Hn)
one() { # name flags
  : > $D/out
  taskset -c 0 $BIN/switchboard serve --listen 127.0.0.1:0 --admin off --log-level warn --heartbeat 60s $2 >$D/out 2>$D/log &
  PID=$!; A=$(wait_listening $D/out)
  taskset -c 1 $BIN/switchboard-bench relay --server $A --pid $PID --size ${SIZE:-64} --duration ${DUR:-8} > $D/$1.json 2>/dev/null
  kill $PID; wait $PID 2>/dev/null || true
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[-1], d['msgs_per_sec'], d['server_cpu_us_per_msg'], d.get('server_cpu_user_us_per_msg'), d.get('server_cpu_sys_us_per_msg'), d['latency_us']['p99'] if 'p99' in d['latency_us'] else d['latency_us'], d['exactly_once']['ok'])" $D/$1.json
}
for r in $(seq $R); do one A-$r "$FA"; one B-$r "$FB"; done

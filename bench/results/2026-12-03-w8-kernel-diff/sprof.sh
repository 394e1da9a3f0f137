#!/usr/bin/env bash
# gprof.sh TARGET OUTDIR : pinned server (cpu0) + generator (cpu1), perf record the GENERATOR
set -eu
cd /work/main; . tools/lib.sh
T=$1; D=$2; mkdir -p $D
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
taskset -c 1 $BIN/switchboard-bench relay --target $T --server $A --pid $PID --size ${SIZE:-64} --window ${WINDOW:-1} --receivers ${RECEIVERS:-1000} --duration 12 > $D/relay.json 2>/dev/null &
BP=$!
sleep 3
perf record -e cpu-clock -F 2999 -p $PID -o $D/perf.data -- sleep 6 >/dev/null 2>&1
wait $BP || true
kill $PID; wait $PID 2>/dev/null || true
perf report -i $D/perf.data --no-children --sort dso,symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60 > $D/top.txt
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['msgs_per_sec'], d.get('server_cpu_user_us_per_msg'), d.get('server_cpu_sys_us_per_msg'), {k:v for k,v in d.items() if 'bench' in k or 'client' in k or 'gen' in k})" $D/relay.json

#!/usr/bin/env bash
# pf.sh TARGET OUTDIR : server pinned to cpu0, generator to cpu1, 65,000 B messages
# (SIZE), 1,000 receivers, one in flight; `perf stat` counts the server's page faults
# and context switches over 6 s of the run, `perf record` (cpu-clock, kernel + user)
# profiles it over the next 6 s.
set -eu
cd /work/main; . tools/lib.sh
T=$1; D=$2; mkdir -p $D
BIN=${BIN:-$(tools/bench-build)}
export SWITCHBOARD_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
ulimit -n $(ulimit -Hn)
if [ $T = switchboard ]; then
  : > $D/out
  taskset -c 0 $BIN/switchboard serve --listen 127.0.0.1:0 --admin off --log-level warn --heartbeat 60s --workers 1 ${SB_ARGS:-} >$D/out 2>$D/log &
  PID=$!; A=$(wait_listening $D/out)
else
  read -r _ PID A < <(taskset -c 0 tools/peers start $T $D/peer)
fi
taskset -c 1 $BIN/switchboard-bench relay --target $T --server $A --pid $PID --size ${SIZE:-65000} --window ${WINDOW:-1} --receivers ${RECEIVERS:-1000} --duration 16 > $D/relay.json 2>/dev/null &
BP=$!
sleep 3
perf stat -e page-faults,context-switches,cpu-clock -p $PID -o $D/stat.txt -- sleep 6 >/dev/null 2>&1
perf record -e cpu-clock -F 2999 -p $PID -o $D/perf.data -- sleep 6 >/dev/null 2>&1
wait $BP || true
if [ $T = switchboard ]; then kill $PID; wait $PID 2>/dev/null || true; else tools/peers stop $D/peer; fi
perf report -i $D/perf.data --no-children --sort dso,symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -70 > $D/top.txt
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], d['msgs_per_sec'], 'user', d.get('server_cpu_user_us_per_msg'), 'sys', d.get('server_cpu_sys_us_per_msg'))" $D/relay.json $T
grep -E "page-faults|context-switches" $D/stat.txt

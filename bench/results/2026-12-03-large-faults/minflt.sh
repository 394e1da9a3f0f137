#!/usr/bin/env bash
# minflt.sh BINDIR OUTDIR : the server (BINDIR/switchboard, 1 worker, with $SB_ARGS; or
# TARGET=redis / mosquitto, started by tools/peers) pinned to cpu0, the
# generator to cpu1, 65,000 B messages (SIZE), 1,000 receivers, one in flight, 10 s;
# prints msg/s, server CPU per message and the server's minor page faults per message
# (/proc/PID/stat field 10, no perf attached): over the whole run, and in the steady
# state (from 8 s into the run to 18 s, once the receivers' replay logs are full).
set -eu
cd /work/main; . tools/lib.sh
B=$1; D=$2; mkdir -p $D
export SWITCHBOARD_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
ulimit -n $(ulimit -Hn)
T=${TARGET:-switchboard}
if [ $T = switchboard ]; then
  : > $D/out
  taskset -c 0 $B/switchboard serve --listen 127.0.0.1:0 --admin off --log-level warn --heartbeat 60s --workers 1 ${SB_ARGS:-} >$D/out 2>$D/log &
  PID=$!; A=$(wait_listening $D/out)
else
  read -r _ PID A < <(taskset -c 0 tools/peers start $T $D/peer)
fi
f0=$(awk '{print $10}' /proc/$PID/stat)
taskset -c 1 $B/switchboard-bench relay --target $T --server $A --pid $PID --size ${SIZE:-65000} --receivers 1000 --duration 20 > $D/relay.json 2>$D/relay.err &
BP=$!
for _ in $(seq 200); do grep -q "t=8s" $D/relay.err 2>/dev/null && break; sleep 0.1; done
s0=$(awk '{print $10}' /proc/$PID/stat); d0=$(grep -o "t=8s delivered=[0-9]*" $D/relay.err | grep -o "[0-9]*$")
for _ in $(seq 200); do grep -q "t=18s" $D/relay.err 2>/dev/null && break; sleep 0.1; done
s1=$(awk '{print $10}' /proc/$PID/stat); d1=$(grep -o "t=18s delivered=[0-9]*" $D/relay.err | grep -o "[0-9]*$")
wait $BP
f1=$(awk '{print $10}' /proc/$PID/stat)
if [ $T = switchboard ]; then kill $PID; wait $PID 2>/dev/null || true; else tools/peers stop $D/peer; fi
python3 -c "
import json,sys; d=json.load(open(sys.argv[1])); n=d['delivered']
a=[int(x) for x in sys.argv[3:]]
print(sys.argv[2], d['msgs_per_sec'], 'msg/s; server', d['server_cpu_user_us_per_msg'], '+', d['server_cpu_sys_us_per_msg'], 'us/msg; minor faults/msg', round((a[1]-a[0])/n, 3), 'steady state', round((a[3]-a[2])/max(1,a[5]-a[4]), 3))
" $D/relay.json "$T $B ${SB_ARGS:-}" $f0 $f1 $s0 $s1 $d0 $d1

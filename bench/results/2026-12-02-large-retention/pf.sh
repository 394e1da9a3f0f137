#!/usr/bin/env bash
# pf.sh OUTDIR [server args...] : 65,000 B relay, pinned, page faults + cpu per message
set -eu
cd /work/main; . tools/lib.sh
D=$1; shift; mkdir -p $D
BIN=${BIN:-$(tools/bench-build)}
export SWITCHBOARD_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
ulimit -n $(ulimit -Hn)
: > $D/out
taskset -c 0 $BIN/switchboard serve --listen 127.0.0.1:0 --admin off --log-level warn --heartbeat 60s --workers 1 "$@" >$D/out 2>$D/log &
PID=$!; A=$(wait_listening $D/out)
taskset -c 1 $BIN/switchboard-bench relay --target switchboard --server $A --pid $PID --size ${SIZE:-65000} --duration 12 > $D/relay.json 2>/dev/null &
BP=$!
sleep 3
perf stat -e page-faults,minor-faults -p $PID -o $D/stat.txt -- sleep 6 >/dev/null 2>&1
wait $BP || true
kill $PID; wait $PID 2>/dev/null || true
python3 - $D <<'PY'
import json,sys,re
d=sys.argv[1]; r=json.load(open(d+'/relay.json')); n=r['msgs_per_sec']*6
out=[r['msgs_per_sec'], r.get('server_cpu_user_us_per_msg'), r.get('server_cpu_sys_us_per_msg'), r.get('server_pss_kb_after')]
for l in open(d+'/stat.txt'):
    m=re.match(r'\s*([\d,]+)\s+(page-faults|minor-faults)',l)
    if m: out.append((m.group(2), round(int(m.group(1).replace(',',''))/n,3)))
print(out)
PY

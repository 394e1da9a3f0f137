#!/usr/bin/env bash
# syscall/cs counts per message for generator and server. usage: sc.sh sb|redis [server flags]
set -u
cd /work/main
BIN=${BIN:-target/release}
sys=$1; shift
export SWITCHBOARD_SECRET=abcdefabcdefabcdefabcdef01234567
ulimit -n 20000
D=/tmp/lat/sc; mkdir -p $D
if [ $sys = sb ]; then
  $BIN/switchboard serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-level warn --heartbeat 60s --workers ${WORKERS:-1} "$@" >$D/out 2>$D/log &
  PID=$!; source tools/lib.sh; A=$(wait_listening $D/out); T=switchboard
else
  L=$(tools/peers start redis $D/redis); PID=$(echo $L | awk '{print $2}'); A=$(echo $L | awk '{print $3}'); T=redis
fi
$BIN/switchboard-bench relay --server $A --target $T --pid $PID --duration 8 ${RATE:+--rate $RATE} > $D/$sys.json 2>/dev/null &
BP=$!
sleep 3
EV='syscalls:sys_enter_epoll_wait,syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev,context-switches'
perf stat -x, -e $EV -p $PID -o $D/srv.txt -- sleep 3 &
perf stat -x, -e $EV -p $BP -o $D/gen.txt -- sleep 3
wait $BP
if [ $sys = sb ]; then kill $PID; wait $PID 2>/dev/null; else tools/peers stop $D/redis >/dev/null 2>&1; fi
python3 - $D $sys <<'PY'
import json,sys
D=sys.argv[1]; d=json.load(open(D+'/'+sys.argv[2]+'.json')); n=d['msgs_per_sec']*3
for w in ['srv','gen']:
  out=[]
  for l in open(D+'/'+w+'.txt'):
    p=l.strip().split(',')
    if len(p)>3 and p[0].replace('.','').isdigit():
      out.append('%s=%.3f'%(p[2].replace('syscalls:sys_enter_',''), float(p[0])/n))
  print(sys.argv[2], w, int(d['msgs_per_sec']), ' '.join(out))
PY

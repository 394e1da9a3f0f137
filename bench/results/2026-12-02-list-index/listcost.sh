#!/usr/bin/env bash
# listcost.sh BINDIR N OUTFILE : time GET /v1/clients of a 1-client account while the
# worker holds N idle sessions of another account (1 worker, server on cpu0, clients cpu1)
set -eu
cd /work/main; . tools/lib.sh
BIN=$1; N=$2; OUT=$3
export SWITCHBOARD_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
ulimit -n $(ulimit -Hn)
D=$(mktemp -d)
taskset -c 0 $BIN/switchboard serve --listen 127.0.0.1:0 --admin off --log-level warn --heartbeat 60s --workers 1 >$D/out 2>$D/log &
PID=$!; A=$(wait_listening $D/out)
taskset -c 1 $BIN/switchboard-bench idle --server $A --pid $PID --connections $N --sources 4 --account big --hold 600 >$D/idle.json 2>$D/idle.err &
IP=$!
until grep -q "holding" $D/idle.err 2>/dev/null; do sleep 0.5; done
TOK=$($BIN/switchboard token --account small --client console --role console)
taskset -c 1 python3 - "$A" "$TOK" "$OUT" "$N" "$PID" <<'PY'
import http.client, sys, time, json, statistics
host, port = sys.argv[1].rsplit(':', 1)
tok, out, n, pid = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
import os
def cpu():
    f = open(f'/proc/{pid}/stat').read().rsplit(')',1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')
c = http.client.HTTPConnection(host, int(port), timeout=10)
lat = []
for i in range(8000):
    if i == 500: c0 = cpu()
    t = time.perf_counter()
    c.request('GET', '/v1/clients', headers={'Authorization': 'Bearer ' + tok})
    r = c.getresponse(); body = r.read()
    lat.append(time.perf_counter() - t)
    assert r.status == 200, (r.status, body)
c1 = cpu()
lat = lat[500:]
res = {'sessions_other_account': n, 'lists': len(lat), 'median_us': statistics.median(lat)*1e6,
       'server_cpu_us_per_list': (c1 - c0) / len(lat) * 1e6, 'p90_us': sorted(lat)[int(len(lat)*0.9)]*1e6, 'body': body.decode()}
json.dump(res, open(out, 'w')); print(json.dumps(res))
PY
kill $IP $PID 2>/dev/null; wait 2>/dev/null || true

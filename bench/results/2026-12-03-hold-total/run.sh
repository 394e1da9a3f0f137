#!/usr/bin/env bash
# run.sh OUTDIR : 65,000 B relay (1,000 receivers, 50 senders, one in flight),
# 1 worker pinned to core 0, generator on core 1; alternates the default
# --hold-total-bytes (auto: a quarter of the memory, 6 GiB here, which this
# load does not reach) with 256MiB, REPS times each. Prints msg/s, server CPU
# per message (user, system), server PSS after the run and the retained bytes.
set -eu
cd /work/main; . tools/lib.sh
D=$1; mkdir -p $D
BIN=${BIN:-$(tools/bench-build)}
export SWITCHBOARD_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
ulimit -n $(ulimit -Hn)
one() { # name, extra server args...
  local n=$1; shift
  taskset -c 0 $BIN/switchboard serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-level warn \
      --workers 1 "$@" >$D/$n.out 2>$D/$n.log &
  local pid=$!; local a; a=$(wait_listening $D/$n.out)
  taskset -c 1 $BIN/switchboard-bench relay --target switchboard --server $a --pid $pid \
      --size 65000 --duration ${DURATION:-10} > $D/$n.json 2>/dev/null
  local adm; adm=$(sed -n 's|^switchboard admin on http://||p' $D/$n.out | head -1)
  curl -s http://$adm/metrics | grep -E '^switchboard_(retained_bytes|retained_messages|hold_total_bytes|retained_memory_trims_total|messages_dropped_total) ' > $D/$n.metrics
  kill $pid; wait $pid 2>/dev/null || true
}
for r in $(seq 1 ${REPS:-3}); do
  one default-$r
  one cap256m-$r --hold-total-bytes 256MiB
done
python3 - $D <<'PY'
import json,sys,glob,os
d=sys.argv[1]
for f in sorted(glob.glob(d+'/*.json')):
    r=json.load(open(f)); n=os.path.basename(f)[:-5]
    m=dict(l.split() for l in open(f[:-5]+'.metrics'))
    print(f"{n:12} {r['msgs_per_sec']:8.0f} msg/s  cpu {r['server_cpu_user_us_per_msg']:.2f}+{r['server_cpu_sys_us_per_msg']:.2f} us/msg  "
          f"pss_after {r['server_pss_kb_after']/1024:.0f} MiB  retained {int(float(m['switchboard_retained_bytes']))/2**20:.0f} MiB  "
          f"trims {m['switchboard_retained_memory_trims_total']}  dropped {m['switchboard_messages_dropped_total']}  exactly_once {r['exactly_once']}")
PY

#!/usr/bin/env bash
# Builds and runs the io_uring send-batching probe. ~3.5 min on the 2-core VM.
# Needs: gcc, liburing-dev (apt-get install -y liburing-dev), perf (optional).
set -euo pipefail
cd "$(dirname "$0")"
ROUNDS=${ROUNDS:-500}   # rounds of 1000 messages per variant per repetition
REPS=${REPS:-5}
gcc -O2 -Wall -Wextra -o probe probe.c -luring

steal() { awk '/^cpu /{print $9}' /proc/stat; }   # jiffies (USER_HZ) of steal, all cpus
{
  echo "date: $(date -u +%FT%TZ)  kernel: $(uname -r)  nproc: $(nproc)  liburing: $(dpkg-query -W -f='${Version}' liburing-dev 2>/dev/null || echo ?)"
  echo "loadavg_start: $(cut -d' ' -f1-3 /proc/loadavg)  steal_jiffies_start: $(steal)"
} > machine.txt

# 1) main run: all variants interleaved per repetition (a,b8,...,d1000, a,b8,...)
ulimit -n 20000
if command -v perf >/dev/null; then
  perf stat -e task-clock,context-switches,cpu-migrations -o perf-main.txt \
    ./probe -r "$ROUNDS" -k "$REPS" > main.txt 2> main.log
else
  ./probe -r "$ROUNDS" -k "$REPS" > main.txt 2> main.log
fi
cat main.txt

# 2) focused run with an A/A control (two copies of (a)) and the variant order
#    rotated every repetition (removes position bias); 6 reps = each start position once.
./probe -R -r "$ROUNDS" -k 6 -v a1,b45,c45,c128,t45,a2 > focused.txt 2> focused.log
cat focused.txt

# 3) whole-process `perf stat -e task-clock` cross-check: one variant per process,
#    3 interleaved repetitions; process = setup + warm-up + write + read phases.
if command -v perf >/dev/null; then
  : > perf-variants.txt
  for rep in 1 2 3; do
    for v in a b45 c45 c1000; do
      tc=$(perf stat -x, -e task-clock ./probe -q -r 300 -k 1 -v "$v" 2>&1 >/dev/null | awk -F, '/task-clock/{print $1}')
      echo "rep=$rep variant=$v task_clock_ms=$tc" | tee -a perf-variants.txt
    done
  done
fi

echo "loadavg_end: $(cut -d' ' -f1-3 /proc/loadavg)  steal_jiffies_end: $(steal)" >> machine.txt
cat machine.txt

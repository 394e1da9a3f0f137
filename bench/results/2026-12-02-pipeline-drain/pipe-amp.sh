#!/usr/bin/env bash
# pipe-amp.sh BINDIR : server CPU to answer one client's 7,000 small pipelined requests
# (sent in one write of about 245 KB, read back as they come), 1 worker, 5 batches
set -eu
cd /work/main; . tools/lib.sh
B=$1
export SWITCHBOARD_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
D=$(mktemp -d); : > $D/out
$B/switchboard serve --listen 127.0.0.1:0 --admin off --log-level warn --workers 1 >$D/out 2>$D/log &
PID=$!; A=$(wait_listening $D/out)
python3 - "$A" "$PID" <<'PY'
import socket, sys, os, time
host, port = sys.argv[1].rsplit(':', 1); pid = sys.argv[2]
def cpu():
    t = 0
    for d in os.listdir(f'/proc/{pid}/task'):
        t += int(open(f'/proc/{pid}/task/{d}/schedstat').read().split()[0])
    return t / 1e9
N = 7000
req = b"GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n"
res = []
for rep in range(5):
    s = socket.create_connection((host, int(port)))
    c0 = cpu(); t0 = time.time()
    s.sendall(req * N)
    got = b""; n = 0
    while n < N:
        d = s.recv(1 << 20)
        if not d: break
        got += d
        n = got.count(b"HTTP/1.1 404")
    s.close()
    res.append((n, round((cpu() - c0) * 1000, 2), round((time.time() - t0) * 1000)))
print("answers, server CPU ms, wall ms:", res)
PY
kill $PID; wait $PID 2>/dev/null || true

#!/usr/bin/env bash
# Disconnect detection: clean close and silent loss.
#
#   bench/detect.sh [COUNT] [TRIALS]      (defaults 100 clients, 3 trials per mode)
#
# Runs everything inside a new network namespace of its own (`unshare -n`, root needed):
# only a loopback interface, so the traffic and the firewall rule stay inside it. The
# server listens on 127.0.0.1 there; the silently lost clients connect from 127.0.0.9,
# and "loss" is an nftables (fallback: iptables) rule in that namespace's input hook that
# drops every packet from or to 127.0.0.9, while the client keeps its sockets open.
# The server runs with its defaults (heartbeat 60s, keepalive 15s/5s x3, user timeout 30s)
# unless SERVER_ARGS says otherwise. JSON on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-100}
TRIALS=${2:-3}
BIN=${BIN:-$(tools/bench-build)}
SWITCHBOARD_SECRET=${SWITCHBOARD_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export SWITCHBOARD_SECRET BIN COUNT TRIALS SERVER_ARGS
exec unshare -n bash -c '
set -euo pipefail
ip link set lo up
if command -v nft >/dev/null && nft add table inet sbdetect 2>/dev/null; then
    nft delete table inet sbdetect
    DROP="nft add table inet sbdetect && nft add chain inet sbdetect in \"{ type filter hook input priority 0; }\" && nft add rule inet sbdetect in ip saddr 127.0.0.9 drop && nft add rule inet sbdetect in ip daddr 127.0.0.9 drop"
    UNDROP="nft delete table inet sbdetect"
else
    DROP="iptables -I INPUT -s 127.0.0.9 -j DROP && iptables -I INPUT -d 127.0.0.9 -j DROP"
    UNDROP="iptables -D INPUT -s 127.0.0.9 -j DROP; iptables -D INPUT -d 127.0.0.9 -j DROP"
fi
DIR=$(mktemp -d)
"$BIN/switchboard" serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-level warn ${SERVER_ARGS:-} >"$DIR/out" 2>"$DIR/log" &
PID=$!
trap "kill $PID 2>/dev/null || true" EXIT
for _ in $(seq 100); do grep -q "admin on" "$DIR/out" 2>/dev/null && break; sleep 0.05; done
ADDR=$(sed -n "s|^switchboard listening on http://||p" "$DIR/out")
ADMIN=$(sed -n "s|^switchboard admin on http://||p" "$DIR/out")
echo "detect.sh: server $PID on $ADDR, admin $ADMIN; drop rule: $DROP" >&2
"$BIN/switchboard-bench" detect --server "$ADDR" --admin "$ADMIN" --mode both --count "$COUNT" --trials "$TRIALS" \
    --drop-cmd "$DROP" --undrop-cmd "$UNDROP"
'

#!/usr/bin/env bash
# Idle-connection memory benchmark for Switchboard.
#
#   bench/idle.sh N [WORKERS]
#
# Builds the release binaries, starts `switchboard serve` with a random secret
# on a free loopback port (--heartbeat 60s; WORKERS defaults to 0 = one per
# core), opens N idle /v1/receive connections with `switchboard-bench idle`,
# prints its JSON summary on stdout and stops the server.
#
# Limits: every connection costs one fd in the generator and one in the
# server. The hard RLIMIT_NOFILE on the measurement machine is 20,000 per
# process, so the server can hold at most ~19,900 connections and one run
# against one server is limited to ~19,000. Generators are spread over
# ceil(N / 19000) processes (each with its own fd limit), which matters only
# once the server's limit is larger. Source addresses: one loopback address
# (127.0.0.2, ...) per 10,000 connections, at least 2.
#
# TLS=1: generates a self-signed P-256 certificate for localhost/127.0.0.1
# with openssl in the temp dir, serves TLS (--tls-cert/--tls-key, --admin off)
# and connects with `switchboard-bench idle --tls --ca` (rustls clients).
#
# BIN=DIR: run the server binary DIR/switchboard (e.g. target/ab/bin-<commit>, built by
# tools/ab, or the directory tools/bench-build prints) instead of the working tree's; the
# load generator is still the working tree's (built here), so two servers can be compared
# with the same generator.
#
# Extra arguments for the bench can be given in BENCH_ARGS (e.g.
# BENCH_ARGS="--rate 5000 --hold 10"). Server log: $TMPDIR/switchboard-idle.*/server.log
set -euo pipefail

N=${1:?usage: bench/idle.sh N [WORKERS]}
WORKERS=${2:-0}
cd "$(dirname "$0")/.."

if [ -n "${BIN:-}" ]; then
    [ -x "$BIN/switchboard" ] || { echo "idle.sh: no $BIN/switchboard" >&2; exit 2; }
    SERVER_BIN=$BIN/switchboard
    cargo build --release --quiet --bin switchboard-bench >&2
else
    SERVER_BIN=target/release/switchboard
    cargo build --release --quiet --bin switchboard --bin switchboard-bench >&2
fi

ulimit -n "$(ulimit -Hn)"
HARD=$(ulimit -Hn)
if [ "$N" -gt $((HARD - 100)) ]; then
    echo "idle.sh: warning: N=$N exceeds what the server can hold with an fd limit of $HARD per process" >&2
fi

SOURCES=$(( (N + 9999) / 10000 )); [ "$SOURCES" -lt 2 ] && SOURCES=2
PROCS=$(( (N + 18999) / 19000 ))

DIR=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-idle.XXXXXX")
SWITCHBOARD_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SWITCHBOARD_SECRET

SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

SERVER_ARGS=(--admin 127.0.0.1:0)
CLIENT_ARGS=()
if [ "${TLS:-0}" = 1 ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$DIR/k.pem" -out "$DIR/c.pem" -days 2 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>"$DIR/openssl.log" \
        || { echo "idle.sh: openssl failed:" >&2; cat "$DIR/openssl.log" >&2; exit 1; }
    SERVER_ARGS=(--admin off --tls-cert "$DIR/c.pem" --tls-key "$DIR/k.pem")
    CLIENT_ARGS=(--tls --ca "$DIR/c.pem")
fi

# Port 0: the kernel picks a free port; the server prints the address it got.
"$SERVER_BIN" serve --listen 127.0.0.1:0 "${SERVER_ARGS[@]}" --log-level warn --workers "$WORKERS" --heartbeat 60s \
    >"$DIR/server.out" 2>"$DIR/server.log" &
SERVER_PID=$!
ADDR=
for _ in $(seq 100); do
    ADDR=$(sed -n 's|^switchboard listening on https\{0,1\}://||p' "$DIR/server.out" | head -1)
    [ -n "$ADDR" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "idle.sh: server exited:" >&2; cat "$DIR/server.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$ADDR" ] || { echo "idle.sh: server did not report its address" >&2; exit 1; }
echo "idle.sh: server pid $SERVER_PID on $ADDR (workers=$WORKERS, tls=${TLS:-0}, server $SERVER_BIN), N=$N sources=$SOURCES procs=$PROCS" >&2

# shellcheck disable=SC2086
target/release/switchboard-bench idle --server "$ADDR" --connections "$N" --sources "$SOURCES" \
    --procs "$PROCS" --pid "$SERVER_PID" "${CLIENT_ARGS[@]}" ${BENCH_ARGS:-}

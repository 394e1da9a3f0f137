# Shell helpers shared by the tools (sourced, not run).

# wait_listening FILE [TRIES]: waits until the `switchboard serve` whose stdout goes to
# FILE prints its "listening on" line and accepts a connection, then prints the address
# (host:port). Tries every 0.1 s, TRIES times (default 100); prints nothing and fails if
# the line never came. The address line can come just before every worker accepts (one
# run saw ECONNREFUSED right after it), hence the connect.
wait_listening() {
    local file=$1 tries=${2:-100} addr=
    for _ in $(seq "$tries"); do
        addr=$(sed -n 's|^switchboard listening on http://||p' "$file" | head -1)
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || return 1
    wait_connect "$addr" "$tries" || return 1
    echo "$addr"
}

# wait_connect HOST:PORT [TRIES]: waits until a TCP connect to HOST:PORT succeeds
# (every 0.05 s, TRIES times, default 100); fails if it never does.
wait_connect() {
    local addr=$1 tries=${2:-100}
    for _ in $(seq "$tries"); do
        (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

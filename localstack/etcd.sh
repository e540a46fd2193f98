#!/usr/bin/env bash
# A local etcd (1 or 3 members on 127.0.0.1) for tests and local clusters.
#   localstack/etcd.sh install                      apt-get etcd-server/etcd-client if etcd is missing
#   localstack/etcd.sh start [MEMBERS] [BASE_PORT]  start (or reuse) MEMBERS=1|3; prints the endpoints
#   localstack/etcd.sh health [BASE_PORT]
#   localstack/etcd.sh stop [BASE_PORT]             stop every member; the data stays
#   localstack/etcd.sh restart [MEMBER|all] [BASE_PORT]
#                                                   kill -9 member MEMBER (1..n) or all of them, then
#                                                   start them again on the same data
#   localstack/etcd.sh wipe [BASE_PORT]             stop and delete the data
# Member i (1-based) serves clients on BASE_PORT+2(i-1) and peers on BASE_PORT+2(i-1)+1
# (defaults: 23790, 23791, ...). The last line of `start` and `restart` is the comma-separated
# client endpoints. Data and logs live under ${TIERLOG_CACHE:-~/.cache/tierlog}/run/etcd-BASE_PORT/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${TIERLOG_CACHE:-$HOME/.cache/tierlog}"
cmd="${1:-start}"
case "$cmd" in
start) members="${2:-1}"; base="${3:-23790}" ;;
restart) which="${2:-all}"; base="${3:-23790}" ;;
*) base="${2:-23790}" ;;
esac
dir="$CACHE/run/etcd-$base"

client_port() { echo $((base + 2 * ($1 - 1))); }
peer_port() { echo $((base + 2 * ($1 - 1) + 1)); }
# Member count of the cluster in $dir (what `start` last created).
recorded_members() { cat "$dir/members" 2>/dev/null || echo 0; }
endpoints() {
    local n="$1" i eps=""
    for i in $(seq 1 "$n"); do eps="${eps:+$eps,}http://127.0.0.1:$(client_port "$i")"; done
    echo "$eps"
}
healthy() {
    local n="$1"
    [ "$n" -gt 0 ] || return 1
    ETCDCTL_API=3 etcdctl --endpoints="$(endpoints "$n")" --dial-timeout=1s \
        --command-timeout=2s endpoint health >/dev/null 2>&1
}
member_pid() { cat "$dir/n$1.pid" 2>/dev/null || true; }
member_running() {
    local pid
    pid="$(member_pid "$1")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# start_member I N: runs member I of an N-member cluster in the background. On an existing data
# dir etcd ignores the --initial-* flags and rejoins with its stored membership.
start_member() {
    local i="$1" n="$2" j cluster=""
    for j in $(seq 1 "$n"); do
        cluster="${cluster:+$cluster,}n$j=http://127.0.0.1:$(peer_port "$j")"
    done
    local client="http://127.0.0.1:$(client_port "$i")" peer="http://127.0.0.1:$(peer_port "$i")"
    nohup etcd --name "n$i" --data-dir "$dir/n$i" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token "tierlog-$base" \
        --logger zap --log-outputs stderr >> "$dir/n$i.log" 2>&1 &
    echo $! > "$dir/n$i.pid"
}

# wait_healthy N: up to 30 s (a 3-member cluster elects a leader in ~2-3 s).
wait_healthy() {
    local n="$1"
    for _ in $(seq 1 150); do healthy "$n" && return 0; sleep 0.2; done
    echo "etcd did not become healthy; see $dir/n*.log" >&2
    exit 1
}

# kill_members SIGNAL I...: signals the given members and waits until they are gone.
kill_members() {
    local sig="$1" i pid
    shift
    for i in "$@"; do
        pid="$(member_pid "$i")"
        [ -n "$pid" ] && kill "-$sig" "$pid" 2>/dev/null || true
    done
    for i in "$@"; do
        pid="$(member_pid "$i")"
        if [ -n "$pid" ]; then
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/n$i.pid"
    done
}

stop_all() {
    local n
    n="$(recorded_members)"
    [ "$n" -gt 0 ] && kill_members TERM $(seq 1 "$n")
    return 0
}

case "$cmd" in
install) bash "$here/install.sh" etcd ;;
start)
    case "$members" in 1 | 3) ;; *) echo "MEMBERS must be 1 or 3, got $members" >&2; exit 2 ;; esac
    bash "$here/install.sh" etcd >/dev/null
    if [ "$(recorded_members)" = "$members" ] && healthy "$members"; then
        echo "etcd already running at $(endpoints "$members")" >&2
    else
        if [ "$(recorded_members)" != "$members" ]; then
            # A cluster of another size (or none) was here: start afresh.
            stop_all
            rm -rf "$dir"
        fi
        mkdir -p "$dir"
        echo "$members" > "$dir/members"
        for i in $(seq 1 "$members"); do member_running "$i" || start_member "$i" "$members"; done
        wait_healthy "$members"
    fi
    endpoints "$members"
    ;;
health)
    n="$(recorded_members)"
    if healthy "$n"; then echo "ok $(endpoints "$n")"; else echo "unhealthy $(endpoints "$n")" >&2; exit 1; fi
    ;;
stop) stop_all ;;
restart)
    n="$(recorded_members)"
    [ "$n" -gt 0 ] || { echo "no etcd was started with base port $base" >&2; exit 1; }
    if [ "$which" = all ]; then targets="$(seq 1 "$n")"; else targets="$which"; fi
    for i in $targets; do
        [ "$i" -ge 1 ] && [ "$i" -le "$n" ] || { echo "no member $i (1..$n)" >&2; exit 2; }
    done
    # shellcheck disable=SC2086  # targets is a list of member numbers
    kill_members KILL $targets
    for i in $targets; do start_member "$i" "$n"; done
    wait_healthy "$n"
    endpoints "$n"
    ;;
wipe)
    stop_all
    rm -rf "$dir"
    ;;
*) echo "usage: $0 install | start [1|3] [BASE_PORT] | health|stop|wipe [BASE_PORT] | restart [MEMBER|all] [BASE_PORT]" >&2; exit 2 ;;
esac

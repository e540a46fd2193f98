#!/usr/bin/env bash
# A whole local tierlog cluster: etcd (1 or 3 members), the S3 server, and N tierlog nodes
# configured against them.
#   localstack/cluster.sh start [NODES] [ETCD_MEMBERS]   build tierlog (release), start everything;
#                                                        prints the nodes' addresses
#   localstack/cluster.sh health                         each node's gRPC health, etcd and S3
#   localstack/cluster.sh stop                           stop the nodes (gracefully: they upload
#                                                        everything), then etcd and S3
#   localstack/cluster.sh kill NODE                      kill -9 one node (to watch failover)
#   localstack/cluster.sh restart NODE                   start one node again on its data
# Node i listens on 127.0.0.1:(7070+i) for gRPC, 127.0.0.1:(9091+i) for Kafka clients and
# 127.0.0.1:(9643+i) for HTTP (/metrics, /healthz, /readyz), keeps its hot tier in $TIERLOG_CLUSTER_DIR/node-i
# (default ./tierlog-cluster), and shares etcd namespace `local` and s3://tierlog/local.
# Logs: $TIERLOG_CLUSTER_DIR/node-i.log. Idempotent: running nodes are left as they are.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
dir="${TIERLOG_CLUSTER_DIR:-$PWD/tierlog-cluster}"
cmd="${1:-start}"
mkdir -p "$dir"
target="${CARGO_TARGET_DIR:-$repo/target}"
bin="$target/release/tierlog"

node_port() { echo $((7070 + $1)); }
kafka_port() { echo $((9091 + $1)); }
http_port() { echo $((9643 + $1)); }
pidfile() { echo "$dir/node-$1.pid"; }
running() { [ -f "$(pidfile "$1")" ] && kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; }
recorded_nodes() { cat "$dir/nodes" 2>/dev/null || echo 0; }

start_node() {
    local i="$1"
    running "$i" && return 0
    local etcd_eps s3
    etcd_eps="$(cat "$dir/etcd")"
    s3="$(cat "$dir/s3")"
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
    AWS_ENDPOINT="$s3" AWS_ALLOW_HTTP=true TIERLOG_LOG="${TIERLOG_LOG:-info}" \
        nohup "$bin" serve --node-id "$i" --listen "127.0.0.1:$(node_port "$i")" \
        --kafka-listen "127.0.0.1:$(kafka_port "$i")" \
        --http-listen "127.0.0.1:$(http_port "$i")" \
        --data-dir "$dir/node-$i" --meta "etcd://${etcd_eps//http:\/\//}/local" \
        --object-store s3://tierlog/local > "$dir/node-$i.out" 2> "$dir/node-$i.log" &
    echo $! > "$(pidfile "$i")"
    for _ in $(seq 1 100); do
        grep -q "tierlog listening" "$dir/node-$i.out" 2>/dev/null && return 0
        running "$i" || break
        sleep 0.1
    done
    echo "node $i did not start; see $dir/node-$i.log" >&2
    return 1
}

case "$cmd" in
start)
    nodes="${2:-3}"
    members="${3:-1}"
    (cd "$repo" && cargo build --release -p tierlog-cli >&2)
    bash "$here/etcd.sh" start "$members" | tail -n 1 > "$dir/etcd"
    bash "$here/s3.sh" start | tail -n 1 > "$dir/s3"
    echo "$nodes" > "$dir/nodes"
    addrs=""
    for i in $(seq 1 "$nodes"); do
        start_node "$i"
        addrs="${addrs:+$addrs,}127.0.0.1:$(node_port "$i")"
    done
    echo "$addrs"
    ;;
health)
    for i in $(seq 1 "$(recorded_nodes)"); do
        if running "$i"; then echo "node $i: running on 127.0.0.1:$(node_port "$i") (kafka 127.0.0.1:$(kafka_port "$i"), metrics http://127.0.0.1:$(http_port "$i")/metrics)"; else echo "node $i: down"; fi
    done
    bash "$here/etcd.sh" health || true
    bash "$here/s3.sh" health || true
    ;;
kill)
    i="${2:?which node}"
    if running "$i"; then kill -9 "$(cat "$(pidfile "$i")")"; fi
    rm -f "$(pidfile "$i")"
    ;;
restart)
    start_node "${2:?which node}"
    ;;
stop)
    for i in $(seq 1 "$(recorded_nodes)"); do
        if running "$i"; then
            pid="$(cat "$(pidfile "$i")")"
            kill -TERM "$pid"
            for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$(pidfile "$i")"
    done
    bash "$here/etcd.sh" stop
    bash "$here/s3.sh" stop
    ;;
*) echo "usage: $0 start [NODES] [ETCD_MEMBERS] | health | stop | kill NODE | restart NODE" >&2; exit 2 ;;
esac

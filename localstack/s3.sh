#!/usr/bin/env bash
# A local S3-compatible server (moto) for tests and local clusters.
#   localstack/s3.sh start [PORT] [BUCKET]   start (or reuse) and create the bucket; prints the endpoint
#   localstack/s3.sh health [PORT]
#   localstack/s3.sh stop [PORT]
# Why moto: ~100 MB resident, ready in under a second, atomic conditional puts (If-None-Match),
# which the manifest's fencing relies on. Credentials are anything (AWS_ACCESS_KEY_ID=test).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${TIERLOG_CACHE:-$HOME/.cache/tierlog}"
cmd="${1:-start}"
port="${2:-39000}"
bucket="${3:-tierlog}"
run="$CACHE/run"
mkdir -p "$run"
pidfile="$run/moto-$port.pid"
endpoint="http://127.0.0.1:$port"

healthy() { curl -sf -o /dev/null "$endpoint/moto-api/" ; }

case "$cmd" in
start)
    server="$(bash "$here/install.sh" s3 | tail -n 1)"
    if ! healthy; then
        nohup "$server" -H 127.0.0.1 -p "$port" > "$run/moto-$port.log" 2>&1 &
        echo $! > "$pidfile"
        for _ in $(seq 1 100); do healthy && break; sleep 0.1; done
        healthy || { echo "moto did not start; see $run/moto-$port.log" >&2; exit 1; }
    fi
    "$(dirname "$server")/python" - "$endpoint" "$bucket" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
try:
    s3.create_bucket(Bucket=sys.argv[2])
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
PY
    echo "$endpoint"
    ;;
health) healthy && echo "ok $endpoint" ;;
stop)
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
    ;;
*) echo "usage: $0 start|health|stop [PORT] [BUCKET]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The whole test suite: installs what the tests need (idempotently), starts the servers they run
# against, then runs every test.
#   bash tests/run.sh [extra nextest args]
set -euo pipefail
cd "$(dirname "$0")/.."

TIERLOG_PYTHON="$(bash localstack/install.sh python | tail -n 1)"
export TIERLOG_PYTHON
bash localstack/install.sh kcat >/dev/null
# The console's browser tests: Debian's chromium driven by playwright-core.
TIERLOG_BROWSER="$(bash localstack/install.sh browser | tail -n 1)"
export TIERLOG_BROWSER
# kafkajs and its codecs, a Kafka client of its own (not librdkafka) to test the listener against.
TIERLOG_KAFKAJS="$(bash localstack/install.sh kafkajs | tail -n 1)"
export TIERLOG_KAFKAJS

S3_PORT="${TIERLOG_TEST_S3_PORT:-39000}"
ETCD_PORT="${TIERLOG_TEST_ETCD_PORT:-23790}"
TIERLOG_S3_ENDPOINT="$(bash localstack/s3.sh start "$S3_PORT" tierlog | tail -n 1)"
export TIERLOG_S3_ENDPOINT
trap 'bash localstack/s3.sh stop "$S3_PORT"; bash localstack/etcd.sh stop "$ETCD_PORT"' EXIT
# One etcd member; tests that kill or compact etcd run private ones (the `etcd` binary installed
# here), and every test run keeps its keys under a namespace of its own.
TIERLOG_ETCD_ENDPOINTS="$(bash localstack/etcd.sh start 1 "$ETCD_PORT" | tail -n 1)"
export TIERLOG_ETCD_ENDPOINTS

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest (once)" >&2
    cargo install --locked cargo-nextest
fi

cargo build --workspace --all-targets
cargo nextest run --workspace --no-fail-fast "$@"

#!/usr/bin/env bash
# The whole test suite: installs what the tests need (idempotently), starts the servers they run
# against, then runs every test.
#   bash tests/run.sh [extra nextest args]
set -euo pipefail
cd "$(dirname "$0")/.."

TIERLOG_PYTHON="$(bash localstack/install.sh python | tail -n 1)"
export TIERLOG_PYTHON

S3_PORT="${TIERLOG_TEST_S3_PORT:-39000}"
TIERLOG_S3_ENDPOINT="$(bash localstack/s3.sh start "$S3_PORT" tierlog | tail -n 1)"
export TIERLOG_S3_ENDPOINT
trap 'bash localstack/s3.sh stop "$S3_PORT"' EXIT

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest (once)" >&2
    cargo install --locked cargo-nextest
fi

cargo build --workspace --all-targets
cargo nextest run --workspace --no-fail-fast "$@"

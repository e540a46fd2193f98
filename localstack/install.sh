#!/usr/bin/env bash
# Installs what tierlog's tests and local clusters need, idempotently.
#   localstack/install.sh python   # venv with the independent clients: pyarrow, duckdb, kafka-python, confluent-kafka, ADBC Flight SQL, prometheus-client, an OTLP receiver (grpcio, opentelemetry-proto)
#   localstack/install.sh s3       # venv with moto's S3 server (and boto3)
#   localstack/install.sh etcd     # Debian's etcd-server and etcd-client (etcdctl), if etcd is missing
#   localstack/install.sh kcat     # Debian's kcat (librdkafka 2.0.2): an old Kafka client to test against
#   localstack/install.sh browser  # Debian's chromium, and playwright-core (which fetches no browser) to drive it
#   localstack/install.sh kafkajs  # kafkajs (a pure JavaScript Kafka client) with snappy, lz4 and zstd codecs
# Prints the installed interpreter or server path on the last line of its output.
set -euo pipefail

CACHE="${TIERLOG_CACHE:-$HOME/.cache/tierlog}"
mkdir -p "$CACHE"

# install_venv NAME "REQUIREMENTS" PROGRAM: a venv under $CACHE/NAME holding REQUIREMENTS, rebuilt
# only when they change; prints the path of PROGRAM inside it.
install_venv() {
    local venv="$CACHE/$1" req="$2" program="$3"
    local stamp="$venv/.tierlog-requirements"
    if [ -x "$venv/bin/$program" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$req" ]; then
        echo "$1 already installed in $venv" >&2
    else
        echo "installing $req into $venv" >&2
        python3 -m venv "$venv"
        # shellcheck disable=SC2086  # REQUIREMENTS is a list of pip specifiers
        "$venv/bin/pip" install --quiet --disable-pip-version-check $req >&2
        echo "$req" > "$stamp"
    fi
    echo "$venv/bin/$program"
}

install_python() {
    # python-snappy (on cramjam), lz4 and zstandard: the codecs kafka-python imports if present.
    install_venv venv "pyarrow==21.0.0 duckdb==1.5.5 duckdb-extension-httpfs==1.5.5 kafka-python==2.2.15 python-snappy==0.7.3 cramjam==2.14.0 lz4==4.4.5 zstandard==0.25.0 confluent-kafka==2.16.1 adbc-driver-flightsql==1.13.0 adbc-driver-manager==1.13.0 prometheus-client==0.26.0 grpcio==1.85.3 protobuf==6.33.6 opentelemetry-proto==1.45.2" python
}
install_s3() { install_venv moto "moto[server]==5.1.14" moto_server; }

# Debian's etcd 3.4 (what the etcd backend is tested against). apt only when `etcd` is missing;
# sudo only when not root; the package lists are refreshed only if the first try fails.
install_etcd() {
    if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        echo "installing etcd-server and etcd-client with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        if ! $sudo apt-get install -y -q etcd-server etcd-client >&2; then
            $sudo apt-get update -q >&2
            $sudo apt-get install -y -q etcd-server etcd-client >&2
        fi
    else
        echo "etcd already installed" >&2
    fi
    command -v etcd
}

# apt-get install PACKAGE when COMMAND is missing (sudo only when not root; the package lists are
# refreshed only if the first try fails).
apt_install() {
    local command="$1" package="$2"
    if command -v "$command" >/dev/null 2>&1; then
        echo "$package already installed" >&2
    else
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        echo "installing $package with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        if ! $sudo apt-get install -y -q "$package" >&2; then
            $sudo apt-get update -q >&2
            $sudo apt-get install -y -q "$package" >&2
        fi
    fi
    command -v "$command"
}

# install_npm NAME LOCK_DIR PACKAGE: under $CACHE/NAME, the npm packages LOCK_DIR/package-lock.json
# pins (PACKAGE is the one that shows they are there); reinstalled only when the lock changes.
# Prints that directory.
install_npm() {
    local dir="$CACHE/$1" lock="$2/package-lock.json" package="$3"
    if [ -d "$dir/node_modules/$package" ] && cmp -s "$lock" "$dir/package-lock.json"; then
        echo "$package already installed in $dir" >&2
    else
        echo "installing $package into $dir" >&2
        mkdir -p "$dir"
        cp "$2/package.json" "$lock" "$dir/"
        (cd "$dir" && npm ci --no-audit --no-fund >&2)
    fi
    echo "$dir"
}

# Debian's chromium and, under $CACHE/browser, the npm packages tests/console/package-lock.json
# pins (playwright-core only). Prints that directory.
install_browser() {
    apt_install chromium chromium >/dev/null
    install_npm browser "$(dirname "$0")/../tests/console" playwright-core
}

# Under $CACHE/kafkajs, the npm packages tests/kafkajs/package-lock.json pins: kafkajs and its
# codecs (kafkajs-snappy, kafkajs-lz4 whose lz4 module node-gyp builds from the npm package, and
# @mongodb-js/zstd whose Linux binary is an npm package of its own). Prints that directory.
install_kafkajs() {
    install_npm kafkajs "$(dirname "$0")/../tests/kafkajs" kafkajs
}

case "${1:-all}" in
    python) install_python ;;
    s3) install_s3 ;;
    etcd) install_etcd ;;
    kcat) apt_install kcat kcat ;;
    browser) install_browser ;;
    kafkajs) install_kafkajs ;;
    all) install_python >/dev/null; install_s3 >/dev/null; apt_install kcat kcat >/dev/null; install_browser >/dev/null; install_kafkajs >/dev/null; install_etcd ;;
    *) echo "usage: $0 [python|s3|etcd|kcat|browser|kafkajs|all]" >&2; exit 2 ;;
esac

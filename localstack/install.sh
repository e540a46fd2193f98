#!/usr/bin/env bash
# Installs what tierlog's tests and local clusters need, idempotently.
#   localstack/install.sh python   # venv with the independent clients: pyarrow, duckdb, kafka-python
#   localstack/install.sh s3       # venv with moto's S3 server (and boto3)
# Prints the installed interpreter or server path on the last line of its output.
set -euo pipefail

CACHE="${TIERLOG_CACHE:-$HOME/.cache/tierlog}"
mkdir -p "$CACHE"

install_python() {
    local venv="$CACHE/venv"
    local req="pyarrow==21.0.0 duckdb==1.5.5 kafka-python==2.2.15"
    local stamp="$venv/.tierlog-requirements"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$req" ]; then
        echo "python clients already installed in $venv" >&2
    else
        echo "installing python clients into $venv: $req" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check $req >&2
        echo "$req" > "$stamp"
    fi
    echo "$venv/bin/python"
}

install_s3() {
    local venv="$CACHE/moto"
    local req="moto[server]==5.1.14"
    local stamp="$venv/.tierlog-requirements"
    if [ -x "$venv/bin/moto_server" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$req" ]; then
        echo "moto already installed in $venv" >&2
    else
        echo "installing $req into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$req" >&2
        echo "$req" > "$stamp"
    fi
    echo "$venv/bin/moto_server"
}

case "${1:-all}" in
    python) install_python ;;
    s3) install_s3 ;;
    all) install_python >/dev/null; install_s3 ;;
    *) echo "usage: $0 [python|s3|all]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Create .venvs/mlserver: MLServer 1.7.1 (the V2 / Open Inference Protocol server and its
# `mlserver infer` batch client), in an environment of its own, never the project's .venv.
# Used by bench/ (the `mlserver infer` rows) and the V2 tests.  uvloop<0.22: newer uvloop
# releases break mlserver 1.7.1's event-loop policy.
#
# Idempotent: does nothing when the environment already has the pinned packages.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venvs/mlserver"
PYTHON="${MLSERVER_PYTHON:-}"
REQS=("mlserver==1.7.1" "uvloop<0.22")
MARKER="$VENV/.mlserver-setup-done"
WANT="${REQS[*]}"

if [ -z "$PYTHON" ]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then
            PYTHON="$(command -v "$candidate")"
            break
        fi
    done
fi
if [ -z "$PYTHON" ]; then
    echo "setup-mlserver-venv: no python3.11 found (set MLSERVER_PYTHON)" >&2
    exit 1
fi

if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$WANT" ] && [ -x "$VENV/bin/mlserver" ] \
    && "$VENV/bin/python" -c 'import mlserver' >/dev/null 2>&1; then
    echo "setup-mlserver-venv: $VENV already has $WANT; nothing to do"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup-mlserver-venv: creating $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
    mkdir -p "$ROOT/.venvs"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            echo "setup-mlserver-venv: installing python3-venv with apt-get"
            rm -rf "$VENV"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv "$VENV"
        else
            echo "setup-mlserver-venv: '$PYTHON -m venv' failed; install python3-venv" >&2
            exit 1
        fi
    fi
fi

pip_install() {
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

echo "setup-mlserver-venv: installing ${REQS[*]} into $VENV"
pip_install --upgrade pip
pip_install "${REQS[@]}"
"$VENV/bin/python" -c 'import mlserver'
"$VENV/bin/mlserver" --help >/dev/null
echo "$WANT" > "$MARKER"
echo "setup-mlserver-venv: done; $("$VENV/bin/python" -m pip show mlserver 2>/dev/null | grep -i '^version' || true)"

#!/usr/bin/env bash
# Create .venvs/seldon: the REAL Seldon Core v1 model microservice and the original
# seldon-batch-processor, in an environment of their own (they pin old libraries:
# protobuf<4, click<8.1, Flask 2), never the project's .venv.
#
# Idempotent: does nothing when the environment already imports seldon_core 1.18.2
# and the marker file matches this script's requirements.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venvs/seldon"
PYTHON="${SELDON_PYTHON:-}"
REQS=("seldon-core==1.18.2" "setuptools<70")
MARKER="$VENV/.seldon-setup-done"
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
    echo "setup-seldon-venv: no python3.11 found (set SELDON_PYTHON)" >&2
    exit 1
fi

if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$WANT" ] \
    && "$VENV/bin/python" -c 'import seldon_core.microservice, pkg_resources' >/dev/null 2>&1 \
    && [ -x "$VENV/bin/seldon-batch-processor" ]; then
    echo "setup-seldon-venv: $VENV already has $WANT; nothing to do"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup-seldon-venv: creating $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
    mkdir -p "$ROOT/.venvs"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian's python3.11 without the python3.11-venv package has no ensurepip.
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            echo "setup-seldon-venv: installing python3-venv with apt-get"
            rm -rf "$VENV"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv "$VENV"
        else
            echo "setup-seldon-venv: '$PYTHON -m venv' failed; install python3-venv" >&2
            exit 1
        fi
    fi
fi

pip_install() {
    # Quiet; drops pip's notes about local find-links folders that do not exist.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

echo "setup-seldon-venv: installing ${REQS[*]} into $VENV"
pip_install --upgrade pip
pip_install "${REQS[@]}"
"$VENV/bin/python" -c 'import seldon_core.microservice, pkg_resources'
echo "$WANT" > "$MARKER"
echo "setup-seldon-venv: done; $("$VENV/bin/python" -m pip show seldon-core 2>/dev/null | grep -i '^version' || true)"

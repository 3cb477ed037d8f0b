#!/usr/bin/env bash
# Everything the tool, its tests and its demo need on a fresh machine; idempotent.
#   .venv          the project (editable) with its dev tools
#   .venvs/seldon  seldon-core 1.18.2: the real model microservice and the original processor
#   .venvs/mlserver  MLServer 1.7.1: the real V2 model server and `mlserver infer`      (tests only)
#   .venvs/triton  nvidia-pytriton (its bundled tritonserver) and tritonclient      (tests only)
#   .venvs/kserve  KServe 0.21's model server                                        (tests only)
#   .venvs/kfp     the Kubeflow Pipelines SDK, to compile the pipeline example in a test (tests only)
#   Debian packages: nginx, wrk, chromium (tests only; needs root or sudo)
# `scripts/setup.sh --demo` sets up only what the demo uses (.venv and .venvs/seldon) and needs no root.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
quiet_pip() {  # pip, without its notes about local find-links folders that do not exist on this machine
    .venv/bin/python -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
    quiet_pip install -q --disable-pip-version-check --upgrade pip
fi
if ! .venv/bin/python -c "import seldon_batch_tx, pytest, ruff" 2>/dev/null \
        || [ setup.py -nt .venv/.installed ]; then
    quiet_pip install -q --disable-pip-version-check -e '.[dev]'
    touch .venv/.installed
fi
scripts/setup-seldon-venv.sh
if [ "${1:-}" = "--demo" ]; then
    exit 0
fi
scripts/setup-mlserver-venv.sh
scripts/setup-triton-venv.sh
scripts/setup-kserve-venv.sh
scripts/setup-kfp-venv.sh
if [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; then
    .ci/setup-system.sh
fi

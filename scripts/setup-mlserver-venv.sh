#!/usr/bin/env bash
# Create .venvs/mlserver: MLServer 1.7.1 (the V2 / Open Inference Protocol server and its
# `mlserver infer` batch client), in an environment of its own, never the project's .venv.
# Used by bench/ (the `mlserver infer` rows) and the V2 tests.  uvloop<0.22: newer uvloop
# releases break mlserver 1.7.1's event-loop policy.  mlserver-sklearn: the scikit-learn
# runtime that serves the iris model of the table tests.
#
# Idempotent: does nothing when the environment already has the pinned packages
# (scripts/lib/venv.sh).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/venv.sh"

# shellcheck disable=SC2016  # $VENV is expanded by setup_venv
setup_venv mlserver "${MLSERVER_PYTHON:-}" \
    '[ -x "$VENV/bin/mlserver" ] && "$VENV/bin/python" -c "import mlserver, mlserver_sklearn"' \
    "mlserver==1.7.1" "uvloop<0.22" "mlserver-sklearn==1.7.1"

#!/usr/bin/env bash
# Create .venvs/kserve: the KServe 0.21 Python model server (REST V1/V2 and V2 gRPC), in an
# environment of its own.  Tests only: tests/kserve_servers.py starts it with the small
# custom model in tests/models/kserve_model.py.
#
# Idempotent (scripts/lib/venv.sh).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/venv.sh"

# shellcheck disable=SC2016  # $VENV is expanded by setup_venv
setup_venv kserve "${KSERVE_PYTHON:-}" \
    '"$VENV/bin/python" -c "import kserve, numpy"' \
    "kserve==0.21.0"

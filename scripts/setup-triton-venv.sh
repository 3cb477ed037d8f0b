#!/usr/bin/env bash
# Create .venvs/triton: nvidia-pytriton, whose wheel bundles a real Triton Inference Server
# (`pytriton/tritonserver/bin/tritonserver`, with its Python backend), and tritonclient
# (http and grpc) for the parity tests.  Tests only: tests/triton_servers.py runs the bundled
# binary with CPU Python-backend models written by the test.  The Python backend's stub needs
# the libpython of the interpreter that runs it: tests/triton_servers.py puts this venv's
# interpreter's lib folder on LD_LIBRARY_PATH.
#
# Idempotent (scripts/lib/venv.sh).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/venv.sh"

# shellcheck disable=SC2016  # $VENV is expanded by setup_venv
setup_venv triton "${TRITON_PYTHON:-}" \
    '"$VENV/bin/python" -c "import pytriton, tritonclient.http, tritonclient.grpc, numpy"' \
    "nvidia-pytriton==0.7.0" "tritonclient[http,grpc]==2.73.0"

#!/usr/bin/env bash
# The test command: set up (idempotent), then lint, type-check and run every test.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/test_engine.py -k retries
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy seldon_batch_tx
exec .venv/bin/python -m pytest -q "$@"

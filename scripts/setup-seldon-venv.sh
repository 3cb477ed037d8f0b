#!/usr/bin/env bash
# Create .venvs/seldon: the REAL Seldon Core v1 model microservice and the original
# seldon-batch-processor, in an environment of their own (they pin old libraries:
# protobuf<4, click<8.1, Flask 2), never the project's .venv.  scikit-learn<1.7 (the last
# releases for numpy 1.26, which seldon-core pins) serves the iris model of the table tests.
#
# Idempotent: does nothing when the environment already imports seldon_core 1.18.2 and
# sklearn and the marker file matches this script's requirements (scripts/lib/venv.sh).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/venv.sh"

# shellcheck disable=SC2016  # $VENV is expanded by setup_venv
setup_venv seldon "${SELDON_PYTHON:-}" \
    '"$VENV/bin/python" -c "import seldon_core.microservice, pkg_resources, sklearn" && [ -x "$VENV/bin/seldon-batch-processor" ]' \
    "seldon-core==1.18.2" "setuptools<70" "scikit-learn<1.7"

#!/usr/bin/env bash
# Create .venvs/kfp: the Kubeflow Pipelines v2 SDK (+ kfp-kubernetes) used only to compile
# docker/k8s/kubeflow_pipeline.py in tests/test_workflow_manifests.py. Kept out of the project's
# .venv: kfp pins its own protobuf, kubernetes client and google-cloud libraries.
#
# Idempotent: does nothing when the marker matches the requirements below (scripts/lib/venv.sh).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/venv.sh"

# shellcheck disable=SC2016  # $VENV is expanded by setup_venv
setup_venv kfp "${KFP_PYTHON:-}" '"$VENV/bin/python" -c "import kfp, kfp.kubernetes"' \
    "kfp==2.17.3" "kfp-kubernetes==2.17.3"

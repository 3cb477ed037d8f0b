#!/usr/bin/env bash
# Create .venvs/kfp: the Kubeflow Pipelines v2 SDK (+ kfp-kubernetes) used only to compile
# docker/k8s/kubeflow_pipeline.py in tests/test_docker_manifests.py. Kept out of the project's
# .venv: kfp pins its own protobuf, kubernetes client and google-cloud libraries.
#
# Idempotent: does nothing when the marker matches the requirements below.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venvs/kfp"
PYTHON="${KFP_PYTHON:-$(command -v python3.11 || command -v python3)}"
REQS=("kfp==2.17.3" "kfp-kubernetes==2.17.3")
MARKER="$VENV/.kfp-setup-done"
WANT="${REQS[*]}"

if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$WANT" ] && "$VENV/bin/python" -c "import kfp.kubernetes" 2>/dev/null; then
    exit 0
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${REQS[@]}"
"$VENV/bin/python" -c "import kfp, kfp.kubernetes; print('kfp', kfp.__version__)"
echo "$WANT" > "$MARKER"

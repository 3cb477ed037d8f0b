#!/usr/bin/env bash
# Regenerate seldon_batch_tx/protos/*_pb2.py, *_pb2.pyi and *_pb2_grpc.py with grpcio-tools.
#
# Protos are compiled with the repository root as the include path, so the generated modules
# import each other as `seldon_batch_tx.protos...` (works installed or from a checkout) and
# register file names that cannot clash with seldon_core's or TensorFlow's own copies.
# The generated files are checked in; rerun this after editing a .proto and commit the result.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"

PROTOS=(
    seldon_batch_tx/protos/tensorflow/core/framework/tensor.proto
    seldon_batch_tx/protos/prediction.proto
    seldon_batch_tx/protos/grpc_service.proto
    seldon_batch_tx/protos/v2_metadata.proto
)

"$PYTHON" -m grpc_tools.protoc \
    --proto_path=. \
    --python_out=. \
    --pyi_out=. \
    --grpc_python_out=. \
    "${PROTOS[@]}"

# tensor.proto and v2_metadata.proto define no service: drop their empty grpc modules.
rm -f seldon_batch_tx/protos/tensorflow/core/framework/tensor_pb2_grpc.py seldon_batch_tx/protos/v2_metadata_pb2_grpc.py

echo "gen-protos: regenerated with $("$PYTHON" -m grpc_tools.protoc --version)"

"""The iris classifier (../iris_math.py) as an MLServer model: input ``features`` [-1, 4], output ``proba``."""

from __future__ import annotations

import sys
from pathlib import Path

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from iris_math import proba  # noqa: E402


class IrisModel(MLModel):
    """Answers a [rows, 4] FP64 tensor with [rows, 3] class probabilities."""

    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).reshape(-1, 4).tolist()
        out = proba(rows)
        return InferenceResponse(model_name=self.name, outputs=[
            ResponseOutput(name="proba", shape=[len(out), 3], datatype="FP64", data=[x for r in out for x in r])])

"""The iris classifier (../iris_math.py) with one input per feature (``sepal_length``... each [-1, 1]):
the model a table's columns map to input by input."""

from __future__ import annotations

import sys
from pathlib import Path

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from iris_math import FEATURES, proba  # noqa: E402


class IrisColumnsModel(MLModel):
    """Answers four [rows, 1] FP64 inputs, named by the features, with [rows, 3] probabilities."""

    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        by_name = {i.name: NumpyCodec.decode_input(i).reshape(-1).tolist() for i in payload.inputs}
        rows = [list(r) for r in zip(*(by_name[f] for f in FEATURES), strict=True)]
        out = proba(rows)
        return InferenceResponse(model_name=self.name, outputs=[
            ResponseOutput(name="proba", shape=[len(out), 3], datatype="FP64", data=[x for r in out for x in r])])

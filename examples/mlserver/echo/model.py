"""An MLServer model for trying the batch processor's ``--protocol v2`` without downloads.

``mlserver start examples/mlserver`` serves it as ``echo`` (version ``v1``) on 127.0.0.1.

It answers every input tensor with the same tensor (same name, shape, datatype, data), plus
``row_sum`` (FP64, one number per row along the first axis) for the first numeric input, so
mini-batches can be checked row by row.  The response ``parameters`` say what the server saw:
``seen_id``, ``seen_batch_index``, ``seen_rows`` and the ``seldon-model``/``host`` headers.

Failures on request, to see how errors come out:
* a BYTES element ``"boom"`` -> ``MLServerError`` with HTTP 400 (gRPC INVALID_ARGUMENT);
* a BYTES element ``"crash"`` -> an unexpected exception: HTTP 500 (gRPC INTERNAL);
* request parameter ``drop_last_row: true`` -> ``row_sum`` has one row too few.
"""

from __future__ import annotations

from typing import Any

from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, RequestInput, ResponseOutput

NUMERIC = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    return [x for item in data for x in _flat(item)]


def _values(tensor: RequestInput) -> list[Any]:
    raw = tensor.data.root if hasattr(tensor.data, "root") else tensor.data
    return _flat(list(raw) if not isinstance(raw, list) else raw)


class EchoModel(MLModel):
    """Echoes its inputs and sums each row of the first numeric input."""

    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = []
        row_sum: ResponseOutput | None = None
        rows = payload.inputs[0].shape[0] if payload.inputs and payload.inputs[0].shape else 0
        for tensor in payload.inputs:
            values = _values(tensor)
            if tensor.datatype == "BYTES":
                # echoed as they came: str over REST, bytes over gRPC (what MLServer encodes back)
                texts = {v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values}
                if "boom" in texts:
                    raise MLServerError("boom: this input asks the echo model to fail", 400)
                if "crash" in texts:
                    raise RuntimeError("crash: this input makes the echo model raise")
            outputs.append(ResponseOutput(name=tensor.name, shape=tensor.shape, datatype=tensor.datatype,
                                          data=values))
            if row_sum is None and tensor.datatype in NUMERIC and tensor.shape:
                n = tensor.shape[0]
                size = len(values) // n if n else 0
                sums = [float(sum(values[i * size:(i + 1) * size])) for i in range(n)]
                params = payload.parameters
                if params is not None and getattr(params, "drop_last_row", False):
                    sums = sums[:-1]
                row_sum = ResponseOutput(name="row_sum", shape=[len(sums)], datatype="FP64", data=sums)
        if row_sum is not None:
            outputs.append(row_sum)
        params = payload.parameters.model_dump() if payload.parameters is not None else {}
        headers = params.get("headers") or {}
        seen = Parameters(
            seen_id=payload.id or "",
            seen_batch_index=params.get("batch_index", -1),
            seen_rows=rows,
            seen_seldon_model=headers.get("seldon-model", ""),
            seen_host=headers.get("host", headers.get(":authority", "")),
        )
        return InferenceResponse(model_name=self.name, model_version=self.version, id=payload.id,
                                 parameters=seen, outputs=outputs)

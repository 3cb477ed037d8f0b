"""What Triton's own pieces answer, run with the interpreter of ``.venvs/triton`` (numpy, tritonclient).

``python triton_reference.py`` reads one JSON object on stdin::

    {"mode": "function" | "http" | "grpc", "url": "127.0.0.1:PORT", "model": NAME,
     "requests": [{INPUT: {"datatype": ..., "shape": [...], "data": [...]}, ...}, ...]}

and writes one JSON list: per request, ``{OUTPUT: {"shape": [...], "data": [flat values]}}``.
``function`` applies the model's own function (tests/models/triton/model_template.py) to numpy
arrays; ``http``/``grpc`` send each request through ``tritonclient`` (binary tensors over HTTP).
BYTES values are read and written as UTF-8 text.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent / "models" / "triton"))
from model_template import FUNCTIONS  # noqa: E402

DTYPES = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64,
          "BOOL": np.bool_, "BYTES": np.object_}


def array(tensor: dict[str, Any]) -> Any:
    data = tensor["data"]
    if tensor["datatype"] == "BYTES":
        data = [x.encode() for x in data]
    return np.array(data, dtype=DTYPES[tensor["datatype"]]).reshape(tensor["shape"])


def plain(value: Any) -> dict[str, Any]:
    flat = value.reshape(-1).tolist()
    if value.dtype == np.object_:
        flat = [x.decode() if isinstance(x, bytes) else x for x in flat]
    return {"shape": list(value.shape), "data": flat}


def through_client(mode: str, url: str, model: str, request: dict[str, Any]) -> dict[str, Any]:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    module: Any = httpclient if mode == "http" else grpcclient
    client = module.InferenceServerClient(url)
    inputs = []
    for name, tensor in request.items():
        value = array(tensor)
        wanted = module.InferInput(name, list(value.shape), tensor["datatype"])
        wanted.set_data_from_numpy(value)
        inputs.append(wanted)
    result = client.infer(model, inputs)
    names = [o["name"] for o in result.get_response(**({"as_json": True} if mode == "grpc" else {}))["outputs"]]
    return {n: plain(result.as_numpy(n)) for n in names}


def main() -> None:
    job = json.load(sys.stdin)
    out = []
    for request in job["requests"]:
        if job["mode"] == "function":
            outputs = FUNCTIONS[job["model"]]({n: array(t) for n, t in request.items()})
            out.append({n: plain(v) for n, v in outputs.items()})
        else:
            out.append(through_client(job["mode"], job["url"], job["model"], request))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

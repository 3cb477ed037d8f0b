"""The Python-backend model shared by every test model here: ``FUNCTIONS[name]`` maps the
model's input arrays (by name) to its output arrays (by name).  tests/triton_servers.py copies
this file to ``<model>/1/model.py``; tests import ``FUNCTIONS`` to check every answer."""

from __future__ import annotations

from typing import Any

import numpy as np


def _upper(x: Any) -> Any:
    return np.array([[bytes(v).upper() + b"!" for v in row] for row in x.reshape(x.shape[0], -1)],
                    dtype=object).reshape(x.shape)


FUNCTIONS = {
    "add_fp32": lambda d: {"OUTPUT": (d["INPUT"] * 2 + 1).astype(np.float32)},
    "upper_bytes": lambda d: {"OUTPUT": _upper(d["INPUT"])},
    "upper_bytes_nobatch": lambda d: {"OUTPUT": _upper(d["TEXT"])},
    "half_fp16": lambda d: {"OUTPUT": (d["X"] * 2).astype(np.float16)},
    "add_sub": lambda d: {"SUM": (d["INPUT0"] + d["INPUT1"]).astype(np.float32),
                          "DIFF": (d["INPUT0"] - d["INPUT1"]).astype(np.float32)},
    "bench_image_mean": lambda d: {"OUTPUT": d["IMAGE"].reshape(d["IMAGE"].shape[0], -1).mean(axis=1, keepdims=True)
                                   .astype(np.float32)},
}


class TritonPythonModel:
    """Triton's Python-backend entry point: one response per request, computed by ``FUNCTIONS``."""

    def initialize(self, args: dict[str, str]) -> None:
        import json

        config = json.loads(args["model_config"])
        self.function = FUNCTIONS[config["name"]]
        self.inputs = [i["name"] for i in config["input"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            arrays = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs}
            outputs = self.function(arrays)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in outputs.items()]))
        return responses

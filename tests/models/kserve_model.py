"""A small custom KServe model server for the tests: model ``scale`` answers OUTPUT = 3 * INPUT - 1
(FP32 rows of 2, any number of rows) and says so in its V2 metadata.

Run with the KServe venv's interpreter: ``python kserve_model.py --http_port P --grpc_port Q``
(KServe's own arguments).  KServe binds every address (0.0.0.0, [::]); for the tests this script
binds its REST and gRPC servers to 127.0.0.1 only.
"""

from __future__ import annotations

from typing import Any

import grpc.aio
import kserve
import numpy as np
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.protocol.rest import server as rest_server

LOOPBACK = "127.0.0.1"


def function(x: Any) -> Any:
    """What the model computes; the tests check every answer against it."""
    return (np.asarray(x, dtype=np.float32) * 3 - 1).astype(np.float32)


class ScaleModel(Model):
    """V2 only: one FP32 input ``INPUT`` of shape [-1, 2], one output ``OUTPUT``."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 2]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "OUTPUT", "datatype": "FP32", "shape": [-1, 2]}]

    async def predict(self, payload: InferRequest, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        if payload.inputs[0].name != "INPUT" or x.ndim != 2 or x.shape[1] != 2:
            raise kserve.errors.InvalidInput(f"expected INPUT of shape [n, 2], got {payload.inputs[0].name} "
                                             f"{list(x.shape)}")
        y = function(x)
        output = InferOutput(name="OUTPUT", shape=list(y.shape), datatype="FP32", data=y.flatten().tolist())
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[output])


def _loopback_only() -> None:
    """Bind KServe's servers to 127.0.0.1 instead of every address."""
    config = uvicorn.Config

    def loopback_config(*args: Any, **kwargs: Any) -> Any:
        kwargs["host"] = LOOPBACK
        return config(*args, **kwargs)

    rest_server.uvicorn.Config = loopback_config  # type: ignore[attr-defined]
    make_server = grpc.aio.server

    def loopback_server(*args: Any, **kwargs: Any) -> Any:
        server = make_server(*args, **kwargs)
        add = server.add_insecure_port
        server.add_insecure_port = lambda address: add(address.replace("[::]", LOOPBACK))  # type: ignore[method-assign]
        return server

    import kserve.protocol.grpc.server as grpc_server

    grpc_server.aio.server = loopback_server  # type: ignore[attr-defined]


if __name__ == "__main__":
    from kserve.model_server import parser

    args, _ = parser.parse_known_args()
    _loopback_only()
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1).start([ScaleModel("scale")])

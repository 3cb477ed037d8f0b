"""Run the real Seldon Core v1 model microservice bound to 127.0.0.1 only.

`seldon-core-microservice` binds gunicorn (REST and metrics) and the gRPC server
to 0.0.0.0 and has no option for the address.  This launcher patches the three
places that choose an address, then calls `seldon_core.microservice.main()`:

- gunicorn's `bind` option (REST and metrics servers, `StandaloneApplication`),
- Flask's development server (`--debug` mode),
- the gRPC port reservation and `server.add_insecure_port` address.

Run it with the seldon venv's interpreter (see scripts/setup-seldon-venv.sh):

    .venvs/seldon/bin/python scripts/seldon_loopback.py [--model-dir DIR] [--tftensor-shim] \
        EchoModel --service-type MODEL --http-port P1 --grpc-port P2 --metrics-port P3

All other arguments are those of `seldon-core-microservice`.  The model module is
looked up in --model-dir (default: the current directory), which also becomes
the working directory.  Forked workers inherit the patches.

`--tftensor-shim` (off by default) lets the server decode and encode `tftensor`
payloads without TensorFlow: without TensorFlow installed the real server answers
every tftensor request with HTTP 500 "name 'TensorProto' is not defined".  The shim
stands in for `tf.make_ndarray` / `tf.make_tensor_proto` with numpy and the
TensorProto that seldon_core bundles, following TensorFlow's rules (numeric arrays
of more than one element are packed into `tensor_content`, others use `*_val`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

LOOPBACK = "127.0.0.1"


def _loopback_bind(bind: Any) -> Any:
    """Turn gunicorn's bind value ("0.0.0.0:P", or a list of them) into 127.0.0.1:P."""
    if isinstance(bind, str):
        host, sep, port = bind.rpartition(":")
        if sep and host in ("0.0.0.0", "", "[::]", "::"):
            return f"{LOOPBACK}:{port}"
        return bind
    if isinstance(bind, (list, tuple)):
        return [_loopback_bind(b) for b in bind]
    return bind


def patch_seldon() -> None:
    """Force every listener of seldon_core.microservice onto 127.0.0.1."""
    import flask
    from seldon_core import gunicorn_utils, microservice

    original_load_config = gunicorn_utils.StandaloneApplication.load_config

    def load_config(self: Any) -> None:
        if self.options and "bind" in self.options:
            self.options = dict(self.options, bind=_loopback_bind(self.options["bind"]))
        original_load_config(self)

    gunicorn_utils.StandaloneApplication.load_config = load_config  # type: ignore[method-assign]

    original_flask_run = flask.Flask.run

    def flask_run(self: Any, host: Any = None, port: Any = None, *args: Any, **kwargs: Any) -> None:
        original_flask_run(self, LOOPBACK, port, *args, **kwargs)

    flask.Flask.run = flask_run  # type: ignore[method-assign]

    @contextlib.contextmanager
    def reserve_grpc_port(grpc_port: int) -> Iterator[int]:
        # Same as seldon's, on loopback: holds the port (SO_REUSEPORT, no listen)
        # while the forked gRPC workers bind it.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((LOOPBACK, grpc_port))
        try:
            yield sock.getsockname()[1]
        finally:
            sock.close()

    microservice._reserve_grpc_port = reserve_grpc_port

    original_run_grpc_server = microservice._run_grpc_server

    def run_grpc_server(user_object: Any, seldon_metrics: Any, args: Any, annotations: Any, bind_address: str) -> Any:
        port = bind_address.rpartition(":")[2]
        return original_run_grpc_server(user_object, seldon_metrics, args, annotations, f"{LOOPBACK}:{port}")

    microservice._run_grpc_server = run_grpc_server


class _TensorFlowShim:
    """The two functions of `tensorflow` that seldon_core.utils calls."""

    # TensorFlow DataType number -> (numpy dtype, TensorProto *_val field)
    DTYPES: dict[int, tuple[str, str]] = {
        1: ("float32", "float_val"),
        2: ("float64", "double_val"),
        3: ("int32", "int_val"),
        4: ("uint8", "int_val"),
        5: ("int16", "int_val"),
        6: ("int8", "int_val"),
        7: ("object", "string_val"),
        9: ("int64", "int64_val"),
        10: ("bool", "bool_val"),
    }

    @classmethod
    def make_ndarray(cls, proto: Any) -> Any:
        import numpy as np

        if proto.dtype not in cls.DTYPES:
            raise TypeError(f"Unsupported tftensor dtype {proto.dtype}")
        np_dtype, field = cls.DTYPES[proto.dtype]
        shape = [int(d.size) for d in proto.tensor_shape.dim]
        size = int(np.prod(shape)) if shape else 1
        if proto.tensor_content and np_dtype != "object":
            return np.frombuffer(proto.tensor_content, dtype=np_dtype).copy().reshape(shape)
        values = list(getattr(proto, field))
        array = np.array(values, dtype=object) if np_dtype == "object" else np.array(values, dtype=np_dtype)
        if array.size == 0:
            return np.zeros(shape, dtype=np_dtype)
        if array.size == 1 and size > 1:
            return np.full(shape, array[0], dtype=np_dtype)
        return array.reshape(shape)

    @classmethod
    def make_tensor_proto(cls, values: Any) -> Any:
        import numpy as np
        from seldon_core.proto.tensorflow.core.framework.tensor_pb2 import TensorProto

        array = np.asarray(values)
        kind = array.dtype
        if kind.kind in ("U", "S", "O"):
            number = 7
        else:
            matches = [n for n, (name, _) in cls.DTYPES.items() if name == kind.name]
            if not matches:
                raise TypeError(f"Unsupported array dtype {kind}")
            number = matches[0]
        np_dtype, field = cls.DTYPES[number]
        proto = TensorProto(dtype=number)
        for size in array.shape:
            proto.tensor_shape.dim.add(size=size)
        if number == 7:
            getattr(proto, field).extend(v if isinstance(v, bytes) else str(v).encode() for v in array.ravel().tolist())
        elif number != 10 and array.size > 1:
            proto.tensor_content = array.astype(np_dtype).tobytes()
        else:
            getattr(proto, field).extend(array.ravel().tolist())
        return proto


def patch_tftensor() -> None:
    """Let seldon_core.utils handle tftensor without TensorFlow (see module docstring)."""
    from seldon_core import utils
    from seldon_core.proto.tensorflow.core.framework.tensor_pb2 import TensorProto

    utils.tf = _TensorFlowShim  # type: ignore[attr-defined]
    utils.TensorProto = TensorProto  # type: ignore[attr-defined]


def main(argv: list[str]) -> None:
    model_dir = os.getcwd()
    tftensor_shim = False
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--tftensor-shim":
            tftensor_shim = True
        elif arg == "--model-dir":
            model_dir = next(it)
        elif arg.startswith("--model-dir="):
            model_dir = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    model_dir = os.path.abspath(model_dir)
    os.chdir(model_dir)
    sys.path.insert(0, model_dir)

    patch_seldon()
    if tftensor_shim:
        patch_tftensor()
    from seldon_core import microservice

    sys.argv = ["seldon-core-microservice", *rest]
    microservice.main()


if __name__ == "__main__":
    main(sys.argv[1:])

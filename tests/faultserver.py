"""A Seldon model server that misbehaves on purpose, for the fault-injection tests (loopback only).

Run as a subprocess: ``python -m tests.faultserver --port P [--grpc-port G] --fail-500 0.05
--fail-503 0.05 --rate-429 0.02 --retry-after 1 --reset 0.03 --stall 0.01 --stall-body 0.01
--not-json 0.02 --fail-400 0.01 --delay 0.005 --seed N --fault-log FILE``.

Answers like the Seldon Core 1.18 Python microservice serving ``EchoModel`` (tests/servers.py
lists what the real one returns): the request's data back with ``names`` ``t:0..`` (numpy's type
promotion applied to ndarrays), its ``meta.tags`` echoed, keys sorted. Each request draws at
most one fault from a seeded RNG:

* ``fail-500`` / ``fail-503`` / ``fail-400``: a Seldon error body with that HTTP status;
* ``rate-429``: HTTP 429 with ``Retry-After: <retry-after>``;
* ``reset``: headers and half the body, then the TCP connection is aborted (RST);
* ``stall``: no answer for ``--stall-seconds`` (past any sane request timeout); ``stall-body``
  sends the headers and part of the body first, then stalls;
* ``not-json``: HTTP 200 with an HTML body.

gRPC (``--grpc-port``) serves ``seldon.protos.Seldon``/``Model`` ``Predict`` with the same
knobs: 500 -> INTERNAL, 503 and reset -> UNAVAILABLE, 429 -> RESOURCE_EXHAUSTED, 400 ->
INVALID_ARGUMENT, stall -> no answer until the client's deadline, not-json -> a FAILURE status.
Every injected fault is appended to ``--fault-log`` (one word per line) so tests can count them.
Restarts are the test's job: :class:`FaultServer` stops the process and starts it on the same ports.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

from tests.processes import LoopbackPorts, ManagedProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
FAULTS = ("fail_500", "fail_503", "fail_400", "rate_429", "reset", "stall", "stall_body", "not_json")
_ERROR_REASONS = {500: "MICROSERVICE_INTERNAL_ERROR", 503: "MICROSERVICE_UNAVAILABLE", 400: "MICROSERVICE_BAD_DATA"}


# -- the echo -------------------------------------------------------------------------------------


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]


def _promote(value: Any, to: type) -> Any:
    if isinstance(value, list):
        return [_promote(v, to) for v in value]
    if to is str:
        return value if isinstance(value, str) else json.dumps(value)
    return float(value)


def numpy_like(array: list[Any]) -> list[Any]:
    """What ``np.array(x).tolist()`` gives: one type for all elements (str > float > int)."""
    leaves = _leaves(array)
    if any(isinstance(x, str) for x in leaves):
        return _promote(array, str)  # type: ignore[no-any-return]
    if any(isinstance(x, float) for x in leaves):
        return _promote(array, float)  # type: ignore[no-any-return]
    return array


def _names(columns: int | None) -> list[str]:
    return [f"t:{i}" for i in range(columns)] if columns is not None else []


def echo(message: dict[str, Any]) -> dict[str, Any]:
    """The EchoModel's answer to a SeldonMessage, as the REST microservice shapes it."""
    out: dict[str, Any] = {}
    data = message.get("data")
    if isinstance(data, dict) and isinstance(data.get("ndarray"), list):
        array = numpy_like(data["ndarray"])
        columns = len(array[0]) if array and isinstance(array[0], list) else None
        out["data"] = {"names": _names(columns), "ndarray": array}
    elif isinstance(data, dict) and isinstance(data.get("tensor"), dict):
        shape = data["tensor"].get("shape") or []
        out["data"] = {"names": _names(shape[1] if len(shape) > 1 else None), "tensor": data["tensor"]}
    else:
        for key in ("strData", "jsonData", "binData"):
            if key in message:
                out[key] = message[key]
        if not out:
            raise ValueError(f"Invalid request data type: {json.dumps(message)[:100]}")
    meta = message.get("meta")
    tags = meta.get("tags") if isinstance(meta, dict) else None
    out["meta"] = {"tags": tags} if tags else {}
    return out


def encode(body: dict[str, Any]) -> bytes:
    return (json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n").encode()


def error_body(code: int, info: str) -> bytes:
    return encode({"status": {"code": -1, "info": info, "reason": _ERROR_REASONS.get(code, "FAULT"), "status": 1}})


# -- fault plan -----------------------------------------------------------------------------------


class FaultPlan:
    """Draws at most one fault per request from fixed rates and a seeded RNG; thread-safe."""

    def __init__(self, rates: dict[str, float], seed: int, log_path: str | None) -> None:
        self.rates = {k: v for k, v in rates.items() if v > 0}
        if sum(self.rates.values()) > 1:
            raise ValueError("fault rates add up to more than 1")
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._log = open(log_path, "a") if log_path else None  # noqa: SIM115 - lives as long as the process

    def draw(self) -> str | None:
        with self._lock:
            x = self._rng.random()
            for fault, rate in self.rates.items():
                if x < rate:
                    if self._log is not None:
                        self._log.write(fault + "\n")
                        self._log.flush()
                    return fault
                x -= rate
        return None


# -- REST -----------------------------------------------------------------------------------------


def make_site(plan: FaultPlan, args: argparse.Namespace, reactor: Any) -> Any:
    from twisted.web import resource, server

    class Predictions(resource.Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            return b"pong" if request.path == b"/health/ping" else b"{}"

        def render_POST(self, request: Any) -> Any:
            raw = request.content.read()
            try:
                answer, code = encode(echo(json.loads(raw))), 200
            except ValueError as e:
                answer, code = error_body(400, str(e)), 400
            fault = plan.draw() if code == 200 else None
            call = reactor.callLater(args.delay, self._respond, request, fault, answer, code)
            request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
            return server.NOT_DONE_YET

        def _respond(self, request: Any, fault: str | None, answer: bytes, code: int) -> None:
            request.setHeader(b"content-type", b"application/json")
            if fault in ("fail_500", "fail_503", "fail_400"):
                code = int(fault[-3:])
                answer = error_body(code, f"injected HTTP {code}")
            elif fault == "rate_429":
                code, answer = 429, error_body(429, "injected: too many requests")
                request.setHeader(b"retry-after", str(args.retry_after).encode())
            elif fault == "not_json":
                request.setHeader(b"content-type", b"text/html")
                answer = b"<html><body>502 upstream hiccup</body></html>"
            elif fault in ("reset", "stall", "stall_body"):
                self._misbehave(request, fault, answer)
                return
            request.setResponseCode(code)
            request.setHeader(b"content-length", str(len(answer)).encode())
            request.write(answer)
            request.finish()

        def _misbehave(self, request: Any, fault: str, answer: bytes) -> None:
            transport = request.channel.transport
            if fault == "stall":
                later = reactor.callLater(args.stall_seconds, self._respond, request, None, answer, 200)
                request.notifyFinish().addErrback(lambda _: later.active() and later.cancel())
                return
            request.setHeader(b"content-length", str(len(answer)).encode())
            request.write(answer[: len(answer) // 2])
            later = reactor.callLater(0.02 if fault == "reset" else args.stall_seconds, transport.abortConnection)
            request.notifyFinish().addErrback(lambda _: later.active() and later.cancel())

    return server.Site(Predictions())


# -- gRPC -----------------------------------------------------------------------------------------


def make_grpc_server(plan: FaultPlan, args: argparse.Namespace) -> Any:
    import grpc

    from seldon_batch_tx.protos import prediction_pb2, prediction_pb2_grpc

    codes = {"fail_500": grpc.StatusCode.INTERNAL, "fail_503": grpc.StatusCode.UNAVAILABLE,
             "reset": grpc.StatusCode.UNAVAILABLE, "rate_429": grpc.StatusCode.RESOURCE_EXHAUSTED,
             "fail_400": grpc.StatusCode.INVALID_ARGUMENT}

    class Echo(prediction_pb2_grpc.SeldonServicer, prediction_pb2_grpc.ModelServicer):  # type: ignore[misc]
        def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802
            fault = plan.draw()
            time.sleep(args.delay)
            if fault in codes:
                context.abort(codes[fault], f"injected {fault}")
            if fault in ("stall", "stall_body"):
                deadline = time.monotonic() + args.stall_seconds
                while context.is_active() and time.monotonic() < deadline:
                    time.sleep(0.02)
            response = prediction_pb2.SeldonMessage()
            response.CopyFrom(request)
            if fault == "not_json":
                response.status.code = -1
                response.status.info = "injected model failure"
                response.status.status = prediction_pb2.Status.FAILURE
            if response.HasField("data"):
                kind = response.data.WhichOneof("data_oneof")
                columns: int | None = None
                if kind == "ndarray" and response.data.ndarray.values:
                    first = response.data.ndarray.values[0]
                    columns = len(first.list_value.values) if first.HasField("list_value") else None
                elif kind == "tensor" and len(response.data.tensor.shape) > 1:
                    columns = response.data.tensor.shape[1]
                del response.data.names[:]
                response.data.names.extend(_names(columns))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.grpc_threads))
    prediction_pb2_grpc.add_SeldonServicer_to_server(Echo(), server)
    prediction_pb2_grpc.add_ModelServicer_to_server(Echo(), server)
    server.add_insecure_port(f"{LOOPBACK}:{args.grpc_port}")
    return server


# -- process --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.faultserver", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0)
    for fault in FAULTS:
        parser.add_argument("--" + fault.replace("_", "-"), type=float, default=0.0, dest=fault,
                            help="fraction of requests that get this fault")
    parser.add_argument("--retry-after", type=float, default=1.0, help="seconds, sent with 429")
    parser.add_argument("--stall-seconds", type=float, default=600.0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fault-log", default=None)
    parser.add_argument("--grpc-threads", type=int, default=32)
    args = parser.parse_args(list(argv))
    if args.retry_after == int(args.retry_after):
        args.retry_after = int(args.retry_after)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    plan = FaultPlan({f: getattr(args, f) for f in FAULTS}, args.seed, args.fault_log)
    from twisted.internet import reactor

    grpc_server = None
    if args.grpc_port:
        grpc_server = make_grpc_server(plan, args)
        grpc_server.start()
        reactor.addSystemEventTrigger("before", "shutdown", lambda: grpc_server.stop(0))  # type: ignore[attr-defined]
    reactor.listenTCP(args.port, make_site(plan, args, reactor), interface=LOOPBACK)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


# -- for tests: the server as a subprocess --------------------------------------------------------


class FaultServer(LoopbackPorts, ManagedProcess):
    """``python -m tests.faultserver`` as a child process on fixed ports, restartable."""

    name = "fault server"
    startup_timeout = 20.0
    poll_interval = 0.05
    stop_signal = signal.SIGKILL  # by default abruptly: connections in flight die with it

    def __init__(self, *, faults: dict[str, float] | None = None, seed: int = 0, grpc: bool = False,
                 delay: float = 0.0, retry_after: float = 1.0, stall_seconds: float = 600.0,
                 fault_log: str | os.PathLike[str] | None = None) -> None:
        from tests.loopback import free_ports

        self.http_port, grpc_port = free_ports(2)
        self.grpc_port = grpc_port if grpc else 0
        self.faults = dict(faults or {})
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}")
        self.seed = seed
        self.delay = delay
        self.retry_after = retry_after
        self.stall_seconds = stall_seconds
        self.fault_log = str(fault_log) if fault_log else None
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def port(self) -> int:
        """The REST port (rest_host, grpc_host and where() come from LoopbackPorts)."""
        return self.http_port

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "tests.faultserver", "--port", str(self.port),
               "--grpc-port", str(self.grpc_port), "--seed", str(self.seed + 1000 * self.starts),
               "--delay", str(self.delay), "--retry-after", str(self.retry_after),
               "--stall-seconds", str(self.stall_seconds)]
        for fault, rate in self.faults.items():
            cmd += ["--" + fault.replace("_", "-"), str(rate)]
        if self.fault_log:
            cmd += ["--fault-log", self.fault_log]
        return cmd

    def start(self, timeout: float = 20.0) -> FaultServer:
        """Start on this server's ports (a new seed each start) and wait until it answers."""
        from tests.loopback import loopback_env

        self.spawn(self.command(), cwd=REPO_ROOT, env=loopback_env())
        self.starts += 1
        self.wait_ready_or_stop(timeout)
        return self

    def is_ready(self) -> bool:
        from tests.loopback import http_request, tcp_accepts

        try:
            ready = http_request("GET", self.rest_host, "/health/ping", timeout=1.0)[1] == b"pong"
        except OSError:
            ready = False
        return ready and (not self.grpc_port or tcp_accepts(LOOPBACK, self.grpc_port))

    def restart(self, pause: float = 0.0) -> FaultServer:
        self.stop()
        time.sleep(pause)
        return self.start()

    def fault_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        if self.fault_log and os.path.exists(self.fault_log):
            for word in Path(self.fault_log).read_text().split():
                counts[word] = counts.get(word, 0) + 1
        return counts


if __name__ == "__main__":
    main()

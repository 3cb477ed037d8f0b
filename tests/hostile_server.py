"""A model server that answers with hostile responses on purpose (loopback only), for the hostile suites.

Run as a subprocess: ``python -m tests.hostile_server --port P [--grpc-port G] [--mode echo]
[--log FILE] [--stall-seconds 120]``; :class:`HostileServer` does that for tests.

Every answer is chosen per request, so one server serves a whole test module:

* REST with ``-g istio|ambassador``: the deployment name in the path is the mode
  (``/seldon/NS/MODE/api/v1.0/predictions``); V2 (``/v2/models/MODE/infer``) likewise; with
  ``-g seldon`` the ``--mode`` default applies.  gRPC: the ``seldon`` metadata (the deployment name).
* Mode ``script``: the answer comes from a script the test stored beforehand with
  ``PUT /_script/BATCH_ID`` (JSON ``{"default": SPEC, "answers": {"FIRST_INDEX": SPEC}}``), looked
  up by the request's ``batch_id`` and the ``batch_index`` of its first line.  A SPEC is a mode name
  or a dict (``{"mode": "raw", "status": 200, "body_b64": "...", "close": false}``,
  ``{"mode": "json", "value": ...}``, ``{"mode": "echo", "extra_rows": -1}``,
  ``{"mode": "truncated"}``, ``{"mode": "oversize", "bytes": N, "chunked": true}``; a raw answer may
  carry ``"headers": [[NAME, VALUE], ...]``, e.g. a redirect's ``Location``).

Every request received is appended to ``--log`` as one JSON line (mode, path, batch tags,
``X-Auth-Token``, size and the first 2,000 bytes), so a test can prove what was, or was never, sent.

The modes (REST) are the hostile answers of issue 11: see ``MODES``.  Why a raw protocol and not
twisted.web: several answers are not valid HTTP (never-ending headers, a truncated body, a
Content-Length the body never reaches), which a real web framework would refuse to produce.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.hostile_answers import (
    LOOPBACK,
    MODES,
    RequestLog,
    Scripts,
)
from tests.hostile_grpc import make_grpc_server
from tests.hostile_rest import make_factory
from tests.processes import LoopbackPorts, ManagedProcess

REPO_ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.hostile_server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--mode", default="echo", choices=sorted(MODES))
    parser.add_argument("--log", default=None, help="append one JSON line per request received")
    parser.add_argument("--stall-seconds", type=float, default=120.0,
                        help="how long the stalling and endless modes keep going at most")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    scripts, requests = Scripts(), RequestLog(args.log)
    from twisted.internet import reactor

    if args.grpc_port:
        grpc_server = make_grpc_server(args, scripts, requests)
        grpc_server.start()
        reactor.addSystemEventTrigger("before", "shutdown", lambda: grpc_server.stop(0))  # type: ignore[attr-defined]
    reactor.listenTCP(args.port, make_factory(args, scripts, requests, reactor),  # type: ignore[attr-defined]
                      interface=LOOPBACK, backlog=256)
    reactor.run()  # type: ignore[attr-defined]


# -- for tests: the server as a subprocess --------------------------------------------------------


class HostileServer(LoopbackPorts, ManagedProcess):
    """``python -m tests.hostile_server`` as a child process on free loopback ports."""

    name = "hostile server"
    startup_timeout = 20.0
    poll_interval = 0.05
    stop_signal = signal.SIGKILL  # nothing to flush: the request log is flushed line by line

    def __init__(self, log: str | Path, *, grpc: bool = False, mode: str = "echo", stall_seconds: float = 120.0,
                 ) -> None:
        from tests.loopback import free_ports

        self.http_port, grpc_port = free_ports(2)
        self.grpc_port = grpc_port if grpc else 0
        self.mode = mode
        self.request_log = Path(log)
        self.stall_seconds = stall_seconds
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The REST port (rest_host, grpc_host and where() come from LoopbackPorts)."""
        return self.http_port

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.hostile_server", "--port", str(self.port), "--grpc-port",
                str(self.grpc_port), "--mode", self.mode, "--log", str(self.request_log),
                "--stall-seconds", str(self.stall_seconds)]

    def start(self, timeout: float = 20.0) -> HostileServer:
        from tests.loopback import loopback_env

        self.spawn(self.command(), cwd=REPO_ROOT, env=loopback_env())
        self.wait_ready_or_stop(timeout)
        return self

    def is_ready(self) -> bool:
        from tests.loopback import http_request, tcp_accepts

        try:
            ready = http_request("GET", self.rest_host, "/_ping", timeout=1.0)[1] == b"pong"
        except OSError:
            ready = False
        return ready and (not self.grpc_port or tcp_accepts(LOOPBACK, self.grpc_port))

    def script(self, batch_id: str, default: Any = "echo", answers: dict[int, Any] | None = None) -> None:
        """Store the answers for `batch_id`: ``answers[first batch_index]``, else `default`."""
        from tests.loopback import http_request

        body = {"default": default, "answers": {str(k): v for k, v in (answers or {}).items()}}
        status, text = http_request("PUT", self.rest_host, f"/_script/{batch_id}", body, timeout=10.0)
        if status != 200:
            raise RuntimeError(f"hostile server refused the script: {status} {text[:200]!r}")

    def received(self) -> list[dict[str, Any]]:
        """Every request recorded so far (a torn last line, being written, is left out)."""
        if not self.request_log.exists():
            return []
        out = []
        for line in self.request_log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


if __name__ == "__main__":
    main()

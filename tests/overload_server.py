"""A Seldon echo model that sheds load like a production model at capacity (loopback only).

Run as a subprocess: ``python -m tests.overload_server --threshold T --delay 0.02 --status 429,503
--port-file FILE``. ``POST /api/v1.0/predictions`` answers like the Seldon Core microservice serving
``EchoModel`` (the request's data back with ``names`` ``t:0..`` and its ``meta`` echoed) after
``--delay`` seconds of "model work"; a request that arrives while ``T`` are already being worked on
is refused at once with the next status of ``--status`` (a Seldon error body). ``GET /stats``
returns the counts as JSON: ``answers``, ``overloads``, ``max_in_flight`` (admitted requests at
once: never above T), ``max_arriving`` (requests at once, refused ones included) and
``mean_in_flight`` (admitted requests in flight, averaged over time since the first request).
``GET /arrivals`` lists when each request arrived (monotonic seconds, refused ones included; at most
:data:`MAX_ARRIVALS`), to measure a client's request rate. ``POST /reset`` zeroes them.
:class:`OverloadServer` runs it for tests.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.processes import ManagedProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
#: Arrival times kept for ``GET /arrivals`` (a test's run, not a server's life).
MAX_ARRIVALS = 200_000
_REASONS = {429: "MICROSERVICE_OVERLOADED", 503: "MICROSERVICE_UNAVAILABLE"}


def echo(body: dict[str, Any]) -> dict[str, Any]:
    """What EchoModel answers: the data back with ``names`` t:0.., the meta echoed."""
    data = dict(body.get("data") or {})
    array = data.get("ndarray")
    if isinstance(array, list):
        columns = len(array[0]) if array and isinstance(array[0], list) else 0
        data["names"] = [f"t:{i}" for i in range(columns)]
    return {"data": data, "meta": body.get("meta") or {}}


class Counters:
    """What the tests read: answers, refusals, and how many requests were in flight."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.answers = self.overloads = self.in_flight = 0
        self.max_in_flight = self.max_arriving = 0
        self.first: float | None = None
        self.last = 0.0
        self.area = 0.0  # integral of in_flight over time
        self.arrivals: list[float] = []

    def arrived(self) -> None:
        if len(self.arrivals) < MAX_ARRIVALS:
            self.arrivals.append(time.monotonic())

    def _advance(self) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        else:
            self.area += self.in_flight * (now - self.last)
        self.last = now

    def change(self, delta: int) -> None:
        self._advance()
        self.in_flight += delta
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def as_dict(self) -> dict[str, Any]:
        self._advance()
        span = self.last - self.first if self.first is not None else 0.0
        return {"answers": self.answers, "overloads": self.overloads, "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight, "max_arriving": self.max_arriving,
                "mean_in_flight": self.area / span if span > 0 else 0.0}


def make_site(threshold: int, delay: float, statuses: list[int]) -> Any:
    """The twisted.web site (imported here so that importing this module stays cheap)."""
    from twisted.internet import reactor
    from twisted.web import resource, server

    counters = Counters()
    refusals: Iterator[int] = itertools.cycle(statuses)

    class Predict(resource.Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            request.setHeader(b"content-type", b"application/json")
            if request.path == b"/arrivals":
                return json.dumps(counters.arrivals).encode()
            return json.dumps(counters.as_dict()).encode()

        def render_POST(self, request: Any) -> Any:
            request.setHeader(b"content-type", b"application/json")
            if request.path == b"/reset":
                counters.reset()
                return b"{}"
            counters.arrived()
            counters.max_arriving = max(counters.max_arriving, counters.in_flight + 1)
            if counters.in_flight >= threshold:
                counters.overloads += 1
                status = next(refusals)
                request.setResponseCode(status)
                return json.dumps({"status": {"code": -1, "info": "too many requests in flight",
                                              "reason": _REASONS.get(status, "OVERLOADED"), "status": 1}}).encode()
            try:
                body = json.loads(request.content.read())
            except ValueError:
                request.setResponseCode(400)
                return b'{"status": {"code": -1, "info": "Can\'t find JSON in data", "status": 1}}'
            counters.change(+1)
            call = reactor.callLater(delay, answer, request, body)  # type: ignore[attr-defined]
            request.notifyFinish().addErrback(gone, call)
            return server.NOT_DONE_YET

    def gone(_: Any, call: Any) -> None:
        """The client hung up before its answer: the work stops and leaves the count."""
        if call.active():
            call.cancel()
            counters.change(-1)

    def answer(request: Any, body: Any) -> None:
        counters.change(-1)
        counters.answers += 1
        request.write(json.dumps(echo(body if isinstance(body, dict) else {})).encode())
        request.finish()

    return server.Site(Predict())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True, help="written with the port once listening")
    parser.add_argument("--threshold", type=int, required=True, help="requests worked on at once")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds of model work per answer")
    parser.add_argument("--status", default="429,503", help="refusal statuses, used in turn")
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    site = make_site(args.threshold, args.delay, [int(s) for s in args.status.split(",")])
    port = reactor.listenTCP(args.port, site, interface=LOOPBACK, backlog=1024)  # type: ignore[attr-defined]
    tmp = Path(args.port_file + ".tmp")
    tmp.write_text(str(port.getHost().port))  # type: ignore[attr-defined]
    tmp.rename(args.port_file)  # atomic: the parent never reads half a number
    reactor.run()  # type: ignore[attr-defined]


class OverloadServer(ManagedProcess):
    """``with OverloadServer(tmp_path, threshold=8) as s:`` -> ``s.url``, ``s.stats()``."""

    name = "overload server"
    startup_timeout = 30.0

    def __init__(self, workdir: Path, *, threshold: int, delay: float = 0.02, status: str = "429,503") -> None:
        self.port_file = workdir / f"overload-{os.getpid()}-{id(self)}.port"
        self.log_path = workdir / "overload_server.log"
        self.threshold, self.delay, self.status = threshold, delay, status
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/api/v1.0/predictions"

    def where(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def is_ready(self) -> bool:
        try:
            self.port = int(self.port_file.read_text())
        except (OSError, ValueError):
            return False
        return True

    def start(self) -> OverloadServer:
        self.spawn([sys.executable, "-m", "tests.overload_server", "--port-file", str(self.port_file),
                    "--threshold", str(self.threshold), "--delay", str(self.delay), "--status", self.status],
                   cwd=REPO_ROOT)
        self.wait_ready_or_stop()
        return self

    def _get(self, path: str) -> Any:
        """A blocking loopback GET of this server's JSON, for use outside the reactor."""
        import urllib.request

        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.port}{path}", timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """The server's counters."""
        result: dict[str, Any] = self._get("/stats")
        return result

    def arrivals(self) -> list[float]:
        """When each request arrived (monotonic seconds on this host), in order."""
        result: list[float] = self._get("/arrivals")
        return result


if __name__ == "__main__":
    main()

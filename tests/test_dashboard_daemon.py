"""The real `twistd seldon-batch` daemon's dashboard while hostile files go through its watch directory.

Issue 11, items 6 and 12 as a user meets them: a file whose name is not UTF-8, a name holding a
newline, quotes and markup, and a sidecar batch id with quotes and newlines are dropped into
``incoming/``; every poll of ``/``, ``/api/batches`` and ``/metrics`` meanwhile answers 200 with
valid UTF-8, strict JSON and parseable Prometheus text. The tokenless dashboard refuses a
rebinding ``Host``. Runs against the real Seldon microservice on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prometheus_client.parser import text_string_to_metric_families

from tests.loopback import http_request
from tests.servers import SeldonServer
from tests.test_daemon_real import Daemon, wait_for, write_lines

NOT_UTF8 = b"bad-\xff\xfe.txt"
MARKUP = 'new\nline "q" back\\slash <img src=x onerror=alert(1)>.txt'
SIDECAR_ID = 'id "q" \\ a/b <b>x</b> ü'


def drop(incoming: Path, name: bytes, lines: int, sidecar: dict[str, Any] | None = None) -> None:
    """Write ``.NAME.part`` (and the sidecar), then rename it to NAME: the daemon takes it at once."""
    part = os.path.join(bytes(incoming), b"." + name + b".part")
    write_lines(Path(os.fsdecode(part)), lines)
    if sidecar is not None:
        with open(os.path.join(bytes(incoming), name + b".json"), "w") as f:
            json.dump(sidecar, f)
    os.rename(part, os.path.join(bytes(incoming), name))


def poll_all(daemon: Daemon, host: str | None = None) -> dict[str, Any]:
    """GET /, /api/batches and /metrics; each must be 200 and valid. Returns the API's JSON."""
    headers = {"Host": host} if host else None
    url = f"127.0.0.1:{daemon.port}"
    code, page = http_request("GET", url, "/", timeout=5, headers=headers)
    assert code == 200, page[:500]
    assert "<img src=x" not in page.decode("utf-8", "strict")
    code, metrics = http_request("GET", url, "/metrics", timeout=5, headers=headers)
    assert code == 200, metrics[:500]
    list(text_string_to_metric_families(metrics.decode("utf-8", "strict")))
    code, body = http_request("GET", url, "/api/batches", timeout=5, headers=headers)
    assert code == 200, body[:500]
    data = json.loads(body.decode("utf-8", "strict"))
    for batch in data["batches"]:
        for value in (batch["id"], batch["name"]):
            value.encode("utf-8")  # no lone surrogates
    return data  # type: ignore[no-any-return]


def test_daemon_dashboard_survives_hostile_names(tmp_path: Path, seldon_server: SeldonServer,
                                                 daemons: list[Daemon]) -> None:
    """Hostile names and ids never make the dashboard answer 500; they show as text (bytes as \\xNN)."""
    watch = tmp_path / "watch"
    daemon = Daemon(tmp_path, seldon_server, ["--watch-dir", str(watch), "--poll-interval", "0.2", "-w", "2"])
    daemons.append(daemon)
    daemon.wait_ready()
    incoming = watch / "incoming"
    drop(incoming, NOT_UTF8, 5)
    drop(incoming, MARKUP.encode(), 5)
    drop(incoming, b"sidecar.txt", 5, {"batch-id": SIDECAR_ID})

    def all_finished() -> dict[str, Any] | None:
        data = poll_all(daemon)
        names = {b["name"]: b for b in data["batches"]}
        wanted = ("bad-\\xff\\xfe.txt", MARKUP, "sidecar.txt")
        if all(n in names and names[n]["state"] in ("done", "failed") for n in wanted):
            return names
        return None

    names = wait_for(all_finished, 60, "the three hostile files to finish", step=0.2)
    sidecar = names["sidecar.txt"]
    assert sidecar["state"] == "done" and sidecar["id"] == SIDECAR_ID
    code, page = daemon.get("/batches/" + quote(sidecar["id"], safe=""))
    assert code == 200 and b"&lt;b&gt;x&lt;/b&gt;" in page
    for _ in range(5):  # still fine after they finished (they stay listed)
        poll_all(daemon)
    assert daemon.stop() in (0, 143, -15)


def test_daemon_dashboard_refuses_rebinding_hosts(tmp_path: Path, seldon_server: SeldonServer,
                                                  daemons: list[Daemon]) -> None:
    """Without a token the real daemon serves localhost and 127.0.0.1 names and answers 421 to others."""
    daemon = Daemon(tmp_path, seldon_server, ["--watch-dir", str(tmp_path / "watch"), "--poll-interval", "0.2"])
    daemons.append(daemon)
    daemon.wait_ready()
    poll_all(daemon, f"localhost:{daemon.port}")
    poll_all(daemon, f"[::1]:{daemon.port}")
    url = f"127.0.0.1:{daemon.port}"
    started = time.monotonic()
    for host in (f"rebind.example:{daemon.port}", "attacker.test", "192.168.0.10"):
        for path in ("/", "/api/batches", "/metrics", "/health"):
            code, body = http_request("GET", url, path, timeout=5, headers={"Host": host})
            assert code == 421 and body.startswith(b"421 Misdirected Request"), (host, path, code)
    assert time.monotonic() - started < 30
    assert daemon.log().count("refused a request for Host") == 1  # logged once, not per request
    assert daemon.stop() in (0, 143, -15)

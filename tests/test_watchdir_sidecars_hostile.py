"""Hostile sidecars in the watch directory: they cannot redirect data or credentials, allowed keys
apply and values that cannot apply fail the file once, and --sidecar-allow is checked up front.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.daemon.service import WatchDirService
from seldon_batch_tx.daemon.sidecars import SIDECAR_ALLOWABLE, SIDECAR_NEVER, SIDECAR_SAFE, check_sidecar_allow
from seldon_batch_tx.redaction import Secrets
from tests import watchdir_hostile_helpers
from tests.test_watchdir import write_lines
from tests.watchdir_hostile_helpers import deadline, make, reason, stop

events = watchdir_hostile_helpers.events  # a fixture shared with this topic's other files


def test_sidecars_cannot_redirect_data_or_credentials(tmp_path: Path) -> None:
    """A sidecar may set only per-file options; host, headers, tokens, TLS and the like are the daemon's
    unless its operator allows them; values that cannot apply, and sidecars that are links or FIFOs, send
    the file to failed/ once."""
    daemon = make(tmp_path)
    incoming = daemon.path("incoming")
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"data-type": "str"}))
    cases: dict[str, Any] = {
        "host.txt": {"data-type": "str", "host": "elsewhere.example:80"},
        "token.txt": {"call-credentials-token": "x"},
        "header.txt": {"header": "X-Evil: 1"},
        "shard.txt": {"shard-index": 5},
        "crlf.txt": {"batch-id": "a\r\nX-Evil: 1"},
        "nested.txt": json.loads("[" * 50 + "]" * 50),
        "list.txt": {"workers": [1]},
        "never.txt": {"output-data-path": "/tmp/x"},
    }
    for name, sidecar in cases.items():
        write_lines(incoming / name, 1)
        (incoming / (name + ".json")).write_text(json.dumps(sidecar))
    write_lines(incoming / "deep.txt", 1)
    (incoming / "deep.txt.json").write_text("[" * 100_000 + "]" * 100_000)
    write_lines(incoming / "linked.txt", 1)
    (incoming / "linked.txt.json").symlink_to(outside)
    write_lines(incoming / "fifo-side.txt", 1)
    os.mkfifo(incoming / "fifo-side.txt.json")
    names = [*cases, "deep.txt", "linked.txt", "fifo-side.txt"]
    for name in names:
        (incoming / (name + ".ready")).touch()
    with deadline(20):
        daemon.service.startService()
        daemon.pump(lambda: all(daemon.path("failed", n + ".reason.txt").exists() for n in names), seconds=8)
    got = {name: reason(daemon, name) for name in names}
    for name in ("host.txt", "token.txt", "header.txt", "shard.txt"):
        assert "is the daemon's" in got[name] and "--sidecar-allow" in got[name], got[name]
    assert "'host'" in got["host.txt"] and "--sidecar-allow shard-index" in got["shard.txt"]
    assert "control characters" in got["crlf.txt"]
    assert "must hold a JSON object" in got["nested.txt"] and "not readable JSON" in got["deep.txt"]
    assert "workers" in got["list.txt"] and "not a per-file option" in got["never.txt"]
    assert "symbolic link" in got["linked.txt"] and "FIFO" in got["fifo-side.txt"]
    assert daemon.model.bodies == []  # nothing was sent for any of them
    stop(daemon)


def test_allowed_keys_apply_and_values_that_cannot_apply_fail_once(tmp_path: Path,
                                                                    events: list[dict[str, Any]]) -> None:
    """With --sidecar-allow, the key applies; a value that cannot (shard 5 of 1) sends the file to failed/
    once with the reason, and the daemon does not take it again."""
    daemon = make(tmp_path, sidecar_allow=frozenset({"shard-index", "namespace", "host"}))
    incoming = daemon.path("incoming")
    write_lines(incoming / "shard.txt", 2)
    (incoming / "shard.txt.json").write_text(json.dumps({"shard-index": 5}))
    write_lines(incoming / "port.txt", 2)
    (incoming / "port.txt.json").write_text(json.dumps({"host": "model.test:abc"}))
    write_lines(incoming / "ns.txt", 2)
    (incoming / "ns.txt.json").write_text(json.dumps({"namespace": "other"}))
    for name in ("shard.txt", "port.txt", "ns.txt"):
        (incoming / (name + ".ready")).touch()
    daemon.service.startService()
    daemon.pump(seconds=10)
    assert "do not fit together" in reason(daemon, "shard.txt") and "shard index 5" in reason(daemon, "shard.txt")
    assert "'host'" in reason(daemon, "port.txt") and "abc" in reason(daemon, "port.txt")
    assert daemon.path("done", "ns.txt.summary.json").exists()
    assert len(daemon.model.bodies) == 2
    assert len(events) < 40, [e.get("log_format") for e in events]
    stop(daemon)


def test_check_sidecar_allow_names_bad_keys() -> None:
    """--sidecar-allow takes the daemon's keys; never-per-file keys and unknown ones are refused by name."""
    assert check_sidecar_allow(["host", " Header ", "call_credentials_token", ""]) == {
        "host", "header", "call-credentials-token"}
    for bad in ("output-data-path", "dashboard", "colour"):
        with pytest.raises(ValueError, match=bad):
            check_sidecar_allow([bad])
    assert not SIDECAR_SAFE & SIDECAR_ALLOWABLE and not SIDECAR_NEVER & (SIDECAR_SAFE | SIDECAR_ALLOWABLE)
    assert {"host", "header", "call-credentials-token", "ca-cert", "use-ssl", "transport", "protocol",
            "deployment-name", "model-name", "model-version", "namespace", "gateway-type"} <= SIDECAR_ALLOWABLE


def test_sidecar_allow_is_checked_when_the_service_is_built(tmp_path: Path) -> None:
    """An operator's --sidecar-allow with a key that can never be per-file is refused up front."""
    base = BatchConfig(deployment_name="d", input_data_path="i", output_data_path="o")
    with pytest.raises(ValueError, match="output-data-path"):
        WatchDirService(str(tmp_path), base, Clock(), None,  # type: ignore[arg-type]
                        sidecar_allow=frozenset({"output-data-path"}))


def test_a_sidecars_token_is_hidden_in_the_log_while_its_file_runs(tmp_path: Path) -> None:
    """The daemon tells its log filter (``hide``) the credentials of the files running: a token an allowed
    sidecar brings is added when its file starts and dropped when it ends."""
    told: list[Secrets] = []
    daemon = make(tmp_path, sidecar_allow=frozenset({"call-credentials-token"}), hide=told.append)
    incoming = daemon.path("incoming")
    write_lines(incoming / "a.txt", 2)
    (incoming / "a.txt.json").write_text(json.dumps({"call-credentials-token": "sidecar-token-123456"}))
    (incoming / "a.txt.ready").touch()
    daemon.service.startService()
    daemon.pump(lambda: daemon.path("done", "a.txt.summary.json").exists())
    assert [("sidecar-token-123456" in secrets.values) for secrets in told] == [True, False]
    stop(daemon)

"""The gRPC processor end to end: the real command with ``--transport grpc`` against the real
Seldon Core microservice's gRPC port, checked line by line against the REST output of the same file.

Transport-level behaviour (status-code mapping, deadlines, cancellation, trust-on-first-use) is
proved in tests/test_grpc_loopback.py and tests/test_grpc_tls.py; here the whole command runs as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from seldon_batch_tx.protocols.seldon_pb import value_to_python
from seldon_batch_tx.protos import prediction_pb2_grpc
from tests.grpc_transport_helpers import Recorder
from tests.loopback import LOOPBACK, free_ports, loopback_env
from tests.nginx_gateway import self_signed_cert
from tests.servers import SeldonServer, run_original_processor
from tests.test_rest_real import PROCESSOR, by_index, run_ours, tf_server, write_lines

__all__ = ["tf_server"]  # the module-scoped fixture, used here as well

NDARRAY = [json.dumps([[i, i + 0.5, -i]]) for i in range(12)]
FEEDBACK = [json.dumps({"request": {"data": {"ndarray": [[i]]}}, "response": {"data": {"ndarray": [[i]]}},
                        "reward": i % 2}) for i in range(6)]

#: (case id, processor arguments, input lines, check of output line i)
CASES: list[tuple[str, list[str], list[str], Any]] = [
    ("ndarray", ["-a", "data", "-p", "ndarray"], NDARRAY,
     lambda i, r: r["data"]["ndarray"] == [[i, i + 0.5, -i]] and r["data"]["names"] == ["t:0", "t:1", "t:2"]),
    ("ndarray-ints", ["-a", "data", "-p", "ndarray"], [json.dumps([[i, 2]]) for i in range(12)],
     lambda i, r: r["data"]["ndarray"] == [[i, 2]] and all(type(x) is int for x in r["data"]["ndarray"][0])),
    ("tensor", ["-a", "data", "-p", "tensor"], NDARRAY,
     lambda i, r: r["data"]["tensor"] == {"shape": [1, 3], "values": [i, i + 0.5, -i]}),
    ("str", ["-a", "str"], [json.dumps(f"text {i}") for i in range(12)], lambda i, r: r["strData"] == f"text {i}"),
    ("json", ["-a", "json"], [json.dumps({"n": i, "l": [1, 2.5, None, True, "x"]}) for i in range(12)],
     lambda i, r: r["jsonData"] == {"n": i, "l": [1, 2.5, None, True, "x"]} and type(r["jsonData"]["n"]) is int),
    ("raw", ["-a", "raw"],
     [json.dumps({"data": {"names": ["a"], "ndarray": [[i]]}, "meta": {"tags": {"cust": i, "s": "x"}}})
      for i in range(11)] + [json.dumps({"binData": "aGVsbG8=", "meta": {"tags": {"cust": 11}}})],
     lambda i, r: r["meta"]["tags"]["cust"] == i
     and (r["binData"] == "aGVsbG8=" if i == 11 else r["data"]["ndarray"] == [[i]])),
    ("feedback", ["-a", "raw", "-m", "feedback"], FEEDBACK, lambda i, r: r["data"]["ndarray"] == [i % 2]),
    ("tftensor", ["-a", "data", "-p", "tftensor"], [json.dumps([[i, 2.5]]) for i in range(7)],
     lambda i, r: r["data"]["tftensor"]["tensorShape"] == {"dim": [{"size": "1"}, {"size": "2"}]}),
    ("tftensor-batched", ["-a", "data", "-p", "tftensor", "-s", "3"], [json.dumps([[i, 2.5]]) for i in range(7)],
     lambda i, r: r["data"]["tftensor"]["tensorShape"] == {"dim": [{"size": "1"}, {"size": "2"}]}),
    ("ndarray-batched", ["-a", "data", "-p", "ndarray", "-s", "5"], NDARRAY,
     lambda i, r: r["data"]["ndarray"] == [[i, i + 0.5, -i]]),
]


def same_modulo_numbers(rest: Any, grpc_: Any, where: str = "$") -> None:
    """Assert two output values agree up to what gRPC cannot carry (grpc_messages docstring):
    numbers compare by value (an int sent as a double may come back as a float), and an empty
    ``names`` list is absent over gRPC (proto3 does not put an empty repeated field on the wire)."""
    if isinstance(rest, dict) and isinstance(grpc_, dict):
        keys = set(rest) | set(grpc_)
        if rest.get("names") == [] and "names" not in grpc_:
            keys.discard("names")
        assert set(rest) - {"names"} == set(grpc_) - {"names"}, f"{where}: keys {sorted(rest)} vs {sorted(grpc_)}"
        for key in keys:
            same_modulo_numbers(rest[key], grpc_[key], f"{where}.{key}")
    elif isinstance(rest, list) and isinstance(grpc_, list):
        assert len(rest) == len(grpc_), f"{where}: {rest} vs {grpc_}"
        for n, (a, b) in enumerate(zip(rest, grpc_, strict=True)):
            same_modulo_numbers(a, b, f"{where}[{n}]")
    elif isinstance(rest, bool) or isinstance(grpc_, bool):
        assert rest is grpc_, f"{where}: {rest!r} vs {grpc_!r}"
    elif isinstance(rest, int | float) and isinstance(grpc_, int | float):
        assert float(rest) == float(grpc_), f"{where}: {rest!r} vs {grpc_!r}"
    else:
        assert rest == grpc_, f"{where}: {rest!r} vs {grpc_!r}"


def run_both(server: SeldonServer, tmp_path: Path, args: list[str], lines: list[str],
             expect_exit: int = 0) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """Run the same file over REST and over gRPC (same batch id); (rest lines, grpc lines) by index."""
    infile = write_lines(tmp_path / "in.txt", lines)
    base = ["-d", "echo", "-g", "seldon", "-i", str(infile), "-w", "4", "-u", "batch-1", *args]
    rest = run_ours([*base, "-h", server.rest_host, "-o", str(tmp_path / "rest.txt")])
    over_grpc = run_ours([*base, "-h", server.grpc_host, "--transport", "grpc", "-o", str(tmp_path / "grpc.txt")])
    assert rest.returncode == expect_exit, rest.stderr
    assert over_grpc.returncode == expect_exit, over_grpc.stderr
    return by_index(tmp_path / "rest.txt", len(lines)), by_index(tmp_path / "grpc.txt", len(lines))


@pytest.mark.parametrize(("case", "args", "lines", "check"), CASES, ids=[c[0] for c in CASES])
def test_every_data_type_matches_rest(
    seldon_server: SeldonServer, tf_server: SeldonServer, tmp_path: Path,
    case: str, args: list[str], lines: list[str], check: Any,
) -> None:
    """Each data/payload type (and feedback, and mini-batches) round-trips over gRPC with its tags, an int
    batch_index and the ids REST gives; each line equals the REST line of the same input."""
    server = tf_server if case.startswith("tftensor") else seldon_server
    rest, over_grpc = run_both(server, tmp_path, args, lines)
    for i, record in over_grpc.items():
        assert check(i, record), record
        tags = record["meta"]["tags"]
        assert tags["batch_id"] == "batch-1" and type(tags["batch_index"]) is int
        assert tags == rest[i]["meta"]["tags"]
        same_modulo_numbers(rest[i], record)


def test_mini_batches_with_bad_lines(seldon_server: SeldonServer, tmp_path: Path) -> None:
    """A bad line fails alone in its mini-batch over gRPC too, with the same error line as REST."""
    lines = [json.dumps([[i, i]]) if i % 5 else "{broken" for i in range(40)]
    rest, over_grpc = run_both(seldon_server, tmp_path, ["-s", "4", "-w", "3"], lines, expect_exit=1)
    for i, record in over_grpc.items():
        if i % 5:
            assert record["data"]["ndarray"] == [[i, i]]
        else:
            assert record["status"]["info"] == "input_error" and "not valid JSON" in record["status"]["reason"]
            assert record == rest[i]


def test_model_error_line_carries_the_grpc_status(seldon_server: SeldonServer, tmp_path: Path) -> None:
    """A model exception is gRPC UNKNOWN: not retried, its code name and details in `status`."""
    line = json.dumps({"data": {"tensor": {"shape": [2, 3], "values": [1, 2, 3]}}})
    infile = write_lines(tmp_path / "in.txt", [line])
    started = time.monotonic()
    proc = run_ours(["-d", "echo", "-g", "seldon", "-h", seldon_server.grpc_host, "--transport", "grpc",
                     "-a", "raw", "-i", str(infile), "-r", "5"])
    assert proc.returncode == 1 and time.monotonic() - started < 30
    status = by_index(tmp_path / "in.out.txt", 1)[0]["status"]
    assert status["info"] == "grpc_UNKNOWN" and status["code"] == 2
    assert status["reason"].startswith("gRPC UNKNOWN: Exception calling application")
    assert "0 retries" in proc.stdout


# --- what reaches the server: a recording gRPC server on loopback -----------------------------


class TagRecorder(Recorder):
    """Also records each request's meta.tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[dict[str, Any]] = []

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC's name
        with self.lock:
            self.tags.append({k: value_to_python(v, ints=False) for k, v in request.meta.tags.items()})
        return super().Predict(request, context)


class RecordingServer:
    """A grpc.server on 127.0.0.1 serving :class:`TagRecorder`, plain or with TLS."""

    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        self.recorder = TagRecorder()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        prediction_pb2_grpc.add_SeldonServicer_to_server(self.recorder, self.server)
        address = f"{LOOPBACK}:0"
        self.port = (self.server.add_secure_port(address, credentials) if credentials
                     else self.server.add_insecure_port(address))
        self.server.start()

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def __enter__(self) -> RecordingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=None).wait(timeout=5)


@pytest.mark.parametrize("gateway", ["seldon", "istio", "ambassador"])
def test_tags_and_metadata_reach_the_server(tmp_path: Path, gateway: str) -> None:
    """Every request carries its tags, the seldon gateway included (the original sends none there);
    istio/ambassador add the seldon/namespace metadata; seldon-puid and the token always."""
    infile = write_lines(tmp_path / "in.txt", [json.dumps(f"t{i}") for i in range(8)])
    with RecordingServer() as server:
        proc = run_ours(["-d", "my-dep", "-n", "models", "-g", gateway, "-h", server.host, "--transport", "grpc",
                         "-a", "str", "-i", str(infile), "-u", "b-7", "-w", "3", "--call-credentials-token", "tok"])
    assert proc.returncode == 0, proc.stderr
    out = by_index(tmp_path / "in.out.txt", 8)
    recorder = server.recorder
    assert sorted(int(t["batch_index"]) for t in recorder.tags) == list(range(8))
    for tags in recorder.tags:
        index = int(tags["batch_index"])
        assert tags["batch_id"] == "b-7"
        assert tags["batch_instance_id"] == out[index]["meta"]["tags"]["batch_instance_id"]
    for seen in recorder.metadata:
        assert seen["x-auth-token"] == "tok" and seen["seldon-puid"]
        if gateway == "seldon":
            assert "seldon" not in seen and "namespace" not in seen
        else:
            assert (seen["seldon"], seen["namespace"]) == ("my-dep", "models")
    assert {m["seldon-puid"] for m in recorder.metadata} == {r["meta"]["tags"]["batch_instance_id"]
                                                             for r in out.values()}


def test_tls_through_the_command(tmp_path: Path) -> None:
    """--use-ssl --ca-cert trusts a self-signed server, --use-ssl --no-ssl-verify accepts it,
    --use-ssl alone refuses it before the first line (issue 19: one line, exit 4, nothing written)."""
    cert, key = self_signed_cert(tmp_path)
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    infile = write_lines(tmp_path / "in.txt", NDARRAY[:5])
    with RecordingServer(credentials) as server:
        base = ["-d", "dep", "-g", "seldon", "-h", server.host, "--transport", "grpc", "-i", str(infile),
                "-w", "2", "-r", "0", "--timeout", "5"]
        trusted = run_ours([*base, "--use-ssl", "--ca-cert", str(cert), "-o", str(tmp_path / "a.txt")])
        insecure = run_ours([*base, "--use-ssl", "--no-ssl-verify", "-o", str(tmp_path / "b.txt")])
        refused = run_ours([*base, "--use-ssl", "-o", str(tmp_path / "c.txt")])
    assert trusted.returncode == 0, trusted.stderr
    assert insecure.returncode == 0, insecure.stderr
    for name in ("a.txt", "b.txt"):
        assert by_index(tmp_path / name, 5)[2]["data"]["ndarray"] == [[2, 2.5, -2]]
    assert refused.returncode == 4, refused.stderr  # EXIT_UNREACHABLE
    assert "TLS handshake failed" in refused.stderr and server.host in refused.stderr
    assert not (tmp_path / "c.txt").exists()
    assert len(server.recorder.tags) == 10


# --- the server stopped in the middle of a run -------------------------------------------------


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_server_killed_mid_run_and_started_again(tmp_path: Path) -> None:
    """The model dies after some lines and comes back on the same port: UNAVAILABLE is retried with
    backoff and every line ends up in the output exactly once, all of them successes."""
    http, grpc_port, metrics = free_ports(3)
    server = SeldonServer("EchoModel", http_port=http, grpc_port=grpc_port, metrics_port=metrics).start()
    lines = [json.dumps([[i, 0.5]]) for i in range(600)]
    infile = write_lines(tmp_path / "in.txt", lines)
    out = tmp_path / "out.txt"
    # --batch-interval slows each of the 2 workers to <= 100 requests/s, so the kill lands mid-run
    command = [PROCESSOR, "-d", "echo", "-g", "seldon", "-h", server.grpc_host, "--transport", "grpc",
               "-i", str(infile), "-o", str(out), "-w", "2", "--batch-interval", "0.01", "-r", "30",
               "--timeout", "5"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=loopback_env())
    try:
        deadline = time.monotonic() + 60
        while count_lines(out) < 100 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.poll() is None, "the run ended before the server was killed"
        killed_at = count_lines(out)
        server.kill()
        time.sleep(1.5)
        assert count_lines(out) < len(lines), "the run finished while the server was down"
        server.start()
        stdout, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)
        server.stop()
    assert child.returncode == 0, stderr[-3000:]
    assert killed_at < len(lines)
    records = by_index(out, len(lines))
    assert all(records[i]["data"]["ndarray"] == [[i, 0.5]] for i in range(len(lines)))
    assert "600 succeeded, 0 failed" in stdout and " 0 retries" not in stdout, stdout


# --- the original processor -------------------------------------------------------------------


def test_data_matches_the_original_processor(seldon_server: SeldonServer, tmp_path: Path) -> None:
    """Same file, both over gRPC: the model's data are numerically the same; the original's lines have
    no tags at all on the seldon gateway (a defect we fix), ours carry them with an int batch_index."""
    lines = [json.dumps([[i, i * 2, 0.25]]) for i in range(30)]
    infile = write_lines(tmp_path / "in.txt", lines)
    base = ["-d", "echo", "-g", "seldon", "-h", seldon_server.grpc_host, "--transport", "grpc",
            "-i", str(infile), "-w", "3"]
    original = run_original_processor([*base, "-o", str(tmp_path / "orig.txt")])
    assert original.returncode == 0, original.stderr
    ours = run_ours([*base, "-o", str(tmp_path / "ours.txt")])
    assert ours.returncode == 0, ours.stderr
    theirs_lines = [json.loads(line) for line in (tmp_path / "orig.txt").read_text().splitlines()]
    assert len(theirs_lines) == 30
    assert all(r["meta"] == {} for r in theirs_lines), "the original now sends tags: update this test"
    # without tags the original's lines are told apart by their first number (the line's index)
    theirs = {int(r["data"]["ndarray"][0][0]): r for r in theirs_lines}
    mine = by_index(tmp_path / "ours.txt", 30)
    assert sorted(theirs) == list(range(30))
    for i in range(30):
        assert mine[i]["data"] == theirs[i]["data"]
        assert set(mine[i]["meta"]["tags"]) == {"batch_id", "batch_instance_id", "batch_index"}

"""The REST processor end to end: the real command against the real Seldon Core microservice."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.loopback import free_ports, loopback_env
from tests.nginx_gateway import NginxGateway, self_signed_cert
from tests.servers import SeldonServer, run_original_processor

PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")


def run_ours(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROCESSOR, *args], capture_output=True, text=True, timeout=timeout, env=loopback_env())


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def by_index(path: Path, expected: int) -> dict[int, dict[str, Any]]:
    """Output lines keyed by batch_index, asserting exactly one line per input line."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    indexes = [r["meta"]["tags"]["batch_index"] for r in records]
    assert sorted(indexes) == list(range(expected)), "every batch_index exactly once"
    assert all(type(i) is int for i in indexes)
    return {r["meta"]["tags"]["batch_index"]: r for r in records}


@pytest.fixture(scope="module")
def tf_server() -> Iterator[SeldonServer]:
    """The microservice with its TensorFlow stand-in, so tftensor requests are answered."""
    with SeldonServer("EchoModel", tftensor_shim=True) as server:
        yield server


NDARRAY = [json.dumps([[i, i + 0.5, -i]]) for i in range(20)]


@pytest.mark.parametrize(("data_type", "payload_type", "lines", "check"), [
    ("data", "ndarray", NDARRAY, lambda i, r: r["data"]["ndarray"] == [[i, i + 0.5, -i]]),
    ("data", "tensor", NDARRAY, lambda i, r: r["data"]["tensor"] == {"shape": [1, 3], "values": [i, i + 0.5, -i]}),
    ("str", "ndarray", [json.dumps(f"text {i}") for i in range(20)], lambda i, r: r["strData"] == f"text {i}"),
    ("json", "ndarray", [json.dumps({"n": i, "tags": ["a"]}) for i in range(20)],
     lambda i, r: r["jsonData"] == {"n": i, "tags": ["a"]}),
    ("raw", "ndarray", [json.dumps({"data": {"names": ["a"], "ndarray": [[i]]}, "meta": {"tags": {"cust": i}}})
                        for i in range(20)],
     lambda i, r: r["data"]["ndarray"] == [[i]] and r["meta"]["tags"]["cust"] == i),
])
def test_every_data_type_against_the_real_microservice(
    seldon_server: SeldonServer, tmp_path: Path, data_type: str, payload_type: str, lines: list[str], check: Any,
) -> None:
    """Each data/payload type round-trips through the real model with its tags; ints stay ints."""
    infile = write_lines(tmp_path / "in.txt", lines)
    proc = run_ours(["-d", "echo", "-g", "seldon", "-h", seldon_server.rest_host, "-a", data_type,
                     "-p", payload_type, "-i", str(infile), "-w", "4", "-u", "batch-1"])
    assert proc.returncode == 0, proc.stderr
    out = by_index(tmp_path / "in.out.txt", len(lines))
    for i, record in out.items():
        assert check(i, record), record
        assert record["meta"]["tags"]["batch_id"] == "batch-1"


@pytest.mark.parametrize("batch_size", ["1", "3"])
def test_tftensor_against_the_real_microservice(tf_server: SeldonServer, tmp_path: Path, batch_size: str) -> None:
    """tftensor requests (and mini-batches of them) come back one output line per input line."""
    infile = write_lines(tmp_path / "in.txt", [json.dumps([[i, 2.5]]) for i in range(7)])
    proc = run_ours(["-d", "echo", "-g", "seldon", "-h", tf_server.rest_host, "-p", "tftensor",
                     "-s", batch_size, "-i", str(infile), "-w", "2"])
    assert proc.returncode == 0, proc.stderr
    out = by_index(tmp_path / "in.out.txt", 7)
    for record in out.values():
        dims = [d["size"] for d in record["data"]["tftensor"]["tensorShape"]["dim"]]
        assert dims == ["1", "2"]


def test_feedback_against_the_real_microservice(seldon_server: SeldonServer, tmp_path: Path) -> None:
    lines = [json.dumps({"request": {"data": {"ndarray": [[i]]}}, "response": {"data": {"ndarray": [[i]]}},
                         "reward": i % 2}) for i in range(6)]
    infile = write_lines(tmp_path / "in.txt", lines)
    proc = run_ours(["-d", "echo", "-g", "seldon", "-h", seldon_server.rest_host, "-a", "raw", "-m", "feedback",
                     "-i", str(infile)])
    assert proc.returncode == 0, proc.stderr
    out = by_index(tmp_path / "in.out.txt", 6)
    assert [out[i]["data"]["ndarray"] for i in range(6)] == [[i % 2] for i in range(6)]


def test_mini_batches_with_bad_lines(seldon_server: SeldonServer, tmp_path: Path) -> None:
    """Bad lines fail alone in their mini-batch; every other line gets its own echoed row."""
    lines = [json.dumps([[i, i]]) if i % 5 else "{broken" for i in range(40)]
    infile = write_lines(tmp_path / "in.txt", lines)
    proc = run_ours(["-d", "echo", "-g", "seldon", "-h", seldon_server.rest_host, "-s", "4", "-w", "3",
                     "-i", str(infile), "--benchmark"])
    assert proc.returncode == 1
    assert "Benchmark: elapsed time" in proc.stdout and "lines/s" in proc.stdout
    out = by_index(tmp_path / "in.out.txt", 40)
    for i, record in out.items():
        if i % 5:
            assert record["data"]["ndarray"] == [[i, i]]
        else:
            assert record["status"]["info"] == "input_error" and "not valid JSON" in record["status"]["reason"]


@pytest.mark.parametrize("gateway", ["istio", "ambassador"])
def test_gateway_paths_through_a_loopback_ingress(seldon_server: SeldonServer, tmp_path: Path, gateway: str) -> None:
    """istio/ambassador requests go to /seldon/{namespace}/{deployment}/api/v1.0/predictions."""
    infile = write_lines(tmp_path / "in.txt", NDARRAY)
    with NginxGateway(seldon_server.rest_host, "models", "my-dep") as ingress:
        proc = run_ours(["-d", "my-dep", "-n", "models", "-g", gateway, "-h", ingress.host, "-i", str(infile),
                         "-w", "5"])
        wrong = run_ours(["-d", "other-dep", "-n", "models", "-g", gateway, "-h", ingress.host,
                          "-i", str(infile), "-o", str(tmp_path / "wrong.txt")])
    assert proc.returncode == 0, proc.stderr
    assert by_index(tmp_path / "in.out.txt", 20)[3]["data"]["ndarray"] == [[3, 3.5, -3]]
    assert wrong.returncode == 1
    errors = by_index(tmp_path / "wrong.txt", 20)
    assert errors[0]["status"]["code"] == 404 and errors[0]["status"]["reason"].startswith("HTTP 404")


def test_https_self_signed_and_custom_ca(seldon_server: SeldonServer, tmp_path: Path) -> None:
    """--use-ssl with --no-ssl-verify accepts a self-signed server; --ca-cert trusts it; default refuses it."""
    cert, key = self_signed_cert(tmp_path)
    infile = write_lines(tmp_path / "in.txt", NDARRAY[:5])
    with NginxGateway(seldon_server.rest_host, "ns", "dep", tls=(cert, key)) as ingress:
        base = ["-d", "dep", "-n", "ns", "-g", "istio", "-h", ingress.host, "-i", str(infile), "-r", "0"]
        insecure = run_ours([*base, "--use-ssl", "--no-ssl-verify", "-o", str(tmp_path / "a.txt")])
        trusted = run_ours([*base, "--use-ssl", "true", "--ca-cert", str(cert), "-o", str(tmp_path / "b.txt")])
        refused = run_ours([*base, "--use-ssl", "-o", str(tmp_path / "c.txt")])
        run_ours([*base, "--call-credentials-token", "tok", "-o", str(tmp_path / "d.txt")])
    assert insecure.returncode == 0, insecure.stderr
    assert trusted.returncode == 0, trusted.stderr
    assert by_index(tmp_path / "a.txt", 5)[0]["data"]["ndarray"] == [[0, 0.5, 0]]
    # a refused certificate is found by the readiness check: exit 4, nothing written (issue 19)
    assert refused.returncode == 4 and "certificate" in refused.stderr.lower()
    assert not (tmp_path / "c.txt").exists()
    # A token does not switch to https: plain http to a TLS port gets nginx's 400 answer.
    assert by_index(tmp_path / "d.txt", 5)[0]["status"]["code"] == 400


def test_server_down_at_start_then_up(tmp_path: Path) -> None:
    """--wait-ready waits for a model that comes up late: it still gets every line."""
    http, grpc, metrics = free_ports(3)
    server = SeldonServer("EchoModel", http_port=http, grpc_port=grpc, metrics_port=metrics)
    infile = write_lines(tmp_path / "in.txt", NDARRAY)
    starter = threading.Timer(1.0, server.start)
    starter.start()
    try:
        proc = run_ours(["-d", "echo", "-g", "seldon", "-h", f"127.0.0.1:{http}", "-i", str(infile), "-w", "4",
                         "-r", "10", "--wait-ready", "60"])
    finally:
        starter.join()
        server.stop()
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert len(by_index(tmp_path / "in.out.txt", 20)) == 20
    assert "0 failed" in proc.stdout


def test_successes_match_the_original_processor(seldon_server: SeldonServer, tmp_path: Path) -> None:
    """For the same input, our successes carry the same data as the original's (which turns ints into
    floats, a defect we fix: the values compare equal, the types are kept by us)."""
    lines = [json.dumps([[i, i * 2, 3]]) for i in range(30)]
    infile = write_lines(tmp_path / "in.txt", lines)
    base = ["-d", "echo", "-g", "seldon", "-h", seldon_server.rest_host, "-i", str(infile), "-w", "3"]
    original = run_original_processor([*base, "-o", str(tmp_path / "orig.txt")])
    assert original.returncode == 0, original.stderr
    ours = run_ours([*base, "-o", str(tmp_path / "ours.txt")])
    assert ours.returncode == 0, ours.stderr
    theirs = {int(r["meta"]["tags"]["batch_index"]): r
              for r in map(json.loads, (tmp_path / "orig.txt").read_text().splitlines())}
    mine = by_index(tmp_path / "ours.txt", 30)
    assert sorted(theirs) == list(range(30))
    for i in range(30):
        assert mine[i]["data"] == theirs[i]["data"]
        assert set(mine[i]["meta"]["tags"]) == set(theirs[i]["meta"]["tags"])
    assert mine[4]["data"]["ndarray"] == [[4, 8, 3]] and type(mine[4]["data"]["ndarray"][0][0]) is int
    assert type(theirs[4]["data"]["ndarray"][0][0]) is float  # the original's defect


def test_exit_status_when_every_line_fails(tmp_path: Path) -> None:
    """The original exits 0 even when no line could be sent; we say why in one line, exit 4 (issue 19),
    and write nothing, so the lines are not spent on a model that is not there."""
    infile = write_lines(tmp_path / "in.txt", NDARRAY[:3])
    (port,) = free_ports(1)
    started = time.monotonic()
    proc = run_ours(["-d", "echo", "-g", "seldon", "-h", f"127.0.0.1:{port}", "-i", str(infile), "-r", "0"])
    assert proc.returncode == 4 and time.monotonic() - started < 60
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in proc.stderr
    assert not (tmp_path / "in.out.txt").exists()

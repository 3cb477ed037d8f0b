"""Prove the real-server test infrastructure works (tests/servers.py).

These talk to the real Seldon Core v1 microservice and run the original
seldon-batch-processor, all on 127.0.0.1.  The findings they pin down are written
up at the top of tests/servers.py.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.loopback import free_port, port_is_free, post_json, tcp_accepts
from tests.servers import SELDON_PYTHON, SeldonServer, SeldonServerError, run_original_processor, tftensor_request

PREDICT = "/api/v1.0/predictions"
FEEDBACK = "/api/v1.0/feedback"
TAGS: dict[str, Any] = {"batch_id": "b-1", "batch_instance_id": "i-1", "batch_index": 3}


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of LISTEN sockets on `port`, read from /proc/net/tcp{,6}."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.add(address)
    return found


# 127.0.0.1 in /proc/net/tcp, and ::ffff:127.0.0.1 in /proc/net/tcp6 (gRPC's socket)
LOOPBACK_HEX = {"0100007F", "0000000000000000FFFF00000100007F"}


def test_listens_on_loopback_only(seldon_server: SeldonServer) -> None:
    """REST, gRPC and metrics ports all listen, and only on 127.0.0.1."""
    for port in (seldon_server.http_port, seldon_server.grpc_port, seldon_server.metrics_port):
        addresses = _listening_addresses(port)
        assert addresses, f"nothing listens on port {port}"
        assert addresses <= LOOPBACK_HEX, f"port {port} listens on {addresses}"
        assert not port_is_free(port)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"data": {"ndarray": [[1, 2.5, 3]]}},
            {"data": {"names": ["t:0", "t:1", "t:2"], "ndarray": [[1, 2.5, 3]]}},
            id="ndarray",
        ),
        pytest.param(
            {"data": {"tensor": {"shape": [1, 3], "values": [1, 2, 3]}}},
            {"data": {"names": ["t:0", "t:1", "t:2"], "tensor": {"shape": [1, 3], "values": [1, 2, 3]}}},
            id="tensor",
        ),
        pytest.param({"strData": "some text"}, {"strData": "some text"}, id="strData"),
        pytest.param(
            {"jsonData": {"a": 1, "b": [1, 2.5, "x"]}},
            {"jsonData": {"a": 1, "b": [1, 2.5, "x"]}},
            id="jsonData-dict",
        ),
        pytest.param(
            {"jsonData": [1, 2, 3]},
            {"data": {"names": [], "tensor": {"shape": [3], "values": [1, 2, 3]}}},
            id="jsonData-list",
        ),
        pytest.param({"binData": "aGVsbG8="}, {"binData": "aGVsbG8="}, id="binData"),
    ],
)
def test_rest_predict_echoes_payload_and_tags(
    seldon_server: SeldonServer, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    """The EchoModel answers each payload kind as recorded, keeping ints and echoing meta.tags."""
    status, answer = post_json(seldon_server.rest_host, PREDICT, {**body, "meta": {"tags": TAGS}})
    assert status == 200, answer
    assert answer == {**expected, "meta": {"tags": TAGS}}
    assert type(answer["meta"]["tags"]["batch_index"]) is int


def test_rest_tftensor_fails_without_tensorflow(seldon_server: SeldonServer) -> None:
    """Without TensorFlow the real server answers any tftensor with HTTP 500."""
    body = tftensor_request(TAGS)
    status, answer = post_json(seldon_server.rest_host, PREDICT, body)
    assert status == 500
    assert answer == {
        "status": {
            "code": -1,
            "info": "name 'TensorProto' is not defined",
            "reason": "MICROSERVICE_INTERNAL_ERROR",
            "status": 1,
        }
    }


def test_rest_error_shapes(seldon_server: SeldonServer) -> None:
    """Bad bodies give HTTP 400 and model errors HTTP 500, each a SeldonMessage status."""
    status, answer = post_json(seldon_server.rest_host, PREDICT, "not json")
    assert status == 400
    assert answer["status"] == {
        "code": -1,
        "info": "Can't find JSON in data",
        "reason": "MICROSERVICE_BAD_DATA",
        "status": 1,
    }
    status, answer = post_json(
        seldon_server.rest_host, PREDICT, {"data": {"tensor": {"shape": [2, 3], "values": [1, 2, 3]}}}
    )
    assert status == 500
    assert answer["status"]["reason"] == "MICROSERVICE_INTERNAL_ERROR"
    assert "cannot reshape" in answer["status"]["info"]


def test_rest_feedback(seldon_server: SeldonServer) -> None:
    """Feedback reaches EchoModel.send_feedback, which answers with the reward; tags are not echoed."""
    body = {
        "request": {"data": {"ndarray": [[1, 2]]}, "meta": {"tags": TAGS}},
        "response": {"data": {"ndarray": [[1, 2]]}},
        "reward": 0.5,
        "truth": {"data": {"ndarray": [[1]]}},
    }
    status, answer = post_json(seldon_server.rest_host, FEEDBACK, body)
    assert status == 200, answer
    assert answer == {"data": {"ndarray": [0.5]}, "meta": {}}
    status, answer = post_json(seldon_server.rest_host, FEEDBACK, {"data": {"ndarray": [[1]]}})
    assert status == 400
    assert answer["status"]["reason"] == "MICROSERVICE_BAD_DATA"


GRPC_CLIENT = textwrap.dedent(
    """
    import json, sys
    import grpc
    from google.protobuf import json_format
    from seldon_core.proto import prediction_pb2, prediction_pb2_grpc
    stub = prediction_pb2_grpc.SeldonStub(grpc.insecure_channel(sys.argv[1]))
    request = json_format.ParseDict(json.loads(sys.argv[2]), prediction_pb2.SeldonMessage())
    print(json_format.MessageToJson(stub.Predict(request, timeout=10), indent=None))
    """
)


def test_grpc_predict(seldon_server: SeldonServer) -> None:
    """The gRPC port accepts connections and Predict echoes, numbers turned into doubles."""
    assert tcp_accepts("127.0.0.1", seldon_server.grpc_port)
    body = {"data": {"ndarray": [[1, 2]]}, "meta": {"tags": TAGS}}
    result = subprocess.run(
        [str(SELDON_PYTHON), "-c", GRPC_CLIENT, seldon_server.grpc_host, json.dumps(body)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "no_proxy": "127.0.0.1"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "meta": {"tags": {**TAGS, "batch_index": 3.0}},
        "data": {"names": ["t:0", "t:1"], "ndarray": [[1.0, 2.0]]},
    }


def _write_ndarray_input(path: Path, lines: int) -> None:
    path.write_text("".join(f"[[{i}, 2, 3.5]]\n" for i in range(lines)))


def test_original_processor_rest(seldon_server: SeldonServer, tmp_path: Path) -> None:
    """The original processor sends 10 ndarray lines over REST and writes 10 success lines."""
    _write_ndarray_input(tmp_path / "in", 10)
    result = run_original_processor(
        [
            *["-d", "echo", "-g", "seldon", "-w", "2", "-h"],
            seldon_server.rest_host,
            "-i",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "out"),
        ],
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]
    assert len(lines) == 10
    by_index = {line["meta"]["tags"]["batch_index"]: line for line in lines}
    assert sorted(by_index) == [float(i) for i in range(10)]
    assert by_index[4.0]["data"] == {"names": ["t:0", "t:1", "t:2"], "ndarray": [[4.0, 2.0, 3.5]]}
    assert set(by_index[4.0]["meta"]["tags"]) == {"batch_id", "batch_index", "batch_instance_id"}


def test_original_processor_grpc_spelling(seldon_server: SeldonServer, tmp_path: Path) -> None:
    """`--transport grpc` works (lines carry no tags); `-t grpc` is taken as --batch-interval."""
    _write_ndarray_input(tmp_path / "in", 10)
    common = ["-d", "echo", "-g", "seldon", "-h", seldon_server.grpc_host, "-i", str(tmp_path / "in"), "-w", "2"]
    bad = run_original_processor([*common, "-o", str(tmp_path / "bad"), "-t", "grpc"], timeout=60)
    assert bad.returncode == 2
    assert "'grpc' is not a valid float" in bad.stderr
    result = run_original_processor([*common, "-o", str(tmp_path / "out"), "--transport", "grpc"], timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]
    assert len(lines) == 10
    assert all(line["meta"] == {} for line in lines)
    assert sorted(line["data"]["ndarray"][0][0] for line in lines) == [float(i) for i in range(10)]


def test_original_processor_error_line_when_server_down(tmp_path: Path) -> None:
    """With nothing listening the original writes a FAILURE line per input, tags flat under meta, exit 0."""
    _write_ndarray_input(tmp_path / "in", 2)
    port = free_port()
    result = run_original_processor(
        [
            *["-d", "echo", "-g", "seldon", "-w", "1", "-h"],
            f"127.0.0.1:{port}",
            "-i",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "out"),
        ],
        timeout=60,
    )
    assert result.returncode == 0
    lines = [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert list(line) == ["status", "meta"]
        assert line["status"]["info"] == "FAILURE" and line["status"]["status"] == 1
        assert "Connection refused" in line["status"]["reason"]
        assert set(line["meta"]) == {"batch_id", "batch_instance_id", "batch_index"}
    assert sorted(line["meta"]["batch_index"] for line in lines) == [0, 1]


def test_server_restart_on_same_ports_with_tftensor_shim(seldon_venv: Path) -> None:
    """A server stopped by PID frees its ports and restarts on the same ones; the opt-in
    tftensor shim answers tftensor like TensorFlow (packed tensorContent)."""
    body = tftensor_request(TAGS)
    expected = {
        "data": {
            "names": ["t:0", "t:1", "t:2"],
            "tftensor": {
                "dtype": "DT_DOUBLE",
                "tensorContent": "AAAAAAAA8D8AAAAAAAAAQAAAAAAAAAhA",
                "tensorShape": {"dim": [{"size": "1"}, {"size": "3"}]},
            },
        },
        "meta": {"tags": TAGS},
    }
    with SeldonServer(tftensor_shim=True) as server:
        ports = (server.http_port, server.grpc_port, server.metrics_port)
        assert post_json(server.rest_host, PREDICT, body) == (200, expected)
        server.stop()
        assert not server.running
        assert all(port_is_free(port) for port in ports)
        assert not tcp_accepts("127.0.0.1", server.http_port)
        server.start()
        assert (server.http_port, server.grpc_port, server.metrics_port) == ports
        assert post_json(server.rest_host, PREDICT, body) == (200, expected)
    assert all(port_is_free(port) for port in ports)


def test_start_failure_reports_log_tail(seldon_venv: Path) -> None:
    """A server that cannot start fails fast with its exit status and log tail."""
    server = SeldonServer("NoSuchModel", startup_timeout=30)
    with pytest.raises(SeldonServerError, match=r"(?s)exited with status .*No module named 'NoSuchModel'"):
        server.start()
    assert not server.running

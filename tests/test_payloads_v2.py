"""Open Inference Protocol (V2): request bodies, output and error lines, gRPC conversion, options, URLs."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.core.items import Item
from seldon_batch_tx.options import ProcessorOptions
from seldon_batch_tx.outputs.lines import line_info
from seldon_batch_tx.pipeline.reader import instance_id
from seldon_batch_tx.protocols.base import InputError, ResponseMismatch
from seldon_batch_tx.protocols.choose import make_codec
from seldon_batch_tx.protocols.seldon import SeldonCodec
from seldon_batch_tx.protocols.v2 import V2Codec
from seldon_batch_tx.protocols.v2_pb import request_from_dict, response_to_dict
from seldon_batch_tx.protos import grpc_service_pb2
from seldon_batch_tx.transports.fast_connection import request_head
from seldon_batch_tx.transports.http import model_url
from seldon_batch_tx.transports.treq_client import RestTransport
from tests.targets import target_of


def endpoint_url(c: BatchConfig, _path: str) -> str:
    """The model URL the REST clients post to (the codec's target on ``--host``)."""
    return model_url(c, make_codec(c).target)


def config(**kw: Any) -> BatchConfig:
    kw.setdefault("protocol", "v2")
    return BatchConfig(deployment_name="d", input_data_path="i", output_data_path="o", batch_id="B", **kw)


def codec(**kw: Any) -> V2Codec:
    c = make_codec(config(**kw))
    assert isinstance(c, V2Codec)
    return c


def item(index: int, line: str) -> Item:
    return Item(index, instance_id("B", index), line.encode())


def tags(index: int) -> dict[str, Any]:
    return {"batch_id": "B", "batch_instance_id": instance_id("B", index), "batch_index": index}


def build(c: V2Codec, *lines: str) -> tuple[dict[str, Any], list[Any], list[Any]]:
    return c.build([c.parse(item(i, line)) for i, line in enumerate(lines)])


def test_make_codec_follows_the_protocol() -> None:
    """--protocol picks the codec; the Seldon protocol stays the default."""
    assert isinstance(make_codec(config(protocol="seldon")), SeldonCodec)
    assert isinstance(make_codec(config()), V2Codec)


@pytest.mark.parametrize(("kw", "line", "tensor"), [
    ({}, "[1, 2, 3]", {"shape": [3], "datatype": "INT64", "data": [1, 2, 3]}),
    ({}, "[[1, 2.5], [3, 4]]", {"shape": [2, 2], "datatype": "FP64", "data": [1, 2.5, 3, 4]}),
    ({}, '["a", "b"]', {"shape": [2], "datatype": "BYTES", "data": ["a", "b"]}),
    ({}, "[true, false]", {"shape": [2], "datatype": "BOOL", "data": [True, False]}),
    ({}, "7", {"shape": [1], "datatype": "INT64", "data": [7]}),
    ({"payload_type": "FP32"}, "[[1, 2]]", {"shape": [1, 2], "datatype": "FP32", "data": [1, 2]}),
    ({"payload_type": "INT32", "input_name": "x"}, "[5]", {"name": "x", "shape": [1], "datatype": "INT32",
                                                           "data": [5]}),
    ({"data_type": "str"}, "plain text", {"shape": [1], "datatype": "BYTES", "data": ["plain text"]}),
    ({"data_type": "str"}, '"quoted \\"text\\""', {"shape": [1], "datatype": "BYTES", "data": ['quoted "text"']}),
])
def test_plain_lines_become_one_input_tensor(kw: dict[str, Any], line: str, tensor: dict[str, Any]) -> None:
    """Arrays, scalars and text become one tensor with an inferred (or given) datatype, flat data."""
    body, members, rejected = build(codec(**kw), line)
    assert body == {"inputs": [{"name": "input-0", **tensor}], "id": instance_id("B", 0), "parameters": tags(0)}
    assert len(members) == 1 and not rejected


@pytest.mark.parametrize(("kw", "line", "message"), [
    ({}, "", "blank line"),
    ({}, "[1, 2", "not valid JSON"),
    ({}, "[[1, 2], [3]]", "ragged"),
    ({}, "[]", "empty array"),
    ({}, '[1, "a"]', "mixed value types"),
    ({}, '[{"a": 1}]', "unsupported value"),
    ({}, '{"inputs": []}', "--data-type raw"),
    ({}, "null", "null"),
    ({"payload_type": "INT32"}, "[1.5]", "not a valid INT32"),
    ({"payload_type": "UINT8"}, "[-1]", "not a valid UINT8"),
    ({"payload_type": "BOOL"}, "[1]", "not a valid BOOL"),
    ({"data_type": "raw"}, "[1]", "expected a V2 InferenceRequest"),
    ({"data_type": "raw"}, '{"inputs": []}', "non-empty 'inputs'"),
    ({"data_type": "raw"}, '{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', "no 'data'"),
    ({"data_type": "raw"}, '{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}',
     "non-negative"),
    ({"data_type": "raw", "batch_size": 2}, '{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", '
     '"data": [1]}, {"name": "b", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}', "first dimension"),
])
def test_bad_lines_are_input_errors(kw: dict[str, Any], line: str, message: str) -> None:
    """Lines that cannot become a V2 request fail alone, with a reason a person can act on."""
    with pytest.raises(InputError, match=message):
        codec(**kw).parse(item(0, line))


def test_raw_request_keeps_its_own_fields_and_gets_the_tags() -> None:
    """A whole InferenceRequest is sent as given, its parameters merged with the batch tags and id replaced."""
    line = json.dumps({"id": "mine", "parameters": {"content_type": "np"}, "outputs": [{"name": "y"}],
                       "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [[1, 2]]}]})
    body, _, _ = build(codec(data_type="raw"), line)
    assert body["id"] == instance_id("B", 0)
    assert body["parameters"] == {"content_type": "np", **tags(0)}
    assert body["outputs"] == [{"name": "y"}]
    assert body["inputs"][0]["data"] == [[1, 2]]


def test_mini_batch_concatenates_rows_and_promotes_ints_to_floats() -> None:
    """Lines join along the first axis (a flat line is one row); INT64 and FP64 lines share FP64."""
    body, members, rejected = build(codec(batch_size=3), "[1, 2]", "[[3, 4], [5, 6]]", "[7.5, 8]")
    assert [m.rows for m in members] == [1, 2, 1] and not rejected
    assert body["inputs"] == [{"name": "input-0", "shape": [4, 2], "datatype": "FP64",
                               "data": [1, 2, 3, 4, 5, 6, 7.5, 8]}]
    assert body["parameters"] == tags(0) and body["id"] == instance_id("B", 0)


def test_mini_batch_rejects_lines_of_another_shape_or_type() -> None:
    """A line whose row shape or datatype differs from the first line's gets an error line, not the batch."""
    c = codec(batch_size=4)
    body, members, rejected = build(c, "[1, 2]", "[1, 2, 3]", '["a", "b"]', "[3, 4]")
    assert [m.item.index for m in members] == [0, 3]
    assert [(p.item.index, reason) for p, reason in rejected] == [
        (1, "inputs input-0 NUMBER[n, 3] do not fit the mini-batch's input-0 NUMBER[n, 2]"),
        (2, "inputs input-0 BYTES[n, 2] do not fit the mini-batch's input-0 NUMBER[n, 2]"),
    ]
    assert body["inputs"][0]["shape"] == [2, 2]


def test_mini_batch_of_raw_requests_merges_every_input() -> None:
    """Raw requests with the same inputs are merged input by input, nested data flattened."""
    def req(x: list[Any], s: list[str]) -> str:
        return json.dumps({"inputs": [{"name": "x", "shape": [len(x), 2], "datatype": "FP32", "data": x},
                                      {"name": "s", "shape": [len(s)], "datatype": "BYTES", "data": s}]})
    body, members, _ = build(codec(data_type="raw", batch_size=2), req([[1, 2]], ["a"]), req([[3, 4], [5, 6]],
                                                                                              ["b", "c"]))
    assert body["inputs"] == [{"name": "x", "shape": [3, 2], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]},
                              {"name": "s", "shape": [3], "datatype": "BYTES", "data": ["a", "b", "c"]}]


def test_strings_mini_batch() -> None:
    """Text lines are one BYTES row each and batch like arrays."""
    body, members, _ = build(codec(data_type="str", batch_size=2), "one", "two")
    assert body["inputs"] == [{"name": "input-0", "shape": [2], "datatype": "BYTES", "data": ["one", "two"]}]


def response(*outputs: dict[str, Any]) -> dict[str, Any]:
    return {"model_name": "m", "id": "x", "parameters": {"content_type": "np"}, "outputs": list(outputs)}


def test_results_split_each_output_by_each_lines_rows() -> None:
    """Every output is cut back per line by its own row count; each line gets its own id and tags."""
    c = codec(batch_size=2)
    _, members, _ = build(c, "[1, 2]", "[[3, 4], [5, 6]]")
    lines = c.results(response({"name": "y", "shape": [3, 2], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]},
                               {"name": "s", "shape": [3], "datatype": "FP64", "data": [[3], [7], [11]]}),
                      members)
    assert lines[0]["outputs"] == [{"name": "y", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]},
                                   {"name": "s", "shape": [1], "datatype": "FP64", "data": [3]}]
    assert lines[1]["outputs"][0] == {"name": "y", "shape": [2, 2], "datatype": "FP64", "data": [3, 4, 5, 6]}
    assert lines[1]["outputs"][1]["data"] == [7, 11]
    for i, line in enumerate(lines):
        assert line["id"] == instance_id("B", i)
        assert line["parameters"] == {"content_type": "np", **tags(i)}
        assert line["meta"] == {"tags": tags(i)}
        assert line["model_name"] == "m"


@pytest.mark.parametrize(("outputs", "message"), [
    ([], "no outputs"),
    ([{"name": "y", "shape": [2], "data": [1, 2]}], "2 rows for 3 input rows"),
    ([{"name": "y", "shape": [3, 2], "data": [1, 2, 3]}], "3 elements do not fill"),
    ([{"name": "y", "data": [1, 2, 3]}], "no usable shape"),
])
def test_results_that_do_not_add_up_are_mismatches(outputs: list[Any], message: str) -> None:
    """A response whose outputs do not have one row per input row cannot be split: ResponseMismatch."""
    c = codec(batch_size=2)
    _, members, _ = build(c, "[1]", "[[2], [3]]")
    with pytest.raises(ResponseMismatch, match=message):
        c.results(response(*outputs), members)


def test_single_line_response_is_passed_through_tagged() -> None:
    """One line per request: the response is kept as is, plus id, parameters and meta.tags."""
    c = codec()
    _, members, _ = build(c, "[1, 2]")
    (line,) = c.results({"outputs": [{"name": "y", "shape": [5], "data": [0] * 5}]}, members)
    assert line == {"outputs": [{"name": "y", "shape": [5], "data": [0] * 5}], "id": instance_id("B", 0),
                    "parameters": tags(0), "meta": {"tags": tags(0)}}


def test_error_line_shape_is_read_by_resume() -> None:
    """Error lines keep the Seldon error shape, V2 id/model and tags in parameters and meta.tags."""
    c = codec(model_name="m", model_version="2")
    line = c.error(item(4, "x"), "HTTP 400: bad", info="http_400", code=400)
    assert line == {"id": instance_id("B", 4), "model_name": "m", "model_version": "2",
                    "status": {"code": 400, "info": "http_400", "reason": "HTTP 400: bad", "status": "FAILURE"},
                    "parameters": tags(4), "meta": {"tags": tags(4)}}
    info = line_info(json.dumps(line).encode())
    assert (info.index, info.batch_id, info.failed) == (4, "B", True)
    _, members, _ = build(c, "[1]")
    ok = line_info(json.dumps(c.results({"outputs": []}, members)[0]).encode())
    assert (ok.index, ok.failed) == (0, False)


# -- gRPC conversion ------------------------------------------------------------------------


def test_grpc_request_uses_typed_contents_and_parameters() -> None:
    """JSON V2 -> ModelInferRequest: model, id, typed parameters, each datatype in its contents field."""
    body = {"id": "i", "parameters": {"batch_index": 3, "batch_id": "B", "flag": True, "f": 0.5, "o": [1]},
            "inputs": [{"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 2]},
                       {"name": "b", "shape": [1, 2], "datatype": "FP32", "data": [[0.5, 1]]},
                       {"name": "c", "shape": [1], "datatype": "BYTES", "data": ["hé"]},
                       {"name": "d", "shape": [1], "datatype": "BOOL", "data": [True]}],
            "outputs": [{"name": "y"}]}
    req = request_from_dict(body, "m", "2")
    assert (req.model_name, req.model_version, req.id) == ("m", "2", "i")
    assert req.parameters["batch_index"].int64_param == 3
    assert req.parameters["batch_id"].string_param == "B"
    assert req.parameters["flag"].bool_param is True
    assert req.parameters["f"].double_param == 0.5
    assert req.parameters["o"].string_param == "[1]"
    assert list(req.inputs[0].contents.int64_contents) == [1, 2]
    assert list(req.inputs[1].contents.fp32_contents) == [0.5, 1.0]
    assert list(req.inputs[1].shape) == [1, 2]
    assert list(req.inputs[2].contents.bytes_contents) == ["hé".encode()]
    assert list(req.inputs[3].contents.bool_contents) == [True]
    assert [o.name for o in req.outputs] == ["y"]
    assert not req.raw_input_contents


def test_grpc_fp16_goes_as_raw_contents_for_every_input() -> None:
    """FP16 has no typed field: the whole request uses little-endian raw_input_contents."""
    req = request_from_dict({"inputs": [{"name": "h", "shape": [2], "datatype": "FP16", "data": [1.5, 2]},
                                        {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["ab"]}]}, "m")
    assert req.raw_input_contents[0] == struct.pack("<2e", 1.5, 2)
    assert req.raw_input_contents[1] == b"\x02\x00\x00\x00ab"
    assert not req.inputs[0].HasField("contents")


@pytest.mark.parametrize("body", [
    {"inputs": [{"name": "a", "shape": [1], "datatype": "WEIRD", "data": [1]}]},
    {"inputs": [{"name": "a", "shape": [1], "datatype": "INT32", "data": [2**40]}]},
    {"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "data": [1]}]},
    {"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": ["x"]}]},
    {"parameters": [1], "inputs": []},
])
def test_grpc_request_errors_are_value_errors(body: dict[str, Any]) -> None:
    """A request the proto cannot hold is a ValueError (an error line), never a crash."""
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with protobuf's wording
        request_from_dict(body, "m")


def test_grpc_response_to_json_typed_and_raw() -> None:
    """ModelInferResponse -> REST JSON shape, from typed contents or raw (Triton) contents."""
    resp = grpc_service_pb2.ModelInferResponse(model_name="m", model_version="1", id="i")
    resp.parameters["batch_index"].int64_param = 2
    out = resp.outputs.add(name="y", datatype="FP64", shape=[2])
    out.contents.fp64_contents.extend([1.5, 2.5])
    s = resp.outputs.add(name="s", datatype="BYTES", shape=[2])
    s.contents.bytes_contents.extend([b"ok", b"\xff"])
    assert response_to_dict(resp) == {
        "model_name": "m", "model_version": "1", "id": "i", "parameters": {"batch_index": 2},
        "outputs": [{"name": "y", "shape": [2], "datatype": "FP64", "data": [1.5, 2.5]},
                    {"name": "s", "shape": [2], "datatype": "BYTES", "data": ["ok", "/w=="]}]}
    raw = grpc_service_pb2.ModelInferResponse(model_name="m")
    raw.outputs.add(name="y", datatype="INT32", shape=[3])
    raw.outputs.add(name="s", datatype="BYTES", shape=[1])
    raw.raw_output_contents.extend([struct.pack("<3i", 1, -2, 3), b"\x01\x00\x00\x00z"])
    assert [o["data"] for o in response_to_dict(raw)["outputs"]] == [[1, -2, 3], ["z"]]
    bad = grpc_service_pb2.ModelInferResponse(model_name="m")
    bad.outputs.add(name="y", datatype="COMPLEX", shape=[1])
    bad.raw_output_contents.append(b"\x00")
    with pytest.raises(RequestFailed, match="cannot convert"):
        response_to_dict(bad)


# -- options, URLs, headers -----------------------------------------------------------------


def parse(tmp_path: Path, *args: str, environ: dict[str, str] | None = None) -> BatchConfig:
    path = tmp_path / "in.txt"
    path.write_text("[1]\n")
    options = ProcessorOptions(environ=environ or {})
    options.parseOptions(["-d", "dep", "-i", str(path), *args])
    return options.config()


def test_options_v2(tmp_path: Path) -> None:
    """--protocol v2 with model, version, input name, a V2 datatype and repeated --header (env too)."""
    c = parse(tmp_path, "--protocol", "v2", "--model-name", "m", "--model-version", "3", "--input-name", "x",
              "-p", "FP32", "--header", "seldon-model: m", "--header", "Host:m.ns.example.com",
              environ={"SELDON_BATCH_HEADER": "x-a: 1\nx-b: 2"})
    assert (c.protocol, c.model_name, c.model_version, c.input_name, c.payload_type) == ("v2", "m", "3", "x",
                                                                                         "FP32")
    assert c.headers == (("x-a", "1"), ("x-b", "2"), ("seldon-model", "m"), ("Host", "m.ns.example.com"))
    default = parse(tmp_path)
    assert (default.protocol, default.headers, default.input_name) == ("seldon", (), "input-0")


@pytest.mark.parametrize(("args", "message"), [
    (["-p", "FP32"], "needs --protocol v2"),
    (["--protocol", "v2", "-m", "feedback"], "no feedback"),
    (["--protocol", "v2", "-a", "json"], "data, str or raw"),
    (["--header", "no colon"], "NAME:VALUE"),
    (["--protocol", "v3"], "v3"),
])
def test_options_v2_refused(tmp_path: Path, args: list[str], message: str) -> None:
    """Combinations the V2 protocol cannot serve are usage errors, before any request."""
    with pytest.raises(usage.UsageError, match=message):
        parse(tmp_path, *args)


@pytest.mark.parametrize(("kw", "url"), [
    ({"gateway_type": "seldon", "host": "h:1"}, "http://h:1/v2/models/d/infer"),
    ({"gateway_type": "seldon", "host": "h:1", "model_name": "m", "model_version": "2"},
     "http://h:1/v2/models/m/versions/2/infer"),
    ({"host": "gw", "namespace": "ns", "use_ssl": True}, "https://gw/seldon/ns/d/v2/models/d/infer"),
    ({"gateway_type": "seldon", "host": "h", "model_name": "a/b"}, "http://h/v2/models/a%2Fb/infer"),
])
def test_v2_endpoint_url(kw: dict[str, Any], url: str) -> None:
    """POST /v2/models/{name}[/versions/{v}]/infer, behind a Seldon Core 1 gateway prefix when not direct."""
    assert endpoint_url(config(**kw), "predictions") == url


def test_headers_reach_both_rest_clients() -> None:
    """--header goes into the treq transport's headers and the fast client's request head (Host replaced)."""
    c = config(gateway_type="seldon", host="127.0.0.1:9", headers=(("seldon-model", "m"), ("Host", "k.example")))
    assert RestTransport(c, reactor=Clock(), target=target_of(c))._headers["seldon-model"] == ["m"]
    head = request_head("POST", endpoint_url(c, "predictions"), None, c.headers)[0].decode()
    assert "\r\nHost: k.example\r\n" in head and "\r\nseldon-model: m\r\n" in head and "127.0.0.1:9" not in head
    with pytest.raises(ValueError, match="line breaks"):
        request_head("POST", "http://h/x", None, (("a", "b\r\nc: d"),))

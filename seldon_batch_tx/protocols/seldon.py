"""The Seldon protocol's message formats: input line -> request body -> output lines.

Its :class:`~..core.target.Target` is ``[/seldon/NS/NAME]/api/v1.0/predictions`` (or ``feedback``) over
REST, ``seldon.protos.Seldon/Predict`` (or ``SendFeedback``) over gRPC, converted by
:mod:`.seldon_pb`. Nothing here touches a socket or a file. A line becomes a :class:`Parsed` value, one or more
of those become a request body, and the model's response is split back into exactly one output
line per input line, each carrying its own batch tags in ``meta.tags``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from ..config import BatchConfig
from ..core.items import Item
from ..core.strict_json import JSONDict
from ..core.target import GrpcRoute, Target
from .base import (
    BadResponse,
    Built,
    InputError,
    Parsed,
    ResponseMismatch,
    answer_object,
    flatten,
    gateway_prefix,
    joined,
    json_type,
    load_json_line,
    parse_str,
    row_size,
    slices,
    snippet,
    tags_for,
)

DATA_KEYS = ("data", "strData", "jsonData", "binData", "customData")
FEEDBACK_KEYS = ("request", "response", "reward", "truth")
ARRAY_KINDS = ("ndarray", "tensor", "tftensor")
TF_ITEM_SIZES = {"DT_FLOAT": 4, "DT_DOUBLE": 8, "DT_INT32": 4, "DT_INT64": 8, "DT_INT16": 2, "DT_INT8": 1,
                 "DT_UINT8": 1, "DT_BOOL": 1, "DT_HALF": 2}
TF_VALUE_FIELDS = ("doubleVal", "floatVal", "intVal", "int64Val", "boolVal", "stringVal", "halfVal")


def _shape_of(value: Any, where: str) -> tuple[int, ...]:
    """Shape of a rectangular nested list of numbers; InputError if ragged or not numeric."""
    if not isinstance(value, list):
        raise InputError(f"{where}: expected a JSON array of numbers, got {type(value).__name__}")
    if not value:
        raise InputError(f"{where}: empty array")
    first = value[0]
    if isinstance(first, list):
        inner = _shape_of(first, where)
        for row in value[1:]:
            if _shape_of(row, where) != inner:
                raise InputError(f"{where}: ragged array, rows have different shapes")
        return (len(value), *inner)
    for x in value:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise InputError(f"{where}: expected numbers, found {json.dumps(x)[:40]}")
    return (len(value),)


_NUMBERS = frozenset({int, float})
#: Integers a float64 holds exactly: a larger one stacked with floats would reach the model rounded.
_EXACT = 2**53


def leaf_kind(leaves: list[Any]) -> str:
    """``number``, ``text`` or ``bool`` for a row of one of these; ``integer`` for integers one of which is
    past 2**53; else ``""`` (lists, objects, nulls, a mix, such an integer with floats). Lines of different
    kinds never share a request: the model would get strings, objects or floats rounding an integer."""
    kinds = set(map(type, leaves))
    if kinds <= _NUMBERS:
        if int in kinds and (max(leaves) > _EXACT or min(leaves) < -_EXACT) and any(
                type(x) is int and not -_EXACT <= x <= _EXACT for x in leaves):
            return "" if float in kinds else "integer"
        return "number"
    if len(kinds) == 1:
        return "text" if str in kinds else "bool" if bool in kinds else ""
    return ""


def _nd_shape(value: Any) -> tuple[tuple[int, ...], str] | None:
    """The shape of an ndarray line along its nested lists and the kind of its leaves; None when it
    is ragged or its leaves are of no one kind: such a line goes alone."""
    if not isinstance(value, list):
        return None
    if not value or not isinstance(value[0], list):
        kind = leaf_kind(value)
        return ((len(value),), kind) if kind else None
    inner = _nd_shape(value[0])
    if inner is None:
        return None
    for row in value[1:]:
        if _nd_shape(row) != inner:
            return None
    return (len(value), *inner[0]), inner[1]


def _is_shape(shape: Any) -> bool:
    return isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                           for d in shape)


def _tf_dims(tensor_shape: Any) -> list[int]:
    """A TensorProto's dimension sizes (JSON int64 values arrive as strings); BadResponse if unreadable."""
    dims = tensor_shape.get("dim", []) if isinstance(tensor_shape, dict) else None
    if not isinstance(dims, list):
        raise BadResponse(f"the answer's tftensor.tensorShape {snippet(tensor_shape)} has no list of dims")
    out = []
    for d in dims:
        size = d.get("size", 0) if isinstance(d, dict) else None
        if isinstance(size, str) and size.isdigit() and len(size) < 19:
            size = int(size)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadResponse(f"the answer's tftensor dim {snippet(d)} has no non-negative size")
        out.append(size)
    return out


class SeldonCodec:
    """Builds Seldon protocol v1 requests for one batch configuration and splits responses."""

    def __init__(self, config: BatchConfig) -> None:
        self.batch_id = config.batch_id
        self.join_input = config.join_input
        self.data_type = config.data_type
        self.payload_type = config.payload_type
        self.method = config.method
        #: Only plain arrays can be concatenated into one request; others go one per request.
        self.batch_size = config.batch_size if self.batchable(config) else 1
        self.max_rows = config.max_batch_rows
        path = "feedback" if config.method == "feedback" else "predictions"
        self.target = Target(f"{gateway_prefix(config)}/api/v1.0/{path}", self._grpc_route)

    @staticmethod
    def batchable(config: BatchConfig) -> bool:
        return config.data_type == "data" and config.method == "predict"

    def _grpc_route(self) -> GrpcRoute:
        """``seldon.protos.Seldon`` (or ``Model``) ``Predict``/``SendFeedback``, bodies as SeldonMessage/Feedback."""
        from ..protos import prediction_pb2_grpc
        from .seldon_pb import answer_to_dict, feedback_from_dict, message_from_dict

        feedback = self.method == "feedback"

        def method(channel: Any, service: str) -> Any:
            stub: Any = (prediction_pb2_grpc.SeldonStub(channel) if service == "Seldon"
                         else prediction_pb2_grpc.ModelStub(channel))
            return stub.SendFeedback if feedback else stub.Predict

        return GrpcRoute(method, feedback_from_dict if feedback else message_from_dict, answer_to_dict)

    # -- input line -> Parsed -------------------------------------------------------------

    def parse(self, item: Item) -> Parsed:
        """Validate one line for the configured data and payload type."""
        line = item.line.strip()
        if not line:
            raise InputError("blank line")
        if self.data_type == "str":
            return Parsed(item, parse_str(line))
        value = load_json_line(line)
        if self.method == "feedback":
            return self._parse_feedback(item, value)
        if self.data_type == "json":
            return Parsed(item, value)
        if self.data_type == "raw":
            return self._parse_raw(item, value)
        if not isinstance(value, list):
            raise InputError(
                f"{self.payload_type} payload: expected a JSON array, got {type(value).__name__}"
            )
        if not value:
            raise InputError(f"{self.payload_type} payload: empty array")
        if self.payload_type == "ndarray":
            if self.batch_size == 1:
                return Parsed(item, value, rows=len(value))
            # rows of one shape and leaves of one kind only share a request (a ragged ndarray is
            # refused by the model, a mixed one turns numbers into text): shape () goes alone
            first = value[0]
            if not isinstance(first, list):
                kind = leaf_kind(value)  # a flat line is one row
                return Parsed(item, [value], rows=1, shape=(1, len(value)) if kind else (), kind=kind)
            if len(value) == 1 and (not first or not isinstance(first[0], list)):
                kind = leaf_kind(first)  # the usual line: one row
                return Parsed(item, value, rows=1, shape=(1, len(first)) if kind else (), kind=kind)
            found = _nd_shape(value)
            return Parsed(item, value, rows=len(value), shape=found[0] if found else (),
                          kind=found[1] if found else "")
        shape = _shape_of(value, self.payload_type + " payload")
        if len(shape) == 1 and self.batch_size > 1:
            shape = (1, *shape)
            value = [value]
        return Parsed(item, value, rows=shape[0], shape=shape)

    @staticmethod
    def _own_tags(message: JSONDict) -> JSONDict:
        meta = message.get("meta")
        tags = meta.get("tags") if isinstance(meta, dict) else None
        return dict(tags) if isinstance(tags, dict) else {}

    def _parse_raw(self, item: Item, value: Any) -> Parsed:
        if not isinstance(value, dict):
            raise InputError(f"raw payload: expected a SeldonMessage object, got {type(value).__name__}")
        if not any(k in value for k in DATA_KEYS):
            raise InputError(f"raw payload: a SeldonMessage needs one of {', '.join(DATA_KEYS)}")
        return Parsed(item, value, own_tags=self._own_tags(value))

    def _parse_feedback(self, item: Item, value: Any) -> Parsed:
        if not isinstance(value, dict) or not any(k in value for k in FEEDBACK_KEYS):
            raise InputError(
                "feedback: expected a Feedback object with request, response, reward or truth"
            )
        request = value.get("request")
        return Parsed(item, value, own_tags=self._own_tags(request) if isinstance(request, dict) else {})

    # -- Parsed values -> request body ----------------------------------------------------

    def build(self, parsed: list[Parsed]) -> Built:
        """One request body for these lines, the lines it holds, and lines that cannot join it."""
        first = parsed[0]
        tags = tags_for(self.batch_id, first.item)
        if self.method == "feedback":
            body = dict(first.value)
            request = dict(body.get("request") or {})
            request["meta"] = self._with_tags(request.get("meta"), tags)
            body["request"] = request
            return body, [first], []
        if self.data_type == "raw":
            body = dict(first.value)
            body["meta"] = self._with_tags(body.get("meta"), tags)
            return body, [first], []
        if self.data_type == "str":
            return {"strData": first.value, "meta": {"tags": tags}}, [first], []
        if self.data_type == "json":
            return {"jsonData": first.value, "meta": {"tags": tags}}, [first], []

        members, rest = [first], []
        same, rows, limit, kind = first.shape, first.rows, self.max_rows, first.kind
        anchor = same[1:] if same else None
        for p in parsed[1:]:
            shape = p.shape
            if not shape or shape != same and shape[1:] != anchor:  # the same shape (usual): no slice
                rest.append((p, f"shape {list(shape)} does not fit the mini-batch's row shape {list(anchor or ())}"))
            elif p.kind != kind:
                rest.append((p, f"its {p.kind} values do not fit the mini-batch's {kind} values"))
            elif limit is not None and rows + p.rows > limit:
                rest.append((p, f"{p.rows} more rows would pass the limit of {limit} rows per request"))
            else:
                members.append(p)
                rows += p.rows
        if len(members) == 1:
            array = first.value
            shape = first.shape
        else:
            array = [row for p in members for row in p.value]
            shape = (rows, *first.shape[1:])
        return {"data": self._data(array, shape), "meta": {"tags": tags}}, members, rest

    @staticmethod
    def _with_tags(meta: Any, tags: JSONDict) -> JSONDict:
        meta = dict(meta) if isinstance(meta, dict) else {}
        own = meta.get("tags")
        meta["tags"] = {**own, **tags} if isinstance(own, dict) else tags
        return meta

    def _data(self, array: list[Any], shape: tuple[int, ...]) -> JSONDict:
        if self.payload_type == "ndarray":
            return {"ndarray": array}
        values = flatten(array)
        if self.payload_type == "tensor":
            return {"tensor": {"shape": list(shape), "values": values}}
        return {
            "tftensor": {
                "dtype": "DT_DOUBLE",
                "tensorShape": {"dim": [{"size": str(d)} for d in shape]},
                "doubleVal": values,
            }
        }

    # -- response -> output lines ---------------------------------------------------------

    def results(self, response: JSONDict, members: list[Parsed]) -> list[JSONDict]:
        """One output line per member, each with its own tags; ResponseMismatch if rows don't add up."""
        return joined(self._results(response, members), [p.item for p in members], self.join_input)

    def _results(self, response: JSONDict, members: list[Parsed]) -> list[JSONDict]:
        response = answer_object(response, "a SeldonMessage")
        if len(members) == 1:
            return [self._tagged(response, members[0])]
        data = response.get("data")
        if not isinstance(data, dict):
            raise ResponseMismatch("mini-batch response has no data to split into rows")
        slices = self._split(data, [p.rows for p in members])
        # as _tagged per member, with the response's meta looked up once for the whole mini-batch
        meta = response.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        tags = meta.get("tags")
        batch_id = self.batch_id
        return [{**response, "data": part, "meta": {**meta, "tags": {
                    **(tags if isinstance(tags, dict) else p.own_tags),
                    "batch_id": batch_id, "batch_instance_id": p.item.instance_id, "batch_index": p.item.index}}}
                for part, p in zip(slices, members, strict=True)]

    def _split(self, data: JSONDict, rows: list[int]) -> list[JSONDict]:
        want = sum(rows)
        rest = {k: v for k, v in data.items() if k not in ARRAY_KINDS}
        if isinstance(data.get("ndarray"), list):
            array = data["ndarray"]
            self._check_rows(len(array), want)
            return [{**rest, "ndarray": part} for part in slices(array, rows, 1)]
        if isinstance(data.get("tensor"), dict):
            tensor = data["tensor"]
            shape, values = tensor.get("shape") or [], tensor.get("values") or []
            if not _is_shape(shape):
                raise BadResponse(f"the answer's tensor.shape {snippet(shape)} is not a list of non-negative integers")
            if not isinstance(values, list):
                raise BadResponse(f"the answer's tensor.values is a JSON {json_type(values)}, not an array")
            self._check_rows(shape[0] if shape else 0, want)
            self._check_size(len(values), shape, "tensor")
            return [{**rest, "tensor": {"shape": [n, *shape[1:]], "values": part}}
                    for n, part in zip(rows, slices(values, rows, row_size(shape)), strict=True)]
        if isinstance(data.get("tftensor"), dict):
            tf = data["tftensor"]
            dims = _tf_dims(tf.get("tensorShape"))
            self._check_rows(dims[0] if dims else 0, want)
            size = row_size(dims)
            field = next((f for f in TF_VALUE_FIELDS if f in tf), None)
            flat: Any
            packed = "tensorContent" in tf  # TensorFlow packs arrays as raw little-endian bytes
            if packed:
                field = "tensorContent"
                content = tf["tensorContent"]
                if not isinstance(content, str):
                    raise BadResponse(f"the answer's tftensor.tensorContent is a JSON {json_type(content)}, "
                                      "not a base64 string")
                try:
                    flat = base64.b64decode(content, validate=True)
                except ValueError:
                    raise BadResponse("the answer's tftensor.tensorContent is not valid base64") from None
                dtype = tf.get("dtype", "DT_DOUBLE")
                item_size = TF_ITEM_SIZES.get(dtype, 8) if isinstance(dtype, str) else 8
                size *= item_size
                self._check_size(len(flat), dims, "tftensor", unit=item_size)
            else:
                flat = (tf.get(field) or []) if field else []
                if not isinstance(flat, list):
                    raise BadResponse(f"the answer's tftensor.{field} is a JSON {json_type(flat)}, not an array")
                self._check_size(len(flat), dims, "tftensor")
            base = {k: v for k, v in tf.items() if k not in TF_VALUE_FIELDS and k != "tensorContent"}
            out = []
            for n, part in zip(rows, slices(flat, rows, size), strict=True):
                piece = {**base, "tensorShape": {"dim": [{"size": str(d)} for d in [n, *dims[1:]]]}}
                if field:
                    piece[field] = base64.b64encode(part).decode("ascii") if packed else part
                out.append({**rest, "tftensor": piece})
            return out
        raise ResponseMismatch("mini-batch response has no ndarray, tensor or tftensor to split")

    @staticmethod
    def _check_rows(got: int, want: int) -> None:
        if got != want:
            raise ResponseMismatch(f"model returned {got} rows for {want} input rows")

    @staticmethod
    def _check_size(got: int, shape: Sequence[int], kind: str, unit: int = 1) -> None:
        """Rows are cut from the flat values by the shape: they must fill it exactly (``unit``:
        bytes per value of packed content)."""
        want = row_size(shape) * (shape[0] if shape else 0) * unit
        if got != want:
            what = f"{got} bytes of content" if unit > 1 else f"{got} values"
            raise ResponseMismatch(f"the answer's {kind} has {what} for its shape {list(shape)}")

    def _tagged(self, response: JSONDict, parsed: Parsed) -> JSONDict:
        out = dict(response)
        meta = out.get("meta")
        meta = dict(meta) if isinstance(meta, dict) else {}
        tags = meta.get("tags")
        meta["tags"] = {**(tags if isinstance(tags, dict) else parsed.own_tags),
                        **tags_for(self.batch_id, parsed.item)}
        out["meta"] = meta
        return out

    # -- failures -------------------------------------------------------------------------

    def error(
        self, item: Item, reason: str, *, info: str, code: int | None = None,
        own_tags: JSONDict | None = None,
    ) -> JSONDict:
        """An error line: the line's tags nested in ``meta.tags`` and a readable ``status``."""
        line = {
            "status": {"code": code, "info": info, "reason": reason, "status": "FAILURE"},
            "meta": {"tags": {**(own_tags or {}), **tags_for(self.batch_id, item)}},
        }
        return joined([line], [item], self.join_input)[0]

"""The Seldon protocol's message formats: input line -> request body -> output lines.

Nothing here touches a socket or a file. A line becomes a :class:`Parsed` value, one or more
of those become a request body, and the model's response is split back into exactly one output
line per input line, each carrying its own batch tags in ``meta.tags``.
"""

from __future__ import annotations

import base64
import json
import json.scanner
import math
import re
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import attrs

from ..config import BatchConfig
from ..pipeline.reader import Item

JSONDict = dict[str, Any]

DATA_KEYS = ("data", "strData", "jsonData", "binData", "customData")
FEEDBACK_KEYS = ("request", "response", "reward", "truth")
ARRAY_KINDS = ("ndarray", "tensor", "tftensor")
TF_ITEM_SIZES = {"DT_FLOAT": 4, "DT_DOUBLE": 8, "DT_INT32": 4, "DT_INT64": 8, "DT_INT16": 2, "DT_INT8": 1,
                 "DT_UINT8": 1, "DT_BOOL": 1, "DT_HALF": 2}
TF_VALUE_FIELDS = ("doubleVal", "floatVal", "intVal", "int64Val", "boolVal", "stringVal", "halfVal")


def _no_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are Python's extensions, not JSON: no output line
    could carry them back as strict JSON, so a line holding one is refused."""
    raise ValueError(f"{name} is not a JSON number")


_decoder = json.JSONDecoder(parse_constant=_no_constant)
_scan = json.scanner.make_scanner(_decoder)  # type: ignore[arg-type]  # typeshed: takes the decoder
#: Number literals that may be beyond the float range (an exponent of 3+ digits, 309+ digits in a row).
_MAYBE_HUGE = re.compile(rb"[eE]\+?0*[1-9][0-9]{2}|[0-9]{309}")


def _loads(line: bytes) -> Any:
    """``json.loads`` of a UTF-8 line, about 1.5 us cheaper per line: no encoding detection
    (a leading UTF-8 BOM is still skipped; lone surrogates pass, as in ``json.loads``), and the
    scanner called directly; anything but one bare value goes through ``decode`` for its
    whitespace rules and error messages."""
    text = line.decode("utf-8", "surrogatepass")
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        value, end = _scan(text, 0)
        if end == len(text):
            return value
    except StopIteration:
        pass
    return _decoder.decode(text)


class InputError(ValueError):
    """A line that cannot become a request; the message says what is wrong with it."""


class ResponseMismatch(ValueError):
    """A mini-batch response whose rows cannot be matched one-to-one with its input lines."""


class BadResponse(ValueError):
    """An answer that is not what the protocol promises (not an object, values of the wrong type)."""


#: Deepest JSON nesting accepted in an input line. Deeper values could not be encoded again
#: (request bodies, output lines) within Python's recursion limit, nor read by most servers
#: (protobuf refuses more than 100 levels), so they are input errors from the start.
MAX_JSON_DEPTH = 256
TOO_DEEP = f"JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)"

_STRINGS = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def json_depth(line: bytes) -> int:
    """Deepest nesting of arrays and objects in one valid JSON text, in C-speed passes (strings
    dropped, brackets kept, running sum), never recursing however deep the text is."""
    brackets = _STRINGS.sub(b"", line).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def load_json_line(line: bytes) -> Any:
    """The JSON value of one input line, or InputError saying why not: not JSON, not UTF-8,
    nested deeper than :data:`MAX_JSON_DEPTH` (a line nested 100,000 deep is one of those), or
    holding a number strict JSON cannot carry (``NaN``, ``Infinity``, ``1e999``)."""
    try:
        value = _loads(line)
    except RecursionError:
        raise InputError(f"line is not valid input: {TOO_DEEP}") from None
    except ValueError as e:
        raise InputError(f"line is not valid JSON: {e}") from None
    # a line with few brackets cannot be deep: the exact depth is computed only past that count
    if line.count(b"[") + line.count(b"{") > MAX_JSON_DEPTH and json_depth(line) > MAX_JSON_DEPTH:
        raise InputError(f"line is not valid input: {TOO_DEEP}")
    # 1e999 decodes to inf, which no strict JSON line can carry; only a long line or one with an
    # exponent can hold such a literal, so the value is walked only for those
    if (len(line) > 308 or b"e" in line or b"E" in line) and _MAYBE_HUGE.search(line) and _non_finite(value):
        raise InputError("line is not valid input: a number beyond the range of a double (such as 1e999)")
    return value


def _non_finite(value: Any) -> bool:
    """Whether a decoded value holds an infinite float; iterative, so any depth is fine."""
    stack = [value]
    while stack:  # bounded: every value is visited once
        x = stack.pop()
        if type(x) is float:
            if x in (math.inf, -math.inf):
                return True
        elif type(x) is list:
            stack.extend(x)
        elif type(x) is dict:
            stack.extend(x.values())
    return False


@attrs.frozen(slots=True)
class Parsed:
    """A line that passed validation: its value, how many rows it adds, and its own tags."""

    item: Item
    value: Any
    rows: int = 1
    shape: tuple[int, ...] = ()
    own_tags: JSONDict = attrs.field(factory=dict)


def tags_for(batch_id: str, item: Item) -> JSONDict:
    """The identifiers every request and output line carries (``batch_index`` an int)."""
    return {"batch_id": batch_id, "batch_instance_id": item.instance_id, "batch_index": item.index}


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


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages about answers."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _snippet(value: Any, limit: int = 40) -> str:
    """At most ``limit`` characters of a value from an answer, for a reason line."""
    try:
        text = json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        text = repr(type(value))
    return text if len(text) <= limit else text[:limit] + "..."


def _is_shape(shape: Any) -> bool:
    return isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                           for d in shape)


def _tf_dims(tensor_shape: Any) -> list[int]:
    """A TensorProto's dimension sizes (JSON int64 values arrive as strings); BadResponse if unreadable."""
    dims = tensor_shape.get("dim", []) if isinstance(tensor_shape, dict) else None
    if not isinstance(dims, list):
        raise BadResponse(f"the answer's tftensor.tensorShape {_snippet(tensor_shape)} has no list of dims")
    out = []
    for d in dims:
        size = d.get("size", 0) if isinstance(d, dict) else None
        if isinstance(size, str) and size.isdigit() and len(size) < 19:
            size = int(size)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadResponse(f"the answer's tftensor dim {_snippet(d)} has no non-negative size")
        out.append(size)
    return out


def _flatten(value: Any) -> list[Any]:
    if value and isinstance(value[0], list):
        return [x for row in value for x in _flatten(row)]
    return list(value)


def _slices(values: Any, rows: list[int], row_size: int) -> list[Any]:
    """Cut a flat sequence into consecutive parts of ``rows[i] * row_size`` elements."""
    out, start = [], 0
    for n in rows:
        out.append(values[start * row_size:(start + n) * row_size])
        start += n
    return out


def _row_size(shape: Sequence[int]) -> int:
    size = 1
    for dim in shape[1:]:
        size *= dim
    return size


class SeldonCodec:
    """Builds Seldon protocol v1 requests for one batch configuration and splits responses."""

    def __init__(self, config: BatchConfig) -> None:
        self.batch_id = config.batch_id
        self.data_type = config.data_type
        self.payload_type = config.payload_type
        self.method = config.method
        #: Only plain arrays can be concatenated into one request; others go one per request.
        self.batch_size = config.batch_size if self.batchable(config) else 1

    @staticmethod
    def batchable(config: BatchConfig) -> bool:
        return config.data_type == "data" and config.method == "predict"

    # -- input line -> Parsed -------------------------------------------------------------

    def parse(self, item: Item) -> Parsed:
        """Validate one line for the configured data and payload type."""
        line = item.line.strip()
        if not line:
            raise InputError("blank line")
        if self.data_type == "str":
            return Parsed(item, self._parse_str(line))
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
            if self.batch_size > 1 and not isinstance(value[0], list):
                value = [value]  # a flat line is one row of the mini-batch
            return Parsed(item, value, rows=len(value))
        shape = _shape_of(value, self.payload_type + " payload")
        if len(shape) == 1 and self.batch_size > 1:
            shape = (1, *shape)
            value = [value]
        return Parsed(item, value, rows=shape[0], shape=shape)

    @staticmethod
    def _parse_str(line: bytes) -> str:
        text = line.decode("utf-8", errors="replace")
        if text.startswith('"'):
            try:
                decoded = json.loads(text)
            except ValueError:
                return text
            if isinstance(decoded, str):
                return decoded
        return text

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

    def build(self, parsed: list[Parsed]) -> tuple[JSONDict, list[Parsed], list[tuple[Parsed, str]]]:
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

        members, rejected = [first], []
        for p in parsed[1:]:
            if self.payload_type != "ndarray" and p.shape[1:] != first.shape[1:]:
                rejected.append((p, f"shape {list(p.shape)} does not fit the mini-batch's "
                                    f"row shape {list(first.shape[1:])}"))
            else:
                members.append(p)
        if len(members) == 1:
            array = first.value
            shape = first.shape
        else:
            array = [row for p in members for row in p.value]
            shape = (sum(p.rows for p in members), *first.shape[1:])
        return {"data": self._data(array, shape), "meta": {"tags": tags}}, members, rejected

    @staticmethod
    def _with_tags(meta: Any, tags: JSONDict) -> JSONDict:
        meta = dict(meta) if isinstance(meta, dict) else {}
        own = meta.get("tags")
        meta["tags"] = {**own, **tags} if isinstance(own, dict) else tags
        return meta

    def _data(self, array: list[Any], shape: tuple[int, ...]) -> JSONDict:
        if self.payload_type == "ndarray":
            return {"ndarray": array}
        values = _flatten(array)
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
        if not isinstance(response, dict):
            raise BadResponse(f"the answer is a JSON {_json_type(response)}, not a SeldonMessage object")
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
            return [{**rest, "ndarray": part} for part in _slices(array, rows, 1)]
        if isinstance(data.get("tensor"), dict):
            tensor = data["tensor"]
            shape, values = tensor.get("shape") or [], tensor.get("values") or []
            if not _is_shape(shape):
                raise BadResponse(f"the answer's tensor.shape {_snippet(shape)} is not a list of non-negative integers")
            if not isinstance(values, list):
                raise BadResponse(f"the answer's tensor.values is a JSON {_json_type(values)}, not an array")
            self._check_rows(shape[0] if shape else 0, want)
            self._check_size(len(values), shape, "tensor")
            return [{**rest, "tensor": {"shape": [n, *shape[1:]], "values": part}}
                    for n, part in zip(rows, _slices(values, rows, _row_size(shape)), strict=True)]
        if isinstance(data.get("tftensor"), dict):
            tf = data["tftensor"]
            dims = _tf_dims(tf.get("tensorShape"))
            self._check_rows(dims[0] if dims else 0, want)
            size = _row_size(dims)
            field = next((f for f in TF_VALUE_FIELDS if f in tf), None)
            flat: Any
            packed = "tensorContent" in tf  # TensorFlow packs arrays as raw little-endian bytes
            if packed:
                field = "tensorContent"
                content = tf["tensorContent"]
                if not isinstance(content, str):
                    raise BadResponse(f"the answer's tftensor.tensorContent is a JSON {_json_type(content)}, "
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
                    raise BadResponse(f"the answer's tftensor.{field} is a JSON {_json_type(flat)}, not an array")
                self._check_size(len(flat), dims, "tftensor")
            base = {k: v for k, v in tf.items() if k not in TF_VALUE_FIELDS and k != "tensorContent"}
            out = []
            for n, part in zip(rows, _slices(flat, rows, size), strict=True):
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
        want = _row_size(shape) * (shape[0] if shape else 0) * unit
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
        return {
            "status": {"code": code, "info": info, "reason": reason, "status": "FAILURE"},
            "meta": {"tags": {**(own_tags or {}), **tags_for(self.batch_id, item)}},
        }

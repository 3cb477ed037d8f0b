"""What every protocol's codec promises, and the helpers both codecs share.

A codec turns input lines into request bodies and answers back into output lines, and tells the
transport where a request goes (:class:`~..core.target.Target`: a REST path, a gRPC route). The
protocol is decided in :func:`.choose.make_codec` and nowhere else: the engine and the transports
only see a :class:`Codec` and its ``Target``. A third protocol is a module beside ``seldon.py`` and
``v2.py`` (its protobuf conversion beside ``seldon_pb.py``) and one line in ``make_codec``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from ..config import BatchConfig
from ..core import strict_json
from ..core.items import Item
from ..core.strict_json import JSONDict
from ..core.target import Target

#: A mini-batch's request body, the lines it holds, and the lines that could not join it (with why):
#: those are not failed, they make another request (:mod:`..pipeline.splitting`).
Built = tuple[JSONDict, list["Parsed"], list[tuple["Parsed", str]]]

MAX_JSON_DEPTH = strict_json.MAX_JSON_DEPTH
TOO_DEEP = f"JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)"


class InputError(ValueError):
    """A line that cannot become a request; the message says what is wrong with it."""


class ResponseMismatch(ValueError):
    """A mini-batch response whose rows cannot be matched one-to-one with its input lines."""


class BadResponse(ValueError):
    """An answer that is not what the protocol promises (not an object, values of the wrong type)."""


@attrs.define(slots=True)
class Parsed:
    """A line that passed validation: its value, how many rows it adds, and its own tags (never
    changed once made; not frozen, which triples the cost of making one per line)."""

    item: Item
    value: Any
    rows: int = 1
    shape: tuple[int, ...] = ()
    own_tags: JSONDict = attrs.field(factory=dict)
    #: What its leaves are, where the codec stacks lines (numbers, texts...): only lines of one kind share a request.
    kind: str = ""


class Codec(Protocol):
    """One protocol's message formats for one batch configuration."""

    batch_size: int
    #: Rows one request may hold (``--max-batch-rows``, or the model's own limit); None: no limit.
    max_rows: int | None
    target: Target

    def parse(self, item: Item) -> Parsed:
        """Validate one line (InputError if it cannot be a request)."""

    def build(self, parsed: list[Parsed]) -> Built:
        """One request body for the first line and those that fit with it (shape, datatype, at most
        ``max_rows`` rows), the lines it holds, and the others (for another request)."""

    def results(self, response: JSONDict, members: list[Parsed]) -> list[JSONDict]:
        """One output line per member (ResponseMismatch, BadResponse when the answer will not split)."""

    def error(self, item: Item, reason: str, *, info: str, code: int | None = None,
              own_tags: JSONDict | None = None) -> JSONDict:
        """The error line for one input line."""


def over_rows(rows: int, more: int, limit: int | None) -> bool:
    """Whether ``more`` rows would take a request of ``rows`` rows past ``limit``."""
    return limit is not None and rows + more > limit


def gateway_prefix(config: BatchConfig) -> str:
    """The path prefix of a Seldon Core gateway (istio, ambassador); none for a direct ``seldon`` one."""
    return "" if config.gateway_type == "seldon" else f"/seldon/{config.namespace}/{config.deployment_name}"


def answer_object(response: Any, what: str) -> JSONDict:
    """The answer, when it is the JSON object the protocol promises (``what``); BadResponse if not."""
    if not isinstance(response, dict):
        raise BadResponse(f"the answer is a JSON {json_type(response)}, not {what} object")
    return response


def tags_for(batch_id: str, item: Item) -> JSONDict:
    """The identifiers every request and output line carries (``batch_index`` an int)."""
    return {"batch_id": batch_id, "batch_instance_id": item.instance_id, "batch_index": item.index}


def joined(lines: list[JSONDict], items: Sequence[Item], join: bool) -> list[JSONDict]:
    """``--join-input``: each output line also carries, as ``"input"``, the input line it answers.

    The line's JSON value (the raw text when it is not JSON; null for a line too long to have been
    held), so a scored file needs no matching back by ``batch_index``. It costs about the input's
    size again in the output, and decoding each line once more.
    """
    if join:
        for line, item in zip(lines, items, strict=True):
            line["input"] = input_value(item)
    return lines


_encode = strict_json.compact_encoder(ensure_ascii=False)


def input_value(item: Item) -> Any:
    """The line's value as the output can carry it: strict JSON in valid UTF-8, else the line's text."""
    if item.oversize:
        return None
    try:
        value = load_json_line(item.line)
        _encode(value).encode("utf-8")  # what the writer will do: no 1e999, no lone surrogate
        return value
    except (ValueError, UnicodeError):  # not JSON, too deep, not finite, not UTF-8: the text as it was
        return item.line.decode("utf-8", errors="replace")


def load_json_line(line: bytes) -> Any:
    """The JSON value of one input line, or InputError saying why not: not JSON, not UTF-8,
    nested deeper than :data:`MAX_JSON_DEPTH` (a line nested 100,000 deep is one of those), or
    holding a number strict JSON cannot carry (``NaN``, ``Infinity``, ``1e999``)."""
    try:
        value = strict_json.decode(line)
    except strict_json.TooDeep:
        raise InputError(f"line is not valid input: {TOO_DEEP}") from None
    except ValueError as e:
        raise InputError(f"line is not valid JSON: {e}") from None
    try:
        strict_json.check(value, line, MAX_JSON_DEPTH)
    except ValueError as e:
        raise InputError(f"line is not valid input: {e}") from None
    if (b"\\u" in line or b"\xed" in line) and not _is_text(_encode(value)):
        raise InputError(f"line is not valid input: {LONE_SURROGATE}")
    return value


#: Why a line holding a lone surrogate (``"\ud800"`` without its pair) is refused before it is sent.
LONE_SURROGATE = "it holds a lone surrogate (a \\uD800-\\uDFFF escape without its pair), which is not text"


def _is_text(text: str) -> bool:
    """Whether ``text`` can be sent and written as UTF-8 (no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_str(line: bytes) -> str:
    """A text line (``--data-type str``): a JSON string literal is unquoted, anything else kept as is."""
    text = line.decode("utf-8", errors="replace")
    if text.startswith('"'):
        try:
            decoded = json.loads(text)
        except ValueError:
            return text
        if isinstance(decoded, str):
            if not _is_text(decoded):
                raise InputError(f"line is not valid input: {LONE_SURROGATE}")
            return decoded
    return text


def flatten(value: Any) -> list[Any]:
    """A rectangular nested list's elements in row-major order."""
    if value and isinstance(value[0], list):
        return [x for row in value for x in flatten(row)]
    return list(value)


def slices(values: Any, rows: list[int], row_size: int) -> list[Any]:
    """Cut a flat sequence into consecutive parts of ``rows[i] * row_size`` elements."""
    out, start = [], 0
    for n in rows:
        out.append(values[start * row_size:(start + n) * row_size])
        start += n
    return out


def row_size(shape: Sequence[int]) -> int:
    """Elements in one row of a tensor of this shape (the product of all but the first dimension)."""
    size = 1
    for dim in shape[1:]:
        size *= dim
    return size


def json_type(value: Any) -> str:
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


def snippet(value: Any, limit: int = 40) -> str:
    """At most ``limit`` characters of a value from an answer, for a reason line."""
    try:
        text = json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        text = repr(type(value))
    return text if len(text) <= limit else text[:limit] + "..."

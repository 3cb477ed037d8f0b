"""Strict JSON with limits: the one reader of input lines and answers, and the one compact writer.

Every value this processor writes must be strict JSON (no ``NaN``/``Infinity``, which Python's
``json`` accepts and emits by default) and encodable within Python's recursion limit. So a text
is read in two steps, shared by input lines (:data:`MAX_JSON_DEPTH`) and answers
(:data:`MAX_ANSWER_DEPTH`), each caller turning the exceptions into its own error:

* :func:`decode`: ``json.loads`` refusing the ``NaN``/``Infinity`` literals (:class:`NotFinite`),
  a text too deep for Python's decoder being :class:`TooDeep`;
* :func:`check`: nesting past the caller's limit (:class:`TooDeep`) and numbers beyond a double
  such as ``1e999``, which decode to infinity (:class:`NotFinite`); both in C-speed passes over
  the text, the decoded value walked only when the text says it might hold such a number.

Texts are read by orjson (about 4x quicker than ``json.loads``) when it is installed and the text
is one it reads exactly as ``json`` does; anything else (a number of 19 or more digits, which
orjson would read as a float; a BOM; lone surrogates; any error) takes the ``json`` path, so the
values and errors are the same with or without it (``tests/test_fast_json.py``).
:func:`compact_bytes` writes through orjson (about 7x quicker), its bytes a function of the value
alone (floats as orjson writes them), and the same errors as ``json`` (NaN refused, not written as ``null``).
"""

from __future__ import annotations

import json
import json.scanner
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - an install without it: the json path alone
    orjson = None  # type: ignore[assignment]

__all__ = [
    "MAX_ANSWER_DEPTH",
    "MAX_JSON_DEPTH",
    "JSONDict",
    "NotFinite",
    "TooDeep",
    "check",
    "compact_bytes",
    "compact_encoder",
    "decode",
    "has_non_finite",
    "json_depth",
    "too_deep",
]

#: Deepest JSON nesting accepted in an input line. Deeper values could not be encoded again
#: (request bodies, output lines) within Python's recursion limit, nor read by most servers
#: (protobuf refuses more than 100 levels), so they are input errors from the start.
MAX_JSON_DEPTH = 256
#: Deepest JSON nesting accepted in an answer: far beyond any model's output (an ndarray of 5
#: dimensions is 5 deep), and far enough inside Python's recursion limit (1,000 frames) that
#: decoding, converting and writing an accepted answer can never overflow the stack.
MAX_ANSWER_DEPTH = 512

#: A decoded JSON object: a request body, an answer, an output line.
JSONDict = dict[str, Any]


class TooDeep(ValueError):
    """Nested deeper than the caller's limit (or than Python's decoder can go)."""


class NotFinite(ValueError):
    """``NaN``, ``Infinity`` or a number beyond a double: no strict JSON line can carry it."""


def _no_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are Python's extensions, not JSON."""
    raise NotFinite(f"{name} is not a JSON number")


_decoder = json.JSONDecoder(parse_constant=_no_constant)
_scan = json.scanner.make_scanner(_decoder)  # type: ignore[arg-type]  # typeshed: takes the decoder


def decode(data: bytes, *, any_encoding: bool = False) -> Any:
    """``json.loads`` of ``data``, refusing ``NaN``/``Infinity`` (:class:`NotFinite`).

    UTF-8 unless ``any_encoding`` (then ``json.loads``'s detection, for answers); a leading UTF-8
    BOM is skipped and lone surrogates pass, as in ``json.loads``. The scanner is called directly,
    about 1.5 us cheaper per line; anything but one bare value goes through ``decode`` for its
    whitespace rules and error messages. :class:`TooDeep` when Python's decoder runs out of stack.
    """
    if orjson is not None and (len(data) < 19 or _LONG_NUMBER not in data.translate(_DIGITS_AS_ZERO)):
        try:
            return orjson.loads(data)
        except ValueError:  # not strict JSON, not UTF-8, too deep, a BOM: the json path says which
            pass
    text = data.decode(json.detect_encoding(data) if any_encoding else "utf-8", "surrogatepass")
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        try:
            value, end = _scan(text, 0)
            if end == len(text):
                return value
        except StopIteration:
            pass
        return _decoder.decode(text)
    except RecursionError:
        raise TooDeep("nested too deeply to decode") from None


def check(value: Any, data: bytes, max_depth: int) -> None:
    """:class:`TooDeep` if ``value`` (decoded from ``data``) nests past ``max_depth``;
    :class:`NotFinite` if it holds an infinity (a literal such as ``1e999``)."""
    if too_deep(data, max_depth):
        raise TooDeep(f"JSON nested too deeply (more than {max_depth} levels)")
    if may_overflow(data) and has_non_finite(value, len(data) + 1):
        raise NotFinite("a number beyond the range of a double (such as 1e999)")


_STRINGS = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def json_depth(data: bytes) -> int:
    """Deepest nesting of arrays and objects in one valid JSON text, in C-speed passes (strings
    dropped, brackets kept, running sum), never recursing however deep the text is."""
    return _depth(_STRINGS.sub(b"", data).translate(None, _NOT_BRACKETS))


def _depth(brackets: bytes) -> int:
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def too_deep(data: bytes, limit: int) -> bool:
    """Whether the valid JSON text ``data`` nests lists and objects deeper than ``limit``.

    Cheap for the usual text: ``n`` bytes of valid JSON nest at most ``n / 2`` deep, and fewer
    brackets than ``limit`` cannot nest that deep; otherwise, strings dropped, deleting the
    innermost ``[]`` then ``{}`` pairs takes off at most two levels a pass, so brackets gone within
    ``limit // 2`` passes are at most ``limit`` deep. Only past that is the exact depth summed up.
    """
    if len(data) <= 2 * limit or data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = whole = _STRINGS.sub(b"", data).translate(None, _NOT_BRACKETS)
    for _ in range(limit // 2):
        shorter = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if not shorter:
            return False
        if len(shorter) == len(brackets):
            break  # not well nested: the exact sum decides
        brackets = shorter
    return _depth(whole) > limit


#: An exponent of 100 or more: with 309+ digits in a row, the only ways a JSON number can be
#: beyond a double.
_HUGE_EXPONENT = re.compile(rb"[eE]\+?0*[1-9][0-9][0-9]")
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_DIGITS = b"0" * 309
#: 19 digits in a row: an integer orjson might read as a float (beyond 64 bits), or a float with
#: more digits than a double holds; such texts are read by ``json``.
_LONG_NUMBER = b"0" * 19


def may_overflow(data: bytes) -> bool:
    """Whether some number in ``data`` might be beyond a double: cheap C passes, rarely true."""
    if (b"e" in data or b"E" in data) and _HUGE_EXPONENT.search(data):
        return True
    return len(data) > 308 and _LONG_DIGITS in data.translate(_DIGITS_AS_ZERO)


def has_non_finite(value: Any, budget: int) -> bool:
    """Whether a decoded JSON value (or a record made of one: tuples count as arrays) holds NaN or an
    infinity; iterative, at most ``budget`` values visited (True when the budget runs out: a text of
    ``n`` bytes holds fewer than ``n`` values)."""
    stack = [value]
    for _ in range(budget):
        if not stack:
            return False
        x = stack.pop()
        kind = type(x)
        if kind is float:
            if x - x != 0.0:  # NaN and the infinities; 0.0 for every finite float
                return True
        elif kind is list or kind is tuple:  # a tuple is written as an array
            stack.extend(x)
        elif kind is dict:
            stack.extend(x.values())
    return bool(stack)


def compact_encoder(*, ensure_ascii: bool) -> Callable[[Any], str]:
    """A compact strict JSON encoder for records built from decoded JSON (never circular).

    ``JSONEncoder.encode`` sets up a new C encoder on every call, about half the cost of encoding
    a small record; this one is set up once (same output, same errors), and skips the
    circular-reference check. ``NaN``/``Infinity`` are refused (ValueError), as on reading.
    """
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, separators=(",", ":"), check_circular=False,
                               allow_nan=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the plain encoder
        return encoder.encode
    strings = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    c_encode = make(None, encoder.default, strings, None, ":", ",", False, False, False)  # allow_nan=False
    return lambda record: "".join(c_encode(record, 0))


#: Characters valid raw in a JSON string that line readers (Python's ``splitlines``, editors) take for a
#: line break: written as ``\u`` escapes, so one record is always one line.
_LINE_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


def _one_line(data: bytes) -> bytes:
    """``data`` with U+0085, U+2028 and U+2029 escaped (in JSON they only stand inside strings); ASCII
    text, the usual line, is returned after one C check."""
    if data.isascii():
        return data
    for raw, escaped in _LINE_BREAKS:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def compact_bytes(*, ensure_ascii: bool) -> Callable[[Any], bytes]:
    """Compact strict JSON as UTF-8 bytes, by orjson (about 7x quicker than ``json``).

    The bytes are a function of the value alone (byte-stable: the same answer always gives the same
    line); floats are written as orjson writes them (``1e-7``, where ``json`` writes ``1e-07``).
    ``json`` writes what orjson cannot (integers beyond 64 bits, nesting past 254 levels) and
    gives the errors for what no strict line can carry: NaN and the infinities (orjson's
    ``null``, told from a real ``null`` by walking the value), lone surrogates. With
    ``ensure_ascii``, a text with non-ASCII or DEL goes to ``json`` for its ``\\u`` escapes; without,
    the characters line readers break lines at are escaped (:func:`_one_line`).
    """
    slow = compact_encoder(ensure_ascii=ensure_ascii)

    def encode_slowly(record: Any) -> bytes:
        return _one_line(slow(record).encode("utf-8"))

    if orjson is None:  # pragma: no cover - an install without it
        return encode_slowly
    dumps = orjson.dumps
    # subclasses (an IntEnum), dataclasses and datetimes: json's bytes (or its TypeError), not orjson's
    passthrough = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME

    def encode(record: Any) -> bytes:
        try:
            data = dumps(record, option=passthrough)
        except TypeError:  # orjson.JSONEncodeError
            return encode_slowly(record)
        if b"null" in data and has_non_finite(record, len(data) + 1):
            return encode_slowly(record)  # json's ValueError: NaN is not strict JSON
        if ensure_ascii and (not data.isascii() or b"\x7f" in data):
            return encode_slowly(record)
        return _one_line(data)

    return encode

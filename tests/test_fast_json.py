"""strict_json through orjson: the same values and errors as the ``json`` path, byte-stable output.

orjson reads integers beyond 64 bits as floats, refuses a BOM and lone surrogates, writes NaN as
``null`` and knows no ``ensure_ascii``; strict_json sends every such case to ``json``. It writes
``1e-7`` where ``json`` writes ``1e-07``: the same number, and the output stays a function of the
value. These tests compare the two paths on random values and texts, and on the cases that differ.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seldon_batch_tx.core import strict_json
from seldon_batch_tx.core.strict_json import NotFinite, TooDeep, compact_bytes, compact_encoder, decode

pytestmark = pytest.mark.skipif(strict_json.orjson is None, reason="orjson is an install requirement")

SLOW = {ascii_: compact_encoder(ensure_ascii=ascii_) for ascii_ in (False, True)}
FAST = {ascii_: compact_bytes(ensure_ascii=ascii_) for ascii_ in (False, True)}
HEX_IDS = st.uuids().map(str)  # a digit before an "e" in a string is not a number's exponent

finite = st.floats(allow_nan=False, allow_infinity=False)
doubles = st.integers(0, 2**64 - 1).map(lambda n: struct.unpack("<d", struct.pack("<Q", n))[0]).filter(math.isfinite)
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | finite | doubles
           | st.text() | st.text(alphabet=st.characters(max_codepoint=0x7F)) | HEX_IDS)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5), max_leaves=30)


def slow_decode(data: bytes) -> Any:
    """The json path alone (what decode did before orjson)."""
    saved, strict_json.orjson = strict_json.orjson, None
    try:
        return decode(data)
    finally:
        strict_json.orjson = saved


def same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1 is not 1.0, -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return bool(a == b)


@settings(max_examples=1000)
@given(values, st.booleans())
def test_bytes_hold_jsons_value_and_are_stable(value: Any, ensure_ascii: bool) -> None:
    """The same value as json's bytes (or json's error), and the same bytes once read back (a
    resumed or repeated run writes the same line for the same answer)."""
    try:
        expected = SLOW[ensure_ascii](value).encode("utf-8")
    except (ValueError, UnicodeEncodeError) as e:  # a lone surrogate: the writer's error, either way
        with pytest.raises(type(e)):
            FAST[ensure_ascii](value)
        return
    data = FAST[ensure_ascii](value)
    assert same(slow_decode(data), slow_decode(expected))
    assert FAST[ensure_ascii](slow_decode(data)) == data
    if ensure_ascii:
        assert data.isascii() and b"\x7f" not in data


@pytest.mark.parametrize("value, text", [
    (1e-7, b"1e-7"), (1.5e-05, b"0.000015"), (1e16, b"1e+16"), ([2.5e-300], b"[2.5e-300]"),
    (2**64, b"18446744073709551616"), (-(2**63) - 1, b"-9223372036854775809"), ({"a": None}, b'{"a":null}'),
    ({"a": None, "b": 1e-7}, b'{"a":null,"b":1e-7}'),
    ("\x7f", b'"\x7f"'), ({"id": "995b3d0e-526f", "x": [1.0]}, b'{"id":"995b3d0e-526f","x":[1.0]}'),
])
def test_bytes_written(value: Any, text: bytes) -> None:
    assert FAST[False](value) == text


def test_ascii_output_escapes_del_and_non_ascii() -> None:
    assert FAST[True](["\x7f", "é"]) == b'["\\u007f","\\u00e9"]'


@pytest.mark.parametrize("value", [math.nan, math.inf, [-math.inf], {"a": (math.nan,)}, [{"b": (1, math.inf)}],
                                   {"a": None, "b": [math.nan]}])
@pytest.mark.parametrize("ensure_ascii", [False, True])
def test_nan_is_refused_not_written_as_null(value: Any, ensure_ascii: bool) -> None:
    """Also inside a tuple (orjson writes it as an array) and beside a real ``null``."""
    with pytest.raises(ValueError):
        FAST[ensure_ascii](value)


def test_lone_surrogate_fails_as_before() -> None:
    with pytest.raises(UnicodeEncodeError):
        FAST[False]({"a": "\ud800"})


def test_deep_values_are_written_past_orjsons_limit() -> None:
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    assert FAST[False](deep) == b"[" * 300 + b"1" + b"]" * 300


@settings(max_examples=500)
@given(values)
def test_values_read_are_jsons_values(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert same(decode(text), slow_decode(text))


@settings(max_examples=500)
@given(st.binary(max_size=40) | st.text(alphabet="[]{}\",:0123456789.eE+-tfnrulsaNIy \\u\t\n", max_size=40)
       .map(str.encode))
def test_any_text_reads_or_fails_as_with_json(data: bytes) -> None:
    try:
        expected = slow_decode(data)
    except ValueError as e:
        with pytest.raises(type(e)):
            decode(data)
        return
    assert same(decode(data), expected)


@pytest.mark.parametrize("text, expected", [
    (b"123456789012345678901234567890", 123456789012345678901234567890),
    (b"[-9223372036854775809]", [-9223372036854775809]),
    (b"0.12345678901234567890123", 0.12345678901234568),
    (b'\xef\xbb\xbf{"a":1}', {"a": 1}),
    (b'"\\ud800"', "\ud800"),
    (b'"\xed\xa0\x80"', "\ud800"),
    (b'"\xff"', None),
])
def test_texts_orjson_reads_otherwise_are_read_by_json(text: bytes, expected: Any) -> None:
    if expected is None:
        with pytest.raises(UnicodeDecodeError):
            decode(text)
        return
    assert same(decode(text), expected)


@pytest.mark.parametrize("text, error", [(b"[NaN]", NotFinite), (b"-Infinity", NotFinite), (b"[" * 5000, TooDeep)])
def test_errors_are_jsons_errors(text: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode(text)


def test_answers_in_other_encodings_are_still_read() -> None:
    assert decode('{"a":[1,2]}'.encode("utf-16"), any_encoding=True) == {"a": [1, 2]}


@given(st.text(alphabet=st.sampled_from("a\x85\u2028\u2029\xe9\n")), st.sampled_from([0, 10**30]))
def test_an_output_line_is_one_line_for_every_line_reader(text: str, number: int) -> None:
    """U+0085, U+2028 and U+2029 are valid raw in a JSON string, but Python's ``splitlines`` (and editors)
    break lines there: an output line writes them escaped, on the orjson path and on json's (a big integer)."""
    record = {"strData": text, "n": number}
    data = compact_bytes(ensure_ascii=False)(record)
    assert len((data + b"\n").decode("utf-8").splitlines()) == 1
    assert json.loads(data) == record

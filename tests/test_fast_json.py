"""strict_json's reading through orjson: the same values and errors as the ``json`` path.

orjson reads integers beyond 64 bits as floats and refuses a BOM and lone surrogates, which
``json`` reads; strict_json sends every such text to ``json``. These tests compare the two paths
on random values and texts, and on the texts that differ.
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
from seldon_batch_tx.core.strict_json import NotFinite, TooDeep, decode

pytestmark = pytest.mark.skipif(strict_json.orjson is None, reason="orjson is an install requirement")

finite = st.floats(allow_nan=False, allow_infinity=False)
doubles = st.integers(0, 2**64 - 1).map(lambda n: struct.unpack("<d", struct.pack("<Q", n))[0]).filter(math.isfinite)
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | finite | doubles
           | st.text() | st.text(alphabet=st.characters(max_codepoint=0x7F)))
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

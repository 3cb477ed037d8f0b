"""strict_json: one reader of input lines and answers, with the limits both keep.

Input lines (:data:`MAX_JSON_DEPTH`) and answers (:data:`MAX_ANSWER_DEPTH`) were once read by two
pieces of code; their quick depth bound disagreed for arrays and objects alternating (``[{[{...``),
whose innermost pairs are peeled two levels a pass: an answer 600 deep of those passed the
answers' bound. Both now read through :func:`too_deep`, which never accepts a deep text.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.core.strict_json import (
    MAX_ANSWER_DEPTH,
    MAX_JSON_DEPTH,
    NotFinite,
    TooDeep,
    check,
    compact_encoder,
    decode,
    json_depth,
    too_deep,
)
from seldon_batch_tx.protocols.base import InputError, load_json_line
from seldon_batch_tx.transports.http import classify


def alternating(depth: int) -> Any:
    """Arrays and objects alternating, ``depth`` levels in all."""
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


@pytest.mark.parametrize("limit", [MAX_JSON_DEPTH, MAX_ANSWER_DEPTH])
def test_alternating_brackets_are_measured_exactly(limit: int) -> None:
    for depth in (limit - 1, limit, limit + 1, limit + 88):
        text = json.dumps(alternating(depth)).encode()
        assert json_depth(text) == depth
        assert too_deep(text, limit) is (depth > limit)


def test_an_alternating_deep_answer_is_bad_response() -> None:
    """The fixed disagreement: 600 levels of ``{"a": [...]}`` were accepted as an answer."""
    body = json.dumps({"data": alternating(600)}).encode()
    with pytest.raises(RequestFailed) as caught:
        classify(200, body)
    assert (caught.value.kind, caught.value.reason) == ("bad_response", "answer nested too deeply")


def test_an_alternating_deep_line_is_an_input_error() -> None:
    with pytest.raises(InputError, match="nested too deeply"):
        load_json_line(json.dumps(alternating(MAX_JSON_DEPTH + 1)).encode())


def test_decode_and_check() -> None:
    """Literals refused on decoding, overflowing numbers on checking; strings that look like them pass."""
    with pytest.raises(NotFinite):
        decode(b"[NaN]")
    with pytest.raises(TooDeep):
        decode(b"[" * 100_000 + b"]" * 100_000)
    value = decode(b'[1e999, "1e999"]')
    with pytest.raises(NotFinite):
        check(value, b'[1e999, "1e999"]', 10)
    check(decode(b'["1e999", 1e300]'), b'["1e999", 1e300]', 10)
    assert decode('\ufeff{"a": "\u00e9"}'.encode("utf-16"), any_encoding=True) == {"a": "\u00e9"}


def test_compact_encoder_is_strict() -> None:
    encode = compact_encoder(ensure_ascii=True)
    assert encode({"a": [1, "\u00e9"]}) == '{"a":[1,"\\u00e9"]}'
    with pytest.raises(ValueError):
        encode({"a": float("nan")})

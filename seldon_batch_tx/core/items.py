"""The item of work: one input line as every layer sees it."""

from __future__ import annotations

import attrs


@attrs.define(slots=True)
class Item:
    """One input line: its 0-based position, its stable id and its bytes (newline removed).

    Never changed once read (not frozen: a frozen attrs class costs three times as much to make,
    and one is made per line).

    ``oversize`` is the length in bytes of a line longer than ``--max-line-bytes`` (its ``line`` is
    then ``b""``: it was skipped, never held whole); 0 for every other line.
    """

    index: int
    instance_id: str
    line: bytes
    oversize: int = 0

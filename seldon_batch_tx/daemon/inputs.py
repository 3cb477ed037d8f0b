"""What an input file must look like: its name (:func:`is_candidate`) and its first bytes (:func:`check_head`).

Names starting with ``.`` or ending in ``.part``, ``.partial``, ``.tmp``, ``.ready`` or ``.json``
are never inputs. A file that is binary, not UTF-8, empty, or whose first lines are none of them
JSON goes to ``failed/`` before anything is sent; one bad line among good ones is left to the
engine, which writes it as an error line. A new rule about an input's content goes in
:func:`check_head`; one about its name in :func:`is_candidate`.
"""

from __future__ import annotations

import json
import os

from ..tables.formats import TABLE_FORMATS, format_of
from .files import Rejected, open_regular
from .layout import READY, SIDECAR

NOT_INPUT_SUFFIXES = (".part", ".partial", ".tmp", READY, SIDECAR)
#: How much of a file :func:`check_fd` looks at.
SNIFF_BYTES = 1 << 16
BOM = b"\xef\xbb\xbf"


def is_candidate(name: str) -> bool:
    """Could this name in incoming/ or processing/ be an input file?"""
    return bool(name) and not name.startswith(".") and not name.endswith(NOT_INPUT_SUFFIXES)


def check_head(head: bytes, truncated: bool) -> None:
    """Refuse a file whose first bytes (``head``) are clearly not JSON lines."""
    if head.startswith(BOM):
        head = head[len(BOM):]  # the command line accepts a UTF-8 BOM, so does the daemon
    if not head.strip():
        raise Rejected("the file is empty")
    if b"\0" in head:
        raise Rejected("the file is binary (it holds NUL bytes), not JSON lines")
    lines = head.split(b"\n")
    if truncated and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut in the middle
    sample = [line for line in lines if line.strip()][:10]
    try:
        texts = [line.decode("utf-8") for line in sample]
    except UnicodeDecodeError as e:
        raise Rejected(f"the file is not UTF-8 text: {e}") from None
    if truncated and len(lines) == 1:
        return  # one very long first line: let the engine judge it
    errors = []
    for text in texts:
        try:
            json.loads(text.removeprefix("\ufeff"))
            return
        except RecursionError:
            return  # JSON nested too deep to parse here: JSON all the same; the engine writes its error line
        except ValueError as e:
            errors.append(str(e))
    raise Rejected(f"none of the first {len(texts)} lines is JSON (first error: {errors[0]})")


def check_fd(fd: int, name: str = "") -> None:
    """:func:`check_head` on an open file's first :data:`SNIFF_BYTES` (its offset is not moved); a table's
    name (``.csv``, ``.parquet``) is refused first, with a reason that says what to do with it."""
    if format_of(name, None) in TABLE_FORMATS:  # a watch directory takes JSON lines
        raise Rejected("a CSV or Parquet table: a watch directory takes JSON-lines files (score a table with "
                       "seldon-batch-processor -i TABLE, or convert it to JSON lines)")
    head = os.pread(fd, SNIFF_BYTES, 0)
    check_head(head, len(head) == SNIFF_BYTES)


def check_input(path: str) -> None:
    """Refuse files that are clearly not JSON lines (or not regular files) before anything is sent."""
    fd, _ = open_regular(path, single_link=False)
    try:
        check_fd(fd)
    finally:
        os.close(fd)

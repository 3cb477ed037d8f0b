"""An output's records in ``batch_index`` order, streamed, whatever order they were written in.

A run writes lines as answers come back; a table lists rows in input order. A file already in
order (``--ordered``, or one worker) is read straight through; otherwise it is sorted outside
memory: runs of at most :data:`RUN_BYTES` are sorted and spilled to temporary files, then merged.
The output must be one run's: an index twice, a negative index or several batch ids is a
:class:`TableError` (which row would the table hold?), as ``seldon-batch verify`` reports them.
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
from collections.abc import Generator, Iterator
from typing import Any

from ..outputs.lines import line_info, open_regular, read_lines
from .errors import TableError

#: Bytes of lines sorted in memory at once before they are spilled to a temporary file.
RUN_BYTES = 16 << 20


def _indexed(path: str, batch_ids: set[str] | None = None) -> Iterator[tuple[int, bytes]]:
    """(index, line) of each output line; the lines' batch ids go to ``batch_ids`` when given."""
    with open_regular(path) as stream:
        for line in read_lines(stream):
            if line.data is None or not line.data.strip():
                continue
            try:
                info = line_info(line.data)
            except ValueError as e:
                if not line.terminated:  # a torn last line (a run killed mid-write): that row is missing
                    continue
                raise TableError(f"{path} line {line.number}: not an output line ({e})") from None
            if info.index < 0:
                raise TableError(f"{path} line {line.number}: batch_index {info.index} is not a row of the input")
            if batch_ids is not None and info.batch_id is not None and len(batch_ids) < 10:
                batch_ids.add(info.batch_id)
            yield info.index, line.data


def in_order(path: str, batch_ids: set[str] | None = None) -> bool:
    """Whether the file's indexes only grow (then no sort is needed)."""
    last = -1
    for index, _ in _indexed(path, batch_ids):
        if index <= last:
            return False
        last = index
    return True


def _spill(run: list[tuple[int, bytes]], directory: str) -> str:
    run.sort(key=lambda pair: pair[0])
    fd, name = tempfile.mkstemp(prefix="seldon-batch-sort-", dir=directory)
    with os.fdopen(fd, "wb") as f:
        for _, data in run:
            f.write(data if data.endswith(b"\n") else data + b"\n")
    return name


def ordered_records(path: str, tmp_dir: str | None = None) -> Generator[tuple[int, dict[str, Any]], None, None]:
    """(index, record) in increasing index order, each index once (TableError for a second line of one)."""
    spilled: list[str] = []
    try:
        batch_ids: set[str] = set()
        if in_order(path, batch_ids):
            sources: list[Iterator[tuple[int, bytes]]] = [_indexed(path)]
        else:
            run: list[tuple[int, bytes]] = []
            held = 0
            directory = tmp_dir or os.path.dirname(os.path.abspath(path))
            for index, data in _indexed(path, batch_ids):
                run.append((index, data))
                held += len(data) + 100
                if held >= RUN_BYTES:
                    spilled.append(_spill(run, directory))
                    run, held = [], 0
            if run:
                spilled.append(_spill(run, directory))
            sources = [_indexed(name) for name in spilled]
        if len(batch_ids) > 1:
            shown = ", ".join(repr(i[:40]) for i in sorted(batch_ids))
            raise TableError(f"{path}: lines of several batch ids ({shown}), not one run's output; no table written")
        last = None
        for index, data in heapq.merge(*sources, key=lambda pair: pair[0]):
            if index == last:
                raise TableError(f"{path}: batch_index {index} is there more than once "
                                 f"(seldon-batch verify lists them); no table written")
            last = index
            yield index, json.loads(data)
    finally:
        for name in spilled:
            os.unlink(name)

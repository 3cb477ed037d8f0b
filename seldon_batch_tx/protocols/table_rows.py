"""The codec of a table input: the protocol's own codec, plus what a table row brings.

A row that could not be read (an empty cell, text in a numeric column, a CSV row of the wrong width)
arrives as an error item (:mod:`seldon_batch_tx.tables.rows`) and is that row's ``input_error``; the
Seldon protocol's ``ndarray`` requests carry the feature columns' names as ``data.names``.
"""

from __future__ import annotations

from typing import Any

from ..config import BatchConfig
from ..core.items import Item
from ..core.strict_json import JSONDict
from .base import Built, Codec, InputError, Parsed

#: First byte of a row's error item (as :data:`seldon_batch_tx.tables.rows.ERROR_MARK`).
ERROR_MARK = b"\x00"


class TableCodec:
    """Wraps the protocol's codec for rows of a table; everything else is the wrapped codec's."""

    def __init__(self, inner: Codec, config: BatchConfig) -> None:
        self._inner = inner
        self.batch_size = inner.batch_size
        self.target = inner.target
        self._names = list(config.table_names) if config.protocol == "seldon" else []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def parse(self, item: Item) -> Parsed:
        if item.line[:1] == ERROR_MARK:
            raise InputError(item.line[1:].decode("utf-8", "replace"))
        return self._inner.parse(item)

    def build(self, parsed: list[Parsed]) -> Built:
        body, members, rejected = self._inner.build(parsed)
        data = body.get("data") if isinstance(body, dict) else None
        if self._names and isinstance(data, dict) and "ndarray" in data:
            body = {**body, "data": {"names": self._names, **data}}
        return body, members, rejected

    def results(self, response: JSONDict, members: list[Parsed]) -> list[JSONDict]:
        return self._inner.results(response, members)

    def error(self, item: Item, reason: str, *, info: str, code: int | None = None,
              own_tags: JSONDict | None = None) -> JSONDict:
        return self._inner.error(item, reason, info=info, code=code, own_tags=own_tags)

""":func:`make_codec`: the one place the protocol is chosen, above the codecs it chooses from."""

from __future__ import annotations

from ..config import BatchConfig
from .base import Codec
from .seldon import SeldonCodec
from .table_rows import TableCodec
from .v2 import V2Codec


def make_codec(config: BatchConfig) -> Codec:
    """The message formats of ``config.protocol``: the one place the protocol is decided."""
    codec: Codec = V2Codec(config) if config.protocol == "v2" else SeldonCodec(config)
    if config.table_names:  # rows of a table: their errors and column names
        codec = TableCodec(codec, config)
    return codec

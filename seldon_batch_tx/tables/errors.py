"""The tables' one error and the one import of the optional table library (the bottom of ``tables/``)."""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from ..storage.paths import StorageError

#: The one-line message when pyarrow is not installed (exit 2, before anything is sent).
MISSING_EXTRA = "tables need pyarrow: pip install 'seldon-batch-tx[tables]'"

_POOL_SET = False


class TableError(StorageError):
    """A table that cannot be read or written; the message says what is wrong (one line, exit 2)."""


def require_pyarrow() -> Any:
    """The ``pyarrow`` module, or :class:`TableError` naming the extra to install."""
    try:
        pa = importlib.import_module("pyarrow")
    except ImportError:
        raise TableError(MISSING_EXTRA) from None
    global _POOL_SET
    if not _POOL_SET:  # jemalloc gives memory back: a million-row run measured ~15 MB lower than mimalloc
        _POOL_SET = True
        with contextlib.suppress(NotImplementedError, AttributeError):  # a build without it keeps its default
            pa.set_memory_pool(pa.jemalloc_memory_pool())
    return pa

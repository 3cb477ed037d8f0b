"""``--storage-options`` for ``seldon-batch verify`` and ``merge``, as the processor takes it.

The value may hold credentials, so an error names the option, never the value.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .paths import parse_storage_options

#: The processor's variable for ``--storage-options``, read by the tools too (one setting per pod).
STORAGE_OPTIONS_ENV = "SELDON_BATCH_STORAGE_OPTIONS"


def add_storage_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage-options", metavar="JSON", default=None,
                        help="fsspec storage options for s3:// (and other fsspec) paths, as a JSON object "
                             f"[default: ${STORAGE_OPTIONS_ENV}; AWS_ENDPOINT_URL sets the S3 endpoint]")


def tool_storage_options(text: str | None) -> dict[str, Any]:
    """The parsed options (flag, else environment); :class:`.paths.StorageError` when malformed."""
    return parse_storage_options(text if text is not None else os.environ.get(STORAGE_OPTIONS_ENV))

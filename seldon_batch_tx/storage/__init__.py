"""Object storage (``s3://``, any fsspec URL) and pipes (``-``) for inputs and outputs (issue 15).

Local-only runs import nothing of fsspec: it is loaded on the first URL. ``s3://`` needs the
``[s3]`` extra (s3fs).
"""

from .access import check_access, preflight
from .merging import LocalMerge, expected_lines, merge_paths
from .paths import (
    STDIO,
    StorageError,
    StorageUnavailable,
    canonical,
    display,
    filesystem,
    is_remote,
    is_stdio,
    parse_storage_options,
    redact,
    storage_options,
)
from .pipes import StdoutLines
from .private import StagingRefused, default_staging_dir, private_dir
from .reading import InputSource, count_lines, count_stream_lines, open_input, prefetching
from .staging import StagedOutput, open_output, stage_output, staging_path

__all__ = [
    "STDIO", "InputSource", "LocalMerge", "StagedOutput", "StdoutLines", "StagingRefused", "StorageError",
    "StorageUnavailable", "canonical", "check_access",
    "count_lines", "count_stream_lines", "default_staging_dir", "display", "expected_lines", "filesystem",
    "is_remote", "is_stdio", "merge_paths", "open_input", "open_output", "parse_storage_options",
    "preflight", "prefetching", "private_dir", "redact", "stage_output", "staging_path", "storage_options",
]

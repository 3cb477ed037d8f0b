"""Object storage (``s3://``, any fsspec URL) and pipes (``-``) for inputs and outputs (issue 15).

Local-only runs import nothing of fsspec: it is loaded on the first URL. ``s3://`` needs the
``[s3]`` extra (s3fs).
"""

from .access import check_access, preflight
from .merging import LocalMerge, expected_lines, merge_paths
from .paths import (
    STDIO,
    StorageError,
    display,
    filesystem,
    is_remote,
    is_stdio,
    parse_storage_options,
    redact,
    storage_options,
)
from .pipes import StdoutLines
from .reading import InputSource, count_lines, count_stream_lines, open_input, prefetching
from .staging import StagedOutput, default_staging_dir, open_output, stage_output, staging_path

__all__ = [
    "STDIO", "InputSource", "LocalMerge", "StagedOutput", "StdoutLines", "StorageError", "check_access",
    "count_lines", "count_stream_lines", "default_staging_dir", "display", "expected_lines", "filesystem",
    "is_remote", "is_stdio", "merge_paths", "open_input", "open_output", "parse_storage_options",
    "preflight", "prefetching", "redact", "stage_output", "staging_path", "storage_options",
]

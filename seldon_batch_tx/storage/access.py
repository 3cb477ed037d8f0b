"""Checks made before anything is sent: bad credentials, a missing bucket or object.

:func:`check_access` answers with one line to print before exiting 2, or None. It makes
cheap calls only: a one-key listing proves the credentials and the bucket; for an S3 output a
multipart upload is started and aborted at once, which proves the right to write without
leaving an object behind. Messages name the URL as :func:`.paths.display` shows it and the
store's reason, never a key, a secret or a token.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import TYPE_CHECKING, Any

from .paths import (
    S3_PROTOCOLS,
    StorageError,
    display,
    filesystem,
    is_remote,
    is_stdio,
    local_path,
    output_problem,
    parse_storage_options,
    protocol,
)
from .transfer import quiet_loop

if TYPE_CHECKING:
    from ..config import BatchConfig

#: The longest the checks before a run wait for the store (or ``--storage-timeout`` if shorter).
PREFLIGHT_TIMEOUT = 120.0


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    reason = text[0][:200] if text and text[0] else type(error).__name__
    return reason if type(error).__name__ in reason else f"{type(error).__name__}: {reason}"


def _check_local(path: str, for_write: bool) -> str | None:
    path = local_path(path)
    if for_write:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            return f"{path}: the directory {parent} does not exist"
        return None
    if not os.path.isfile(path):
        return f"{path} does not exist or is not a file"
    return None


def _check_s3(fs: Any, url: str, rpath: str, for_write: bool) -> str | None:
    bucket, _, key = rpath.partition("/")
    if not bucket or not key:
        return f"{display(url)}: give s3://BUCKET/KEY"
    try:
        fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1)
    except FileNotFoundError:
        return f"{display(url)}: the bucket {bucket} does not exist"
    except PermissionError as e:
        return f"{display(url)}: access denied, check the credentials ({_reason(e)})"
    if for_write:
        try:
            upload = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
            fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload["UploadId"])
        except PermissionError as e:
            return f"{display(url)}: not allowed to write ({_reason(e)})"
        return None
    return _check_object(fs, url, rpath)


def _check_object(fs: Any, url: str, rpath: str) -> str | None:
    try:
        info = fs.info(rpath)
    except FileNotFoundError:
        return f"{display(url)} does not exist"
    except PermissionError as e:
        return f"{display(url)}: access denied, check the credentials ({_reason(e)})"
    if info.get("type") == "directory":
        return f"{display(url)} is a directory, not an object"
    return None


def _check_other(fs: Any, url: str, rpath: str, for_write: bool) -> str | None:
    if not for_write:
        return _check_object(fs, url, rpath)
    parent = fs._parent(rpath)
    try:
        if parent and not fs.exists(parent):
            return f"{display(url)}: {parent} does not exist"
    except PermissionError as e:
        return f"{display(url)}: access denied, check the credentials ({_reason(e)})"
    return None


def check_access(url: str, options: dict[str, Any] | None = None, for_write: bool = False) -> str | None:
    """One line saying why ``url`` cannot be read (or written, with ``for_write``), else None.

    Blocking (network calls for URLs): run it before the reactor starts or in a thread.
    """
    if is_stdio(url):
        return None
    if not is_remote(url):
        return _check_local(url, for_write)
    try:
        fs, rpath = filesystem(url, options)
        quiet_loop(fs)
        if protocol(url) in S3_PROTOCOLS and hasattr(fs, "call_s3"):
            return _check_s3(fs, url, rpath, for_write)
        return _check_other(fs, url, rpath, for_write)
    except StorageError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - any backend failure (no credentials found, DNS...) is one line
        return f"{display(url)}: {_reason(e)}"


def _pipe_problem(config: BatchConfig) -> str | None:
    flag = "--retry-failed" if config.retry_failed else "--resume"
    if not (config.resume or config.retry_failed):
        return None
    if is_stdio(config.output_data_path):
        return f"{flag}: standard output (-o -) cannot be resumed; give an output file or URL"
    if is_stdio(config.input_data_path):
        return f"{flag}: standard input (-i -) cannot be read twice to check the output; give a file or URL"
    return None


def preflight(config: BatchConfig) -> str | None:
    """The one line (naming the option) saying why a batch cannot start, else None; checked before
    anything is sent. Blocking for URLs (see :func:`check_access`): call it before the reactor runs."""
    problem = _pipe_problem(config)
    if problem is not None:
        return problem
    problem = output_problem(config.output_data_path)  # said before any network call, not after
    if problem is not None:
        return f"--output-data-path {problem}"
    paths: tuple[tuple[str, str, bool], ...] = (("input-data-path", config.input_data_path, False),
                                                ("output-data-path", config.output_data_path, True))
    if config.input_format == "parquet":  # may be a prefix of files: tables/ checks it as it opens it
        paths = paths[1:]
    if not any(is_remote(path) for _, path, _ in paths):
        return None  # local paths were checked with the options
    try:
        options = parse_storage_options(config.storage_options)
    except StorageError as e:
        return str(e)
    limit = min(config.storage_timeout, PREFLIGHT_TIMEOUT)
    for name, path, for_write in paths:
        if is_remote(path):
            message = _bounded(check_access, limit, path, options, for_write)
            if message is not None:
                return f"--{name} {message}"
    return None


def _bounded(check: Any, limit: float, path: str, options: dict[str, Any], for_write: bool) -> str | None:
    """``check(...)`` in a daemon thread, waited for at most ``limit`` seconds: a store that never
    answers is one line too (the thread is left behind; the process can still exit)."""
    future: concurrent.futures.Future[str | None] = concurrent.futures.Future()

    def work() -> None:
        try:
            future.set_result(check(path, options, for_write))
        except BaseException as e:  # noqa: BLE001 - check_access answers every failure itself
            future.set_exception(e)

    threading.Thread(target=work, name="storage preflight", daemon=True).start()
    try:
        return future.result(limit)
    except TimeoutError:
        return f"{display(path)}: no answer from the store within {limit:g} s"

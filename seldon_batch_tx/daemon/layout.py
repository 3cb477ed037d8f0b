"""The watch directory's layout: its four subdirectories and every name the daemon derives from a file's.

Layout under ``--watch-dir DIR``::

    incoming/    users drop input files here (plus optional NAME.ready and NAME.json)
    processing/  claimed files, their sidecars, and hidden work files (.NAME.output, .NAME.state.json)
    done/        NAME, its output (NAME with .out before the extension), NAME.summary.json
    failed/      NAME, NAME.reason.txt (and whatever output and summary exist)

Names too long for the names derived from them (``.NAME.state.json``, ``NAME.summary.json``...)
are used under a shortened name (a prefix, ``~`` and a hash; the original is kept in the state
file and the summary); a name whose derived names are taken gets ``-N`` (:meth:`WatchDir.free_name`).
A new work file gets its path here and its name in :func:`derived`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import uuid
from typing import Any

import attrs

from ..options import default_output_path
from .files import Rejected, read_small, rename_noreplace, write_atomically

SUBDIRS = ("incoming", "processing", "done", "failed")
READY = ".ready"
SIDECAR = ".json"
#: Bytes kept free after a name for the longest derived name: ``.summary.json`` plus ``-NN``
#: (``.NAME.state.json`` and ``STEM.out.EXT`` are shorter).
DERIVED_ROOM = 24
FREE_NAME_TRIES = 100


def short_name(name: str, limit: int = 255) -> str:
    """``name``, or when it leaves no room for its derived names within ``limit`` bytes, a prefix of
    it, ``~``, a hash of the whole name and its extension: distinct names stay distinct."""
    raw = os.fsencode(name)
    if len(raw) + DERIVED_ROOM <= limit:
        return name
    stem, ext = os.path.splitext(raw)
    if len(ext) > 16:
        ext = b""
    digest = hashlib.sha1(raw, usedforsecurity=False).hexdigest()[:12].encode()
    stem = stem[: max(limit - DERIVED_ROOM - len(ext) - len(digest) - 1, 1)]
    for cut in range(4):  # do not end inside a UTF-8 sequence when the name was UTF-8
        try:
            (stem[: len(stem) - cut] if cut else stem).decode("utf-8")
            stem = stem[: len(stem) - cut] if cut else stem
            break
        except UnicodeDecodeError:
            continue
    return os.fsdecode(stem + b"~" + digest + ext)


def derived(name: str) -> tuple[str, ...]:
    """Every name the daemon may create from ``name`` in one directory."""
    return (name, name + SIDECAR, f".{name}.output", f".{name}.state.json", name + ".summary.json",
            name + ".reason.txt", os.path.basename(default_output_path(name)))


@attrs.define
class WatchDir:
    """The paths of one watch directory, and the facts about its filesystem the rules need."""

    directory: str
    incoming: str
    processing: str
    done: str
    failed: str
    #: ``st_dev`` of processing/: inputs must be stored on it (set by :meth:`create`).
    device: int | None = None
    name_max: int = 255

    @classmethod
    def at(cls, directory: str) -> WatchDir:
        directory = os.path.abspath(directory)
        incoming, processing, done, failed = (os.path.join(directory, sub) for sub in SUBDIRS)
        return cls(directory, incoming, processing, done, failed)

    def create(self) -> None:
        """Make the subdirectories; learn the device and the longest name allowed."""
        for path in (self.incoming, self.processing, self.done, self.failed):
            os.makedirs(path, exist_ok=True)
        self.device = os.stat(self.processing).st_dev
        with contextlib.suppress(OSError, ValueError):
            self.name_max = min(os.pathconf(d, "PC_NAME_MAX") for d in (self.processing, self.done, self.failed))

    def output_path(self, name: str) -> str:
        """Where the batch of processing/NAME writes its output."""
        return os.path.join(self.processing, f".{name}.output")

    def state_path(self, name: str) -> str:
        """Where a claim records its batch id and original name, for a restart."""
        return os.path.join(self.processing, f".{name}.state.json")

    def free_name(self, name: str, *directories: str) -> str:
        """``name`` or ``STEM-N.EXT``, such that none of its derived names exists in ``directories``."""
        stem, ext = os.path.splitext(name)
        candidate = name
        for n in range(2, FREE_NAME_TRIES):
            paths = (os.path.join(d, one) for d in directories for one in derived(candidate))
            if not any(os.path.lexists(path) for path in paths):
                return candidate
            candidate = f"{stem}-{n}{ext}"
        return f"{stem}-{uuid.uuid4().hex[:8]}{ext}"

    def rename_free(self, src: str, name: str, directory: str, *others: str) -> str:
        """Move ``src`` into ``directory`` under :meth:`free_name` (free there and in ``others``),
        never replacing a file; the name it got. FileNotFoundError when ``src`` is gone."""
        for _ in range(FREE_NAME_TRIES):
            final = self.free_name(name, directory, *others)
            try:
                rename_noreplace(src, os.path.join(directory, final))
                return final
            except FileExistsError:  # taken between the check and the rename: the next free name
                continue
        raise FileExistsError(errno.EEXIST, f"no free name in {os.path.basename(directory)}/", src)

    def write_state(self, name: str, batch_id: str, original: str, now: float) -> None:
        write_atomically(self.state_path(name), json.dumps(
            {"batch_id": batch_id, "original_name": original, "claimed_at": now}))

    def read_state(self, name: str) -> dict[str, Any]:
        """The state file of processing/NAME; ``{}`` when it is missing or not ours."""
        try:
            state = json.loads(read_small(self.state_path(name)))
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError, RecursionError, Rejected):
            return {}

"""Filing a file away: to ``done/`` with its output and summary, or to ``failed/`` with its reason.

Moves never replace a name (a taken name gets ``-N``), summaries and reasons are written
through ``mkstemp`` and are no more readable than the input. A new record beside a finished
file (another ``NAME.something``) is written here, and its name added to :func:`.layout.derived`.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import uuid
from typing import Any

import txaio

from ..options import default_output_path
from ..pipeline.summary import Summary
from .claims import Job
from .files import move, shown, unlink, write_atomically
from .layout import READY, SIDECAR, WatchDir, short_name

txaio.use_twisted()
log = txaio.make_logger()


def summary_record(job: Job, summary: Summary, input_path: str, output_path: str) -> dict[str, Any]:
    """What ``NAME.summary.json`` says about a finished file."""
    stats, config = job.entry.stats, job.entry.config
    return {
        "batch_id": stats.batch_id, "name": job.name, "input": input_path, "output": output_path,
        "original_name": job.original or job.name,
        "lines": summary.lines, "succeeded": summary.succeeded, "failed": summary.failed,
        "retried": summary.retried, "not_processed": summary.not_processed,
        "elapsed": round(summary.elapsed, 3), "lines_per_s": round(summary.rate, 1),
        "errors_by_kind": dict(stats.errors_by_kind), "stopped_early": summary.stopped_early,
        "exit_code": summary.exit_code, "started": stats.started, "finished": stats.finished,
        "restarted": job.restarted, "resumed": summary.resumed,
        "settings": None if config is None else {
            "deployment_name": config.deployment_name, "host": config.host, "transport": config.transport,
            "data_type": config.data_type, "payload_type": config.payload_type, "workers": config.workers,
            "batch_size": config.batch_size, "retries": config.retries},
    }


def _mode(job: Job) -> int:
    """Summaries and reasons are no more readable than the input."""
    return stat.S_IMODE(job.st.st_mode) & 0o666 if job.st is not None else 0o600


def settle(dirs: WatchDir, job: Job, directory: str) -> tuple[str, str, str]:
    """Move input, output and sidecar of ``job`` into ``directory``; its name there, its path, its output's."""
    final = dirs.rename_free(os.path.join(dirs.processing, job.name), job.name, directory)
    job.settled = True
    base = os.path.join(directory, final)
    output = os.path.join(directory, os.path.basename(default_output_path(final)))
    try:
        if not move(dirs.output_path(job.name), output):
            output = ""
    except FileExistsError:
        output = os.path.join(directory, f".{final}.{uuid.uuid4().hex[:8]}.out")
        move(dirs.output_path(job.name), output)
    with contextlib.suppress(FileExistsError):
        move(os.path.join(dirs.processing, job.name + SIDECAR), base + SIDECAR)
    unlink(dirs.state_path(job.name))
    job.entry.source, job.entry.output = base, output or None
    return final, base, output


def file_done(dirs: WatchDir, job: Job, summary: Summary) -> None:
    """Every line has its output line: to done/ with a summary (to failed/ if it cannot move)."""
    record = summary_record(job, summary, "", "")
    try:
        final, base, output = settle(dirs, job, dirs.done)
    except OSError as e:
        file_failed(dirs, job, f"cannot move it to done/: {e}", summary)
        return
    record.update(input=base, output=output)
    try:
        write_atomically(base + ".summary.json", json.dumps(record, indent=2) + "\n", _mode(job))
        job.entry.summary_file = base + ".summary.json"  # the dashboard's download link serves it
    except OSError as e:
        log.warn("{name}: could not write its summary: {error}", name=shown(final), error=e)
    log.info("{name} done: {summary}", name=shown(final), summary=summary.text())


def file_failed(dirs: WatchDir, job: Job, reason: str, summary: Summary | None = None) -> None:
    """To failed/ with its reason (and summary if it ran); a file that cannot move stays where it is.

    The reason is written first (the smaller, the one a person needs) and each write that fails is
    logged as what it is: a full disk loses neither the reason (it is in the log) nor the truth.
    """
    stats = job.entry.stats
    stats.fail(reason)
    record = None if summary is None else summary_record(job, summary, "", "")
    try:
        if not job.settled:
            final, base, output = settle(dirs, job, dirs.failed)
        else:  # moved to done/ already; the failure is about what came after
            final = os.path.basename(job.entry.source or job.name)
            base, output = job.entry.source or "", job.entry.output or ""
    except Exception as e:  # noqa: BLE001 - the service remembers the file so it is not taken again
        log.warn("could not move {name} to failed/ ({error}); reason: {reason}", name=shown(job.name),
                 error=e, reason=reason)
        return
    try:
        write_atomically(base + ".reason.txt", reason + "\n", _mode(job))
    except OSError as e:
        log.warn("{name} failed, but its reason could not be written beside it ({error}); reason: {reason}",
                 name=shown(final), error=e, reason=reason)
        return
    if record is not None:
        record.update(input=base, output=output)
        try:
            write_atomically(base + ".summary.json", json.dumps(record, indent=2) + "\n", _mode(job))
        except OSError as e:
            log.warn("{name}: could not write its summary: {error}", name=shown(final), error=e)
    log.warn("{name} failed: {reason}", name=shown(final), reason=reason)


def file_away(dirs: WatchDir, directory: str, name: str, reason: str, mode: int) -> str:
    """Move a file never run (with its sidecar) from ``directory`` straight to failed/ and write its
    reason; its path there. FileNotFoundError when it is gone."""
    src = os.path.join(directory, name)
    final = dirs.rename_free(src, short_name(name, dirs.name_max), dirs.failed)
    base = os.path.join(dirs.failed, final)
    with contextlib.suppress(FileExistsError):
        move(src + SIDECAR, base + SIDECAR)
    if directory == dirs.incoming:
        unlink(src + READY)
    bits = stat.S_IMODE(mode) & 0o666 if stat.S_ISREG(mode) else 0
    write_atomically(base + ".reason.txt", reason + "\n", bits or 0o600)
    return base


def file_finished(dirs: WatchDir, job: Job, summary: Summary, *, stopping: bool) -> None:
    """Where a file goes once its batch has run: done/ only when every line has its output line;
    kept in processing/ when the daemon's stop cut it short (it resumes at the next start)."""
    if stopping and summary.not_processed > 0:
        job.kept = True
        job.entry.stats.reason = "stopped with the daemon; it resumes when the daemon starts again"
        log.info("{name} stays in processing/ for the next start", name=shown(job.name))
    elif summary.stopped_early:
        file_failed(dirs, job, summary.stopped_early, summary)
    elif summary.not_processed > 0:
        file_failed(dirs, job, f"{summary.not_processed} line(s) got no output line (see the daemon's log)", summary)
    else:
        job.entry.stats.conclude(summary)  # done: every line written, even if a stop arrived at the very end
        file_done(dirs, job, summary)

"""Fair turns between files: no file, however slow, blocks the files behind it.

A sidecar may slow its file down (``batch-interval``, ``max-rate``) within the limits of
:mod:`..bounds`, and a big file at a modest rate still takes days. So a file that has run
``--file-time-slice`` seconds while other files wait yields its turn: its batch stops as on a
daemon stop (requests in flight get the drain time, its output so far is kept), it stays in
``processing/`` and is taken up again (resumed) only after the files that waited. Files left in
``processing/`` by a restart are taken first, but they too yield after one turn, so ``incoming/``
is never starved.
"""

from __future__ import annotations

from collections.abc import Iterable

import txaio

from .claims import Job
from .files import shown

txaio.use_twisted()
log = txaio.make_logger()

#: Why a yielded file is still in processing/ (shown on the dashboard).
YIELDED = "yielded its turn to the files waiting; it resumes after them"


class Turns:
    """Which running file has had its turn, and which left-over file is taken next."""

    def __init__(self, time_slice: float, clock: object, stop_grace: float | None = None) -> None:
        self.time_slice = time_slice
        self._clock = clock
        self._stop_grace = stop_grace
        self._started: dict[str, float] = {}
        self._yielding: set[str] = set()
        #: Files that yielded: taken up again only when no new file waits.
        self._behind: set[str] = set()

    def _now(self) -> float:
        return float(self._clock.seconds())  # type: ignore[attr-defined]

    def begin(self, job: Job) -> None:
        self._started[job.name] = self._now()
        self._behind.discard(job.name)

    def yielding(self, job: Job) -> bool:
        """Whether ``job`` was stopped because its turn was over (it is kept in processing/)."""
        return job.name in self._yielding

    def end(self, job: Job) -> None:
        self._started.pop(job.name, None)
        if job.name in self._yielding:
            self._yielding.discard(job.name)
            if job.kept:
                self._behind.add(job.name)
                job.entry.stats.reason = YIELDED
                log.info("{name} yielded its turn; it resumes after the files waiting", name=shown(job.name))

    def take(self, running: Iterable[Job], others_wait: bool, slots: int) -> None:
        """Stop every file whose turn is over, if other files wait and every slot is taken."""
        running = list(running)
        if not others_wait or len(running) < slots:
            return
        now = self._now()
        for job in running:
            started = self._started.get(job.name)
            if job.batch is None or started is None or job.name in self._yielding:
                continue
            if now - started >= self.time_slice:
                self._yielding.add(job.name)
                log.info("{name} had its turn of {slice} s while other files wait: it yields and resumes after "
                         "them", name=shown(job.name), slice=self.time_slice)
                job.batch.stop(f"its turn of {self.time_slice:g} s is over while other files wait",
                               self._stop_grace)

    def next_orphan(self, orphans: list[Job], others_wait: bool) -> Job | None:
        """The left-over file to take now (removed from ``orphans``), or None: one that yielded its
        turn waits until no new file does."""
        job = next((j for j in orphans if j.name not in self._behind), None)
        if job is None and orphans and not others_wait:
            job = orphans[0]
        if job is not None:
            orphans.remove(job)
        return job

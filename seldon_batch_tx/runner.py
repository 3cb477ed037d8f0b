"""One batch as a service tree, the same for ``seldon-batch-processor`` and ``twistd seldon-batch``.

:func:`service_tree` wires the registry's readers and writers: the dashboard (when asked), the
stderr progress bar (the command's) and the work, :class:`OneBatchService` for one input file.
How a run ended becomes an :class:`Outcome` here only: the exit status, the summary line, the
``--benchmark`` line, or the refusal of an output that cannot be used. The command prints it and
leaves through ``task.react`` (:mod:`.cli`); the daemon logs it and sets twistd's exit status
(:mod:`.tap`).

The batch is made in ``startService`` once the reactor runs (twistd may fork between building the
tree and starting it); the dashboard comes before it in the tree, so a port that cannot be bound
stops the start before any output is opened.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import attrs
import txaio
from twisted.application import service
from twisted.internet.defer import Deferred, succeed

from .config import BatchConfig
from .dashboard.registry import BatchEntry, BatchRegistry
from .exits import EXIT_FAILED_LINES, EXIT_STOPPED, EXIT_UNREACHABLE, EXIT_USAGE
from .pipeline.stats import BatchStats
from .pipeline.summary import BENCHMARK, Summary
from .redaction import batch_name, is_url

txaio.use_twisted()
log = txaio.make_logger()


@attrs.frozen
class Outcome:
    """How one batch ended, for whoever reports it."""

    code: int
    #: The summary line (``Summary.text``), when the batch ran.
    summary: str | None = None
    #: The fields of :data:`BENCHMARK`, with ``--benchmark``.
    benchmark: dict[str, Any] | None = None
    #: Why the output was refused before anything was sent, or the store failed (one line), for
    #: ``PROG: error: ...`` (exit ``code``).
    refusal: str | None = None

    def lines(self) -> list[str]:
        """The summary and benchmark lines as the command prints them."""
        shown = [self.summary] if self.summary is not None else []
        if self.benchmark is not None:
            shown.append(BENCHMARK.format(**self.benchmark))
        return shown


def ran(summary: Summary, config: BatchConfig) -> Outcome:
    """The outcome of a batch that ran: its exit status, its summary and, if asked, the benchmark."""
    benchmark = None
    if config.benchmark:
        benchmark = {"elapsed": summary.elapsed, "lines": summary.lines, "rate": summary.rate,
                     "workers": config.workers, "size": config.batch_size}
    return Outcome(summary.exit_code, summary.text(), benchmark)


def downloadable(output: str) -> str | None:
    """The output file the dashboard may offer: a local file by its absolute path; none for ``-o -``
    (never a file named ``-`` in the working directory) nor for a URL (staged, then uploaded)."""
    if output == "-" or is_url(output):
        return None
    return os.path.abspath(output)


class OneBatchService(service.Service):
    """Runs one input file; :meth:`when_finished` tells how it ended. Stopping it stops the batch
    (requests in flight get ``--drain-timeout``) and waits for the output to be closed."""

    def __init__(self, config: BatchConfig, reactor: Any, registry: BatchRegistry) -> None:
        self._config = config
        self._reactor = reactor
        self._registry = registry
        #: The batch's counters, there from the start for the progress bar (the batch fills them).
        self.stats = BatchStats(config.batch_id, batch_name(config.input_data_path))
        self._batch: Any = None
        self._stopping = False
        self._outcome: Outcome | None = None
        self._waiting: list[Deferred[Outcome]] = []

    def when_finished(self) -> Deferred[Outcome]:
        """A new Deferred firing with the outcome (each caller gets its own)."""
        if self._outcome is not None:
            return succeed(self._outcome)
        waiting: Deferred[Outcome] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        self._reactor.callWhenRunning(self._start)

    def _start(self) -> None:
        if self._stopping:
            return
        from .pipeline.batch import Batch

        config = self._config
        try:
            self._batch = Batch(config, self._reactor, stats=self.stats)
        except Exception:  # noqa: BLE001 - without this the reactor would run on with nothing to do
            log.failure("batch {batch_id} could not start", batch_id=config.batch_id)
            self._finish(Outcome(EXIT_FAILED_LINES))
            return
        entry = self._registry.add(self.stats, config=config, source=config.input_data_path,
                                   output=downloadable(config.output_data_path))
        Deferred.fromCoroutine(self._run(entry))

    async def _run(self, entry: BatchEntry) -> None:
        from .outputs.resume import ResumeError
        from .outputs.writer import OutputRefused
        from .storage.paths import StorageError, StorageUnavailable

        unreachable = await self._ready()
        if unreachable is not None:
            self._finish(Outcome(EXIT_UNREACHABLE, refusal=unreachable))
            return
        try:
            summary = await self._batch.run()
        except StorageUnavailable as e:  # the store failed (a resume's download): one line, exit 3
            outcome = Outcome(EXIT_STOPPED, refusal=" ".join(str(e).splitlines()))
        except (ResumeError, OutputRefused, StorageError) as e:  # not resumable, held, unreadable: nothing sent
            outcome = Outcome(EXIT_USAGE, refusal=" ".join(str(e).splitlines()))
        except Exception:  # noqa: BLE001 - reported, then the process exits non-zero
            log.failure("batch {batch_id} failed", batch_id=self._config.batch_id)
            outcome = Outcome(EXIT_FAILED_LINES)
        else:
            entry.finish(self._reactor.seconds(), summary)
            outcome = ran(summary, self._config)
        self._finish(outcome)

    async def _ready(self) -> str | None:
        """Before the output is opened: the model answers (``None``), else why not, in one line.

        ``--wait-ready`` waits for it (shown as the batch's reason meanwhile); a stop ends the wait.
        """
        from .pipeline.readiness import wait_ready

        config = self._config
        if config.wait_ready > 0:
            self.stats.reason = f"waiting up to {config.wait_ready:g} s for the model to be ready"
        try:
            reason = await wait_ready(config, self._reactor, config.wait_ready, stopped=lambda: self._stopping)
        except Exception:  # noqa: BLE001 - a bug in the check must not hold the run: its requests will tell
            log.failure("batch {batch_id}: the readiness check failed; sending anyway", batch_id=config.batch_id)
            reason = None
        self.stats.reason = None
        if reason is None:
            return None
        self.stats.fail(reason)
        return (f"the model is not reachable: {reason}" + (f" (waited {config.wait_ready:g} s)"
                                                           if config.wait_ready > 0 else ""))

    def _finish(self, outcome: Outcome) -> None:
        self._outcome = outcome
        waiting, self._waiting = self._waiting, []
        for each in waiting:
            each.callback(outcome)

    def stopService(self) -> Deferred[None]:  # noqa: N802 - Twisted's name
        super().stopService()
        self._stopping = True
        if self._batch is not None and self._outcome is None:
            self._batch.stop("interrupted by a signal")
        return self.when_finished().addCallback(lambda _: None) if self._batch is not None else succeed(None)


def service_tree(work: service.IService, *others: service.IService | None) -> service.MultiService:
    """``others`` (the dashboard, the progress bar; None for one not asked for), then ``work``, under one
    parent: started in that order, so a dashboard that cannot listen fails the start before the work."""
    top = service.MultiService()
    children: Iterable[service.IService | None] = (*others, work)
    for child in children:
        if child is not None:
            child.setServiceParent(top)
    return top

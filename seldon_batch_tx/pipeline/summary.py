"""What a finished run reports: the :class:`Summary` every caller prints or records, its exit
status (from :mod:`seldon_batch_tx.exits`), and :func:`describe`, the one way an exception is
named in an error line or a stop reason."""

from __future__ import annotations

import attrs

from ..exits import EXIT_FAILED_LINES, EXIT_OK, EXIT_STOPPED
from .stats import BatchStats

#: The ``--benchmark`` line: printed by the command, logged (with its fields) by the daemon.
BENCHMARK = ("Benchmark: elapsed time {elapsed:.3f} s for {lines} lines, {rate:.1f} lines/s, "
             "{workers} workers, batch size {size}")

#: Longest exception text kept in an ``internal_error`` reason (messages can quote whole bodies).
MAX_REASON_CHARS = 500
#: Longest sample reason per error kind in the summary line, and how many kinds it names.
SAMPLE_CHARS = 160
MAX_KINDS_SHOWN = 8


def error_kinds(stats: BatchStats) -> tuple[tuple[str, int, str], ...]:
    """(kind, lines, one sample reason) of this run's error lines, the commonest first."""
    return tuple((kind, count, stats.error_samples.get(kind, ""))
                 for kind, count in stats.errors_by_kind.most_common(MAX_KINDS_SHOWN))


def kinds_text(kinds: tuple[tuple[str, int, str], ...]) -> str:
    """``connection x1000 (cannot connect to ...), http_400 x2 (...)``: why lines failed, in short."""
    shown = []
    for kind, count, sample in kinds:
        sample = " ".join(sample.split())
        if len(sample) > SAMPLE_CHARS:
            sample = sample[:SAMPLE_CHARS] + "..."
        shown.append(f"{kind} x{count}" + (f" ({sample})" if sample else ""))
    return ", ".join(shown)


def describe(error: BaseException) -> str:
    """``TypeName: message`` of an exception, cut to :data:`MAX_REASON_CHARS` for an error line."""
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - an exception whose message itself fails still gets a line
        message = "(its message could not be read)"
    text = f"{type(error).__name__}: {message}"
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "..."


@attrs.frozen
class Summary:
    """What a finished run reports and how the process should exit."""

    lines: int
    succeeded: int
    failed: int
    retried: int
    not_processed: int
    elapsed: float
    stopped_early: str | None
    #: Lines already in the output when a resumed run started (counted in succeeded/failed).
    resumed: int = 0
    #: (kind, lines, a sample reason) of the error lines this run wrote.
    errors: tuple[tuple[str, int, str], ...] = ()
    #: False when the input's line count is unknown (not counted, and the run stopped before its
    #: end): ``lines`` is then the lines with an output line, never an estimate.
    total_known: bool = True

    @classmethod
    def of(cls, stats: BatchStats, stopped_early: str | None) -> Summary:
        """The summary of a run whose counters are ``stats`` (finished: ``stats.finished`` is set)."""
        done = stats.done
        total = None if stats.total_estimated else stats.total
        return cls(
            lines=total if total is not None else done,
            succeeded=stats.succeeded, failed=stats.failed, retried=stats.retries,
            not_processed=max((total or done) - done, 0),
            elapsed=stats.elapsed(stats.finished or 0.0), stopped_early=stopped_early,
            resumed=stats.resumed, total_known=not stats.total_estimated, errors=error_kinds(stats),
        )

    @property
    def rate(self) -> float:
        return (self.succeeded + self.failed - self.resumed) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """3 stopped early; 1 when any line failed or has no output line; else 0.

        A run that was not stopped yet left lines without an output line broke the engine's
        promise: that is never success, whatever the counts of failed lines say.
        """
        if self.stopped_early:
            return EXIT_STOPPED
        return EXIT_FAILED_LINES if self.failed or self.not_processed else EXIT_OK

    def text(self) -> str:
        stopped = f", stopped early: {self.stopped_early}" if self.stopped_early else ""
        missing = (" (these lines have no output line: an error; --resume sends them again)"
                   if self.not_processed and not self.stopped_early else "")
        resumed = f" ({self.resumed} from an earlier run)" if self.resumed else ""
        lines = f"{self.lines} lines" if self.total_known else \
            f"{self.lines} lines of an input whose total is unknown (it was not read to its end)"
        why = f": {kinds_text(self.errors)};" if self.errors else ","
        return (f"{lines}{resumed}: {self.succeeded} succeeded, {self.failed} failed{why} "
                f"{self.retried} retries, {self.not_processed} not processed{missing}{stopped}; "
                f"{self.elapsed:.2f} s, {self.rate:.1f} lines/s")

"""One batch from file to file: opens what the engine needs, runs it, closes everything.

The command line, the daemon and the tests all run batches through :class:`Batch`, so a file
is always read, written and summarised the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import txaio
from twisted.internet.task import LoopingCall

from .config import BatchConfig
from .engine import BatchRun, Summary
from .reader import count_lines, read_items
from .resume import ResumeError, prepare_resume
from .stats import BatchStats
from .transport import Transport
from .writer import LineWriter

log = txaio.make_logger()


def make_transport(config: BatchConfig, reactor: Any) -> Transport:
    """The transport ``config.transport`` names; gRPC is imported only when asked for."""
    if config.transport == "grpc":
        from .transport_grpc import GrpcTransport

        return GrpcTransport(config, reactor)
    if config.http_client == "fast":
        from .transport_http import FastHttpTransport

        return FastHttpTransport(config, reactor)
    from .transport_rest import RestTransport

    return RestTransport(config, reactor)


def all_of(predicates: list[Callable[[int], bool]]) -> Callable[[int], bool] | None:
    """One ``wanted`` predicate from several (shard and resume filters), None when there are none."""
    if not predicates:
        return None
    if len(predicates) == 1:
        return predicates[0]
    return lambda index: all(p(index) for p in predicates)


class Batch:
    """A batch job with live :class:`BatchStats` and a graceful :meth:`stop`."""

    def __init__(self, config: BatchConfig, reactor: Any, *, stats: BatchStats | None = None,
                 transport: Transport | None = None, name: str | None = None) -> None:
        self.config = config
        self._reactor = reactor
        self.stats = stats or BatchStats(config.batch_id, name or os.path.basename(config.input_data_path))
        self._transport = transport or make_transport(config, reactor)
        self._run: BatchRun | None = None
        self._stop_reason: str | None = None
        self._abandon_call: Any = None

    async def run(self) -> Summary:
        config, stats = self.config, self.stats
        lines = input_lines = count_lines(config.input_data_path)
        # Lines this run skips: other shards' (--shard-index/--shard-count); a resume adds its own.
        wanted: list[Callable[[int], bool]] = []
        if config.shard_count > 1:
            index, count = config.shard_index, config.shard_count
            wanted.append(lambda i: i % count == index)
            lines = len(range(index, lines, count))
        stats.total = lines
        resuming = config.resume or config.retry_failed
        if resuming:
            try:
                state = prepare_resume(config.output_data_path, config.batch_id if config.batch_id_given else None,
                                       retry_failed=config.retry_failed, size_hint=input_lines)
            except (ResumeError, OSError) as e:
                stats.state, stats.reason = "failed", str(e)
                raise
            if state is not None:
                # Same batch id as the lines already written; only lines without an output line are sent.
                self.config = config = config.replace(batch_id=state.batch_id)
                stats.batch_id = state.batch_id
                wanted.append(state.pending)
                stats.succeeded, stats.failed = state.succeeded, state.failed
                stats.resumed = state.succeeded + state.failed
        self._transport.start()
        writer = LineWriter(config.output_data_path, append=resuming, fsync_interval=config.fsync_interval)
        flusher = LoopingCall(lambda: writer.flush(self._reactor.seconds()))
        flusher.clock = self._reactor
        flusher.start(min(1.0, config.fsync_interval or 1.0), now=False)
        log.info("batch {batch_id}: {total} lines from {path} to {model} over {transport}",
                 batch_id=config.batch_id, total=stats.total, path=config.input_data_path,
                 model=config.deployment_name, transport=config.transport)
        try:
            with open(config.input_data_path, "rb") as stream:
                self._run = BatchRun(config, read_items(stream, config.batch_id, all_of(wanted)),
                                     self._transport, writer, stats, self._reactor)
                if self._stop_reason:
                    self._run.stop(self._stop_reason)
                summary = await self._run.run()
        except BaseException as e:
            stats.state, stats.reason = "failed", str(e)
            raise
        finally:
            flusher.stop()
            writer.close()
            if self._abandon_call is not None and self._abandon_call.active():
                self._abandon_call.cancel()
            await self._transport.stop()
        log.info("batch {batch_id} finished: {summary}", batch_id=config.batch_id, summary=summary.text())
        return summary

    def stop(self, reason: str, grace: float | None = None) -> None:
        """Take no new lines; give requests in flight ``grace`` seconds (``--drain-timeout``), then
        abandon them: they write nothing, so a ``--resume`` sends them again."""
        if grace is None:
            grace = self.config.drain_timeout
        self._stop_reason = reason
        if self._run is None:
            return
        self._run.stop(reason)
        if self._abandon_call is None:
            self._abandon_call = self._reactor.callLater(grace, self._run.abandon)

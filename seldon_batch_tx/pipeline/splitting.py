"""One unit's lines as requests, so that an error line means THAT line failed.

A unit (``--batch-size`` lines) usually becomes one request answered once: the engine sends it
itself (one ``build``, one ``send``, nothing more per line) and comes here only when it must.

Then:

* lines that do not fit the first line's request (shape, datatype, ``--max-batch-rows``, the
  model's own row limit) are not failed: the codec leaves them out and they make the next request;
* a request of several lines refused as a whole for what it carries (HTTP 400/422, gRPC
  INVALID_ARGUMENT, a body the transport cannot encode or send) or whose answer cannot be carried
  back (a row holding ``inf``, rows that do not add up) is split in halves, recursively, until
  the offending lines stand alone: they get the error line, the others their answers.

A split is not a retry: each half gets the full ``--retries`` budget for server faults, and a
unit of n lines costs at most 2n - 1 requests however many of its lines are bad (plus the retries
of a line alone whose model exception, ``split_first``, may be passing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import txaio

from ..core.failures import RequestFailed
from ..protocols.base import Codec, Parsed
from .emitter import Record

log = txaio.make_logger()

#: Sends one request body for these lines: their records, the final failure, or None when stopping.
Send = Callable[[dict[str, Any], list[Parsed]], Awaitable["list[Record] | RequestFailed | None"]]
#: One request's lines and how it ended.
Answered = tuple[list[Parsed], "list[Record] | RequestFailed"]

#: Failures that are about what a request carries or what its answer holds, not a server fault
#: (the Seldon microservice answers a model's exception, a refused value too, with a non-retryable
#: gRPC UNKNOWN "Exception calling application", or over REST with a 500 MICROSERVICE_INTERNAL_ERROR
#: that is ``split_first``: one line alone is still retried; a request or an answer past a size limit:
#: HTTP 413, gRPC RESOURCE_EXHAUSTED, ours). Only the non-retryable and ``split_first`` ones split: a
#: 500 or RESOURCE_EXHAUSTED of an overloaded server is retried.
SPLIT_KINDS = frozenset({"http_400", "http_413", "http_422", "http_500", "grpc_INVALID_ARGUMENT", "grpc_UNKNOWN",
                         "grpc_RESOURCE_EXHAUSTED", "input_error", "input_too_large", "response_too_large",
                         "bad_response", "response_mismatch"})


def splittable(failure: RequestFailed, lines: int) -> bool:
    """Whether halving the request may isolate the lines to blame (never for a server fault)."""
    return lines > 1 and (not failure.retryable or failure.split_first) and failure.kind in SPLIT_KINDS


async def carry_on(codec: Codec, send: Send, members: list[Parsed], outcome: list[Record] | RequestFailed,
                   rest: list[tuple[Parsed, str]], stopping: Callable[[], bool],
                   enough_failed: Callable[[int], bool] = lambda failed: False) -> list[Answered]:
    """The unit's lines answered, from how its first request (``members``) ended and the lines it
    left out (``rest``); stops early (lines left without an outcome, for ``--resume``) when the run
    is stopping: ``stopping()`` before a further request, or ``send`` saying so, or once the lines
    failed so far will stop the run when written (``enough_failed(n)``: ``--max-failures``)."""
    answered: list[Answered] = []
    failed = 0
    pending: list[list[Parsed]] = [[p for p, _ in rest]] if rest else []
    while True:
        if isinstance(outcome, RequestFailed) and splittable(outcome, len(members)):
            log.debug("lines {first}..{last} refused together ({kind}): split in halves", first=members[0].item.index,
                      last=members[-1].item.index, kind=outcome.kind)
            half = len(members) // 2
            pending += [members[half:], members[:half]]  # the first half is sent first
        else:
            answered.append((members, outcome))
            failed += len(members) if isinstance(outcome, RequestFailed) else 0
        if not pending or stopping() or enough_failed(failed):
            return answered  # when stopping, a further request of this unit waits for the resume
        body, members, more = codec.build(pending.pop())
        if more:
            pending.append([p for p, _ in more])  # another request, after this one
        sent = await send(body, members)
        if sent is None:
            return answered  # stopping: what is not answered yet stays for a resume
        outcome = sent

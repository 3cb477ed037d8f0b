"""One unit's lines as requests, so that an error line means THAT line failed.

A unit (``--batch-size`` lines) usually becomes one request answered once: that path costs one
``build`` and one ``send``, nothing per line. Otherwise:

* lines that do not fit the first line's request (shape, datatype, ``--max-batch-rows``, the
  model's own row limit) are not failed: the codec leaves them out and they make the next request;
* a request of several lines refused as a whole for what it carries (HTTP 400/422, gRPC
  INVALID_ARGUMENT, a body the transport cannot encode or send) or whose answer cannot be carried
  back (a row holding ``inf``, rows that do not add up) is split in halves, recursively, until
  the offending lines stand alone: they get the error line, the others their answers.

A split is not a retry: each half gets the full ``--retries`` budget for server faults, and a
unit of n lines costs at most 2n - 1 requests however many of its lines are bad.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..protocols.base import Codec, Parsed
from ..transports.base import RequestFailed

Record = dict[str, Any]
#: Sends one request body for these lines: their records, the final failure, or None when stopping.
Send = Callable[[dict[str, Any], list[Parsed]], Awaitable["list[Record] | RequestFailed | None"]]
#: One request's lines and how it ended.
Answered = tuple[list[Parsed], "list[Record] | RequestFailed"]

#: Failures that are about what a request carries or what its answer holds, not a server fault
#: (the Seldon microservice's gRPC answers a model's exception, a refused value too, with a
#: non-retryable UNKNOWN "Exception calling application").
SPLIT_KINDS = frozenset({"http_400", "http_422", "grpc_INVALID_ARGUMENT", "grpc_UNKNOWN", "input_error",
                         "input_too_large", "bad_response", "response_mismatch"})


def splittable(failure: RequestFailed, lines: int) -> bool:
    """Whether halving the request may isolate the lines to blame (never for a retryable fault)."""
    return lines > 1 and not failure.retryable and failure.kind in SPLIT_KINDS


async def deliver(codec: Codec, send: Send, parsed: list[Parsed], stopping: Callable[[], bool]) -> list[Answered]:
    """Every line of ``parsed`` answered by some request; stops early (lines left without an
    outcome, for ``--resume``) when the run is stopping: ``send`` says so, or ``stopping()``
    before a further request."""
    answered: list[Answered] = []
    pending: list[list[Parsed]] = [parsed]
    sent = 0
    while pending:
        if sent and stopping():
            break  # a further request of this unit waits for the resume
        sent += 1
        group = pending.pop()
        body, members, rest = codec.build(group)
        if rest:
            pending.append([p for p, _ in rest])  # another request, after this one
        outcome = await send(body, members)
        if outcome is None:
            break  # stopping: what is not answered yet stays for a resume
        if isinstance(outcome, RequestFailed) and splittable(outcome, len(members)):
            half = len(members) // 2
            pending += [members[half:], members[:half]]  # the first half is sent first
            continue
        answered.append((members, outcome))
    return answered

"""The model's own limit on rows per request, where the server states it.

Triton answers ``GET /v2/models/NAME[/versions/V]/config`` with the model's configuration, whose
``max_batch_size`` is the most rows it takes in one request: a mini-batch of lines of several
rows each could pass it and be refused whole. Asked once per batch, before the first line, only
when it matters (``--protocol v2`` over REST with ``--batch-size`` over 1). A server without the
route (MLServer, KServe: 404), an answer without a positive ``max_batch_size`` (0: the model
does not batch), or no answer within :data:`ASK_SECONDS` means no limit beyond
``--max-batch-rows``. The readiness of the model is not judged here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import treq
import txaio
from twisted.internet.defer import Deferred
from twisted.web.client import Agent

from .. import strict_json
from ..config import BatchConfig
from ..protocols.base import Codec, gateway_prefix
from ..protocols.v2 import model_name
from ..transports.http import tls_policy
from ..transports.twisted_internals import abort_response
from .summary import describe

log = txaio.make_logger()

#: At most this long (and at most ``--timeout``) for the configuration's answer, body included.
ASK_SECONDS = 10.0
#: A model configuration is a few kilobytes; a larger answer is not one.
MAX_CONFIG_BYTES = 1024 * 1024


def config_url(config: BatchConfig) -> str:
    """Where a Triton-style server states the model's configuration."""
    version = f"/versions/{quote(config.model_version, safe='')}" if config.model_version else ""
    scheme = "https" if config.use_ssl else "http"
    return (f"{scheme}://{config.host}{gateway_prefix(config)}/v2/models/{quote(model_name(config), safe='')}"
            f"{version}/config")


def stated_limit(answer: Any) -> int | None:
    """``max_batch_size`` of a configuration answer when it is a positive integer, else None."""
    size = answer.get("max_batch_size") if isinstance(answer, dict) else None
    if isinstance(size, str) and size.isdigit() and len(size) < 10:  # protobuf JSON spells int64 as text
        size = int(size)
    return size if type(size) is int and size > 0 else None


async def model_row_limit(config: BatchConfig, reactor: Any) -> int | None:
    """The rows per request the model takes at most, as its server states it; None if it does not."""
    if config.protocol != "v2" or config.transport != "rest" or config.batch_size == 1:
        return None
    url = config_url(config)
    headers: dict[bytes | str, list[bytes | str]] = {}
    if config.call_credentials_token:
        headers["X-Auth-Token"] = [config.call_credentials_token]
    for name, value in config.headers:
        headers.setdefault(name, []).append(value)
    agent = Agent(reactor, contextFactory=tls_policy(config))
    d: Deferred[bytes] = Deferred.fromCoroutine(_fetch(agent, url, headers))
    d.addTimeout(min(ASK_SECONDS, config.timeout), reactor)
    try:
        body = await d
        return stated_limit(strict_json.decode(body, any_encoding=True)) if body else None
    except Exception as e:  # noqa: BLE001 - no stated limit; the run goes on and the model decides
        log.debug("no row limit from {url}: {error}", url=url, error=describe(e))
        return None


async def _fetch(agent: Agent, url: str, headers: dict[bytes | str, list[bytes | str]]) -> bytes:
    """The body of a 200 answer (at most :data:`MAX_CONFIG_BYTES`), else empty."""
    response = await treq.request("GET", url, headers=headers, agent=agent, allow_redirects=False, unbuffered=True)
    if response.code != 200:
        abort_response(response)  # no body wanted: the connection is dropped, not drained
        return b""
    chunks: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > MAX_CONFIG_BYTES:
            raise ValueError(f"the configuration is larger than {MAX_CONFIG_BYTES} bytes")
        chunks.append(data)

    try:
        await treq.collect(response, collect)
    except BaseException:
        abort_response(response)  # too large, cancelled by the timeout: never read to its end
        raise
    return b"".join(chunks)


def apply_row_limit(codec: Codec, limit: int | None, model: str) -> None:
    """Cap the codec's rows per request at the model's stated ``limit`` (``--max-batch-rows`` may be lower)."""
    if limit is None:
        return
    if codec.max_rows is None or limit < codec.max_rows:
        codec.max_rows = limit
    log.info("model {model} takes at most {limit} rows per request (its max_batch_size): requests hold at "
             "most {rows}", model=model, limit=limit, rows=codec.max_rows)

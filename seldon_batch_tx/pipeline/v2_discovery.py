"""Before a V2 run: read the model's metadata, so that requests fit the model without options.

:func:`discover_v2_model` asks the server what the model takes (REST ``GET
[/seldon/NS/NAME]/v2/models/MODEL[/versions/V]`` and, where the server has it, Triton's
``.../config`` for ``max_batch_size``; gRPC ``inference.GRPCInferenceService/ModelMetadata``),
with the run's TLS settings, ``X-Auth-Token`` and ``--header`` values, within ``min(--timeout,
10 s)`` and :data:`~..protocols.v2_metadata.MAX_METADATA_BYTES`. It never fails the run: a server
without metadata (404, an answer that is not V2 metadata, no answer) gives None, and the run
builds its requests from the options as given, as before. What was found is logged in one line.
The pipeline calls it once per run (:meth:`.batch.Batch.run`); it is a function of its own so that
other checks before a run (a readiness probe) stay separate.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote

import attrs
import txaio

from ..config import BatchConfig
from ..core import strict_json
from ..protocols import base
from ..protocols.v2 import model_name
from ..protocols.v2_metadata import MAX_METADATA_BYTES, ModelMetadata, from_grpc, from_rest, max_batch_size_from_config
from ..redaction import Secrets
from .readiness import quiet, same

__all__ = ["discover_v2_model", "metadata_path"]

log = txaio.make_logger()  # type: ignore[attr-defined]

#: The longest wait for the metadata (the run's --timeout when shorter).
MAX_WAIT = 10.0


def metadata_path(config: BatchConfig) -> str:
    """The REST path of the model's metadata (gateway prefix, model and version as the codec's)."""
    version = f"/versions/{quote(config.model_version, safe='')}" if config.model_version else ""
    return f"{base.gateway_prefix(config)}/v2/models/{quote(model_name(config), safe='')}{version}"


async def discover_v2_model(config: BatchConfig, reactor: Any) -> ModelMetadata | None:
    """The model's metadata, or None (logged why) when the server does not give it."""
    wait = min(config.timeout, MAX_WAIT)
    where = f"{config.host} ({config.transport})"
    try:
        if config.transport == "grpc":
            message = await _grpc_metadata(config, reactor, wait)
            metadata = from_grpc(message)
        else:
            metadata = await _rest_metadata(config, reactor, wait)
    except _NoMetadata as e:  # the server's words: redacted here, as twistd's log redacts nothing itself
        log.info("V2 model {model}: no metadata from {where} ({why}); requests follow the options as given",
                 model=model_name(config), where=where, why=Secrets.of(config).text(str(e)))
        return None
    except Exception as e:  # noqa: BLE001 - never fails the run: the requests will say what is wrong
        log.info("V2 model {model}: metadata not read from {where} ({why}); requests follow the options as given",
                 model=model_name(config), where=where, why=Secrets.of(config).text(f"{type(e).__name__}: {e}"[:300]))
        return None
    log.info("V2 model {model} ({platform}): {found}", model=metadata.name, platform=metadata.platform or "?",
             found=metadata.describe())
    return metadata


class _NoMetadata(Exception):
    """The server answered, without metadata."""


async def _rest_metadata(config: BatchConfig, reactor: Any, wait: float) -> ModelMetadata:
    path = metadata_path(config)
    status, body = await _get(config, reactor, path, wait)
    if status != 200:
        raise _NoMetadata(f"HTTP {status}")
    try:
        metadata = from_rest(strict_json.decode(body, any_encoding=True))
    except ValueError as e:
        raise _NoMetadata(f"the answer is not V2 model metadata: {e}") from None
    try:  # Triton's model configuration: whether, and how many rows, the model batches
        status, body = await _get(config, reactor, path + "/config", wait)
        limit = max_batch_size_from_config(strict_json.decode(body, any_encoding=True)) if status == 200 else None
    except Exception:  # noqa: BLE001 - only Triton has it
        limit = None
    if limit is not None:
        metadata = attrs.evolve(metadata, max_batch_size=limit)
    return metadata


def _headers(config: BatchConfig) -> dict[bytes | str, list[bytes | str]]:
    headers: dict[bytes | str, list[bytes | str]] = {b"Accept": [b"application/json"]}
    if config.call_credentials_token:
        headers[b"X-Auth-Token"] = [config.call_credentials_token.encode()]
    for name, value in config.headers:
        headers.setdefault(name.encode(), []).append(value.encode())
    return headers


async def _get(config: BatchConfig, reactor: Any, path: str, wait: float) -> tuple[int, bytes]:
    """One GET (no redirects followed), its body bounded by MAX_METADATA_BYTES."""
    import treq
    from twisted.web.client import Agent

    from ..transports.http import tls_policy
    from ..transports.twisted_internals import abort_response, one_shot_pool

    url = f"{'https' if config.use_ssl else 'http'}://{config.host}{path}"
    client = treq.client.HTTPClient(Agent(reactor, contextFactory=tls_policy(config), pool=one_shot_pool(reactor)))
    response = await client.get(url, headers=_headers(config), timeout=wait, allow_redirects=False, unbuffered=True)
    parts: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > MAX_METADATA_BYTES:
            raise _NoMetadata(f"answer larger than {MAX_METADATA_BYTES} bytes")
        parts.append(data)

    if isinstance(response.length, int) and response.length > MAX_METADATA_BYTES:
        abort_response(response)
        raise _NoMetadata(f"answer larger than {MAX_METADATA_BYTES} bytes")
    try:
        await treq.collect(response, collect)
    except _NoMetadata:
        abort_response(response)
        raise
    return response.code, b"".join(parts)


async def _grpc_metadata(config: BatchConfig, reactor: Any, wait: float) -> Any:
    """One ``ModelMetadata`` call through the gRPC transport (the run's TLS, token and metadata;
    a transport of its own, stopped after)."""
    from ..core.failures import RequestFailed
    from ..core.target import Target
    from ..protocols.v2_pb import metadata_route
    from ..transports.choose import make_transport

    route = metadata_route(model_name(config), config.model_version)
    asking = config.replace(workers=1, grpc_channels=1, timeout=wait, connection_max_age=None)
    target = Target("grpc:ModelMetadata", functools.partial(same, route))
    transport = quiet(make_transport(asking, reactor, target=target))
    transport.start()
    try:
        answer = await transport.send({}, "metadata")
    except RequestFailed as e:
        raise _NoMetadata(e.reason[:200]) from None
    finally:
        await transport.stop()
    return answer["metadata"]

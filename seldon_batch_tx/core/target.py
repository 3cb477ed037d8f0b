"""Where a codec's requests go, as a transport needs to know it (and nothing more of the protocol)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from .strict_json import JSONDict


@attrs.frozen
class GrpcRoute:
    """What a gRPC transport needs of a protocol: the method, and the message conversions.

    ``method(channel, service)`` is the multi-callable (``service``: the transport's choice of
    ``Seldon``/``Model`` where the protocol has both); ``request(body)`` the protobuf message
    (ValueError when the body cannot be one); ``answer(message)`` the REST-shaped answer, or
    RequestFailed (a model failure, an unreadable message).
    """

    method: Callable[[Any, str], Any]
    request: Callable[[JSONDict], Any]
    answer: Callable[[Any], JSONDict]
    #: For logs: the gRPC service and method this route calls, when they are not the Seldon ones.
    service: str | None = None
    rpc: str | None = None


@attrs.frozen
class Target:
    """Where a codec's requests go: the REST path (gateway prefix included) and the gRPC route.

    The route is made on first use (``grpc_route()``), so REST runs never import gRPC. Over REST a
    protocol may also choose how a body is sent (``encode``: bytes and extra headers; default strict
    JSON) and how a 2xx answer is read (``decode``: the value and the JSON text it came from; default
    strict JSON), e.g. V2's binary tensors.
    """

    path: str
    grpc_route: Callable[[], GrpcRoute]
    encode: Callable[[JSONDict], tuple[bytes, tuple[tuple[str, str], ...]]] | None = None
    decode: Callable[[bytes], tuple[Any, bytes]] | None = None
    #: The REST body's Content-Type (what ``encode`` makes).
    content_type: str = "application/json"

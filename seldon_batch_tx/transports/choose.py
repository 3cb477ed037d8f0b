""":func:`make_transport`: the one place the transport is chosen, above the modules it chooses from."""

from __future__ import annotations

from typing import Any

from ..config import BatchConfig
from ..core.target import Target
from .base import Transport


def make_transport(config: BatchConfig, reactor: Any, target: Target) -> Transport:
    """The transport ``config.transport`` (and ``--http-client``) names, sending to ``target``
    (the codec's, from :func:`..protocols.choose.make_codec`); gRPC is imported only when asked for."""
    if config.transport == "grpc":
        from .grpc_client import GrpcTransport

        return GrpcTransport(config, reactor, target=target)
    if config.http_client == "fast":
        from .fast import FastHttpTransport

        return FastHttpTransport(config, reactor, target=target)
    from .treq_client import RestTransport

    return RestTransport(config, reactor, target=target)

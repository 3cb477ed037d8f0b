"""Where a test's transport sends: the codec's target, as the pipeline gives it to every transport."""

from __future__ import annotations

from typing import Any

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.target import Target
from seldon_batch_tx.protocols.choose import make_codec
from seldon_batch_tx.transports.fast import FastHttpTransport
from seldon_batch_tx.transports.grpc_client import GrpcTransport


def target_of(config: BatchConfig) -> Target:
    """The target the configured protocol's codec names (transports take it; they never choose it)."""
    return make_codec(config).target


def fast_transport(config: BatchConfig, reactor: Any, **kw: Any) -> FastHttpTransport:
    """The fast HTTP client for ``config``, sending where its codec says."""
    return FastHttpTransport(config, reactor, target=target_of(config), **kw)


def grpc_transport(config: BatchConfig, reactor: Any, **kw: Any) -> GrpcTransport:
    """The gRPC client for ``config`` (``mode=``, ``service=`` as keywords), sending where its codec says."""
    return GrpcTransport(config, reactor, target=target_of(config), **kw)

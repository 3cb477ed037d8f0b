"""Is a gRPC channel usable? The readiness check of protocols without a readiness RPC (Seldon v1).

A TCP connect proves little for gRPC: ``--use-ssl`` against a plaintext port (or the reverse)
connects fine, then every call fails UNAVAILABLE. :func:`channel_ready_route` is a
:class:`~seldon_batch_tx.core.target.GrpcRoute` whose "call" waits, on the transport's own
grpc.aio loop and channel (so with the run's TLS settings, trusted certificate and authority),
until the channel is READY, and answers ``{"ready": bool, "cause": str}``. A channel that falls
into TRANSIENT_FAILURE after the TCP connect worked failed its handshake: it answers at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from ..core.target import GrpcRoute

#: A channel's states in which it can carry calls, and in which its last attempt failed.
READY = grpc.ChannelConnectivity.READY
FAILED = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)


def handshake_cause(use_ssl: bool) -> str:
    """Why a channel whose TCP connection works is not READY: its TLS or HTTP/2 handshake failed."""
    if use_ssl:
        return "TLS handshake failed: the server may not speak TLS (leave out --use-ssl) or its certificate is " \
               "not trusted (--ca-cert, --no-ssl-verify)"
    return "gRPC handshake failed: the server may expect TLS (--use-ssl) or not speak gRPC"


async def until_ready(channel: Any, timeout: float, use_ssl: bool) -> dict[str, Any]:
    """Wait (at most ``timeout`` s) for ``channel`` to be READY; stop at its first failed attempt."""

    async def watch() -> grpc.ChannelConnectivity:
        state = channel.get_state(try_to_connect=True)
        while state != READY and state not in FAILED:
            await channel.wait_for_state_change(state)
            state = channel.get_state(try_to_connect=True)
        return state

    try:
        state = await asyncio.wait_for(watch(), timeout)
    except TimeoutError:
        return {"ready": False, "cause": f"no gRPC connection within {timeout:g} s"}
    if state == READY:
        return {"ready": True, "cause": ""}
    return {"ready": False, "cause": handshake_cause(use_ssl)}


def channel_ready_route(use_ssl: bool) -> GrpcRoute:
    """The route whose one call answers whether the transport's channel becomes READY (aio mode only)."""

    def method(channel: Any, _service: str) -> Any:
        async def call(_request: Any, timeout: float, metadata: Any = None) -> dict[str, Any]:
            return await until_ready(channel, max(timeout - 0.5, 0.1), use_ssl)

        return call

    return GrpcRoute(method, lambda _body: None, lambda answer: dict(answer), rpc="channel ready")

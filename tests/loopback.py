"""Loopback networking for tests and benchmarks: free ports on 127.0.0.1, whether a port accepts, small
HTTP requests, and an environment without proxies (so nothing a test sends leaves the machine).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

LOOPBACK = "127.0.0.1"

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy")


def loopback_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for child processes that keeps their traffic off any proxy and
    out of the project's venv (the seldon venv has its own libraries)."""
    env = dict(os.environ if base is None else base)
    for name in list(env):
        if name.lower() in _PROXY_VARS or name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            del env[name]
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


def port_is_free(port: int) -> bool:
    """True when nothing is bound to 127.0.0.1:port.

    Binds WITHOUT SO_REUSEPORT, so a gRPC server holding the port with SO_REUSEPORT
    (where a second server would silently share it) counts as taken.  SO_REUSEADDR is
    set so that connections left in TIME_WAIT do not count.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def free_port(exclude: Sequence[int] = ()) -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to (not in `exclude`)."""
    for _ in range(100):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((LOOPBACK, 0))
            port: int = sock.getsockname()[1]
        finally:
            sock.close()
        if port not in exclude and port_is_free(port):
            return port
    raise RuntimeError("no free port found on 127.0.0.1")


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports on 127.0.0.1."""
    ports: list[int] = []
    for _ in range(count):
        ports.append(free_port(exclude=ports))
    return ports


def tcp_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_request(
    method: str,
    url_host: str,
    path: str,
    body: Any = None,
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """One HTTP request to `url_host` ("127.0.0.1:PORT") with no proxy; a dict or list
    body is sent as JSON, bytes or str as they are.  Returns (status, body)."""
    host, _, port = url_host.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        all_headers = dict(headers or {})
        data: bytes | None = None
        if isinstance(body, (bytes, str)):
            data = body.encode() if isinstance(body, str) else body
            all_headers.setdefault("Content-Type", "application/json")
        elif body is not None:
            data = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=all_headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def post_json(url_host: str, path: str, body: Any, timeout: float = 10.0) -> tuple[int, Any]:
    """POST `body` as JSON; returns (status, decoded JSON answer)."""
    status, data = http_request("POST", url_host, path, body, timeout=timeout)
    return status, json.loads(data)

"""A fault proxy in front of the moto S3 server: requests pass through, except those a rule
picks, whose headers it reads and then never answers (no ``100 Continue``, no response, the
connection held open): a store that hangs a PUT or a GET as the issue-25 review saw. With
``reset=True`` such a request's connection is closed instead (a store that went away).

``StallingProxy(s3.port, stall=lambda method, path: method == "PUT")``; ``with`` it, point
``AWS_ENDPOINT_URL`` at ``proxy.endpoint``. Requests are parsed only as far as the head and a
``Content-Length`` body, which is what botocore sends; responses are relayed byte for byte.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


class StallingProxy:
    """A TCP proxy to ``127.0.0.1:upstream`` that stalls requests ``stall(method, path)`` picks."""

    def __init__(self, upstream: int, stall: Callable[[str, str], bool], *, reset: bool = False) -> None:
        self.upstream = upstream
        self.stall = stall
        self.reset = reset  # close the connection at once instead of holding it
        self.stalled: list[str] = []  # "METHOD path" of every request held
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        self._closed = threading.Event()

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> StallingProxy:
        threading.Thread(target=self._accept, daemon=True, name="stalling proxy").start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Every connection closed, new ones refused: the endpoint is gone."""
        self._closed.set()
        for each in list(self._sockets):
            with contextlib.suppress(OSError):
                each.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection((LOOPBACK, self.upstream), timeout=30)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        self._sockets.append(server)
        threading.Thread(target=self._relay, args=(server, client), daemon=True).start()
        buffered = b""
        try:
            while not self._closed.is_set():
                while b"\r\n\r\n" not in buffered:
                    data = client.recv(65536)
                    if not data:
                        return
                    buffered += data
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                method, path = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")[:2]
                if self.stall(method, path):
                    self.stalled.append(f"{method} {path}")
                    if not self.reset:
                        self._closed.wait()  # headers read; nothing is ever answered
                    return
                server.sendall(head + b"\r\n\r\n")  # at once: a client may wait for 100 Continue
                length = _content_length(head)
                while len(buffered) < length:
                    if buffered:
                        server.sendall(buffered)
                        length -= len(buffered)
                        buffered = b""
                    data = client.recv(65536)
                    if not data:
                        return
                    buffered += data
                server.sendall(buffered[:length])
                buffered = buffered[length:]
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                server.close()
            with contextlib.suppress(OSError):
                client.close()

    def _relay(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0

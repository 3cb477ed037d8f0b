"""A loopback DNS server (twisted.names) that knows one name, for the ``dns://SERVER/NAME`` tests.

Run as ``python -m tests.dns_server --port P --name NAME --log FILE``: an A query for NAME answers
127.0.0.1, an AAAA query for it answers nothing, any other name is NXDOMAIN; every query is appended
to FILE as ``NAME TYPE``. :class:`DnsServer` runs it as a child process on a free loopback port.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from tests.processes import ManagedProcess

LOOPBACK = "127.0.0.1"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.dns_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    from twisted.internet import reactor
    from twisted.internet.defer import fail, succeed
    from twisted.names import dns, server
    from twisted.names.common import ResolverBase
    from twisted.names.error import DomainError

    name = args.name.lower().encode()

    class OneName(ResolverBase):
        def _lookup(self, query: bytes, cls: int, kind: int, timeout: Any) -> Any:
            with open(args.log, "a") as log:
                log.write(f"{query.decode(errors='replace')} {dns.QUERY_TYPES.get(kind, kind)}\n")
            if query.lower() != name:
                return fail(DomainError(query))
            if kind != dns.A:
                return succeed(([], [], []))
            answer = dns.RRHeader(name=query, type=dns.A, ttl=5, auth=True, payload=dns.Record_A(LOOPBACK, ttl=5))
            return succeed(([answer], [], []))

    factory = server.DNSServerFactory(authorities=[OneName()])
    reactor.listenUDP(args.port, dns.DNSDatagramProtocol(factory), interface=LOOPBACK)  # type: ignore[attr-defined]
    reactor.listenTCP(args.port, factory, interface=LOOPBACK)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


class DnsServer(ManagedProcess):
    """``python -m tests.dns_server`` as a child process on a free loopback port."""

    name = "dns server"
    startup_timeout = 20.0
    poll_interval = 0.05
    stop_signal = signal.SIGTERM

    def __init__(self, directory: Path, name: str) -> None:
        from tests.loopback import free_port

        self.port = free_port()
        self.known = name
        self.query_log = directory / "dns-queries.txt"
        self.log_path = directory / "dns-server.log"

    def where(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> DnsServer:
        from tests.loopback import loopback_env

        root = Path(__file__).resolve().parent.parent
        self.spawn([sys.executable, "-m", "tests.dns_server", "--port", str(self.port), "--name", self.known,
                    "--log", str(self.query_log)], cwd=root, env=loopback_env())
        self.wait_ready_or_stop()
        return self

    def is_ready(self) -> bool:
        from tests.loopback import tcp_accepts

        return tcp_accepts(LOOPBACK, self.port)

    def queries(self) -> list[str]:
        return self.query_log.read_text().splitlines() if self.query_log.exists() else []


if __name__ == "__main__":
    main()

"""The dashboard's listener: :func:`.site.make_site` on a Twisted endpoint string, as a service.

``strports.service`` does the listening (and raises a port that cannot be bound from
``startService``, so the command line can say so in one line); this module only refuses an
endpoint reachable from other hosts without a token, and tells where it listens.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import txaio
from twisted.application import service, strports
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer

from .registry import BatchRegistry
from .security import SET_TOKEN, check_endpoint
from .site import make_site

txaio.use_twisted()
log = txaio.make_logger()


@implementer(IStreamServerEndpoint)
class _Announced:
    """An endpoint that hands its listening port to ``found`` (for the log line and ``.port``)."""

    def __init__(self, endpoint: IStreamServerEndpoint, found: Callable[[IListeningPort], None]) -> None:
        self._endpoint = endpoint
        self._found = found

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        listening: Deferred[IListeningPort] = self._endpoint.listen(factory)

        def found(port: IListeningPort) -> IListeningPort:
            self._found(port)
            return port

        return listening.addCallback(found)


class DashboardService(service.MultiService):
    """The dashboard on a Twisted endpoint string: a ``strports.service`` made when the service starts.

    Refused at construction (:func:`.security.check_endpoint`): a listener reachable from other hosts
    without a token (the message names ``set_token``, how the caller reads one). A port that cannot be
    bound raises from ``startService`` (strports' own rule).
    """

    def __init__(self, endpoint: str, registry: BatchRegistry, reactor: Any, *, token: str | None = None,
                 secrets: Collection[str] = (), set_token: str = SET_TOKEN) -> None:
        super().__init__()
        check_endpoint(endpoint, token, set_token)
        self.endpoint = endpoint
        self._registry = registry
        self._reactor = reactor
        self._token = token
        self._secrets = tuple(secrets)
        self._listener: service.IService | None = None
        #: The IListeningPort once bound (its address is logged; tests read it), else None.
        self.port: Any = None

    def _add_listener(self) -> None:
        """The listener child, made once: parsing the endpoint string may fail, so not in __init__."""
        if self._listener is not None:
            return
        site = make_site(self._registry, token=self._token, secrets=self._secrets)
        listener = strports.service(self.endpoint, site, reactor=self._reactor)
        listener.endpoint = _Announced(listener.endpoint, self._listening)  # a documented, public ivar
        listener.setServiceParent(self)
        self._listener = listener

    def privilegedStartService(self) -> None:  # noqa: N802 - Twisted's name
        self._add_listener()
        super().privilegedStartService()

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        self._add_listener()
        super().startService()

    @property
    def where(self) -> str:
        """The page's URL with the port really bound (``tcp:0`` included), or the address (a UNIX socket)."""
        if self.port is None:
            return "(not listening)"
        address = self.port.getHost()
        host, port = getattr(address, "host", None), getattr(address, "port", None)
        if host is None or port is None:
            return str(address)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        log.info("dashboard listening on {where}", where=self.where)

    def stopService(self) -> Deferred[None]:  # noqa: N802 - Twisted's name
        self.port = None
        return super().stopService()  # type: ignore[no-any-return]

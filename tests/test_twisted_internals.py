"""The private Twisted APIs :mod:`seldon_batch_tx.transports.twisted_internals` relies on.

Each test names one private name; a Twisted release that renames or reshapes it fails here, by
name, instead of silently dropping the treq client's bound on answer headers or its aborts.
"""

from __future__ import annotations

import inspect

from twisted.web import _newclient, client

from seldon_batch_tx.transports import twisted_internals


def test_newclient_parser_states_and_give_up() -> None:
    """HTTP11ClientProtocol keeps its parser in ``_parser`` with STATUS/HEADER states and ends an
    answer through ``_giveUp``."""
    assert {_newclient.STATUS, _newclient.HEADER} <= {"STATUS", "HEADER", "BODY", "DONE"}
    assert callable(getattr(_newclient.HTTP11ClientProtocol, "_giveUp", None))
    assert "_parser" in inspect.getsource(_newclient.HTTP11ClientProtocol.dataReceived)
    assert "state" in inspect.getsource(_newclient.HTTPParser)


def test_pool_builds_connections_through_its_factory() -> None:
    """HTTPConnectionPool makes each connection with ``self._factory(quiescentCallback, ...)``, an
    ``_HTTP11ClientFactory`` whose protocols get ``_quiescentCallback``."""
    assert client.HTTPConnectionPool._factory is client._HTTP11ClientFactory
    assert "self._factory(" in inspect.getsource(client.HTTPConnectionPool._newConnection)
    factory = client._HTTP11ClientFactory(lambda p: None, "metadata")
    assert callable(factory._quiescentCallback)
    pool = twisted_internals.bounded_pool(None, 3)
    assert pool._factory is twisted_internals._QuietFactory and pool.maxPersistentPerHost == 3
    assert isinstance(pool._factory(lambda p: None, "m").buildProtocol(None), twisted_internals.BoundedClientProtocol)


def test_response_keeps_its_transport_and_producer() -> None:
    """A Response keeps the transport proxy as ``_transport``, and the proxy the connection as ``_producer``."""
    assert "self._transport" in inspect.getsource(_newclient.Response.__init__)
    assert "_producer" in inspect.getsource(_newclient.TransportProxyProducer.__init__)


def test_request_persistence_and_quiescent_callback() -> None:
    """Retiring a treq connection relies on ``Request.persistent`` (False: ``Connection: close`` and no
    return to the pool) and on the protocol's quiescent callback being what gives it back to the pool."""
    assert "self.persistent" in inspect.getsource(_newclient.Request._writeHeaders)
    assert "persistent" in inspect.getsource(_newclient.HTTP11ClientProtocol._finishResponse_WAITING)
    assert "_quiescentCallback(self)" in inspect.getsource(_newclient.HTTP11ClientProtocol._finishResponse_WAITING)
    lifetime = twisted_internals.Lifetime(5.0, 2, lambda: 0.0)
    pool = twisted_internals.bounded_pool(None, 3, lifetime)
    protocol = pool._factory(lambda p: None, "m").buildProtocol(None)
    assert isinstance(protocol, twisted_internals.BoundedClientProtocol) and protocol._lifetime is lifetime

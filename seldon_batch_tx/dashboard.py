"""The live dashboard: HTML pages, a JSON API, Prometheus metrics and a health check.

It only reads the :class:`BatchRegistry`. Pages are rendered by jinja2 with autoescaping on,
and the browser script fills in live values with ``textContent`` only, so file names and
error reasons (untrusted text) are escaped everywhere. A content security policy forbids
inline scripts as a second line of defence.

Routes: ``/``, ``/batches/{id}``, ``/api/batches``, ``/api/batches/{id}``, ``/metrics``,
``/health``, ``/static/*``. When a token is set every route but ``/health`` and
``/static/*`` (no secrets there) needs it, as ``Authorization: Bearer T``,
``X-Dashboard-Token: T`` or ``?token=T``; the page script passes the query token on.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import jinja2
import txaio
from twisted.application import service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import render_metrics
from .registry import BatchRegistry
from .webroot import web_root

txaio.use_twisted()
log = txaio.make_logger()

DEFAULT_ENDPOINT = "tcp:8080:interface=127.0.0.1"
TOKEN_ENV = "SELDON_BATCH_DASHBOARD_TOKEN"
_SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'self'; script-src 'self'; style-src 'self'; "
                                b"img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-store",
}


# -- where it listens -------------------------------------------------------------------

def endpoint_is_loopback(description: str) -> bool:
    """True when a server endpoint string only accepts local connections.

    ``tcp``/``tcp6``/``ssl`` without ``interface=`` listen on every address, so they are
    not loopback; ``unix`` sockets are local. Unknown kinds count as non-loopback.
    """
    parts = [p.replace("\\:", ":") for p in re.split(r"(?<!\\):", description)]
    kind = parts[0].strip().lower()
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    interface = ""
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if eq and key.strip() == "interface":
            interface = value.strip().strip("[]")
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def check_endpoint(description: str, token: str | None) -> None:
    """Refuse, before anything starts, a dashboard reachable from other hosts without a token."""
    if not description or description.strip().lower() == "none":
        return
    if not endpoint_is_loopback(description) and not token:
        raise ValueError(f"the dashboard endpoint {description!r} is not loopback-only: set --dashboard-token "
                         f"(or {TOKEN_ENV}) so that other hosts need the token")


def token_ok(request: Request, token: str) -> bool:
    """The request carries ``token`` in a header or the query string (constant-time compare)."""
    supplied: bytes | None = None
    auth = request.getHeader(b"authorization")
    if auth and auth[:7].lower() == b"bearer ":
        supplied = auth[7:].strip()
    supplied = supplied or request.getHeader(b"x-dashboard-token")
    if not supplied:
        values = (request.args or {}).get(b"token")
        supplied = values[0] if values else None
    return supplied is not None and hmac.compare_digest(supplied, token.encode("utf-8"))


# -- resources ---------------------------------------------------------------------------

def _json(request: Request, data: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _segment(path: bytes) -> str:
    return path.decode("utf-8", errors="replace")


class Unauthorized(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setHeader(b"www-authenticate", b'Bearer realm="seldon-batch"')
        return _json(request, {"error": "a valid dashboard token is required"}, 401)


class JsonNotFound(Resource):
    isLeaf = True

    def __init__(self, what: str) -> None:
        super().__init__()
        self._what = what

    def render(self, request: Request) -> bytes:
        return _json(request, {"error": f"no such batch: {self._what}"}, 404)


class Page(Resource):
    """An HTML page from a template; the context comes from :meth:`context`."""

    isLeaf = True
    template = ""

    def __init__(self, templates: jinja2.Environment, registry: BatchRegistry) -> None:
        super().__init__()
        self._templates = templates
        self.registry = registry

    def context(self) -> dict[str, Any]:
        return {}

    def render_GET(self, request: Request) -> bytes:
        context = self.context()
        if context.get("missing"):
            request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return self._templates.get_template(self.template).render(**context).encode("utf-8")


class IndexPage(Page):
    template = "index.html"

    def context(self) -> dict[str, Any]:
        now = self.registry.now()
        return {"base": "", "batches": [e.summary_json(now) for e in self.registry.entries()],
                "counts": self.registry.counts_by_state()}


class BatchPage(Page):
    template = "batch.html"

    def __init__(self, templates: jinja2.Environment, registry: BatchRegistry, batch_id: str) -> None:
        super().__init__(templates, registry)
        self.batch_id = batch_id

    def context(self) -> dict[str, Any]:
        entry = self.registry.get(self.batch_id)
        batch = entry.detail_json(self.registry.now()) if entry else None
        return {"base": "../", "batch_id": self.batch_id, "batch": batch, "missing": batch is None}


class BatchPages(Resource):
    def __init__(self, templates: jinja2.Environment, registry: BatchRegistry) -> None:
        super().__init__()
        self._templates = templates
        self._registry = registry

    def getChild(self, path: bytes, request: Request) -> IResource:
        if not path:
            return IndexPage(self._templates, self._registry)
        return BatchPage(self._templates, self._registry, _segment(path))

    def render_GET(self, request: Request) -> bytes:
        request.redirect(b"../")
        return b""


class ApiBatch(Resource):
    isLeaf = True

    def __init__(self, registry: BatchRegistry, batch_id: str) -> None:
        super().__init__()
        self._registry = registry
        self._batch_id = batch_id

    def render_GET(self, request: Request) -> bytes:
        entry = self._registry.get(self._batch_id)
        if entry is None:
            return _json(request, {"error": f"no such batch: {self._batch_id}"}, 404)
        return _json(request, entry.detail_json(self._registry.now()))


class ApiBatches(Resource):
    def __init__(self, registry: BatchRegistry) -> None:
        super().__init__()
        self._registry = registry

    def getChild(self, path: bytes, request: Request) -> IResource:
        if not path:
            return self
        return ApiBatch(self._registry, _segment(path))

    def render_GET(self, request: Request) -> bytes:
        registry = self._registry
        now = registry.now()
        return _json(request, {"now": now, "counts": registry.counts_by_state(),
                               "batches": [e.summary_json(now) for e in registry.entries()]})


class Metrics(Resource):
    isLeaf = True

    def __init__(self, registry: BatchRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", METRICS_CONTENT_TYPE)
        return render_metrics(self._registry).encode("utf-8")


class Health(Resource):
    isLeaf = True

    def __init__(self, registry: BatchRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        registry = self._registry
        return _json(request, {"status": "ok", "uptime": round(registry.now() - registry.started, 3),
                               "batches": registry.counts_by_state()})


_CONTENT_TYPES = {".js": b"text/javascript; charset=utf-8", ".css": b"text/css; charset=utf-8",
                  ".svg": b"image/svg+xml", ".png": b"image/png", ".ico": b"image/x-icon"}


class StaticFile(Resource):
    isLeaf = True

    def __init__(self, body: bytes, content_type: bytes) -> None:
        super().__init__()
        self._body = body
        self._type = content_type

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self._type)
        return self._body


class StaticFiles(Resource):
    """The few files of web/static, read once at start; nothing else (no listing, no paths)."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        for path in sorted(directory.iterdir()):
            kind = _CONTENT_TYPES.get(path.suffix)
            if path.is_file() and kind is not None:
                self.putChild(path.name.encode("utf-8"), StaticFile(path.read_bytes(), kind))

    def getChild(self, path: bytes, request: Request) -> IResource:
        return pages.notFound()


class DashboardRoot(Resource):
    """The route table, with the token check in front of it."""

    def __init__(self, registry: BatchRegistry, *, token: str | None = None, web: Path | None = None) -> None:
        super().__init__()
        web = web or web_root()
        templates = jinja2.Environment(loader=jinja2.FileSystemLoader(str(web / "templates")),
                                       autoescape=True, undefined=jinja2.StrictUndefined)
        self._token = token
        self.putChild(b"", IndexPage(templates, registry))
        self.putChild(b"batches", BatchPages(templates, registry))
        api = Resource()
        api.putChild(b"batches", ApiBatches(registry))
        self.putChild(b"api", api)
        self.putChild(b"metrics", Metrics(registry))
        self.putChild(b"health", Health(registry))
        self.putChild(b"static", StaticFiles(web / "static"))

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        for name, value in _SECURITY_HEADERS.items():
            request.setHeader(name, value)
        if self._token and path not in (b"health", b"static") and not token_ok(request, self._token):
            return Unauthorized()
        return super().getChildWithDefault(path, request)  # type: ignore[no-any-return]


class QuietSite(Site):
    """No access log line per request: the page polls every second."""

    def log(self, request: Any) -> None:
        pass


def make_site(registry: BatchRegistry, *, token: str | None = None, web: Path | None = None) -> Site:
    site = QuietSite(DashboardRoot(registry, token=token, web=web))
    site.noisy = False
    site.displayTracebacks = False
    return site


class DashboardService(service.Service):
    """Listens on a Twisted endpoint string; the listener is made in startService."""

    def __init__(self, endpoint: str, registry: BatchRegistry, reactor: Any, *, token: str | None = None,
                 web: Path | None = None) -> None:
        check_endpoint(endpoint, token)
        self.endpoint = endpoint
        self._registry = registry
        self._reactor = reactor
        self._token = token
        self._web = web
        self.port: Any = None

    def startService(self) -> None:
        super().startService()
        site = make_site(self._registry, token=self._token, web=self._web)
        listening: Deferred[Any] = endpoints.serverFromString(self._reactor, self.endpoint).listen(site)
        outcome: list[Any] = []

        def keep(result: Any) -> Any:
            outcome.append(result)
            return result

        listening.addBoth(keep)
        if outcome and isinstance(outcome[0], Failure):
            listening.addErrback(lambda _: None)
            outcome[0].raiseException()  # a bind error fails the start loudly
        listening.addCallback(self._listening)
        listening.addErrback(lambda f: log.failure("the dashboard could not listen", failure=f))

    def _listening(self, port: Any) -> Any:
        self.port = port
        address = port.getHost()
        where = f"http://{getattr(address, 'host', '')}:{getattr(address, 'port', '')}/" \
            if hasattr(address, "port") else str(address)
        log.info("dashboard listening on {where}", where=where)
        return port

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()  # type: ignore[no-any-return]
        return succeed(None)


def serve_single_batch(endpoint: str, stats: Any, config: Any, reactor: Any) -> DashboardService:
    """The dashboard of the one-shot command for its one batch (``--dashboard ENDPOINT``).

    The token comes from ``$SELDON_BATCH_DASHBOARD_TOKEN``; raises ValueError for a
    non-loopback endpoint without one, and the listen error if the port is taken.
    """
    import os

    registry = BatchRegistry(reactor, sample_interval=None)  # the progress reporter samples already
    registry.add(stats, config=config, source=config.input_data_path, output=config.output_data_path)
    dashboard = DashboardService(endpoint, registry, reactor, token=os.environ.get(TOKEN_ENV) or None)
    dashboard.startService()
    return dashboard

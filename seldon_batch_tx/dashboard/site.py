"""The live dashboard: HTML pages, a JSON API, Prometheus metrics and a health check.

It only reads the :class:`BatchRegistry`. Pages are rendered by jinja2 with autoescaping on,
and the browser script fills in live values with ``textContent`` only, so file names and
error reasons (untrusted text) are escaped everywhere. A content security policy forbids
inline scripts as a second line of defence.

Everything shown or exported goes through :func:`registry.clean` first: names that are not
UTF-8 (os.listdir's surrogate escapes) show their bytes as ``\\xNN``, long text is cut, and
credentials (the dashboard token, ``--call-credentials-token``, credential-like ``--header``
values) are redacted even when a server echoes them into an error reason.

Routes: ``/``, ``/batches/{id}``, ``/api/batches``, ``/api/batches/{id}``, ``/metrics``,
``/health``, ``/static/*``. When a token is set every route but ``/health`` and
``/static/*`` (no secrets there) needs it, as ``Authorization: Bearer T``,
``X-Dashboard-Token: T`` or ``?token=T``; the page script passes the query token on.
Without a token every route answers only requests whose ``Host`` is a loopback name or the
address the connection came in on (421 otherwise): a DNS-rebinding page in a browser would
send its own name, so it cannot read the dashboard through the victim's loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import txaio
from twisted.application import service
from twisted.internet import endpoints
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import render_metrics
from .registry import BatchRegistry, clean, config_secrets
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


def host_name(header: bytes) -> str | None:
    """The host part of a ``Host`` header, lower case, without port or brackets; None if malformed."""
    try:
        text = header.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    port = ""
    if text.startswith("["):
        name, bracket, port = text[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        port = port[1:]
    elif text.count(":") == 1:
        name, _, port = text.partition(":")
    else:
        name = text  # a bare name, or a bare IPv6 address such as ::1
    if (port and not (port.isdigit() and port.isascii())) or not name:
        return None
    return name[:-1] if name.endswith(".") else name


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def host_allowed(request: Request) -> bool:
    """The request's ``Host`` names this machine's loopback or the address it was received on.

    Connections over a unix socket pass: no browser page can open one, so no rebinding.
    """
    local = request.getHost()
    if not isinstance(local, IPv4Address | IPv6Address):
        return True
    header = request.getHeader(b"host")
    name = host_name(header) if header is not None else None
    if name is None:
        return False
    if name == "localhost":
        return True
    address = _address(name)
    if address is None:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    if address.is_loopback or (mapped is not None and mapped.is_loopback):
        return True
    bound = _address(local.host.split("%", 1)[0])
    return bound is not None and not bound.is_unspecified and address == bound


# -- resources ---------------------------------------------------------------------------

def _json(request: Request, data: Any, code: int = 200, secrets: Any = ()) -> bytes:
    """Strict JSON of ``data`` made safe to show (valid text, bounded, secrets redacted)."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return json.dumps(clean(data, secrets), separators=(",", ":"), allow_nan=False).encode("utf-8")


def _segment(path: bytes, request: Request) -> str:
    """The batch id a URL names: this segment and any after it (an id may hold a ``/`` that a
    client did not percent-encode), as text."""
    parts = [path, *(request.postpath or [])]
    while len(parts) > 1 and not parts[-1]:
        parts.pop()
    return b"/".join(parts).decode("utf-8", errors="replace")


def path_segment(value: Any) -> str:
    """``value`` percent-encoded as one URL path segment (jinja2's urlencode keeps ``/``)."""
    return quote(str(value), safe="")


class Unauthorized(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setHeader(b"www-authenticate", b'Bearer realm="seldon-batch"')
        return _json(request, {"error": "a valid dashboard token is required"}, 401)


class MisdirectedHost(Resource):
    """421 for a tokenless dashboard asked under a name that is not loopback (DNS rebinding)."""

    isLeaf = True
    BODY = (b"421 Misdirected Request: without --dashboard-token this dashboard answers only to the Host "
            b"localhost, a loopback address or the address it listens on\n")

    def render(self, request: Request) -> bytes:
        request.setResponseCode(421)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return self.BODY


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

    def __init__(self, templates: jinja2.Environment, registry: BatchRegistry,
                 secrets: Callable[[], set[str]]) -> None:
        super().__init__()
        self._templates = templates
        self.registry = registry
        self._secrets = secrets

    def context(self) -> dict[str, Any]:
        return {}

    def render_GET(self, request: Request) -> bytes:
        context = clean(self.context(), self._secrets())  # jinja2 escapes; clean makes it encodable
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

    def __init__(self, templates: jinja2.Environment, registry: BatchRegistry,
                 secrets: Callable[[], set[str]], batch_id: str) -> None:
        super().__init__(templates, registry, secrets)
        self.batch_id = batch_id

    def context(self) -> dict[str, Any]:
        entry = self.registry.find(self.batch_id)
        batch = entry.detail_json(self.registry.now()) if entry else None
        return {"base": "../", "batch_id": self.batch_id, "batch": batch, "missing": batch is None}


class BatchPages(Resource):
    def __init__(self, templates: jinja2.Environment, registry: BatchRegistry,
                 secrets: Callable[[], set[str]]) -> None:
        super().__init__()
        self._templates = templates
        self._registry = registry
        self._secrets = secrets

    def getChild(self, path: bytes, request: Request) -> IResource:
        if not path:
            return IndexPage(self._templates, self._registry, self._secrets)
        return BatchPage(self._templates, self._registry, self._secrets, _segment(path, request))

    def render_GET(self, request: Request) -> bytes:
        request.redirect(b"../")
        return b""


class ApiBatch(Resource):
    isLeaf = True

    def __init__(self, registry: BatchRegistry, secrets: Callable[[], set[str]], batch_id: str) -> None:
        super().__init__()
        self._registry = registry
        self._secrets = secrets
        self._batch_id = batch_id

    def render_GET(self, request: Request) -> bytes:
        entry = self._registry.find(self._batch_id)
        if entry is None:
            return _json(request, {"error": f"no such batch: {self._batch_id}"}, 404, self._secrets())
        return _json(request, entry.detail_json(self._registry.now()), secrets=self._secrets())


class ApiBatches(Resource):
    def __init__(self, registry: BatchRegistry, secrets: Callable[[], set[str]]) -> None:
        super().__init__()
        self._registry = registry
        self._secrets = secrets

    def getChild(self, path: bytes, request: Request) -> IResource:
        if not path:
            return self
        return ApiBatch(self._registry, self._secrets, _segment(path, request))

    def render_GET(self, request: Request) -> bytes:
        registry = self._registry
        now = registry.now()
        return _json(request, {"now": now, "counts": registry.counts_by_state(),
                               "batches": [e.summary_json(now) for e in registry.entries()]},
                     secrets=self._secrets())


class Metrics(Resource):
    isLeaf = True

    def __init__(self, registry: BatchRegistry, secrets: Callable[[], set[str]]) -> None:
        super().__init__()
        self._registry = registry
        self._secrets = secrets

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", METRICS_CONTENT_TYPE)
        return render_metrics(self._registry, self._secrets()).encode("utf-8")


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
    """The route table, with the token check (or, without a token, the Host check) in front of it."""

    def __init__(self, registry: BatchRegistry, *, token: str | None = None, web: Path | None = None,
                 secrets: Collection[str] = ()) -> None:
        super().__init__()
        web = web or web_root()
        self._extra_secrets = {s for s in secrets if s}
        templates = jinja2.Environment(loader=jinja2.FileSystemLoader(str(web / "templates")),
                                       autoescape=True, undefined=jinja2.StrictUndefined)
        templates.filters["segment"] = path_segment
        self._token = token
        self._registry = registry
        self._warned_host = False
        hidden = self.secrets
        self.putChild(b"", IndexPage(templates, registry, hidden))
        self.putChild(b"batches", BatchPages(templates, registry, hidden))
        api = Resource()
        api.putChild(b"batches", ApiBatches(registry, hidden))
        self.putChild(b"api", api)
        self.putChild(b"metrics", Metrics(registry, hidden))
        self.putChild(b"health", Health(registry))
        self.putChild(b"static", StaticFiles(web / "static"))

    def secrets(self) -> set[str]:
        """What must never be shown: the dashboard token and every listed batch's credentials."""
        found = self._registry.secrets() | self._extra_secrets
        if self._token:
            found.add(self._token)
        return found

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        for name, value in _SECURITY_HEADERS.items():
            request.setHeader(name, value)
        if self._token:
            if path not in (b"health", b"static") and not token_ok(request, self._token):
                return Unauthorized()
        elif not host_allowed(request):
            if not self._warned_host:  # once: a rebinding page may ask every second
                self._warned_host = True
                log.warn("dashboard refused a request for Host {host!r} (421): without --dashboard-token only "
                         "loopback names are served; later refusals are not logged",
                         host=(request.getHeader(b"host") or b"")[:100].decode("ascii", "replace"))
            return MisdirectedHost()
        return super().getChildWithDefault(path, request)  # type: ignore[no-any-return]


class QuietSite(Site):
    """No access log line per request: the page polls every second."""

    def log(self, request: Any) -> None:
        pass


def make_site(registry: BatchRegistry, *, token: str | None = None, web: Path | None = None,
              secrets: Collection[str] = ()) -> Site:
    """The dashboard site; ``secrets`` (e.g. the daemon's own credentials) are never shown."""
    site = QuietSite(DashboardRoot(registry, token=token, web=web, secrets=secrets))
    site.noisy = False
    site.displayTracebacks = False
    return site


class DashboardService(service.Service):
    """Listens on a Twisted endpoint string; the listener is made in startService."""

    def __init__(self, endpoint: str, registry: BatchRegistry, reactor: Any, *, token: str | None = None,
                 web: Path | None = None, secrets: Collection[str] = ()) -> None:
        check_endpoint(endpoint, token)
        self._secrets = tuple(secrets)
        self.endpoint = endpoint
        self._registry = registry
        self._reactor = reactor
        self._token = token
        self._web = web
        self.port: Any = None

    def startService(self) -> None:
        super().startService()
        site = make_site(self._registry, token=self._token, web=self._web, secrets=self._secrets)
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


def serve_single_batch(endpoint: str, stats: Any, config: Any, reactor: Any, *,
                       token: str | None = None) -> DashboardService:
    """The dashboard of the one-shot command for its one batch (``--dashboard ENDPOINT``).

    The token is ``token`` (e.g. read from ``--dashboard-token-file``), else
    ``$SELDON_BATCH_DASHBOARD_TOKEN``; raises ValueError for a non-loopback endpoint without
    one, and the listen error if the port is taken.
    """
    import os

    registry = BatchRegistry(reactor, sample_interval=None)  # the progress reporter samples already
    registry.add(stats, config=config, source=config.input_data_path, output=config.output_data_path)
    dashboard = DashboardService(endpoint, registry, reactor, token=token or os.environ.get(TOKEN_ENV) or None,
                                 secrets=config_secrets(config))
    dashboard.startService()
    return dashboard

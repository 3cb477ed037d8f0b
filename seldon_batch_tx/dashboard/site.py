"""The live dashboard: HTML pages, a JSON API, Prometheus metrics and a health check.

It only reads the :class:`.registry.BatchRegistry`; who may ask and what may leave are decided in
:mod:`.security`. Pages are rendered by jinja2 with autoescaping on, and the browser script fills in
live values with ``textContent`` only, so file names and error reasons (untrusted text) are escaped
everywhere; a content security policy forbids inline scripts as a second line of defence.

Routes: ``/``, ``/batches/{id}``, ``/api/batches``, ``/api/batches/{id}``,
``/download/{output|summary}/{id}`` (:mod:`.downloads`), ``/metrics``, ``/health``, ``/static/*``.
When a token is set every route but ``/health`` and ``/static/*`` (no secrets there) needs it,
as ``Authorization: Bearer T``, ``X-Dashboard-Token: T`` or ``?token=T``; the page script passes
the query token on (to its links too).

Templates and static files are the top-level ``web/`` directory, installed as the package data
``seldon_batch_tx/web`` (a symbolic link in the checkout): jinja2's ``PackageLoader`` and
``importlib.resources`` find them, wherever the package is. :mod:`.listener` serves the site.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any
from urllib.parse import quote

import jinja2
import txaio
from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from .channel import DashboardSite
from .downloads import KINDS, Download
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import render_metrics
from .registry import DEFAULT_LIMIT, MAX_LIMIT, BatchRegistry
from .security import SECURITY_HEADERS, clean, host_allowed, token_ok
from .views import Views, json_answer

txaio.use_twisted()
log = txaio.make_logger()

#: The package and the directory of its data that hold ``templates/`` and ``static/`` (see setup.py).
PACKAGE = "seldon_batch_tx"
WEB = "web"


# -- resources ---------------------------------------------------------------------------

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
        return json_answer(request, {"error": "a valid dashboard token is required"}, 401)


class MisdirectedHost(Resource):
    """421 for a tokenless dashboard asked under a name that is not loopback (DNS rebinding)."""

    isLeaf = True
    BODY = (b"421 Misdirected Request: without --dashboard-token this dashboard answers only to the Host "
            b"localhost, a loopback address or the address it listens on\n")

    def render(self, request: Request) -> bytes:
        request.setResponseCode(421)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return self.BODY


class View(Resource):
    """A dashboard route reading through :class:`Views`."""

    def __init__(self, views: Views) -> None:
        super().__init__()
        self.views = views


class Page(View):
    """An HTML page from a template; the context comes from :meth:`context`."""

    isLeaf = True
    template = ""

    def context(self) -> dict[str, Any]:
        return {}

    def render_GET(self, request: Request) -> bytes:
        context = clean(self.context(), self.views.secrets())  # jinja2 escapes; clean makes it encodable
        if context.get("missing"):
            request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return self.views.templates.get_template(self.template).render(**context).encode("utf-8")


class IndexPage(Page):
    template = "index.html"

    def context(self) -> dict[str, Any]:
        registry = self.views.registry
        now = registry.now()
        listed = registry.listed()
        return {"base": "", "batches": [e.summary_json(now) for e in listed],
                "counts": registry.counts_by_state(), "total": len(registry.entries())}


class BatchPage(Page):
    template = "batch.html"

    def __init__(self, views: Views, batch_id: str) -> None:
        super().__init__(views)
        self.batch_id = batch_id

    def context(self) -> dict[str, Any]:
        entry = self.views.registry.find(self.batch_id)
        batch = entry.detail_json(self.views.registry.now()) if entry else None
        return {"base": "../", "batch_id": self.batch_id, "batch": batch, "missing": batch is None}


class BatchPages(View):
    def getChild(self, path: bytes, request: Request) -> IResource:
        if not path:
            return IndexPage(self.views)
        return BatchPage(self.views, _segment(path, request))

    def render_GET(self, request: Request) -> bytes:
        request.redirect(b"../")
        return b""


class ApiBatch(View):
    isLeaf = True

    def __init__(self, views: Views, batch_id: str) -> None:
        super().__init__(views)
        self._batch_id = batch_id

    def render_GET(self, request: Request) -> bytes:
        entry = self.views.registry.find(self._batch_id)
        if entry is None:
            return self.views.json(request, {"error": f"no such batch: {self._batch_id}"}, 404)
        return self.views.json(request, entry.detail_json(self.views.registry.now()))


class ApiBatches(View):
    def getChild(self, path: bytes, request: Request) -> IResource:
        if not path:
            return self
        return ApiBatch(self.views, _segment(path, request))

    def render_GET(self, request: Request) -> bytes:
        """``?limit=N`` (1 to MAX_LIMIT) and ``?offset=K`` (skip the K newest) page the list."""
        registry = self.views.registry
        now = registry.now()
        try:
            limit, offset = _int_arg(request, b"limit", DEFAULT_LIMIT), _int_arg(request, b"offset", 0)
        except ValueError:
            return self.views.json(request, {"error": f"limit must be 1 to {MAX_LIMIT}, offset 0 or more"}, 400)
        if not 1 <= limit <= MAX_LIMIT or offset < 0:
            return self.views.json(request, {"error": f"limit must be 1 to {MAX_LIMIT}, offset 0 or more"}, 400)
        listed = registry.listed(limit, offset)
        return self.views.json(request, {"now": now, "counts": registry.counts_by_state(),
                                         "total": len(registry.entries()), "limit": limit, "offset": offset,
                                         "batches": [e.summary_json(now) for e in listed]})


def _int_arg(request: Request, name: bytes, default: int) -> int:
    values = (request.args or {}).get(name)
    return int(values[0][:12]) if values else default


class DownloadRoutes(View):
    """``/download/{kind}/{id}``: the kind first, so a batch id may hold a ``/``."""

    def getChild(self, path: bytes, request: Request) -> IResource:  # noqa: N802 - Twisted's name
        rest = request.postpath or []
        if path not in KINDS or not rest or not rest[0]:
            return pages.notFound()
        first, request.postpath = rest[0], rest[1:]
        return Download(self.views, path, _segment(first, request))


class Metrics(View):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", METRICS_CONTENT_TYPE)
        return render_metrics(self.views.registry, self.views.secrets()).encode("utf-8")


class Health(View):
    """Liveness for probes: no token needed, so nothing here may be secret (no names, no reasons)."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        registry = self.views.registry
        return json_answer(request, {"status": "ok", "uptime": round(registry.now() - registry.started, 3),
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

    def __init__(self, directory: Traversable) -> None:
        super().__init__()
        for item in sorted(directory.iterdir(), key=lambda i: i.name):
            kind = _CONTENT_TYPES.get(os.path.splitext(item.name)[1])
            if item.is_file() and kind is not None:
                self.putChild(item.name.encode("utf-8"), StaticFile(item.read_bytes(), kind))

    def getChild(self, path: bytes, request: Request) -> IResource:
        return pages.notFound()


def templates() -> jinja2.Environment:
    """The page templates, from the installed package data (autoescaped; unknown names are errors)."""
    environment = jinja2.Environment(loader=jinja2.PackageLoader(PACKAGE, f"{WEB}/templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    environment.filters["segment"] = path_segment
    return environment


def static_directory() -> Traversable:
    """``web/static`` in the installed package data."""
    return files(PACKAGE).joinpath(WEB, "static")


class DashboardRoot(Resource):
    """The route table, with the token check (or, without a token, the Host check) in front of it."""

    def __init__(self, registry: BatchRegistry, *, token: str | None = None, secrets: Collection[str] = ()) -> None:
        super().__init__()
        self._extra_secrets = {s for s in secrets if s}
        self._token = token
        self._registry = registry
        self._warned_host = False
        views = Views(registry, self.secrets, templates())
        self.putChild(b"", IndexPage(views))
        self.putChild(b"batches", BatchPages(views))
        api = Resource()
        api.putChild(b"batches", ApiBatches(views))
        self.putChild(b"api", api)
        self.putChild(b"download", DownloadRoutes(views))
        self.putChild(b"metrics", Metrics(views))
        self.putChild(b"health", Health(views))
        self.putChild(b"static", StaticFiles(static_directory()))

    def secrets(self) -> set[str]:
        """What must never be shown: the dashboard token and every listed batch's credentials."""
        found = self._registry.secrets() | self._extra_secrets
        if self._token:
            found.add(self._token)
        return found

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        for name, value in SECURITY_HEADERS.items():
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


def make_site(registry: BatchRegistry, *, token: str | None = None, secrets: Collection[str] = ()) -> Site:
    """The dashboard site; ``secrets`` (e.g. the daemon's own credentials) are never shown."""
    site = DashboardSite(DashboardRoot(registry, token=token, secrets=secrets))
    site.noisy = False
    site.displayTracebacks = False
    return site

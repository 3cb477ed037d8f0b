"""What every dashboard route reads (:class:`Views`) and the one way a route answers in JSON.

Below both :mod:`.site` (the pages) and :mod:`.downloads` (the output files), so neither imports the other.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
import jinja2
from twisted.web.server import Request

from .registry import BatchRegistry
from .security import clean


def json_answer(request: Request, data: Any, code: int = 200, secrets: Any = ()) -> bytes:
    """Strict JSON of ``data`` made safe to show (valid text, bounded, secrets redacted)."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return json.dumps(clean(data, secrets), separators=(",", ":"), allow_nan=False).encode("utf-8")

@attrs.frozen
class Views:
    """What every route reads: the registry, the secrets to redact (asked per request) and the templates."""

    registry: BatchRegistry
    secrets: Callable[[], set[str]]
    templates: jinja2.Environment

    def json(self, request: Request, data: Any, code: int = 200) -> bytes:
        return json_answer(request, data, code, self.secrets())

"""The old path of :mod:`.core.strict_json`, kept while other branches still import it from here.

New code imports ``seldon_batch_tx.core.strict_json``; this alias goes once nothing uses it.
"""

from __future__ import annotations

from .core.strict_json import MAX_ANSWER_DEPTH as MAX_ANSWER_DEPTH
from .core.strict_json import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from .core.strict_json import JSONDict as JSONDict
from .core.strict_json import NotFinite as NotFinite
from .core.strict_json import TooDeep as TooDeep
from .core.strict_json import check as check
from .core.strict_json import compact_bytes as compact_bytes
from .core.strict_json import compact_encoder as compact_encoder
from .core.strict_json import decode as decode
from .core.strict_json import has_non_finite as has_non_finite
from .core.strict_json import json_depth as json_depth
from .core.strict_json import too_deep as too_deep

"""Where the dashboard's templates and static files are, in a checkout and when installed.

``web/`` sits at the repository root (the design card); ``setup.py`` installs it as data files
under ``<prefix>/share/seldon-batch-tx/web``. ``SELDON_BATCH_WEB_ROOT`` overrides both.
"""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path

SHARE = Path("share") / "seldon-batch-tx" / "web"
ENV = "SELDON_BATCH_WEB_ROOT"


def candidates() -> list[Path]:
    """Places to look, most specific first."""
    found: list[Path] = []
    if os.environ.get(ENV):
        found.append(Path(os.environ[ENV]))
    found.append(Path(__file__).resolve().parents[2] / "web")  # a checkout or an editable install
    for prefix in (sys.prefix, sys.base_prefix, getattr(site, "USER_BASE", None) or "", "/usr/local", "/usr"):
        if prefix:
            found.append(Path(prefix) / SHARE)
    return found


def web_root() -> Path:
    """The first candidate holding ``templates/index.html``; a clear error otherwise."""
    for path in candidates():
        if (path / "templates" / "index.html").is_file():
            return path
    looked = ", ".join(str(p) for p in candidates())
    raise FileNotFoundError(f"dashboard files (web/templates/index.html) not found; looked in {looked}; "
                            f"set {ENV} to the web/ directory")

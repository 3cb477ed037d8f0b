"""docs/architecture.md stays the map of the package: every module is named there, and it stays about a page."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "seldon_batch_tx"


def test_every_module_is_named() -> None:
    """A module added without its line in the map fails here (generated protobuf modules aside)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    missing = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if p.stem != "__init__" and "protos" not in p.parts and p.stem not in words)
    assert not missing, f"modules not named in docs/architecture.md: {missing}"


def test_about_one_page() -> None:
    assert len((ROOT / "docs" / "architecture.md").read_text().splitlines()) <= 120

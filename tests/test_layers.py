"""The package's layers, read from its own imports: no circle between files, no import upwards.

Every ``import`` and ``from ... import`` of every module counts (module level, inside functions,
under ``if TYPE_CHECKING:``, relative or absolute), and so does the ``__init__`` of each package an
import enters: a late or type-only import is still a dependency a reader must follow, and a circle
hidden in one is still a circle. Nothing is exempt.

:data:`LAYERS` is the one table of who may import whom (bottom first), drawn in
``docs/architecture.md``. A module may import modules of a lower layer and, within its own unit,
other modules of that unit (never in a circle). Units side by side in one layer (protocols and
transports; the codec and transport choices; the pipeline and the option table; the daemon and the
runner) never import each other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = "seldon_batch_tx"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

#: The layers, bottom first: (name, {unit: module prefixes, relative to the package}).
#: ``""`` is the package's own ``__init__`` (its version only). A longer prefix wins.
LAYERS: tuple[tuple[str, dict[str, tuple[str, ...]]], ...] = (
    ("vocabulary", {"core": ("", "core", "exits", "redaction"), "generated messages": ("protos",)}),
    ("settings", {"settings": ("checks", "host_checks", "bounds", "grpc_checks", "config", "flags")}),
    ("io", {"io": ("storage", "outputs")}),
    ("wire", {"protocols": ("protocols",), "transports": ("transports",), "tables": ("tables",)}),
    ("choice", {"codec choice": ("protocols.choose",), "transport choice": ("transports.choose",)}),
    ("pipeline", {"pipeline": ("pipeline",), "options": ("options",)}),
    ("dashboard", {"dashboard": ("dashboard",)}),
    ("services", {"daemon": ("daemon",), "runner": ("runner",)}),
    ("entry points", {"entry": ("cli", "tap", "tools", "logs")}),
)

Graph = Mapping[str, set[str]]


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by its name relative to it (``pipeline.engine``; ``""`` the root)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _within(name: str, known: Iterable[str]) -> str | None:
    """The package module an imported dotted name refers to (the longest known prefix), or None."""
    known = set(known)
    if name == PACKAGE:
        return ""
    if not name.startswith(PACKAGE + "."):
        return None
    rel = name[len(PACKAGE) + 1:]
    while rel not in known and "." in rel:
        rel = rel.rsplit(".", 1)[0]
    return rel if rel in known else None


def _full(source: str, name: str, known: set[str]) -> str | None:
    """``source.name`` spelled in full when it is a module of the package, else None."""
    module = _within(f"{source}.{name}", known)
    return None if module is None else f"{PACKAGE}.{module}" if module else PACKAGE


def imports(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its source (``from X import y`` names the
    module ``X.y`` when that is a module, else ``X``)."""
    known = set(known)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = [PACKAGE, *[p for p in package.split(".") if p]]
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from X import y``: the module X.y when it is one, else X itself
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" == _full(source, alias.name, known)
                       else source for alias in node.names]
        for target in targets:
            module = _within(target, known)
            if module is not None and module != name:
                found.add(module)
                found.update(_parents(module, name, known))  # their ``__init__`` runs first
    return found


def _parents(module: str, importer: str, known: set[str]) -> set[str]:
    """The packages above ``module`` whose ``__init__`` an import of it runs, outside ``importer``'s own."""
    parts = module.split(".")
    parents = {".".join(parts[:i]) for i in range(1, len(parts))}
    return {p for p in parents if p in known and not (importer == p or importer.startswith(p + "."))}


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    found = modules(root)
    return {name: imports(name, path, found) for name, path in found.items()}


def place(module: str) -> tuple[int, str] | None:
    """(layer index, unit) of a module: the unit with the longest prefix of its name, or None."""
    best: tuple[int, int, str] | None = None
    for index, (_, units) in enumerate(LAYERS):
        for unit, prefixes in units.items():
            for prefix in prefixes:
                matches = module == prefix or (prefix and module.startswith(prefix + "."))
                if matches and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), index, unit)
    return None if best is None else (best[1], best[2])


def circles(edges: Graph) -> list[list[str]]:
    """The import circles: every strongly connected set of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def wrong_way(edges: Graph) -> list[str]:
    """Every import that goes up a layer, or across to a unit beside its own, as a sentence."""
    problems = []
    for source, targets in sorted(edges.items()):
        where = place(source)
        for target in sorted(targets):
            there = place(target)
            if where is None or there is None:
                continue  # reported by test_every_module_has_a_layer
            if there[0] > where[0]:
                problems.append(f"{source} ({LAYERS[where[0]][0]}) imports {target} from the higher layer "
                                f"{LAYERS[there[0]][0]}")
            elif there[0] == where[0] and there[1] != where[1]:
                problems.append(f"{source} ({where[1]}) imports {target} from {there[1]}, beside it in "
                                f"{LAYERS[where[0]][0]}")
    return problems


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m or PACKAGE for m in modules() if place(m) is None)
    assert not unplaced, f"add these modules to LAYERS in {__name__}: {unplaced}"


def test_no_import_circles() -> None:
    assert circles(graph()) == []


def test_no_import_goes_up_or_across() -> None:
    assert wrong_way(graph()) == []


def test_the_graph_sees_every_kind_of_import() -> None:
    """Relative, absolute, late and type-only imports are all edges (spot checks on known ones)."""
    edges = graph()
    assert "core.failures" in edges["transports.http"]  # relative, module level
    assert "core.certificates" in edges["checks"]  # inside a function
    assert "pipeline.batch" in edges["daemon.claims"]  # under TYPE_CHECKING
    assert "protos.grpc_service_pb2" in edges["protos.grpc_service_pb2_grpc"]  # absolute
    assert "protocols.seldon" in edges["protocols.choose"]
    assert "protocols.v2_pb" in edges["protocols.v2"]  # ``from . import v2_pb``
    assert "storage" in edges["options"]  # importing storage.paths runs storage/__init__ first


@pytest.mark.parametrize(("edges", "problem"), [
    ({"pipeline.engine": {"transports.http"}, "transports.http": {"pipeline.engine"}}, "circle"),
    ({"core.items": {"pipeline.reader"}, "pipeline.reader": set()}, "up"),
    ({"transports.http": {"protocols.base"}, "protocols.base": set()}, "across"),
    ({"protocols.base": {"protocols.choose"}, "protocols.choose": set()}, "up"),
])
def test_the_checks_catch_what_they_forbid(edges: dict[str, set[str]], problem: str) -> None:
    """Each rule fails on a graph that breaks it, so a green run means the package keeps it."""
    if problem == "circle":
        assert circles(edges) == [sorted(edges)]
    else:
        assert wrong_way(edges) and circles(edges) == []
        assert ("higher layer" if problem == "up" else "beside it") in wrong_way(edges)[0]


def test_the_checks_pass_a_graph_that_keeps_them() -> None:
    edges = {"cli": {"runner", "core.exits"}, "runner": {"pipeline.batch"}, "pipeline.batch": {"protocols.choose"},
             "protocols.choose": {"protocols.v2"}, "protocols.v2": {"protocols.base", "core.target"}}
    assert circles(edges) == [] and wrong_way(edges) == []

"""The package layering, read from the source with :mod:`ast` (nothing is imported).

    dags  ->  pipelines  ->  models
                  ^            ^
    bentos -------+------------+   (pipelines' public serving API only)

- ``models`` imports none of the other packages.
- ``pipelines`` never imports ``bentos`` (serving's commands reach the ``tailor`` CLI through
  entry points) nor ``dags``.
- ``bentos`` imports from ``pipelines`` only the modules in :data:`PUBLIC_FOR_SERVING`.
- No import cycle between packages, counting each subpackage of ``pipelines`` and ``bentos``
  as its own unit (``pipelines.crawl`` -> ``pipelines.validate`` -> ... -> ``pipelines.crawl``
  is a cycle).

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dags", "pipelines", "models", "bentos")

#: What serving may use of the pipelines: paths, the serving config, the index's read API,
#: the crop policy shared with the index, the models' inference entry point
#: (``pipelines.train.predict``), and for its CLI tools which release is live and the
#: training set's read API.
PUBLIC_FOR_SERVING = {
    "pipelines.settings",
    "pipelines.serving_config",
    "pipelines.index.flat",
    "pipelines.garments",
    "pipelines.train",
    "pipelines.deploy.release",
    "pipelines.manifests",
    "pipelines.validate.training_set",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in ``path`` of one of :data:`PACKAGES`, relative
    imports resolved; ``from x import y`` gives ``x`` (and ``x.y`` when ``y`` is a module)."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            for a in node.names:
                sub = f"{base}.{a.name}"
                if _is_module(sub):
                    found.append((node.lineno, sub))
    return [(line, mod) for line, mod in found if mod.split(".")[0] in PACKAGES]


def _is_module(dotted: str) -> bool:
    p = ROOT.joinpath(*dotted.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def _sources(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts or p.name == "env.py")


def _violations(package: str, allowed: Callable[[str], bool]) -> list[str]:
    out = []
    for path in _sources(package):
        for line, mod in imports_of(path):
            if not allowed(mod):
                out.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    return out


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] in ("pipelines", "bentos") and len(parts) > 1 else parts[0]


def import_graph() -> dict[str, set[str]]:
    """Unit -> units it imports (see the module docstring for what a unit is)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for package in PACKAGES:
        for path in _sources(package):
            here = _unit(_module_name(path))
            graph[here] |= {_unit(mod) for _, mod in imports_of(path)}
    for unit in list(graph):
        graph[unit].discard(unit)
        # A unit importing its parent package's __init__ (``from pipelines import x``) is
        # an edge to the module it names, recorded above; the bare package is no unit.
        graph[unit] -= {p for p in ("pipelines", "bentos") if p != unit}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_models_import_none_of_the_other_packages() -> None:
    assert _violations("models", lambda mod: mod.split(".")[0] == "models") == []


def test_pipelines_never_import_serving_or_dags() -> None:
    assert _violations("pipelines", lambda mod: mod.split(".")[0] in ("pipelines", "models")) == []


def test_serving_uses_only_the_public_serving_api_of_pipelines() -> None:
    def allowed(mod: str) -> bool:
        top = mod.split(".")[0]
        return top in ("bentos", "models") or (top == "pipelines" and mod in PUBLIC_FOR_SERVING)

    assert _violations("bentos", allowed) == []


def test_dags_do_not_import_serving() -> None:
    assert _violations("dags", lambda mod: mod.split(".")[0] != "bentos") == []


def test_no_import_cycle_between_packages() -> None:
    graph = import_graph()
    assert graph["pipelines.cli"], "the graph is empty: the import reader is broken"
    assert cycles(graph) == []


# ------------------------------------------------------------------ the checks can fail
def test_the_reader_sees_lazy_relative_and_from_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "pipelines" / "deploy"
    pkg.mkdir(parents=True)
    (tmp_path / "pipelines" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "release.py").write_text("")
    (pkg / "x.py").write_text(
        "from . import release\ndef f():\n    from bentos.engine import SearchEngine\n    import models.taxonomy\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert [m for _, m in imports_of(pkg / "x.py")] == [
        "pipelines.deploy",
        "pipelines.deploy.release",
        "bentos.engine",
        "models.taxonomy",
    ]


def test_a_cycle_is_found() -> None:
    graph = {"pipelines.a": {"pipelines.b"}, "pipelines.b": {"pipelines.c"}, "pipelines.c": {"pipelines.a"}}
    assert cycles(graph) == [["pipelines.a", "pipelines.b", "pipelines.c"]]
    assert cycles({"pipelines.a": {"pipelines.b"}, "pipelines.b": set()}) == []

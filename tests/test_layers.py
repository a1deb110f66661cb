"""The house stays in layers: imports run one way (core → engines → domain → use cases → interfaces).

Each module's layer is decided by its folder (the longest prefix in ``LAYERS``): every hoso module must have
one. Every import counts — at module level, inside functions and under ``TYPE_CHECKING`` — since each is a
dependency a newcomer has to follow. A module may import its own layer or lower ones, never a higher one,
and the graph of folders (a subfolder is its own folder) has no cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "ocr", "signing", "storage", "flows")

CORE, ENGINE, DOMAIN, USE_CASE, INTERFACE = range(5)
LAYER_NAMES = ["core", "engine", "domain", "use case", "interface"]
LAYERS: dict[str, int] = {
    "pipeline.core": CORE,
    "ocr": ENGINE,
    "signing": ENGINE,
    "storage": ENGINE,
    "pipeline.national": ENGINE,
    "pipeline.domain": DOMAIN,
    "pipeline.usecases": USE_CASE,
    "pipeline.training": USE_CASE,
    "pipeline.cli": INTERFACE,
    "pipeline.web": INTERFACE,
    "flows": INTERFACE,
}
# Package markers that hold no code of their own (a docstring, Prefect's environment defaults).
NO_LAYER = {"pipeline"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def layer_of(module: str) -> tuple[str, int] | None:
    """(folder prefix, layer) by the longest matching prefix in LAYERS."""
    best = None
    for prefix, layer in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, layer)
    return best


def folder_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0] or module


def imports_of(module: str, path: Path) -> set[str]:
    """The hoso modules ``path`` imports (absolute names, relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        out.update(n for n in names if n.split(".")[0] in PACKAGES)
    return out


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module an imported name lives in (``pipeline.core.errors.HosoError`` → ``pipeline.core.errors``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def edges() -> list[tuple[str, str]]:
    known = modules()
    out = []
    for module, path in known.items():
        for name in imports_of(module, path):
            target = resolve(name, known)
            if target is not None and target != module:
                out.append((module, target))
    return out


def test_every_module_has_a_layer() -> None:
    orphans = [m for m in modules() if layer_of(m) is None and m not in NO_LAYER and m not in PACKAGES]
    assert not orphans, f"modules outside every layer (add their folder to LAYERS): {orphans}"


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for source, target in edges():
        src, dst = layer_of(source), layer_of(target)
        if src is None or dst is None:
            assert source in NO_LAYER or source in PACKAGES, source
            assert dst is not None or target in PACKAGES, f"{source} imports {target}, which has no layer"
            continue
        if dst[1] > src[1]:
            upward.append(f"{source} ({LAYER_NAMES[src[1]]}) imports {target} ({LAYER_NAMES[dst[1]]})")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def folder_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in edges():
        a, b = folder_of(source, known[source]), folder_of(target, known[target])
        if a != b:
            graph[a].add(b)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one folder (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_folders() -> None:
    assert cycles(folder_graph()) == []


def test_the_checker_finds_what_it_must() -> None:
    """The rules above catch a planted cycle and a planted upward import (so they can fail)."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("pipeline.core.errors") == ("pipeline.core", CORE)
    assert layer_of("pipeline.national.db") == ("pipeline.national", ENGINE)
    assert layer_of("pipeline.coreish") is None
    known = modules()
    assert imports_of("pipeline.cli.app", known["pipeline.cli.app"]) & {"pipeline.usecases.services"}


@pytest.mark.parametrize("package", ["pipeline", "ocr", "signing", "storage", "flows"])
def test_installed_packages_do_not_import_test_tooling(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                bad = [n for n in names if n.split(".")[0] in {"tests", "support", "certomancer"}]
                assert not bad, f"{path.relative_to(ROOT)} imports test tooling {bad}"

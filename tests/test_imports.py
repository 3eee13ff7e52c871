"""The package's imports point one way: no module imports, even lazily or only for type
checking, a module that imports it back; and the video package knows nothing of the cluster."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mimocli"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file (top level, in functions,
    under TYPE_CHECKING). ``from . import x`` names the submodule x where there is one, and the
    package itself only where x is one of its attributes."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(graph()) == []


def test_the_video_package_imports_nothing_of_the_cluster():
    edges = graph()
    video = {m: deps for m, deps in edges.items() if m == "mimocli.video" or m.startswith("mimocli.video.")}
    assert len(video) > 10
    reached = {d for deps in video.values() for d in deps}
    assert not reached & {"mimocli.cluster", "mimocli.replica", "mimocli.cli"}


def test_the_walk_sees_a_circle_and_lazy_imports(tmp_path):
    """The checker itself: a circle closed by an import inside a function is found."""
    edges = {"a": {"b"}, "b": {"c"}, "c": set(), "d": set()}
    assert cycles(edges) == []
    edges["c"].add("a")
    assert cycles(edges) == [["a", "b", "c"]]
    pkg = tmp_path / "p.py"
    pkg.write_text("def f():\n    from mimocli import cluster\n")
    assert imports("mimocli.video.x", pkg, {"mimocli.cluster": pkg, "mimocli": pkg}) == {"mimocli.cluster"}

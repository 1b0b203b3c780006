"""The core reads as a pipeline: no module imports, even lazily inside a function, a module
that imports it back (directly or through others)."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).parents[2] / "src" / "napari_unet" / "core"


def imports_of(path: Path) -> set[str]:
    """The core modules ``path`` imports with relative imports (lazy ones too)."""
    parts = list(path.relative_to(CORE.parent.parent).with_suffix("").parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = package[:len(package) - (node.level - 1)]
        target = [*base, *(node.module.split(".") if node.module else [])]
        for alias in node.names:
            module = [*target, alias.name]
            as_file = CORE.parent.parent.joinpath(*module).with_suffix(".py")
            found.add(".".join(module if as_file.is_file() else target))
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    circles, done = [], set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            circles.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        done.add(name)
        for other in sorted(graph.get(name, ())):
            visit(other, [*path, name])

    for name in sorted(graph):
        visit(name, [])
    return circles


def test_the_circle_finder_finds_a_circle():
    assert find_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_in_the_core():
    graph = {module_name(p): imports_of(p) for p in CORE.rglob("*.py")}
    assert len(graph) > 40 and "napari_unet.core.inference.job" in graph
    assert "napari_unet.core.inference.diameter" in graph["napari_unet.core.inference.job"]
    assert find_circles(graph) == []


def test_the_core_reads_as_the_pipeline():
    top = sorted(p.name for p in CORE.iterdir() if not p.name.startswith("__"))
    assert {"model", "training", "inference", "io", "runtime", "data"} <= set(top)
    assert len(top) <= 12
    too_long = {str(p.relative_to(CORE.parent)): n for p in CORE.parent.rglob("*.py")
                if (n := len(p.read_text().splitlines())) > 500}
    assert too_long == {}

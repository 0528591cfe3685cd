"""The package's import structure (docs/architecture.md): no import cycles between modules, and no import
from a lower layer up into a higher one. Every import counts, also those inside functions and under
``if TYPE_CHECKING:``, since each is a dependency a reader has to follow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "wsi_pipeline"

# Lowest first. A unit (a subpackage, or a module at the top of the package; "" is wsi_pipeline/__init__.py)
# imports only from lower layers and from itself; the units of one layer are independent of each other.
LAYERS: list[set[str]] = [
    {"", "errors"},
    {"fsutil", "progress", "registry", "resolution", "taxonomy", "device", "diskspace", "locking", "paste"},
    {"config", "slide_formats"},
    {"store"},  # artifact names and contracts, the zarr patch store, the detections table
    {"io"},  # slide readers
    {"tiling", "models", "aggregate"},
    {"inference", "export"},
    {"datasets"},  # training sets from real annotations
    {"synth"},  # synthetic slides and composited sets, built on datasets
    {"pipeline"},
    {"demo", "benchmarking"},
    {"cli"},
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Package modules imported anywhere in the file (functions and TYPE_CHECKING blocks included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "wsi_pipeline"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "wsi_pipeline":
                target = node.module
            else:
                continue
            for alias in node.names:  # `from . import fcos` names a module; `from .x import f` a member
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, name, set(files)) for name, path in files.items()}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _graph()


def test_the_import_parser_sees_relative_function_and_type_checking_imports(tmp_path, graph):
    assert "wsi_pipeline.models.fcos" in graph["wsi_pipeline.models.families"]  # `from . import fcos, retinanet`
    assert "wsi_pipeline.store.patches" in graph["wsi_pipeline.store.source"]  # inside a function
    assert "wsi_pipeline.io.backends" in graph["wsi_pipeline.io.tiff_tiles"]  # under TYPE_CHECKING
    cyclic = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(cyclic) == [["a", "b", "c"]]


def test_no_import_cycles(graph):
    assert _cycles(graph) == []


def test_every_unit_has_a_layer(graph):
    assert sorted({_unit(m) for m in graph} - set(LAYER)) == [], "add new modules to LAYERS (docs/architecture.md)"


def test_no_import_goes_up_or_sideways_between_layers(graph):
    wrong = sorted(
        f"{m} imports {t} ({_unit(m) or 'wsi_pipeline'} is layer {LAYER[_unit(m)]}, {_unit(t) or 'wsi_pipeline'} layer {LAYER[_unit(t)]})"
        for m, targets in graph.items() for t in targets
        if _unit(m) != _unit(t) and LAYER.get(_unit(t), -1) >= LAYER.get(_unit(m), -1)
    )
    assert wrong == []

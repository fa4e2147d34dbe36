"""The import graph has layers and no circles, imports inside functions included.

Layers, lowest first (an arrow may only point down or sideways inside its own module family):

    schemas  <-  pipeline.store  <-  the rest of pipeline  <-  synthetic, annotation  <-  flows  <-  bench

Inside `pipeline`, three tiers: the core (`PIPELINE_CORE`: evaluation, uncertainty, selection,
splits, COCO writing, instance sets, ...) imports only the core; the models (`pipeline.model`,
`pipeline.annotators`) sit below the workflow that drives them (`pipeline.active_learning.rounds`,
`pipeline.active_learning.loop`, `pipeline.release.build`, ...): an annotator or a training run never asks
which round is running.

Every `import` / `from ... import` is counted wherever it is written (module level, inside a
function, under `if TYPE_CHECKING:`), so an import moved into a function to dodge a circle is still
seen. docs/architecture.md draws the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "pipeline", "synthetic", "annotation", "flows", "bench")

#: (prefix, layer): the longest matching prefix gives a module's layer; an import may only go to a
#: module of the same or a lower layer.
LAYERS: tuple[tuple[str, int], ...] = (
    ("schemas", 0),
    ("pipeline.store", 1),
    ("pipeline", 2),
    ("synthetic", 3),
    ("annotation", 3),
    ("flows", 4),
    ("bench", 5),
)

#: Sibling layers that must not import each other.
SIBLINGS = (("synthetic", "annotation"),)

#: Inside pipeline, three tiers (docs/architecture.md). The core (the modules at pipeline's top
#: level) imports only the core (and the store, schemas); the models and annotators never import the
#: rooms that drive them: active learning, releases, the real intake, backup and model export.
PIPELINE_CORE = tuple(f"pipeline.{name}" for name in (
    "instance_sets", "evaluate", "splits", "export", "coco_writer", "coco_json", "noise", "progress",
    "review_decisions", "gc_pause", "heatmap_decode"))
PIPELINE_BELOW_WORKFLOW = ("pipeline.model", "pipeline.annotators")
PIPELINE_WORKFLOW = ("pipeline.active_learning", "pipeline.release", "pipeline.intake", "pipeline.backup",
                     "pipeline.model_export")

def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            if name.endswith(".__init__"):
                name = name[: -len(".__init__")]
            modules[name] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported project module: line of the first such import}."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for target in targets:
                found = _resolve(target, modules)
                if found is None or found == name:
                    continue
                # `from pipeline.store import X` inside pipeline/store/foo.py: the package's own __init__
                if name.startswith(found + ".") and modules[found].name == "__init__.py":
                    continue
                edges.setdefault(found, node.lineno)
        graph[name] = edges
    return graph


def _layer(module: str) -> int:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def _family(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def upward_arrows(graph: dict[str, dict[str, int]]) -> list[str]:
    out = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            where = f"{module}:{line} imports {target}"
            if _layer(target) > _layer(module):
                out.append(f"{where} (layer {_layer(module)} -> {_layer(target)})")
            for a, b in SIBLINGS:
                if (_family(module, (a,)) and _family(target, (b,))) or (
                        _family(module, (b,)) and _family(target, (a,))):
                    out.append(f"{where} (siblings {a} and {b})")
            if _family(module, PIPELINE_BELOW_WORKFLOW) and _family(target, PIPELINE_WORKFLOW):
                out.append(f"{where} (models and annotators sit below the workflow)")
            if (module in PIPELINE_CORE and _family(target, ("pipeline",)) and target != "pipeline"
                    and not _family(target, ("pipeline.store",)) and target not in PIPELINE_CORE):
                out.append(f"{where} (pipeline's core imports only the core)")
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph()


def test_the_graph_is_read(graph: dict[str, dict[str, int]]) -> None:
    assert len(graph) > 100
    top_level = {m for m in graph if m.count(".") == 1 and m.startswith("pipeline.")
                 and not (ROOT / m.replace(".", "/")).is_dir()}
    assert top_level == {*PIPELINE_CORE, "pipeline.backup", "pipeline.model_export"}  # each has a tier
    assert "pipeline.store" in graph["pipeline.export"]  # module level
    assert "synthetic.ingest" in graph["flows.synthetic"]  # inside a function


def test_no_import_circle(graph: dict[str, dict[str, int]]) -> None:
    found = cycles(graph)
    assert not found, "import circles (imports inside functions count):\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_no_upward_arrow(graph: dict[str, dict[str, int]]) -> None:
    found = upward_arrows(graph)
    assert not found, "imports against the layers (docs/architecture.md):\n" + "\n".join(found)


def test_the_checks_catch_what_they_are_for() -> None:
    fake = {"pipeline.a": {"pipeline.b": 1}, "pipeline.b": {"pipeline.a": 3},
            "pipeline.store.x": {"pipeline.a": 2}, "pipeline.model.m": {"pipeline.active_learning.rounds": 4},
            "pipeline.active_learning.rounds": {}, "synthetic.s": {"annotation.t": 5}, "annotation.t": {},
            "pipeline.evaluate": {"pipeline.model.m": 6, "pipeline.coco_writer": 7, "pipeline.store": 8}}
    assert cycles(fake) == [["pipeline.a", "pipeline.b"]]
    arrows = upward_arrows(fake)
    assert any(a.startswith("pipeline.store.x:2") for a in arrows)
    assert any(a.startswith("pipeline.model.m:4") for a in arrows)
    assert any(a.startswith("synthetic.s:5") for a in arrows)
    assert [a for a in arrows if a.startswith("pipeline.evaluate")] == [
        "pipeline.evaluate:6 imports pipeline.model.m (pipeline's core imports only the core)"]

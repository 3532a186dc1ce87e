"""The layers a newcomer sees in the folders are the layers the imports follow.

contract, errors        the shared vocabulary (no kling_nb imports)
cell/ service/ media/ sim/   text -> request; HTTP; frames; the simulator   (vocabulary only)
engine/                 lifecycle, journal, session            (cell, service, media, sim)
notebook/               IPython and ipywidgets                 (everything below it)
kling_nb/__init__.py    the public API                         (anything)
"""

from __future__ import annotations

import ast
from pathlib import Path

import kling_nb

ROOT = Path(kling_nb.__file__).parent
ALLOWED = {
    "vocabulary": set(),
    "cell": {"vocabulary"},
    "service": {"vocabulary"},
    "sim": {"vocabulary"},
    "media": {"vocabulary"},
    "engine": {"vocabulary", "cell", "service", "media", "sim"},
    "notebook": {"vocabulary", "cell", "service", "media", "engine"},
    "api": {"vocabulary", "cell", "service", "media", "engine", "notebook", "sim"},
}
FRONTEND_PACKAGES = ("IPython", "ipywidgets", "ipykernel", "comm", "traitlets")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "api"
    if parts[1] in ("contract", "errors"):
        return "vocabulary"
    return parts[1] if parts[1] in ALLOWED else "api"


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved (lazy imports included)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            if not node.module or node.level:  # `from . import render`: the names are modules
                found.update(
                    f"{target}.{alias.name}"
                    for alias in node.names
                    if (ROOT.parent / Path(*f"{target}.{alias.name}".split("."))).with_suffix(".py").exists()
                )
    return found


SOURCES = sorted(ROOT.rglob("*.py"))
GRAPH = {module_name(p): {m for m in imports_of(p) if m.startswith("kling_nb")} for p in SOURCES}


def test_only_the_notebook_layer_imports_the_frontend():
    offenders = {
        module: sorted(m for m in imports_of(path) if m.split(".")[0] in FRONTEND_PACKAGES)
        for path in SOURCES
        if layer_of(module := module_name(path)) != "notebook"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_imports_flow_down_the_layers():
    wrong = []
    for module, targets in GRAPH.items():
        mine = layer_of(module)
        for target in targets:
            theirs = layer_of(target)
            if theirs != mine and theirs not in ALLOWED[mine]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}
    cycles = []

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(GRAPH.get(node, ())):
            nxt = nxt if nxt in GRAPH else nxt.rpartition(".")[0]  # `from x import name`
            if nxt == node or nxt not in GRAPH or nxt == "kling_nb":
                continue
            if state.get(nxt) == 1:
                cycles.append(trail + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in GRAPH:
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_checker_sees_a_real_import():
    assert "kling_nb.engine.generation" in GRAPH["kling_nb.engine.tracker"]
    assert "kling_nb.notebook.render" in GRAPH["kling_nb.notebook.display"]
    assert layer_of("kling_nb.notebook.render") == "notebook" and layer_of("kling_nb.errors") == "vocabulary"

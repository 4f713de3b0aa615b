"""The layer diagram of ``docs/architecture.md``, kept true: every import of every module of the package
(module-level and inside functions) goes to its own layer or one below, the adapters never import each
other, the torch-free layers never import torch, nothing imports from outside the package (its own
top-level modules, the tests), and the modules import one another without a loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "equirl"

#: the layers, lowest first: a module may import from its own layer and those below
LAYERS: dict[str, int] = {
    # foundations: errors, the file and schema layers, registries, packaged assets
    "errors": 0,
    "utils": 0,
    "config": 0,
    "registry": 0,
    "assets": 0,
    "gym_envs": 0,
    # the math
    "groups": 1,
    "actions": 2,
    "symmetrizers": 3,
    "train_loop": 3,
    # adapters (never import one another)
    "rl": 4,
    "language": 4,
    "vision": 4,
    "demo": 4,
    # benchmarks, then the command line
    "bench": 5,
    "cli": 6,
    "__main__": 7,
}
ADAPTERS = {"rl", "language", "vision", "demo"}
#: layers that must stay importable without torch (module-level and function-level imports alike)
TORCH_FREE = {"errors", "config", "registry", "assets", "gym_envs", "groups"}
#: first-party code outside the package that the package must not import
OUTSIDE = {"equirl_gymnasium", "tests", "setup", "docs"}


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module name ``name`` imports (``from a import b`` gives ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _resolve(name: str) -> str | None:
    parts = name.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


GRAPH = {
    m: {r for i in _imports(m, p) if i.startswith("equirl") and (r := _resolve(i)) is not None and r != m}
    for m, p in MODULES.items()
}
RAW = {m: _imports(m, p) for m, p in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    assert {_top(m) for m in MODULES} - {""} <= set(LAYERS), "add the new subpackage to LAYERS"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "equirl"))
def test_imports_go_down_the_layers(module: str) -> None:
    """The package root (a lazy facade) may name anything; every other module only its layer and below,
    and an adapter no other adapter."""
    top = _top(module)
    bad = []
    for dep in sorted(GRAPH[module]):
        dtop = _top(dep)
        if dtop == "":
            continue
        if LAYERS[dtop] > LAYERS[top] or (top in ADAPTERS and dtop in ADAPTERS and dtop != top):
            bad.append(dep)
    assert not bad, f"{module} imports {bad}: up the layers of docs/architecture.md"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _top(m) in TORCH_FREE))
def test_torch_free_layers_never_import_torch(module: str) -> None:
    heavy = sorted(
        i for i in RAW[module] if i.split(".")[0] in ("torch", "stable_baselines3", "transformers")
    )
    assert not heavy, f"{module} imports {heavy}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_nothing_is_imported_from_outside_the_package(module: str) -> None:
    bad = sorted(i for i in RAW[module] if i.split(".")[0] in OUTSIDE)
    assert not bad, f"{module} imports {bad}, which is not part of the package"


def test_no_import_loops() -> None:
    """No strongly connected component of the import graph has more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    loops: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                loops.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    # the package root imports its subpackages lazily and they import nothing from it but its name
    loops = [c for c in loops if c != ["equirl"]]
    assert not loops, f"import loops: {loops}"


def test_the_architecture_page_names_every_layer() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for top in LAYERS:
        if top != "__main__":
            assert f"`{top}" in text, f"docs/architecture.md does not name {top}"

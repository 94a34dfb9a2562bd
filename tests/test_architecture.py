"""The engine's rooms keep their shape: no import cycles, imports only downward, fixtures out of the product.

Read from the source with ``ast`` (nothing is imported), so a cycle that only a lazy,
function-level import closes is caught too. The packages, lowest first, and the one
rule each obeys are in ``engine/__init__.py`` and ``docs/architecture.md``:

    errors < memory < model < weights < sampling < parallel < testing

A module may import from its own package or from a lower one. ``engine.testing``
(fixture writers, simulators) is imported by no product module: not by the rest of
``engine`` and not by ``nodes``. Package ``__init__`` files hold only a docstring, so the
module graph checked here is the whole graph (importing ``a.b.c`` runs ``a/__init__``
and ``a/b/__init__``, which import nothing).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("errors", "memory", "model", "weights", "sampling", "parallel", "testing")
FIXTURES = "engine.testing"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_of(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file, for every module of ``package`` (a folder under ``root``)."""
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that module ``name`` (file ``path``) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # "from x import y": y is a submodule when one of that name exists, else a name in x
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # "import engine.model.dit as d" -> that module
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
    found.discard(name)
    return found


def import_graph(root: Path, package: str = "engine") -> dict[str, set[str]]:
    known = modules_of(root, package)
    return {name: imported(name, path, known) for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path [a, b, ..., a], or [] when the graph has none."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def layer_of(module: str) -> int:
    """Rank of an engine module's package in ``LAYERS`` (``engine`` itself: the bottom)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else 0


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def fixture_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() if not a.startswith(FIXTURES)
                  for b in targets if b.startswith(FIXTURES))


# ---------------------------------------------------------------- the engine as it is


@pytest.fixture(scope="module")
def graph():
    return import_graph(REPO)


def test_every_engine_package_is_a_known_layer(graph):
    packages = {m.split(".")[1] for m in graph if m.count(".") >= 1}
    assert packages <= set(LAYERS), f"packages not placed in LAYERS: {sorted(packages - set(LAYERS))}"
    assert len(graph) > 30  # the parser found the engine's modules, not an empty tree


def test_engine_has_no_import_cycle(graph):
    assert find_cycle(graph) == []


def test_engine_imports_only_downward(graph):
    assert upward_imports(graph) == []


def test_no_product_module_imports_the_fixtures(graph):
    assert fixture_imports(graph) == []
    nodes = modules_of(REPO, "nodes")
    assert len(nodes) > 5
    for name, path in nodes.items():  # "from ..engine.testing import x" / "from ..engine import testing"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "engine":
                dotted = [f"{node.module}.{a.name}" for a in node.names]
                assert not any(d.startswith(FIXTURES) for d in [node.module, *dotted]), f"{name} imports {dotted}"


def test_package_inits_hold_only_a_docstring():
    """So importing a module never runs another module's imports through its package."""
    for path in sorted((REPO / "engine").rglob("__init__.py")):
        body = ast.parse(path.read_text()).body
        assert all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body), path


def test_the_engine_never_imports_comfyui(graph):
    for name, path in modules_of(REPO, "engine").items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not any(n.split(".")[0] in ("comfy", "comfy_extras", "folder_paths", "server", "nodes")
                           for n in names), f"{name} imports ComfyUI ({names})"


# ---------------------------------------------------------------- the checks can fail


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_lazy_cycle_is_found(tmp_path):
    """A function-level import that closes a circle (the old streaming -> guidance one) is a cycle."""
    write_tree(tmp_path, {
        "engine/__init__.py": '"""doc"""\n',
        "engine/memory/__init__.py": "", "engine/sampling/__init__.py": "",
        "engine/memory/streaming.py": "def f():\n    from ..sampling.guidance import g\n",
        "engine/sampling/guidance.py": "from ..memory import residency\n",
        "engine/memory/residency.py": "from .streaming import f\n",
    })
    graph = import_graph(tmp_path)
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] and set(cycle) == {"engine.memory.streaming", "engine.sampling.guidance",
                                                    "engine.memory.residency"}
    assert upward_imports(graph) == ["engine.memory.streaming -> engine.sampling.guidance"]


def test_a_two_module_cycle_and_a_fixture_import_are_found(tmp_path):
    write_tree(tmp_path, {
        "engine/weights/__init__.py": "", "engine/testing/__init__.py": "",
        "engine/weights/checkpoint.py": "from . import gguf\nfrom ..testing.tiny import x\n",
        "engine/weights/gguf.py": "from .checkpoint import map_file\n",
        "engine/testing/tiny.py": "x = 1\n",
    })
    graph = import_graph(tmp_path)
    assert find_cycle(graph) in (["engine.weights.checkpoint", "engine.weights.gguf", "engine.weights.checkpoint"],
                                 ["engine.weights.gguf", "engine.weights.checkpoint", "engine.weights.gguf"])
    assert fixture_imports(graph) == ["engine.weights.checkpoint -> engine.testing.tiny"]
    assert upward_imports(graph) == ["engine.weights.checkpoint -> engine.testing.tiny"]

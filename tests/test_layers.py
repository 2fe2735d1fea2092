"""The house (DESIGN section 1): imports flow one way, with no cycles, counting imports inside functions.

analysis -> exact -> {estimators, objectives} -> envs -> _backends -> _core. Every import of every
module under src/tokis is read from its syntax tree (also those inside functions, which must not
hide a cycle); an import of a higher layer, or a cycle between modules, fails the test.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "src" / "tokis"
LAYERS = {"_core": 0, "_backends": 1, "envs": 2, "estimators": 3, "objectives": 3, "exact": 4, "analysis": 5}


def _name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path, name):
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
            yield mod
            for a in node.names:
                yield f"{mod}.{a.name}"


def _graph():
    files = {_name(p): p for p in ROOT.rglob("*.py")}
    graph = {m: set() for m in files}
    for m, p in files.items():
        for target in _imports(p, m):
            if not target.startswith("tokis."):
                continue
            while target not in files and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in files and target != m and not m.startswith(target + "."):
                graph[m].add(target)
    return graph


def _layer(module):
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_no_upward_import():
    bad = [(a, b) for a, targets in _graph().items() for b in targets
           if _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a)]
    assert bad == []


def test_no_import_cycle():
    graph = _graph()
    state, stack, cycles = {}, [], []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in graph[v]:
            if state.get(w) == 1:
                cycles.append(stack[stack.index(w):] + [w])
            elif w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for v in graph:
        if v not in state:
            visit(v)
    assert cycles == []


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_every_layer_is_a_package(package):
    if package == "objectives" and not (ROOT / package).exists():
        pytest.skip("tokis.objectives is not built yet")
    assert (ROOT / package / "__init__.py").exists()

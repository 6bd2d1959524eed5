"""The package's import graph, read from the source (imports inside functions included): no cycles
between modules, so that a reader can follow any module's dependencies to the bottom."""

import ast
from pathlib import Path

import minilib

PACKAGE = Path(minilib.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


def _resolve(name: str, modules: dict) -> str | None:
    """The module (not package attribute) that ``name`` denotes, if it is one of ours."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        base = mod if is_pkg else mod.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    up = base.split(".")
                    up = up[:len(up) - (node.level - 1)]
                    prefix = ".".join(up + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # ``from pkg import sub`` imports the submodule when there is one
                targets = [f"{prefix}.{a.name}" for a in node.names]
            for t in targets:
                r = _resolve(t, modules)
                if r is not None and r != mod:
                    edges.add(r)
        graph[mod] = edges
    return graph


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` only re-exports its submodules; an import of the package from inside
    it is an import of the submodule that defines the name, so edges into one's own package's
    ``__init__`` are followed through to what that ``__init__`` imports."""
    pkgs = {m for m, p in _modules().items() if p.name == "__init__.py"}
    out = {}
    for m, edges in graph.items():
        new = set()
        for e in edges:
            if e in pkgs and (m.startswith(e + ".")):
                new |= {x for x in graph[e] if x != m and x.startswith(e + ".")}
            else:
                new.add(e)
        out[m] = new
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_module_graph_has_no_import_cycle():
    graph = _without_package_inits(import_graph())
    assert graph["minilib.models.saving"] >= {"minilib.models.loaded"}  # the graph is read at all
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None

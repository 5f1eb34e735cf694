"""The package layout shows the design, and no import runs against it.

Every import in stream_app (at module level, in functions, under TYPE_CHECKING) is an
edge; the modules must form no cycle, and each layer may only use the ones below it:

    domain  <-  kernel (settings, topics, codec, clock, pipeline, schedule)
            <-  worker (the Faust shell) / ops (HTTP API, CLI views) / tools
            <-  cli
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "stream_app"

ALLOWED = {
    "domain": {"domain"},
    "kernel": {"domain", "kernel"},
    "ops": {"domain", "kernel", "ops"},
    "tools": {"domain", "kernel", "tools"},
    "worker": {"domain", "kernel", "worker", "ops"},
    "cli": {"domain", "kernel", "ops", "tools", "worker", "cli"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom, modules: set[str]) -> list[str]:
    """What ``from X import a, b`` uses: the submodules X.a, X.b, else X itself."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    used = {
        f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target for alias in node.names
    }
    return sorted(used)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                candidates = _resolve(name, path.name == "__init__.py", node, set(modules))
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            for candidate in candidates:
                if candidate in modules and candidate != name:
                    graph[name].add(candidate)
    return graph


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "kernel"
    if parts[1] in ("domain", "worker", "ops", "tools"):
        return parts[1]
    return "cli" if parts[1] in ("cli", "__main__") else "kernel"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert "stream_app.worker.app" in graph and "stream_app.ops.web" in graph
    assert _cycles(graph) == []


def test_each_layer_uses_only_the_layers_below_it() -> None:
    graph = import_graph()
    wrong = [
        f"{source} imports {target}"
        for source, targets in graph.items()
        for target in targets
        if layer(target) not in ALLOWED[layer(source)]
        and not target.endswith("__init__")
        and target != "stream_app"
    ]
    assert wrong == []


def test_the_checks_see_a_cycle_and_a_wrong_way_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert layer("stream_app.ops.web") == "ops"
    assert "worker" not in ALLOWED["ops"]

"""The domain stays pure: standard library only, no clock, no I/O."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import stream_app.domain

DOMAIN = Path(stream_app.domain.__file__).parent
FORBIDDEN_CALLS = {"now", "utcnow", "time", "today", "open", "print", "monotonic"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_domain_imports_only_the_standard_library() -> None:
    modules = sorted(DOMAIN.glob("*.py"))
    assert modules
    for module in modules:
        outside = {name for name in _imports(module) if name not in sys.stdlib_module_names}
        assert not outside, f"{module.name} imports {outside}"


def test_importing_the_domain_loads_neither_faust_nor_aiokafka() -> None:
    code = (
        "import sys, stream_app.domain, stream_app.domain.engine\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('faust', 'aiokafka', 'mode', 'orjson')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_engine_never_reads_a_clock() -> None:
    for module in DOMAIN.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in FORBIDDEN_CALLS, f"{module.name} calls .{node.func.attr}()"

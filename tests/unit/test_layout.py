"""The package's shape: rooms import in one direction, and modules and functions stay readable."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.env import ROOT

PACKAGE = ROOT / "docenrich"
ENTRY_FILES = ["app.py", "bge.py", "celery_config.py", "celery_worker.py", "start_celery_worker.py"]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
# Declarative tables that may run long: Celery's configuration literal.
LONG_BY_DESIGN = {("docenrich/celery_app.py", "make_celery")}


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def module_level_imports(path: Path, known: set[str]) -> set[str]:
    """Package modules imported when this module is imported (not imports inside functions)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found.update(n for n in names if n in known)
    return found


def test_no_import_cycles_between_modules():
    mods = modules()
    graph = {name: module_level_imports(path, set(mods)) - {name} for name, path in mods.items()}
    # A package's __init__ importing its own submodules is how packages export; not a cycle.
    graph = {n: {d for d in deps if not n.startswith(d + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert not cycles, f"import cycles: {cycles}"


def test_rooms_import_in_one_direction():
    mods = modules()
    imports = {name: module_level_imports(path, set(mods)) for name, path in mods.items()}
    assert "docenrich.web.pages" not in imports["docenrich.web.api"], "the API blueprint never imports the pages"
    for name, deps in imports.items():
        if name.startswith("docenrich.web") or name in ("docenrich.client", "docenrich.search"):
            bad = {d for d in deps if d.startswith("docenrich.tasks") or d in ("docenrich.models.manager",)}
            assert not bad, f"{name} imports worker-side modules {bad}"
    assert all(not d.startswith("docenrich.") for d in imports["docenrich.config"]), "config depends on nothing"
    assert imports["docenrich.celery_app"] <= {"docenrich.config", "docenrich.keys"}, "the Celery app stays cheap to import"
    assert not imports["docenrich.keys"], "the key registry depends on nothing"


def test_modules_and_functions_stay_short():
    long_modules, long_functions = [], []
    files = list(PACKAGE.rglob("*.py")) + [ROOT / f for f in ENTRY_FILES] + list((ROOT / "bench").glob("*.py"))
    for path in files:
        rel = str(path.relative_to(ROOT))
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(rel)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and (rel, node.name) not in LONG_BY_DESIGN:
                    long_functions.append(f"{rel}:{node.name} ({length} lines)")
    assert not long_modules, long_modules
    assert not long_functions, long_functions


def test_entry_files_are_thin_doors():
    for name in ENTRY_FILES:
        lines = (ROOT / name).read_text().splitlines()
        assert len(lines) <= 120, f"{name} has {len(lines)} lines; its code belongs in docenrich/"

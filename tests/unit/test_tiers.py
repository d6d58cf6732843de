"""The tests' own layout: each tier asks only for what it may start. Unit tests take no server or
model fixture, integration tests build no stack of their own; read from the source, so a test in
the wrong tier fails here before it slows `make test-fast` down."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
SERVERS = {"redis_server", "redis_url", "celery_app", "worker", "clean_queues", "pg_server", "pg_url",
           "empty_pg_url", "any_store"}
MODELS = {"bundled_model", "reranker_checkpoint", "bge_m3_checkpoint"}
STACKS = {"make_stack"}
REFUSED = {"unit": SERVERS | MODELS | STACKS, "integration": STACKS}
# Modules whose import starts or drives the whole stack.
STACK_MODULES = {"tests.stack"}


def requested_fixtures(path: Path) -> dict[str, set[str]]:
    """{function name: the fixtures it asks for by argument} for every function of a module."""
    tree = ast.parse(path.read_text())
    return {node.name: {a.arg for a in node.args.args}
            for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_the_three_tiers_have_their_own_conftest():
    for tier in ("unit", "integration", "system"):
        assert (TESTS / tier / "conftest.py").is_file(), tier
        assert (TESTS / tier / "__init__.py").is_file(), tier


@pytest.mark.parametrize("tier", sorted(REFUSED))
def test_a_tier_asks_for_no_fixture_of_a_higher_one(tier):
    wrong = {}
    for path in sorted((TESTS / tier).glob("test_*.py")):
        for function, fixtures in requested_fixtures(path).items():
            if fixtures & REFUSED[tier]:
                wrong[f"{path.name}::{function}"] = sorted(fixtures & REFUSED[tier])
    assert not wrong, f"move these to a higher tier: {wrong}"


def test_unit_tests_import_nothing_that_starts_a_stack():
    wrong = {p.name: sorted(imported_modules(p) & STACK_MODULES) for p in sorted((TESTS / "unit").glob("test_*.py"))}
    assert not {name: mods for name, mods in wrong.items() if mods}
